"""A correspondent-node agent doing route optimisation end to end, on the standard topology.

The agent runs for real in the ``cn`` namespace with ``correspondent_node.route_optimization``
on, and its TC eBPF programs on its eth0. The mobile node is the sans-I/O
``CorrespondentRegistration`` in this process, sending and receiving real packets through
two raw-socket transports:

- its care-of address (2001:db8:2::100, foreign1) is the ``mn`` namespace's, so CoTI, the
  Binding Update (with a Home Address option) and everything sent with a Type 2 Routing
  Header to the care-of address go through there;
- no home agent runs; instead the home address (2001:db8:1::100) is put on the home link,
  on the ``ha`` namespace's eth0, so the HoTI really leaves from the home address and the
  HoT really comes back to it (the path a home agent's tunnel would give, minus the tunnel).

tshark decodes what the correspondent sends; ``bpftool`` reads the correspondent's binding
map independently of the agent (through the program on its eth0).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from ipaddress import IPv6Address
from pathlib import Path

import pytest
from agents import AgentProcess, wait_until
from mip6agent import wire
from mip6agent.core import actions as act
from mip6agent.core.correspondent_registration import (
    CorrespondentRegistration,
    RouteOptimizationSettings,
)
from mip6agent.io.dataplane.ro_bpf import available
from mip6agent.io.transport import SignalingTransport
from mip6agent.wire.constants import BEStatus
from topology import CN_ADDRESS, Topology
from tshark import require_tshark, tshark_fields, write_pcap

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

HOA = IPv6Address("2001:db8:1::100")
COA = IPv6Address("2001:db8:2::100")
OTHER_HOA = IPv6Address("2001:db8:1::200")
LINKTYPE_ETHERNET = 1
IPPROTO_DSTOPTS = 60
IPPROTO_UDP = 17


@pytest.fixture(scope="module")
def ebpf() -> None:
    ok, reason = available()
    if not ok:
        pytest.skip(f"TC eBPF data path unavailable: {reason}")
    if shutil.which("bpftool") is None or shutil.which("tc") is None:
        pytest.skip("bpftool and tc are needed to read the maps")


def cn_config(route_optimization: bool = True, brr_before: float | None = None) -> dict:
    section: dict = {"route_optimization": route_optimization}
    if brr_before is not None:
        section["binding_refresh_request_before"] = brr_before
    return {"role": "cn", "correspondent_node": section}


class Node:
    """The test mobile node: one registration, home and care-of transports."""

    def __init__(self, topo: Topology, lifetime: float = 420.0, sequence: int = 0) -> None:
        self.topo = topo
        self.home = topo.in_node("ha", lambda: SignalingTransport().open())
        self.careof = topo.in_node("mn", lambda: SignalingTransport().open())
        self.received: list[wire.Packet] = []
        self.installed: list[act.Action] = []
        self.new(lifetime, sequence)

    def new(self, lifetime: float, sequence: int | None = None) -> None:
        start = self.reg.sequence if sequence is None else sequence
        self.reg = CorrespondentRegistration(
            HOA,
            CN_ADDRESS,
            os.urandom,
            RouteOptimizationSettings(lifetime=lifetime),
            initial_sequence=start,
        )

    def send(self, actions: list) -> None:
        for action in actions:
            if isinstance(action, act.SendPacket):
                source = IPv6Address(action.data[8:24])
                (self.home if source == HOA else self.careof).send(action.data)
            elif isinstance(
                action, act.InstallCorrespondentBinding | act.RemoveCorrespondentBinding
            ):
                self.installed.append(action)

    def pump(self, until: Callable[[], bool], deadline: float = 15.0, what: str = "") -> None:
        end = time.monotonic() + deadline
        while not until():
            if time.monotonic() > end:
                raise AssertionError(f"timed out: {what} (state {self.reg.to_dict()})")
            for transport in (self.home, self.careof):
                item = transport.receive(timeout=0.02)
                if item is None:
                    continue
                self.received.append(item.packet)
                if self.reg.wants(item.packet):
                    self.send(self.reg.receive(item.packet, time.time()))
            due = self.reg.get_timer()
            if due is not None and due <= time.time():
                self.send(self.reg.handle_timer(time.time()))

    def bound(self) -> bool:
        return self.reg.state == "bound"

    def errors(self, status: int) -> list[wire.BindingError]:
        return [
            p.payload
            for p in self.received
            if isinstance(p.payload, wire.BindingError) and p.payload.status == status
        ]


def cn_bindings(cn: AgentProcess) -> list[dict]:
    return cn.call("bindings")


def map_entries(topo: Topology) -> list[dict] | None:
    """The correspondent's binding map as bpftool dumps it, found through the program on
    the cn node's eth0 egress; None when no program of ours is attached there."""
    out = topo.run("cn", "tc", "-j", "filter", "show", "dev", "eth0", "egress", check=True)
    ids = [
        f["options"]["prog"]["id"]
        for f in json.loads(out.stdout or "[]")
        if f.get("kind") == "bpf" and "cn_egress" in f.get("options", {}).get("bpf_name", "")
    ]
    if not ids:
        return None
    prog = json.loads(_bpftool("prog", "show", "id", str(ids[0])))
    for map_id in prog.get("map_ids", []):
        info = json.loads(_bpftool("map", "show", "id", str(map_id)))
        if info.get("name") == "cn_bindings":
            return json.loads(_bpftool("map", "dump", "id", str(map_id)))
    raise AssertionError(f"no cn_bindings map behind program {ids[0]}")


