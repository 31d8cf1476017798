"""The data plane on a real kernel: probing, tunnels on the wire, handover, reconciliation.

Both backends run in the standard topology (tests/topology.py) and real ICMPv6 echo and
TCP go through them; captures on the router check the packets are plain IPv6-in-IPv6.
The real-kernel tests are parametrized over ``seg6`` and ``ip6tnl`` and skip a backend the
running kernel lacks (found by probing inside a test namespace). The development machines
have no CONFIG_IPV6_TUNNEL, so there the ip6tnl variants skip; ``make vm-test``
(lab/kernel-vm/run.sh) runs them on a Debian distro kernel under qemu. Without ip6tnl, a
fake kernel still records what the backend would send, the messages are checked byte by
byte, and the backend must fail cleanly.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

import pytest
from agents import wait_until
from dataplane_probe import require_dataplane
from mip6agent.io.dataplane import (
    RTPROT_MIP6,
    BackendUnavailableError,
    Capabilities,
    DataPlaneConfig,
    DataPlaneError,
    Ip6tnlDataPlane,
    Seg6DataPlane,
    probe,
    select_backend,
)
from mip6agent.io.dataplane.bpf_tunnel import BpfTunnelDataPlane
from mip6agent.io.dataplane.common import KernelBackend
from mip6agent.io.dataplane.netlink import (
    _RTMSG,
    IP6_TNL_F_IGN_ENCAP_LIMIT,
    IP6_TNL_F_MIP6_DEV,
    NTF_PROXY,
    RT_TABLE_LOCAL,
    RT_TABLE_MAIN,
    RTM_GETNEIGH,
    RTM_GETROUTE,
    Address,
    Ip6Tunnel,
    Netlink,
    ProxyEntry,
    Route,
    Rule,
    Seg6Encap,
    Seg6LocalEncap,
    ndmsg,
    parse_proxy,
    parse_route,
    parse_routes,
    rtmsg,
    tunnel_message,
)
from topology import CN_ADDRESS, HA_ADDRESS, LINKS, Frame, IPv6Header, Topology, make_topology
from tshark import tshark_json, write_pcap

__all__ = ["make_topology"]  # the fixture, imported for pytest

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
HOME = "eth0"
LINKTYPE_ETHERNET = 1
OTHER_HOA = IPv6Address("2001:db8:1::200")
OTHER_COA = IPv6Address("2001:db8:3::200")
BACKENDS: dict[str, type[KernelBackend]] = {
    "seg6": Seg6DataPlane,
    "ip6tnl": Ip6tnlDataPlane,
    "bpf": BpfTunnelDataPlane,
}


# --- helpers ---------------------------------------------------------------------------


@pytest.fixture(params=list(BACKENDS))
def kind(request: pytest.FixtureRequest) -> str:
    """The backend a real-kernel test runs on (skipped without it: ``require_dataplane``)."""
    return str(request.param)


def backends(topo: Topology, kind: str = "seg6") -> tuple[Any, Any]:
    """Backends of ``kind`` built inside the HA and MN namespaces (closed with the topology)."""
    require_dataplane(kind)
    backend = BACKENDS[kind]
    return topo.in_node("ha", backend), topo.in_node("mn", backend)


def register(topo: Topology, ha: Any, mn: Any) -> None:
    """What a home registration does to the data plane, at the MN's current CoA."""
    ha.ha_setup(HOME, HA_ADDRESS)
    ha.ha_bind(topo.hoa, topo.coa, HA_ADDRESS, HOME)
    mn.mn_attach(topo.hoa, topo.coa, HA_ADDRESS, HOME)


class KernelView:
    """Our objects in one node's kernel, read over netlink."""

    def __init__(self, topo: Topology, node: str) -> None:
        with topo.inside(node):
            nl = Netlink()
            try:
                self.routes = [r for r in nl.routes() if r.proto == RTPROT_MIP6]
                self.all_rules = nl.rules()
                self.proxies = nl.proxies()
                lo = nl.ifindex("lo")
                self.lo = [a.address for a in nl.addresses() if a.ifindex == lo]
                self.tunsrc = nl.tunsrc()
                # Our ip6tnl devices (the kernel's own ip6tnl0 is not ours).
                self.tunnels = [t for t in nl.tunnels() if t.flags & IP6_TNL_F_MIP6_DEV]
                pins = bpf_pins()
            finally:
                nl.close()
        self.rules = [r for r in self.all_rules if r.proto == RTPROT_MIP6]
        # The eBPF tunnel's maps, read with bpftool: (own, peer or None) it decapsulates,
        # and the outer source it uses (None: no maps in this namespace).
        self.decaps = {(own, peer) for own, peer in _bpftool_keys(pins / "decap")}
        sources = [value for _key, value in _bpftool_dump(pins / "tunsrc")]
        self.bpf_tunsrc = IPv6Address(bytes(sources[0][:16])) if sources else None

    def tunnels_to(self, remote: IPv6Address) -> list[Ip6Tunnel]:
        return [t for t in self.tunnels if t.remote == remote]

    def routes_to(self, address: IPv6Address) -> list[Route]:
        return [r for r in self.routes if r.dst.network_address == address]

    def local_rules(self) -> list[Rule]:
        return [r for r in self.all_rules if r.table == RT_TABLE_LOCAL]


