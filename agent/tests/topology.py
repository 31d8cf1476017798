"""The project's standard Mobile IPv6 test topology, in network namespaces.

::

            home (2001:db8:1::/64)     foreign1 (2001:db8:2::/64)   foreign2 (2001:db8:3::/64)
        ha ::1 --+--                  --+--                         --+--
        [mn]     |                      |  [mn]                       |  [mn]
                 +------- router ::fffe on every link, forwarding ------+
                                        |
                                cn ::9 -+- cn (2001:db8:4::/64)

Every link is a Linux bridge in a private ``lan`` namespace; each node has one veth whose
peer is a port of its link's bridge, so moving a node is re-enslaving that port
(:meth:`Topology.move`), with a carrier flap like a real link change. The mobile node uses
static addresses (``2001:db8:N::100/64``, the home address ``2001:db8:1::100``) or SLAAC
from radvd (MAC 02:00:00:00:01:00, so ``2001:db8:N::ff:fe00:100``).

Use it as a context manager (``with Topology(mn_link="foreign1") as topo:``) or through
the ``make_topology`` fixture. Everything it creates (namespaces, bridges, veths, radvd
processes, temp files) is removed on exit, on test failure, on Ctrl-C and on SIGTERM;
namespaces left by a killed run (``mip6-<pid>-...`` with a dead pid) are swept first.

Code runs inside a node either as a subprocess (:meth:`Topology.run`, ``ip netns exec``)
or in this process (:meth:`Topology.inside` switches the calling thread's namespace;
:meth:`Topology.in_node` builds an object there and runs each of its methods there).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from typing import Any, Literal

import pytest
from netns import NETNS_DIR, inside, kill_namespace_processes, namespace_pids, stop_daemon

ETH_P_ALL = 0x0003
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4

LinkName = Literal["home", "foreign1", "foreign2", "cn"]
Addressing = Literal["static", "slaac"]


@dataclass(frozen=True, slots=True)
class Link:
    name: str
    prefix: IPv6Network

    @property
    def router(self) -> IPv6Address:
        return self.prefix.network_address + 0xFFFE

    def host(self, interface_id: int) -> IPv6Address:
        return self.prefix.network_address + interface_id


LINKS: dict[str, Link] = {
    "home": Link("home", IPv6Network("2001:db8:1::/64")),
    "foreign1": Link("foreign1", IPv6Network("2001:db8:2::/64")),
    "foreign2": Link("foreign2", IPv6Network("2001:db8:3::/64")),
    "cn": Link("cn", IPv6Network("2001:db8:4::/64")),
}
HA_ADDRESS = IPv6Address("2001:db8:1::1")
CN_ADDRESS = IPv6Address("2001:db8:4::9")
MN_STATIC_ID = 0x100
MN_MAC = "02:00:00:00:01:00"
MN_SLAAC_ID = 0x00FF_FE00_0100  # modified EUI-64 of MN_MAC
HOME_AGENT_PREFERENCE = 10
HOME_AGENT_LIFETIME = 30

NODE_IFNAME = "eth0"
_PEER_PREFIX = {"router": "r", "ha": "ha", "cn": "cn", "mn": "mn"}
_NAME = re.compile(r"^mip6-(\d+)-\d+-[a-z]+$")
_TMP_NAME = re.compile(r"^mip6-topo-(\d+)-")
_counter = itertools.count()
_echo_seq = itertools.count(1000, 97)


def _run(argv: list[str], check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip() or result.stdout}")
    return result


def sweep_stale() -> list[str]:
    """Delete namespaces (and kill their processes) left by dead test runs."""
    removed = []
    names = os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else []
    for name in names:
        match = _NAME.match(name)
        if not match or _alive(int(match.group(1))):
            continue
        kill_namespace_processes(name)
        _run(["ip", "netns", "del", name], check=False)
        removed.append(name)
    tmp = tempfile.gettempdir()
    for name in os.listdir(tmp):
        match = _TMP_NAME.match(name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)
            removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured Ethernet frame; ``outgoing`` is from the capturing node's side."""

    data: bytes
    outgoing: bool

    def ipv6(self) -> IPv6Header | None:
        if len(self.data) < 54 or struct.unpack_from("!H", self.data, 12)[0] != ETH_P_IPV6:
            return None
        return IPv6Header.parse(self.data[14:])


