"""IPv6 packets with the Mobile IPv6 extension headers (RFC 6275 6.3, 6.4).

:func:`build_packet` makes a whole packet for a header-included raw socket: IPv6 header,
Type 2 Routing Header, Destination Options with the Home Address option, then an MH or
ICMPv6 message whose checksum follows the home-address rule. :func:`parse_packet` takes
any IPv6 packet apart and decodes the Mobile IPv6 parts it finds.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from ipaddress import IPv6Address

from .checksum import verify_upper_layer_checksum
from .constants import (
    DSTOPT_HOME_ADDRESS,
    DSTOPT_PAD1,
    DSTOPT_PADN,
    IPPROTO_DSTOPTS,
    IPPROTO_FRAGMENT,
    IPPROTO_HOPOPTS,
    IPPROTO_ICMPV6,
    IPPROTO_MH,
    IPPROTO_ROUTING,
    ROUTING_TYPE_2,
)
from .errors import DecodeError
from .icmpv6 import ICMPv6Message, decode_icmpv6, encode_icmpv6
from .mobility_header import MOBILITY_MESSAGE_TYPES, MobilityMessage, decode_mh, encode_mh

IPV6_HEADER_LEN = 40
_IPV6 = struct.Struct("!IHBB16s16s")
_RH2 = struct.Struct("!BBBB4x16s")
_FRAG = struct.Struct("!BxHI")


@dataclass(slots=True)
class HomeAddressOption:
    """Destination option 201 carrying the mobile node's home address."""

    address: IPv6Address
    TYPE = DSTOPT_HOME_ADDRESS


@dataclass(slots=True)
class UnknownDestinationOption:
    type: int
    data: bytes


DestinationOption = HomeAddressOption | UnknownDestinationOption


@dataclass(slots=True)
class DestinationOptions:
    options: list[DestinationOption] = field(default_factory=list)
    PROTO = IPPROTO_DSTOPTS

    @property
    def home_address(self) -> IPv6Address | None:
        for option in self.options:
            if isinstance(option, HomeAddressOption):
                return option.address
        return None


@dataclass(slots=True)
class RoutingHeaderType2:
    home_address: IPv6Address
    segments_left: int = 1
    PROTO = IPPROTO_ROUTING


@dataclass(slots=True)
class OtherExtensionHeader:
    """Hop-by-Hop, Fragment, other routing types: kept raw (``data`` after the first 2 octets)."""

    proto: int
    data: bytes
    routing_type: int | None = None


ExtensionHeader = DestinationOptions | RoutingHeaderType2 | OtherExtensionHeader


@dataclass(slots=True)
class Packet:
    """A parsed IPv6 packet. ``payload`` is the decoded upper layer, or raw bytes."""

    src: IPv6Address
    dst: IPv6Address
    next_header: int
    hop_limit: int
    traffic_class: int
    flow_label: int
    headers: list[ExtensionHeader]
    protocol: int
    payload: MobilityMessage | ICMPv6Message | bytes
    payload_bytes: bytes

    @property
    def home_address_option(self) -> IPv6Address | None:
        for header in self.headers:
            if isinstance(header, DestinationOptions):
                home = header.home_address
                if home is not None:
                    return home
        return None

    @property
    def routing_header_type2(self) -> RoutingHeaderType2 | None:
        for header in self.headers:
            if isinstance(header, RoutingHeaderType2):
                return header
        return None

    @property
    def pseudo_addresses(self) -> tuple[IPv6Address, IPv6Address]:
        """Pseudo-header (source, destination): the home address replaces the outer one."""
        rh2 = self.routing_header_type2
        home = self.home_address_option
        src = home if home is not None else self.src
        # RFC 8200 8.1: with segments left 0 the IPv6 destination already is the final one.
        dst = rh2.home_address if rh2 is not None and rh2.segments_left else self.dst
        return src, dst

    def checksum_ok(self) -> bool:
        """Verify an MH or ICMPv6 checksum with the home-address rule."""
        src, dst = self.pseudo_addresses
        return verify_upper_layer_checksum(src, dst, self.protocol, self.payload_bytes)


