"""The TC eBPF route-optimization data path on real namespaces (io/dataplane/ro_bpf.py).

A correspondent namespace and a mobile node namespace share one veth link::

    cn  eth0 2001:db8:4::9/64  ------  eth0 2001:db8:2::100/64 (care-of)   mn
                                       lo   2001:db8:1::100/128 (home)

The correspondent reaches the home address through the care-of address as next hop (the
link stands for the path through the home agent: without a binding, packets to the home
address still arrive, unrewritten). Each namespace gets its own program set and maps
(its own pin instance). Captures on the mobile node's eth0 see its egress after the TC
program and its ingress before it, so they show what is on the wire; tshark decodes them.
Every test runs with veth offloads on (TSO, partial checksums) and with transmit
checksumming off, where every TCP, UDP and ICMPv6 checksum is computed in full by the
sender and verified by the receiver over the swapped-back home address.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

import pytest
from mip6agent.io.dataplane.ro_bpf import (
    PIN_ROOT,
    RO_OVERHEAD,
    RoBinding,
    RoBpf,
    available,
    build,
)
from netns import address, inside, ip, namespaces, veth
from tshark import tshark_fields, write_pcap

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

CN = IPv6Address("2001:db8:4::9")
COA = IPv6Address("2001:db8:2::100")
HOA = IPv6Address("2001:db8:1::100")
OTHER_HOA = IPv6Address("2001:db8:1::200")
LINK_MTU = 1500
ROUTE_MTU = LINK_MTU - RO_OVERHEAD
ETH_P_ALL = 0x0003
LINKTYPE_ETHERNET = 1
IPPROTO_DSTOPTS = 60
IPPROTO_ROUTING = 43
IPPROTO_MH = 135
_idents = itertools.count(0x4D36)
REPO = Path(__file__).resolve().parents[2]


class Capture:
    """Every frame on one interface from now on, written out as a pcap for tshark."""

    def __init__(self, ns: str, ifname: str) -> None:
        with inside(ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((ifname, 0))
        self.frames: list[bytes] = []

    def drain(self) -> list[bytes]:
        while select.select([self.sock], [], [], 0.05)[0]:
            self.frames.append(self.sock.recv(65535))
        return self.frames

    def fields(self, path: Path, names: list[str]) -> list[dict[str, str]]:
        write_pcap(path, self.drain(), linktype=LINKTYPE_ETHERNET)
        return tshark_fields(path, names)

    def close(self) -> None:
        self.sock.close()


@dataclass
class Pair:
    cn_ns: str
    mn_ns: str
    cn: RoBpf
    mn: RoBpf
    tmp: Path
    closers: list[Callable[[], None]]

    def bind(self) -> None:
        self.cn.add_binding("cn", CN, HOA, COA)
        self.mn.add_binding("mn", CN, HOA, COA)

    def unbind(self) -> None:
        self.cn.remove_binding("cn", CN, HOA)
        self.mn.remove_binding("mn", CN, HOA)

    def capture(self) -> Capture:
        capture = Capture(self.mn_ns, "eth0")
        self.closers.append(capture.close)
        return capture

    def run(self, ns: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout
        )


def _cache_dir() -> Path:
    return Path(os.environ.get("MIP6AGENT_BPF_CACHE", REPO / ".cache" / "bpf"))


def _require_toolchain() -> None:
    for tool in ("clang", "bpftool", "tshark"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed; `make test` installs it (make apt)")


def _set_tx_checksum(ns: str, ifname: str, enable: bool) -> None:
    from pyroute2.ethtool import Ethtool

    with inside(ns):
        ethtool = Ethtool()
        try:
            features = ethtool.get_features(ifname)
            for name in ("tx-checksum-ip-generic", "tx-checksum-ipv6"):
                if name in features.features:
                    features.features[name].enable = enable
            ethtool.set_features(ifname, features)
        finally:
            ethtool.close()


def _wait_carrier(ns: str, ifname: str, deadline: float = 3.0) -> None:
    """Until the link has carrier (the kernel reports it asynchronously, up to ~1 s)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        shown = subprocess.run(
            ["ip", "-n", ns, "-j", "link", "show", ifname], capture_output=True, text=True
        )
        if shown.returncode == 0 and "LOWER_UP" in json.loads(shown.stdout)[0]["flags"]:
            return
        time.sleep(0.02)
    pytest.fail(f"{ifname} in {ns} has no carrier")


_INSTANCE = re.compile(r"^t(\d+)x\d+(cn|mn)$")


