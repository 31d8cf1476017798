"""Mobile IPv6 signaling I/O from userspace, without kernel MIP6 support.

Sending: callers hand over whole packets from :func:`mip6agent.wire.build_packet`. Most go
out through one header-included raw socket (``IPPROTO_RAW``). A packet with no extension
header whose upper layer an IPsec policy selects (a Mobility Header, or ICMPv6 DHAAD and
Mobile Prefix Solicitation/Advertisement) from a global source goes through a raw socket of
its own protocol instead, so that the kernel's xfrm lookup sees its protocol and MH or
ICMPv6 type (a header-included packet is looked up as protocol 255, and policies on
``proto mobility-header type 5`` would never apply to it; docs/ipsec.md). Receiving uses
four raw sockets:

- protocol 135 (Mobility Header) for plain MH;
- protocol 60 (Destination Options) for the copy of packets with a Home Address option,
  which a kernel without MIP6 then drops;
- protocol 43 (Routing) for the copy of packets with a Type 2 Routing Header, likewise;
- ICMPv6, filtered to RS/RA/NS/NA and 144-147 (DHAAD, MPS, MPA).

Every received datagram is rebuilt into a whole IPv6 packet and parsed with
:func:`mip6agent.wire.parse_packet`, so callers see one :class:`Received` type whichever
socket it came from. docs/transport.md lists which socket gets which packet.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import logging
import os
import select
import socket
import struct
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from ipaddress import IPv6Address
from typing import TypeVar

from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR
from pyroute2.netlink.rtnl import RTM_GETADDR, RTM_GETLINK, RTM_NEWADDR, RTM_NEWLINK
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from .. import wire
from ..wire.constants import (
    IPPROTO_DSTOPTS,
    IPPROTO_ICMPV6,
    IPPROTO_MH,
    IPPROTO_ROUTING,
    NA_FLAG_OVERRIDE,
    NA_FLAG_ROUTER,
    ROUTING_TYPE_2,
    ICMPv6Type,
    MobilityOptionType,
    NDOptionType,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")

ALL_NODES = IPv6Address("ff02::1")
ALL_ROUTERS = IPv6Address("ff02::2")
UNSPECIFIED = IPv6Address("::")
_FLOW_SOURCE_FOR_UNSPECIFIED = IPv6Address("fe80::")
_SOLICITED_NODE_PREFIX = int(IPv6Address("ff02::1:ff00:0"))
ND_HOP_LIMIT = 255

# ICMPv6 types the agent reads: ND, DHAAD, Mobile Prefix Solicitation/Advertisement.
DEFAULT_ICMPV6_TYPES = frozenset(
    {
        ICMPv6Type.ROUTER_SOLICITATION,
        ICMPv6Type.ROUTER_ADVERTISEMENT,
        ICMPv6Type.NEIGHBOR_SOLICITATION,
        ICMPv6Type.NEIGHBOR_ADVERTISEMENT,
        ICMPv6Type.HAAD_REQUEST,
        ICMPv6Type.HAAD_REPLY,
        ICMPv6Type.MOBILE_PREFIX_SOLICITATION,
        ICMPv6Type.MOBILE_PREFIX_ADVERTISEMENT,
    }
)

# Names for the receive sockets, as reported in Received.via.
VIA_MH = "mh"
VIA_DSTOPTS = "dstopts"
VIA_ROUTING = "routing"
VIA_ICMPV6 = "icmpv6"
_PROTOCOLS = {
    VIA_MH: IPPROTO_MH,
    VIA_DSTOPTS: IPPROTO_DSTOPTS,
    VIA_ROUTING: IPPROTO_ROUTING,
    VIA_ICMPV6: IPPROTO_ICMPV6,
}

# Linux values the socket module does not export.
_ICMP6_FILTER = 1
_SO_ATTACH_FILTER = 26
_IPV6_FREEBIND = 78
_IPV6_AUTOFLOWLABEL = 70
_IFA_F_OPTIMISTIC = 0x04
_IFA_F_DADFAILED = 0x08
_IFA_F_TENTATIVE = 0x40

# ICMPv6 types sent through a protocol socket (see the module docstring); ND stays
# header-included (its sources may be :: or tentative).
_FLOW_ICMPV6_TYPES = frozenset(
    {
        ICMPv6Type.HAAD_REQUEST,
        ICMPv6Type.HAAD_REPLY,
        ICMPv6Type.MOBILE_PREFIX_SOLICITATION,
        ICMPv6Type.MOBILE_PREFIX_ADVERTISEMENT,
    }
)

_IPV6 = struct.Struct("!IHBB16s16s")
_PKTINFO = struct.Struct("=16sI")
_MREQ = struct.Struct("=16sI")
_INT = struct.Struct("=i")
_BUFSIZE = 65535
# Room for pktinfo, hop limit, tclass and a largest (2048-octet) Dest Options + Routing header.
_ANCSIZE = 8192
_READ_BATCH = 256
# Plain ints: socket's IntFlag arithmetic per packet shows in a flood's profile.
_MSG_DONTWAIT = int(socket.MSG_DONTWAIT)
_MSG_TRUNCATED = int(socket.MSG_TRUNC | socket.MSG_CTRUNC)
# A burst of signaling waits in the kernel until the agent reads it. Reading is cheap next
# to handling (the gate decides before a packet is parsed), so the buffer only covers the
# agent's pauses: a larger one would only make a known node's BU wait longer behind a
# flood that is read more slowly than it comes (about 1,300 small packets per MiB).
_RCVBUF = 1 << 20
_SO_RCVBUFFORCE = 33
_DEDUP_ENTRIES = 4096


class Gate(enum.Enum):
    """What a receive gate decides about a packet before it is parsed."""

    URGENT = "urgent"
    NORMAL = "normal"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class BindingUpdatePeek:
    """What a BU says about its sender, read without decoding the packet."""

    home_address: IPv6Address
    source: IPv6Address
    nai: bytes | None


def peek_binding_update(
    via: str, src: IPv6Address, data: bytes, headers: Iterable[tuple[int, bytes]] = ()
) -> BindingUpdatePeek | None:
    """Home address, source and NAI of a Binding Update as a receive socket hands it over.

    ``data`` starts at the socket's protocol (Destination Options for ``dstopts``, the
    Mobility Header for ``mh``). On a kernel with MIP6 the MH socket gets the packet with
    the Home Address option already swapped: then ``src`` is the home address and the
    option holds the care-of address. None if it is not a BU or too short to tell.
    """
    home = source = src
    mh = data
    if via == VIA_DSTOPTS:
        if len(data) < 8 or data[0] != IPPROTO_MH:
            return None
        pos = _home_address_offset(data)
        if pos is not None:
            home = IPv6Address(bytes(data[pos : pos + 16]))
        mh = data[(data[1] + 1) * 8 :]
    elif via == VIA_MH:
        for kind, raw in headers:
            pos = _home_address_offset(raw) if kind == IPPROTO_DSTOPTS else None
            if pos is not None:
                source = IPv6Address(bytes(raw[pos : pos + 16]))
    else:
        return None
    if len(mh) < 12 or mh[2] != wire.BindingUpdate.MH_TYPE:
        return None
    end = min(len(mh), (mh[1] + 1) * 8)
    pos, nai = 12, None
    while pos + 2 <= end:
        kind = mh[pos]
        if kind == 0:  # Pad1
            pos += 1
            continue
        length = mh[pos + 1]
        if kind == MobilityOptionType.MN_IDENTIFIER and length >= 1:
            nai = bytes(mh[pos + 3 : pos + 2 + length])
            break
        pos += 2 + length
    return BindingUpdatePeek(home, source, nai)


class TransportError(RuntimeError):
    """The transport cannot do what was asked (sockets not open, no privileges, ...)."""


@dataclass(slots=True)
class Received:
    """One received signaling packet, rebuilt as a whole IPv6 packet.

    ``via`` names the socket it came from (``mh``, ``dstopts``, ``routing``, ``icmpv6``);
    ``checksum_ok`` applies the home-address rule; ``hop_limit`` is what arrived (ND
    messages are only valid with 255); ``data`` is the rebuilt packet.
    """

    packet: wire.Packet
    ifindex: int
    hop_limit: int
    checksum_ok: bool
    via: str
    data: bytes
    timestamp: float
    urgent: bool = False  # the gate's verdict: handle before other input

    @property
    def src(self) -> IPv6Address:
        return self.packet.src

    @property
    def dst(self) -> IPv6Address:
        return self.packet.dst


@dataclass(slots=True)
class TransportCounters:
    received: int = 0  # datagrams read from the receive sockets
    delivered: int = 0  # handed to the caller
    duplicates: int = 0  # the same packet seen on a second socket
    malformed: int = 0  # wire.DecodeError, truncated, or no packet info
    bad_checksum: int = 0  # delivered, but the MH/ICMPv6 checksum is wrong
    ignored: int = 0  # well-formed but not signaling (e.g. data with a HAO, other ICMPv6)
    gated: int = 0  # dropped by the gate before parsing (the receiver is saturated)
    sent: int = 0
    send_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class InterfaceInfo:
    index: int
    name: str
    mac: bytes | None
    link_local: IPv6Address | None
    # An optimistic address (RFC 4429) may be a source, but not with a link-layer option.
    link_local_optimistic: bool = False


# --- Neighbor Discovery packets (pure) -------------------------------------------------


def solicited_node(address: IPv6Address) -> IPv6Address:
    """The solicited-node multicast group of ``address`` (RFC 4291 2.7.1)."""
    return IPv6Address(_SOLICITED_NODE_PREFIX | (int(address) & 0xFFFFFF))


def multicast_mac(group: IPv6Address) -> bytes:
    """The Ethernet address a multicast group maps to (RFC 2464 7)."""
    return b"\x33\x33" + group.packed[12:]


def router_solicitation(src: IPv6Address, mac: bytes | None = None) -> bytes:
    """RS to all-routers; the link-layer option is left out with an unspecified source."""
    options: list[wire.NDOption] = []
    if mac and src != UNSPECIFIED:  # RFC 4861 4.1: MUST NOT with src ::
        options.append(wire.LinkLayerAddress(mac, NDOptionType.SOURCE_LINK_LAYER_ADDRESS))
    message = wire.RouterSolicitation(options)
    return wire.build_packet(src, ALL_ROUTERS, message, hop_limit=ND_HOP_LIMIT)


def unsolicited_neighbor_advertisement(
    src: IPv6Address,
    target: IPv6Address,
    mac: bytes,
    *,
    router: bool = False,
    dst: IPv6Address = ALL_NODES,
) -> bytes:
    """Unsolicited NA with the Override flag (RFC 6275 10.4.1, 11.5.5)."""
    flags = NA_FLAG_OVERRIDE | (NA_FLAG_ROUTER if router else 0)
    option = wire.LinkLayerAddress(mac, NDOptionType.TARGET_LINK_LAYER_ADDRESS)
    message = wire.NeighborAdvertisement(target, flags, [option])
    return wire.build_packet(src, dst, message, hop_limit=ND_HOP_LIMIT)


def dad_neighbor_solicitation(target: IPv6Address) -> bytes:
    """DAD probe (RFC 4862 5.4.2): from ::, to the solicited-node group, no options."""
    message = wire.NeighborSolicitation(target)
    return wire.build_packet(UNSPECIFIED, solicited_node(target), message, hop_limit=ND_HOP_LIMIT)


# --- Rebuilding received packets (pure) ------------------------------------------------


def rebuild_packet(
    proto: int,
    data: bytes,
    src: IPv6Address,
    dst: IPv6Address,
    hop_limit: int,
    traffic_class: int = 0,
    extension_headers: Iterable[tuple[int, bytes]] = (),
) -> bytes:
    """A whole IPv6 packet from what a raw socket reports.

    ``data`` starts at the header of protocol ``proto`` (a raw socket hands over the
    packet from its own protocol on). ``extension_headers`` are (protocol, bytes) pairs
    from IPV6_DSTOPTS / IPV6_RTHDR ancillary data, outermost first, for a MH or ICMPv6
    socket; they go back in front of ``data``. A kernel with MIP6 has already swapped the
    addresses of a Home Address option and of a Type 2 Routing Header (RFC 6275 9.3.1,
    11.3.3) before the packet reaches such a socket: the swaps are undone here, so the
    packet looks as it did on the wire, the same as the copy on the protocol 60/43 socket.
    """
    chain = [(kind, bytearray(raw)) for kind, raw in extension_headers]
    for index, (_, raw) in enumerate(chain):
        raw[0] = chain[index + 1][0] if index + 1 < len(chain) else proto
    for kind, raw in chain:
        if kind == IPPROTO_DSTOPTS:
            pos = _home_address_offset(raw)
            if pos is not None:  # HAO holds the care-of address after the kernel's swap
                coa = bytes(raw[pos : pos + 16])
                raw[pos : pos + 16] = src.packed
                src = IPv6Address(coa)
        elif kind == IPPROTO_ROUTING and len(raw) == 24 and raw[2] == ROUTING_TYPE_2 and not raw[3]:
            coa = bytes(raw[8:24])  # segments left 0: the kernel has taken the route
            raw[8:24] = dst.packed
            raw[3] = 1
            dst = IPv6Address(coa)
    first = chain[0][0] if chain else proto
    payload = b"".join(bytes(raw) for _, raw in chain) + bytes(data)
    word = (6 << 28) | ((traffic_class & 0xFF) << 20)
    head = _IPV6.pack(word, len(payload), first, hop_limit, src.packed, dst.packed)
    return head + payload


def _home_address_offset(header: bytes | bytearray) -> int | None:
    """Offset of the home address inside a Destination Options header, if it has one."""
    end = min(len(header), (header[1] + 1) * 8) if len(header) >= 2 else 0
    pos = 2
    while pos < end:
        kind = header[pos]
        if kind == 0:  # Pad1
            pos += 1
            continue
        if pos + 2 > end:
            return None
        length = header[pos + 1]
        if kind == wire.HomeAddressOption.TYPE and length == 16 and pos + 18 <= end:
            return pos + 2
        pos += 2 + length
    return None


def _dedup_key(packet: wire.Packet) -> tuple[IPv6Address, IPv6Address, int, bytes]:
    # Pseudo-header addresses are the same on the wire copy and on a kernel-processed copy.
    src, dst = packet.pseudo_addresses
    return src, dst, packet.protocol, packet.payload_bytes


# --- Socket set-up helpers ----------------------------------------------------------------


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


_BPF_LDB_ABS = 0x30
_BPF_JEQ_K = 0x15
_BPF_RET_K = 0x06


def _accept_next_headers(values: Iterable[int], routing_type: int | None = None) -> list[tuple]:
    """Classic BPF: keep packets whose first header names one of ``values`` as next header.

    A raw socket's filter sees the packet from the socket's own header on, so octet 0 is
    that header's Next Header field and octet 2 a routing header's type.
    """
    wanted = list(values)
    prog: list[tuple[int, int, int, int]] = []
    if routing_type is not None:
        # Skip to "drop" unless the routing type matches: drop sits len(wanted)+1 further.
        prog += [(_BPF_LDB_ABS, 0, 0, 2), (_BPF_JEQ_K, 0, len(wanted) + 1, routing_type)]
    prog.append((_BPF_LDB_ABS, 0, 0, 0))
    for index, value in enumerate(wanted):
        remaining = len(wanted) - index - 1
        prog.append((_BPF_JEQ_K, remaining + 1, 0, value))  # match -> accept
    prog += [(_BPF_RET_K, 0, 0, 0), (_BPF_RET_K, 0, 0, 0xFFFFFFFF)]
    return prog


def _attach_filter(sock: socket.socket, prog: list[tuple]) -> None:
    insns = (_SockFilter * len(prog))(*(_SockFilter(*insn) for insn in prog))
    fprog = _SockFprog(len(prog), insns)
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, bytes(fprog))  # kernel copies it


def _icmp6_filter(types: Iterable[int]) -> bytes:
    """struct icmp6_filter: a set bit blocks that type."""
    words = [0xFFFFFFFF] * 8
    for kind in types:
        words[kind >> 5] &= ~(1 << (kind & 31))
    return struct.pack("=8I", *words)


class _Netlink:
    """Blocking rtnetlink queries on one socket, parsed with pyroute2's marshal.

    A raw socket rather than pyroute2's IPRoute: IPRoute (0.9) runs its own event loop and
    cannot be called from inside a running asyncio loop, which is where the agent lives.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.sock.settimeout(2.0)
        self._seq = 0
        self._marshal = MarshalRtnl()

    def close(self) -> None:
        self.sock.close()

    def _query(self, msg: ifinfmsg | ifaddrmsg, kind: int, dump: bool) -> list:
        self._seq += 1
        msg["header"]["type"] = kind
        msg["header"]["flags"] = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
        msg["header"]["sequence_number"] = self._seq
        msg.encode()
        self.sock.send(msg.data)
        replies = []
        while True:
            for reply in self._marshal.parse(self.sock.recv(1 << 16)):
                header = reply["header"]
                if header["sequence_number"] != self._seq:
                    continue  # a late answer to an earlier, timed-out query
                if header["type"] == NLMSG_ERROR:
                    code = reply.get("error") or 0
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return replies
                if header["type"] == NLMSG_DONE:
                    return replies
                replies.append(reply)
                if not dump:
                    return replies

    def link(self, ifindex: int) -> tuple[str, bytes | None]:
        msg = ifinfmsg()
        msg["index"] = ifindex
        for reply in self._query(msg, RTM_GETLINK, dump=False):
            if reply["header"]["type"] == RTM_NEWLINK:
                mac = reply.get_attr("IFLA_ADDRESS")
                raw = bytes.fromhex(mac.replace(":", "")) if mac else b""
                return reply.get_attr("IFLA_IFNAME"), (raw if any(raw) else None)
        raise OSError(19, f"no interface with index {ifindex}")

    def link_local(self, ifindex: int) -> tuple[IPv6Address | None, bool]:
        """The interface's usable link-local address and whether it is optimistic."""
        msg = ifaddrmsg()
        msg["family"] = socket.AF_INET6
        best: tuple[IPv6Address | None, bool] = (None, False)
        for reply in self._query(msg, RTM_GETADDR, dump=True):
            if reply["header"]["type"] != RTM_NEWADDR or reply["index"] != ifindex:
                continue
            address = IPv6Address(reply.get_attr("IFA_ADDRESS"))
            if not address.is_link_local:
                continue
            flags = reply.get_attr("IFA_FLAGS") or reply["flags"]
            if flags & _IFA_F_DADFAILED:
                continue
            if flags & _IFA_F_OPTIMISTIC:
                if best[0] is None:
                    best = (address, True)
            elif not flags & _IFA_F_TENTATIVE:
                return address, False
        return best


