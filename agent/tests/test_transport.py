"""SignalingTransport and the nftables rules on real namespaces, with real packets.

Two namespaces, ``mn`` and ``ha``, share one veth link (2001:db8:2::/64). The mobile
node's home address 2001:db8:1::10 is assigned nowhere: it only travels in HAO and RH2.
Each namespace has an open transport for the whole module; tests read counter deltas.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv6Address
from pathlib import Path

import pytest
from mip6agent import wire
from mip6agent.io import nft
from mip6agent.io.transport import (
    ALL_ROUTERS,
    Received,
    SignalingTransport,
    TransportError,
    dad_neighbor_solicitation,
    multicast_mac,
    rebuild_packet,
    solicited_node,
)
from mip6agent.wire.constants import BU_FLAG_A, BU_FLAG_H, ICMPv6Type
from netns import address, ip, namespaces, run_in, veth
from tshark import tshark_json, write_pcap

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

COA = IPv6Address("2001:db8:2::10")
HA = IPv6Address("2001:db8:2::1")
HOA = IPv6Address("2001:db8:1::10")
MN_IF, HA_IF = "m6mn0", "m6ha0"
ND_TYPES = {133, 134, 135, 136}
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the block with this thread in namespace ``ns``; sockets made there stay there."""
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(target, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        yield
    finally:
        if _libc.setns(saved, _CLONE_NEWNET) != 0:  # never leave the test thread elsewhere
            os._exit(3)
        os.close(saved)
        os.close(target)


@dataclass
class Node:
    ns: str
    ifname: str
    ifindex: int
    mac: bytes
    transport: SignalingTransport


@dataclass
class Lab:
    mn: Node
    ha: Node


def _mac(ns: str, ifname: str) -> bytes:
    out = subprocess.run(
        ["ip", "-j", "-n", ns, "link", "show", "dev", ifname],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return bytes.fromhex(json.loads(out)[0]["address"].replace(":", ""))


def _sysctl(ns: str, *settings: str) -> None:
    run_in(ns, "sysctl", "-qw", *settings, check=True)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with namespaces("mn", "ha") as ns:
        for name in ns.values():
            # Quiet links: no DAD, no RS from the kernel, no ICMP error rate limit.
            _sysctl(
                name,
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.default.router_solicitations=0",
                "net.ipv6.icmp.ratelimit=0",
            )
        veth(ns["mn"], MN_IF, ns["ha"], HA_IF)
        address(ns["mn"], MN_IF, f"{COA}/64")
        address(ns["ha"], HA_IF, f"{HA}/64")
        macs = {"mn": _mac(ns["mn"], MN_IF), "ha": _mac(ns["ha"], HA_IF)}
        # Static neighbours: no NS/NA of the kernel's own in the way of what we count.
        for role, peer, ifname in (("mn", HA, MN_IF), ("ha", COA, HA_IF)):
            other = macs["ha" if role == "mn" else "mn"].hex(":")
            ip("-n", ns[role], "neigh", "replace", str(peer), "lladdr", other, "dev", ifname)
        nodes = {}
        try:
            for role, ifname in (("mn", MN_IF), ("ha", HA_IF)):
                with inside(ns[role]):
                    transport = SignalingTransport().open()
                    ifindex = socket.if_nametoindex(ifname)
                nodes[role] = Node(ns[role], ifname, ifindex, macs[role], transport)
            yield Lab(nodes["mn"], nodes["ha"])
        finally:
            for node in nodes.values():
                node.transport.close()


def collect(node: Node, duration: float = 0.3, keep_nd: bool = False) -> list[Received]:
    """Everything the node's transport delivers within ``duration`` seconds."""
    items = []
    deadline = time.monotonic() + duration
    while (remaining := deadline - time.monotonic()) > 0:
        item = node.transport.receive(remaining)
        if item is None:
            break
        icmp_type = getattr(item.packet.payload, "TYPE", None)
        if keep_nd or item.packet.protocol != 58 or icmp_type not in ND_TYPES:
            items.append(item)
    return items


def drain(*nodes: Node) -> None:
    for node in nodes:
        collect(node, 0.05, keep_nd=True)


class Capture:
    """AF_PACKET capture of Ethernet frames on one interface of a namespace."""

    def __init__(self, node: Node) -> None:
        with inside(node.ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            self.sock.bind((node.ifname, 0))
        self.sock.setblocking(False)

    def frames(self, settle: float = 0.2) -> list[bytes]:
        time.sleep(settle)
        out = []
        while True:
            try:
                out.append(self.sock.recv(65535))
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.sock.close()


@contextmanager
def capture(node: Node) -> Iterator[Capture]:
    cap = Capture(node)
    try:
        yield cap
    finally:
        cap.close()


def parameter_problems(frames: list[bytes]) -> list[tuple[int, int]]:
    """(code, pointer) of every ICMPv6 Parameter Problem in Ethernet ``frames``."""
    found = []
    for frame in frames:
        if frame[12:14] != b"\x86\xdd" or len(frame) < 62:
            continue
        packet = frame[14:]
        if packet[6] == 58 and packet[40] == ICMPv6Type.PARAMETER_PROBLEM:
            found.append((packet[41], struct.unpack_from("!I", packet, 44)[0]))
    return found


def with_header(plain: bytes, proto: int, header: bytes) -> bytes:
    """Put one extension header (its Next Header octet is filled in) after the IPv6 header."""
    payload = bytes((plain[6],)) + header[1:] + plain[40:]
    return plain[:4] + struct.pack("!HB", len(payload), proto) + plain[7:40] + payload


def mh_with_padding_dstopts(src: IPv6Address, dst: IPv6Address, message: object) -> bytes:
    """IPv6 | Destination Options (PadN only) | MH: a header the kernel handles itself."""
    return with_header(wire.build_packet(src, dst, message), 60, bytes((0, 0, 1, 4, 0, 0, 0, 0)))


# --- receiving: which socket gets what ----------------------------------------------------

BU = wire.BindingUpdate(7, BU_FLAG_A | BU_FLAG_H, 100)
CASES = {
    # name: (packet builder (coa, ha, hoa) -> bytes, sender, socket expected)
    "bu_with_hao": (lambda: wire.build_packet(COA, HA, BU, home_address=HOA), "mn", "dstopts"),
    "plain_bu": (lambda: wire.build_packet(COA, HA, BU), "mn", "mh"),
    "ba_with_rh2": (
        lambda: wire.build_packet(HA, COA, wire.BindingAck(0, 0, 7, 100), routing_home_address=HOA),
        "ha",
        "routing",
    ),
    "be": (lambda: wire.build_packet(HA, COA, wire.BindingError(1, HOA)), "ha", "mh"),
    "haad_request": (lambda: wire.build_packet(COA, HA, wire.HAADRequest(11)), "mn", "icmpv6"),
    "haad_reply": (lambda: wire.build_packet(HA, COA, wire.HAADReply(11, [HA])), "ha", "icmpv6"),
    "mps_with_hao": (
        lambda: wire.build_packet(COA, HA, wire.MobilePrefixSolicitation(12), home_address=HOA),
        "mn",
        "dstopts",
    ),
    "mpa_with_rh2": (
        lambda: wire.build_packet(
            HA,
            COA,
            wire.MobilePrefixAdvertisement(
                12, 0, [wire.PrefixInformation(64, 0xC0, 3600, 1800, IPv6Address("2001:db8:1::"))]
            ),
            routing_home_address=HOA,
        ),
        "ha",
        "routing",
    ),
    "bu_with_rh2_and_hao": (
        lambda: wire.build_packet(COA, HA, BU, home_address=HOA, routing_home_address=HOA),
        "mn",
        "routing",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_signaling_packet_is_delivered_once_by_the_expected_socket(
    lab: Lab, name: str
) -> None:
    build, sender_role, via = CASES[name]
    sender = lab.mn if sender_role == "mn" else lab.ha
    receiver = lab.ha if sender_role == "mn" else lab.mn
    drain(lab.mn, lab.ha)
    packet = build()
    sender.transport.send(packet)
    items = collect(receiver)
    assert [item.via for item in items] == [via]
    got = items[0]
    sent = wire.parse_packet(packet)
    assert got.data == packet  # rebuilt exactly as it was on the wire
    assert got.packet.payload == sent.payload
    assert got.packet.home_address_option == sent.home_address_option
    assert got.packet.routing_header_type2 == sent.routing_header_type2
    assert got.checksum_ok
    assert got.ifindex == receiver.ifindex
    assert got.dst == sent.dst and got.src == sent.src
    assert got.hop_limit == 64


def test_bu_with_hao_decodes_with_the_same_fields(lab: Lab) -> None:
    drain(lab.ha)
    options = [wire.MobileNodeIdentifier(b"mn1@example.org", 1)]
    bu = wire.BindingUpdate(4242, BU_FLAG_A | BU_FLAG_H, 75, options)
    lab.mn.transport.send(wire.build_packet(COA, HA, bu, home_address=HOA))
    (got,) = collect(lab.ha)
    assert isinstance(got.packet.payload, wire.BindingUpdate)
    assert got.packet.payload == bu
    assert got.packet.payload.home_registration and got.packet.payload.ack
    assert got.packet.home_address_option == HOA
    assert got.packet.src == COA and got.dst == HA
    assert got.checksum_ok and got.ifindex == lab.ha.ifindex


def test_ba_with_rh2_reaches_the_mobile_node_once(lab: Lab) -> None:
    drain(lab.mn)
    ba = wire.BindingAck(0, 0, 4242, 75)
    lab.ha.transport.send(wire.build_packet(HA, COA, ba, routing_home_address=HOA))
    (got,) = collect(lab.mn)
    assert got.packet.payload == ba
    rh2 = got.packet.routing_header_type2
    assert rh2 is not None and rh2.home_address == HOA and rh2.segments_left == 1
    assert got.dst == COA and got.ifindex == lab.mn.ifindex and got.checksum_ok


def test_copy_on_two_sockets_is_delivered_once(lab: Lab) -> None:
    # A PadN-only Destination Options header: the kernel passes it, so the packet reaches
    # both the protocol 60 socket and the MH socket (the latter with IPV6_DSTOPTS data).
    drain(lab.ha)
    before = lab.ha.transport.counters.duplicates
    packet = mh_with_padding_dstopts(COA, HA, BU)
    lab.mn.transport.send(packet)
    items = collect(lab.ha)
    assert len(items) == 1
    assert items[0].data == packet
    assert lab.ha.transport.counters.duplicates == before + 1


def test_other_routing_types_reach_only_the_mh_socket(lab: Lab) -> None:
    # Routing type 253 (experimental) with segments left 0: the kernel skips it and hands
    # the MH to the MH socket, with the header as IPV6_RTHDR data; the BPF filter keeps
    # the copy out of the protocol 43 socket.
    drain(lab.ha)
    packet = with_header(wire.build_packet(COA, HA, BU), 43, bytes((0, 0, 253, 0, 0, 0, 0, 0)))
    received = lab.ha.transport.counters.received
    lab.mn.transport.send(packet)
    (got,) = collect(lab.ha)
    assert got.via == "mh" and got.data == packet
    (header,) = got.packet.headers
    assert isinstance(header, wire.OtherExtensionHeader) and header.routing_type == 253
    assert lab.ha.transport.counters.received == received + 1


def test_identical_packets_on_one_path_are_all_delivered(lab: Lab) -> None:
    # Dedup removes copies of one transmission, not a sender's repeats.
    drain(lab.ha)
    packet = wire.build_packet(COA, HA, wire.BindingUpdate(99, 0, 1), home_address=HOA)
    lab.mn.transport.send(packet)
    lab.mn.transport.send(packet)
    assert [item.via for item in collect(lab.ha)] == ["dstopts", "dstopts"]


def test_data_packets_with_a_home_address_option_are_not_delivered(lab: Lab) -> None:
    drain(lab.ha)
    udp = wire.build_packet(COA, HA, wire.HAADRequest(1), home_address=HOA)
    # Same HAO packet, but carrying UDP: the socket filter keeps it out of userspace.
    udp = udp[:40] + bytes((17,)) + udp[41:64] + struct.pack("!HHHH", 9, 9, 8, 0)
    udp = udp[:4] + struct.pack("!H", len(udp) - 40) + udp[6:]
    received = lab.ha.transport.counters.received
    lab.mn.transport.send(udp)
    assert collect(lab.ha) == []
    assert lab.ha.transport.counters.received == received


def test_a_correspondent_transport_delivers_data_packets_with_a_home_address_option(
    lab: Lab,
) -> None:
    """receive_hao_data (the correspondent node): UDP with a HAO reaches the caller, with
    the HAO; the same datagram without one still does not."""
    with inside(lab.ha.ns):
        transport = SignalingTransport(receive_hao_data=True, receive_icmpv6=False).open()
    try:
        drain(lab.ha)
        udp = wire.build_packet(COA, HA, wire.HAADRequest(1), home_address=HOA)
        udp = udp[:40] + bytes((17,)) + udp[41:64] + struct.pack("!HHHH", 9, 9, 8, 0)
        udp = udp[:4] + struct.pack("!H", len(udp) - 40) + udp[6:]
        plain = udp[:6] + bytes((17,)) + udp[7:40] + udp[64:]
        plain = plain[:4] + struct.pack("!H", len(plain) - 40) + plain[6:]
        for packet in (udp, plain):
            lab.mn.transport.send(packet)
        got = []
        deadline = time.monotonic() + 1.0
        while not got and time.monotonic() < deadline:
            item = transport.receive(0.3)
            if item is not None:
                got.append(item)
        assert [(g.via, g.packet.protocol, g.packet.home_address_option) for g in got] == [
            ("dstopts", 17, HOA)
        ]
        assert transport.receive(0.2) is None
    finally:
        transport.close()
    drain(lab.ha)


# --- malformed input and checksums --------------------------------------------------------


def test_malformed_packets_are_counted_not_raised(lab: Lab) -> None:
    drain(lab.ha)
    counters = lab.ha.transport.counters
    before = counters.malformed
    good = wire.build_packet(COA, HA, BU)
    bad_length = good[:41] + bytes((good[41] + 2,)) + good[42:]  # MH length past the end
    hao = wire.build_packet(COA, HA, BU, home_address=HOA)
    bad_hao = hao[:65] + bytes((hao[65] + 1,)) + hao[66:]  # MH length in a HAO packet
    bad_option = hao[:47] + bytes((8,)) + hao[48:]  # HAO option length 8, not 16
    for packet in (bad_length, bad_hao, bad_option):
        lab.mn.transport.send(packet)
    lab.mn.transport.send(good)
    items = collect(lab.ha)
    assert [item.data for item in items] == [good]  # still delivering afterwards
    assert counters.malformed == before + 3


def test_bad_checksums_are_delivered_and_counted(lab: Lab) -> None:
    drain(lab.ha)
    counters = lab.ha.transport.counters
    before = counters.bad_checksum
    plain = bytearray(wire.build_packet(COA, HA, BU))
    plain[44] ^= 0xFF
    # Checksummed over the care-of address, the mistake the home-address rule forbids.
    mh = wire.encode_mh(BU, COA, HA)
    hao = wire.build_packet(COA, HA, BU, home_address=HOA)
    wrong_rule = hao[: len(hao) - len(mh)] + mh
    lab.mn.transport.send(bytes(plain))
    lab.mn.transport.send(wrong_rule)
    items = collect(lab.ha)
    assert sorted(item.via for item in items) == ["dstopts", "mh"]
    assert not any(item.checksum_ok for item in items)
    assert counters.bad_checksum == before + 2


# --- sending --------------------------------------------------------------------------------


def test_link_local_destination_needs_and_uses_an_interface(lab: Lab) -> None:
    drain(lab.ha)
    ha_ll = lab.ha.transport.interface_info(lab.ha.ifindex).link_local
    mn_ll = lab.mn.transport.interface_info(lab.mn.ifindex).link_local
    assert ha_ll is not None and mn_ll is not None
    packet = wire.build_packet(mn_ll, ha_ll, BU)
    with pytest.raises(ValueError, match="interface"):
        lab.mn.transport.send(packet)
    lab.mn.transport.send(packet, ha_ll, lab.mn.ifindex)
    (got,) = collect(lab.ha)
    assert got.dst == ha_ll and got.src == mn_ll and got.ifindex == lab.ha.ifindex


def test_interface_info_comes_from_netlink(lab: Lab) -> None:
    info = lab.ha.transport.interface_info(lab.ha.ifindex)
    assert info.name == HA_IF and info.mac == lab.ha.mac
    assert info.link_local is not None and info.link_local.is_link_local
    assert not info.link_local_optimistic
    with pytest.raises(OSError):
        lab.ha.transport.interface_info(999_999)


def test_router_solicitation_reaches_a_listener_on_all_routers(lab: Lab) -> None:
    drain(lab.ha)
    lab.mn.transport.send_router_solicitation(lab.mn.ifindex)
    assert collect(lab.ha, keep_nd=True) == []  # not a router: not in ff02::2
    lab.ha.transport.join_group(ALL_ROUTERS, lab.ha.ifindex)
    try:
        lab.mn.transport.send_router_solicitation(lab.mn.ifindex)
        (got,) = collect(lab.ha, keep_nd=True)
    finally:
        lab.ha.transport.leave_group(ALL_ROUTERS, lab.ha.ifindex)
    assert isinstance(got.packet.payload, wire.RouterSolicitation)
    assert got.hop_limit == 255 and got.dst == ALL_ROUTERS and got.via == "icmpv6"
    mn_info = lab.mn.transport.interface_info(lab.mn.ifindex)
    assert got.src == mn_info.link_local
    (option,) = got.packet.payload.options
    assert option.address == lab.mn.mac


def test_router_solicitation_before_the_link_local_address_is_usable(lab: Lab) -> None:
    # A fresh link with DAD on: the link-local is tentative (or absent) for a second.
    ns_mn, ns_ha = lab.mn.ns, lab.ha.ns
    _sysctl(ns_mn, "net.ipv6.conf.default.accept_dad=1")
    try:
        veth(ns_mn, "m6mn1", ns_ha, "m6ha1")
        ifindex = int(
            run_in(ns_mn, "cat", "/sys/class/net/m6mn1/ifindex", capture_output=True).stdout
        )
        packet = lab.mn.transport.send_router_solicitation(ifindex)
    finally:
        _sysctl(ns_mn, "net.ipv6.conf.default.accept_dad=0")
        ip("-n", ns_mn, "link", "del", "m6mn1")
    rs = wire.parse_packet(packet)
    assert rs.src == IPv6Address("::") and rs.hop_limit == 255
    assert isinstance(rs.payload, wire.RouterSolicitation) and rs.payload.options == []


def test_nd_packets_are_well_formed_on_the_wire(lab: Lab, tmp_path: Path) -> None:
    drain(lab.mn)
    ha_info = lab.ha.transport.interface_info(lab.ha.ifindex)
    with capture(lab.mn) as cap:
        lab.ha.transport.send_unsolicited_na(lab.ha.ifindex, HOA)
        lab.ha.transport.send_dad_ns(lab.ha.ifindex, HOA)
        frames = [f for f in cap.frames() if f[12:14] == b"\x86\xdd" and f[20] == 58]
        frames = [f for f in frames if f[54] in (135, 136)]
    packets = tshark_json(write_pcap(tmp_path / "nd.pcap", frames, linktype=1))
    by_type = {p["icmpv6.type"][0]: p for p in packets}
    na, ns = by_type["136"], by_type["135"]

    assert na["eth.src"] == [lab.ha.mac.hex(":")]
    assert na["eth.dst"] == ["33:33:00:00:00:01"]
    assert na["ipv6.src"] == [str(ha_info.link_local)] and na["ipv6.dst"] == ["ff02::1"]
    assert na["ipv6.hlim"] == ["255"]
    assert na["icmpv6.nd.na.target_address"] == [str(HOA)]
    assert na["icmpv6.nd.na.flag.o"] == ["1"]
    assert na["icmpv6.nd.na.flag.s"] == ["0"] and na["icmpv6.nd.na.flag.r"] == ["0"]
    assert na["icmpv6.opt.type"] == ["2"]  # Target Link-layer Address
    assert na["icmpv6.opt.linkaddr"] == [lab.ha.mac.hex(":")]
    assert na["icmpv6.checksum.status"] == ["1"]

    group = solicited_node(HOA)
    assert str(group) == "ff02::1:ff00:10"
    assert ns["eth.dst"] == ["33:33:ff:00:00:10"]
    assert ns["ipv6.src"] == ["::"] and ns["ipv6.dst"] == [str(group)]
    assert ns["ipv6.hlim"] == ["255"]
    assert ns["icmpv6.nd.ns.target_address"] == [str(HOA)]
    assert "icmpv6.opt.type" not in ns
    assert ns["icmpv6.checksum.status"] == ["1"]

    # The mobile node's own transport sees the NA to all-nodes, with hop limit 255.
    (got,) = [r for r in collect(lab.mn, keep_nd=True) if r.packet.payload.TYPE == 136]
    assert got.hop_limit == 255 and got.packet.payload.override


def test_join_solicited_node_receives_dad_for_a_foreign_target(lab: Lab) -> None:
    target = IPv6Address("2001:db8:1::77")  # the home agent does not own it
    drain(lab.ha)
    lab.mn.transport.send_dad_ns(lab.mn.ifindex, target)
    assert collect(lab.ha, keep_nd=True) == []
    lab.ha.transport.join_solicited_node(target, lab.ha.ifindex)
    lab.ha.transport.join_solicited_node(target, lab.ha.ifindex)  # idempotent
    try:
        lab.mn.transport.send_dad_ns(lab.mn.ifindex, target)
        (got,) = collect(lab.ha, keep_nd=True)
    finally:
        lab.ha.transport.leave_solicited_node(target, lab.ha.ifindex)
    assert got.packet.payload == wire.NeighborSolicitation(target)
    assert got.src == IPv6Address("::") and got.dst == solicited_node(target)
    assert got.hop_limit == 255 and got.ifindex == lab.ha.ifindex
    lab.ha.transport.leave_solicited_node(target, lab.ha.ifindex)  # idempotent
    lab.mn.transport.send_dad_ns(lab.mn.ifindex, target)
    assert collect(lab.ha, keep_nd=True) == []


def test_dad_probe_bytes() -> None:
    packet = wire.parse_packet(dad_neighbor_solicitation(HOA))
    assert packet.src == IPv6Address("::") and packet.dst == IPv6Address("ff02::1:ff00:10")
    assert packet.hop_limit == 255 and packet.checksum_ok()
    assert multicast_mac(packet.dst) == bytes.fromhex("3333ff000010")


# --- asyncio --------------------------------------------------------------------------------


def test_attach_delivers_through_the_event_loop(lab: Lab) -> None:
    drain(lab.ha)
    seen: list[Received] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def on_packet(item: Received) -> None:
            if item.packet.protocol == 135:
                seen.append(item)
            if len(seen) == 2 and not done.done():
                done.set_result(None)

        lab.ha.transport.attach(loop, on_packet)
        try:
            with pytest.raises(TransportError):
                lab.ha.transport.receive(0)
            lab.mn.transport.send(wire.build_packet(COA, HA, BU, home_address=HOA))
            lab.mn.transport.send(wire.build_packet(COA, HA, BU))
            await asyncio.wait_for(done, 2)
        finally:
            lab.ha.transport.detach()

    asyncio.run(main())
    assert sorted(item.via for item in seen) == ["dstopts", "mh"]
    assert lab.ha.transport.receive(0) is None  # usable again after detach


def test_close_releases_everything_and_is_repeatable(lab: Lab) -> None:
    with inside(lab.ha.ns):
        transport = SignalingTransport()
        with transport:
            fds = [r.sock.fileno() for r in transport._receivers]
            assert len(fds) == 4 and transport.is_open
            transport.join_solicited_node(HOA, lab.ha.ifindex)
    assert not transport.is_open and transport._receivers == []
    transport.close()
    with pytest.raises(TransportError):
        transport.send(b"")


# --- nftables: the kernel's own Parameter Problems ---------------------------------------


def _exchange_hao_and_rh2(lab: Lab) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Send BU+HAO to the HA and BA+RH2 to the MN; return the errors each sender got."""
    drain(lab.mn, lab.ha)
    with capture(lab.mn) as at_mn, capture(lab.ha) as at_ha:
        lab.mn.transport.send(wire.build_packet(COA, HA, BU, home_address=HOA))
        ba = wire.BindingAck(0, 0, 7, 100)
        lab.ha.transport.send(wire.build_packet(HA, COA, ba, routing_home_address=HOA))
        errors_at_mn = parameter_problems(at_mn.frames())
        errors_at_ha = parameter_problems(at_ha.frames(0))
    # The packets were delivered to the agents either way.
    assert [r.via for r in collect(lab.ha, 0.1)] == ["dstopts"]
    assert [r.via for r in collect(lab.mn, 0.1)] == ["routing"]
    return [e for e in errors_at_mn if e[0] == 2], [e for e in errors_at_ha if e[0] == 0]


def _tables(ns: str) -> str:
    return run_in(ns, "nft", "list", "tables", capture_output=True, check=True).stdout


def test_nft_rules_suppress_only_the_stacks_parameter_problems(lab: Lab) -> None:
    # Without the rules the stack answers: code 2 at the HAO, code 0 at the routing type.
    hao_errors, rh2_errors = _exchange_hao_and_rh2(lab)
    assert hao_errors == [(2, 46)] and rh2_errors == [(0, 42)]
    try:
        for node in (lab.mn, lab.ha):
            with inside(node.ns):
                nft.install()
                nft.install()  # idempotent: replaced, not duplicated
        assert _tables(lab.ha.ns).count("mip6agent") == 1
        assert _exchange_hao_and_rh2(lab) == ([], [])
        with inside(lab.ha.ns):
            assert nft.counters() == {"hao": 1, "rh2": 0, "tunnelled_in": 0}
            assert nft.is_installed()
        with inside(lab.mn.ns):
            assert nft.counters() == {"hao": 0, "rh2": 1, "tunnelled_in": 0}
        # Other Parameter Problems still leave: an unknown next header (code 1).
        drain(lab.mn)
        with capture(lab.mn) as at_mn:
            probe = bytearray(wire.build_packet(COA, HA, wire.HAADRequest(1)))
            probe[6] = 253  # experimental protocol nobody listens for
            lab.mn.transport.send(bytes(probe))
            assert [e[0] for e in parameter_problems(at_mn.frames())] == [1]
    finally:
        for node in (lab.mn, lab.ha):
            with inside(node.ns):
                nft.remove()
                nft.remove()  # idempotent
    assert "mip6agent" not in _tables(lab.ha.ns)
    assert "mip6agent" not in _tables(lab.mn.ns)
    with inside(lab.ha.ns):
        assert not nft.is_installed() and nft.counters() == {}
    hao_errors, rh2_errors = _exchange_hao_and_rh2(lab)
    assert hao_errors == [(2, 46)] and rh2_errors == [(0, 42)]


def test_nft_context_manager_and_errors(lab: Lab) -> None:
    with inside(lab.ha.ns):
        with nft.ParameterProblemSuppression() as rules:
            assert nft.is_installed()
            assert rules.counters() == {"hao": 0, "rh2": 0, "tunnelled_in": 0}
        assert not nft.is_installed()
        with pytest.raises(nft.NftError, match="not found"):
            nft.install(nft="/nonexistent/nft")
        impossible = nft.SuppressedError("bad", 999, 46, 60, 0xC9)  # code is one octet
        with pytest.raises(nft.NftError, match="failed"):
            nft.install(suppressed=(impossible,))
        assert not nft.is_installed()


def test_ruleset_document_shape() -> None:
    doc = nft.ruleset()["nftables"]
    assert [next(iter(cmd)) for cmd in doc[:3]] == ["add", "delete", "add"]
    rules = [cmd["add"]["rule"] for cmd in doc if "rule" in cmd.get("add", {})]
    assert [rule["comment"] for rule in rules] == ["hao", "rh2", "tunnelled_in"]
    quoted = rules[0]["expr"][4]["match"]
    assert quoted["left"]["payload"] == {"base": "th", "offset": 432, "len": 8}
    assert quoted["right"] == 0xC9


# --- rebuilding packets that a MIP6 kernel has processed (pure) --------------------------


def test_rebuild_undoes_a_mip6_kernels_address_swaps() -> None:
    ba = wire.build_packet(HA, COA, wire.BindingAck(0, 0, 1, 1), routing_home_address=HOA)
    bu = wire.build_packet(COA, HA, BU, home_address=HOA)
    # What a MIP6 kernel hands an MH socket: addresses swapped, headers as ancillary data.
    rh2_seen = bytearray(ba[40:64])
    rh2_seen[3] = 0
    rh2_seen[8:24] = COA.packed
    rebuilt = rebuild_packet(135, ba[64:], HA, HOA, 64, 0, [(43, bytes(rh2_seen))])
    assert rebuilt == ba
    hao_seen = bytearray(bu[40:64])
    hao_seen[8:24] = COA.packed
    rebuilt = rebuild_packet(135, bu[64:], HOA, HA, 64, 0, [(60, bytes(hao_seen))])
    assert rebuilt == bu
