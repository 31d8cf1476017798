"""Packets as Wireshark display-filter fields, valued as ``tshark -T fields`` prints them.

Integers print in decimal, hex-based fields as zero-padded ``0x..``, booleans as ``1``/``0``,
byte strings as bare hex and addresses as ``inet_ntop`` writes them. Repeated fields are
joined with commas. Two fields deliberately differ from tshark 4.0, whose dissector gets
them wrong (see docs/mip6dump.md): ``mip6.auth.auth_data`` (tshark drops the last two
octets) and ``mip6.mseg_id.timestamp`` (tshark reads the NTP timestamp as Unix time; we
print the 64-bit value in hex).
"""

from __future__ import annotations

import socket
from collections import defaultdict
from ipaddress import IPv6Address
from typing import assert_never

from ..wire import (
    MOBILITY_MESSAGE_TYPES,
    AdvertisementInterval,
    AlternateCareofAddress,
    BindingAck,
    BindingAuthorizationData,
    BindingError,
    BindingRefreshAdvice,
    BindingRefreshRequest,
    BindingUpdate,
    CareofTest,
    CareofTestInit,
    HAADReply,
    HAADRequest,
    HomeAgentInformation,
    HomeTest,
    HomeTestInit,
    MessageAuthentication,
    MessageIdentification,
    MobileNodeIdentifier,
    MobilePrefixAdvertisement,
    MobilePrefixSolicitation,
    MobilityMessage,
    MobilityOption,
    MTUOption,
    NDOption,
    NeighborAdvertisement,
    NeighborSolicitation,
    NonceIndices,
    Packet,
    PrefixInformation,
    RouterAdvertisement,
    UnknownMessage,
)
from ..wire.constants import (
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
    IPPROTO_ICMPV6,
    IPPROTO_MH,
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
)
from .classify import layers

Fields = dict[str, list[str]]


def addr(address: IPv6Address) -> str:
    return socket.inet_ntop(socket.AF_INET6, address.packed)


def _bool(value: int) -> str:
    return "1" if value else "0"


def _hex(value: int, octets: int) -> str:
    return f"0x{value:0{octets * 2}x}"


def _flags(out: Fields, value: int, names: dict[str, int]) -> None:
    for name, bit in names.items():
        out[name].append(_bool(value & bit))


_BU_FLAGS = {
    "mip6.bu.a_flag": BU_FLAG_A,
    "mip6.bu.h_flag": BU_FLAG_H,
    "mip6.bu.l_flag": BU_FLAG_L,
    "mip6.bu.k_flag": BU_FLAG_K,
    "mip6.bu.m_flag": BU_FLAG_M,
    "mip6.nemo.bu.r_flag": BU_FLAG_R,
    "mip6.bu.p_flag": BU_FLAG_P,
}
_BA_FLAGS = {
    "mip6.ba.k_flag": BA_FLAG_K,
    "mip6.nemo.ba.r_flag": BA_FLAG_R,
    "mip6.ba.p_flag": BA_FLAG_P,
}
_RA_FLAGS = {
    "icmpv6.nd.ra.flag.m": RA_FLAG_M,
    "icmpv6.nd.ra.flag.o": RA_FLAG_O,
    "icmpv6.nd.ra.flag.h": RA_FLAG_H,
}
_PI_FLAGS = {
    "icmpv6.opt.prefix.flag.l": PI_FLAG_L,
    "icmpv6.opt.prefix.flag.a": PI_FLAG_A,
    "icmpv6.opt.prefix.flag.r": PI_FLAG_R,
}
_NA_FLAGS = {
    "icmpv6.nd.na.flag.r": NA_FLAG_ROUTER,
    "icmpv6.nd.na.flag.s": NA_FLAG_SOLICITED,
    "icmpv6.nd.na.flag.o": NA_FLAG_OVERRIDE,
}


def _mobility_options(out: Fields, options: list[MobilityOption]) -> None:
    for option in options:
        if isinstance(option, BindingRefreshAdvice):
            out["mip6.bra.interval"].append(str(option.interval))
        elif isinstance(option, AlternateCareofAddress):
            out["mip6.acoa.acoa"].append(addr(option.address))
        elif isinstance(option, NonceIndices):
            out["mip6.ni.hni"].append(str(option.home_nonce_index))
            out["mip6.ni.cni"].append(str(option.careof_nonce_index))
        elif isinstance(option, BindingAuthorizationData):
            out["mip6.bad.auth"].append(option.authenticator.hex())
        elif isinstance(option, MobileNodeIdentifier):
            out["mip6.mnid.subtype"].append(str(option.subtype))
            out["mip6.mnid.identifier"].append(option.nai)
        elif isinstance(option, MessageAuthentication):
            out["mip6.auth.subtype"].append(str(option.subtype))
            out["mip6.auth.mobility_spi"].append(str(option.spi))
            out["mip6.auth.auth_data"].append(option.authenticator.hex())
        elif isinstance(option, MessageIdentification):
            out["mip6.mseg_id.timestamp"].append(_hex(option.timestamp, 8))