# --- The transport ------------------------------------------------------------------------


@dataclass(slots=True)
class _Receiver:
    via: str
    sock: socket.socket


class SignalingTransport:
    """Raw-socket signaling I/O for one network namespace.

    ``receive_*`` choose which receive sockets :meth:`open` creates (a sender-only tool can
    turn them all off). Copies of one packet that reach two sockets within ``dedup_window``
    seconds are delivered once. ``icmpv6_types`` are the ICMPv6 types let
    through (add 4 to see Parameter Problems about one's own Binding Updates).
    ``receive_hao_data`` also delivers packets of any upper layer that carry a Home Address
    option (a correspondent answers those without a binding with Binding Error status 1);
    by default only signaling is delivered.
    """

    def __init__(
        self,
        *,
        receive_mh: bool = True,
        receive_extension_copies: bool = True,
        receive_icmpv6: bool = True,
        icmpv6_types: Iterable[int] = DEFAULT_ICMPV6_TYPES,
        receive_hao_data: bool = False,
        dedup_window: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.receive_mh = receive_mh
        self.receive_extension_copies = receive_extension_copies
        self.receive_icmpv6 = receive_icmpv6
        self.icmpv6_types = frozenset(icmpv6_types)
        self.receive_hao_data = receive_hao_data
        self.dedup_window = dedup_window
        self.clock = clock
        self.counters = TransportCounters()
        self._send_sock: socket.socket | None = None
        self._flow_socks: dict[int, socket.socket] = {}  # protocol -> send socket
        self._receivers: list[_Receiver] = []
        self._netlink: _Netlink | None = None
        self._groups: dict[tuple[IPv6Address, int], int] = {}  # group -> joins
        self._seen: OrderedDict[tuple, tuple[float, dict[str, int]]] = OrderedDict()
        self._pending: deque[Received] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._callback: Callable[[Received], None] | None = None
        self._buffer = bytearray(_BUFSIZE)
        # Called with (via, source, data, extension headers) before a packet is parsed.
        self.gate: Callable[[str, IPv6Address, bytes, list[tuple[int, bytes]]], Gate] | None = None

    # -- life cycle

    @property
    def is_open(self) -> bool:
        return self._send_sock is not None

    def open(self) -> SignalingTransport:
        """Create every socket (in the calling thread's network namespace)."""
        if self.is_open:
            return self
        try:
            self._open_sockets()
        except OSError as exc:
            self.close()
            hint = " (raw sockets need root or CAP_NET_RAW)" if exc.errno in (1, 13) else ""
            raise TransportError(f"cannot open signaling sockets: {exc}{hint}") from exc
        return self

    def _open_sockets(self) -> None:
        send = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self._send_sock = send
        # Our own ND multicasts must not come back to our own ICMPv6 socket.
        send.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        send.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 0)  # it never reads
        try:  # lets the flow source (IPV6_PKTINFO) be any address, like the header's source
            send.setsockopt(socket.IPPROTO_IPV6, _IPV6_FREEBIND, 1)
        except OSError:  # before Linux 4.15: only local sources can be routed by
            log.debug("IPV6_FREEBIND not supported; sending from non-local sources will fail")
        # Opened here, in the namespace of open(), like every other socket.
        for proto in (IPPROTO_MH, IPPROTO_ICMPV6):
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, proto)
            self._flow_socks[proto] = sock
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 0)
            _attach_filter(sock, [(0x06, 0, 0, 0)])  # it never reads: keep no copies
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            # The packet as built: no flow label of the kernel's, and (MH) our checksum as it
            # is; ICMPv6 sockets always compute theirs (the same, from the same pseudo-header).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_AUTOFLOWLABEL, 0)
            if proto == IPPROTO_MH:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_CHECKSUM, -1)
            with contextlib.suppress(OSError):  # as for the header-included socket
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_FREEBIND, 1)
        self._netlink = _Netlink()
        if self.receive_mh:
            sock = self._receive_socket(VIA_MH, ancillary_headers=True)
            # We verify with the home-address rule and report; the kernel would drop silently.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_CHECKSUM, -1)
        if self.receive_extension_copies:
            sock = self._receive_socket(VIA_DSTOPTS)
            if not self.receive_hao_data:  # else every upper layer; _is_signaling sorts
                _attach_filter(sock, _accept_next_headers((IPPROTO_MH, IPPROTO_ICMPV6)))
            sock = self._receive_socket(VIA_ROUTING)
            wanted = (IPPROTO_DSTOPTS, IPPROTO_MH, IPPROTO_ICMPV6)
            _attach_filter(sock, _accept_next_headers(wanted, ROUTING_TYPE_2))
        if self.receive_icmpv6:
            sock = self._receive_socket(VIA_ICMPV6, ancillary_headers=True)
            sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, _icmp6_filter(self.icmpv6_types))

    def _receive_socket(self, via: str, ancillary_headers: bool = False) -> socket.socket:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, _PROTOCOLS[via])
        self._receivers.append(_Receiver(via, sock))
        sock.setblocking(False)
        try:  # beyond net.core.rmem_max needs CAP_NET_ADMIN
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RCVBUF)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        for option in (socket.IPV6_RECVPKTINFO, socket.IPV6_RECVHOPLIMIT, socket.IPV6_RECVTCLASS):
            sock.setsockopt(socket.IPPROTO_IPV6, option, 1)
        if ancillary_headers:  # to undo a MIP6 kernel's HAO/RH2 processing
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVDSTOPTS, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVRTHDR, 1)
        return sock

    def close(self) -> None:
        """Detach from the loop, leave groups and close every socket; safe to repeat."""
        self.detach()
        for receiver in self._receivers:
            receiver.sock.close()  # also drops its multicast memberships
        self._receivers.clear()
        self._groups.clear()
        if self._netlink is not None:
            self._netlink.close()
            self._netlink = None
        if self._send_sock is not None:
            self._send_sock.close()
            self._send_sock = None
        for sock in self._flow_socks.values():
            sock.close()
        self._flow_socks.clear()
        self._pending.clear()

    def __enter__(self) -> SignalingTransport:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending

    def send(
        self, packet: bytes, dst: IPv6Address | str | None = None, ifindex: int | None = None
    ) -> None:
        """Send a whole IPv6 packet (header included).

        ``dst`` defaults to the packet's destination. Link-local and multicast destinations
        need ``ifindex``; for others it forces the outgoing interface. OSError from the
        kernel (no route, ...) is raised after counting it.
        """
        sock = _require(self._send_sock)
        if len(packet) < 40:
            raise ValueError(f"not an IPv6 packet: {len(packet)} octets")
        target = IPv6Address(packet[24:40]) if dst is None else IPv6Address(dst)
        scoped = target.is_link_local or target.is_multicast
        if scoped and not ifindex:
            raise ValueError(f"sending to {target} needs an outgoing interface (ifindex)")
        address = (str(target), 0, 0, ifindex if scoped and ifindex else 0)
        # The kernel routes a header-included packet by a flow source of its own choosing,
        # and fails (EADDRNOTAVAIL) when the link has no usable address yet, e.g. an RS at
        # link-up. Route it by the packet's real source instead (source-policy rules then
        # apply too); a packet from :: is routed as if from fe80::.
        src = IPv6Address(packet[8:24])
        flow_src = _FLOW_SOURCE_FOR_UNSPECIFIED if src == UNSPECIFIED else src
        info = _PKTINFO.pack(flow_src.packed, ifindex or 0)
        ancillary = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)]
        proto = self._flow_protocol(packet, src, target)
        data = [packet]
        if proto is not None:
            # The kernel builds the IPv6 header from the flow: the same source, destination,
            # hop limit and traffic class; it fills in the checksum (same pseudo-header).
            sock = self._flow_socket(proto)
            data = [packet[40:]]
            tclass = (struct.unpack_from("!I", packet)[0] >> 20) & 0xFF
            ancillary += [
                (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, _INT.pack(packet[7])),
                (socket.IPPROTO_IPV6, socket.IPV6_TCLASS, _INT.pack(tclass)),
            ]
        try:
            sock.sendmsg(data, ancillary, 0, address)
        except OSError:
            self.counters.send_errors += 1
            raise
        self.counters.sent += 1

    @staticmethod
    def _flow_protocol(packet: bytes, src: IPv6Address, dst: IPv6Address) -> int | None:
        """The protocol socket for this packet, or None for the header-included one."""
        if src.is_unspecified or src.is_link_local or dst.is_multicast or dst.is_link_local:
            return None
        next_header = packet[6]
        if next_header == IPPROTO_MH and len(packet) >= 44:
            return IPPROTO_MH
        if next_header == IPPROTO_ICMPV6 and len(packet) >= 44 and packet[40] in _FLOW_ICMPV6_TYPES:
            return IPPROTO_ICMPV6
        return None

    def _flow_socket(self, proto: int) -> socket.socket:
        return self._flow_socks[proto]

    def interface_info(self, ifindex: int) -> InterfaceInfo:
        """MAC and link-local address of an interface, over rtnetlink."""
        netlink = _require(self._netlink)
        name, mac = netlink.link(ifindex)
        link_local, optimistic = netlink.link_local(ifindex)
        return InterfaceInfo(ifindex, name, mac, link_local, optimistic)

    def send_router_solicitation(self, ifindex: int, *, src: IPv6Address | None = None) -> bytes:
        """RS from the link-local address (or :: while it is tentative); returns the packet."""
        info = self.interface_info(ifindex)
        if src is None:
            src = info.link_local or UNSPECIFIED
        # RFC 4429 3.2: an optimistic source must not announce its link-layer address.
        mac = None if (info.link_local_optimistic and src == info.link_local) else info.mac
        packet = router_solicitation(src, mac)
        self.send(packet, ALL_ROUTERS, ifindex)
        return packet

    def send_unsolicited_na(
        self,
        ifindex: int,
        target: IPv6Address,
        *,
        src: IPv6Address | None = None,
        mac: bytes | None = None,
        router: bool = False,
    ) -> bytes:
        """NA with Override for ``target`` to all-nodes, naming this interface's MAC.

        The home agent sends it for a home address when a binding starts; the source is the
        interface's link-local address unless ``src`` says otherwise.
        """
        info = self.interface_info(ifindex)
        src = src if src is not None else info.link_local
        mac = mac if mac is not None else info.mac
        if src is None or mac is None:
            raise TransportError(f"{info.name}: no usable link-local address or MAC for an NA")
        packet = unsolicited_neighbor_advertisement(src, target, mac, router=router)
        self.send(packet, ALL_NODES, ifindex)
        return packet

    def send_dad_ns(self, ifindex: int, target: IPv6Address) -> bytes:
        """One DAD probe for ``target`` (a home address, for the home agent)."""
        packet = dad_neighbor_solicitation(target)
        self.send(packet, solicited_node(target), ifindex)
        return packet

    # -- multicast membership

    def join_group(self, group: IPv6Address, ifindex: int) -> None:
        """Join ``group`` on an interface; raw sockets then see packets sent to it."""
        key = (IPv6Address(group), ifindex)
        if key in self._groups:
            # Counted: a home address and its link-local share one solicited-node group.
            self._groups[key] += 1
            return
        sock = self._membership_socket()
        mreq = _MREQ.pack(key[0].packed, ifindex)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        self._groups[key] = 1

    def leave_group(self, group: IPv6Address, ifindex: int) -> None:
        key = (IPv6Address(group), ifindex)
        count = self._groups.get(key)
        if count is None:
            return
        if count > 1:
            self._groups[key] = count - 1
            return
        mreq = _MREQ.pack(key[0].packed, ifindex)
        self._membership_socket().setsockopt(socket.IPPROTO_IPV6, socket.IPV6_LEAVE_GROUP, mreq)
        del self._groups[key]

    def join_solicited_node(self, address: IPv6Address, ifindex: int) -> None:
        """Receive NS/NA for ``address`` (DAD on behalf of a home address)."""
        self.join_group(solicited_node(address), ifindex)

    def leave_solicited_node(self, address: IPv6Address, ifindex: int) -> None:
        self.leave_group(solicited_node(address), ifindex)

    def _membership_socket(self) -> socket.socket:
        if not self._receivers:
            raise TransportError("joining a group needs an open receive socket")
        # Raw sockets receive all multicast the interface accepts (IPV6_MULTICAST_ALL).
        by_via = {r.via: r.sock for r in self._receivers}
        return by_via.get(VIA_ICMPV6) or self._receivers[0].sock

    # -- receiving

    def attach(self, loop: asyncio.AbstractEventLoop, callback: Callable[[Received], None]) -> None:
        """Read every receive socket from ``loop``; call ``callback`` once per packet."""
        _require(self._send_sock)
        if self._loop is not None:
            raise TransportError("already attached to an event loop")
        self._loop, self._callback = loop, callback
        for receiver in self._receivers:
            loop.add_reader(receiver.sock.fileno(), self._on_readable, receiver)

    def detach(self) -> None:
        if self._loop is None:
            return
        for receiver in self._receivers:
            self._loop.remove_reader(receiver.sock.fileno())
        self._loop = self._callback = None

    def _on_readable(self, receiver: _Receiver) -> None:
        for item in self._read(receiver):
            if self._callback is None:  # detached by an earlier callback: keep for receive()
                self._pending.append(item)
                continue
            try:
                self._callback(item)
            except Exception as exc:  # one bad handler must not lose the rest of the batch
                assert self._loop is not None
                self._loop.call_exception_handler(
                    {"message": "signaling callback failed", "exception": exc, "received": item}
                )

    def receive(self, timeout: float | None = None) -> Received | None:
        """Block until a packet arrives (None after ``timeout`` seconds). Not when attached."""
        _require(self._send_sock)
        if self._loop is not None:
            raise TransportError("receive() while attached to an event loop")
        if not self._receivers:
            raise TransportError("no receive sockets are open")
        deadline = None if timeout is None else self.clock() + timeout
        poller = select.poll()  # not select(): the agent may hold fds above FD_SETSIZE
        by_fd = {r.sock.fileno(): r for r in self._receivers}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        while not self._pending:
            remaining = None if deadline is None else max(0.0, deadline - self.clock())
            ready = poller.poll(None if remaining is None else remaining * 1000)
            for fd, _ in ready:
                self._pending.extend(self._read(by_fd[fd]))
            if not ready and remaining == 0.0:
                return None
        return self._pending.popleft()

    def _read(self, receiver: _Receiver) -> Iterator[Received]:
        """Packets one at a time, so the caller has handled each before the next is gated."""
        for _ in range(_READ_BATCH):  # bounded, so one busy socket cannot starve the loop
            try:
                size, ancillary, flags, address = receiver.sock.recvmsg_into(
                    [self._buffer], _ANCSIZE, _MSG_DONTWAIT
                )
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.warning("%s socket: %s", receiver.via, exc)
                break
            self.counters.received += 1
            if flags & _MSG_TRUNCATED:
                self.counters.malformed += 1
                continue
            item = self._process(receiver.via, bytes(self._buffer[:size]), ancillary, address)
            if item is not None:
                yield item

    def _process(
        self, via: str, data: bytes, ancillary: list[tuple[int, int, bytes]], address: tuple
    ) -> Received | None:
        dst = None
        ifindex = hop_limit = tclass = 0
        headers: list[tuple[int, bytes]] = []
        for level, kind, value in ancillary:
            if level != socket.IPPROTO_IPV6:
                continue
            if kind == socket.IPV6_PKTINFO and len(value) >= _PKTINFO.size:
                raw_dst, ifindex = _PKTINFO.unpack_from(value)
                dst = IPv6Address(raw_dst)
            elif kind == socket.IPV6_HOPLIMIT:
                hop_limit = _INT.unpack_from(value)[0]
            elif kind == socket.IPV6_TCLASS:
                tclass = _INT.unpack_from(value)[0]
            elif kind == socket.IPV6_DSTOPTS:
                headers.append((IPPROTO_DSTOPTS, value))
            elif kind == socket.IPV6_RTHDR:
                headers.append((IPPROTO_ROUTING, value))
        if dst is None:
            self.counters.malformed += 1
            return None
        # inet_pton: IPv6Address's own text parser is the costliest step of a read.
        src = IPv6Address(socket.inet_pton(socket.AF_INET6, address[0].partition("%")[0]))
        urgent = False
        if self.gate is not None:
            verdict = self.gate(via, src, data, headers)
            if verdict is Gate.DROP:
                self.counters.gated += 1
                return None
            urgent = verdict is Gate.URGENT
        proto = _PROTOCOLS[via]
        raw = rebuild_packet(proto, data, src, dst, hop_limit, tclass, headers)
        try:
            packet = wire.parse_packet(raw)
        except wire.DecodeError as exc:
            self.counters.malformed += 1
            log.debug("malformed packet from %s via %s: %s", src, via, exc)
            return None
        if not self._is_signaling(packet):
            self.counters.ignored += 1
            return None
        now = self.clock()
        if packet.headers and self._is_duplicate(packet, via, now):
            self.counters.duplicates += 1
            return None
        checksum_ok = packet.checksum_ok()
        if not checksum_ok:
            self.counters.bad_checksum += 1
        self.counters.delivered += 1
        return Received(packet, ifindex, hop_limit, checksum_ok, via, raw, now, urgent)

    def _is_signaling(self, packet: wire.Packet) -> bool:
        if self.receive_hao_data and packet.home_address_option is not None:
            return True
        if isinstance(packet.payload, bytes):  # other protocol, or a fragment
            return False
        if packet.protocol == IPPROTO_MH:
            return True
        return packet.payload.TYPE in self.icmpv6_types

    def _is_duplicate(self, packet: wire.Packet, via: str, now: float) -> bool:
        """True for a second copy of one transmission, reaching us by another path.

        Each receive path counts the copies it saw of a packet; a copy is a duplicate while
        its path has seen fewer than some other path. A sender repeating identical bytes is
        therefore still delivered every time, and copies may be read in any order.
        """
        path = via
        rh2 = packet.routing_header_type2
        if via == VIA_ROUTING and rh2 is not None and not rh2.segments_left:
            path = "routing-processed"  # a MIP6 kernel re-reads a packet after RH2 processing
        seen = self._seen
        while seen:  # expire; the dict is kept in order of last sight
            oldest, (stamp, _) = next(iter(seen.items()))
            if now - stamp <= self.dedup_window and len(seen) < _DEDUP_ENTRIES:
                break
            del seen[oldest]
        key = _dedup_key(packet)
        _, counts = seen.pop(key, (now, {}))
        seen[key] = (now, counts)
        mine = counts.get(path, 0)
        counts[path] = mine + 1
        return mine < max((n for p, n in counts.items() if p != path), default=0)


def _require(value: _T | None) -> _T:
    if value is None:
        raise TransportError("transport is not open")
    return value