def bpf_pins() -> Path:
    """The maps directory of the calling namespace's eBPF tunnel (bpf_tunnel.py's layout:
    tunnel-c<netns cookie>, under MIP6AGENT_BPF_PINS or /sys/fs/bpf/mip6agent)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        cookie = struct.unpack("=Q", sock.getsockopt(socket.SOL_SOCKET, 71, 8))[0]
    root = Path(os.environ.get("MIP6AGENT_BPF_PINS") or "/sys/fs/bpf/mip6agent")
    return root / f"tunnel-c{cookie}" / "maps"


def _bpftool_dump(pin: Path) -> list[tuple[bytes, bytes]]:
    """(key, value) bytes of a pinned map, from ``bpftool -j map dump`` ([] if no pin)."""
    if not pin.exists():
        return []
    out = subprocess.run(
        ["bpftool", "-j", "map", "dump", "pinned", str(pin)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [
        (bytes(int(b, 16) for b in e["key"]), bytes(int(b, 16) for b in e["value"]))
        for e in json.loads(out)
    ]


def _bpftool_keys(pin: Path) -> list[tuple[IPv6Address, IPv6Address | None]]:
    pairs = []
    for key, _value in _bpftool_dump(pin):
        own, peer = IPv6Address(key[:16]), IPv6Address(key[16:32])
        pairs.append((own, None if peer == IPv6Address("::") else peer))
    return pairs


class LinkEvents:
    """Link notifications (RTM_NEWLINK/DELLINK) in one node from now on: a churn detector.

    Changing an ip6tnl device's parameters, even to the same values, notifies; so an
    idempotent call must leave no notification for our devices.
    """

    def __init__(self, topo: Topology, node: str) -> None:
        with topo.inside(node):
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._sock.bind((0, 1))  # RTMGRP_LINK
        self._sock.setblocking(False)

    def indexes(self) -> list[int]:
        """Interface indexes of the notifications so far; closes the listener."""
        found = []
        with self._sock:
            while True:
                try:
                    data = self._sock.recv(1 << 16)
                except BlockingIOError:
                    break
                offset = 0
                while offset + 16 <= len(data):
                    length, kind = struct.unpack_from("=IH", data, offset)
                    if kind in (16, 17) and length >= 24:  # nlmsghdr, then ifinfomsg
                        found.append(struct.unpack_from("=i", data, offset + 20)[0])
                    offset += max((length + 3) & ~3, 16)
        return found


def decapsulating_from(view: KernelView, kind: str) -> set[IPv6Address]:
    """The CoAs a home agent decapsulates from: seg6 routes `from <CoA>`, ip6tnl devices."""
    if kind == "seg6":
        return {r.src.network_address for r in view.routes_to(HA_ADDRESS) if r.src}
    if kind == "bpf":
        assert view.routes_to(HA_ADDRESS) == [] and view.tunnels == []
        return {peer for own, peer in view.decaps if own == HA_ADDRESS and peer is not None}
    assert view.routes_to(HA_ADDRESS) == []
    return {t.remote for t in view.tunnels if t.local == HA_ADDRESS}


def tunnelled(packets: list[tuple[Frame, IPv6Header]]) -> list[tuple[IPv6Header, IPv6Header]]:
    pairs = []
    for _frame, outer in packets:
        inner = outer.inner()
        if inner is not None:
            pairs.append((outer, inner))
    return pairs


def icmp_type(header: IPv6Header) -> int:
    return header.payload[0] if header.next_header == 58 and header.payload else -1


def kernel_config() -> dict[str, str] | None:
    """The running kernel's build options: /proc/config.gz, else the distro's /boot copy."""
    path = Path("/proc/config.gz")
    distro = Path("/boot") / f"config-{os.uname().release}"
    if path.exists():
        text = gzip.decompress(path.read_bytes()).decode()
    elif distro.exists():
        text = distro.read_text()
    else:
        return None
    config = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, value = line.split("=", 1)
            config[key] = value
    return config


# --- probing and selection -------------------------------------------------------------


@needs_root
def test_probe_reports_what_the_kernel_really_has(make_topology: Any) -> None:
    topo = make_topology()
    with topo.inside("ha"):
        caps = probe()
    config = kernel_config()
    if config is None:
        pytest.skip("no /proc/config.gz or /boot/config-<release> to compare the probe with")

    def built(option: str) -> bool:
        return config.get(option) in ("y", "m")

    assert caps.seg6 == (config.get("CONFIG_IPV6_SEG6_LWTUNNEL") == "y"), caps.describe()
    # The subtrees probe is a source-specific seg6 route: without seg6 it cannot say yes.
    subtrees = config.get("CONFIG_IPV6_SUBTREES") == "y" and caps.seg6
    assert caps.subtrees == subtrees, caps.describe()
    assert caps.ip6tnl == built("CONFIG_IPV6_TUNNEL"), caps.describe()
    assert caps.esp == built("CONFIG_INET6_ESP"), caps.describe()
    assert caps.mip6 == built("CONFIG_IPV6_MIP6"), caps.describe()
    # On the development machines (KERNEL.md) the negatives are the kernel's own words.
    if not caps.ip6tnl:
        assert "Unknown device type" in caps.reasons["ip6tnl"]
    for name in ("esp", "mip6"):
        if not getattr(caps, name):
            assert "Requested type not found" in caps.reasons[name]
    # The probe leaves nothing behind.
    assert topo.ip("ha", "-6", "route", "show", "table", "all", "proto", "86") == ""
    assert len(topo.ip("ha", "-6", "rule").splitlines()) == 2
    assert topo.ip("ha", "xfrm", "state") == ""
    assert "mip6p" not in topo.ip("ha", "link")


@needs_root
def test_select_backend_picks_seg6_here_and_explains_refusals(make_topology: Any) -> None:
    topo = make_topology()
    with topo.inside("ha"):
        caps = probe()
        if caps.seg6:
            backend = select_backend("auto", capabilities=caps)
            assert isinstance(backend, Seg6DataPlane)
            backend.close()
    if not caps.ip6tnl:
        with pytest.raises(BackendUnavailableError) as refused:
            select_backend("ip6tnl", capabilities=caps)
        assert str(refused.value).startswith("the ip6tnl data plane does not work on this kernel")
        assert "\n" not in str(refused.value)
    neither = Capabilities(
        False, False, False, False, reasons={"seg6": "EINVAL", "ip6tnl": "Unknown device type"}
    )
    with pytest.raises(BackendUnavailableError) as nothing:
        select_backend("auto", capabilities=neither)
    message = str(nothing.value)
    assert message.startswith(
        "this kernel has neither seg6 lightweight tunnels nor ip6tnl, and the eBPF tunnel "
        "does not work: "
    )
    assert "Unknown device type" in message and "\n" not in message
    with pytest.raises(ValueError):
        select_backend("gre", capabilities=neither)  # type: ignore[arg-type]


# --- the seg6 data plane on the wire ---------------------------------------------------


@needs_root
def test_home_agent_tunnels_out_through_its_uplink_when_that_is_not_the_home_link(
    make_topology: Any, kind: str
) -> None:
    # An HA that routes its home link and reaches the rest of the network elsewhere: here
    # its default route goes through a second interface on the CN link.
    topo = make_topology(mn_link="foreign1")
    ha, mn = backends(topo, kind)
    topo.add_interface("ha", "uplink", "cn", LINKS["cn"].host(1))
    topo.ip("ha", "-6", "route", "replace", "default", "via", str(LINKS["cn"].router))
    register(topo, ha, mn)
    uplink, home = topo.capture("ha", "uplink"), topo.capture("ha", HOME)

    assert topo.ping("cn", topo.hoa, count=3)
    assert topo.ping("mn", CN_ADDRESS, source=topo.hoa)

    def to_mn(capture: Any) -> list[IPv6Header]:
        return [i for o, i in tunnelled(capture.ipv6()) if (o.src, o.dst) == (HA_ADDRESS, topo.coa)]

    out, stray = to_mn(uplink), to_mn(home)
    assert any((i.src, i.dst, icmp_type(i)) == (CN_ADDRESS, topo.hoa, 128) for i in out)
    assert stray == []
    # The MN's reverse tunnel still arrives on the home link and is decapsulated there.
    assert any(
        (o.src, o.dst, i.src) == (topo.coa, HA_ADDRESS, topo.hoa) for o, i in tunnelled(home.ipv6())
    )


@needs_root
def test_correspondent_reaches_the_home_address_through_plain_ipv6_in_ipv6(
    make_topology: Any, tmp_path: Path, kind: str
) -> None:
    topo = make_topology(mn_link="foreign1")
    ha, mn = backends(topo, kind)
    register(topo, ha, mn)
    foreign = topo.capture("router", "foreign1")

    assert topo.ping("cn", topo.hoa, count=3)
    assert topo.ping("mn", CN_ADDRESS, source=topo.hoa)

    packets = foreign.ipv6()
    pairs = tunnelled(packets)
    to_mn = [(o, i) for o, i in pairs if (o.src, o.dst) == (HA_ADDRESS, topo.coa)]
    from_mn = [(o, i) for o, i in pairs if (o.src, o.dst) == (topo.coa, HA_ADDRESS)]
    # CN's echo requests arrive tunnelled; the MN's replies leave from the HoA, reverse-tunnelled.
    assert any((i.src, i.dst, icmp_type(i)) == (CN_ADDRESS, topo.hoa, 128) for _o, i in to_mn)
    assert any((i.src, i.dst, icmp_type(i)) == (topo.hoa, CN_ADDRESS, 129) for _o, i in from_mn)
    assert any((i.src, i.dst, icmp_type(i)) == (topo.hoa, CN_ADDRESS, 128) for _o, i in from_mn)
    for outer, inner in to_mn + from_mn:
        # Next header 41 straight after the outer header: no SRH, no other extension.
        assert outer.next_header == 41
        assert len(outer.payload) == 40 + len(inner.payload)
    # Nothing with the home address crosses the foreign link outside the tunnel.
    assert all(topo.hoa not in (h.src, h.dst) for _f, h in packets)

    # An independent decoder agrees: tshark sees IPv6 in IPv6 and no routing header.
    pcap = write_pcap(
        tmp_path / "foreign1.pcap", [f.data for f, _h in packets], linktype=LINKTYPE_ETHERNET
    )
    decoded = [p for p in tshark_json(pcap) if p.get("ipv6.nxt", [""])[0] == "41"]
    assert len(decoded) == len(to_mn) + len(from_mn)
    for fields in decoded:
        assert fields["ipv6.nxt"] == ["41", "58"]
        assert "ipv6.routing.type" not in fields and "ipv6.routing" not in fields
        assert "ipv6.dstopts" not in fields  # ip6tnl: no Tunnel Encapsulation Limit option


@needs_root
def test_handover_to_another_foreign_link(make_topology: Any, kind: str) -> None:
    topo = make_topology(mn_link="foreign1")
    ha, mn = backends(topo, kind)
    register(topo, ha, mn)
    assert topo.ping("cn", topo.hoa)
    old_coa = topo.coa
    mn_tunnels_before = KernelView(topo, "mn").tunnels

    topo.move("mn", "foreign2")
    new_coa = topo.coa
    assert new_coa != old_coa
    mn.mn_attach(topo.hoa, new_coa, HA_ADDRESS, HOME)
    ha.ha_bind(topo.hoa, new_coa, HA_ADDRESS, HOME)
    old_link = topo.capture("router", "foreign1")
    new_link = topo.capture("router", "foreign2")

    assert topo.ping("cn", topo.hoa, count=3)
    assert mn.mn_state() == {topo.hoa: (new_coa, HA_ADDRESS)}
    assert ha.ha_bindings() == {topo.hoa: new_coa}
    pairs = tunnelled(new_link.ipv6())
    assert any((o.src, o.dst) == (HA_ADDRESS, new_coa) for o, _i in pairs)
    assert any((o.src, o.dst) == (new_coa, HA_ADDRESS) for o, _i in pairs)
    assert tunnelled(old_link.ipv6()) == []
    # The old CoA's decapsulation is gone on both sides.
    mn_view, ha_view = KernelView(topo, "mn"), KernelView(topo, "ha")
    assert mn_view.routes_to(old_coa) == []
    assert all(r.dst is None or r.dst.network_address != old_coa for r in mn_view.rules)
    if kind == "seg6":
        assert mn_view.tunsrc == new_coa
        decap = [r for r in ha_view.routes_to(HA_ADDRESS)]
        assert [r.src.network_address for r in decap if r.src] == [new_coa]
        assert mn_view.tunnels == ha_view.tunnels == []
    elif kind == "bpf":
        assert mn_view.bpf_tunsrc == new_coa
        assert decapsulating_from(ha_view, kind) == {new_coa}
        assert mn_view.decaps == {(new_coa, HA_ADDRESS)}
    else:
        # The MN's device moved in place (same index, new local end); the HA's device for
        # the old CoA is gone and one for the new CoA carries the HoA's route.
        (before,) = mn_tunnels_before
        (after,) = mn_view.tunnels
        home_index = topo.in_node("mn", Netlink).ifindex(HOME)
        assert (after.index, after.name) == (before.index, before.name)
        assert (after.local, after.remote, after.link) == (new_coa, HA_ADDRESS, home_index)
        assert ha_view.tunnels_to(old_coa) == []
        (ha_tunnel,) = ha_view.tunnels
        assert (ha_tunnel.local, ha_tunnel.remote) == (HA_ADDRESS, new_coa)
        assert [r.oif for r in ha_view.routes_to(topo.hoa)] == [ha_tunnel.index]
        assert mn_view.tunsrc == ha_view.tunsrc == IPv6Address("::")  # seg6's, never touched


@needs_root
def test_returning_home_restores_native_delivery(make_topology: Any, kind: str) -> None:
    topo = make_topology(mn_link="foreign1")
    ha, mn = backends(topo, kind)
    register(topo, ha, mn)
    assert topo.ping("cn", topo.hoa)

    mn.mn_detach(topo.hoa)
    ha.ha_unbind(topo.hoa)
    topo.move("mn", "home")
    home = topo.capture("router", "home")

    assert topo.ping("cn", topo.hoa, count=3)
    assert topo.ping("mn", CN_ADDRESS, source=topo.hoa)
    assert mn.mn_state() == {} and ha.ha_bindings() == {}
    packets = home.ipv6()
    assert tunnelled(packets) == []
    assert any(h.dst == topo.hoa and icmp_type(h) == 128 for _f, h in packets)
    assert any(h.src == topo.hoa and icmp_type(h) == 129 for _f, h in packets)
    # The MN holds nothing of ours; the local table is back at priority 0.
    view = KernelView(topo, "mn")
    assert view.routes == [] and view.rules == []
    assert topo.hoa not in view.lo
    assert [r.priority for r in view.local_rules()] == [0]
    assert view.tunsrc == IPv6Address("::")
    assert view.tunnels == []
    ha_view = KernelView(topo, "ha")
    assert ha_view.proxies == [] and ha_view.tunnels == []


def echo_over_tcp(
    topo: Topology,
    server: str,
    address: IPv6Address,
    client: str,
    source: IPv6Address | None = None,
    size: int = 200_000,
) -> int:
    """Send ``size`` bytes over TCP and read them echoed back; the number of bytes back."""
    with topo.inside(server):
        listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.settimeout(5)
    listener.bind((str(address), 0))
    listener.listen(1)

    def serve() -> None:
        conn, _peer = listener.accept()
        with conn:
            conn.settimeout(5)
            received = 0
            while received < size and (chunk := conn.recv(65536)):
                received += len(chunk)
                conn.sendall(chunk)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    with topo.inside(client):
        bind = (str(source), 0) if source is not None else None
        conn = socket.create_connection((str(address), port), timeout=5, source_address=bind)
    back = 0
    with conn, listener:
        conn.sendall(b"m" * size)
        while back < size and (chunk := conn.recv(65536)):
            back += len(chunk)
    thread.join(5)
    return back


@needs_root
def test_full_size_tcp_fits_the_tunnel_and_what_a_cn_sees_of_the_tunnel_mtu(
    make_topology: Any, kind: str
) -> None:
    """What each backend does with packet sizes (docs/dataplane.md, "MTU").

    TCP: the MN's reverse-tunnel route (seg6 headroom, or the ip6tnl device's MTU) is
    40 bytes or more below the link's, so the MN advertises a small enough MSS both ways.
    Datagrams from a CN that fit the link but not the tunnel (1461 bytes):
    - seg6: the HA encapsulates on input, before the forwarding MTU check, so the packet is
      dropped and no Packet Too Big tells the CN. If this ever fails because the big echo
      gets through, the kernel has changed: update the docs.
    - ip6tnl: the HA forwards into a device with MTU 1500 - 40, so the CN gets a Packet
      Too Big with that MTU, fragments, and the echo gets through.
    """
    topo = make_topology(mn_link="foreign1")
    for node in ("ha", "cn", "mn"):  # no 64 KB super-packets: frames as on a real wire
        topo.ip(node, "link", "set", HOME, "gso_max_segs", "1")
    for link in ("home", "foreign1", "cn"):
        topo.ip("router", "link", "set", link, "gso_max_segs", "1")
    ha, mn = backends(topo, kind)
    register(topo, ha, mn)
    foreign = topo.capture("router", "foreign1")

    assert echo_over_tcp(topo, "mn", topo.hoa, "cn") == 200_000
    assert echo_over_tcp(topo, "cn", CN_ADDRESS, "mn", source=topo.hoa) == 200_000
    tunnelled_sizes = [14 + 40 + len(o.payload) for o, _i in tunnelled(foreign.ipv6())]
    assert len(tunnelled_sizes) > 100 and max(tunnelled_sizes) <= 1514

    # Fresh captures for the datagrams: the TCP exchange can fill a capture's socket buffer
    # (net.core.rmem_max caps SO_RCVBUF), and a full buffer would hide a Packet Too Big.
    foreign, cn_link = topo.capture("router", "foreign1"), topo.capture("router", "cn")
    assert topo.ping("cn", topo.hoa, size=1412)  # 1460-byte packet, 1500 with the tunnel
    if kind == "seg6":
        assert not topo.ping("cn", topo.hoa, size=1413, deadline=1)
        too_big = [h for _f, h in cn_link.ipv6() if icmp_type(h) == 2]
        assert too_big == []
    else:
        assert topo.ping("cn", topo.hoa, size=1413, deadline=3)
        too_big = [h for _f, h in cn_link.ipv6() if icmp_type(h) == 2]
        assert too_big, "the HA tells the CN the tunnel's MTU"
        for error in too_big:
            mtu = struct.unpack_from("!I", error.payload, 4)[0]
            assert (error.dst, mtu) == (CN_ADDRESS, 1500 - 40)
            quoted = IPv6Header.parse(error.payload[8:])
            assert quoted is not None and quoted.dst == topo.hoa  # the packet it was about
        # Fragmented at the CN after that: every tunnelled frame still fits the link.
        sizes = [14 + 40 + len(o.payload) for o, _i in tunnelled(foreign.ipv6())]
        assert max(sizes) <= 1514


# --- idempotence, restart, reconciliation, cleanup -------------------------------------


@needs_root
def test_repeated_calls_create_no_duplicates_and_state_survives_a_restart(
    make_topology: Any, kind: str
) -> None:
    topo = make_topology(mn_link="foreign1")
    ha, mn = backends(topo, kind)
    register(topo, ha, mn)
    before = KernelView(topo, "ha"), KernelView(topo, "mn")
    events = LinkEvents(topo, "ha"), LinkEvents(topo, "mn")
    register(topo, ha, mn)
    ha.ha_bind(topo.hoa, topo.coa, HA_ADDRESS, HOME)
    mn.mn_attach(topo.hoa, topo.coa, HA_ADDRESS, HOME)

    ha_view, mn_view = KernelView(topo, "ha"), KernelView(topo, "mn")
    assert len(ha_view.routes_to(topo.hoa)) == 1
    assert [p.address for p in ha_view.proxies] == [topo.hoa]
    assert mn_view.lo.count(topo.hoa) == 1
    if kind in ("seg6", "bpf"):
        assert sorted(r.priority for r in ha_view.rules) == [10, 1000]
        assert sorted(r.priority for r in mn_view.rules) == [11, 1000, 1100]
    if kind == "seg6":
        assert len(ha_view.routes_to(HA_ADDRESS)) == 1  # decapsulation from the CoA
        assert len(mn_view.routes) == 2  # reverse tunnel + decapsulation at the CoA
    elif kind == "bpf":  # the decapsulations are map entries
        assert ha_view.decaps == {(HA_ADDRESS, topo.coa)}
        assert mn_view.decaps == {(topo.coa, HA_ADDRESS)}
        assert len(mn_view.routes) == 1  # the reverse tunnel
    else:
        # The devices decapsulate: no rules but the MN's `from <HoA>`, one device a side.
        assert ha_view.routes_to(HA_ADDRESS) == [] and ha_view.rules == []
        assert sorted(r.priority for r in mn_view.rules) == [1100]
        assert len(mn_view.routes) == 1  # the reverse tunnel
        assert len(ha_view.tunnels) == len(mn_view.tunnels) == 1
    assert (ha_view.routes, ha_view.rules) == (before[0].routes, before[0].rules)
    assert (mn_view.routes, mn_view.rules) == (before[1].routes, before[1].rules)
    assert (ha_view.tunnels, mn_view.tunnels) == (before[0].tunnels, before[1].tunnels)

    # A restarted agent (fresh backend objects) finds the state and adopts it as is.
    ha2, mn2 = backends(topo, kind)
    assert ha2.ha_bindings() == {topo.hoa: topo.coa}
    assert mn2.mn_state() == {topo.hoa: (topo.coa, HA_ADDRESS)}
    ha_report = ha2.ha_reconcile({topo.hoa: topo.coa}, HA_ADDRESS, HOME)
    mn_report = mn2.mn_reconcile({topo.hoa: (topo.coa, HA_ADDRESS)}, HOME)
    assert (ha_report.adopted, ha_report.changed) == ((topo.hoa,), False)
    assert (mn_report.adopted, mn_report.changed) == ((topo.hoa,), False)
    assert KernelView(topo, "ha").routes == ha_view.routes
    # Nothing was rewritten either: no device of ours changed (or came and went).
    for view, listener in zip((ha_view, mn_view), events, strict=True):
        ours = {t.index for t in view.tunnels}
        assert [i for i in listener.indexes() if i in ours] == []
    assert (KernelView(topo, "ha").tunnels, KernelView(topo, "mn").tunnels) == (
        ha_view.tunnels,
        mn_view.tunnels,
    )
    assert topo.ping("cn", topo.hoa)


@needs_root
def test_link_local_proxy_is_answered_kept_by_reconcile_and_removed(
    make_topology: Any, kind: str
) -> None:
    """L flag (RFC 6275 10.4.1): the HA answers ND for the MN's link-local address."""
    topo = make_topology(mn_link="foreign1")
    ha, mn = backends(topo, kind)
    register(topo, ha, mn)
    ll = IPv6Address("fe80::100")  # the link-local of the lab's home address ::100
    ha.ha_proxy(ll, HOME)
    assert ll in {p.address for p in KernelView(topo, "ha").proxies}
    # A node on the home link resolves the link-local address to the home agent's MAC.
    ha_mac = json.loads(topo.ip("ha", "-j", "link", "show", HOME))[0]["address"]
    # The router namespace is on the home link, its interface named after it: a datagram
    # to the link-local address makes it resolve the address.
    with topo.inside("router"):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        index = socket.if_nametoindex("home")
    with sock:
        sock.sendto(b"x", (str(ll), 9, 0, index))

    def resolved() -> str | None:
        neighbours = json.loads(topo.ip("router", "-j", "-6", "neigh", "show", "dev", "home"))
        entry = {n["dst"]: n for n in neighbours}.get(str(ll), {})
        return entry.get("lladdr") if "INCOMPLETE" not in entry.get("state", []) else None

    assert wait_until(resolved, 5, what="the link-local resolved") == ha_mac
    # Nothing is tunnelled for it: the kernel forwards no link-local packet.
    assert ha.ha_bindings() == {topo.hoa: topo.coa}

    # Reconcile keeps a wanted link-local, installs a missing one, drops a stale one.
    ha2, _ = backends(topo, kind)
    report = ha2.ha_reconcile({topo.hoa: topo.coa}, HA_ADDRESS, HOME, True, [ll])
    assert (report.adopted, report.removed) == ((topo.hoa,), ())
    other = IPv6Address("fe80::300")
    ha2.ha_reconcile({topo.hoa: topo.coa}, HA_ADDRESS, HOME, True, [ll, other])
    assert {ll, other} <= {p.address for p in KernelView(topo, "ha").proxies}
    # A damaged state file (remove_stale False) removes nothing.
    ha2.ha_reconcile({topo.hoa: topo.coa}, HA_ADDRESS, HOME, False, [])
    assert {ll, other} <= {p.address for p in KernelView(topo, "ha").proxies}
    report = ha2.ha_reconcile({topo.hoa: topo.coa}, HA_ADDRESS, HOME, True, [ll])
    assert report.removed == ()  # a link-local proxy is not a binding
    proxied = {p.address for p in KernelView(topo, "ha").proxies}
    assert ll in proxied and other not in proxied

    ha2.ha_unproxy(ll, HOME)
    ha2.ha_unproxy(ll, HOME)  # idempotent
    assert {p.address for p in KernelView(topo, "ha").proxies} == {topo.hoa}