@dataclass(frozen=True, slots=True)
class IPv6Header:
    src: IPv6Address
    dst: IPv6Address
    next_header: int
    hop_limit: int
    payload: bytes

    @classmethod
    def parse(cls, packet: bytes) -> IPv6Header | None:
        if len(packet) < 40 or packet[0] >> 4 != 6:
            return None
        length, next_header, hop_limit = struct.unpack_from("!HBB", packet, 4)
        return cls(
            IPv6Address(packet[8:24]),
            IPv6Address(packet[24:40]),
            next_header,
            hop_limit,
            packet[40 : 40 + length],
        )

    def inner(self) -> IPv6Header | None:
        """The encapsulated packet, when this one is IPv6-in-IPv6 (next header 41)."""
        return IPv6Header.parse(self.payload) if self.next_header == 41 else None


class Capture:
    """Frames seen on one interface (both directions) from start until :meth:`frames`."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._frames: list[Frame] = []

    def frames(self) -> list[Frame]:
        while select.select([self._sock], [], [], 0)[0]:
            data, address = self._sock.recvfrom(65535)
            self._frames.append(Frame(data, address[2] == PACKET_OUTGOING))
        return list(self._frames)

    def ipv6(self) -> list[tuple[Frame, IPv6Header]]:
        return [(f, h) for f in self.frames() if (h := f.ipv6()) is not None]

    def close(self) -> None:
        self._sock.close()


class NodeProxy:
    """Calls every method of the wrapped object inside the node's namespace."""

    def __init__(self, topology: Topology, node: str, target: Any) -> None:
        self._topology, self._node, self._target = topology, node, target

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._topology.inside(self._node):
                return attr(*args, **kwargs)

        return call

    @property
    def target(self) -> Any:
        return self._target