def _bpftool(*args: str) -> str:
    return subprocess.run(
        ["bpftool", "-j", *args], capture_output=True, text=True, check=True
    ).stdout


def _entry_addresses(entry: dict) -> tuple[IPv6Address, IPv6Address]:
    """(home address, care-of address) of one map entry (key: cn, home; value: coa, ...)."""
    key = bytes(int(b, 16) for b in entry["key"])
    value = bytes(int(b, 16) for b in entry["value"])
    return IPv6Address(key[16:32]), IPv6Address(value[:16])


def udp_with_hao(src: IPv6Address, dst: IPv6Address, home: IPv6Address) -> bytes:
    """A UDP datagram from ``src`` with a Home Address option naming ``home``."""
    udp = struct.pack("!HHHH", 40000, 9, 8 + 4, 0) + b"ping"
    # Destination Options: next header UDP, length 2 (24 octets): PadN(4), HAO at 8n+6.
    dstopts = bytes([IPPROTO_UDP, 2, 1, 2, 0, 0, 201, 16]) + home.packed
    payload = dstopts + udp
    header = struct.pack("!IHBB", 6 << 28, len(payload), IPPROTO_DSTOPTS, 64)
    return header + src.packed + dst.packed + payload


def mip6stat(topo: Topology, cn: AgentProcess, *args: str) -> str:
    return subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            topo.ns["cn"],
            sys.executable,
            "-m",
            "mip6agent.cli.mip6stat",
            "-S",
            cn.socket,
            *args,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def send_udp_from_cn(topo: Topology, dst: IPv6Address, count: int = 3) -> None:
    with topo.inside("cn"):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        for _ in range(count):
            sock.sendto(b"route optimised", (str(dst), 9))
            time.sleep(0.05)
    finally:
        sock.close()


