"""The kernel objects the data plane installs, and the netlink transport that reads and writes them.

Each object is a frozen dataclass; ``*_message`` functions turn one into the pyroute2
message the kernel gets (pure, so tests can check what would be sent) and ``parse_*``
functions turn a dump entry back. :class:`Netlink` sends and dumps, and turns every
netlink error into :class:`DataPlaneError`.

We build messages ourselves instead of calling ``IPRoute.route(...)``: pyroute2 0.9.7
silently encodes the seg6 mode ``encap.red`` as ``encap`` (which adds a Segment Routing
Header) and would send its own defaults for rule priorities.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    genlmsg,
    nla,
)
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import GenericNetlinkSocket
from pyroute2.netlink.rtnl import (
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELNEIGH,
    RTM_DELROUTE,
    RTM_DELRULE,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETNEIGH,
    RTM_GETROUTE,
    RTM_GETRULE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    RTM_NEWROUTE,
    RTM_NEWRULE,
)
from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from .base import RTPROT_MIP6, DataPlaneError

AF_INET6 = socket.AF_INET6
IPPROTO_IPV6 = 41  # IPv6-in-IPv6 (RFC 2473)
RT_TABLE_MAIN = 254
RT_TABLE_LOCAL = 255
RTPROT_KERNEL = 2
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0
FR_ACT_TO_TBL = 1
NTF_PROXY = 0x08
NUD_PERMANENT = 0x80
IFA_F_NODAD = 0x02
IFA_F_NOPREFIXROUTE = 0x200
IFF_UP = 0x1
LWTUNNEL_ENCAP_SEG6 = 5
LWTUNNEL_ENCAP_SEG6_LOCAL = 7
LWTUNNEL_ENCAP_BPF = 6
LWT_BPF_XMIT, LWT_BPF_PROG_NAME = 3, 2  # include/uapi/linux/lwtunnel.h
# include/uapi/linux/seg6_iptunnel.h: inline, encap, l2encap, encap.red, l2encap.red.
SEG6_IPTUN_MODE_ENCAP = 1
SEG6_IPTUN_MODE_ENCAP_RED = 3
SEG6_LOCAL_ACTION_END_DX6 = 5
SEG6_LOCAL_ACTION_END_DT6 = 7
# include/uapi/linux/ip6_tunnel.h
IP6_TNL_F_IGN_ENCAP_LIMIT = 0x1  # no Tunnel Encapsulation Limit destination option
IP6_TNL_F_MIP6_DEV = 0x8  # "being used for Mobile IPv6": unused by the kernel, our marker
# include/net/ip6_tunnel.h: CAP_XMIT, CAP_RCV, CAP_PER_PACKET. The kernel computes these from
# the endpoints and reports them with the flags (ip6_tnl_fill_info); nobody sets them.
IP6_TNL_F_CAP_MASK = 0x70000
# SEG6 generic netlink family (include/uapi/linux/seg6_genl.h)
SEG6_CMD_SET_TUNSRC = 3
SEG6_CMD_GET_TUNSRC = 4

DEFAULT_ROUTE = IPv6Network("::/0")
# What "already there" and "already gone" look like, per object type.
_GONE = frozenset({errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL, errno.ENODEV})


def host(address: IPv6Address) -> IPv6Network:
    # From the integer: IPv6Network((address, 128)) formats the address and parses it back
    # (ten times slower, and reconciliation builds one per binding and route).
    return IPv6Network((int(address), 128))


@dataclass(frozen=True, slots=True)
class Seg6Encap:
    """``encap seg6 mode encap.red segs <segments>``: one segment gives plain IPv6-in-IPv6."""

    segments: tuple[IPv6Address, ...]
    mode: int = SEG6_IPTUN_MODE_ENCAP_RED


@dataclass(frozen=True, slots=True)
class Seg6LocalEncap:
    """``encap seg6local action <action> [table T] [nh6 A]``."""

    action: int
    table: int | None = None
    nh6: IPv6Address | None = None


@dataclass(frozen=True, slots=True)
class BpfEncap:
    """``encap bpf xmit``: ``name`` is what the route carries back in a dump; ``fd`` (the
    program to run) is only sent, never read back (the kernel does not report it)."""

    name: str
    fd: int = field(default=-1, compare=False)
    # Octets the program adds: the kernel takes them off the route MTU, as with seg6.
    headroom: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Route:
    dst: IPv6Network
    table: int
    oif: int
    proto: int = RTPROT_MIP6
    src: IPv6Network | None = None
    metric: int = 1024
    encap: Seg6Encap | Seg6LocalEncap | BpfEncap | None = None

    @property
    def key(self) -> tuple[IPv6Network, IPv6Network | None, int, int]:
        """What the kernel treats as the same route (replace overwrites, no duplicate)."""
        return (self.dst, self.src, self.table, self.metric)


@dataclass(frozen=True, slots=True)
class Rule:
    priority: int
    table: int
    proto: int = RTPROT_MIP6
    src: IPv6Network | None = None
    dst: IPv6Network | None = None
    ip_proto: int | None = None


@dataclass(frozen=True, slots=True)
class ProxyEntry:
    """``ip -6 neigh add proxy <address> dev <ifindex>``."""

    address: IPv6Address
    ifindex: int
    proto: int | None = RTPROT_MIP6


@dataclass(frozen=True, slots=True)
class Address:
    address: IPv6Address
    prefixlen: int
    ifindex: int
    proto: int | None = RTPROT_MIP6
    flags: int = IFA_F_NODAD | IFA_F_NOPREFIXROUTE


@dataclass(frozen=True, slots=True)
class Ip6Tunnel:
    """An ``ip6tnl`` device in ip6ip6 mode, without the encapsulation-limit option."""

    name: str
    local: IPv6Address
    remote: IPv6Address
    link: int
    index: int = 0
    flags: int = IP6_TNL_F_IGN_ENCAP_LIMIT | IP6_TNL_F_MIP6_DEV
    hop_limit: int = 64
    up: bool = True


# --- message builders ------------------------------------------------------------------


class _Seg6EncapNla(nla):
    """SEG6_IPTUNNEL_SRH as raw bytes: pyroute2 cannot encode mode encap.red."""

    nla_map = (("SEG6_IPTUNNEL_UNSPEC", "none"), ("SEG6_IPTUNNEL_SRH", "cdata"))


class _Seg6LocalNla(nla):
    nla_map = (
        ("SEG6_LOCAL_UNSPEC", "none"),
        ("SEG6_LOCAL_ACTION", "uint32"),
        ("SEG6_LOCAL_SRH", "cdata"),
        ("SEG6_LOCAL_TABLE", "uint32"),
        ("SEG6_LOCAL_NH4", "cdata"),
        ("SEG6_LOCAL_NH6", "cdata"),
    )


class _RouteMessage(rtmsg):
    """rtmsg whose seg6 encaps take the values we give, byte for byte."""

    encaps = {
        LWTUNNEL_ENCAP_SEG6: _Seg6EncapNla,
        LWTUNNEL_ENCAP_SEG6_LOCAL: _Seg6LocalNla,
        LWTUNNEL_ENCAP_BPF: rtmsg.bpf_encap_info,
    }


def seg6_tunnel_info(encap: Seg6Encap) -> bytes:
    """struct seg6_iptunnel_encap: int mode, then an SRH listing the segments."""
    n = len(encap.segments)
    head = struct.pack("=iBBBBBBH", encap.mode, 0, 2 * n, 4, n - 1, n - 1, 0, 0)
    return head + b"".join(seg.packed for seg in encap.segments)


def route_message(route: Route) -> rtmsg:
    msg = _RouteMessage()
    msg["family"] = AF_INET6
    msg["dst_len"] = route.dst.prefixlen
    msg["src_len"] = route.src.prefixlen if route.src else 0
    msg["table"] = route.table if route.table < 256 else 252
    msg["proto"] = route.proto
    msg["scope"] = RT_SCOPE_UNIVERSE
    msg["type"] = RTN_UNICAST
    attrs: list[tuple[str, Any]] = [("RTA_TABLE", route.table)]
    if route.dst.prefixlen:
        attrs.append(("RTA_DST", str(route.dst.network_address)))
    if route.src is not None:
        attrs.append(("RTA_SRC", str(route.src.network_address)))
    attrs += [("RTA_PRIORITY", route.metric), ("RTA_OIF", route.oif)]
    if isinstance(route.encap, Seg6Encap):
        info = seg6_tunnel_info(route.encap)
        attrs += [
            ("RTA_ENCAP_TYPE", LWTUNNEL_ENCAP_SEG6),
            ("RTA_ENCAP", {"attrs": [("SEG6_IPTUNNEL_SRH", info)]}),
        ]
    elif isinstance(route.encap, Seg6LocalEncap):
        local: list[tuple[str, Any]] = [("SEG6_LOCAL_ACTION", route.encap.action)]
        if route.encap.table is not None:
            local.append(("SEG6_LOCAL_TABLE", route.encap.table))
        if route.encap.nh6 is not None:
            local.append(("SEG6_LOCAL_NH6", route.encap.nh6.packed))
        attrs += [
            ("RTA_ENCAP_TYPE", LWTUNNEL_ENCAP_SEG6_LOCAL),
            ("RTA_ENCAP", {"attrs": local}),
        ]
    elif isinstance(route.encap, BpfEncap):
        program = [("LWT_BPF_PROG_FD", route.encap.fd), ("LWT_BPF_PROG_NAME", route.encap.name)]
        attrs += [
            ("RTA_ENCAP_TYPE", LWTUNNEL_ENCAP_BPF),
            (
                "RTA_ENCAP",
                {
                    "attrs": [
                        ("LWT_BPF_XMIT", {"attrs": program}),
                        ("LWT_BPF_XMIT_HEADROOM", route.encap.headroom),
                    ]
                },
            ),
        ]
    msg["attrs"] = attrs
    return msg


def rule_message(rule: Rule) -> fibmsg:
    msg = fibmsg()
    msg["family"] = AF_INET6
    msg["action"] = FR_ACT_TO_TBL
    msg["table"] = rule.table if rule.table < 256 else 252
    msg["dst_len"] = rule.dst.prefixlen if rule.dst else 0
    msg["src_len"] = rule.src.prefixlen if rule.src else 0
    attrs: list[tuple[str, Any]] = [
        ("FRA_PRIORITY", rule.priority),
        ("FRA_TABLE", rule.table),
        ("FRA_PROTOCOL", rule.proto),
    ]
    if rule.src is not None:
        attrs.append(("FRA_SRC", str(rule.src.network_address)))
    if rule.dst is not None:
        attrs.append(("FRA_DST", str(rule.dst.network_address)))
    if rule.ip_proto is not None:
        attrs.append(("FRA_IP_PROTO", rule.ip_proto))
    msg["attrs"] = attrs
    return msg


def proxy_message(entry: ProxyEntry) -> ndmsg:
    msg = ndmsg()
    msg["family"] = AF_INET6
    msg["ifindex"] = entry.ifindex
    msg["flags"] = NTF_PROXY
    msg["state"] = NUD_PERMANENT
    attrs: list[tuple[str, Any]] = [("NDA_DST", str(entry.address))]
    if entry.proto is not None:
        attrs.append(("NDA_PROTOCOL", entry.proto))
    msg["attrs"] = attrs
    return msg


def address_message(address: Address) -> ifaddrmsg:
    msg = ifaddrmsg()
    msg["family"] = AF_INET6
    msg["prefixlen"] = address.prefixlen
    msg["index"] = address.ifindex
    msg["flags"] = address.flags & 0xFF
    msg["scope"] = RT_SCOPE_UNIVERSE
    attrs: list[tuple[str, Any]] = [
        ("IFA_LOCAL", str(address.address)),
        ("IFA_ADDRESS", str(address.address)),
        ("IFA_FLAGS", address.flags),
    ]
    if address.proto is not None:
        attrs.append(("IFA_PROTO", address.proto))
    msg["attrs"] = attrs
    return msg


def tunnel_message(tunnel: Ip6Tunnel) -> ifinfmsg:
    """RTM_NEWLINK body for an ip6ip6 tunnel; the kernel wants every parameter each time.

    ip6_tnl_netlink_parms() zeroes what is not sent, so a change must repeat them all.
    A change (``index`` set) carries no IFLA_IFNAME: on older kernels (Debian's 6.1 among
    them) dev_change_name() answers EBUSY for a device that is up, even for its own name.
    """
    msg = ifinfmsg()
    msg["family"] = socket.AF_UNSPEC
    msg["index"] = tunnel.index
    msg["flags"] = IFF_UP if tunnel.up else 0
    msg["change"] = IFF_UP
    data: list[tuple[str, Any]] = [
        ("IFLA_IP6TNL_LINK", tunnel.link),
        ("IFLA_IP6TNL_LOCAL", str(tunnel.local)),
        ("IFLA_IP6TNL_REMOTE", str(tunnel.remote)),
        ("IFLA_IP6TNL_TTL", tunnel.hop_limit),
        ("IFLA_IP6TNL_ENCAP_LIMIT", 0),
        ("IFLA_IP6TNL_FLAGS", tunnel.flags),
        ("IFLA_IP6TNL_PROTO", IPPROTO_IPV6),
    ]
    linkinfo = {"attrs": [("IFLA_INFO_KIND", "ip6tnl"), ("IFLA_INFO_DATA", {"attrs": data})]}
    msg["attrs"] = [("IFLA_LINKINFO", linkinfo)]
    if not tunnel.index:
        msg["attrs"].insert(0, ("IFLA_IFNAME", tunnel.name))
    return msg


# --- parsers ---------------------------------------------------------------------------


def _network(msg: Any, attr: str, length: int) -> IPv6Network | None:
    value = msg.get_attr(attr)
    if value is None:
        return DEFAULT_ROUTE if attr in ("RTA_DST", "FRA_DST") and length == 0 else None
    return IPv6Network((value, length))


def parse_route(msg: Any) -> Route | None:
    if msg["family"] != AF_INET6:
        return None
    encap: Seg6Encap | Seg6LocalEncap | BpfEncap | None = None
    kind = msg.get_attr("RTA_ENCAP_TYPE")
    raw = msg.get_attr("RTA_ENCAP")
    if kind == LWTUNNEL_ENCAP_BPF and raw is not None:
        xmit = raw.get_attr("LWT_BPF_XMIT")
        name = xmit.get_attr("LWT_BPF_PROG_NAME") if xmit is not None else None
        encap = BpfEncap(str(name or ""))
    elif kind == LWTUNNEL_ENCAP_SEG6 and raw is not None:
        srh = raw.get_attr("SEG6_IPTUNNEL_SRH") or {}
        segments = tuple(IPv6Address(s) for s in srh.get("segs", ()))
        encap = Seg6Encap(segments, int(srh.get("encapmode", SEG6_IPTUN_MODE_ENCAP)))
    elif kind == LWTUNNEL_ENCAP_SEG6_LOCAL and raw is not None:
        nh6 = raw.get_attr("SEG6_LOCAL_NH6")
        encap = Seg6LocalEncap(
            int(raw.get_attr("SEG6_LOCAL_ACTION") or 0),
            raw.get_attr("SEG6_LOCAL_TABLE"),
            IPv6Address(nh6) if nh6 is not None else None,
        )
    src_len = msg["src_len"]
    return Route(
        dst=_network(msg, "RTA_DST", msg["dst_len"]) or DEFAULT_ROUTE,
        table=msg.get_attr("RTA_TABLE") or msg["table"],
        oif=msg.get_attr("RTA_OIF") or 0,
        proto=msg["proto"],
        src=_network(msg, "RTA_SRC", src_len) if src_len else None,
        metric=msg.get_attr("RTA_PRIORITY") or 0,
        encap=encap,
    )


def parse_rule(msg: Any) -> Rule | None:
    if msg["family"] != AF_INET6 or msg["action"] != FR_ACT_TO_TBL:
        return None
    return Rule(
        priority=msg.get_attr("FRA_PRIORITY") or 0,
        table=msg.get_attr("FRA_TABLE") or msg["table"],
        proto=msg.get_attr("FRA_PROTOCOL") or 0,
        src=_network(msg, "FRA_SRC", msg["src_len"]) if msg["src_len"] else None,
        dst=_network(msg, "FRA_DST", msg["dst_len"]) if msg["dst_len"] else None,
        ip_proto=msg.get_attr("FRA_IP_PROTO"),
    )


def parse_proxy(msg: Any) -> ProxyEntry | None:
    if msg["family"] != AF_INET6 or not msg["flags"] & NTF_PROXY:
        return None
    dst = msg.get_attr("NDA_DST")
    if dst is None:
        return None
    return ProxyEntry(IPv6Address(dst), msg["ifindex"], msg.get_attr("NDA_PROTOCOL"))


def parse_address(msg: Any) -> Address | None:
    if msg["family"] != AF_INET6:
        return None
    value = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
    if value is None:
        return None
    flags = msg.get_attr("IFA_FLAGS")
    return Address(
        IPv6Address(value),
        msg["prefixlen"],
        msg["index"],
        msg.get_attr("IFA_PROTO"),
        msg["flags"] if flags is None else flags,
    )


def parse_tunnel(msg: Any) -> Ip6Tunnel | None:
    info = msg.get_attr("IFLA_LINKINFO")
    if info is None or info.get_attr("IFLA_INFO_KIND") != "ip6tnl":
        return None
    data = info.get_attr("IFLA_INFO_DATA")
    if data is None:
        return None
    return Ip6Tunnel(
        name=msg.get_attr("IFLA_IFNAME"),
        local=IPv6Address(data.get_attr("IFLA_IP6TNL_LOCAL") or "::"),
        remote=IPv6Address(data.get_attr("IFLA_IP6TNL_REMOTE") or "::"),
        link=data.get_attr("IFLA_IP6TNL_LINK") or 0,
        index=msg["index"],
        flags=(data.get_attr("IFLA_IP6TNL_FLAGS") or 0) & ~IP6_TNL_F_CAP_MASK,
        hop_limit=data.get_attr("IFLA_IP6TNL_TTL") or 0,
        up=bool(msg["flags"] & IFF_UP),
    )


# --- raw dump parsers ------------------------------------------------------------------
#
# The objects of every binding are read back at each restart (two routes and a proxy entry
# per binding on a seg6 home agent): these read only the attributes parse_route and
# parse_proxy use, straight from the kernel's bytes, and give the same objects.

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_DUMP_INTR = 0x10
RTA_DST, RTA_SRC, RTA_OIF, RTA_PRIORITY, RTA_TABLE = 1, 2, 4, 6, 15
RTA_ENCAP_TYPE, RTA_ENCAP = 21, 22
SEG6_IPTUNNEL_SRH = 1
SEG6_LOCAL_ACTION, SEG6_LOCAL_TABLE, SEG6_LOCAL_NH6 = 1, 3, 5
NDA_DST, NDA_PROTOCOL = 1, 12
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER

_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NDMSG = struct.Struct("=BBHiHBB")
_NLA = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_U16 = struct.Struct("=H")
_ERRNO = struct.Struct("=i")
_SRH_HEAD = struct.Struct("=iBBBBBBH")

T = TypeVar("T")


def _attributes(data: bytes, start: int, end: int) -> dict[int, memoryview | bytes]:
    """Type -> payload of the attributes in ``data[start:end]`` (the first one of a type wins,
    as with pyroute2's get_attr)."""
    found: dict[int, memoryview | bytes] = {}
    unpack = _NLA.unpack_from
    while start + 4 <= end:
        length, kind = unpack(data, start)
        if length < 4 or start + length > end:
            break
        kind &= NLA_TYPE_MASK
        if kind not in found:
            found[kind] = data[start + 4 : start + length]
        start += (length + 3) & ~3
    return found


def _address(raw: bytes) -> IPv6Address:
    return IPv6Address(int.from_bytes(raw, "big"))


def _prefix(raw: bytes, length: int, known: dict[tuple[bytes, int], IPv6Network]) -> IPv6Network:
    """The network, shared with the routes of the same dump chunk that have it (every
    decapsulation route of a home agent has its address)."""
    key = (raw, length)
    network = known.get(key)
    if network is None:
        network = known[key] = IPv6Network((int.from_bytes(raw, "big"), length))
    return network


def _messages(data: bytes, wanted: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each message of type ``wanted`` in one chunk of a dump."""
    offset, size = 0, len(data)
    unpack = _NLMSGHDR.unpack_from
    while offset + 16 <= size:
        length, kind, _flags, _seq, _pid = unpack(data, offset)
        if length < 16 or offset + length > size:
            break  # cut short: nothing is read past the end
        if kind == wanted:
            yield offset + 16, offset + length
        offset += (length + 3) & ~3


def route_from_bytes(
    data: bytes, start: int, end: int, known: dict[tuple[bytes, int], IPv6Network] | None = None
) -> Route | None:
    """One RTM_NEWROUTE body (``data[start:end]``, after the nlmsghdr) as parse_route reads it."""
    family, dst_len, src_len, _tos, table, proto, _scope, _type, _flags = _RTMSG.unpack_from(
        data, start
    )
    if family != AF_INET6:
        return None
    attrs = _attributes(data, start + _RTMSG.size, end)
    encap: Seg6Encap | Seg6LocalEncap | BpfEncap | None = None
    kind = attrs.get(RTA_ENCAP_TYPE)
    raw = attrs.get(RTA_ENCAP)
    if kind is not None and raw is not None:
        kind_value = _U16.unpack_from(kind)[0]
        if kind_value == LWTUNNEL_ENCAP_BPF:
            xmit = _attributes(raw, 0, len(raw)).get(LWT_BPF_XMIT)
            name = _attributes(xmit, 0, len(xmit)).get(LWT_BPF_PROG_NAME) if xmit else None
            encap = BpfEncap(bytes(name).rstrip(b"\0").decode(errors="replace") if name else "")
        elif kind_value == LWTUNNEL_ENCAP_SEG6:
            encap = _seg6_encap(_attributes(raw, 0, len(raw)).get(SEG6_IPTUNNEL_SRH))
        elif kind_value == LWTUNNEL_ENCAP_SEG6_LOCAL:
            local = _attributes(raw, 0, len(raw))
            action, table_attr, nh6 = (
                local.get(SEG6_LOCAL_ACTION),
                local.get(SEG6_LOCAL_TABLE),
                local.get(SEG6_LOCAL_NH6),
            )
            encap = Seg6LocalEncap(
                _U32.unpack_from(action)[0] if action is not None else 0,
                _U32.unpack_from(table_attr)[0] if table_attr is not None else None,
                _address(nh6) if nh6 is not None else None,
            )
    if known is None:
        known = {}
    dst = attrs.get(RTA_DST)
    src = attrs.get(RTA_SRC) if src_len else None
    table_value = attrs.get(RTA_TABLE)
    oif = attrs.get(RTA_OIF)
    metric = attrs.get(RTA_PRIORITY)
    return Route(
        dst=_prefix(dst, dst_len, known) if dst is not None else DEFAULT_ROUTE,
        table=(_U32.unpack_from(table_value)[0] if table_value is not None else 0) or table,
        oif=_U32.unpack_from(oif)[0] if oif is not None else 0,
        proto=proto,
        src=_prefix(src, src_len, known) if src is not None else None,
        metric=_U32.unpack_from(metric)[0] if metric is not None else 0,
        encap=encap,
    )


def _seg6_encap(srh: bytes | memoryview | None) -> Seg6Encap:
    """struct seg6_iptunnel_encap: the mode, then the SRH (segments as pyroute2 lists them:
    in the SRH's order, segments_left + 1 of them)."""
    if srh is None or len(srh) < _SRH_HEAD.size:
        return Seg6Encap((), SEG6_IPTUN_MODE_ENCAP)
    mode, _nh, _hdrlen, _type, left, _first, _flags, _tag = _SRH_HEAD.unpack_from(srh)
    base = _SRH_HEAD.size
    count = min(left + 1, (len(srh) - base) // 16)
    segments = tuple(_address(srh[base + 16 * n : base + 16 * n + 16]) for n in range(count))
    return Seg6Encap(segments, mode)


def proxy_from_bytes(data: bytes, start: int, end: int) -> ProxyEntry | None:
    """One RTM_NEWNEIGH body as parse_proxy reads it."""
    family, _pad1, _pad2, ifindex, _state, flags, _type = _NDMSG.unpack_from(data, start)
    if family != AF_INET6 or not flags & NTF_PROXY:
        return None
    attrs = _attributes(data, start + _NDMSG.size, end)
    dst = attrs.get(NDA_DST)
    if dst is None:
        return None
    proto = attrs.get(NDA_PROTOCOL)
    return ProxyEntry(_address(dst), ifindex, proto[0] if proto is not None else None)


def parse_routes(data: bytes) -> list[Route]:
    """The IPv6 routes among the messages of one dump chunk."""
    known: dict[tuple[bytes, int], IPv6Network] = {}
    found = (route_from_bytes(data, s, e, known) for s, e in _messages(data, RTM_NEWROUTE))
    return [r for r in found if r is not None]


def parse_proxies(data: bytes) -> list[ProxyEntry]:
    """The IPv6 proxy entries among the messages of one dump chunk."""
    found = (proxy_from_bytes(data, s, e) for s, e in _messages(data, RTM_NEWNEIGH))
    return [p for p in found if p is not None]


class RawDumper:
    """An rtnetlink socket for dumps only, opened like pyroute2's (strict checking, so the
    kernel filters; extended acks) in the calling thread's namespace."""

    SOL_NETLINK = 270
    NETLINK_EXT_ACK = 11
    NETLINK_GET_STRICT_CHK = 12
    BUFFER = 1 << 20
    RETRIES = 5  # of a dump the kernel says was interrupted by a change

    def __init__(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            sock.setsockopt(self.SOL_NETLINK, self.NETLINK_EXT_ACK, 1)
            sock.setsockopt(self.SOL_NETLINK, self.NETLINK_GET_STRICT_CHK, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.BUFFER)
            sock.bind((0, 0))
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def dump(self, msg_type: int, body: bytes, parse: Callable[[bytes], list[T]]) -> list[T]:
        for attempt in range(self.RETRIES):
            found, interrupted = self._dump_once(msg_type, body, parse)
            if not interrupted or attempt == self.RETRIES - 1:
                return found
        raise AssertionError("unreachable")

    def _dump_once(
        self, msg_type: int, body: bytes, parse: Callable[[bytes], list[T]]
    ) -> tuple[list[T], bool]:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        header = _NLMSGHDR.pack(16 + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
        self._sock.send(header + body)
        found: list[T] = []
        interrupted = False
        unpack = _NLMSGHDR.unpack_from
        while True:
            data = self._sock.recv(self.BUFFER)
            offset, size, done, ours = 0, len(data), False, True
            while offset + 16 <= size:
                length, kind, flags, mseq, _pid = unpack(data, offset)
                if length < 16:
                    break
                if mseq != seq:
                    ours = False  # a late reply to an earlier request: skipped
                elif flags & NLM_F_DUMP_INTR:
                    interrupted = True
                if mseq == seq and kind == NLMSG_DONE:
                    # A dump that failed part-way says why here (netlink_dump_done).
                    code = -_ERRNO.unpack_from(data, offset + 16)[0] if length >= 20 else 0
                    if code > 0:
                        raise OSError(code, os.strerror(code))
                    done = True
                elif mseq == seq and kind == NLMSG_ERROR:
                    code = -_ERRNO.unpack_from(data, offset + 16)[0]
                    if code:
                        raise OSError(code, os.strerror(code))
                    done = True
                offset += (length + 3) & ~3
            if ours:
                found += parse(data)
            if done:
                return found, interrupted


# --- transport -------------------------------------------------------------------------


class _Seg6GenlMessage(genlmsg):
    prefix = "SEG6_ATTR_"
    nla_map = (
        ("SEG6_ATTR_UNSPEC", "none"),
        ("SEG6_ATTR_DST", "cdata"),
        ("SEG6_ATTR_DSTLEN", "int32"),
        ("SEG6_ATTR_HMACKEYID", "uint32"),
        ("SEG6_ATTR_SECRET", "cdata"),
        ("SEG6_ATTR_SECRETLEN", "uint8"),
        ("SEG6_ATTR_ALGID", "uint8"),
        ("SEG6_ATTR_HMACINFO", "cdata"),
    )


def netns_id() -> int:
    """The inode of the calling thread's network namespace."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def kernel_error(operation: str, subject: str, exc: BaseException) -> DataPlaneError:
    if isinstance(exc, NetlinkError):
        code = exc.code
        text = str(exc.args[1]) if len(exc.args) > 1 else os.strerror(code)
        return DataPlaneError(operation, subject, text, code)
    if isinstance(exc, OSError):
        return DataPlaneError(operation, subject, exc.strerror or str(exc), exc.errno)
    return DataPlaneError(operation, subject, str(exc))


class Netlink:
    """RTNETLINK (and the SEG6 generic-netlink family) in the creating thread's namespace.

    Netlink sockets stay bound to the namespace they were opened in; sysctl writes go to
    the caller's current namespace, so :meth:`sysctl` refuses to run anywhere else.
    Blocking: use it from one thread, outside a running asyncio loop (pyroute2 0.9's
    IPRoute runs its own loop).
    """

    def __init__(self) -> None:
        self._netns = netns_id()
        try:
            # Strict checking lets the kernel filter dumps (our protocol only), so a router
            # with a full table is not read in whole on every call.
            self._ipr = IPRoute(groups=0, ext_ack=True, strict_check=True)
        except OSError as exc:
            raise kernel_error("open", "rtnetlink socket", exc) from None
        # pyroute2 0.9.7 IPRoute lacks this key, which nlm_request() reads.
        self._ipr.asyncore.status["nlm_generator"] = False
        # Route and proxy dumps (every binding's objects at a restart) are read on a plain
        # socket by the parsers above: pyroute2 decodes every attribute of every message.
        self._raw: RawDumper | None = None
        try:
            self._raw = RawDumper()
        except OSError as exc:
            self._ipr.close()
            raise kernel_error("open", "rtnetlink socket", exc) from None
        self._genl: GenericNetlinkSocket | None = None
        self._genl_error: str | None = None
        try:
            genl = GenericNetlinkSocket(ext_ack=True)
            genl.bind("SEG6", _Seg6GenlMessage)
            self._genl = genl
        except (NetlinkError, OSError) as exc:
            self._genl_error = str(kernel_error("open", "SEG6 generic netlink family", exc))

    def close(self) -> None:
        self._ipr.close()
        if self._raw is not None:
            self._raw.close()
        if self._genl is not None:
            self._genl.close()

    # Overridden by tests that record what would be sent.
    def request(self, operation: str, subject: str, msg_type: int, flags: int, msg: Any) -> None:
        try:
            self._ipr.nlm_request(msg, msg_type, NLM_F_REQUEST | NLM_F_ACK | flags)
        except (NetlinkError, OSError) as exc:
            raise kernel_error(operation, subject, exc) from None

    def dump(self, operation: str, msg_type: int, msg: Any) -> list[Any]:
        try:
            return list(self._ipr.nlm_request(msg, msg_type, NLM_F_REQUEST | NLM_F_DUMP))
        except (NetlinkError, OSError) as exc:
            raise kernel_error(operation, "", exc) from None

    def raw_dump(
        self, operation: str, msg_type: int, request: bytes, parse: Callable[[bytes], list[T]]
    ) -> list[T]:
        """A dump read without pyroute2: ``parse`` turns each chunk of messages into objects."""
        if self._raw is None:
            raise DataPlaneError(operation, "", "the netlink socket is closed")
        try:
            return self._raw.dump(msg_type, request, parse)
        except OSError as exc:
            raise kernel_error(operation, "", exc) from None

    def _change(self, op: str, subject: str, msg_type: int, flags: int, msg: Any) -> bool:
        """Send; False when the kernel says it is already there (or already gone)."""
        try:
            self.request(op, subject, msg_type, flags, msg)
        except DataPlaneError as exc:
            if msg_type in (RTM_DELROUTE, RTM_DELRULE, RTM_DELNEIGH, RTM_DELADDR, RTM_DELLINK):
                if exc.errno in _GONE:
                    return False
            elif exc.errno == errno.EEXIST and flags & NLM_F_EXCL:
                return False
            raise
        return True

    # Interfaces.
    def ifindex(self, ifname: str) -> int:
        msg = ifinfmsg()
        msg["family"] = socket.AF_UNSPEC
        msg["attrs"] = [("IFLA_IFNAME", ifname)]
        try:
            replies = list(self._ipr.nlm_request(msg, RTM_GETLINK, NLM_F_REQUEST))
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                raise DataPlaneError(
                    "look up", f"interface {ifname!r}", "no such interface"
                ) from None
            raise kernel_error("look up", f"interface {ifname!r}", exc) from None
        except OSError as exc:
            raise kernel_error("look up", f"interface {ifname!r}", exc) from None
        return int(replies[0]["index"])

    def link_names(self) -> list[str]:
        return [str(m.get_attr("IFLA_IFNAME")) for m in self._links()]

    def link_indexes(self) -> dict[str, int]:
        """Interface name -> index, from one dump."""
        return {str(m.get_attr("IFLA_IFNAME")): int(m["index"]) for m in self._links()}

    def _links(self) -> list[Any]:
        msg = ifinfmsg()
        msg["family"] = socket.AF_UNSPEC
        return self.dump("dump links", RTM_GETLINK, msg)

    # Routes.
    def routes(self, proto: int | None = None) -> list[Route]:
        """IPv6 routes of every table; only ``proto`` ones when given (filtered in-kernel)."""
        request = _RTMSG.pack(AF_INET6, 0, 0, 0, 0, proto or 0, 0, 0, 0)
        found = self.raw_dump("dump routes", RTM_GETROUTE, request, parse_routes)
        # Kernels before 5.0 ignore the filter.
        return [r for r in found if proto is None or r.proto == proto]

    def replace_route(self, route: Route, what: str) -> None:
        flags = NLM_F_CREATE | NLM_F_REPLACE
        self._change("install", what, RTM_NEWROUTE, flags, route_message(route))

    def create_route(self, route: Route, what: str) -> None:
        self._change("install", what, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, route_message(route))

    def delete_route(self, route: Route, what: str) -> bool:
        return self._change("remove", what, RTM_DELROUTE, 0, route_message(route))

    # Policy rules.
    def rules(self) -> list[Rule]:
        msg = fibmsg()
        msg["family"] = AF_INET6
        return [r for r in map(parse_rule, self.dump("dump rules", RTM_GETRULE, msg)) if r]

    def add_rule(self, rule: Rule, what: str) -> bool:
        # Without NLM_F_EXCL the kernel happily adds an identical second rule.
        flags = NLM_F_CREATE | NLM_F_EXCL
        return self._change("install", what, RTM_NEWRULE, flags, rule_message(rule))

    def delete_rule(self, rule: Rule, what: str) -> bool:
        return self._change("remove", what, RTM_DELRULE, 0, rule_message(rule))

    # Proxy neighbour entries.
    def proxies(self) -> list[ProxyEntry]:
        # NTF_PROXY asks for the proxy table instead of the neighbour cache.
        request = _NDMSG.pack(AF_INET6, 0, 0, 0, 0, NTF_PROXY, 0)
        return self.raw_dump("dump proxy entries", RTM_GETNEIGH, request, parse_proxies)

    def replace_proxy(self, entry: ProxyEntry, what: str) -> None:
        flags = NLM_F_CREATE | NLM_F_REPLACE
        self._change("install", what, RTM_NEWNEIGH, flags, proxy_message(entry))

    def delete_proxy(self, entry: ProxyEntry, what: str) -> bool:
        return self._change("remove", what, RTM_DELNEIGH, 0, proxy_message(entry))

    # Addresses.
    def addresses(self) -> list[Address]:
        msg = ifaddrmsg()
        msg["family"] = AF_INET6
        found = map(parse_address, self.dump("dump addresses", RTM_GETADDR, msg))
        return [a for a in found if a]

    def replace_address(self, address: Address, what: str) -> None:
        flags = NLM_F_CREATE | NLM_F_REPLACE
        self._change("install", what, RTM_NEWADDR, flags, address_message(address))

    def delete_address(self, address: Address, what: str) -> bool:
        return self._change("remove", what, RTM_DELADDR, 0, address_message(address))

    # ip6tnl devices.
    def tunnels(self) -> list[Ip6Tunnel]:
        return [t for t in map(parse_tunnel, self._links()) if t]

    def create_tunnel(self, tunnel: Ip6Tunnel, what: str) -> None:
        # EEXIST is an error here, not "already there": the name is taken, or another
        # device has these endpoints (ip6_tnl_locate).
        flags = NLM_F_CREATE | NLM_F_EXCL
        self.request("create", what, RTM_NEWLINK, flags, tunnel_message(tunnel))

    def change_tunnel(self, tunnel: Ip6Tunnel, what: str) -> None:
        self._change("change", what, RTM_NEWLINK, 0, tunnel_message(tunnel))

    def delete_link(self, index: int, what: str) -> bool:
        msg = ifinfmsg()
        msg["family"] = socket.AF_UNSPEC
        msg["index"] = index
        return self._change("remove", what, RTM_DELLINK, 0, msg)

    # seg6 tunnel source (one per namespace).
    def tunsrc(self) -> IPv6Address | None:
        """The namespace's seg6 tunnel source; None when the SEG6 family is missing."""
        if self._genl is None:
            return None
        msg = _Seg6GenlMessage()
        msg["cmd"] = SEG6_CMD_GET_TUNSRC
        msg["version"] = 1
        try:
            replies = list(self._genl.nlm_request(msg, self._genl.prid, NLM_F_REQUEST))
        except (NetlinkError, OSError) as exc:
            raise kernel_error("read", "seg6 tunnel source", exc) from None
        for reply in replies:
            raw = reply.get_attr("SEG6_ATTR_DST")
            if raw:
                return IPv6Address(bytes(raw))
        return IPv6Address("::")

    def set_tunsrc(self, address: IPv6Address) -> bool:
        """Set the seg6 tunnel source; False when the kernel has no SEG6 family."""
        if self._genl is None:
            return False
        msg = _Seg6GenlMessage()
        msg["cmd"] = SEG6_CMD_SET_TUNSRC
        msg["version"] = 1
        msg["attrs"] = [("SEG6_ATTR_DST", address.packed)]
        try:
            self._genl.nlm_request(msg, self._genl.prid, NLM_F_REQUEST | NLM_F_ACK)
        except (NetlinkError, OSError) as exc:
            raise kernel_error("set", f"seg6 tunnel source {address}", exc) from None
        return True

    @property
    def tunsrc_unavailable(self) -> str | None:
        return self._genl_error

    # sysctls (procfs, not netlink, but namespace-bound all the same).
    def sysctl(self, parts: Iterable[str], value: str) -> None:
        parts = tuple(parts)
        name = ".".join(parts)
        if netns_id() != self._netns:
            raise DataPlaneError(
                "set", f"sysctl {name}", "called from another network namespace than the backend's"
            )
        path = os.path.join("/proc/sys", *parts)
        try:
            with open(path) as handle:
                if handle.read().strip() == value:
                    return  # already so: no write (every start sets the same values)
        except OSError:
            pass  # the write below says why
        try:
            with open(path, "w") as handle:
                handle.write(value)
        except OSError as exc:
            raise kernel_error("set", f"sysctl {name}={value}", exc) from None
