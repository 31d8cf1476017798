"""Mobility Header messages (RFC 6275 6.1).

Messages are slotted dataclasses rather than frozen ones: decoding is a hot path at the
home agent, and a frozen dataclass costs 2.5 times as much to build. Treat them as values.
Lifetimes are kept in the wire's 4-second units; ``lifetime_seconds`` converts.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from typing import ClassVar

from .checksum import upper_layer_checksum
from .constants import (
    BA_FLAG_K,
    BA_FLAG_P,
    BA_FLAG_R,
    BU_FLAG_A,
    BU_FLAG_H,
    BU_FLAG_K,
    BU_FLAG_L,
    BU_FLAG_M,
    BU_FLAG_P,
    BU_FLAG_R,
    IPPROTO_MH,
    IPPROTO_NONE,
    LIFETIME_UNIT,
    MHType,
)
from .errors import DecodeError
from .mobility_options import MobilityOption, decode_options, encode_options

_HEAD = struct.Struct("!BBBBH")
_BU = struct.Struct("!HHH")
_BA = struct.Struct("!BBHH")
_BRR = struct.Struct("!2x")
_TESTINIT = struct.Struct("!2x8s")
_TEST = struct.Struct("!H8s8s")
_BE = struct.Struct("!Bx16s")
MH_HEADER_LEN = 6
MH_BU = int(MHType.BU)
MH_BA = int(MHType.BA)


def _flag(bit: int) -> property:
    return property(lambda self: bool(self.flags & bit))


@dataclass(slots=True)
class BindingRefreshRequest:
    options: list[MobilityOption] = field(default_factory=list)
    checksum: int = field(default=0, compare=False)
    MH_TYPE: ClassVar[int] = MHType.BRR

    def fixed(self) -> bytes:
        return _BRR.pack()


@dataclass(slots=True)
class HomeTestInit:
    cookie: bytes
    options: list[MobilityOption] = field(default_factory=list)
    checksum: int = field(default=0, compare=False)
    MH_TYPE: ClassVar[int] = MHType.HOTI

    def fixed(self) -> bytes:
        return _TESTINIT.pack(self.cookie)


@dataclass(slots=True)
class CareofTestInit:
    cookie: bytes
    options: list[MobilityOption] = field(default_factory=list)
    checksum: int = field(default=0, compare=False)
    MH_TYPE: ClassVar[int] = MHType.COTI

    def fixed(self) -> bytes:
        return _TESTINIT.pack(self.cookie)


@dataclass(slots=True)
class HomeTest:
    nonce_index: int
    cookie: bytes
    token: bytes
    options: list[MobilityOption] = field(default_factory=list)
    checksum: int = field(default=0, compare=False)
    MH_TYPE: ClassVar[int] = MHType.HOT

    def fixed(self) -> bytes:
        return _TEST.pack(self.nonce_index, self.cookie, self.token)


@dataclass(slots=True)
class CareofTest:
    nonce_index: int
    cookie: bytes
    token: bytes
    options: list[MobilityOption] = field(default_factory=list)
    checksum: int = field(default=0, compare=False)
    MH_TYPE: ClassVar[int] = MHType.COT

    def fixed(self) -> bytes:
        return _TEST.pack(self.nonce_index, self.cookie, self.token)


@dataclass(slots=True)
class BindingUpdate:
    """``flags`` holds the whole 16-bit flags/reserved field (BU_FLAG_* bits)."""

    sequence: int
    flags: int
    lifetime: int
    options: list[MobilityOption] = field(default_factory=list)
    checksum: int = field(default=0, compare=False)
    MH_TYPE: ClassVar[int] = MHType.BU

    ack = _flag(BU_FLAG_A)
    home_registration = _flag(BU_FLAG_H)
    link_local_compat = _flag(BU_FLAG_L)
    key_management = _flag(BU_FLAG_K)
    map_registration = _flag(BU_FLAG_M)
    mobile_router = _flag(BU_FLAG_R)
    proxy_registration = _flag(BU_FLAG_P)

    @property
    def lifetime_seconds(self) -> int:
        return self.lifetime * LIFETIME_UNIT

    def fixed(self) -> bytes:
        return _BU.pack(self.sequence, self.flags, self.lifetime)


@dataclass(slots=True)
class BindingAck:
    """``flags`` holds the 8-bit flags/reserved octet (BA_FLAG_* bits)."""

    status: int
    flags: int
    sequence: int
    lifetime: int
    options: list[MobilityOption] = field(default_factory=list)
    checksum: int = field(default=0, compare=False)
    MH_TYPE: ClassVar[int] = MHType.BA

    key_management = _flag(BA_FLAG_K)
    mobile_router = _flag(BA_FLAG_R)
    proxy_registration = _flag(BA_FLAG_P)

    @property
    def accepted(self) -> bool:
        return self.status < 128

    @property
    def lifetime_seconds(self) -> int:
        return self.lifetime * LIFETIME_UNIT

    def fixed(self) -> bytes:
        return _BA.pack(self.status, self.flags, self.sequence, self.lifetime)


@dataclass(slots=True)
class BindingError:
    status: int
    home_address: IPv6Address
    options: list[MobilityOption] = field(default_factory=list)
    checksum: int = field(default=0, compare=False)
    MH_TYPE: ClassVar[int] = MHType.BE

    def fixed(self) -> bytes:
        return _BE.pack(self.status, self.home_address.packed)


@dataclass(slots=True)
class UnknownMessage:
    """An MH type we do not know; ``data`` is everything after the 6-octet header.

    A receiver answers it with a Binding Error, status 2.
    """

    mh_type: int
    data: bytes
    checksum: int = field(default=0, compare=False)

    @property
    def MH_TYPE(self) -> int:  # noqa: N802 - mirrors the ClassVar of known messages
        return self.mh_type

    def fixed(self) -> bytes:
        return bytes(self.data)


MobilityMessage = (
    BindingRefreshRequest
    | HomeTestInit
    | CareofTestInit
    | HomeTest
    | CareofTest
    | BindingUpdate
    | BindingAck
    | BindingError
    | UnknownMessage
)
MOBILITY_MESSAGE_TYPES = (
    BindingRefreshRequest,
    HomeTestInit,
    CareofTestInit,
    HomeTest,
    CareofTest,
    BindingUpdate,
    BindingAck,
    BindingError,
    UnknownMessage,
)


def encode_mh(
    message: MobilityMessage,
    src: IPv6Address | None = None,
    dst: IPv6Address | None = None,
) -> bytes:
    """Encode ``message``; with pseudo-header addresses, fill in the checksum too.

    For Mobile IPv6 ``src``/``dst`` are the home address where an HAO/RH2 carries one;
    :func:`mip6agent.wire.ipv6.build_packet` applies that rule.
    """
    body = message.fixed()
    if isinstance(message, UnknownMessage):
        if (MH_HEADER_LEN + len(body)) % 8:
            raise ValueError("unknown MH data must fill the header to a multiple of 8 octets")
    else:
        body += encode_options(message.options, MH_HEADER_LEN + len(body))
    mh_type = message.MH_TYPE
    total = MH_HEADER_LEN + len(body)
    if total > 2048:
        raise ValueError(f"mobility header of {total} octets exceeds the 8-bit length field")
    data = _HEAD.pack(IPPROTO_NONE, total // 8 - 1, mh_type, 0, 0) + body
    if src is None or dst is None:
        return data
    csum = upper_layer_checksum(src, dst, IPPROTO_MH, data)
    return data[:4] + csum.to_bytes(2, "big") + data[6:]


def _options(buf: bytes, start: int, end: int, offset: int, name: str) -> list[MobilityOption]:
    if start > end:
        raise DecodeError(offset + 1, f"header length too short for {name}")
    if start == end:
        return []
    return decode_options(buf, start, end)


def _decode_brr(buf: bytes, offset: int, end: int, csum: int) -> BindingRefreshRequest:
    return BindingRefreshRequest(_options(buf, offset + 8, end, offset, "BRR"), csum)


def _decode_hoti(buf: bytes, offset: int, end: int, csum: int) -> HomeTestInit:
    opts = _options(buf, offset + 16, end, offset, "HoTI")
    return HomeTestInit(_TESTINIT.unpack_from(buf, offset + 6)[0], opts, csum)


def _decode_coti(buf: bytes, offset: int, end: int, csum: int) -> CareofTestInit:
    opts = _options(buf, offset + 16, end, offset, "CoTI")
    return CareofTestInit(_TESTINIT.unpack_from(buf, offset + 6)[0], opts, csum)


def _decode_hot(buf: bytes, offset: int, end: int, csum: int) -> HomeTest:
    opts = _options(buf, offset + 24, end, offset, "HoT")
    index, cookie, token = _TEST.unpack_from(buf, offset + 6)
    return HomeTest(index, cookie, token, opts, csum)


def _decode_cot(buf: bytes, offset: int, end: int, csum: int) -> CareofTest:
    opts = _options(buf, offset + 24, end, offset, "CoT")
    index, cookie, token = _TEST.unpack_from(buf, offset + 6)
    return CareofTest(index, cookie, token, opts, csum)


def _decode_bu(buf: bytes, offset: int, end: int, csum: int) -> BindingUpdate:
    opts = _options(buf, offset + 12, end, offset, "BU")
    sequence, flags, lifetime = _BU.unpack_from(buf, offset + 6)
    return BindingUpdate(sequence, flags, lifetime, opts, csum)


def _decode_ba(buf: bytes, offset: int, end: int, csum: int) -> BindingAck:
    opts = _options(buf, offset + 12, end, offset, "BA")
    status, flags, sequence, lifetime = _BA.unpack_from(buf, offset + 6)
    return BindingAck(status, flags, sequence, lifetime, opts, csum)


def _decode_be(buf: bytes, offset: int, end: int, csum: int) -> BindingError:
    opts = _options(buf, offset + 24, end, offset, "BE")
    status, addr = _BE.unpack_from(buf, offset + 6)
    return BindingError(status, IPv6Address(addr), opts, csum)


_DECODERS: dict[int, Callable[[bytes, int, int, int], MobilityMessage]] = {
    MHType.BRR: _decode_brr,
    MHType.HOTI: _decode_hoti,
    MHType.COTI: _decode_coti,
    MHType.HOT: _decode_hot,
    MHType.COT: _decode_cot,
    MHType.BU: _decode_bu,
    MHType.BA: _decode_ba,
    MHType.BE: _decode_be,
}


# A BU or BA without options is 16 octets: the fixed part and a 4-octet PadN. It is the
# commonest message at a home agent, so it gets one unpack instead of three.
_PLAIN_BU = struct.Struct("!BxxxHHHHI")
_PLAIN_BA = struct.Struct("!BxxxHBBHHI")
_PADN_4 = 0x01020000
_unpack_plain_bu = _PLAIN_BU.unpack_from


def decode_mh(buf: bytes, offset: int = 0) -> tuple[MobilityMessage, int]:
    """Decode the Mobility Header at ``offset``; return it and the offset just past it."""
    if len(buf) - offset >= 16 and buf[offset + 1] == 1:
        mh_type = buf[offset + 2]
        if mh_type == MH_BU:
            proto, csum, seq, flags, life, pad = _PLAIN_BU.unpack_from(buf, offset)
            if pad == _PADN_4 and proto == IPPROTO_NONE:
                return BindingUpdate(seq, flags, life, [], csum), offset + 16
        elif mh_type == MH_BA:
            proto, csum, status, flags, seq, life, pad = _PLAIN_BA.unpack_from(buf, offset)
            if pad == _PADN_4 and proto == IPPROTO_NONE:
                return BindingAck(status, flags, seq, life, [], csum), offset + 16
    if len(buf) - offset < MH_HEADER_LEN:
        raise DecodeError(offset, "truncated mobility header")
    proto, hlen, mh_type, _reserved, csum = _HEAD.unpack_from(buf, offset)
    if proto != IPPROTO_NONE:
        raise DecodeError(offset, f"payload proto {proto}, expected 59")
    end = offset + (hlen + 1) * 8
    if end > len(buf):
        raise DecodeError(
            offset + 1, f"header length {hlen} exceeds the {len(buf) - offset} octets present"
        )
    decoder = _DECODERS.get(mh_type)
    if decoder is None:
        return UnknownMessage(mh_type, bytes(buf[offset + MH_HEADER_LEN : end]), csum), end
    return decoder(buf, offset, end, csum), end


FIXED_LENGTH: dict[int, int] = {
    MHType.BRR: 8,
    MHType.HOTI: 16,
    MHType.COTI: 16,
    MHType.HOT: 24,
    MHType.COT: 24,
    MHType.BU: 12,
    MHType.BA: 12,
    MHType.BE: 24,
}


def parse_mh(data: bytes) -> MobilityMessage:
    """Decode a buffer that holds exactly one Mobility Header."""
    if len(data) == 16 and data[1] == 1 and data[2] == MH_BU:
        proto, csum, seq, flags, life, pad = _unpack_plain_bu(data)
        if pad == _PADN_4 and proto == IPPROTO_NONE:
            return BindingUpdate(seq, flags, life, [], csum)
    message, end = decode_mh(data)
    if end != len(data):
        raise DecodeError(1, f"header length says {end} octets but {len(data)} are present")
    return message
