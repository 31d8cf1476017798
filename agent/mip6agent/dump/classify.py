"""Which packets count as Mobile IPv6 for ``mip6dump`` without ``-a``."""

from __future__ import annotations

from ..wire import (
    AdvertisementInterval,
    HomeAgentInformation,
    Packet,
    PrefixInformation,
    RouterAdvertisement,
)
from ..wire.constants import IPPROTO_MH, PI_FLAG_R, ICMPv6Type

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


def is_mobile_ipv6(packet: Packet) -> bool:
    """MH, HAO, RH2, DHAAD, MPS/MPA, or an RA with Mobile IPv6 flags or options."""
    if packet.protocol == IPPROTO_MH:
        return True
    if packet.home_address_option is not None or packet.routing_header_type2 is not None:
        return True
    payload = packet.payload
    if isinstance(payload, RouterAdvertisement):
        return _ra_is_mobile(payload)
    return getattr(payload, "TYPE", None) in _MIP6_ICMP and not isinstance(payload, bytes)
