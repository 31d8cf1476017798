"""Small netlink reads and writes the agent needs besides the data plane.

Every function here blocks; the agent runs them on its kernel worker thread (pyroute2 0.9's
IPRoute refuses to run inside a running asyncio loop).
"""

from __future__ import annotations

import socket
import struct
import threading
from ipaddress import IPv6Address, IPv6Interface, IPv6Network
from typing import Any

from pyroute2 import IPRoute

IFA_F_NODAD = 0x02
IFA_F_PERMANENT = 0x80
RTPROT_KERNEL = 2
RTPROT_RA = 9
MAIN_TABLE = 254
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
IPV6_JOIN_ANYCAST = 27  # linux/in6.h; not exported by the socket module


_local = threading.local()


def _ipr() -> IPRoute:
    """One netlink socket per thread, kept: opening one costs milliseconds in a handover."""
    ipr = getattr(_local, "ipr", None)
    if ipr is None:
        ipr = _local.ipr = IPRoute()
    return ipr


def _index(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LookupError(f"no interface named {ifname!r}")
    return found[0]


def addresses(ifname: str, scope: int = RT_SCOPE_UNIVERSE) -> list[IPv6Interface]:
    ipr = _ipr()
    index = _index(ipr, ifname)
    return [
        IPv6Interface(f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}")
        for m in ipr.get_addr(family=socket.AF_INET6, index=index)
        if m["scope"] == scope
    ]


def interface_identifier(ifname: str) -> int:
    """The low 64 bits of the interface's link-local address (its SLAAC identifier)."""
    local = addresses(ifname, RT_SCOPE_LINK)
    if not local:
        raise LookupError(f"{ifname} has no link-local address to take an identifier from")
    return int(local[0].ip) & ((1 << 64) - 1)


def place_home_address(address: IPv6Interface, ifname: str) -> None:
    """Back home: the home address on the home interface (no DAD: the HA was defending it)."""
    ipr = _ipr()
    index = _index(ipr, ifname)
    present = [
        m
        for m in ipr.get_addr(family=socket.AF_INET6, index=index)
        if m.get_attr("IFA_ADDRESS") == str(address.ip)
    ]
    if not present:
        ipr.addr(
            "add",
            index=index,
            address=str(address.ip),
            prefixlen=address.network.prefixlen,
            flags=IFA_F_NODAD,
        )


def remove_from_links(address: IPv6Address, keep: str = "lo") -> None:
    """Take ``address`` off every interface but ``keep`` (leaving home)."""
    ipr = _ipr()
    for msg in ipr.get_addr(family=socket.AF_INET6):
        if msg.get_attr("IFA_ADDRESS") != str(address):
            continue
        name = ipr.get_links(msg["index"])[0].get_attr("IFLA_IFNAME")
        if name != keep:
            ipr.addr("del", index=msg["index"], address=str(address), prefixlen=msg["prefixlen"])


def leave_old_links(
    ifname: str,
    router: IPv6Address | None,
    prefixes: tuple[IPv6Network, ...],
    keep: set[IPv6Address],
) -> list[str]:
    """Delete autoconfigured addresses outside ``prefixes``, RA default routes through
    other routers and the old links' on-link prefix routes. Static (permanent) addresses,
    their prefixes and ``keep`` are left alone. One dump of addresses, one of routes: this
    runs before the Binding Update of a handover."""
    done = []
    ipr = _ipr()
    index = _index(ipr, ifname)
    remaining = []  # addresses that stay, the home addresses (``keep``) not counted
    for msg in ipr.get_addr(family=socket.AF_INET6, index=index):
        address = IPv6Address(msg.get_attr("IFA_ADDRESS"))
        if address in keep:
            continue
        flags = msg.get_attr("IFA_FLAGS") or msg["flags"]
        if (
            msg["scope"] != RT_SCOPE_UNIVERSE
            or flags & IFA_F_PERMANENT
            or any(address in p for p in prefixes)
        ):
            remaining.append(address)
            continue
        ipr.addr("del", index=index, address=str(address), prefixlen=msg["prefixlen"])
        done.append(f"address {address}")
    for route in ipr.get_routes(family=socket.AF_INET6, table=MAIN_TABLE):
        if route.get_attr("RTA_OIF") != index:
            continue
        if route["dst_len"] == 0:
            done += _leave_default_route(ipr, index, route, router)
        else:
            done += _leave_prefix_route(ipr, index, route, prefixes, remaining)
    return done


def _leave_default_route(
    ipr: IPRoute, index: int, route: Any, router: IPv6Address | None
) -> list[str]:
    if route["proto"] != RTPROT_RA:
        return []
    gateway = route.get_attr("RTA_GATEWAY")
    if router is not None and gateway is not None and IPv6Address(gateway) == router:
        return []
    ipr.route("del", dst="::/0", family=socket.AF_INET6, gateway=gateway, oif=index)
    return [f"default route via {gateway}"]


def _leave_prefix_route(
    ipr: IPRoute,
    index: int,
    route: Any,
    prefixes: tuple[IPv6Network, ...],
    remaining: list[IPv6Address],
) -> list[str]:
    """An on-link route the kernel made from the old link's Prefix Information options.

    Such routes outlive the addresses (the kernel removes a prefix route with its address
    only for permanent addresses) for the prefix's valid lifetime, a day by default: the
    old link's hosts, or the home agent after a visit home, would be looked for on this
    link. A prefix still covering an address of the interface (a static one) stays; the
    home addresses do not count: they leave the link next, and when SLAAC made the home
    address (a home prefix plus the interface identifier) the kernel keeps the home
    prefix's route after it, sending the Binding Update to the home agent out of this link.
    """
    if route["proto"] not in (RTPROT_KERNEL, RTPROT_RA):
        return []
    if route.get_attr("RTA_GATEWAY") is not None:
        return []
    if route.get_attr("RTA_TABLE", MAIN_TABLE) != MAIN_TABLE:
        return []
    dst = IPv6Network(f"{route.get_attr('RTA_DST')}/{route['dst_len']}")
    if dst.is_link_local or dst.is_multicast or any(dst.overlaps(p) for p in prefixes):
        return []
    if any(address in dst for address in remaining):
        return []
    ipr.route(
        "del",
        dst=str(dst),
        family=socket.AF_INET6,
        oif=index,
        priority=route.get_attr("RTA_PRIORITY"),
    )
    return [f"route {dst}"]


def enable_optimistic_dad(ifname: str) -> None:
    """RFC 4429 on a mobile node's interface: a new care-of address is usable at once."""
    for name in ("optimistic_dad", "use_optimistic"):
        with open(f"/proc/sys/net/ipv6/conf/{ifname}/{name}", "w") as handle:
            handle.write("1")


class AnycastMembership:
    """Join the Home-Agents anycast address so that DHAAD requests reach us (RFC 6275 10.5)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)

    def join(self, address: IPv6Address, ifname: str) -> None:
        mreq = address.packed + struct.pack("@I", socket.if_nametoindex(ifname))
        try:
            self._sock.setsockopt(socket.IPPROTO_IPV6, IPV6_JOIN_ANYCAST, mreq)
        except OSError as exc:
            if exc.errno != 98:  # EADDRINUSE: already joined
                raise

    def close(self) -> None:
        self._sock.close()