@needs_root
def test_reconcile_keeps_wanted_bindings_and_removes_stale_ones(
    make_topology: Any, kind: str
) -> None:
    topo = make_topology(mn_link="foreign1")
    ha, mn = backends(topo, kind)
    register(topo, ha, mn)
    ha.ha_bind(OTHER_HOA, OTHER_COA, HA_ADDRESS, HOME)  # a binding the agent no longer has
    third_hoa, third_coa = IPv6Address("2001:db8:1::300"), IPv6Address("2001:db8:2::300")

    report = ha.ha_reconcile({topo.hoa: topo.coa, third_hoa: third_coa}, HA_ADDRESS, HOME)
    assert (report.adopted, report.added, report.removed) == (
        (topo.hoa,),
        (third_hoa,),
        (OTHER_HOA,),
    )
    assert ha.ha_bindings() == {topo.hoa: topo.coa, third_hoa: third_coa}
    view = KernelView(topo, "ha")
    assert sorted(p.address for p in view.proxies) == sorted([topo.hoa, third_hoa])
    # OTHER_COA's decapsulation (seg6 route, ip6tnl device) went too.
    assert decapsulating_from(view, kind) == {topo.coa, third_coa}

    # Reconciling one home link leaves another link's bindings alone.
    topo.ip("ha", "link", "add", "home2", "type", "veth", "peer", "name", "home2p")
    topo.ip("ha", "link", "set", "home2", "up")
    topo.ip("ha", "link", "set", "home2p", "up")
    ha.ha_bind(OTHER_HOA, OTHER_COA, HA_ADDRESS, "home2")
    report = ha.ha_reconcile({topo.hoa: topo.coa, third_hoa: third_coa}, HA_ADDRESS, HOME)
    assert report.removed == () and OTHER_HOA in ha.ha_bindings()
    assert ha.ha_reconcile({}, HA_ADDRESS, "home2").removed == (OTHER_HOA,)

    # A duplicate route of ours (another metric) is found and removed; the binding stays.
    if kind == "seg6":
        via = ["encap", "seg6", "mode", "encap.red", "segs", str(topo.coa), "dev", HOME]
    elif kind == "bpf":
        with topo.inside("ha"):
            program = bpf_pins().parent / "progs" / "encap"
        via = ["encap", "bpf", "xmit", "pinned", str(program), "dev", HOME]
    else:
        (tunnel,) = KernelView(topo, "ha").tunnels_to(topo.coa)
        via = ["dev", tunnel.name]
    topo.ip("ha", "-6", "route", "add", f"{topo.hoa}/128", *via, "metric", "2000", "proto", "86")
    report = ha.ha_reconcile({topo.hoa: topo.coa, third_hoa: third_coa}, HA_ADDRESS, HOME)
    assert (report.updated, report.adopted) == ((topo.hoa,), (third_hoa,))
    assert len(KernelView(topo, "ha").routes_to(topo.hoa)) == 1
    assert topo.ping("cn", topo.hoa)

    # The mobile node side: remove, add back, then move to a new CoA.
    assert mn.mn_reconcile({}, HOME).removed == (topo.hoa,)
    assert KernelView(topo, "mn").rules == []
    wanted = {topo.hoa: (topo.coa, HA_ADDRESS)}
    assert mn.mn_reconcile(wanted, HOME).added == (topo.hoa,)
    assert mn.mn_reconcile(wanted, HOME).adopted == (topo.hoa,)
    topo.move("mn", "foreign2")
    ha.ha_bind(topo.hoa, topo.coa, HA_ADDRESS, HOME)
    assert mn.mn_reconcile({topo.hoa: (topo.coa, HA_ADDRESS)}, HOME).updated == (topo.hoa,)
    assert topo.ping("cn", topo.hoa)