def test_cn_agent_route_optimization_end_to_end(tmp_path: Path, ebpf: None) -> None:
    require_tshark()
    with Topology(mn_link="foreign1") as topo:
        topo.ip("ha", "addr", "add", f"{HOA}/64", "dev", "eth0", "nodad")
        node = Node(topo, lifetime=16)
        agent = AgentProcess(topo.ns["cn"], tmp_path / "cn", cn_config(brr_before=10))
        with agent as cn:
            status = cn.call("status")
            ro = status["route_optimization"]
            assert ro["enabled"] and ro["configured"] and "eth0" in ro["interfaces"], status
            assert status["dataplane"] == "tc-ebpf"
            assert "bindings" in status["lists"]
            assert map_entries(topo) == []

            # Return routability and a BU with the A bit: BA status 0.
            node.send(node.reg.away(COA, time.time()))
            node.pump(node.bound, what="RR and BA")
            assert any(isinstance(a, act.InstallCorrespondentBinding) for a in node.installed)
            rows = wait_until(lambda: cn_bindings(cn), what="correspondent binding")
            assert rows[0]["home_address"] == str(HOA)
            assert rows[0]["care_of_address"] == str(COA)
            assert rows[0]["dataplane_care_of_address"] == str(COA)
            entries = map_entries(topo)
            assert entries is not None and [_entry_addresses(e) for e in entries] == [(HOA, COA)]
            counters = cn.call("counters")
            for name in ("mh_in.hoti", "mh_in.coti", "mh_in.bu", "mh_out.hot", "mh_out.cot"):
                assert counters[name] >= 1, (name, counters)
            assert counters["ba_out.0_accepted"] >= 1, counters

            # mip6stat -b --json on the correspondent.
            shown = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    topo.ns["cn"],
                    sys.executable,
                    "-m",
                    "mip6agent.cli.mip6stat",
                    "-S",
                    cn.socket,
                    "-b",
                    "--json",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            listed = json.loads(shown.stdout)["bindings"]
            assert [(b["home_address"], b["care_of_address"]) for b in listed] == [
                (str(HOA), str(COA))
            ]
            # The table and -i: the binding row, and the route optimisation status.
            table = mip6stat(topo, cn, "-b", "-i")
            assert str(HOA) in table and str(COA) in table and "dataplane_packets" in table
            assert "route_optimization.enabled" in table and "tc-ebpf" in table, table

            # Data from the correspondent to the home address leaves with RH2, dst = CoA.
            capture = topo.capture("cn", "eth0")
            send_udp_from_cn(topo, HOA)
            time.sleep(0.3)
            frames = [f.data for f in capture.frames() if f.outgoing]
            pcap = write_pcap(tmp_path / "cn.pcap", frames, linktype=LINKTYPE_ETHERNET)
            rows_ = tshark_fields(
                pcap,
                [
                    "ipv6.dst",
                    "ipv6.routing.type",
                    "ipv6.routing.segleft",
                    "ipv6.routing.mipv6.home_address",
                    "udp.dstport",
                ],
            )
            udp = [r for r in rows_ if r["udp.dstport"] == "9"]
            assert len(udp) == 3, rows_
            for row in udp:
                assert row["ipv6.dst"] == str(COA), row
                assert (row["ipv6.routing.type"], row["ipv6.routing.segleft"]) == ("2", "1"), row
                assert row["ipv6.routing.mipv6.home_address"] == str(HOA), row

            # The headroom route: a 1500-octet datagram is fragmented to fit, and every
            # fragment leaves with RH2 (without it, it would go unchanged, too big).
            route = topo.ip("cn", "-6", "route", "show", f"{HOA}/128")
            assert "proto 87" in route and "mtu lock 1476" in route, route
            capture = topo.capture("cn", "eth0")
            with topo.inside("cn"):
                sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            try:
                sock.sendto(b"x" * 1452, (str(HOA), 9))
            finally:
                sock.close()
            time.sleep(0.3)
            frames = [f.data for f in capture.frames() if f.outgoing]
            pcap = write_pcap(tmp_path / "big.pcap", frames, linktype=LINKTYPE_ETHERNET)
            fragments = [
                r
                for r in tshark_fields(
                    pcap, ["ipv6.dst", "ipv6.routing.type", "ipv6.fraghdr.ident", "frame.len"]
                )
                if r["ipv6.fraghdr.ident"]
            ]
            assert len(fragments) == 2, fragments
            for row in fragments:
                assert row["ipv6.dst"] == str(COA) and row["ipv6.routing.type"] == "2", row
                assert int(row["frame.len"]) <= 1514, row

            # The counters of that binding tell the core it is in use: a Binding Refresh
            # Request 10 s before the 16 s binding expires, answered by a new RR and BU.
            rows = wait_until(
                lambda: [r for r in cn_bindings(cn) if r["last_use"]], what="note_use"
            )
            assert rows[0]["dataplane_packets"] >= 5
            node.pump(
                lambda: any(
                    isinstance(p.payload, wire.BindingRefreshRequest) for p in node.received
                ),
                deadline=15,
                what="Binding Refresh Request",
            )
            node.pump(node.bound, what="BA after the BRR")
            assert cn.call("counters")["mh_out.brr"] == 1

            # A HAO with no binding behind it reaches the agent: Binding Error status 1.
            node.careof.send(udp_with_hao(COA, CN_ADDRESS, OTHER_HOA))
            node.pump(
                lambda: bool(node.errors(BEStatus.UNKNOWN_BINDING_FOR_HAO)), what="BE status 1"
            )
            assert node.errors(BEStatus.UNKNOWN_BINDING_FOR_HAO)[0].home_address == OTHER_HOA

            # Deregistration from home removes the binding and its map entry.
            node.send(node.reg.home(time.time()))
            node.pump(lambda: node.reg.state == "idle", what="deregistration")
            wait_until(lambda: not cn_bindings(cn), what="binding gone")
            assert map_entries(topo) == []
            assert topo.ip("cn", "-6", "route", "show", f"{HOA}/128") == ""

            # Expiry removes it too: a 4 s binding, not refreshed.
            node.new(lifetime=4)
            node.send(node.reg.away(COA, time.time()))
            node.pump(node.bound, what="RR and BA, short binding")
            assert [_entry_addresses(e) for e in map_entries(topo) or []] == [(HOA, COA)]
            wait_until(lambda: not cn_bindings(cn), deadline=10, what="binding expired")
            assert map_entries(topo) == []
            assert cn.call("counters")["cn_binding_expired"] == 1

            # SIGHUP with route optimisation off: bindings, map entries and programs go,
            # and a HoTI earns Binding Error status 2.
            node.new(lifetime=60)
            node.send(node.reg.away(COA, time.time()))
            node.pump(node.bound, what="RR and BA before the reload")
            assert map_entries(topo)
            cn.config = {**cn.config, **cn_config(route_optimization=False)}
            cn.write_config()
            assert cn.proc is not None
            cn.proc.send_signal(signal.SIGHUP)
            wait_until(
                lambda: not cn.call("status")["route_optimization"]["enabled"], what="RO off"
            )
            wait_until(lambda: not cn_bindings(cn), what="bindings removed by the reload")
            wait_until(lambda: map_entries(topo) is None, what="programs detached")
            node.received.clear()
            hoti = wire.build_packet(HOA, CN_ADDRESS, wire.HomeTestInit(b"\x01" * 8))
            node.home.send(hoti)
            node.pump(lambda: bool(node.errors(BEStatus.UNRECOGNIZED_MH_TYPE)), what="BE status 2")
        log = agent.log.read_text()
        assert "Traceback" not in log and "failed" not in log, log
        # Stopped: nothing of ours is left on the interface.
        assert "proto 87" not in topo.ip("cn", "-6", "route", "show")
        assert map_entries(topo) is None
        qdiscs = topo.run("cn", "tc", "qdisc", "show", "dev", "eth0", check=True).stdout
        assert "clsact" not in qdiscs, qdiscs


