"""The mobile node's side of the kernel MIP6 XFRM route-optimisation backend (RoXfrm
role "mn") on the wire.

Needs root and a kernel with CONFIG_IPV6_MIP6 (the qemu VM's Debian kernel:
``lab/kernel-vm/run.sh agent/tests/test_ro_xfrm_mn.py``); skipped elsewhere.

Two namespaces on one veth: ``cn`` (2001:db8:1::1) and ``mn`` (the care-of address
2001:db8:1::2 on the veth, the home address 2001:db8:4::100/128 on ``lo``, as the agent's
data plane places it away from home). With a binding installed:

- the home address carries the ``home`` flag and is deprecated;
- a UDP datagram from a socket bound to the home address leaves with source = care-of
  address and a Home Address option holding the home address (tshark);
- a socket that does not choose its source still sends from the care-of address, without
  the option (the deprecated home address is not picked);
- a datagram from the CN to the care-of address with a Type 2 Routing Header naming the
  home address (built octet by octet, sent on an AF_PACKET socket) reaches an MN socket
  bound to the home address.

After remove_binding the flag is gone, nothing of ours is left in ``ip xfrm`` and the
same RH2 datagram is no longer delivered.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from ipaddress import IPv6Address
from pathlib import Path

import pytest
from mip6agent.io.dataplane.ro_xfrm import MN_BYPASS_PRIORITY, MN_PRIORITY, MN_REQID, RoXfrm
from test_ro_xfrm import _capture, _checksum, _decode, _field, _stop, nsx, pytestmark, sh

CN = IPv6Address("2001:db8:1::1")
COA = IPv6Address("2001:db8:1::2")
HOME = IPv6Address("2001:db8:4::100")
NS_CN, NS_MN = "roxcn", "roxmn"  # the names test_ro_xfrm's _capture (on mn0) expects

__all__ = ["pytestmark"]


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
    sh("ip", "-n", NS_MN, "addr", "add", f"{HOME}/128", "dev", "lo", "nodad")
    sh("ip", "-n", NS_CN, "link", "set", "cn0", "up")
    sh("ip", "-n", NS_MN, "link", "set", "mn0", "up")
    sh("ip", "-n", NS_CN, "route", "add", "2001:db8:4::/64", "dev", "cn0")
    _udp(NS_MN, CN, None)  # neighbours resolved
    try:
        yield
    finally:
        for ns in (NS_CN, NS_MN):
            sh("ip", "netns", "del", ns, check=False)


def _udp(ns: str, dst: IPv6Address, src: IPv6Address | None, count: int = 1) -> None:
    code = (
        "import socket,sys,time;s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n"
        "if sys.argv[2]: s.bind((sys.argv[2],0))\n"
        "for i in range(int(sys.argv[3])):\n"
        " s.sendto(b'ro probe',(sys.argv[1],9));time.sleep(0.3)\n"
    )
    nsx(ns, "python3", "-c", code, str(dst), str(src or ""), str(count))


def _rh2_datagram(payload: bytes, port: int) -> bytes:
    """IPv6 CN -> CoA with a Type 2 Routing Header (segments left 1, the home address),
    UDP with the checksum over the final destination, the home address (RFC 8200 8.1)."""
    udp_len = 8 + len(payload)
    pseudo = CN.packed + HOME.packed + struct_pack_len(udp_len)
    header = bytes.fromhex("9c40") + port.to_bytes(2, "big") + udp_len.to_bytes(2, "big")
    csum = _checksum(pseudo + header + b"\0\0" + payload) or 0xFFFF
    udp = header + csum.to_bytes(2, "big") + payload
    rh2 = bytes([17, 2, 2, 1, 0, 0, 0, 0]) + HOME.packed
    ipv6 = (6 << 28).to_bytes(4, "big") + (len(rh2) + len(udp)).to_bytes(2, "big")
    return ipv6 + bytes([43, 64]) + CN.packed + COA.packed + rh2 + udp


def struct_pack_len(udp_len: int) -> bytes:
    return udp_len.to_bytes(4, "big") + bytes([0, 0, 0, 17])


def _send_from_cn(packet: bytes) -> None:
    mn_mac = bytes.fromhex(nsx(NS_MN, "cat", "/sys/class/net/mn0/address").strip().replace(":", ""))
    cn_mac = bytes.fromhex(nsx(NS_CN, "cat", "/sys/class/net/cn0/address").strip().replace(":", ""))
    frame = mn_mac + cn_mac + b"\x86\xdd" + packet
    code = (
        "import socket,sys;s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW);"
        "s.bind(('cn0',0));s.send(bytes.fromhex(sys.argv[1]))"
    )
    nsx(NS_CN, shutil.which("python3") or "python3", "-c", code, frame.hex())


def _receive_on_mn(port: int, payload: bytes) -> tuple[str, bytes] | None:
    code = (
        "import socket,sys;s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM);"
        f"s.bind(('{HOME}',{port}));s.settimeout(5);print('ready',flush=True)\n"
        "try:\n d,a=s.recvfrom(2048);print(a[0],d.hex(),flush=True)\n"
        "except socket.timeout:\n print('timeout',flush=True)\n"
    )
    proc = subprocess.Popen(
        ["ip", "netns", "exec", NS_MN, "python3", "-c", code], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    _send_from_cn(_rh2_datagram(payload, port))
    line = proc.stdout.readline().split()
    proc.wait(timeout=30)
    if line == ["timeout"]:
        return None
    return line[0], bytes.fromhex(line[1])


def _lo_home() -> str:
    return sh("ip", "-n", NS_MN, "-6", "-o", "address", "show", "dev", "lo")


def test_mn_binding_on_the_wire_and_removed(topo, tmp_path: Path):
    ro = RoXfrm(NS_MN)
    ro.add_binding("mn", CN, HOME, COA)
    line = next(x for x in _lo_home().splitlines() if f"{HOME}/128" in x)
    assert " home" in line and "deprecated" in line, line
    [binding] = ro.bindings("mn")
    assert (binding.cn, binding.home, binding.coa) == (CN, HOME, COA)
    assert ro.bindings("cn") == []

    proc, pcap = _capture(tmp_path, "out")
    _udp(NS_MN, CN, HOME, count=2)  # bound to the home address: route optimised
    _udp(NS_MN, CN, None, count=2)  # no source asked for: the care-of address, plain
    _stop(proc)
    udp = _decode(pcap, f"udp.dstport == 9 && ipv6.dst == {CN} && !icmpv6")
    with_hao = [p for p in udp if _field(p, "ipv6.opt.mipv6.home_address")]
    plain = [p for p in udp if not _field(p, "ipv6.opt.mipv6.home_address")]
    assert len(with_hao) == 2 and len(plain) == 2, udp
    for packet in with_hao:
        assert _field(packet, "ipv6.src") == [str(COA)]
        assert _field(packet, "ipv6.opt.mipv6.home_address") == [str(HOME)]
    for packet in plain:
        assert _field(packet, "ipv6.src") == [str(COA)]  # the deprecated HoA is not picked
    assert not _decode(pcap, f"ipv6.src == {HOME}"), "a packet left bare from the home address"

    got = _receive_on_mn(7001, b"rh2 in")
    assert got == (str(CN), b"rh2 in"), got
    assert ro.bindings("mn")[0].packets >= 3  # two out, one in

    ro.remove_binding("mn", CN, HOME)
    assert ro.bindings("mn") == []
    for priority in (MN_PRIORITY, MN_BYPASS_PRIORITY):
        assert ro.policies(priority) == []
    assert str(MN_REQID) not in sh("ip", "-n", NS_MN, "xfrm", "state", "list")
    line = next(x for x in _lo_home().splitlines() if f"{HOME}/128" in x)
    assert " home" not in line and "deprecated" not in line, line
    assert _receive_on_mn(7002, b"rh2 gone") is None
    time.sleep(0.1)


def test_close_removes_bypass_policies_left_alone(topo):
    """A previous run's policies without their states (a crash between commands)."""
    ro = RoXfrm(NS_MN)
    ro.add_binding("mn", CN, HOME, COA)
    for proto in ("hao", "route2"):
        src, dst = (HOME, CN) if proto == "hao" else (CN, HOME)
        sh("ip", "-n", NS_MN, "xfrm", "state", "delete", "src", str(src), "dst", str(dst),
           "proto", proto)  # fmt: skip
    assert ro.bindings("mn") == [] and ro.policies(MN_BYPASS_PRIORITY)
    ro.close()
    out = sh("ip", "-n", NS_MN, "xfrm", "policy", "list")
    assert str(HOME) not in out, out