@needs_root
def test_cleanup_removes_everything_the_agent_installed(make_topology: Any, kind: str) -> None:
    topo = make_topology(mn_link="foreign1")
    ha, mn = backends(topo, kind)
    register(topo, ha, mn)
    ha.ha_bind(OTHER_HOA, OTHER_COA, HA_ADDRESS, HOME)
    assert topo.ping("cn", topo.hoa)

    for node, backend in (("ha", ha), ("mn", mn)):
        backend.cleanup()
        backend.cleanup()  # idempotent
        view = KernelView(topo, node)
        assert view.routes == [] and view.rules == [] and view.proxies == []
        assert view.lo == [IPv6Address("::1")]
        assert [(r.priority, r.proto) for r in view.local_rules()] == [(0, 2)]
        assert view.tunsrc == IPv6Address("::")
        names = [
            line.split(": ")[1].split("@")[0] for line in topo.ip(node, "-o", "link").splitlines()
        ]
        assert view.tunnels == [] and not [n for n in names if n.startswith(("mip6h", "mip6m"))]
        assert topo.ip(node, "-6", "route", "show", "table", "all", "proto", "86") == ""
        # The eBPF tunnel: no maps (pins gone) and no decapsulation filter on any interface.
        assert view.decaps == set() and view.bpf_tunsrc is None
        for name in names:
            filters = topo.ip(node, "link", "show", name)  # the device is still there
            assert filters
            tc = subprocess.run(
                ["ip", "netns", "exec", topo.ns[node], "tc", "filter", "show", "dev", name,
                 "ingress"], capture_output=True, text=True, check=False,
            ).stdout  # fmt: skip
            assert "mip6-tunnel-decap" not in tc, (node, name, tc)
    assert not topo.ping("cn", topo.hoa, deadline=0.5)


