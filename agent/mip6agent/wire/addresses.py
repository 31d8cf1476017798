"""Which IPv6 addresses may serve as home, care-of or home agent addresses (pure rules)."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Interface, IPv6Network

RFC2526_FIRST_IID = 0xFDFF_FFFF_FFFF_FF80  # reserved subnet anycast: the top 128 IIDs
HOME_AGENTS_ANYCAST_IID = 0xFDFF_FFFF_FFFF_FFFE  # RFC 2526 ID 126 (RFC 6275 10.5)


def unicast_problem(addr: IPv6Address) -> str | None:
    """Why ``addr`` cannot be a Mobile IPv6 home, care-of or home agent address, if it cannot."""
    if addr.is_unspecified:
        return "is the unspecified address"
    if addr.is_loopback:
        return "is the loopback address"
    if addr.is_multicast:
        return "is a multicast address"
    if addr.is_link_local:
        return "is a link-local address"
    if addr.ipv4_mapped is not None:
        return "is an IPv4-mapped address"
    return None


def anycast_problem(iface: IPv6Interface) -> str | None:
    """Why ``iface.ip`` is an anycast address of its prefix, if it is one."""
    return anycast_in_prefix(iface.ip, iface.network.prefixlen)


def anycast_in_prefix(address: IPv6Address, prefixlen: int) -> str | None:
    """The same for ``address`` inside a prefix of length ``prefixlen`` (integer work only)."""
    value = int(address)
    if prefixlen < 127 and not value & ((1 << (128 - prefixlen)) - 1):
        return "is the subnet-router anycast address of its prefix, not a host address"
    if prefixlen == 64 and value & 0xFFFF_FFFF_FFFF_FFFF >= RFC2526_FIRST_IID:
        return (
            "is a reserved subnet anycast address (RFC 2526), like the Mobile IPv6 "
            "Home-Agents anycast address"
        )
    return None


def link_local_of(address: IPv6Address) -> IPv6Address:
    """fe80::/64 with the interface identifier of ``address``: the link-local address a
    mobile node that sets the L flag has on its home link (RFC 6275 10.4.1)."""
    return IPv6Address((0xFE80 << 112) | (int(address) & 0xFFFF_FFFF_FFFF_FFFF))


def home_agents_anycast(prefix: IPv6Network) -> IPv6Address:
    """The Mobile IPv6 Home-Agents anycast address of a /64 home prefix (RFC 2526)."""
    return IPv6Address(int(prefix.network_address) | HOME_AGENTS_ANYCAST_IID)
