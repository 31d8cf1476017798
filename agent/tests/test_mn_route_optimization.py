"""Route optimisation between our mobile node and our correspondent node, end to end.

Three real agents on the standard topology: the home agent (ha), the mobile node on
foreign1 (static addresses: home 2001:db8:1::100, care-of 2001:db8:2::100) with
``mobile_node.route_optimization`` and the correspondent in ``correspondents``, and the
correspondent (cn) with ``correspondent_node.route_optimization``. After return
routability, data between sockets bound to the home address and the correspondent goes
direct: tshark decodes the captures of the correspondent's link (RH2 out, Home Address
option in) and of the home agent's link (no packet of the flow), and the sockets see the
home address on both ends.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from ipaddress import IPv6Address
from pathlib import Path

import pytest
from agents import AgentProcess, wait_until
from mip6agent.io.dataplane.ro_bpf import available
from test_agent_integration import binding_coa, ha_config, mn_config
from topology import CN_ADDRESS, Topology
from tshark import require_tshark, tshark_fields, write_pcap

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

HOA = IPv6Address("2001:db8:1::100")
COA = IPv6Address("2001:db8:2::100")
COA2 = IPv6Address("2001:db8:3::100")
LINKTYPE_ETHERNET = 1
PORT = 40123
MARK = b"mip6-ro-flow-"


@pytest.fixture(scope="module")
def ebpf() -> None:
    ok, reason = available()
    if not ok:
        pytest.skip(f"TC eBPF data path unavailable: {reason}")
    if shutil.which("tc") is None:
        pytest.skip("tc is needed")


def _mn_ro_config(directory: Path) -> dict:
    config = mn_config(directory)
    config["mobile_node"]["route_optimization"] = True
    config["mobile_node"]["correspondents"] = [str(CN_ADDRESS)]
    return config


def _cn_config(route_optimization: bool = True) -> dict:
    return {"role": "cn", "correspondent_node": {"route_optimization": route_optimization}}


def _entry(mn: AgentProcess) -> dict | None:
    rows = mn.call("correspondents")
    return rows[0] if rows else None


def _bound(mn: AgentProcess, coa: IPv6Address) -> bool:
    entry = _entry(mn)
    return bool(entry and entry["state"] == "bound" and entry["dataplane"] == str(coa))


def _udp(topo: Topology, node: str, bind: IPv6Address | None, dst: IPv6Address, tag: bytes):
    with topo.inside(node):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        if bind is not None:
            sock.bind((str(bind), 0))
        for i in range(3):
            sock.sendto(MARK + tag + bytes([i]), (str(dst), PORT))
            time.sleep(0.02)
    finally:
        sock.close()


def _receiver(topo: Topology, node: str, address: IPv6Address) -> socket.socket:
    with topo.inside(node):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind((str(address), PORT))
    sock.settimeout(3)
    return sock


def _received(sock: socket.socket, count: int = 3) -> list[tuple[bytes, str]]:
    out = []
    try:
        while len(out) < count:
            data, peer = sock.recvfrom(2048)
            out.append((data, peer[0]))
    except TimeoutError:
        pass
    return out


def _flow(frames: list[bytes]) -> list[bytes]:
    return [f for f in frames if MARK in f]


def test_route_optimization_between_our_mobile_node_and_correspondent(
    tmp_path: Path, ebpf: None
) -> None:
    require_tshark()
    with Topology(mn_link="foreign1") as topo:
        ha_dir, mn_dir, cn_dir = tmp_path / "ha", tmp_path / "mn", tmp_path / "cn"
        with (
            AgentProcess(topo.ns["cn"], cn_dir, _cn_config()) as cn,
            AgentProcess(topo.ns["ha"], ha_dir, ha_config(ha_dir)) as ha,
            AgentProcess(topo.ns["mn"], mn_dir, _mn_ro_config(mn_dir)) as mn,
        ):
            wait_until(lambda: binding_coa(ha) == str(COA), what="home registration")
            wait_until(lambda: _bound(mn, COA), deadline=20, what="correspondent binding")
            rows = cn.call("bindings")
            assert [(r["home_address"], r["care_of_address"]) for r in rows] == [
                (str(HOA), str(COA))
            ]
            counters = mn.call("counters")
            for name in ("mh_out.hoti", "mh_out.coti", "mh_in.hot", "mh_in.cot"):
                assert counters.get(name, 0) >= 1, (name, counters)
            assert counters.get("ba_in.0_accepted", 0) >= 2, counters  # the HA's and the CN's

            # CN -> home address: direct, with a Type 2 Routing Header to the care-of address.
            at_cn, at_ha = topo.capture("cn", "eth0"), topo.capture("ha", "eth0")
            rx = _receiver(topo, "mn", HOA)
            try:
                _udp(topo, "cn", None, HOA, b"to-mn")
                got = _received(rx)
            finally:
                rx.close()
            assert [d for d, _ in got] == [MARK + b"to-mn" + bytes([i]) for i in range(3)]
            assert {peer for _, peer in got} == {str(CN_ADDRESS)}
            time.sleep(0.2)
            out = _flow([f.data for f in at_cn.frames() if f.outgoing])
            assert len(out) == 3
            rows_ = tshark_fields(
                write_pcap(tmp_path / "cn-out.pcap", out, linktype=LINKTYPE_ETHERNET),
                ["ipv6.dst", "ipv6.routing.type", "ipv6.routing.mipv6.home_address"],
            )
            assert (
                rows_
                == [
                    {
                        "ipv6.dst": str(COA),
                        "ipv6.routing.type": "2",
                        "ipv6.routing.mipv6.home_address": str(HOA),
                    }
                ]
                * 3
            ), rows_
            assert _flow([f.data for f in at_ha.frames()]) == [], "the flow crossed the HA"

            # Home address -> CN: from the care-of address with a Home Address option; the
            # correspondent's socket sees the home address.
            at_cn, at_ha = topo.capture("cn", "eth0"), topo.capture("ha", "eth0")
            rx = _receiver(topo, "cn", CN_ADDRESS)
            try:
                _udp(topo, "mn", HOA, CN_ADDRESS, b"to-cn")
                got = _received(rx)
            finally:
                rx.close()
            assert [d for d, _ in got] == [MARK + b"to-cn" + bytes([i]) for i in range(3)]
            assert {peer for _, peer in got} == {str(HOA)}
            time.sleep(0.2)
            inbound = _flow([f.data for f in at_cn.frames() if not f.outgoing])
            rows_ = tshark_fields(
                write_pcap(tmp_path / "cn-in.pcap", inbound, linktype=LINKTYPE_ETHERNET),
                ["ipv6.src", "ipv6.opt.mipv6.home_address"],
            )
            assert rows_ == [{"ipv6.src": str(COA), "ipv6.opt.mipv6.home_address": str(HOA)}] * 3, (
                rows_
            )
            assert _flow([f.data for f in at_ha.frames()]) == [], "the reply crossed the HA"

            # A TCP connection from the home address to the correspondent, bound both ends.
            with topo.inside("cn"):
                server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            server.bind((str(CN_ADDRESS), PORT))
            server.listen(1)
            server.settimeout(5)
            with topo.inside("mn"):
                client = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            try:
                client.bind((str(HOA), 0))
                client.settimeout(5)
                client.connect((str(CN_ADDRESS), PORT))
                conn, peer = server.accept()
                with conn:
                    client.sendall(b"hello over RO")
                    assert conn.recv(100) == b"hello over RO"
                    conn.sendall(b"and back")
                    assert client.recv(100) == b"and back"
                assert peer[0] == str(HOA)
            finally:
                client.close()
                server.close()

            # Handover to foreign2 on a new interface (eth0 replaced, as a Podman move
            # does): only the care-of test again, the CN follows, and data still flows
            # both ways through the programs on the new eth0.
            before = mn.call("counters")
            topo.move("mn", "foreign2", replug=True)
            wait_until(lambda: binding_coa(ha) == str(COA2), what="home registration at foreign2")
            wait_until(lambda: _bound(mn, COA2), deadline=20, what="correspondent at foreign2")
            after = mn.call("counters")
            assert after.get("mh_out.coti", 0) > before.get("mh_out.coti", 0)
            assert after.get("mh_out.hoti", 0) == before.get("mh_out.hoti", 0), (before, after)
            rows = cn.call("bindings")
            assert [(r["home_address"], r["care_of_address"]) for r in rows] == [
                (str(HOA), str(COA2))
            ]
            at_cn = topo.capture("cn", "eth0")
            for node, bind, dst, peer_node, tag in (
                ("cn", None, HOA, "mn", b"to-mn-2"),
                ("mn", HOA, CN_ADDRESS, "cn", b"to-cn-2"),
            ):
                rx = _receiver(topo, peer_node, dst)
                try:
                    _udp(topo, node, bind, dst, tag)
                    got = _received(rx)
                finally:
                    rx.close()
                assert [d for d, _ in got] == [MARK + tag + bytes([i]) for i in range(3)], tag
            time.sleep(0.2)
            out = _flow([f.data for f in at_cn.frames() if f.outgoing])
            rows_ = tshark_fields(
                write_pcap(tmp_path / "cn-out-2.pcap", out, linktype=LINKTYPE_ETHERNET),
                ["ipv6.dst", "ipv6.routing.mipv6.home_address"],
            )
            assert rows_ == [{"ipv6.dst": str(COA2),
                              "ipv6.routing.mipv6.home_address": str(HOA)}] * 3, rows_  # fmt: skip

            # Back home: the mobile node deregisters with the correspondent too.
            topo.move("mn", "home")
            wait_until(lambda: binding_coa(ha) is None, what="deregistered at home")
            wait_until(lambda: cn.call("bindings") == [], what="CN binding gone")
            entry = _entry(mn)
            assert entry is not None and entry["state"] == "idle", entry
            rules = topo.ip("mn", "-6", "rule")
            assert "lookup 190" not in rules and "goto" not in rules, rules


def test_correspondent_without_route_optimization_keeps_the_tunnel(
    tmp_path: Path, ebpf: None
) -> None:
    with Topology(mn_link="foreign1") as topo:
        ha_dir, mn_dir, cn_dir = tmp_path / "ha", tmp_path / "mn", tmp_path / "cn"
        with (
            AgentProcess(topo.ns["cn"], cn_dir, _cn_config(False)) as cn,
            AgentProcess(topo.ns["ha"], ha_dir, ha_config(ha_dir)) as ha,
            AgentProcess(topo.ns["mn"], mn_dir, _mn_ro_config(mn_dir)) as mn,
        ):
            wait_until(lambda: binding_coa(ha) == str(COA), what="home registration")
            wait_until(lambda: (_entry(mn) or {}).get("state") == "held", deadline=20, what="held")
            assert mn.call("counters").get("be_in.2_unrecognized_mh_type", 0) >= 1
            assert cn.call("bindings") == []
            # Still reachable, through the home agent's tunnel.
            at_ha = topo.capture("ha", "eth0")
            rx = _receiver(topo, "mn", HOA)
            try:
                _udp(topo, "cn", None, HOA, b"tunnel")
                got = _received(rx)
            finally:
                rx.close()
            assert len(got) == 3
            time.sleep(0.2)
            assert len(_flow([f.data for f in at_ha.frames()])) >= 3, "not through the HA"


def test_traffic_through_the_tunnel_picks_the_correspondent(tmp_path: Path, ebpf: None) -> None:
    """No correspondent listed: nothing happens until the tunnel carries traffic with the
    CN (here from the CN to the home address: what the home agent tunnels to the node);
    then return routability runs and the flow goes direct."""
    with Topology(mn_link="foreign1") as topo:
        ha_dir, mn_dir, cn_dir = tmp_path / "ha", tmp_path / "mn", tmp_path / "cn"
        config = _mn_ro_config(mn_dir)
        del config["mobile_node"]["correspondents"]
        with (
            AgentProcess(topo.ns["cn"], cn_dir, _cn_config()) as cn,
            AgentProcess(topo.ns["ha"], ha_dir, ha_config(ha_dir)) as ha,
            AgentProcess(topo.ns["mn"], mn_dir, config) as mn,
        ):
            wait_until(lambda: binding_coa(ha) == str(COA), what="home registration")
            time.sleep(3)  # three polls of the traffic set with no traffic
            assert mn.call("correspondents") == []
            assert mn.call("counters").get("mh_out.hoti", 0) == 0
            # CN -> home address, through the home agent's tunnel.
            at_ha = topo.capture("ha", "eth0")
            rx = _receiver(topo, "mn", HOA)
            try:
                _udp(topo, "cn", None, HOA, b"tunnelled")
                assert len(_received(rx)) == 3
            finally:
                rx.close()
            time.sleep(0.2)
            assert len(_flow([f.data for f in at_ha.frames()])) >= 3, "not through the HA"
            wait_until(lambda: _bound(mn, COA), deadline=20, what="correspondent from traffic")
            assert [(r["home_address"], r["care_of_address"]) for r in cn.call("bindings")] == [
                (str(HOA), str(COA))
            ]
            # Now direct both ways: nothing of the flow at the home agent.
            at_ha = topo.capture("ha", "eth0")
            rx = _receiver(topo, "cn", CN_ADDRESS)
            try:
                _udp(topo, "mn", HOA, CN_ADDRESS, b"direct")
                got = _received(rx)
            finally:
                rx.close()
            assert {peer for _, peer in got} == {str(HOA)} and len(got) == 3
            rx = _receiver(topo, "mn", HOA)
            try:
                _udp(topo, "cn", None, HOA, b"direct-back")
                assert len(_received(rx)) == 3
            finally:
                rx.close()
            time.sleep(0.2)
            assert _flow([f.data for f in at_ha.frames()]) == [], "the flow crossed the HA"
            # Home: the node deregisters with the correspondent it picked from traffic.
            topo.move("mn", "home")
            wait_until(lambda: cn.call("bindings") == [], what="CN binding gone at home")


def _both_ways_direct(topo: Topology, tag: bytes) -> None:
    """UDP from the CN to the home address and back, each received, none at the HA."""
    at_ha = topo.capture("ha", "eth0")
    for node, bind, dst, peer_node in (
        ("cn", None, HOA, "mn"),
        ("mn", HOA, CN_ADDRESS, "cn"),
    ):
        rx = _receiver(topo, peer_node, dst)
        try:
            _udp(topo, node, bind, dst, tag + node.encode())
            got = _received(rx)
        finally:
            rx.close()
        assert [d for d, _ in got] == [MARK + tag + node.encode() + bytes([i]) for i in range(3)]
    time.sleep(0.2)
    assert _flow([f.data for f in at_ha.frames()]) == [], "the flow crossed the HA"


def test_mobile_node_killed_while_route_optimized_recovers(tmp_path: Path, ebpf: None) -> None:
    """kill -9 of the mobile node with a correspondent binding: the CN keeps its binding,
    the restarted node runs return routability again and ends with exactly one eBPF map
    entry for the correspondent, and data goes direct both ways again."""
    with Topology(mn_link="foreign1") as topo:
        ha_dir, mn_dir, cn_dir = tmp_path / "ha", tmp_path / "mn", tmp_path / "cn"
        with (
            AgentProcess(topo.ns["cn"], cn_dir, _cn_config()) as cn,
            AgentProcess(topo.ns["ha"], ha_dir, ha_config(ha_dir)) as ha,
            AgentProcess(topo.ns["mn"], mn_dir, _mn_ro_config(mn_dir)) as mn,
        ):
            wait_until(lambda: binding_coa(ha) == str(COA), what="home registration")
            wait_until(lambda: _bound(mn, COA), deadline=20, what="correspondent binding")
            _both_ways_direct(topo, b"before-")
            mn.kill9()
            mn.start()
            wait_until(lambda: _bound(mn, COA), deadline=20, what="correspondent after restart")
            # The new process ran return routability itself (its counters start at zero).
            assert mn.call("counters").get("mh_out.hoti", 0) >= 1
            entries = [
                r for r in mn.call("correspondents") if r["correspondent"] == str(CN_ADDRESS)
            ]
            assert len(entries) == 1 and entries[0]["dataplane"] == str(COA), entries
            rows = cn.call("bindings")
            assert [(r["home_address"], r["care_of_address"]) for r in rows] == [
                (str(HOA), str(COA))
            ]
            _both_ways_direct(topo, b"after-")


def _rr_states(textfile: Path) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    if not textfile.exists():
        return {}
    return {
        sample.labels["state"]: sample.value
        for family in text_string_to_metric_families(textfile.read_text())
        if family.name == "mip6_correspondent_entries"
        for sample in family.samples
    }


def test_interface_replaced_on_the_same_link_keeps_route_optimization(
    tmp_path: Path, ebpf: None
) -> None:
    """eth0 replaced by a new eth0 on the same link (same care-of address): no move to
    signal, but the programs, the tunnel and the direct route went with the old interface;
    data must go direct both ways again."""
    textfile = tmp_path / "prom" / "mn.prom"
    textfile.parent.mkdir()
    with Topology(mn_link="foreign1") as topo:
        ha_dir, mn_dir, cn_dir = tmp_path / "ha", tmp_path / "mn", tmp_path / "cn"
        mn_config_ = _mn_ro_config(mn_dir)
        mn_config_["metrics"] = {"textfile": str(textfile), "interval": 1}
        with (
            AgentProcess(topo.ns["cn"], cn_dir, _cn_config()),
            AgentProcess(topo.ns["ha"], ha_dir, ha_config(ha_dir)) as ha,
            AgentProcess(topo.ns["mn"], mn_dir, mn_config_) as mn,
        ):
            wait_until(lambda: binding_coa(ha) == str(COA), what="home registration")
            wait_until(lambda: _bound(mn, COA), deadline=20, what="correspondent binding")
            # The metrics say so too (parsed by prometheus_client, not by our writer).
            wait_until(lambda: _rr_states(textfile).get("bound") == 1, what="metrics: bound")
            assert _rr_states(textfile) == {
                "idle": 0, "testing": 0, "updating": 0, "bound": 1, "held": 0,
            }  # fmt: skip
            topo.move("mn", "foreign1", replug=True)
            wait_until(
                lambda: "route-optimised binding(s) again" in mn.log.read_text(),
                what="bindings reinstalled on the new eth0",
            )
            _both_ways_direct(topo, b"replugged-")