@needs_root
def test_failures_are_one_typed_error_with_the_kernels_reason(
    make_topology: Any, kind: str
) -> None:
    topo = make_topology(mn_link="foreign1")
    ha, mn = backends(topo, kind)
    with pytest.raises(DataPlaneError, match="interface 'nope': no such interface"):
        ha.ha_bind(topo.hoa, topo.coa, HA_ADDRESS, "nope")
    with pytest.raises(DataPlaneError, match="link-local"):
        mn.mn_attach(topo.hoa, IPv6Address("fe80::1"), HA_ADDRESS, HOME)
    if kind == "seg6":
        # The kernel refuses a seg6local route on a device that is down.
        topo.ip("mn", "link", "add", "down0", "type", "veth", "peer", "name", "down1")
        with pytest.raises(DataPlaneError) as refused:
            mn.mn_attach(topo.hoa, topo.coa, HA_ADDRESS, "down0")
        expected = (str(topo.coa), "(ENETDOWN)", errno.ENETDOWN)
    elif kind == "ip6tnl":
        # Someone else's tunnel with the same endpoints: ip6_tnl_locate() says EEXIST.
        topo.ip(
            "mn", "link", "add", "other6", "type", "ip6tnl", "mode", "ip6ip6",
            "local", str(topo.coa), "remote", str(HA_ADDRESS), "dev", HOME,
        )  # fmt: skip
        with pytest.raises(DataPlaneError) as refused:
            mn.mn_attach(topo.hoa, topo.coa, HA_ADDRESS, HOME)
        expected = ("create ip6tnl tunnel mip6m0", "(EEXIST)", errno.EEXIST)
    if kind != "bpf":  # (no kernel refusal of the eBPF tunnel's objects is known to test)
        message = str(refused.value)
        assert expected[0] in message and expected[1] in message and "\n" not in message
        assert refused.value.errno == expected[2]
    mn.cleanup()
    view = KernelView(topo, "mn")
    assert view.rules == [] and view.routes == [] and view.tunnels == []
    if kind == "ip6tnl":
        assert "other6" in topo.ip("mn", "link")  # not ours: cleanup leaves it


# --- the topology itself: SLAAC, radvd, movement ---------------------------------------


@needs_root
def test_topology_with_radvd_gives_slaac_addresses_and_home_agent_advertisements(
    make_topology: Any,
) -> None:
    topo = make_topology(mn_link="foreign1", addressing="slaac", radvd=True)
    topo.wait_for_address("mn", topo.mn_address("foreign1"))
    assert str(topo.mn_address("foreign1")).endswith("::ff:fe00:100")
    assert topo.ping("mn", CN_ADDRESS, deadline=5)

    sniff = topo.capture("mn", "eth0")
    topo.move("mn", "home")
    topo.wait_for_address("mn", topo.hoa)
    advertisements = [h for _f, h in sniff.ipv6() if h.src.is_link_local and icmp_type(h) == 134]
    from_ha = [h for h in advertisements if _has_option(h, 8)]
    assert from_ha, topo.radvd_log("ha")
    ra = from_ha[0]
    assert ra.payload[5] & 0x20  # H flag
    assert _has_option(ra, 7)  # Advertisement Interval
    prefix = _option(ra, 3)
    assert prefix is not None and prefix[3] & 0x20  # R flag: full router address
    assert IPv6Address(prefix[16:32]) == HA_ADDRESS
    interval = _option(ra, 7)  # radvd 2.19 adds 20 ms to MaxRtrAdvInterval (KERNEL.md)
    assert interval is not None and struct.unpack_from("!I", interval, 4)[0] == 90

    topo.move("mn", "foreign2")
    topo.wait_for_address("mn", topo.mn_address("foreign2"))


def _options(ra: IPv6Header) -> Iterator[bytes]:
    offset = 16
    while offset + 2 <= len(ra.payload):
        length = ra.payload[offset + 1] * 8
        if length == 0:
            return
        yield ra.payload[offset : offset + length]
        offset += length


def _option(ra: IPv6Header, kind: int) -> bytes | None:
    return next((o for o in _options(ra) if o[0] == kind), None)


def _has_option(ra: IPv6Header, kind: int) -> bool:
    return _option(ra, kind) is not None


# --- ip6tnl: what it would send (no CONFIG_IPV6_TUNNEL here) ---------------------------


class FakeKernel(Netlink):
    """Applies the backend's requests to in-memory tables and logs them, encoded.

    Only for the ip6tnl backend, which this machine's kernel cannot run.
    """

    def __init__(self) -> None:
        self.links = {1: "lo", 2: HOME}
        self.tunnel_table: dict[int, Ip6Tunnel] = {}
        self.route_table: list[Route] = []
        self.rule_table: list[Rule] = [Rule(0, RT_TABLE_LOCAL, 2), Rule(32766, RT_TABLE_MAIN, 2)]
        self.proxy_table: list[ProxyEntry] = []
        self.address_table: list[Address] = []
        self.log: list[tuple[str, object]] = []
        self.settings: dict[str, str] = {}

    def close(self) -> None:
        pass

    def ifindex(self, ifname: str) -> int:
        for index, name in self.links.items():
            if name == ifname:
                return index
        raise DataPlaneError("look up", f"interface {ifname!r}", "no such interface")

    def link_names(self) -> list[str]:
        return list(self.links.values())

    def sysctl(self, parts: Any, value: str) -> None:
        self.settings[".".join(parts)] = value

    def tunsrc(self) -> IPv6Address | None:
        return None

    def routes(self, proto: int | None = None) -> list[Route]:
        return [r for r in self.route_table if proto is None or r.proto == proto]

    def replace_route(self, route: Route, what: str) -> None:
        self.route_table = [r for r in self.route_table if r.key != route.key] + [route]
        self.log.append(("route+", route))

    def delete_route(self, route: Route, what: str) -> bool:
        self.route_table.remove(route)
        self.log.append(("route-", route))
        return True

    def rules(self) -> list[Rule]:
        return list(self.rule_table)

    def add_rule(self, rule: Rule, what: str) -> bool:
        if rule in self.rule_table:
            return False
        self.rule_table.append(rule)
        self.log.append(("rule+", rule))
        return True

    def delete_rule(self, rule: Rule, what: str) -> bool:
        self.rule_table.remove(rule)
        self.log.append(("rule-", rule))
        return True

    def proxies(self) -> list[ProxyEntry]:
        return list(self.proxy_table)

    def replace_proxy(self, entry: ProxyEntry, what: str) -> None:
        if entry not in self.proxy_table:
            self.proxy_table.append(entry)
        self.log.append(("proxy+", entry))

    def delete_proxy(self, entry: ProxyEntry, what: str) -> bool:
        self.proxy_table.remove(entry)
        self.log.append(("proxy-", entry))
        return True

    def addresses(self) -> list[Address]:
        return list(self.address_table)

    def replace_address(self, address: Address, what: str) -> None:
        if address not in self.address_table:
            self.address_table.append(address)
        self.log.append(("address+", address))

    def delete_address(self, address: Address, what: str) -> bool:
        self.address_table.remove(address)
        self.log.append(("address-", address))
        return True

    def tunnels(self) -> list[Ip6Tunnel]:
        return list(self.tunnel_table.values())

    def create_tunnel(self, tunnel: Ip6Tunnel, what: str) -> None:
        index = max(self.links) + 1
        self.links[index] = tunnel.name
        self.tunnel_table[index] = Ip6Tunnel(
            tunnel.name, tunnel.local, tunnel.remote, tunnel.link, index
        )
        self.log.append(("link+", tunnel_message(tunnel)))

    def change_tunnel(self, tunnel: Ip6Tunnel, what: str) -> None:
        assert tunnel.index in self.tunnel_table
        self.tunnel_table[tunnel.index] = tunnel
        self.log.append(("link~", tunnel_message(tunnel)))

    def delete_link(self, index: int, what: str) -> bool:
        del self.tunnel_table[index]
        name = self.links.pop(index)
        self.log.append(("link-", name))
        return True

    def ops(self) -> list[str]:
        return [op for op, _ in self.log]