class Topology:
    """Build the standard topology; see the module docstring."""

    def __init__(
        self,
        mn_link: LinkName = "foreign1",
        addressing: Addressing = "static",
        radvd: bool = False,
        mn_dad: bool = False,
        ra_default_lifetime: int = 2,
    ) -> None:
        if mn_link not in ("home", "foreign1", "foreign2"):
            raise ValueError(f"the mobile node starts on home, foreign1 or foreign2, not {mn_link}")
        if addressing == "slaac" and not radvd:
            raise ValueError("SLAAC needs router advertisements: pass radvd=True")
        self.addressing = addressing
        self.use_radvd = radvd
        self.mn_dad = mn_dad
        self.ra_default_lifetime = ra_default_lifetime
        run_id = f"mip6-{os.getpid()}-{next(_counter)}"
        self.ns = {n: f"{run_id}-{n}" for n in ("lan", "router", "ha", "cn", "mn")}
        self._links = {"router": None, "ha": "home", "cn": "cn", "mn": mn_link}
        self._initial_mn_link = mn_link
        self._static: dict[str, IPv6Address] = {}
        self._created: list[str] = []
        self._radvd: dict[str, subprocess.Popen[str]] = {}
        self._closers: list[Callable[[], None]] = []
        self._tmp: str | None = None
        self._old_sigterm: Any = None

    # --- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> Topology:
        self._install_sigterm()
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def build(self) -> None:
        sweep_stale()
        self._tmp = tempfile.mkdtemp(prefix=f"mip6-topo-{os.getpid()}-")
        for node, name in self.ns.items():
            _run(["ip", "netns", "add", name])
            self._created.append(name)
            self.ip(node, "link", "set", "lo", "up")
        # The lan namespace only switches frames: no IPv6 of its own, no multicast snooping.
        self.sysctl(
            "lan", **{"net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1}
        )
        for link in LINKS:
            self.ip("lan", "link", "add", link, "type", "bridge", "mcast_snooping", "0")
            self.ip("lan", "link", "set", link, "up")
        for node in ("router", "ha", "cn", "mn"):
            dad = 1 if node == "mn" and self.mn_dad else 0
            settings = {f"net.ipv6.conf.{c}.accept_dad": dad for c in ("all", "default")}
            if node == "router" or (node == "ha" and self.use_radvd):
                settings["net.ipv6.conf.all.forwarding"] = 1
            if node == "mn":
                settings["net.ipv6.conf.default.autoconf"] = int(self.addressing == "slaac")
                if self.mn_dad:
                    settings["net.ipv6.conf.default.optimistic_dad"] = 1
                    settings["net.ipv6.conf.default.use_optimistic"] = 1
            self.sysctl(node, **settings)
        for link in LINKS:
            self._plug("router", link, link)
        for node in ("ha", "cn", "mn"):
            self._plug(node, NODE_IFNAME, self._links[node], mac=MN_MAC if node == "mn" else None)
        for link_name, link in LINKS.items():
            self.ip("router", "addr", "add", f"{link.router}/64", "dev", link_name, "nodad")
        self.ip("ha", "addr", "add", f"{HA_ADDRESS}/64", "dev", NODE_IFNAME, "nodad")
        self.ip("ha", "-6", "route", "add", "default", "via", str(LINKS["home"].router))
        self.ip("cn", "addr", "add", f"{CN_ADDRESS}/64", "dev", NODE_IFNAME, "nodad")
        self.ip("cn", "-6", "route", "add", "default", "via", str(LINKS["cn"].router))
        if self.addressing == "static":
            self._readdress(self._initial_mn_link)
        if self.use_radvd:
            self._start_radvd("router", self._router_radvd_conf())
            self._start_radvd("ha", self._ha_radvd_conf())

    def close(self) -> None:
        """Remove everything; safe to call twice and after a partial build."""
        errors = []
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception as exc:  # cleanup goes on whatever a closer raises
                errors.append(f"close: {exc}")
        self._closers.clear()
        for proc in self._radvd.values():
            stop_daemon(proc)
        self._radvd.clear()
        for name in reversed(self._created):
            _empty_namespace(name)
            result = _run(["ip", "netns", "del", name], check=False)
            if result.returncode != 0:
                errors.append(result.stderr.strip())
        self._created.clear()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self._restore_sigterm()
        if errors:
            raise RuntimeError("topology cleanup: " + "; ".join(errors))

    def _install_sigterm(self) -> None:
        # A SIGTERM (CI timeout) unwinds like Ctrl-C, so the finally blocks run.
        if threading.current_thread() is threading.main_thread():
            self._old_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)

    def _restore_sigterm(self) -> None:
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    # --- running things in nodes ------------------------------------------------------

    def ip(self, node: str, *args: str) -> str:
        return _run(["ip", "-n", self.ns[node], *args]).stdout

    def run(
        self, node: str, *argv: str, check: bool = False, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return _run(["ip", "netns", "exec", self.ns[node], *argv], check=check, timeout=timeout)

    def popen(self, node: str, *argv: str, **kwargs: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(["ip", "netns", "exec", self.ns[node], *argv], text=True, **kwargs)

    def sysctl(self, node: str, **settings: int | str) -> None:
        args = [f"{key}={value}" for key, value in settings.items()]
        self.run(node, "sysctl", "-q", "-w", *args, check=True)

    @contextlib.contextmanager
    def inside(self, node: str) -> Iterator[None]:
        """Run the block with the calling thread in the node's namespace."""
        with inside(self.ns[node]):
            yield

    def in_node(self, node: str, factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Build ``factory(*args)`` in the node and return a :class:`NodeProxy` to it.

        The object's ``close()`` (if any) runs when the topology closes.
        """
        with self.inside(node):
            target = factory(*args, **kwargs)
        if hasattr(target, "close"):
            self._closers.append(target.close)
        return NodeProxy(self, node, target)

    def capture(self, node: str, ifname: str) -> Capture:
        """Start capturing every frame on the node's interface (closed with the topology)."""
        with self.inside(node):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((ifname, 0))
        capture = Capture(sock)
        self._closers.append(capture.close)
        return capture

    def ping(
        self,
        node: str,
        dst: IPv6Address,
        source: IPv6Address | None = None,
        deadline: float = 5.0,
        count: int = 1,
        size: int = 56,
    ) -> bool:
        """ICMPv6 echo like ``ping -6 [-I source]``: True once ``count`` replies in a row.

        Sent from a raw socket opened in the node (no ping binary needed); False when
        ``deadline`` seconds pass first.
        """
        with self.inside(node):
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        try:
            if source is not None:
                sock.bind((str(source), 0))
            ident = os.getpid() & 0xFFFF
            payload = bytes(range(256)) * (size // 256 + 1)
            end = time.monotonic() + deadline
            in_a_row, seq = 0, next(_echo_seq) & 0xFFFF
            while time.monotonic() < end:
                seq = (seq + 1) & 0xFFFF
                request = struct.pack("!BBHHH", 128, 0, 0, ident, seq) + payload[:size]
                try:
                    sock.sendto(request, (str(dst), 0))
                except OSError:  # no route yet, neighbour failed: try again
                    in_a_row = 0
                    time.sleep(0.05)
                    continue
                if _await_reply(sock, dst, ident, seq, min(0.5, max(0.0, end - time.monotonic()))):
                    in_a_row += 1
                    if in_a_row >= count:
                        return True
                    time.sleep(0.02)
                else:
                    in_a_row = 0
            return False
        finally:
            sock.close()

    # --- addressing and movement ------------------------------------------------------

    def link_of(self, node: str) -> str | None:
        return self._links[node]

    def mn_address(self, link: str) -> IPv6Address:
        """The mobile node's address on a link, given the addressing mode."""
        return LINKS[link].host(MN_STATIC_ID if self.addressing == "static" else MN_SLAAC_ID)

    @property
    def hoa(self) -> IPv6Address:
        return self.mn_address("home")

    @property
    def coa(self) -> IPv6Address:
        link = self._links["mn"]
        assert link is not None
        return self.mn_address(link)

    def move(
        self,
        node: str,
        link: str,
        flap: bool = True,
        readdress: bool = True,
        replug: bool = False,
    ) -> None:
        """Re-enslave the node's bridge port to another link (a handover).

        With ``flap`` the port goes down first, so the node sees carrier loss and return.
        With ``replug`` the node's interface is deleted and a new one with the same name
        and MAC is plugged into the new link, as ``podman network disconnect/connect``
        does: the node sees its interface go away and another with a new index come.
        A statically addressed mobile node also swaps its address and default route,
        unless ``readdress`` is False.
        """
        if node == "router":
            raise ValueError("the router is on every link already")
        port = f"{_PEER_PREFIX[node]}-{NODE_IFNAME}"
        if replug:
            self.ip("lan", "link", "del", port)  # the pair goes: the node's eth0 too
            self._plug(node, NODE_IFNAME, link, mac=MN_MAC if node == "mn" else None)
            self._links[node] = link
            if node == "mn" and self.addressing == "static" and readdress:
                self._static.pop("mn", None)  # gone with the interface
                self._readdress(link)
            return
        if flap:
            self.ip("lan", "link", "set", port, "down")
        self.ip("lan", "link", "set", port, "master", link)
        if flap:
            self.ip("lan", "link", "set", port, "up")
        self._links[node] = link
        if node == "mn" and self.addressing == "static" and readdress:
            self._readdress(link)

    def add_interface(self, node: str, ifname: str, link: LinkName, address: IPv6Address) -> None:
        """A second interface for a node, on another link, with a static address."""
        if ifname == NODE_IFNAME:
            raise ValueError(f"{NODE_IFNAME} is every node's first interface")
        self._plug(node, ifname, link)
        self.ip(node, "addr", "add", f"{address}/64", "dev", ifname, "nodad")

    def wait_for_address(self, node: str, address: IPv6Address, deadline: float = 5.0) -> None:
        end = time.monotonic() + deadline
        while str(address) not in self.ip(node, "-6", "addr", "show", "dev", NODE_IFNAME):
            if time.monotonic() > end:
                raise TimeoutError(f"{node} has no {address} after {deadline} s")
            time.sleep(0.02)

    def radvd_log(self, node: str) -> str:
        assert self._tmp is not None
        path = os.path.join(self._tmp, f"radvd-{node}.log")
        return open(path).read() if os.path.exists(path) else ""

    def _plug(self, node: str, ifname: str, link: str | None, mac: str | None = None) -> None:
        peer = f"{_PEER_PREFIX[node]}-{ifname}"
        self.ip(
            node,
            "link",
            "add",
            ifname,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "netns",
            self.ns["lan"],
        )
        if mac is not None:
            self.ip(node, "link", "set", ifname, "address", mac)
        self.ip("lan", "link", "set", peer, "master", link or ifname, "up")
        self.ip(node, "link", "set", ifname, "up")

    def _readdress(self, link: str) -> None:
        old = self._static.pop("mn", None)
        if old is not None:
            self.ip("mn", "addr", "del", f"{old}/64", "dev", NODE_IFNAME)
        new = self.mn_address(link)
        # replace: at home the agent may have put the home address back already
        self.ip("mn", "addr", "replace", f"{new}/64", "dev", NODE_IFNAME, "nodad")
        self.ip("mn", "-6", "route", "replace", "default", "via", str(LINKS[link].router))
        self._static["mn"] = new

    # --- radvd ------------------------------------------------------------------------

    def _ra_common(self) -> str:
        return (
            "    AdvSendAdvert on;\n"
            "    MinRtrAdvInterval 0.03;\n"
            "    MaxRtrAdvInterval 0.07;\n"
            "    MinDelayBetweenRAs 0.03;\n"
            "    AdvIntervalOpt on;\n"
            f"    AdvDefaultLifetime {self.ra_default_lifetime};\n"
        )

    @staticmethod
    def _ra_prefix(address: IPv6Address) -> str:
        # With AdvRouterAddr radvd sends the prefix as written: write the full address
        # (R flag + router address, RFC 6275 7.2).
        options = "AdvOnLink on; AdvAutonomous on; AdvRouterAddr on;"
        return f"    prefix {address}/64 {{ {options} }};\n"

    def _router_radvd_conf(self) -> str:
        return "".join(
            f"interface {name} {{\n{self._ra_common()}{self._ra_prefix(LINKS[name].router)}}};\n"
            for name in ("foreign1", "foreign2")
        )

    def _ha_radvd_conf(self) -> str:
        return (
            f"interface {NODE_IFNAME} {{\n{self._ra_common()}"
            "    AdvHomeAgentFlag on;\n"
            "    AdvHomeAgentInfo on;\n"
            f"    HomeAgentPreference {HOME_AGENT_PREFERENCE};\n"
            f"    HomeAgentLifetime {HOME_AGENT_LIFETIME};\n"
            f"{self._ra_prefix(HA_ADDRESS)}}};\n"
        )

    def _start_radvd(self, node: str, conf: str) -> None:
        assert self._tmp is not None
        base = os.path.join(self._tmp, f"radvd-{node}")
        with open(f"{base}.conf", "w") as handle:
            handle.write(conf)
        argv = ["radvd", "-C", f"{base}.conf", "-n", "-p", f"{base}.pid"]
        argv += ["-m", "logfile", "-l", f"{base}.log"]
        proc = self.popen(node, *argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._radvd[node] = proc
        time.sleep(0.05)
        if proc.poll() is not None:
            output = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"radvd on {node} exited: {output}{self.radvd_log(node)}")


def _empty_namespace(name: str, grace: float = 2.0) -> None:
    """Wait for the processes we started there (radvd's helper lingers ~1 s), then kill."""
    end = time.monotonic() + grace
    while namespace_pids(name) and time.monotonic() < end:
        time.sleep(0.05)
    kill_namespace_processes(name)


def _await_reply(sock: socket.socket, peer: IPv6Address, ident: int, seq: int, wait: float) -> bool:
    end = time.monotonic() + wait
    while (left := end - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            return False
        data, address = sock.recvfrom(65535)
        if len(data) < 8 or IPv6Address(address[0].split("%")[0]) != peer:
            continue
        kind, _code, _sum, got_ident, got_seq = struct.unpack_from("!BBHHH", data)
        if kind == 129 and (got_ident, got_seq) == (ident, seq):
            return True
    return False


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture
def make_topology() -> Iterator[Callable[..., Topology]]:
    """``topo = make_topology(mn_link="foreign1")``: built now, removed after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda **options: stack.enter_context(Topology(**options))
