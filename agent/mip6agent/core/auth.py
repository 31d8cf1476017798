"""RFC 4285 MN-HA authentication of Binding Updates and Acknowledgements.

Every protected message carries, in this order, the MN Identifier option (RFC 4283 NAI),
the Mobility Message Identification option (a 64-bit NTP timestamp) and, last, the
Mobility Message Authentication option. The authenticator is
``First(96, HMAC_SHA1(key, CoA | HoA | MH data))`` where MH data is the Mobility Header,
checksum zeroed, up to and including the option's SPI field.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from ipaddress import IPv6Address, IPv6Network

from ..wire import (
    MessageAuthentication,
    MessageIdentification,
    MobileNodeIdentifier,
    encode_mh,
)
from ..wire.constants import AUTH_SUBTYPE_MN_HA, BAStatus, MobilityOptionType
from ..wire.mobility_header import FIXED_LENGTH, BindingAck, BindingUpdate
from ..wire.mobility_options import option_spans

AUTHENTICATOR_LEN = 12
NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01


def ntp_timestamp(unix_seconds: float) -> int:
    seconds = int(unix_seconds)
    fraction = int((unix_seconds - seconds) * (1 << 32)) & 0xFFFFFFFF
    return ((seconds + NTP_UNIX_OFFSET) & 0xFFFFFFFF) << 32 | fraction


def unix_seconds(timestamp: int) -> float:
    return (timestamp >> 32) - NTP_UNIX_OFFSET + (timestamp & 0xFFFFFFFF) / (1 << 32)


@dataclass(frozen=True, slots=True)
class MobilityKey:
    """One MN-HA security association. The key never appears in repr().

    ``home_addresses``: the home addresses the key holder may register (None: any in the
    home prefixes); ``max_bindings``: how many at once (None: the home agent's default).
    """

    spi: int
    key: bytes = field(repr=False)
    home_addresses: tuple[IPv6Network, ...] | None = None
    max_bindings: int | None = None

    def authorizes(self, home_address: IPv6Address) -> bool:
        if self.home_addresses is None:
            return True
        return any(home_address in allowed for allowed in self.home_addresses)


def _mac(key: bytes, coa: IPv6Address, hoa: IPv6Address, mh_data: bytes) -> bytes:
    digest = hmac.new(key, coa.packed + hoa.packed + mh_data, hashlib.sha1).digest()
    return digest[:AUTHENTICATOR_LEN]


def protect(
    message: BindingUpdate | BindingAck,
    nai: bytes,
    key: MobilityKey,
    timestamp: int,
    coa: IPv6Address,
    hoa: IPv6Address,
) -> BindingUpdate | BindingAck:
    """A copy of ``message`` with the three RFC 4285 options appended and signed."""
    placeholder = MessageAuthentication(key.spi, bytes(AUTHENTICATOR_LEN), AUTH_SUBTYPE_MN_HA)
    options = [
        *message.options,
        MobileNodeIdentifier(nai),
        MessageIdentification(timestamp),
        placeholder,
    ]
    draft = replace(message, options=options, checksum=0)
    data = encode_mh(draft)
    # The encoder places the authentication option last with nothing after it.
    mh_data = data[:-AUTHENTICATOR_LEN]
    options[-1] = MessageAuthentication(key.spi, _mac(key.key, coa, hoa, mh_data))
    return replace(draft, options=options)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Outcome of checking a received message. ``status`` is None when it passed."""

    status: int | None
    reason: str
    nai: str | None = None
    timestamp: int | None = None


def verify(
    mh_bytes: bytes,
    message: BindingUpdate | BindingAck,
    coa: IPv6Address,
    hoa: IPv6Address,
    lookup: Callable[[str], MobilityKey | None],
) -> Verdict:
    """Check identifier, presence of the message identification and the authenticator.

    The timestamp's freshness is the caller's business (it needs the clock and the last
    accepted value); this only says which status a failure earns.
    """
    nai_option = next((o for o in message.options if isinstance(o, MobileNodeIdentifier)), None)
    ident = next((o for o in message.options if isinstance(o, MessageIdentification)), None)
    if nai_option is None:
        return Verdict(BAStatus.MIPV6_AUTH_FAIL, "no MN Identifier option")
    nai = nai_option.nai
    if ident is None:
        return Verdict(BAStatus.MIPV6_MESG_ID_REQD, "no Mobility Message Identification", nai)
    spans = option_spans(mh_bytes, FIXED_LENGTH[message.MH_TYPE], len(mh_bytes))
    if not spans or spans[-1][0] != MobilityOptionType.MESSAGE_AUTHENTICATION:
        return Verdict(BAStatus.MIPV6_AUTH_FAIL, "authentication option missing or not last", nai)
    _, at, length = spans[-1]
    spi_end = at + 2 + 5
    auth = message.options[-1]
    assert isinstance(auth, MessageAuthentication)
    if auth.subtype != AUTH_SUBTYPE_MN_HA:
        return Verdict(BAStatus.MIPV6_AUTH_FAIL, f"authentication subtype {auth.subtype}", nai)
    key = lookup(nai)
    if key is None:
        return Verdict(BAStatus.MIPV6_AUTH_FAIL, "no key for this MN identifier", nai)
    if key.spi != auth.spi:
        return Verdict(BAStatus.MIPV6_AUTH_FAIL, f"SPI {auth.spi} does not match", nai)
    zeroed = mh_bytes[:4] + b"\x00\x00" + mh_bytes[6:spi_end]
    expected = _mac(key.key, coa, hoa, zeroed)
    if not hmac.compare_digest(expected, mh_bytes[spi_end : at + 2 + length]):
        return Verdict(BAStatus.MIPV6_AUTH_FAIL, "authenticator does not verify", nai)
    return Verdict(None, "ok", nai, ident.timestamp)


class ReplayGuard:
    """RFC 4285 timestamps: close to our clock and increasing per MN identifier."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._last: dict[str, int] = {}

    def check(self, nai: str, timestamp: int, now: float) -> str | None:
        """None if acceptable, else the reason (the HA answers 144 MIPV6-ID-MISMATCH)."""
        skew = unix_seconds(timestamp) - now
        if abs(skew) > self.window:
            return f"timestamp {skew:+.1f}s off our clock (window {self.window:g}s)"
        last = self._last.get(nai)
        if last is not None and timestamp <= last:
            return "timestamp not newer than the last accepted one (replay)"
        return None

    def accept(self, nai: str, timestamp: int) -> None:
        self._last[nai] = timestamp

    def snapshot(self) -> dict[str, int]:
        return dict(self._last)

    def restore(self, last: dict[str, int]) -> None:
        self._last.update(last)