def test_cn_agent_without_route_optimization_answers_be_2(tmp_path: Path) -> None:
    with Topology(mn_link="foreign1") as topo:
        topo.ip("ha", "addr", "add", f"{HOA}/64", "dev", "eth0", "nodad")
        node = Node(topo)
        with AgentProcess(topo.ns["cn"], tmp_path / "cn", cn_config(False)) as cn:
            status = cn.call("status")
            assert not status["route_optimization"]["enabled"]
            assert status["dataplane"] is None
            node.send(node.reg.away(COA, time.time()))
            node.pump(lambda: node.reg.state == "held", what="held after BE 2")
            assert node.errors(BEStatus.UNRECOGNIZED_MH_TYPE)
            assert cn_bindings(cn) == []
            counters = cn.call("counters")
            assert counters["be_out.2_unrecognized_mh_type"] >= 1, counters
            assert counters["mh_out.hot"] == 0
        qdiscs = topo.run("cn", "tc", "qdisc", "show", "dev", "eth0", check=True).stdout
        assert "clsact" not in qdiscs, qdiscs


def test_cn_agent_without_a_working_ebpf_backend_refuses_route_optimization(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """route_optimization on, but clang is not on the agent's PATH: the agent says why,
    serves on, and refuses return routability with BE status 2 (it must not accept
    bindings it cannot carry)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("mount",):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    with Topology(mn_link="foreign1") as topo:
        topo.ip("ha", "addr", "add", f"{HOA}/64", "dev", "eth0", "nodad")
        node = Node(topo)
        monkeypatch.setenv("PATH", f"{bin_dir}:/usr/sbin:/sbin")
        agent = AgentProcess(topo.ns["cn"], tmp_path / "cn", cn_config(True))
        with agent as cn:
            monkeypatch.undo()
            ro = cn.call("status")["route_optimization"]
            assert ro["configured"] and not ro["enabled"], ro
            assert "clang is not installed" in ro["reason"], ro
            node.send(node.reg.away(COA, time.time()))
            node.pump(lambda: node.reg.state == "held", what="held after BE 2")
            assert node.errors(BEStatus.UNRECOGNIZED_MH_TYPE)
            assert cn_bindings(cn) == []
        log = agent.log.read_text()
        assert "route optimisation refused" in log and "clang is not installed" in log, log
        assert map_entries(topo) is None


def test_cn_agent_restart_starts_with_no_bindings(tmp_path: Path, ebpf: None) -> None:
    """A correspondent killed with bindings comes back with none: its maps are empty, and
    the mobile node's next packet with a Home Address option earns Binding Error status 1;
    return routability then registers it again.

    (Under ``ip netns exec`` the agent's bpffs is private to it, so the killed run's pins
    are gone and the new run loads afresh; on a host, it reopens the pins and empties the
    map. The clsact qdisc the killed run added is then no longer known as ours.)"""
    with Topology(mn_link="foreign1") as topo:
        topo.ip("ha", "addr", "add", f"{HOA}/64", "dev", "eth0", "nodad")
        node = Node(topo, lifetime=60)
        agent = AgentProcess(topo.ns["cn"], tmp_path / "cn", cn_config())
        with agent as cn:
            node.send(node.reg.away(COA, time.time()))
            node.pump(node.bound, what="RR and BA")
            assert [_entry_addresses(e) for e in map_entries(topo) or []] == [(HOA, COA)]
            cn.kill9()
            cn.start()
            assert cn_bindings(cn) == []
            assert map_entries(topo) == []
            node.received.clear()
            node.careof.send(udp_with_hao(COA, CN_ADDRESS, HOA))
            node.pump(
                lambda: bool(node.errors(BEStatus.UNKNOWN_BINDING_FOR_HAO)), what="BE status 1"
            )
            assert node.reg.state != "bound"  # the registration runs RR again
            node.pump(node.bound, what="registered again")
            rows = wait_until(lambda: cn_bindings(cn), what="binding again")
            assert rows[0]["dataplane_care_of_address"] == str(COA)
            assert [_entry_addresses(e) for e in map_entries(topo) or []] == [(HOA, COA)]
        assert map_entries(topo) is None
