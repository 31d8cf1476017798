"""Return routability computed straight from RFC 6275 5.2.5, 5.2.6 and 6.2.7 for tests.

Nothing here calls mip6agent's own crypto: tokens, Kbm and authenticators are rebuilt with
hashlib and hmac from the formulas, so a wrong byte on either side shows up as a mismatch.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from ipaddress import IPv6Address

from mip6agent import wire

CN = IPv6Address("2001:db8:4::9")
HOA = IPv6Address("2001:db8:1::100")
HOA2 = IPv6Address("2001:db8:1::200")
COA = IPv6Address("2001:db8:2::100")
COA2 = IPv6Address("2001:db8:3::100")
HA = IPv6Address("2001:db8:1::1")
T0 = 1_800_000_000.0


def token(kcn: bytes, address: IPv6Address, nonce: bytes, kind: int) -> bytes:
    """First(64, HMAC_SHA1(Kcn, address | nonce | kind)); kind is one octet, 0 or 1."""
    return hmac.new(kcn, address.packed + nonce + bytes([kind]), hashlib.sha1).digest()[:8]


def kbm(home_token: bytes, careof_token: bytes | None = None) -> bytes:
    return hashlib.sha1(home_token + (careof_token or b"")).digest()


def authenticator(key: bytes, care_of: IPv6Address, cn: IPv6Address, mh: bytes) -> bytes:
    """From a whole received MH (checksum filled in, BAD last): zero the checksum, leave
    out the 12 authenticator octets at the end, First(96, HMAC_SHA1(Kbm, CoA | CN | data))."""
    assert mh[-14] == 5 and mh[-13] == 12, "BAD must be the last option, nothing after it"
    data = mh[:4] + b"\x00\x00" + mh[6:-12]
    return hmac.new(key, care_of.packed + cn.packed + data, hashlib.sha1).digest()[:12]


def bad_ok(key: bytes, care_of: IPv6Address, cn: IPv6Address, mh: bytes) -> bool:
    return mh[-12:] == authenticator(key, care_of, cn, mh)


def signed_bu(
    bu: wire.BindingUpdate, key: bytes, care_of: IPv6Address, cn: IPv6Address
) -> wire.BindingUpdate:
    """``bu`` with a BAD option appended whose authenticator is computed here."""
    placeholder = wire.BindingAuthorizationData(bytes(12))
    draft = wire.BindingUpdate(bu.sequence, bu.flags, bu.lifetime, [*bu.options, placeholder])
    raw = wire.encode_mh(draft)  # checksum 0, placeholder last
    mac = authenticator(key, care_of, cn, raw)
    return wire.BindingUpdate(
        bu.sequence, bu.flags, bu.lifetime, [*bu.options, wire.BindingAuthorizationData(mac)]
    )


class Randomness:
    """A seeded random_bytes that also remembers everything it handed out."""

    def __init__(self, seed: int = 1) -> None:
        self._random = random.Random(seed)
        self.given: list[bytes] = []

    def __call__(self, count: int) -> bytes:
        value = self._random.randbytes(count)
        self.given.append(value)
        return value


def sent(actions: list) -> list[wire.Packet]:
    return [wire.parse_packet(a.data, check_checksum=True) for a in actions if hasattr(a, "data")]


def of_type(actions: list, kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


def signed_ba(
    ba: wire.BindingAck, key: bytes, care_of: IPv6Address, cn: IPv6Address
) -> wire.BindingAck:
    """``ba`` with a BAD option whose authenticator is computed here."""
    placeholder = wire.BindingAuthorizationData(bytes(12))
    draft = wire.BindingAck(ba.status, ba.flags, ba.sequence, ba.lifetime, [placeholder])
    mac = authenticator(key, care_of, cn, wire.encode_mh(draft))
    return wire.BindingAck(
        ba.status, ba.flags, ba.sequence, ba.lifetime, [wire.BindingAuthorizationData(mac)]
    )
