"""Mobility options (RFC 6275 6.2, RFC 4283, RFC 4285).

Decoding drops Pad1/PadN and keeps unknown options; encoding inserts the padding each
option's alignment rule (xn+y, counted from the start of the Mobility Header) asks for.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import ClassVar

from .constants import (
    AUTH_SUBTYPE_MN_HA,
    LIFETIME_UNIT,
    MN_ID_SUBTYPE_NAI,
    MobilityOptionType,
)
from .errors import DecodeError

# Plain ints: IntEnum member lookups cost ~50 ns each inside the decode loop.
_PAD1 = int(MobilityOptionType.PAD1)
_PADN = int(MobilityOptionType.PADN)
_U16 = struct.Struct("!H")
_U16X2 = struct.Struct("!HH")
_U64 = struct.Struct("!Q")
_AUTH_HEAD = struct.Struct("!BI")


@dataclass(slots=True)
class BindingRefreshAdvice:
    """Refresh interval in units of 4 seconds."""

    interval: int
    TYPE: ClassVar[int] = MobilityOptionType.BINDING_REFRESH_ADVICE
    ALIGN: ClassVar[tuple[int, int]] = (2, 0)

    @property
    def interval_seconds(self) -> int:
        return self.interval * LIFETIME_UNIT

    def body(self) -> bytes:
        return _U16.pack(self.interval)


@dataclass(slots=True)
class AlternateCareofAddress:
    address: IPv6Address
    TYPE: ClassVar[int] = MobilityOptionType.ALTERNATE_COA
    ALIGN: ClassVar[tuple[int, int]] = (8, 6)

    def body(self) -> bytes:
        return self.address.packed


@dataclass(slots=True)
class NonceIndices:
    home_nonce_index: int
    careof_nonce_index: int
    TYPE: ClassVar[int] = MobilityOptionType.NONCE_INDICES
    ALIGN: ClassVar[tuple[int, int]] = (2, 0)

    def body(self) -> bytes:
        return _U16X2.pack(self.home_nonce_index, self.careof_nonce_index)


@dataclass(slots=True)
class BindingAuthorizationData:
    """Return-routability authenticator (96 bits in RFC 6275)."""

    authenticator: bytes
    TYPE: ClassVar[int] = MobilityOptionType.BINDING_AUTHORIZATION_DATA
    ALIGN: ClassVar[tuple[int, int]] = (8, 2)

    def body(self) -> bytes:
        return bytes(self.authenticator)


@dataclass(slots=True)
class MobileNodeIdentifier:
    """RFC 4283; subtype 1 carries a Network Access Identifier."""

    identifier: bytes
    subtype: int = MN_ID_SUBTYPE_NAI
    TYPE: ClassVar[int] = MobilityOptionType.MN_IDENTIFIER
    ALIGN: ClassVar[tuple[int, int]] = (1, 0)

    @property
    def nai(self) -> str:
        return self.identifier.decode("utf-8", "replace")

    def body(self) -> bytes:
        return bytes((self.subtype,)) + bytes(self.identifier)


@dataclass(slots=True)
class MessageAuthentication:
    """RFC 4285 Mobility Message Authentication; must be the last option."""

    spi: int
    authenticator: bytes
    subtype: int = AUTH_SUBTYPE_MN_HA
    TYPE: ClassVar[int] = MobilityOptionType.MESSAGE_AUTHENTICATION
    ALIGN: ClassVar[tuple[int, int]] = (4, 1)

    def body(self) -> bytes:
        return _AUTH_HEAD.pack(self.subtype, self.spi) + bytes(self.authenticator)


@dataclass(slots=True)
class MessageIdentification:
    """RFC 4285 Mobility Message Identification: a 64-bit NTP-format timestamp."""

    timestamp: int
    TYPE: ClassVar[int] = MobilityOptionType.MESSAGE_IDENTIFICATION
    ALIGN: ClassVar[tuple[int, int]] = (8, 2)

    def body(self) -> bytes:
        return _U64.pack(self.timestamp)


@dataclass(slots=True)
class UnknownMobilityOption:
    """An option we do not interpret; kept so that re-encoding is faithful."""

    type: int
    data: bytes
    ALIGN: ClassVar[tuple[int, int]] = (1, 0)

    @property
    def TYPE(self) -> int:  # noqa: N802 - mirrors the ClassVar of known options
        return self.type

    def body(self) -> bytes:
        return bytes(self.data)


MobilityOption = (
    BindingRefreshAdvice
    | AlternateCareofAddress
    | NonceIndices
    | BindingAuthorizationData
    | MobileNodeIdentifier
    | MessageAuthentication
    | MessageIdentification
    | UnknownMobilityOption
)


def _fixed(length: int, want: int, offset: int, name: str) -> None:
    if length != want:
        raise DecodeError(offset + 1, f"bad option length {length} for {name}, expected {want}")


def _decode_one(kind: int, buf: bytes, start: int, length: int, at: int) -> MobilityOption:
    if kind == MobilityOptionType.BINDING_REFRESH_ADVICE:
        _fixed(length, 2, at, "Binding Refresh Advice")
        return BindingRefreshAdvice(_U16.unpack_from(buf, start)[0])
    if kind == MobilityOptionType.ALTERNATE_COA:
        _fixed(length, 16, at, "Alternate Care-of Address")
        return AlternateCareofAddress(IPv6Address(bytes(buf[start : start + 16])))
    if kind == MobilityOptionType.NONCE_INDICES:
        _fixed(length, 4, at, "Nonce Indices")
        return NonceIndices(*_U16X2.unpack_from(buf, start))
    if kind == MobilityOptionType.BINDING_AUTHORIZATION_DATA:
        return BindingAuthorizationData(bytes(buf[start : start + length]))
    if kind == MobilityOptionType.MN_IDENTIFIER:
        if length < 1:
            raise DecodeError(at + 1, "bad option length 0 for Mobile Node Identifier")
        return MobileNodeIdentifier(bytes(buf[start + 1 : start + length]), buf[start])
    if kind == MobilityOptionType.MESSAGE_AUTHENTICATION:
        if length < 5:
            raise DecodeError(at + 1, f"bad option length {length} for Message Authentication")
        subtype, spi = _AUTH_HEAD.unpack_from(buf, start)
        return MessageAuthentication(spi, bytes(buf[start + 5 : start + length]), subtype)
    if kind == MobilityOptionType.MESSAGE_IDENTIFICATION:
        _fixed(length, 8, at, "Message Identification")
        return MessageIdentification(_U64.unpack_from(buf, start)[0])
    return UnknownMobilityOption(kind, bytes(buf[start : start + length]))


def decode_options(buf: bytes, offset: int, end: int) -> list[MobilityOption]:
    """Decode the options in ``buf[offset:end]``, skipping padding."""
    options: list[MobilityOption] = []
    pos = offset
    while pos < end:
        kind = buf[pos]
        if kind == _PAD1:
            pos += 1
            continue
        if pos + 2 > end:
            raise DecodeError(pos, "truncated mobility option")
        length = buf[pos + 1]
        start = pos + 2
        if start + length > end:
            raise DecodeError(pos + 1, f"option length {length} runs past the header")
        if kind != _PADN:
            options.append(_decode_one(kind, buf, start, length, pos))
        pos = start + length
    return options


def option_spans(buf: bytes, offset: int, end: int) -> list[tuple[int, int, int]]:
    """(type, offset, body length) of each non-padding option, for code that must see bytes.

    RFC 4285 authenticates the header's bytes up to a point inside its option, so the
    authenticator check needs positions, not decoded values.
    """
    spans = []
    pos = offset
    while pos < end:
        kind = buf[pos]
        if kind == MobilityOptionType.PAD1:
            pos += 1
            continue
        if pos + 2 > end or pos + 2 + buf[pos + 1] > end:
            raise DecodeError(pos, "truncated mobility option")
        if kind != MobilityOptionType.PADN:
            spans.append((kind, pos, buf[pos + 1]))
        pos += 2 + buf[pos + 1]
    return spans


def padding(count: int) -> bytes:
    """Pad1 or PadN bytes filling exactly ``count`` octets."""
    if count == 0:
        return b""
    if count == 1:
        return b"\x00"
    return bytes((MobilityOptionType.PADN, count - 2)) + bytes(count - 2)


def encode_options(options: list[MobilityOption], position: int) -> bytes:
    """Encode ``options`` as they would sit at ``position`` octets into the header.

    The result ends on an 8-octet boundary. The last option, if it is a Message
    Authentication option, is placed so that no padding follows it (RFC 4285 wants it last).
    """
    out = bytearray()
    last = len(options) - 1
    for index, option in enumerate(options):
        body = option.body()
        if len(body) > 255:
            raise ValueError(f"option {type(option).__name__} body is {len(body)} octets (max 255)")
        here = position + len(out)
        mod, rem = option.ALIGN
        pad = (rem - here) % mod
        if index == last and isinstance(option, MessageAuthentication):
            while (here + pad + 2 + len(body)) % 8 and pad < 8:
                pad += mod
            if (here + pad + 2 + len(body)) % 8:
                pad = (rem - here) % mod
        out += padding(pad)
        out += bytes((option.TYPE, len(body)))
        out += body
    out += padding(-(position + len(out)) % 8)
    return bytes(out)