def _nlas(data: bytes) -> dict[int, bytes]:
    """Netlink attributes by type (the last one wins), read straight from the bytes."""
    found, offset = {}, 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        found[kind & 0x3FFF] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return found


def test_ip6tnl_link_message_bytes() -> None:
    tunnel = Ip6Tunnel("mip6h0", HA_ADDRESS, IPv6Address("2001:db8:2::100"), 2)
    msg = tunnel_message(tunnel)
    msg["header"]["type"] = 16  # RTM_NEWLINK
    msg.encode()
    data = bytes(msg.data)
    _family, _type, index, flags, change = struct.unpack_from("=BxHiII", data, 16)
    assert (index, flags & 1, change & 1) == (0, 1, 1)  # created up
    top = _nlas(data[32:])
    assert top[3] == b"mip6h0\0"  # IFLA_IFNAME
    info = _nlas(top[18])  # IFLA_LINKINFO
    assert info[1].rstrip(b"\0") == b"ip6tnl"  # IFLA_INFO_KIND
    data_attrs = _nlas(info[2])  # IFLA_INFO_DATA: IFLA_IPTUN_*
    assert struct.unpack("=I", data_attrs[1]) == (2,)  # LINK: the home interface
    assert data_attrs[2] == HA_ADDRESS.packed  # LOCAL
    assert data_attrs[3] == IPv6Address("2001:db8:2::100").packed  # REMOTE
    assert data_attrs[4] == bytes([64])  # TTL
    assert data_attrs[6] == bytes([0])  # ENCAP_LIMIT (ignored: flag below)
    flags_value = struct.unpack("=I", data_attrs[8])[0]
    assert flags_value == IP6_TNL_F_IGN_ENCAP_LIMIT | IP6_TNL_F_MIP6_DEV
    assert data_attrs[9] == bytes([41])  # PROTO: ip6ip6 only
    # A change names the device by index only: older kernels (6.1) refuse any IFLA_IFNAME,
    # even the device's own name, with EBUSY while it is up.
    change = tunnel_message(Ip6Tunnel("mip6h0", HA_ADDRESS, HA_ADDRESS, 2, index=7))
    change["header"]["type"] = 16
    change.encode()
    assert struct.unpack_from("=i", bytes(change.data), 20)[0] == 7
    assert 3 not in _nlas(bytes(change.data)[32:])


def test_ip6tnl_home_agent_would_create_route_and_retire_tunnels() -> None:
    kernel = FakeKernel()
    ha = Ip6tnlDataPlane(netlink=kernel)
    hoa, coa, coa2 = IPv6Address("2001:db8:1::100"), IPv6Address("2001:db8:2::100"), OTHER_COA
    ha.ha_setup(HOME, HA_ADDRESS)
    assert kernel.settings == {
        "net.ipv6.conf.all.forwarding": "1",
        f"net.ipv6.conf.{HOME}.proxy_ndp": "1",
        f"net.ipv6.neigh.{HOME}.proxy_delay": "0",
    }
    assert kernel.rule_table[0].priority == 0  # no policy rules needed: devices decapsulate
    ha.ha_bind(hoa, coa, HA_ADDRESS, HOME)
    assert kernel.ops() == ["link+", "route+", "proxy+"]
    tunnel = next(iter(kernel.tunnel_table.values()))
    # Not bound to the home link: outer packets follow the HA's routing table.
    assert (tunnel.name, tunnel.local, tunnel.remote, tunnel.link) == ("mip6h0", HA_ADDRESS, coa, 0)
    assert kernel.route_table == [Route(IPv6Network(f"{hoa}/128"), RT_TABLE_MAIN, tunnel.index)]
    assert kernel.proxy_table == [ProxyEntry(hoa, 2)]
    assert ha.ha_bindings() == {hoa: coa}

    ha.ha_bind(hoa, coa, HA_ADDRESS, HOME)  # idempotent: nothing created twice
    assert len(kernel.tunnel_table) == 1 and len(kernel.route_table) == 1
    assert ha.ha_reconcile({hoa: coa}, HA_ADDRESS, HOME).adopted == (hoa,)

    ha.ha_bind(hoa, coa2, HA_ADDRESS, HOME)  # the MN moved: new tunnel, old one retired
    assert [t.name for t in kernel.tunnel_table.values()] == ["mip6h1"]
    assert ha.ha_bindings() == {hoa: coa2}
    assert kernel.log[-1] == ("link-", "mip6h0")

    ha.ha_unbind(hoa)
    assert kernel.tunnel_table == {} and kernel.route_table == [] and kernel.proxy_table == []


def test_ip6tnl_home_agent_shares_a_device_between_home_links_and_reconciles_each() -> None:
    kernel = FakeKernel()
    kernel.links[3] = "eth1"
    ha = Ip6tnlDataPlane(netlink=kernel)
    hoa1, hoa2, coa = IPv6Address("2001:db8:1::100"), IPv6Address("2001:db8:5::100"), OTHER_COA
    ha.ha_bind(hoa1, coa, HA_ADDRESS, HOME)
    ha.ha_bind(hoa2, coa, HA_ADDRESS, "eth1")
    (tunnel,) = kernel.tunnel_table.values()  # one pair of endpoints, one device
    assert tunnel.link == 0
    assert kernel.proxy_table == [ProxyEntry(hoa1, 2), ProxyEntry(hoa2, 3)]
    kernel.log.clear()
    # Each home link adopts its own binding and leaves the other link's alone.
    assert ha.ha_reconcile({hoa1: coa}, HA_ADDRESS, HOME).adopted == (hoa1,)
    assert ha.ha_reconcile({hoa2: coa}, HA_ADDRESS, "eth1").adopted == (hoa2,)
    assert kernel.ops() == []
    # Reconciling one link to nothing removes only that link's binding; the device stays.
    report = ha.ha_reconcile({}, HA_ADDRESS, "eth1")
    assert report.removed == (hoa2,)
    assert ha.ha_bindings() == {hoa1: coa}
    assert list(kernel.tunnel_table.values()) == [tunnel]
    assert kernel.proxy_table == [ProxyEntry(hoa1, 2)]


def test_ip6tnl_home_agent_unbinds_a_device_an_older_version_bound_to_the_home_link() -> None:
    kernel = FakeKernel()
    ha = Ip6tnlDataPlane(netlink=kernel)
    hoa, coa = IPv6Address("2001:db8:1::100"), IPv6Address("2001:db8:2::100")
    ha.ha_bind(hoa, coa, HA_ADDRESS, HOME)
    (index,) = kernel.tunnel_table
    kernel.tunnel_table[index] = Ip6Tunnel("mip6h0", HA_ADDRESS, coa, 2, index)
    kernel.log.clear()
    report = ha.ha_reconcile({hoa: coa}, HA_ADDRESS, HOME)
    assert report.updated == (hoa,)
    assert [op for op in kernel.ops() if op.startswith("link")] == ["link~"]  # same device
    assert kernel.tunnel_table[index].link == 0
    assert ha.ha_reconcile({hoa: coa}, HA_ADDRESS, HOME).adopted == (hoa,)


