"""ICMPv6 messages that Mobile IPv6 uses (RFC 6275 6.5-6.8 and 7, RFC 4861).

DHAAD (144/145), Mobile Prefix Solicitation/Advertisement (146/147), and the Neighbor
Discovery messages a mobile node and home agent read or send, with the ND options that
carry Mobile IPv6 information. Unknown messages and options are kept as raw data.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from typing import ClassVar

from .checksum import upper_layer_checksum
from .constants import (
    IPPROTO_ICMPV6,
    MPA_FLAG_M,
    MPA_FLAG_O,
    NA_FLAG_OVERRIDE,
    NA_FLAG_ROUTER,
    NA_FLAG_SOLICITED,
    PI_FLAG_A,
    PI_FLAG_L,
    PI_FLAG_R,
    RA_FLAG_H,
    RA_FLAG_M,
    RA_FLAG_O,
    ICMPv6Type,
    NDOptionType,
)
from .errors import DecodeError

_HEAD = struct.Struct("!BBH")
_ID = struct.Struct("!H2x")
_MPA = struct.Struct("!HB1x")
_RA = struct.Struct("!BBHII")
_NA = struct.Struct("!B3x16s")
_NS = struct.Struct("!4x16s")
_PI = struct.Struct("!BBII4x16s")
_ADV = struct.Struct("!2xI")
_HAI = struct.Struct("!HHH")
_MTU = struct.Struct("!2xI")


def _flag(bit: int) -> property:
    return property(lambda self: bool(self.flags & bit))


# --- Neighbor Discovery options -------------------------------------------------------


@dataclass(slots=True)
class LinkLayerAddress:
    """Source (type 1) or Target (type 2) Link-layer Address option.

    ``address`` is the option body as received (6 octets on Ethernet, no padding).
    """

    address: bytes
    type: int = NDOptionType.SOURCE_LINK_LAYER_ADDRESS

    def body(self) -> bytes:
        raw = bytes(self.address)
        return raw + bytes(-(len(raw) + 2) % 8)


@dataclass(slots=True)
class PrefixInformation:
    """Prefix Information; the R flag (RFC 6275 7.2) says ``prefix`` is the router's address."""

    prefix_length: int
    flags: int
    valid_lifetime: int
    preferred_lifetime: int
    prefix: IPv6Address
    TYPE: ClassVar[int] = NDOptionType.PREFIX_INFORMATION

    on_link = _flag(PI_FLAG_L)
    autonomous = _flag(PI_FLAG_A)
    router_address = _flag(PI_FLAG_R)

    @property
    def type(self) -> int:
        return self.TYPE

    def body(self) -> bytes:
        return _PI.pack(
            self.prefix_length,
            self.flags,
            self.valid_lifetime,
            self.preferred_lifetime,
            self.prefix.packed,
        )


@dataclass(slots=True)
class MTUOption:
    mtu: int
    TYPE: ClassVar[int] = NDOptionType.MTU

    @property
    def type(self) -> int:
        return self.TYPE

    def body(self) -> bytes:
        return _MTU.pack(self.mtu)


@dataclass(slots=True)
class AdvertisementInterval:
    """RFC 6275 7.3: the router's unsolicited RA interval, in milliseconds."""

    interval: int
    TYPE: ClassVar[int] = NDOptionType.ADVERTISEMENT_INTERVAL

    @property
    def type(self) -> int:
        return self.TYPE

    def body(self) -> bytes:
        return _ADV.pack(self.interval)


@dataclass(slots=True)
class HomeAgentInformation:
    """RFC 6275 7.4; ``flags`` is the 16-bit reserved field (RFC 3963 puts R in its top bit)."""

    preference: int
    lifetime: int
    flags: int = 0
    TYPE: ClassVar[int] = NDOptionType.HOME_AGENT_INFORMATION

    @property
    def type(self) -> int:
        return self.TYPE

    def body(self) -> bytes:
        return _HAI.pack(self.flags, self.preference, self.lifetime)


@dataclass(slots=True)
class UnknownNDOption:
    type: int
    data: bytes

    def body(self) -> bytes:
        return bytes(self.data)


