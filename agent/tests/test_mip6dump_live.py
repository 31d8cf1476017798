"""mip6dump -i on a real veth link between two network namespaces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from netns import address, namespaces, popen_in, run_in, veth

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

SENDER = r"""
import socket, sys, time
from ipaddress import IPv6Address as A
from mip6agent import wire
src, dst, hoa = A("2001:db8:ff::1"), A("2001:db8:ff::2"), A("2001:db8:1::7")
sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
seq = 100
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    bu = wire.BindingUpdate(seq, 0xC000, 15)
    sock.sendto(wire.build_packet(src, dst, bu, home_address=hoa), (str(dst), 0))
    echo = bytes.fromhex("6000000000083a40") + src.packed + dst.packed
    sock.sendto(echo + bytes.fromhex("8000000000010001"), (str(dst), 0))
    seq += 1
    time.sleep(0.05)
"""


def test_live_capture_shows_only_mobile_ipv6_and_stops_after_count() -> None:
    with namespaces("mn", "ha") as ns:
        veth(ns["mn"], "m6a", ns["ha"], "m6b")
        address(ns["mn"], "m6a", "2001:db8:ff::1/64")
        address(ns["ha"], "m6b", "2001:db8:ff::2/64")
        dump = popen_in(
            ns["ha"],
            sys.executable,
            "-m",
            "mip6agent.cli.mip6dump",
            "-i",
            "m6b",
            "-c",
            "3",
            "-T",
            "json",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            time.sleep(0.3)
            run_in(ns["mn"], sys.executable, "-c", SENDER, "3", check=True, timeout=30)
            out, err = dump.communicate(timeout=30)
        finally:
            if dump.poll() is None:
                dump.kill()
                dump.wait()
        assert dump.returncode == 0, err
        records = [json.loads(line) for line in out.splitlines()]
        assert len(records) == 3
        seqs = [int(r["mip6.bu.seqnr"]) for r in records]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3
        for record in records:
            assert record["mip6.mhtype"] == "5"
            assert record["ipv6.opt.mipv6.home_address"] == "2001:db8:1::7"
            assert record["ipv6.src"] == "2001:db8:ff::1"
