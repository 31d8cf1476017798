"""lab/ro-capture-summary.py, which the Molecule route-optimization scenario trusts to tell
direct (RH2 / Home Address option), plain and tunnelled packets apart: a capture built
with scapy, one packet of each kind, decoded through tshark."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

scapy = pytest.importorskip("scapy.all")
pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")

SCRIPT = Path(__file__).resolve().parents[2] / "lab" / "ro-capture-summary.py"
CN, HOA, COA, HA = "2001:db8:4::9", "2001:db8:1::100", "2001:db8:2::100", "2001:db8:1::1"


def test_each_kind_of_packet_is_counted_where_it_belongs(tmp_path: Path) -> None:
    s = scapy
    ether = s.Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    packets = [
        ether / s.IPv6(src=CN, dst=COA)
        / s.IPv6ExtHdrRouting(type=2, segleft=1, addresses=[HOA]) / s.ICMPv6EchoRequest(),
        ether / s.IPv6(src=COA, dst=CN)
        / s.IPv6ExtHdrDestOpt(options=[s.HAO(hoa=HOA)]) / s.UDP(sport=7777, dport=4000),
        ether / s.IPv6(src=CN, dst=HOA) / s.ICMPv6EchoRequest(),
        ether / s.IPv6(src=HA, dst=COA) / s.IPv6(src=CN, dst=HOA) / s.UDP(sport=4000, dport=7777),
        ether / s.IPv6(src=COA, dst=CN) / s.IPv6ExtHdrDestOpt(options=[s.HAO(hoa=HOA)])
        / s.MIP6MH_BU(seq=1, flags=0),
        ether / s.IPv6(src=COA, dst=CN) / s.MIP6MH_CoTI(),
        ether / s.IPv6(src="2001:db8:4::7", dst=HOA) / s.ICMPv6EchoRequest(),  # another host
    ]  # fmt: skip
    capture = tmp_path / "ro.pcap"
    s.wrpcap(str(capture), packets)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(capture), "--correspondent", CN, "--home-address", HOA],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    summary = json.loads(done.stdout)
    assert summary["direct_to_mn"] == {"echo_request": 1}
    assert summary["direct_from_mn"] == {"udp": 1}
    assert summary["plain"] == {"echo_request": 1}
    assert summary["tunnelled"] == {"udp": 1}
    assert summary["care_of_addresses"] == [COA]
    assert summary["mobility"] == {"bu": 1, "coti": 1}