NDOption = (
    LinkLayerAddress
    | PrefixInformation
    | MTUOption
    | AdvertisementInterval
    | HomeAgentInformation
    | UnknownNDOption
)

_ND_FIXED: dict[int, tuple[struct.Struct, Callable[..., NDOption], str]] = {
    NDOptionType.PREFIX_INFORMATION: (
        _PI,
        lambda length, flags, valid, preferred, prefix: PrefixInformation(
            length, flags, valid, preferred, IPv6Address(prefix)
        ),
        "Prefix Information",
    ),
    NDOptionType.MTU: (_MTU, MTUOption, "MTU"),
    NDOptionType.ADVERTISEMENT_INTERVAL: (_ADV, AdvertisementInterval, "Advertisement Interval"),
    NDOptionType.HOME_AGENT_INFORMATION: (
        _HAI,
        lambda flags, pref, life: HomeAgentInformation(pref, life, flags),
        "Home Agent Information",
    ),
}


def decode_nd_options(buf: bytes, offset: int, end: int) -> list[NDOption]:
    options: list[NDOption] = []
    pos = offset
    while pos < end:
        if pos + 2 > end:
            raise DecodeError(pos, "truncated ND option")
        kind, units = buf[pos], buf[pos + 1]
        if units == 0:
            raise DecodeError(pos + 1, f"ND option type {kind} has length 0")
        stop = pos + units * 8
        if stop > end:
            raise DecodeError(pos + 1, f"ND option length {units} runs past the message")
        fixed = _ND_FIXED.get(kind)
        if fixed is not None:
            layout, build, name = fixed
            if units * 8 != layout.size + 2:
                raise DecodeError(pos + 1, f"bad option length {units} for {name}")
            options.append(build(*layout.unpack_from(buf, pos + 2)))
        elif kind in (
            NDOptionType.SOURCE_LINK_LAYER_ADDRESS,
            NDOptionType.TARGET_LINK_LAYER_ADDRESS,
        ):
            options.append(LinkLayerAddress(bytes(buf[pos + 2 : stop]), kind))
        else:
            options.append(UnknownNDOption(kind, bytes(buf[pos + 2 : stop])))
        pos = stop
    return options


