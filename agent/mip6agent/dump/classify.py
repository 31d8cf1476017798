"""Which packets count as Mobile IPv6 for ``mip6dump`` without ``-a``."""

from __future__ import annotations

from ..wire import (
    AdvertisementInterval,
    DecodeError,
    HomeAgentInformation,
    Packet,
    PrefixInformation,
    RouterAdvertisement,
    parse_packet,
)
from ..wire.constants import IPPROTO_MH, PI_FLAG_R, ICMPv6Type

IPPROTO_IPV6 = 41  # IPv6-in-IPv6 (RFC 2473), how home agents and mobile nodes tunnel
MAX_TUNNEL_DEPTH = 4

_MIP6_ICMP = {
    ICMPv6Type.HAAD_REQUEST,
    ICMPv6Type.HAAD_REPLY,
    ICMPv6Type.MOBILE_PREFIX_SOLICITATION,
    ICMPv6Type.MOBILE_PREFIX_ADVERTISEMENT,
}


def _ra_is_mobile(ra: RouterAdvertisement) -> bool:
    if ra.home_agent:
        return True
    for option in ra.options:
        if isinstance(option, (AdvertisementInterval, HomeAgentInformation)):
            return True
        if isinstance(option, PrefixInformation) and option.flags & PI_FLAG_R:
            return True
    return False


def layers(packet: Packet) -> list[Packet]:
    """The packet and the IPv6 packets tunnelled in it (next header 41), outer first.

    A home agent and a mobile node carry HoTI/HoT and the reverse-tunnelled traffic this
    way; tshark decodes the inner packet too. An inner packet that does not decode ends the
    list (the outer one is still shown).
    """
    found = [packet]
    while (
        len(found) <= MAX_TUNNEL_DEPTH
        and found[-1].protocol == IPPROTO_IPV6
        and isinstance(found[-1].payload, bytes)
    ):
        try:
            found.append(parse_packet(found[-1].payload))
        except DecodeError:
            break
    return found


def is_mobile_ipv6(packet: Packet) -> bool:
    """MH, HAO, RH2, DHAAD, MPS/MPA, or an RA with Mobile IPv6 flags or options, in the
    packet itself or in an IPv6 packet tunnelled in it."""
    return any(_is_mobile_ipv6(layer) for layer in layers(packet))


def _is_mobile_ipv6(packet: Packet) -> bool:
    if packet.protocol == IPPROTO_MH:
        return True
    if packet.home_address_option is not None or packet.routing_header_type2 is not None:
        return True
    payload = packet.payload
    if isinstance(payload, RouterAdvertisement):
        return _ra_is_mobile(payload)
    return getattr(payload, "TYPE", None) in _MIP6_ICMP and not isinstance(payload, bytes)