def _sweep_stale_pins() -> None:
    """Remove pins a killed run left (its namespaces, and so its filters, are gone)."""
    if not PIN_ROOT.is_dir():
        return
    for directory in PIN_ROOT.iterdir():
        match = _INSTANCE.match(directory.name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def _pair(tmp: Path, offloads: bool) -> Iterator[Pair]:
    _require_toolchain()
    _sweep_stale_pins()
    tag = f"t{os.getpid()}x{time.monotonic_ns() % 100000}"
    closers: list[Callable[[], None]] = []
    with namespaces("cn", "mn") as ns:
        cn_ns, mn_ns = ns["cn"], ns["mn"]
        cn = RoBpf(f"{tag}cn", netns=cn_ns, cache_dir=_cache_dir())
        mn = RoBpf(f"{tag}mn", netns=mn_ns, cache_dir=_cache_dir())
        try:
            veth(cn_ns, "eth0", mn_ns, "eth0")
            address(cn_ns, "eth0", f"{CN}/64")
            address(mn_ns, "eth0", f"{COA}/64")
            address(mn_ns, "lo", f"{HOA}/128")
            ip("-n", cn_ns, "-6", "route", "add", "2001:db8:2::/64", "dev", "eth0")
            ip("-n", mn_ns, "-6", "route", "add", "2001:db8:4::/64", "dev", "eth0")
            # the headroom routes the daemon is to install for route-optimized peers
            ip("-n", cn_ns, "-6", "route", "add", f"{HOA}/128", "via", str(COA), "dev", "eth0",
               "mtu", "lock", str(ROUTE_MTU))  # fmt: skip
            ip("-n", mn_ns, "-6", "route", "add", f"{CN}/128", "dev", "eth0",
               "src", str(HOA), "mtu", "lock", str(ROUTE_MTU))  # fmt: skip
            if not offloads:
                _set_tx_checksum(cn_ns, "eth0", False)
                _set_tx_checksum(mn_ns, "eth0", False)
            _wait_carrier(cn_ns, "eth0")
            _wait_carrier(mn_ns, "eth0")
            cn.load()
            mn.load()
            cn.attach("eth0", "cn")
            mn.attach("eth0", "mn")
            yield Pair(cn_ns, mn_ns, cn, mn, tmp, closers)
        finally:
            for close in reversed(closers):
                with contextlib.suppress(Exception):
                    close()
            for ro in (cn, mn):
                with contextlib.suppress(Exception):
                    ro.detach()
                # a failed detach still leaves no pins behind
                with contextlib.suppress(Exception):
                    shutil.rmtree(ro.pin_dir)


@pytest.fixture(params=["offloads", "tx-checksum-off"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    with _pair(tmp_path, offloads=request.param == "offloads") as made:
        yield made


@pytest.fixture
def plain_pair(tmp_path: Path) -> Iterator[Pair]:
    with _pair(tmp_path, offloads=True) as made:
        yield made


def ping(ns: str, dst: IPv6Address, src: IPv6Address | None = None, count: int = 3,
         size: int = 56, wait: float = 2.0) -> int:  # fmt: skip
    """ICMPv6 echo from a raw socket in ``ns``; how many of ``count`` were answered."""
    with inside(ns):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    answered = 0
    with sock:
        if src is not None:
            sock.bind((str(src), 0))
        ident = next(_idents)
        for seq in range(count):
            payload = os.urandom(size)
            try:
                sock.sendto(struct.pack("!BBHHH", 128, 0, 0, ident, seq) + payload, (str(dst), 0))
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:  # a TC program dropped it on the way out
                    raise
                continue
            end = time.monotonic() + wait
            while (left := end - time.monotonic()) > 0:
                if not select.select([sock], [], [], left)[0]:
                    break
                data, peer = sock.recvfrom(65535)
                if data[:1] == b"\x81" and struct.unpack_from("!HH", data, 4) == (ident, seq):
                    assert IPv6Address(peer[0].split("%")[0]) == dst and data[8:] == payload
                    answered += 1
                    break
    return answered


def _ping(p: Pair, ns: str, dst: IPv6Address, src: IPv6Address | None = None, count: int = 3,
          size: int = 56) -> None:  # fmt: skip
    assert ping(ns, dst, src, count, size) == count


def _snmp(ns: str, group: str, name: str) -> int:
    with inside(ns), open("/proc/thread-self/net/snmp") as handle:
        lines = [line.split() for line in handle if line.startswith(group + ":")]
    header, values = lines[0], lines[1]
    return int(values[header.index(name)])


# --- packets written by hand -------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _icmp_echo(src: IPv6Address, dst: IPv6Address, ident: int) -> bytes:
    body = struct.pack("!BBHHH", 128, 0, 0, ident, 1) + b"mip6-ro-bpf"
    pseudo = src.packed + dst.packed + struct.pack("!IxxxB", len(body), 58)
    check = _checksum(pseudo + body)
    return body[:2] + struct.pack("!H", check) + body[4:]


def _ipv6(src: IPv6Address, dst: IPv6Address, nexthdr: int, payload: bytes) -> bytes:
    fixed = struct.pack("!IHBB", 6 << 28, len(payload), nexthdr, 64)
    return fixed + src.packed + dst.packed + payload


def _hao_header(nexthdr: int, home: IPv6Address) -> bytes:
    return bytes([nexthdr, 2, 1, 2, 0, 0, 201, 16]) + home.packed


def _rh2_header(nexthdr: int, home: IPv6Address) -> bytes:
    return bytes([nexthdr, 2, 2, 1, 0, 0, 0, 0]) + home.packed


def _send_raw(ns: str, packet: bytes, dst: IPv6Address) -> None:
    with inside(ns):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with sock:
        sock.sendto(packet, (str(dst), 0))


def _raw_listener(ns: str, proto: int) -> socket.socket:
    with inside(ns):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, proto)
    sock.settimeout(2)
    return sock


def _received(sock: socket.socket, marker: bytes, wait: float = 2.0) -> list[tuple[bytes, str]]:
    """Datagrams (data from the extension header on, source) that carry ``marker``."""
    found = []
    end = time.monotonic() + wait
    while time.monotonic() < end:
        ready = select.select([sock], [], [], max(0.0, end - time.monotonic()))[0]
        if not ready:
            break
        data, addr = sock.recvfrom(65535)
        if marker in data:
            found.append((data, addr[0]))
            break
    return found


# --- tests --------------------------------------------------------------------------


def test_available_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from mip6agent.io.dataplane import ro_bpf

    monkeypatch.setattr(ro_bpf.shutil, "which", lambda tool: None if tool == "clang" else tool)
    assert available() == (False, "clang is not installed")


def test_build_is_keyed_by_source_and_limits(tmp_path: Path) -> None:
    from mip6agent.io.dataplane.ro_bpf import RoBpfError, build_digest

    assert build_digest(4096, 1024) != build_digest(8192, 1024)
    with pytest.raises(RoBpfError, match="no-such-clang not found"):
        build(tmp_path, clang="no-such-clang")
    with pytest.raises(RoBpfError, match="outside"):
        build(tmp_path, cn_max_bindings=0)


def test_available_on_this_kernel() -> None:
    _require_toolchain()
    ok, reason = available(cache_dir=_cache_dir())
    assert ok, reason


def test_ping_both_ways_carries_rh2_and_hao(pair: Pair) -> None:
    pair.bind()
    capture = pair.capture()
    _ping(pair, pair.cn_ns, HOA)
    _ping(pair, pair.mn_ns, CN, src=HOA)
    rows = capture.fields(
        pair.tmp / "ping.pcap",
        ["ipv6.src", "ipv6.dst", "icmpv6.type", "ipv6.routing.type", "ipv6.routing.segleft",
         "ipv6.routing.mipv6.home_address", "ipv6.opt.mipv6.home_address",
         "icmpv6.checksum.status"],
    )  # fmt: skip
    echoes = [r for r in rows if r["icmpv6.type"] in ("128", "129")]
    to_mn = [r for r in echoes if r["ipv6.src"] == str(CN)]
    from_mn = [r for r in echoes if r["ipv6.dst"] == str(CN)]
    assert len(to_mn) == 6 and len(from_mn) == 6, echoes
    for row in to_mn:  # requests from the CN and its replies to the MN's echo requests
        assert row["ipv6.dst"] == str(COA), row
        assert (row["ipv6.routing.type"], row["ipv6.routing.segleft"]) == ("2", "1"), row
        assert row["ipv6.routing.mipv6.home_address"] == str(HOA), row
        assert row["icmpv6.checksum.status"] == "1", row  # good, over the home address
    for row in from_mn:
        assert row["ipv6.src"] == str(COA), row
        assert row["ipv6.opt.mipv6.home_address"] == str(HOA), row
        assert not row["ipv6.routing.type"], row
        assert row["icmpv6.checksum.status"] == "1", row
    cn, mn = pair.cn.counters(), pair.mn.counters()
    assert cn["cn_egress"] == 6 and cn["cn_ingress"] == 6, cn
    assert mn["mn_egress"] == 6 and mn["mn_ingress"] == 6, mn
    assert cn["dropped"] == mn["dropped"] == 0
    # the per-binding use the agent reads to tell a binding is still in use
    for ro in (pair.cn, pair.mn):
        (binding,) = ro.bindings()
        assert binding.packets == 12
        assert 0 < time.monotonic_ns() - binding.last_used_ns < 10_000_000_000
    pair.cn.add_binding("cn", CN, HOA, IPv6Address("2001:db8:2::101"))  # a handover
    (moved,) = pair.cn.bindings()
    assert moved.coa == IPv6Address("2001:db8:2::101") and moved.packets == 12


def _udp_echo(p: Pair, server_ns: str, server_addr: IPv6Address, client_ns: str,
              client_addr: IPv6Address) -> None:  # fmt: skip
    with inside(server_ns):
        server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with inside(client_ns):
        client = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with server, client:
        server.bind((str(server_addr), 0))
        client.bind((str(client_addr), 0))
        server.settimeout(3)
        client.settimeout(3)
        port = server.getsockname()[1]
        for size in (16, 1000, ROUTE_MTU - 48, 4000):  # 4000: fragments, each rewritten
            payload = os.urandom(size)
            client.sendto(payload, (str(server_addr), port))
            data, peer = server.recvfrom(65535)
            assert data == payload and IPv6Address(peer[0]) == client_addr
            server.sendto(data[::-1], peer)
            back, source = client.recvfrom(65535)
            assert back == payload[::-1] and IPv6Address(source[0]) == server_addr


def _tcp_exchange(p: Pair, server_ns: str, server_addr: IPv6Address, client_ns: str,
                  client_addr: IPv6Address, size: int = 2 << 20) -> None:  # fmt: skip
    """The client sends ``size`` random bytes, the server sends them back."""
    with inside(server_ns):
        listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    with inside(client_ns):
        client = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    payload = os.urandom(size)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            conn, peer = listener.accept()
            with conn:
                conn.settimeout(20)
                assert IPv6Address(peer[0]) == client_addr
                got = bytearray()
                while len(got) < size:
                    chunk = conn.recv(1 << 16)
                    assert chunk, "connection closed early"
                    got += chunk
                conn.sendall(bytes(got))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    with listener, client:
        listener.bind((str(server_addr), 0))
        listener.listen(1)
        listener.settimeout(20)
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        client.bind((str(client_addr), 0))
        client.settimeout(20)
        client.connect((str(server_addr), listener.getsockname()[1]))
        sender = threading.Thread(target=client.sendall, args=(payload,), daemon=True)
        sender.start()
        back = bytearray()
        while len(back) < size:
            chunk = client.recv(1 << 16)
            assert chunk, "connection closed early"
            back += chunk
        sender.join(20)
        thread.join(20)
    assert not errors, errors
    assert bytes(back) == payload


def test_sockets_bound_to_the_home_address_work_both_ways(pair: Pair) -> None:
    pair.bind()
    capture = pair.capture()
    before = {ns: _snmp(ns, "Tcp", "InCsumErrors") for ns in (pair.cn_ns, pair.mn_ns)}
    udp_before = {ns: _snmp(ns, "Udp", "InCsumErrors") for ns in (pair.cn_ns, pair.mn_ns)}
    # the correspondent calls the home address, and the mobile node calls from it
    _udp_echo(pair, pair.mn_ns, HOA, pair.cn_ns, CN)
    _udp_echo(pair, pair.cn_ns, CN, pair.mn_ns, HOA)
    _tcp_exchange(pair, pair.mn_ns, HOA, pair.cn_ns, CN)
    _tcp_exchange(pair, pair.cn_ns, CN, pair.mn_ns, HOA)
    for ns in (pair.cn_ns, pair.mn_ns):
        assert _snmp(ns, "Tcp", "InCsumErrors") == before[ns]
        assert _snmp(ns, "Udp", "InCsumErrors") == udp_before[ns]
    cn, mn = pair.cn.counters(), pair.mn.counters()
    assert min(cn["cn_egress"], cn["cn_ingress"], mn["mn_egress"], mn["mn_ingress"]) > 0
    assert cn["cn_egress_too_big"] == mn["mn_egress_too_big"] == 0, (cn, mn)
    assert cn["dropped"] == mn["dropped"] == 0, (cn, mn)
    frames = capture.drain()
    capture.frames = frames[:400] + frames[-400:]  # enough to decode; not 4 MB twice
    rows = capture.fields(
        pair.tmp / "tcp.pcap",
        ["ipv6.src", "ipv6.dst", "ipv6.nxt", "tcp.srcport", "udp.srcport", "ipv6.fraghdr.nxt",
         "ipv6.routing.mipv6.home_address", "ipv6.opt.mipv6.home_address"],
    )  # fmt: skip
    data = [r for r in rows if r["tcp.srcport"] or r["udp.srcport"] or r["ipv6.fraghdr.nxt"]]
    # the 4000-byte datagrams' fragments, both ways, each with its own RH2 or HAO
    fragments = {r["ipv6.src"] for r in data if r["ipv6.fraghdr.nxt"] == "17"}
    assert fragments == {str(CN), str(COA)}, fragments
    assert data
    for row in data:
        if row["ipv6.src"] == str(CN):
            assert row["ipv6.dst"] == str(COA), row
            assert row["ipv6.routing.mipv6.home_address"] == str(HOA), row
        else:
            assert row["ipv6.src"] == str(COA), row
            assert row["ipv6.opt.mipv6.home_address"] == str(HOA), row


def test_a_new_care_of_address_takes_over(plain_pair: Pair) -> None:
    """A handover: both maps get the new care-of address, the next packets use it."""
    p = plain_pair
    new_coa = IPv6Address("2001:db8:2::101")
    address(p.mn_ns, "eth0", f"{new_coa}/64")
    p.bind()
    _ping(p, p.cn_ns, HOA, count=1)
    p.cn.add_binding("cn", CN, HOA, new_coa)
    p.mn.add_binding("mn", CN, HOA, new_coa)
    capture = p.capture()
    _ping(p, p.cn_ns, HOA, count=2)
    _ping(p, p.mn_ns, CN, src=HOA, count=2)
    rows = capture.fields(
        p.tmp / "moved.pcap",
        ["ipv6.src", "ipv6.dst", "icmpv6.type", "ipv6.routing.mipv6.home_address",
         "ipv6.opt.mipv6.home_address"],
    )  # fmt: skip
    echoes = [r for r in rows if r["icmpv6.type"] in ("128", "129")]
    assert len(echoes) == 8
    for row in echoes:
        assert str(COA) not in (row["ipv6.src"], row["ipv6.dst"]), row
        assert str(new_coa) in (row["ipv6.src"], row["ipv6.dst"]), row
        assert str(HOA) in (
            row["ipv6.routing.mipv6.home_address"],
            row["ipv6.opt.mipv6.home_address"],
        ), row
    # a packet still arriving at the old care-of address is not the binding's: passed up
    before = p.mn.counters()["mn_ingress_no_binding"]
    body = _icmp_echo(CN, HOA, 0x5300)
    _send_raw(p.cn_ns, _ipv6(CN, COA, IPPROTO_ROUTING, _rh2_header(58, HOA) + body), COA)
    deadline = time.monotonic() + 2
    while p.mn.counters()["mn_ingress_no_binding"] == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert p.mn.counters()["mn_ingress_no_binding"] == before + 1


def test_removing_the_binding_stops_the_rewrite(plain_pair: Pair) -> None:
    p = plain_pair
    p.bind()
    assert set(p.cn.bindings()) == {RoBinding("cn", CN, HOA, COA)}
    assert set(p.mn.bindings("mn")) == {RoBinding("mn", CN, HOA, COA)}
    _ping(p, p.cn_ns, HOA, count=1)
    p.unbind()
    assert p.cn.bindings() == [] and p.mn.bindings() == []
    assert not p.cn.remove_binding("cn", CN, HOA)
    before = p.cn.counters()["cn_egress"], p.mn.counters()["mn_egress"]
    capture = p.capture()
    _ping(p, p.cn_ns, HOA)
    _ping(p, p.mn_ns, CN, src=HOA)
    rows = capture.fields(
        p.tmp / "plain.pcap",
        ["ipv6.src", "ipv6.dst", "icmpv6.type", "ipv6.routing.type", "ipv6.opt.mipv6.home_address"],
    )
    echoes = [r for r in rows if r["icmpv6.type"] in ("128", "129")]
    assert len(echoes) == 12
    for row in echoes:
        assert {row["ipv6.src"], row["ipv6.dst"]} == {str(CN), str(HOA)}, row
        assert not row["ipv6.routing.type"] and not row["ipv6.opt.mipv6.home_address"], row
    assert (p.cn.counters()["cn_egress"], p.mn.counters()["mn_egress"]) == before


def test_hao_without_a_binding_goes_up_unchanged(plain_pair: Pair) -> None:
    """The agent must see it (raw socket on protocol 60) to answer Binding Error status 1."""
    p = plain_pair
    p.bind()
    listener = _raw_listener(p.cn_ns, IPPROTO_DSTOPTS)
    p.closers.append(listener.close)
    cases = {
        "unknown home address": (COA, OTHER_HOA, 58),
        "known home address, other care-of address": (IPv6Address("2001:db8:2::7"), HOA, 58),
        "Mobility Header with a good binding": (COA, HOA, IPPROTO_MH),
    }
    address(p.mn_ns, "eth0", "2001:db8:2::7/64")
    for ident, (src, home, upper) in enumerate(cases.values(), start=0x5100):
        marker = f"marker-{ident}".encode()
        if upper == 58:
            body = _icmp_echo(home, CN, ident) + marker
        else:  # a Binding Refresh Request-shaped MH, payload proto 59
            body = bytes([59, 1, 0, 0, 0, 0, 0, 0]) + marker + bytes(8 - len(marker) % 8)
        packet = _ipv6(src, CN, IPPROTO_DSTOPTS, _hao_header(upper, home) + body)
        before = p.cn.counters()
        _send_raw(p.mn_ns, packet, CN)
        got = _received(listener, marker)
        assert got, f"no copy for the agent ({ident:#x})"
        data, source = got[0]
        assert IPv6Address(source) == src, "source rewritten"
        assert data[6] == 201 and IPv6Address(data[8:24]) == home, "HAO changed"
        after = p.cn.counters()
        assert after["cn_ingress"] == before["cn_ingress"]
        if upper == 58:
            assert after["cn_ingress_no_binding"] == before["cn_ingress_no_binding"] + 1


def test_rh2_without_a_binding_goes_up_unchanged(plain_pair: Pair) -> None:
    p = plain_pair
    p.bind()
    listener = _raw_listener(p.mn_ns, IPPROTO_ROUTING)
    p.closers.append(listener.close)
    for ident, home in ((0x5200, OTHER_HOA), (0x5201, HOA)):
        marker = f"marker-{ident}".encode()
        # 0x5201: a good home address from a correspondent without a binding
        src = CN if home == OTHER_HOA else IPv6Address("2001:db8:4::77")
        if home == HOA:
            with contextlib.suppress(Exception):
                address(p.cn_ns, "eth0", "2001:db8:4::77/64")
        body = _icmp_echo(CN, home, ident) + marker
        packet = _ipv6(src, COA, IPPROTO_ROUTING, _rh2_header(58, home) + body)
        before = p.mn.counters()
        _send_raw(p.cn_ns, packet, COA)
        got = _received(listener, marker)
        assert got, f"no copy for the agent ({ident:#x})"
        data, source = got[0]
        assert IPv6Address(source) == src
        assert data[2:4] == b"\x02\x01" and IPv6Address(data[8:24]) == home, "RH2 changed"
        after = p.mn.counters()
        assert after["mn_ingress"] == before["mn_ingress"]
        assert after["mn_ingress_no_binding"] == before["mn_ingress_no_binding"] + 1


def test_ingress_walks_extension_headers(plain_pair: Pair) -> None:
    """A Hop-by-Hop header before the HAO/RH2: the header still goes, the one before it
    moves up, and the packet is delivered to the home address's socket."""
    p = plain_pair
    p.bind()
    hop_by_hop = bytes([IPPROTO_DSTOPTS, 0, 1, 4, 0, 0, 0, 0])  # only a PadN
    with inside(p.cn_ns):
        server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    p.closers.append(server.close)
    server.bind((str(CN), 0))
    server.settimeout(3)
    port = server.getsockname()[1]
    payload = b"after-a-hop-by-hop-header"
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    pseudo = HOA.packed + CN.packed + struct.pack("!IxxxB", len(udp), 17)
    udp = udp[:6] + struct.pack("!H", _checksum(pseudo + udp)) + udp[8:]
    packet = _ipv6(COA, CN, 0, hop_by_hop + _hao_header(17, HOA) + udp)
    _send_raw(p.mn_ns, packet, CN)
    data, peer = server.recvfrom(4096)
    assert data == payload and IPv6Address(peer[0]) == HOA
    assert p.cn.counters()["cn_ingress"] == 1

    with inside(p.mn_ns):
        mn_server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    p.closers.append(mn_server.close)
    mn_server.bind((str(HOA), 0))
    mn_server.settimeout(3)
    port = mn_server.getsockname()[1]
    udp = struct.pack("!HHHH", 40001, port, 8 + len(payload), 0) + payload
    pseudo = CN.packed + HOA.packed + struct.pack("!IxxxB", len(udp), 17)
    udp = udp[:6] + struct.pack("!H", _checksum(pseudo + udp)) + udp[8:]
    hop_by_hop = bytes([IPPROTO_ROUTING, 0, 1, 4, 0, 0, 0, 0])
    packet = _ipv6(CN, COA, 0, hop_by_hop + _rh2_header(17, HOA) + udp)
    _send_raw(p.cn_ns, packet, COA)
    data, peer = mn_server.recvfrom(4096)
    assert data == payload and IPv6Address(peer[0]) == CN
    assert p.mn.counters()["mn_ingress"] == 1


def _udp_to(src: IPv6Address, dst: IPv6Address, port: int, payload: bytes) -> bytes:
    """A UDP datagram whose checksum is over (src, dst): the home address' side."""
    udp = struct.pack("!HHHH", 40002, port, 8 + len(payload), 0) + payload
    pseudo = src.packed + dst.packed + struct.pack("!IxxxB", len(udp), 17)
    return udp[:6] + struct.pack("!H", _checksum(pseudo + udp)) + udp[8:]


def _big_hop_by_hop(nexthdr: int) -> bytes:
    """80 bytes of Hop-by-Hop header (one skippable option): deeper than the programs
    move headers to strip the one after it."""
    option = bytes([0x1E, 70]) + bytes(70)
    header = bytes([nexthdr, 80 // 8 - 1]) + option + bytes([1, 4, 0, 0, 0, 0])
    assert len(header) == 80
    return header


def test_ingress_falls_back_in_place(plain_pair: Pair) -> None:
    """Where the header cannot go: the HAO becomes a skippable option (other options in
    its header, or headers too deep before it), an RH2 gets segments left 0. The stack
    takes both, and the socket sees the home address."""
    p = plain_pair
    p.bind()
    payload = b"rewritten-in-place"
    with inside(p.cn_ns):
        server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    p.closers.append(server.close)
    server.bind((str(CN), 0))
    server.settimeout(3)
    port = server.getsockname()[1]
    udp = _udp_to(HOA, CN, port, payload)
    shared = bytes([17, 2, 0x1E, 2, 0, 0, 201, 16]) + HOA.packed  # another option first
    deep = _big_hop_by_hop(IPPROTO_DSTOPTS) + _hao_header(17, HOA)
    for extensions, first in ((shared, IPPROTO_DSTOPTS), (deep, 0)):
        _send_raw(p.mn_ns, _ipv6(COA, CN, first, extensions + udp), CN)
        data, peer = server.recvfrom(4096)
        assert data == payload and IPv6Address(peer[0]) == HOA
    assert p.cn.counters()["cn_ingress"] == 2

    with inside(p.mn_ns):
        mn_server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    p.closers.append(mn_server.close)
    mn_server.bind((str(HOA), 0))
    mn_server.settimeout(3)
    port = mn_server.getsockname()[1]
    udp = _udp_to(CN, HOA, port, payload)
    packet = _ipv6(CN, COA, 0, _big_hop_by_hop(IPPROTO_ROUTING) + _rh2_header(17, HOA) + udp)
    _send_raw(p.cn_ns, packet, COA)
    data, peer = mn_server.recvfrom(4096)
    assert data == payload and IPv6Address(peer[0]) == CN
    assert p.mn.counters()["mn_ingress"] == 1


def test_restart_finds_bindings_and_filters(plain_pair: Pair) -> None:
    p = plain_pair
    p.bind()
    ids = p.cn.program_ids()
    p.cn.close()  # the agent stops without cleaning up (a crash, kill -9)
    again = RoBpf(p.cn.instance, netns=p.cn_ns, cache_dir=_cache_dir())
    p.cn = again
    assert again.load() is False  # reopened, not loaded anew
    assert again.program_ids() == ids
    assert again.bindings() == [RoBinding("cn", CN, HOA, COA)]
    assert {(a.ifname, a.direction, a.program) for a in again.attachments()} == {
        ("eth0", "egress", "cn_egress"),
        ("eth0", "ingress", "cn_ingress"),
    }
    again.attach("eth0", "cn")  # idempotent
    assert len(again.attachments()) == 2
    _ping(p, p.cn_ns, HOA, count=2)
    assert again.counters()["cn_egress"] == 2


def test_pins_of_another_build_are_replaced(plain_pair: Pair) -> None:
    """After an upgrade the pins of the old source are not reused (their maps may have
    another layout): load() starts afresh and attach() moves the filters over."""
    p = plain_pair
    p.bind()
    old_ids = p.cn.program_ids()
    p.cn.close()
    (marker,) = p.cn.pin_dir.glob("build-*")
    marker.rename(p.cn.pin_dir / "build-0123456789abcdef")  # as an older version left it
    again = RoBpf(p.cn.instance, netns=p.cn_ns, cache_dir=_cache_dir())
    p.cn = again
    assert again.load() is True
    assert set(again.program_ids().values()).isdisjoint(old_ids.values())
    assert again.bindings() == []
    assert [m.name for m in again.pin_dir.glob("build-*")] == [marker.name]
    again.attach("eth0", "cn")
    again.add_binding("cn", CN, HOA, COA)
    _ping(p, p.cn_ns, HOA, count=2)
    assert again.counters()["cn_egress"] == 2
    for name, ident in old_ids.items():
        assert _gone("prog", ident), f"old program {name} ({ident}) still loaded"


def test_both_roles_share_an_interface(plain_pair: Pair) -> None:
    """A correspondent that is also a mobile node: both pairs of filters, in order."""
    p = plain_pair
    p.cn.attach("eth0", "mn")
    assert {(a.direction, a.program) for a in p.cn.attachments()} == {
        ("egress", "cn_egress"),
        ("ingress", "cn_ingress"),
        ("egress", "mn_egress"),
        ("ingress", "mn_ingress"),
    }
    shown = _tc(p.cn_ns, "filter", "show", "dev", "eth0", "egress")
    assert shown.index("cn_egress") < shown.index("mn_egress")  # correspondent first
    p.bind()
    _ping(p, p.cn_ns, HOA)
    _ping(p, p.mn_ns, CN, src=HOA)
    assert p.cn.counters()["cn_egress"] == 6 and p.cn.counters()["mn_egress"] == 0
    p.cn.detach_interface("eth0")
    assert p.cn.attachments() == []
    assert "clsact" not in _tc(p.cn_ns, "qdisc", "show", "dev", "eth0")


def _tc(ns: str, *args: str) -> str:
    return subprocess.run(["tc", "-n", ns, *args], capture_output=True, text=True).stdout.strip()


def _gone(kind: str, ident: int, deadline: float = 5.0) -> bool:
    """The kernel freed program or map ``ident`` (after an RCU grace period)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        result = subprocess.run(["bpftool", kind, "show", "id", str(ident)], capture_output=True)
        if result.returncode != 0:
            return True
        time.sleep(0.05)
    return False


def test_detach_leaves_nothing(plain_pair: Pair) -> None:
    p = plain_pair
    p.bind()
    # someone else's clsact filter on the correspondent's link stays, and so does clsact
    ip("-n", p.cn_ns, "link", "add", "name", "side", "type", "veth", "peer", "name", "side1")
    _tc(p.cn_ns, "qdisc", "add", "dev", "side", "clsact")
    # (a bpf filter: this kernel has no other classifier; tc loads its own copy)
    obj = build(_cache_dir())
    _tc(p.cn_ns, "filter", "add", "dev", "side", "ingress", "pref", "7", "bpf", "da",
        "obj", str(obj), "sec", "tc/cn_ingress")  # fmt: skip
    assert "pref 7 bpf" in _tc(p.cn_ns, "filter", "show", "dev", "side", "ingress")
    p.cn.attach("side", "cn")
    # an empty clsact someone else added stays as well
    ip("-n", p.cn_ns, "link", "add", "name", "other", "type", "veth", "peer", "name", "other1")
    _tc(p.cn_ns, "qdisc", "add", "dev", "other", "clsact")
    p.cn.attach("other", "cn")
    programs = {**p.cn.program_ids(), **{f"mn {k}": v for k, v in p.mn.program_ids().items()}}
    maps = [*p.cn.map_ids().values(), *p.mn.map_ids().values()]
    for ro, ns in ((p.cn, p.cn_ns), (p.mn, p.mn_ns)):
        ro.detach()
        assert not ro.pin_dir.exists()
        assert ro.attachments() == []
        assert "clsact" not in _tc(ns, "qdisc", "show", "dev", "eth0")
        for direction in ("ingress", "egress"):
            assert _tc(ns, "filter", "show", "dev", "eth0", direction) == ""
    assert "clsact" in _tc(p.cn_ns, "qdisc", "show", "dev", "side")
    assert "pref 7 bpf" in _tc(p.cn_ns, "filter", "show", "dev", "side", "ingress")
    assert "clsact" in _tc(p.cn_ns, "qdisc", "show", "dev", "other")  # not ours: it stays
    assert "bpf" not in _tc(p.cn_ns, "filter", "show", "dev", "side", "egress")
    for name, ident in programs.items():
        assert _gone("prog", ident), f"program {name} ({ident}) still loaded"
    for ident in maps:
        assert _gone("map", ident), f"map {ident} still there"


def test_oversized_packets_are_counted(plain_pair: Pair) -> None:
    """Without the headroom route a full-size packet cannot grow: the correspondent's goes
    out unchanged, the mobile node's is dropped."""
    p = plain_pair
    p.cn.add_binding("cn", CN, HOA, COA)
    ip("-n", p.cn_ns, "-6", "route", "change", f"{HOA}/128", "via", str(COA), "dev", "eth0")
    ip("-n", p.mn_ns, "-6", "route", "change", f"{CN}/128", "dev", "eth0", "src", str(HOA))
    size = LINK_MTU - 48  # ICMPv6 payload filling the link MTU
    _ping(p, p.cn_ns, HOA, count=1, size=size)  # goes out unchanged, and is answered
    assert p.cn.counters()["cn_egress_too_big"] == 1
    p.mn.add_binding("mn", CN, HOA, COA)
    assert ping(p.mn_ns, CN, HOA, count=1, size=size, wait=1.0) == 0
    mn = p.mn.counters()
    assert mn["mn_egress_too_big"] >= 1 and mn["dropped"] >= 1


__all__: list[Any] = []
