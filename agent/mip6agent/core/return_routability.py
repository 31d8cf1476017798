"""Return routability crypto (RFC 6275 5.2): keygen tokens, Kbm, the BU/BA authenticator.

A correspondent node keeps one secret, Kcn (20 random octets), and a ring of nonces (8
random octets each) named by 16-bit nonce indices. From these it answers HoTI and CoTI
without keeping any state per mobile node (5.2.5)::

    home keygen token    = First(64, HMAC_SHA1(Kcn, home address    | nonce | 0))
    care-of keygen token = First(64, HMAC_SHA1(Kcn, care-of address | nonce | 1))

where the final 0 or 1 is a single octet. Both ends derive the binding management key
(5.2.5) and the authenticator of the Binding Authorization Data option (5.2.6, 6.2.7)::

    Kbm           = SHA1(home keygen token | care-of keygen token)
    Kbm (dereg.)  = SHA1(home keygen token)       (care-of address == home address)
    Authenticator = First(96, HMAC_SHA1(Kbm, care-of address | correspondent | MH data))

"care-of address" is the address the Binding Update registers (the Alternate Care-of
Address option's if present, else the source address; the home address when
deregistering). "correspondent" is the correspondent node's address (the home address of
a Type 2 Routing Header if the correspondent is itself mobile). "MH data" is the whole
Mobility Header with the Checksum field taken as zero, up to and excluding the
authenticator itself; the Binding Authorization Data option is the last option and
nothing follows it, so that is every octet but the last 12.

Nonces (5.2.7): a new one every NONCE_INTERVAL (30 s) of use, each accepted until
MAX_NONCE_LIFETIME (240 s) after it was made, so an index handed out in a HoT or CoT stays
usable for at least MAX_TOKEN_LIFETIME (210 s) after its first use and never longer
than 240 s. Every nonce remembers the Kcn it was made under, so a new Kcn (made with the
next nonce once ``kcn_lifetime`` has passed) does not invalidate tokens already given out.

Sans-I/O: randomness comes from a ``random_bytes(n)`` callable, time from ``now``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from ipaddress import IPv6Address
from typing import TypeVar

from ..wire import BindingAck, BindingAuthorizationData, BindingUpdate, encode_mh
from ..wire.constants import MHType, MobilityOptionType
from ..wire.errors import DecodeError
from ..wire.mobility_header import FIXED_LENGTH
from ..wire.mobility_options import option_spans

# RFC 6275 section 12.
MAX_NONCE_LIFETIME = 240.0
MAX_TOKEN_LIFETIME = 210.0
MAX_RR_BINDING_LIFETIME = 420.0
# 5.2.7: "a convenient way ... is to generate a new nonce every 30 seconds".
NONCE_INTERVAL = MAX_NONCE_LIFETIME - MAX_TOKEN_LIFETIME
KCN_LIFETIME = 3600.0  # our choice: the RFC only says Kcn may be changed regularly

KCN_LENGTH = 20
NONCE_LENGTH = 8
TOKEN_LENGTH = 8
COOKIE_LENGTH = 8
AUTHENTICATOR_LENGTH = 12
HOME_TOKEN = 0
CAREOF_TOKEN = 1

RandomBytes = Callable[[int], bytes]
_Signed = TypeVar("_Signed", BindingUpdate, BindingAck)


def keygen_token(kcn: bytes, address: IPv6Address, nonce: bytes, kind: int) -> bytes:
    """First(64, HMAC_SHA1(Kcn, address | nonce | kind)), ``kind`` 0 (home) or 1 (care-of)."""
    message = address.packed + nonce + bytes((kind,))
    return hmac.new(kcn, message, hashlib.sha1).digest()[:TOKEN_LENGTH]


def binding_key(home_token: bytes, careof_token: bytes | None) -> bytes:
    """Kbm; without a care-of token (deregistration) from the home keygen token alone."""
    return hashlib.sha1(home_token + (careof_token or b"")).digest()


def authenticator(
    kbm: bytes, care_of: IPv6Address, correspondent: IPv6Address, mh_data: bytes
) -> bytes:
    message = care_of.packed + correspondent.packed + mh_data
    return hmac.new(kbm, message, hashlib.sha1).digest()[:AUTHENTICATOR_LENGTH]


def sign(message: _Signed, kbm: bytes, care_of: IPv6Address, correspondent: IPv6Address) -> _Signed:
    """A copy of ``message`` with a Binding Authorization Data option appended, filled in."""
    placeholder = BindingAuthorizationData(bytes(AUTHENTICATOR_LENGTH))
    draft = replace(message, options=[*message.options, placeholder], checksum=0)
    data = encode_mh(draft)  # no addresses: the checksum field stays zero
    mac = authenticator(kbm, care_of, correspondent, data[:-AUTHENTICATOR_LENGTH])
    return replace(draft, options=[*message.options, BindingAuthorizationData(mac)])


def authorization_problem(
    mh_bytes: bytes, kbm: bytes, care_of: IPv6Address, correspondent: IPv6Address
) -> str | None:
    """None if the BU or BA in ``mh_bytes`` (as received) carries a valid authenticator."""
    if len(mh_bytes) < 3 or mh_bytes[2] not in (MHType.BU, MHType.BA):
        return "not a Binding Update or Acknowledgement"
    try:
        spans = option_spans(mh_bytes, FIXED_LENGTH[mh_bytes[2]], len(mh_bytes))
    except DecodeError as exc:
        return exc.reason
    if not spans or spans[-1][0] != MobilityOptionType.BINDING_AUTHORIZATION_DATA:
        return "no Binding Authorization Data option, or not the last option"
    _, at, length = spans[-1]
    if length != AUTHENTICATOR_LENGTH:
        return f"authenticator of {length} octets, expected {AUTHENTICATOR_LENGTH}"
    if at + 2 + length != len(mh_bytes):
        return "padding after the Binding Authorization Data option"
    zeroed = mh_bytes[:4] + b"\x00\x00" + mh_bytes[6 : at + 2]
    expected = authenticator(kbm, care_of, correspondent, zeroed)
    if not hmac.compare_digest(expected, mh_bytes[at + 2 :]):
        return "authenticator does not verify"
    return None


@dataclass(frozen=True, slots=True)
class Nonce:
    index: int
    value: bytes = field(repr=False)
    kcn: bytes = field(repr=False)
    created: float

    def token(self, address: IPv6Address, kind: int) -> bytes:
        return keygen_token(self.kcn, address, self.value, kind)


class NonceRing:
    """The correspondent's Kcn and recent nonces; bounded (lifetime / interval + 1 entries)."""

    def __init__(
        self,
        random_bytes: RandomBytes,
        *,
        interval: float = NONCE_INTERVAL,
        lifetime: float = MAX_NONCE_LIFETIME,
        kcn_lifetime: float = KCN_LIFETIME,
    ) -> None:
        if not 0 < interval <= lifetime - MAX_TOKEN_LIFETIME:
            raise ValueError(
                f"nonce interval {interval:g} s must be in (0, lifetime - {MAX_TOKEN_LIFETIME:g}]"
            )
        self._random = random_bytes
        self.interval = interval
        self.lifetime = lifetime
        self.kcn_lifetime = kcn_lifetime
        self._nonces: OrderedDict[int, Nonce] = OrderedDict()
        # A random first index: a restarted node does not reuse the indices it gave out.
        self._next_index = int.from_bytes(random_bytes(2), "big")
        self._kcn = b""
        self._kcn_made = 0.0
        self.kcn_generations = 0

    def _prune(self, now: float) -> None:
        while self._nonces:
            oldest = next(iter(self._nonces.values()))
            if now - oldest.created < self.lifetime:
                break
            self._nonces.popitem(last=False)

    def current(self, now: float) -> Nonce:
        """The nonce to hand out now; a new one once the newest is ``interval`` old."""
        self._prune(now)
        newest = next(reversed(self._nonces.values()), None)
        if newest is not None and now - newest.created < self.interval:
            return newest
        if not self._kcn or now - self._kcn_made >= self.kcn_lifetime:
            self._kcn, self._kcn_made = self._random(KCN_LENGTH), now
            self.kcn_generations += 1
        nonce = Nonce(self._next_index, self._random(NONCE_LENGTH), self._kcn, now)
        self._next_index = (self._next_index + 1) & 0xFFFF
        self._nonces[nonce.index] = nonce
        return nonce

    def lookup(self, index: int, now: float) -> Nonce | None:
        """The nonce ``index`` names if it is still acceptable, else None (expired)."""
        nonce = self._nonces.get(index)
        if nonce is None or not nonce.created <= now < nonce.created + self.lifetime:
            return None
        return nonce

    def retire_through(self, created: float) -> None:
        """Stop accepting every nonce made at or before ``created`` (5.2.8's last measure)."""
        for index in [i for i, n in self._nonces.items() if n.created <= created]:
            del self._nonces[index]

    def __len__(self) -> int:
        return len(self._nonces)