def test_ip6tnl_mobile_node_would_move_its_tunnel_in_place_on_handover() -> None:
    kernel = FakeKernel()
    kernel.links[3] = "wlan0"
    mn = Ip6tnlDataPlane(netlink=kernel)
    hoa, coa, coa2 = IPv6Address("2001:db8:1::100"), IPv6Address("2001:db8:2::100"), OTHER_COA
    mn.mn_attach(hoa, coa, HA_ADDRESS, HOME)
    assert kernel.ops() == ["address+", "link+", "route+", "rule+"]
    (tunnel,) = kernel.tunnel_table.values()
    assert (tunnel.name, tunnel.local, tunnel.remote, tunnel.link) == ("mip6m0", coa, HA_ADDRESS, 2)
    assert Rule(1100, 200, RTPROT_MIP6, src=IPv6Network(f"{hoa}/128")) in kernel.rule_table
    assert kernel.route_table == [Route(IPv6Network("::/0"), 200, tunnel.index)]
    assert kernel.address_table == [Address(hoa, 128, 1)]
    assert mn.mn_state() == {hoa: (coa, HA_ADDRESS)}

    kernel.log.clear()
    mn.mn_attach(hoa, coa2, HA_ADDRESS, "wlan0")
    assert "link+" not in kernel.ops() and "link-" not in kernel.ops()
    changed = [msg for op, msg in kernel.log if op == "link~"]
    assert len(changed) == 1
    (moved,) = kernel.tunnel_table.values()
    assert (moved.index, moved.local, moved.link) == (tunnel.index, coa2, 3)
    assert mn.mn_state() == {hoa: (coa2, HA_ADDRESS)}
    assert mn.mn_reconcile({hoa: (coa2, HA_ADDRESS)}, "wlan0").adopted == (hoa,)

    mn.mn_detach(hoa)
    assert kernel.tunnel_table == {} and kernel.route_table == [] and kernel.address_table == []
    assert [r.priority for r in kernel.rule_table] == [0, 32766]


@needs_root
def test_ip6tnl_backend_fails_cleanly_on_a_kernel_without_ip6tnl(make_topology: Any) -> None:
    topo = make_topology(mn_link="foreign1")
    with topo.inside("ha"):
        if probe().ip6tnl:
            pytest.skip("this kernel has ip6tnl")
    ha = topo.in_node("ha", Ip6tnlDataPlane)
    with pytest.raises(DataPlaneError) as refused:
        ha.ha_bind(topo.hoa, topo.coa, HA_ADDRESS, HOME)
    message = str(refused.value)
    assert message.startswith("create ip6tnl tunnel mip6h0")
    assert message.endswith("Unknown device type (EOPNOTSUPP)")
    view = KernelView(topo, "ha")
    assert view.routes == [] and view.proxies == []


def test_config_rejects_overlapping_numbers() -> None:
    with pytest.raises(ValueError, match="rule priorities"):
        DataPlaneConfig(local_pref=5)
    with pytest.raises(ValueError, match="reserved"):
        DataPlaneConfig(decap_table=254)
    with pytest.raises(ValueError, match="proto"):
        DataPlaneConfig(proto=2)


def test_repeated_binds_take_the_indexed_path_and_stay_exact(make_topology: Any, kind: str) -> None:
    """Many registrations, moves and removals: the kernel holds exactly what is bound."""
    topo = make_topology(mn_link="foreign1")
    ha, _ = backends(topo, kind)
    ha.ha_setup(HOME, HA_ADDRESS)
    homes = [IPv6Address(f"2001:db8:1::{n:x}") for n in range(0x200, 0x240)]
    for n, home in enumerate(homes):
        ha.ha_bind(home, IPv6Address(f"2001:db8:2::{n % 4 + 0x10:x}"), HA_ADDRESS, HOME)
    for n, home in enumerate(homes[:10]):  # ten of them move to foreign2
        ha.ha_bind(home, IPv6Address(f"2001:db8:3::{n + 0x10:x}"), HA_ADDRESS, HOME)
    for home in homes[30:]:
        ha.ha_unbind(home)
    expected = {
        home: IPv6Address(f"2001:db8:3::{n + 0x10:x}")
        if n < 10
        else IPv6Address(f"2001:db8:2::{n % 4 + 0x10:x}")
        for n, home in enumerate(homes[:30])
    }
    view = KernelView(topo, "ha")
    for home in homes:
        assert len(view.routes_to(home)) == (1 if home in expected else 0)
    assert sorted(p.address for p in view.proxies) == sorted(expected)
    decap_sources = decapsulating_from(view, kind)
    assert decap_sources == set(expected.values()), "one decapsulation per CoA still in use"
    assert len(view.tunnels) == (len(decap_sources) if kind == "ip6tnl" else 0)
    # a fresh backend object (an agent restart) reads the same bindings from the kernel
    assert backends(topo, kind)[0].ha_bindings() == expected


# --- reconciliation reads the kernel a fixed number of times ---------------------------


class CountingNetlink(Netlink):
    """The real transport, counting every dump (routes, rules, proxies, links, addresses)."""

    def __init__(self) -> None:
        super().__init__()
        self.dumps = 0

    def dump(self, operation: str, msg_type: int, msg: Any) -> list[Any]:
        self.dumps += 1
        return super().dump(operation, msg_type, msg)

    def raw_dump(self, operation: str, msg_type: int, request: bytes, parse: Any) -> list[Any]:
        self.dumps += 1
        return super().raw_dump(operation, msg_type, request, parse)


class CountingFakeKernel(FakeKernel):
    def __init__(self) -> None:
        super().__init__()
        self.dumps = 0

    def _count(self) -> None:
        self.dumps += 1

    def routes(self, proto: int | None = None) -> list[Route]:
        self._count()
        return super().routes(proto)

    def rules(self) -> list[Rule]:
        self._count()
        return super().rules()

    def proxies(self) -> list[ProxyEntry]:
        self._count()
        return super().proxies()

    def tunnels(self) -> list[Ip6Tunnel]:
        self._count()
        return super().tunnels()

    def link_names(self) -> list[str]:
        self._count()
        return super().link_names()

    def addresses(self) -> list[Address]:
        self._count()
        return super().addresses()


def _homes(count: int) -> dict[IPv6Address, IPv6Address]:
    """``count`` bindings over a few CoAs (several bindings share a decapsulation)."""
    return {
        IPv6Address(f"2001:db8:1::{0x1000 + n:x}"): IPv6Address(f"2001:db8:2::{0x10 + n % 7:x}")
        for n in range(count)
    }