def encode_nd_options(options: list[NDOption]) -> bytes:
    out = bytearray()
    for option in options:
        body = option.body()
        if (len(body) + 2) % 8:
            raise ValueError(f"ND option type {option.type} body of {len(body)} octets is not 8n-2")
        out += bytes((option.type, (len(body) + 2) // 8))
        out += body
    return bytes(out)


# --- Messages -------------------------------------------------------------------------


@dataclass(slots=True)
class HAADRequest:
    identifier: int
    code: int = 0
    checksum: int = field(default=0, compare=False)
    TYPE: ClassVar[int] = ICMPv6Type.HAAD_REQUEST

    def body(self) -> bytes:
        return _ID.pack(self.identifier)


@dataclass(slots=True)
class HAADReply:
    identifier: int
    home_agents: list[IPv6Address] = field(default_factory=list)
    code: int = 0
    checksum: int = field(default=0, compare=False)
    TYPE: ClassVar[int] = ICMPv6Type.HAAD_REPLY

    def body(self) -> bytes:
        return _ID.pack(self.identifier) + b"".join(a.packed for a in self.home_agents)


@dataclass(slots=True)
class MobilePrefixSolicitation:
    identifier: int
    code: int = 0
    checksum: int = field(default=0, compare=False)
    TYPE: ClassVar[int] = ICMPv6Type.MOBILE_PREFIX_SOLICITATION

    def body(self) -> bytes:
        return _ID.pack(self.identifier)


@dataclass(slots=True)
class MobilePrefixAdvertisement:
    identifier: int
    flags: int = 0
    options: list[NDOption] = field(default_factory=list)
    code: int = 0
    checksum: int = field(default=0, compare=False)
    TYPE: ClassVar[int] = ICMPv6Type.MOBILE_PREFIX_ADVERTISEMENT

    managed = _flag(MPA_FLAG_M)
    other = _flag(MPA_FLAG_O)

    def body(self) -> bytes:
        return _MPA.pack(self.identifier, self.flags) + encode_nd_options(self.options)


@dataclass(slots=True)
class RouterSolicitation:
    options: list[NDOption] = field(default_factory=list)
    code: int = 0
    checksum: int = field(default=0, compare=False)
    TYPE: ClassVar[int] = ICMPv6Type.ROUTER_SOLICITATION

    def body(self) -> bytes:
        return bytes(4) + encode_nd_options(self.options)


@dataclass(slots=True)
class RouterAdvertisement:
    cur_hop_limit: int = 64
    flags: int = 0
    router_lifetime: int = 1800
    reachable_time: int = 0
    retrans_timer: int = 0
    options: list[NDOption] = field(default_factory=list)
    code: int = 0
    checksum: int = field(default=0, compare=False)
    TYPE: ClassVar[int] = ICMPv6Type.ROUTER_ADVERTISEMENT

    managed = _flag(RA_FLAG_M)
    other = _flag(RA_FLAG_O)
    home_agent = _flag(RA_FLAG_H)

    def body(self) -> bytes:
        head = _RA.pack(
            self.cur_hop_limit,
            self.flags,
            self.router_lifetime,
            self.reachable_time,
            self.retrans_timer,
        )
        return head + encode_nd_options(self.options)

    def option(self, kind: type) -> NDOption | None:
        return next((o for o in self.options if isinstance(o, kind)), None)


@dataclass(slots=True)
class NeighborSolicitation:
    target: IPv6Address
    options: list[NDOption] = field(default_factory=list)
    code: int = 0
    checksum: int = field(default=0, compare=False)
    TYPE: ClassVar[int] = ICMPv6Type.NEIGHBOR_SOLICITATION

    def body(self) -> bytes:
        return _NS.pack(self.target.packed) + encode_nd_options(self.options)


@dataclass(slots=True)
class NeighborAdvertisement:
    target: IPv6Address
    flags: int = 0
    options: list[NDOption] = field(default_factory=list)
    code: int = 0
    checksum: int = field(default=0, compare=False)
    TYPE: ClassVar[int] = ICMPv6Type.NEIGHBOR_ADVERTISEMENT

    router = _flag(NA_FLAG_ROUTER)
    solicited = _flag(NA_FLAG_SOLICITED)
    override = _flag(NA_FLAG_OVERRIDE)

    def body(self) -> bytes:
        return _NA.pack(self.flags, self.target.packed) + encode_nd_options(self.options)


@dataclass(slots=True)
class UnknownICMPv6:
    type: int
    code: int
    data: bytes
    checksum: int = field(default=0, compare=False)

    @property
    def TYPE(self) -> int:  # noqa: N802 - mirrors the ClassVar of known messages
        return self.type

    def body(self) -> bytes:
        return bytes(self.data)


ICMPv6Message = (
    HAADRequest
    | HAADReply
    | MobilePrefixSolicitation
    | MobilePrefixAdvertisement
    | RouterSolicitation
    | RouterAdvertisement
    | NeighborSolicitation
    | NeighborAdvertisement
    | UnknownICMPv6
)


def encode_icmpv6(
    message: ICMPv6Message,
    src: IPv6Address | None = None,
    dst: IPv6Address | None = None,
) -> bytes:
    """Encode ``message``; with pseudo-header addresses, fill in the checksum too."""
    data = _HEAD.pack(message.TYPE, message.code, 0) + message.body()
    if src is None or dst is None:
        return data
    csum = upper_layer_checksum(src, dst, IPPROTO_ICMPV6, data)
    return data[:2] + csum.to_bytes(2, "big") + data[4:]


def _need(buf_len: int, offset: int, size: int, name: str) -> None:
    if buf_len < size:
        raise DecodeError(offset, f"truncated {name}: {buf_len} octets, need {size}")


def _decode_haad_req(buf: bytes, offset: int, end: int, code: int, csum: int) -> HAADRequest:
    _need(end - offset, offset, 8, "HAAD Request")
    return HAADRequest(_ID.unpack_from(buf, offset + 4)[0], code, csum)


def _decode_haad_rep(buf: bytes, offset: int, end: int, code: int, csum: int) -> HAADReply:
    _need(end - offset, offset, 8, "HAAD Reply")
    if (end - offset - 8) % 16:
        raise DecodeError(offset + 8, "HAAD Reply address list is not a whole number of addresses")
    addrs = [IPv6Address(bytes(buf[p : p + 16])) for p in range(offset + 8, end, 16)]
    return HAADReply(_ID.unpack_from(buf, offset + 4)[0], addrs, code, csum)


def _decode_mps(
    buf: bytes, offset: int, end: int, code: int, csum: int
) -> MobilePrefixSolicitation:
    _need(end - offset, offset, 8, "Mobile Prefix Solicitation")
    return MobilePrefixSolicitation(_ID.unpack_from(buf, offset + 4)[0], code, csum)


def _decode_mpa(
    buf: bytes, offset: int, end: int, code: int, csum: int
) -> MobilePrefixAdvertisement:
    _need(end - offset, offset, 8, "Mobile Prefix Advertisement")
    ident, flags = _MPA.unpack_from(buf, offset + 4)
    return MobilePrefixAdvertisement(
        ident, flags, decode_nd_options(buf, offset + 8, end), code, csum
    )


def _decode_rs(buf: bytes, offset: int, end: int, code: int, csum: int) -> RouterSolicitation:
    _need(end - offset, offset, 8, "Router Solicitation")
    return RouterSolicitation(decode_nd_options(buf, offset + 8, end), code, csum)


def _decode_ra(buf: bytes, offset: int, end: int, code: int, csum: int) -> RouterAdvertisement:
    _need(end - offset, offset, 16, "Router Advertisement")
    hop_limit, flags, lifetime, reachable, retrans = _RA.unpack_from(buf, offset + 4)
    options = decode_nd_options(buf, offset + 16, end)
    return RouterAdvertisement(hop_limit, flags, lifetime, reachable, retrans, options, code, csum)


def _decode_ns(buf: bytes, offset: int, end: int, code: int, csum: int) -> NeighborSolicitation:
    _need(end - offset, offset, 24, "Neighbor Solicitation")
    target = IPv6Address(_NS.unpack_from(buf, offset + 4)[0])
    return NeighborSolicitation(target, decode_nd_options(buf, offset + 24, end), code, csum)


def _decode_na(buf: bytes, offset: int, end: int, code: int, csum: int) -> NeighborAdvertisement:
    _need(end - offset, offset, 24, "Neighbor Advertisement")
    flags, target = _NA.unpack_from(buf, offset + 4)
    opts = decode_nd_options(buf, offset + 24, end)
    return NeighborAdvertisement(IPv6Address(target), flags, opts, code, csum)


_DECODERS: dict[int, Callable[[bytes, int, int, int, int], ICMPv6Message]] = {
    ICMPv6Type.HAAD_REQUEST: _decode_haad_req,
    ICMPv6Type.HAAD_REPLY: _decode_haad_rep,
    ICMPv6Type.MOBILE_PREFIX_SOLICITATION: _decode_mps,
    ICMPv6Type.MOBILE_PREFIX_ADVERTISEMENT: _decode_mpa,
    ICMPv6Type.ROUTER_SOLICITATION: _decode_rs,
    ICMPv6Type.ROUTER_ADVERTISEMENT: _decode_ra,
    ICMPv6Type.NEIGHBOR_SOLICITATION: _decode_ns,
    ICMPv6Type.NEIGHBOR_ADVERTISEMENT: _decode_na,
}


def decode_icmpv6(buf: bytes, offset: int = 0, end: int | None = None) -> ICMPv6Message:
    """Decode the ICMPv6 message in ``buf[offset:end]`` (to the end of ``buf`` by default)."""
    end = len(buf) if end is None else end
    if end - offset < 4:
        raise DecodeError(offset, "truncated ICMPv6 header")
    kind, code, csum = _HEAD.unpack_from(buf, offset)
    decoder = _DECODERS.get(kind)
    if decoder is None:
        return UnknownICMPv6(kind, code, bytes(buf[offset + 4 : end]), csum)
    return decoder(buf, offset, end, code, csum)