def _mobility(out: Fields, raw: bytes, msg: MobilityMessage) -> None:
    out["mip6.proto"].append(str(raw[0]))
    out["mip6.hlen"].append(str(raw[1]))
    out["mip6.mhtype"].append(str(raw[2]))
    out["mip6.reserved"].append(_hex(raw[3], 1))
    out["mip6.csum"].append(_hex(int.from_bytes(raw[4:6], "big"), 2))
    match msg:
        case BindingUpdate():
            out["mip6.bu.seqnr"].append(str(msg.sequence))
            _flags(out, msg.flags, _BU_FLAGS)
            out["mip6.bu.lifetime"].append(str(msg.lifetime))
        case BindingAck():
            out["mip6.ba.status"].append(str(msg.status))
            _flags(out, msg.flags, _BA_FLAGS)
            out["mip6.ba.seqnr"].append(str(msg.sequence))
            out["mip6.ba.lifetime"].append(str(msg.lifetime))
        case BindingError():
            out["mip6.be.status"].append(str(msg.status))
            out["mip6.be.haddr"].append(addr(msg.home_address))
        case BindingRefreshRequest():
            out["mip6.binding_refresh_request"].append(raw[6:8].hex())
        case HomeTestInit():
            out["mip6.hoti.cookie"].append("0x" + msg.cookie.hex())
        case CareofTestInit():
            out["mip6.coti.cookie"].append("0x" + msg.cookie.hex())
        case HomeTest():
            out["mip6.hot.nindex"].append(str(msg.nonce_index))
            out["mip6.hot.cookie"].append("0x" + msg.cookie.hex())
            out["mip6.hot.token"].append("0x" + msg.token.hex())
        case CareofTest():
            out["mip6.cot.nindex"].append(str(msg.nonce_index))
            out["mip6.cot.cookie"].append("0x" + msg.cookie.hex())
            # Wireshark registers the Care-of keygen token under the HoT field name.
            out["mip6.hot.token"].append("0x" + msg.token.hex())
        case UnknownMessage():
            out["mip6.unknown_type_data"].append(msg.data.hex())
            return
        case _:
            assert_never(msg)
    _mobility_options(out, msg.options)


def _nd_options(out: Fields, options: list[NDOption]) -> None:
    for option in options:
        if isinstance(option, PrefixInformation):
            out["icmpv6.opt.prefix.length"].append(str(option.prefix_length))
            _flags(out, option.flags, _PI_FLAGS)
            out["icmpv6.opt.prefix.valid_lifetime"].append(str(option.valid_lifetime))
            out["icmpv6.opt.prefix.preferred_lifetime"].append(str(option.preferred_lifetime))
            out["icmpv6.opt.prefix"].append(addr(option.prefix))
        elif isinstance(option, AdvertisementInterval):
            out["icmpv6.opt.advertisement_interval"].append(str(option.interval))
        elif isinstance(option, HomeAgentInformation):
            out["icmpv6.opt.home_agent_preference"].append(str(option.preference))
            out["icmpv6.opt.home_agent_lifetime"].append(str(option.lifetime))
        elif isinstance(option, MTUOption):
            out["icmpv6.opt.mtu"].append(str(option.mtu))


def _icmpv6(out: Fields, packet: Packet) -> None:
    raw = packet.payload_bytes
    out["icmpv6.type"].append(str(raw[0]))
    out["icmpv6.code"].append(str(raw[1]))
    out["icmpv6.checksum"].append(_hex(int.from_bytes(raw[2:4], "big"), 2))
    msg = packet.payload
    if isinstance(
        msg, (HAADRequest, HAADReply, MobilePrefixSolicitation, MobilePrefixAdvertisement)
    ):
        out["icmpv6.mip6.identifier"].append(str(msg.identifier))
    if isinstance(msg, HAADReply):
        out["icmpv6.mip6.home_agent_address"].extend(addr(a) for a in msg.home_agents)
    elif isinstance(msg, MobilePrefixAdvertisement):
        _flags(out, msg.flags, {"icmpv6.mip6.flag.m": MPA_FLAG_M, "icmpv6.mip6.flag.o": MPA_FLAG_O})
        _nd_options(out, msg.options)
    elif isinstance(msg, RouterAdvertisement):
        out["icmpv6.nd.ra.cur_hop_limit"].append(str(msg.cur_hop_limit))
        _flags(out, msg.flags, _RA_FLAGS)
        out["icmpv6.nd.ra.router_lifetime"].append(str(msg.router_lifetime))
        _nd_options(out, msg.options)
    elif isinstance(msg, NeighborSolicitation):
        out["icmpv6.nd.ns.target_address"].append(addr(msg.target))
    elif isinstance(msg, NeighborAdvertisement):
        _flags(out, msg.flags, _NA_FLAGS)
        out["icmpv6.nd.na.target_address"].append(addr(msg.target))


def packet_fields(packet: Packet) -> dict[str, str]:
    """The packet's fields, each valued as ``tshark -T fields -e NAME`` prints it.

    A tunnelled packet (IPv6-in-IPv6) contributes its fields after the outer packet's, so a
    field both carry lists the outer value first, as tshark does (``ipv6.src`` = outer
    source, inner source).
    """
    out: Fields = defaultdict(list)
    for layer in layers(packet):
        _layer_fields(out, layer)
    return {name: ",".join(values) for name, values in out.items() if values}


def _layer_fields(out: Fields, packet: Packet) -> None:
    out["ipv6.src"].append(addr(packet.src))
    out["ipv6.dst"].append(addr(packet.dst))
    out["ipv6.nxt"].append(str(packet.next_header))
    out["ipv6.hlim"].append(str(packet.hop_limit))
    rh2 = packet.routing_header_type2
    if rh2 is not None:
        out["ipv6.routing.type"].append("2")
        out["ipv6.routing.segleft"].append(str(rh2.segments_left))
        out["ipv6.routing.mipv6.home_address"].append(addr(rh2.home_address))
    home = packet.home_address_option
    if home is not None:
        out["ipv6.opt.mipv6.home_address"].append(addr(home))
    if packet.protocol == IPPROTO_MH and isinstance(packet.payload, MOBILITY_MESSAGE_TYPES):
        _mobility(out, packet.payload_bytes, packet.payload)
    elif packet.protocol == IPPROTO_ICMPV6 and not isinstance(packet.payload, bytes):
        _icmpv6(out, packet)
