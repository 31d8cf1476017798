"""The kernel MIP6 XFRM route-optimisation backend (RoXfrm) on the wire.

Needs root and a kernel with CONFIG_IPV6_MIP6 (the qemu VM's Debian kernel:
``lab/kernel-vm/run.sh agent/tests/test_ro_xfrm.py``); skipped elsewhere.

Two namespaces on one veth: ``cn`` (2001:db8:1::1) and ``mn`` (the care-of address
2001:db8:1::2). The home address 2001:db8:4::100 is routed by the CN onto the veth. With
a binding installed, UDP datagrams from the CN to the home address must leave with destination
= care-of address and a Type 2 Routing Header holding the home address (decoded by
tshark); a UDP datagram from the care-of address with a Home Address option (built
octet by octet here, sent on an AF_PACKET socket) must reach a CN socket as coming from
the home address; after remove_binding no state or policy of ours is left and the same
datagram is no longer delivered.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
from ipaddress import IPv6Address
from pathlib import Path

import pytest
from mip6agent.io.dataplane.ro_xfrm import PRIORITY, REQID, RoXfrm

CN = IPv6Address("2001:db8:1::1")
COA = IPv6Address("2001:db8:1::2")
HOME = IPv6Address("2001:db8:4::100")
NS_CN, NS_MN = "roxcn", "roxmn"


def _mip6_kernel() -> bool:
    config = Path(f"/boot/config-{os.uname().release}")
    return config.exists() and any(
        line.strip() in ("CONFIG_IPV6_MIP6=y", "CONFIG_IPV6_MIP6=m")
        for line in config.read_text().splitlines()
    )


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not _mip6_kernel(), reason="kernel without CONFIG_IPV6_MIP6"),
]


def send_udp(ns: str, address: IPv6Address, count: int, port: int = 9) -> None:
    """``count`` UDP datagrams from ``ns`` to ``address`` (the VM's root has no ping)."""
    code = (
        "import socket,sys,time;s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n"
        "for i in range(int(sys.argv[2])):\n"
        " s.sendto(b'ro probe',(sys.argv[1],int(sys.argv[3])));time.sleep(0.3)\n"
    )
    nsx(ns, "python3", "-c", code, str(address), str(count), str(port))


def sh(*args: str, check: bool = True) -> str:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {done.stderr}")
    return done.stdout


def nsx(ns: str, *args: str, check: bool = True) -> str:
    return sh("ip", "netns", "exec", ns, *args, check=check)


@pytest.fixture
def topo():
    for ns in (NS_CN, NS_MN):
        sh("ip", "netns", "del", ns, check=False)
        sh("ip", "netns", "add", ns)
        nsx(ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0")
        nsx(ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
        nsx(ns, "ip", "link", "set", "lo", "up")
    sh("ip", "-n", NS_CN, "link", "add", "cn0", "type", "veth", "peer", "mn0", "netns", NS_MN)
    sh("ip", "-n", NS_CN, "addr", "add", f"{CN}/64", "dev", "cn0", "nodad")
    sh("ip", "-n", NS_MN, "addr", "add", f"{COA}/64", "dev", "mn0", "nodad")
    sh("ip", "-n", NS_CN, "link", "set", "cn0", "up")
    sh("ip", "-n", NS_MN, "link", "set", "mn0", "up")
    sh("ip", "-n", NS_CN, "route", "add", "2001:db8:4::/64", "dev", "cn0")
    send_udp(NS_CN, COA, 1)  # neighbours resolved
    try:
        yield
    finally:
        for ns in (NS_CN, NS_MN):
            sh("ip", "netns", "del", ns, check=False)


def _capture(tmp_path: Path, name: str) -> tuple[subprocess.Popen, Path]:
    pcap = tmp_path / f"{name}.pcap"
    proc = subprocess.Popen(
        ["ip", "netns", "exec", NS_MN, "tshark", "-q", "-i", "mn0", "-w", str(pcap), "-f", "ip6"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not pcap.exists() or pcap.stat().st_size == 0:  # tshark writes a header at start
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "tshark ended"
        assert time.monotonic() < deadline, "tshark did not start capturing"
        time.sleep(0.2)
    time.sleep(1)
    return proc, pcap


def _stop(proc: subprocess.Popen) -> None:
    time.sleep(1)
    proc.terminate()
    proc.wait(timeout=30)


def _decode(pcap: Path, display: str) -> list[dict]:
    out = sh("tshark", "-r", str(pcap), "-Y", display, "-T", "json")
    return json.loads(out) if out.strip() else []


def _field(packet: dict, name: str) -> list[str]:
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == name:
                    found.extend(value if isinstance(value, list) else [value])
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(packet["_source"]["layers"])
    return found


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _hao_datagram(payload: bytes, port: int) -> bytes:
    """IPv6 CoA -> CN, Destination Options with a Home Address option (RFC 6275 6.3),
    UDP with the checksum over the home address (RFC 6275 6.3: the upper layer sees it)."""
    udp_len = 8 + len(payload)
    pseudo = HOME.packed + CN.packed + struct.pack("!IxxxB", udp_len, 17)
    header = struct.pack("!HHHH", 40000, port, udp_len, 0)
    csum = _checksum(pseudo + header + payload) or 0xFFFF
    udp = struct.pack("!HHHH", 40000, port, udp_len, csum) + payload
    # next header UDP, length 2 (24 octets): PadN(4) so that the option sits at 8n+6, then
    # type 201, length 16, the home address; 2 + 4 + 18 = 24.
    dstopt = bytes([17, 2, 1, 2, 0, 0, 201, 16]) + HOME.packed
    assert len(dstopt) == 24
    ipv6 = struct.pack("!IHBB", 6 << 28, len(dstopt) + len(udp), 60, 64)
    return ipv6 + COA.packed + CN.packed + dstopt + udp


def _send_from_mn(frame_payload: bytes) -> None:
    cn_mac = bytes.fromhex(nsx(NS_CN, "cat", "/sys/class/net/cn0/address").strip().replace(":", ""))
    mn_mac = bytes.fromhex(nsx(NS_MN, "cat", "/sys/class/net/mn0/address").strip().replace(":", ""))
    frame = cn_mac + mn_mac + b"\x86\xdd" + frame_payload
    code = (
        "import socket,sys;s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW);"
        "s.bind(('mn0',0));s.send(bytes.fromhex(sys.argv[1]))"
    )
    nsx(NS_MN, shutil.which("python3") or "python3", "-c", code, frame.hex())


def _receive_on_cn(port: int, payload: bytes) -> tuple[str, bytes] | None:
    """Bind a UDP socket in the CN namespace, send the HAO datagram, return what arrived."""
    code = (
        "import socket,sys;s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM);"
        f"s.bind(('::',{port}));s.settimeout(5);print('ready',flush=True)\n"
        "try:\n d,a=s.recvfrom(2048);print(a[0],d.hex(),flush=True)\n"
        "except socket.timeout:\n print('timeout',flush=True)\n"
    )
    proc = subprocess.Popen(
        ["ip", "netns", "exec", NS_CN, "python3", "-c", code],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    _send_from_mn(_hao_datagram(payload, port))
    line = proc.stdout.readline().split()
    proc.wait(timeout=30)
    if line == ["timeout"]:
        return None
    return line[0], bytes.fromhex(line[1])


def test_binding_on_the_wire_and_removed(topo, tmp_path):
    ro = RoXfrm(NS_CN)
    ro.add_binding("cn", CN, HOME, COA)

    # The kernel holds what we asked, read back with ip itself (not through RoXfrm).
    states = sh("ip", "-n", NS_CN, "xfrm", "state", "list")
    assert f"src {CN} dst {HOME}" in states and "proto route2" in states, states
    assert f"src {HOME} dst {CN}" in states and "proto hao" in states, states
    assert states.count("mode ro") == 2 and states.count(f"coa {COA}") == 2, states
    assert f"{REQID}" in states
    policies = sh("ip", "-n", NS_CN, "xfrm", "policy", "list")
    assert f"src {CN}/128 dst {HOME}/128" in policies and "dir out" in policies, policies
    assert f"src {HOME}/128 dst {CN}/128" in policies and "dir in" in policies, policies
    assert [(b.cn, b.home, b.coa) for b in ro.bindings()] == [(CN, HOME, COA)]

    # CN -> home address (UDP): on the MN's link, dst = CoA and an RH2 with the home address.
    proc, pcap = _capture(tmp_path, "ping")
    send_udp(NS_CN, HOME, 3)
    _stop(proc)
    echo = _decode(pcap, "udp.dstport == 9")
    assert len(echo) == 3, sh("tshark", "-r", str(pcap))
    for packet in echo:
        assert _field(packet, "ipv6.dst") == [str(COA)]
        assert _field(packet, "ipv6.src") == [str(CN)]
        assert _field(packet, "ipv6.routing.type") == ["2"]
        assert _field(packet, "ipv6.routing.segleft") == ["1"]
        assert _field(packet, "ipv6.routing.mipv6.home_address") == [str(HOME)]
    assert not _decode(pcap, f"ipv6.dst == {HOME}")
    assert ro.bindings()[0].packets >= 3

    # CoA -> CN with a Home Address option: the socket sees the home address.
    got = _receive_on_cn(7777, b"hello from the care-of address")
    assert got == (str(HOME), b"hello from the care-of address")

    # remove_binding: nothing of ours left, and no more route optimisation either way.
    ro.remove_binding("cn", CN, HOME)
    states = sh("ip", "-n", NS_CN, "xfrm", "state", "list")
    policies = sh("ip", "-n", NS_CN, "xfrm", "policy", "list")
    assert "mode ro" not in states and str(HOME) not in states, states
    assert str(HOME) not in policies and f"priority {PRIORITY}" not in policies, policies
    assert ro.bindings() == [] and ro.policies() == []
    assert _receive_on_cn(7778, b"after removal") is None
    proc, pcap = _capture(tmp_path, "after")
    send_udp(NS_CN, HOME, 1)
    _stop(proc)
    assert not _decode(pcap, "ipv6.routing.type == 2")


def _cn_path(script: str) -> str:
    """Run ``script`` with a CorrespondentPath ``path`` in the CN namespace, eBPF refused
    (so that the choice falls to XFRM whatever this machine can compile)."""
    code = (
        "import sys\n"
        "from ipaddress import IPv6Address as A\n"
        "from mip6agent.daemon import correspondent_path as cp\n"
        "cp.ro_bpf.available = lambda: (False, 'refused by the test')\n"
        "path = cp.CorrespondentPath()\n"
        "print('started', path.start(), path.backend, path.reason)\n" + script
    )
    return nsx(NS_CN, sys.executable, "-c", code)


def test_correspondent_path_falls_back_to_xfrm_and_restart_clears(topo):
    out = _cn_path(f"path.install(A('{HOME}'), A('{COA}'), A('{CN}'))\n")
    assert out.splitlines()[0] == "started True xfrm-ro None", out
    states = sh("ip", "-n", NS_CN, "xfrm", "state", "list")
    assert states.count("mode ro") == 2 and states.count(f"coa {COA}") == 2, states
    # A new agent starting finds the states the previous one left and removes them.
    out = _cn_path("print('bindings', len(path.bindings()))\npath.stop()\n")
    assert out.splitlines() == ["started True xfrm-ro None", "bindings 0"], out
    assert "mode ro" not in sh("ip", "-n", NS_CN, "xfrm", "state", "list")
    assert str(HOME) not in sh("ip", "-n", NS_CN, "xfrm", "policy", "list")