def _reconcile_dumps(make: Any, count: int) -> dict[str, tuple[int, Any]]:
    """Dumps and reports of a reconcile that adds ``count`` bindings, then of one (by a
    fresh backend: a restart) that adopts them, drops a tenth and adds as many again."""
    kernel, ha = make()
    wanted = _homes(count)
    before = kernel.dumps
    added = ha.ha_reconcile(wanted, HA_ADDRESS, HOME)
    first = kernel.dumps - before
    kernel2, ha2 = make(kernel)
    keep = dict(list(wanted.items())[count // 10 :])
    more = {IPv6Address(f"2001:db8:1::{0x8000 + n:x}"): OTHER_COA for n in range(count // 10)}
    before = kernel2.dumps
    mixed = ha2.ha_reconcile({**keep, **more}, HA_ADDRESS, HOME)
    second = kernel2.dumps - before
    assert len(added.added) == count
    assert (len(mixed.adopted), len(mixed.added), len(mixed.removed)) == (
        len(keep),
        len(more),
        count // 10,
    )
    assert ha2.ha_bindings() == {**keep, **more}
    return {"add": (first, added), "restart": (second, mixed)}


def test_ip6tnl_reconcile_dumps_do_not_grow_with_bindings() -> None:
    def make(kernel: CountingFakeKernel | None = None) -> tuple[Any, Any]:
        kernel = kernel or CountingFakeKernel()
        return kernel, Ip6tnlDataPlane(netlink=kernel)

    small, large = _reconcile_dumps(make, 10), _reconcile_dumps(make, 200)
    assert small["add"][0] == large["add"][0]
    assert small["restart"][0] == large["restart"][0]


@needs_root
def test_seg6_reconcile_dumps_do_not_grow_with_bindings(make_topology: Any) -> None:
    topo = make_topology(mn_link="foreign1")
    require_dataplane("seg6")

    def make(kernel: Any = None) -> tuple[Any, Any]:
        proxy = topo.in_node("ha", CountingNetlink)  # a new socket: a restarted agent
        return proxy.target, topo.in_node("ha", Seg6DataPlane, netlink=proxy.target)

    small = _reconcile_dumps(make, 10)
    topo.in_node("ha", Seg6DataPlane).cleanup()
    large = _reconcile_dumps(make, 200)
    assert small["add"][0] == large["add"][0]
    assert small["restart"][0] == large["restart"][0]
    view = KernelView(topo, "ha")
    assert len(view.proxies) == 200
    # One decapsulation per CoA in use: the seven of _homes and OTHER_COA.
    assert len(decapsulating_from(view, "seg6")) == 8


def test_reconcile_without_removal_keeps_what_is_not_wanted() -> None:
    kernel = CountingFakeKernel()
    ha = Ip6tnlDataPlane(netlink=kernel)
    wanted = _homes(5)
    ha.ha_reconcile(wanted, HA_ADDRESS, HOME)
    report = ha.ha_reconcile({}, HA_ADDRESS, HOME, remove_stale=False)
    assert report.removed == () and ha.ha_bindings() == wanted
    assert ha.ha_reconcile({}, HA_ADDRESS, HOME).removed == tuple(sorted(wanted))


# --- the raw dump parsers against the kernel's bytes -----------------------------------

_TABLES = {"main": RT_TABLE_MAIN, "local": RT_TABLE_LOCAL, "default": 253}
_SEG6_MODES = {"inline": 0, "encap": 1, "l2encap": 2, "encap.red": 3, "l2encap.red": 4}
_SEG6_LOCAL_ACTIONS = {"End.DX6": 5, "End.DT6": 7}


def _prefix_of(text: str) -> IPv6Network:
    return IPv6Network("::/0") if text == "default" else IPv6Network(text)


def _route_from_ip_json(pairs: list[tuple[str, Any]], indexes: dict[str, int]) -> Route:
    """A Route from one entry of ``ip -j -6 route show``: iproute2's decoder, not ours.

    Read as key-value pairs: for ``seg6local action End.DT6 table T`` iproute2 prints
    "table" twice, the action's (in the encap) before the route's.
    """
    item = dict(pairs)  # the last "table" wins: the route's
    tables = [value for key, value in pairs if key == "table"]
    encap: Seg6Encap | Seg6LocalEncap | None = None
    if item.get("encap") == "seg6":
        # pyroute2 (and so parse_route) lists the SRH's segments in their order in the
        # header; iproute2 prints them the other way round (as they were given to it).
        segments = tuple(IPv6Address(s) for s in reversed(item["segs"]))
        encap = Seg6Encap(segments, _SEG6_MODES[item["mode"]])
    elif item.get("encap") == "seg6local":
        action_table = tables[0] if len(tables) == 2 else None
        encap = Seg6LocalEncap(
            _SEG6_LOCAL_ACTIONS[item["action"]],
            _TABLES.get(action_table) or int(action_table) if action_table else None,
            IPv6Address(item["nh6"]) if "nh6" in item else None,
        )
    table = str(item.get("table", "main"))
    return Route(
        dst=_prefix_of(item["dst"]),
        table=_TABLES.get(table) or int(table),
        oif=indexes[item["dev"]],
        proto=RTPROT_MIP6,
        src=_prefix_of(item["from"]) if "from" in item else None,
        metric=int(item.get("metric", 0)),
        encap=encap,
    )


@needs_root
def test_raw_dump_parsers_read_what_the_kernel_sends_as_iproute2_does(make_topology: Any) -> None:
    topo = make_topology(mn_link="foreign1")
    require_dataplane("seg6")
    topo.ip("ha", "link", "add", "side0", "type", "veth", "peer", "name", "side1")
    for dev in ("side0", "side1"):
        topo.ip("ha", "link", "set", dev, "up")
    batch = [
        "route add 2001:db8:1::1001/128 encap seg6 mode encap.red segs 2001:db8:2::11 "
        f"dev {HOME} proto 86 metric 1024",
        "route add 2001:db8:1::1002/128 encap seg6 mode encap.red segs 2001:db8:2::12 "
        "dev side0 proto 86 metric 1024",
        "route add 2001:db8:7::/64 encap seg6 mode encap segs 2001:db8:2::1,2001:db8:2::2,"
        f"2001:db8:2::3 dev {HOME} proto 86",
        f"route add 2001:db8:9::/64 encap seg6 mode inline segs 2001:db8:2::5 dev {HOME} "
        "proto 86 metric 7",
        f"route add {HA_ADDRESS}/128 from 2001:db8:2::11/128 encap seg6local action End.DX6 "
        f"nh6 :: dev {HOME} table 100 proto 86 metric 1024",
        f"route add {HA_ADDRESS}/128 encap seg6local action End.DX6 nh6 2001:db8:1::fffe "
        f"dev {HOME} table 100 proto 86 metric 1000",
        f"route add 2001:db8:8::1/128 encap seg6local action End.DT6 table local dev {HOME} "
        "table 100 proto 86",
        f"route add 2001:db8:6::/48 dev {HOME} proto 86 metric 5",
        "route add 2001:db8:1::1003/128 dev side1 proto 85",  # not ours: filtered out
        f"neigh add proxy 2001:db8:1::1001 dev {HOME} proto 86",
        "neigh add proxy 2001:db8:1::1002 dev side0 proto 86",
        f"neigh add proxy 2001:db8:1::1004 dev {HOME}",  # no protocol
        "neigh add proxy 2001:db8:1::1005 dev side1 proto 12",
    ]
    done = subprocess.run(
        ["ip", "netns", "exec", topo.ns["ha"], "ip", "-6", "-batch", "-"],
        input="\n".join(batch) + "\n",
        text=True,
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr
    indexes = {
        link["ifname"]: int(link["ifindex"]) for link in json.loads(topo.ip("ha", "-j", "link"))
    }
    chunks: list[bytes] = []

    def keep(parse: Any) -> Any:
        def parse_and_keep(data: bytes) -> list[Any]:
            chunks.append(bytes(data))
            return list(parse(data))

        return parse_and_keep

    with topo.inside("ha"):
        nl = Netlink()
    try:
        request = _RTMSG.pack(socket.AF_INET6, 0, 0, 0, 0, RTPROT_MIP6, 0, 0, 0)
        routes = nl.raw_dump("dump routes", RTM_GETROUTE, request, keep(parse_routes))
        assert routes == nl.routes(RTPROT_MIP6)
        proxies = nl.proxies()
        # The same objects as through pyroute2's decoder (the parsers they replace).
        slow = rtmsg()
        slow["family"], slow["proto"] = socket.AF_INET6, RTPROT_MIP6
        assert routes == [parse_route(m) for m in nl.dump("", RTM_GETROUTE, slow)]
        slow_proxy = ndmsg()
        slow_proxy["family"], slow_proxy["flags"] = socket.AF_INET6, NTF_PROXY
        assert proxies == [parse_proxy(m) for m in nl.dump("", RTM_GETNEIGH, slow_proxy)]
    finally:
        nl.close()
    assert chunks and all(len(chunk) >= 16 for chunk in chunks)

    shown = json.loads(
        topo.ip("ha", "-N", "-j", "-6", "route", "show", "table", "all", "proto", "86"),
        object_pairs_hook=list,
    )
    expected = [_route_from_ip_json(pairs, indexes) for pairs in shown]
    assert sorted(routes, key=repr) == sorted(expected, key=repr)
    assert len(routes) == 8

    listed = json.loads(topo.ip("ha", "-N", "-j", "-6", "neigh", "show", "proxy"))
    expected_proxies = [
        ProxyEntry(
            IPv6Address(e["dst"]),
            indexes[e["dev"]],
            int(e["protocol"]) if "protocol" in e else None,
        )
        for e in listed
    ]
    assert sorted(proxies, key=repr) == sorted(expected_proxies, key=repr)
    assert {p.address for p in proxies} >= {
        IPv6Address(f"2001:db8:1::{n}") for n in (1001, 1002, 1004, 1005)
    }


def test_raw_route_parser_reads_captured_kernel_messages() -> None:
    """Two RTM_NEWROUTE messages a 6.18 kernel sent in a dump (``ip -6 route add
    2001:db8:1::100/128 encap seg6 mode encap.red segs 2001:db8:2::100 dev d0 proto 86
    metric 1024`` and ``... 2001:db8:1::1/128 from 2001:db8:2::100/128 encap seg6local
    action End.DX6 nh6 :: dev d0 table 100 proto 86``), kept to check without root."""
    tunnel = bytes.fromhex(
        "a00000001800220001000000840500000a800000fe5600010000000008000f00fe000000140001002001"
        "0db800010000000000000000010008000600000400000800040003000000240016002000010003000000"
        "000204000000000020010db80002000000000000000001000600150005000000"
        "24000c00" + "00" * 32 + "0500140000000000"
    )
    decap = bytes.fromhex(
        "b00000001800220002000000840500000a808000645600010000000008000f0064000000140001002001"
        "0db80001000000000000000000011400020020010db80002000000000000000001000800060000040000"
        "0800040003000000200016000800010005000000140005000000000000000000000000000000000006"
        "00150007000000"
        "24000c00" + "00" * 32 + "0500140000000000"
    )
    hoa, coa = IPv6Address("2001:db8:1::100"), IPv6Address("2001:db8:2::100")
    assert parse_routes(tunnel + decap) == [
        Route(
            IPv6Network(f"{hoa}/128"), RT_TABLE_MAIN, 3, RTPROT_MIP6, None, 1024, Seg6Encap((coa,))
        ),
        Route(
            IPv6Network("2001:db8:1::1/128"),
            100,
            3,
            RTPROT_MIP6,
            IPv6Network(f"{coa}/128"),
            1024,
            Seg6LocalEncap(5, None, IPv6Address("::")),
        ),
    ]
    assert parse_routes(tunnel[:100]) == []  # a message cut short is not read past its end