def _encode_dstopts(next_header: int, options: list[DestinationOption]) -> bytes:
    body = bytearray()
    for option in options:
        if isinstance(option, HomeAddressOption):
            pad = (6 - (2 + len(body))) % 8  # HAO alignment is 8n+6
            body += _dst_padding(pad)
            body += bytes((DSTOPT_HOME_ADDRESS, 16)) + option.address.packed
        else:
            body += bytes((option.type, len(option.data))) + bytes(option.data)
    body += _dst_padding(-(2 + len(body)) % 8)
    return bytes((next_header, (2 + len(body)) // 8 - 1)) + bytes(body)


def _dst_padding(count: int) -> bytes:
    if count == 0:
        return b""
    if count == 1:
        return bytes((DSTOPT_PAD1,))
    return bytes((DSTOPT_PADN, count - 2)) + bytes(count - 2)


def build_packet(
    src: IPv6Address,
    dst: IPv6Address,
    message: MobilityMessage | ICMPv6Message,
    *,
    home_address: IPv6Address | None = None,
    routing_home_address: IPv6Address | None = None,
    hop_limit: int = 64,
) -> bytes:
    """Build a full IPv6 packet carrying ``message``.

    ``home_address`` adds a Destination Options header with the Home Address option (a
    mobile node sending from its care-of address ``src``); ``routing_home_address`` adds a
    Type 2 Routing Header (sending to a mobile node's care-of address ``dst``). The upper
    layer checksum uses the home address in place of the outer address it stands for.
    """
    pseudo_src = home_address if home_address is not None else src
    pseudo_dst = routing_home_address if routing_home_address is not None else dst
    if isinstance(message, MOBILITY_MESSAGE_TYPES):
        proto = IPPROTO_MH
        upper = encode_mh(message, pseudo_src, pseudo_dst)
    else:
        proto = IPPROTO_ICMPV6
        upper = encode_icmpv6(message, pseudo_src, pseudo_dst)
    # Built inside out; RFC 6275 6.3 puts the Home Address option after a Routing Header.
    next_header = proto
    headers = b""
    if home_address is not None:
        headers = _encode_dstopts(next_header, [HomeAddressOption(home_address)])
        next_header = IPPROTO_DSTOPTS
    if routing_home_address is not None:
        rh2 = _RH2.pack(next_header, 2, ROUTING_TYPE_2, 1, routing_home_address.packed)
        headers = rh2 + headers
        next_header = IPPROTO_ROUTING
    payload = headers + upper
    head = _IPV6.pack(6 << 28, len(payload), next_header, hop_limit, src.packed, dst.packed)
    return head + payload


def _parse_dstopts(buf: bytes, start: int, end: int) -> DestinationOptions:
    options: list[DestinationOption] = []
    pos = start
    while pos < end:
        kind = buf[pos]
        if kind == DSTOPT_PAD1:
            pos += 1
            continue
        if pos + 2 > end:
            raise DecodeError(pos, "truncated destination option")
        length = buf[pos + 1]
        if pos + 2 + length > end:
            raise DecodeError(pos + 1, f"destination option length {length} runs past the header")
        if kind == DSTOPT_HOME_ADDRESS:
            if length != 16:
                raise DecodeError(
                    pos + 1, f"bad option length {length} for Home Address, expected 16"
                )
            options.append(HomeAddressOption(IPv6Address(bytes(buf[pos + 2 : pos + 18]))))
        elif kind != DSTOPT_PADN:
            options.append(UnknownDestinationOption(kind, bytes(buf[pos + 2 : pos + 2 + length])))
        pos += 2 + length
    return DestinationOptions(options)


def parse_packet(data: bytes, *, check_checksum: bool = False) -> Packet:
    """Parse an IPv6 packet, decoding MH, ICMPv6, HAO and RH2 on the way.

    With ``check_checksum`` a decoded MH or ICMPv6 message whose checksum does not verify
    under the home-address rule raises :class:`DecodeError` at the checksum field.
    """
    if len(data) < IPV6_HEADER_LEN:
        raise DecodeError(0, f"truncated IPv6 header: {len(data)} octets")
    word, plen, next_header, hop_limit, src, dst = _IPV6.unpack_from(data, 0)
    if word >> 28 != 6:
        raise DecodeError(0, f"IP version {word >> 28}, expected 6")
    end = IPV6_HEADER_LEN + plen
    if end > len(data):
        raise DecodeError(4, f"payload length {plen} exceeds the {len(data) - 40} octets present")
    headers: list[ExtensionHeader] = []
    proto = next_header
    pos = IPV6_HEADER_LEN
    fragmented = False
    while (
        proto in (IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT)
        and not fragmented
    ):
        if pos + 8 > end:
            raise DecodeError(pos, f"truncated extension header {proto}")
        nxt = data[pos]
        size = 8 if proto == IPPROTO_FRAGMENT else (data[pos + 1] + 1) * 8
        if pos + size > end:
            raise DecodeError(
                pos + 1, f"extension header {proto} length {size} runs past the packet"
            )
        if proto == IPPROTO_DSTOPTS:
            headers.append(_parse_dstopts(data, pos + 2, pos + size))
        elif proto == IPPROTO_ROUTING and data[pos + 2] == ROUTING_TYPE_2:
            if size != 24:
                raise DecodeError(
                    pos + 1, f"Type 2 Routing Header length {data[pos + 1]}, expected 2"
                )
            _, _, _, segleft, home = _RH2.unpack_from(data, pos)
            headers.append(RoutingHeaderType2(IPv6Address(home), segleft))
        else:
            rtype = data[pos + 2] if proto == IPPROTO_ROUTING else None
            headers.append(OtherExtensionHeader(proto, bytes(data[pos + 2 : pos + size]), rtype))
            if proto == IPPROTO_FRAGMENT:
                _, offset_flags, _ = _FRAG.unpack_from(data, pos)
                fragmented = bool(offset_flags & 0xFFF9)
        proto = nxt
        pos += size
    upper = bytes(data[pos:end])
    payload: MobilityMessage | ICMPv6Message | bytes = upper
    if not fragmented:
        if proto == IPPROTO_MH:
            message, stop = decode_mh(data[:end], pos)
            if stop != end:
                raise DecodeError(
                    pos + 1, f"mobility header ends at {stop} but the packet at {end}"
                )
            payload = message
        elif proto == IPPROTO_ICMPV6:
            payload = decode_icmpv6(data, pos, end)
    packet = Packet(
        IPv6Address(src),
        IPv6Address(dst),
        next_header,
        hop_limit,
        (word >> 20) & 0xFF,
        word & 0xFFFFF,
        headers,
        proto,
        payload,
        upper,
    )
    if check_checksum and not isinstance(payload, bytes) and not packet.checksum_ok():
        field = pos + (4 if proto == IPPROTO_MH else 2)
        raise DecodeError(
            field, f"bad checksum {int.from_bytes(data[field : field + 2], 'big'):#06x}"
        )
    return packet
