"""Home agent and mobile node agents on the standard namespace topology, with real radvd.

Everything here is real: agent processes, raw-socket signaling, seg6 tunnels, proxy NDP,
radvd router advertisements, and tshark as the independent decoder of what crossed the
wire. Deadlines bound waiting, they are not performance assertions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

import pytest
from agents import KEY_HEX, NAI, SPI, AgentProcess, wait_until, write_keys
from mip6agent import wire
from mip6agent.core.auth import MobilityKey, ntp_timestamp, protect
from mip6agent.io.dataplane import probe
from topology import CN_ADDRESS, HA_ADDRESS, Topology
from tshark import require_tshark

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

HOA = IPv6Address("2001:db8:1::100")
HOME_PREFIX = "2001:db8:1::/64"


def kernel_handles_hao() -> bool:
    """A kernel with CONFIG_IPV6_MIP6 (Debian's, lab/kernel-vm) processes the Home Address
    option itself; ours does not (KERNEL.md)."""
    return probe().mip6


def ha_config(directory: Path, **home_agent: object) -> dict:
    return {
        "role": "ha",
        "keys_file": str(write_keys(directory)),
        "home_agent": {
            "interfaces": ["eth0"],
            "home_prefixes": [HOME_PREFIX],
            "address": str(HA_ADDRESS),
            **home_agent,
        },
    }


def mn_config(directory: Path, key_hex: str = KEY_HEX, **mobile_node: object) -> dict:
    home = {
        "home_addresses": [
            {"address": f"{HOA}/64", "interface": "eth0", "home_agent": str(HA_ADDRESS)}
        ]
    }
    return {
        "role": "mn",
        "keys_file": str(write_keys(directory, key_hex)),
        "mobile_node": {"nai": NAI, "interfaces": ["eth0"], **home, **mobile_node},
    }


def binding_coa(ha: AgentProcess, home: IPv6Address = HOA) -> str | None:
    for binding in ha.call("bindings"):
        if binding["home_address"] == str(home):
            return binding["care_of_address"]
    return None


def bul_state(mn: AgentProcess) -> str:
    return mn.call("bul")[0]["state"]


def seg6_routes(topo: Topology) -> list[str]:
    out = topo.ip("ha", "-6", "route", "show", "table", "all", "proto", "86")
    return [line for line in out.splitlines() if str(HOA) in line]


def test_register_move_survive_ha_restart_and_return_home(tmp_path: Path) -> None:
    with (
        Topology(mn_link="foreign1", radvd=True) as topo,
        AgentProcess(topo.ns["ha"], tmp_path / "ha", ha_config(tmp_path / "ha")) as ha,
        AgentProcess(topo.ns["mn"], tmp_path / "mn", mn_config(tmp_path / "mn")) as mn,
    ):
        if True:
            # 1. registration from foreign1; traffic both ways through the HA
            coa1 = str(topo.coa)
            wait_until(lambda: binding_coa(ha) == coa1, what="binding at foreign1")
            wait_until(lambda: bul_state(mn) == "registered", what="MN registered")
            assert topo.ping("cn", HOA, deadline=10), "CN -> HoA through the tunnel"
            # "registered" comes with the BA; the reverse tunnel is attached just after it, so
            # a first ping may still leave natively: ask until one goes through the tunnel.
            wait_until(
                lambda: (
                    topo.ping("mn", CN_ADDRESS, source=HOA, deadline=2)
                    and ha.call("counters").get("tunnelled_in", 0) >= 1
                ),
                what="MN -> CN from the HoA through the reverse tunnel",
            )
            counters = ha.call("counters")
            assert counters["mh_in.bu"] >= 1 and counters["ba_out.0_accepted"] >= 1
            if not kernel_handles_hao():
                # Without MIP6 the stack answers the HAO with a Parameter Problem, which
                # the agent's nftables rule drops; a MIP6 kernel handles the option itself.
                assert counters["param_problem_dropped.hao"] >= 1, "the stack's error was silenced"

            # 2. move to foreign2: the binding follows and traffic resumes
            topo.move("mn", "foreign2")
            coa2 = str(topo.coa)
            wait_until(lambda: binding_coa(ha) == coa2, what="binding at foreign2")
            # Acknowledged: the HA wrote the binding before its BA left.
            wait_until(
                lambda: (
                    mn.call("bul")[0]["care_of_address"] == coa2 and bul_state(mn) == "registered"
                ),
                what="the MN's BA for foreign2",
            )
            assert topo.ping("cn", HOA, deadline=10), "CN -> HoA after the move"

            # 3. kill -9 the home agent: forwarding goes on from the kernel's state
            ha.kill9()
            assert topo.ping("cn", HOA, deadline=10), "forwarding with the HA agent dead"
            routes_before = seg6_routes(topo)
            ha.start()
            assert binding_coa(ha) == coa2, "binding cache restored from disk"
            assert seg6_routes(topo) == routes_before, "reconciliation created no duplicates"
            assert topo.ping("cn", HOA, deadline=10), "CN -> HoA after the restart"

            # 4. return home: deregistration removes the binding, the HoA works natively
            topo.move("mn", "home")
            wait_until(lambda: binding_coa(ha) is None, what="binding removed")
            wait_until(lambda: bul_state(mn) == "idle", what="MN deregistered")
            assert seg6_routes(topo) == [], "tunnel route removed at the HA"
            assert topo.ping("cn", HOA, deadline=10), "CN -> HoA at home"


def test_wrong_key_is_rejected_without_binding(tmp_path: Path) -> None:
    with Topology(mn_link="foreign1") as topo:
        wrong = "ff" * 20
        with (
            AgentProcess(topo.ns["ha"], tmp_path / "ha", ha_config(tmp_path / "ha")) as ha,
            AgentProcess(topo.ns["mn"], tmp_path / "mn", mn_config(tmp_path / "mn", wrong)) as mn,
        ):
            wait_until(lambda: ha.call("counters").get("auth_failed", 0) >= 2, what="auth failures")
            assert ha.call("counters").get("ba_out.146_mipv6_auth_fail", 0) >= 2
            assert ha.call("bindings") == []
            assert bul_state(mn) == "registering"
            assert not topo.ping("cn", HOA, deadline=1)


def _signed_bu(seq: int, coa: IPv6Address, timestamp: float, lifetime: int = 100) -> bytes:
    key = MobilityKey(SPI, bytes.fromhex(KEY_HEX))
    bu = wire.BindingUpdate(seq, 0xC000, lifetime // 4)
    bu = protect(bu, NAI.encode(), key, ntp_timestamp(timestamp), coa, HOA)
    return wire.build_packet(coa, HA_ADDRESS, bu, home_address=HOA)


SEND_AND_WAIT = r"""
import sys, time
from mip6agent import wire
from mip6agent.io.transport import SignalingTransport
packets = [bytes.fromhex(h) for h in sys.argv[1:]]
with SignalingTransport(receive_icmpv6=False).open() as t:
    for p in packets:
        t.send(p)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            r = t.receive(timeout=0.5)
            if r is not None and isinstance(r.packet.payload, wire.BindingAck):
                ba = r.packet.payload
                print(ba.status, ba.sequence)
                break
        else:
            print("none")
"""


def test_replay_and_out_of_window_sequence(tmp_path: Path) -> None:
    with (
        Topology(mn_link="foreign1") as topo,
        AgentProcess(topo.ns["ha"], tmp_path / "ha", ha_config(tmp_path / "ha", dad=False)) as ha,
    ):
        now = time.time()
        first = _signed_bu(1000, topo.coa, now)
        replay = first  # the same bytes again: same timestamp
        old_seq = _signed_bu(999, topo.coa, now + 1)
        result = topo.run(
            "mn",
            sys.executable,
            "-c",
            SEND_AND_WAIT,
            first.hex(),
            replay.hex(),
            old_seq.hex(),
            check=True,
            timeout=60,
        )
        lines = result.stdout.split("\n")
        assert lines[0] == "0 1000", result.stdout
        assert lines[1].split()[0] == "144", "a replayed BU gets MIPV6-ID-MISMATCH"
        assert lines[2] == "135 1000", "an older sequence number gets 135 and the last one"
        assert binding_coa(ha) == str(topo.coa)


def test_home_prefix_with_dhaad_finds_the_home_agent(tmp_path: Path) -> None:
    with Topology(mn_link="foreign1") as topo:
        mn_cfg = mn_config(tmp_path / "mn")
        mn_cfg["mobile_node"].pop("home_addresses")
        mn_cfg["mobile_node"]["home_prefix"] = HOME_PREFIX
        with (
            AgentProcess(
                topo.ns["ha"], tmp_path / "ha", ha_config(tmp_path / "ha", dad=False)
            ) as ha,
            AgentProcess(topo.ns["mn"], tmp_path / "mn", mn_cfg) as mn,
        ):
            wait_until(lambda: bul_state(mn) == "registered", what="registration via DHAAD")
            entry = mn.call("bul")[0]
            assert entry["home_agent"] == str(HA_ADDRESS)
            home = IPv6Address(entry["home_address"])
            assert home in IPv6Network(HOME_PREFIX)
            assert ha.call("counters").get("dhaad_request_in", 0) >= 1
            assert binding_coa(ha, home) == str(topo.coa)
            assert topo.ping("cn", home, deadline=10)


def test_bu_and_ba_on_the_wire_decode_in_tshark_as_the_agents_logged(tmp_path: Path) -> None:
    require_tshark()
    with Topology(mn_link="foreign1") as topo:
        capture_file = tmp_path / "foreign1.pcapng"
        dump = topo.popen(
            "router",
            "tshark",
            "-q",
            "-i",
            "foreign1",
            "-w",
            str(capture_file),
            "-f",
            "ip6",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_until(
                lambda: capture_file.exists() and capture_file.stat().st_size > 0,
                what="tshark started",
            )
            with (
                AgentProcess(
                    topo.ns["ha"], tmp_path / "ha", ha_config(tmp_path / "ha", dad=False)
                ) as ha,
                AgentProcess(topo.ns["mn"], tmp_path / "mn", mn_config(tmp_path / "mn")) as mn,
            ):
                wait_until(lambda: bul_state(mn) == "registered", what="registration")
                logged = mn.call("bul")[0]
                binding = ha.call("bindings")[0]
                topo.ping("cn", HOA, deadline=5)
        finally:
            dump.terminate()
            dump.wait(timeout=10)
        fields = [
            "mip6.mhtype",
            "mip6.bu.seqnr",
            "mip6.bu.a_flag",
            "mip6.bu.h_flag",
            "mip6.bu.lifetime",
            "mip6.ba.status",
            "mip6.ba.seqnr",
            "mip6.ba.lifetime",
            "ipv6.opt.mipv6.home_address",
            "ipv6.routing.mipv6.home_address",
            "ipv6.src",
        ]
        args = ["tshark", "-r", str(capture_file), "-Y", "mipv6", "-T", "fields"]
        for name in fields:
            args += ["-e", name]
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        rows = [dict(zip(fields, line.split("\t"), strict=True)) for line in out.splitlines()]
        bus = [r for r in rows if r["mip6.mhtype"] == "5"]
        bas = [r for r in rows if r["mip6.mhtype"] == "6"]
        assert bus and bas, out
        assert bus[-1]["mip6.bu.seqnr"] == str(logged["sequence"])
        assert bus[-1]["mip6.bu.seqnr"] == str(binding["sequence"])
        assert (bus[-1]["mip6.bu.a_flag"], bus[-1]["mip6.bu.h_flag"]) == ("1", "1")
        assert bus[-1]["ipv6.opt.mipv6.home_address"] == str(HOA)
        assert bus[-1]["ipv6.src"] == str(topo.coa)
        assert bas[-1]["mip6.ba.status"] == "0"
        assert bas[-1]["mip6.ba.seqnr"] == str(logged["sequence"])
        assert int(bas[-1]["mip6.ba.lifetime"]) * 4 == int(binding["lifetime"])
        assert bas[-1]["ipv6.routing.mipv6.home_address"] == str(HOA)
        # and the agents' own protocol traces logged the same messages
        seq = bus[-1]["mip6.bu.seqnr"]
        assert (
            f"out {topo.coa} > {HA_ADDRESS}: HAO home {HOA} MH BU seq {seq} " in mn.log.read_text()
        )
        assert f"MH BA status 0 (accepted) seq {seq} " in ha.log.read_text()
        # the data plane really is IPv6-in-IPv6 on this link
        encapsulated = subprocess.run(
            [
                "tshark",
                "-r",
                str(capture_file),
                "-Y",
                f"ipv6.nxt == 41 && ipv6.dst == {topo.coa}",
                "-T",
                "fields",
                "-e",
                "ipv6.src",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        # ipv6.src lists the outer header first, then the inner one
        assert str(HA_ADDRESS) in [line.split(",")[0] for line in encapsulated]


def test_two_home_addresses_and_mobile_node_restart(tmp_path: Path) -> None:
    second = IPv6Address("2001:db8:1::200")
    config = mn_config(tmp_path / "mn")
    config["mobile_node"]["home_addresses"].append(
        {"address": f"{second}/64", "interface": "eth0", "home_agent": str(HA_ADDRESS)}
    )
    with (
        Topology(mn_link="foreign1") as topo,
        AgentProcess(topo.ns["ha"], tmp_path / "ha", ha_config(tmp_path / "ha", dad=False)) as ha,
        AgentProcess(topo.ns["mn"], tmp_path / "mn", config) as mn,
    ):
        for home in (HOA, second):
            wait_until(lambda h=home: binding_coa(ha, h) == str(topo.coa), what=f"binding {home}")
            assert topo.ping("cn", home, deadline=10), f"CN -> {home}"
        sequences = {e["home_address"]: e["sequence"] for e in mn.call("bul")}
        mn.kill9()
        assert topo.ping("cn", second, deadline=10), "tunnels outlive the MN agent"
        mn.start()

        def restored_entries() -> dict | None:
            # The agent answers before movement detection has seen the care-of address
            # again (seconds under qemu without KVM): entries are idle until then.
            entries = {e["home_address"]: e for e in mn.call("bul")}
            states = {entries.get(str(h), {}).get("state") for h in (HOA, second)}
            return entries if states <= {"registered", "registering"} else None

        restored = wait_until(restored_entries, what="restored registrations")
        for home in (HOA, second):
            assert restored[str(home)]["sequence"] >= sequences[str(home)]
        # the restored registrations refresh with newer sequence numbers, not a 135 storm
        wait_until(
            lambda: all(
                e["state"] == "registered" and e["sequence"] > sequences[e["home_address"]]
                for e in mn.call("bul")
            ),
            what="refreshed after restart",
        )
        assert ha.call("counters").get("ba_out.135_sequence_number_out_of_window", 0) == 0
        for home in (HOA, second):
            assert topo.ping("cn", home, deadline=10), f"CN -> {home} after the MN restart"


def test_slaac_handover_leaves_the_old_link(tmp_path: Path) -> None:
    """With SLAAC the old address lingers in the kernel; the agent must still move on."""
    with (
        Topology(mn_link="foreign1", addressing="slaac", radvd=True, mn_dad=True) as topo,
        AgentProcess(topo.ns["ha"], tmp_path / "ha", ha_config(tmp_path / "ha", dad=False)) as ha,
        AgentProcess(topo.ns["mn"], tmp_path / "mn", mn_config(tmp_path / "mn")) as mn,
    ):
        first = str(topo.coa)
        wait_until(lambda: binding_coa(ha) == first, what="registration via SLAAC")
        for link in ("foreign2", "foreign1", "foreign2"):
            topo.move("mn", link)
            coa = str(topo.coa)
            wait_until(lambda c=coa: binding_coa(ha) == c, what=f"binding follows to {link}")
            assert topo.ping("cn", HOA, deadline=10), f"CN -> HoA on {link}"
            addresses = topo.ip("mn", "-6", "addr", "show", "dev", "eth0", "scope", "global")
            assert first not in addresses or coa == first, "the old SLAAC address is gone"
            routes = topo.ip("mn", "-6", "route", "show", "default")
            assert routes.count("via") == 1, routes
        assert mn.call("bul")[0]["care_of_address"] == str(topo.coa)
