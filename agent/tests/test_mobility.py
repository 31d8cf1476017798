"""The walks users take with a mobile node (RFC 6275 11.5), on namespaces with real radvd.

Every move kind: with a carrier change (the port flaps), without one (the port moves
between bridges with its carrier up, as Wi-Fi roaming or a VLAN change look to the host),
and with the interface replaced by a new one of the same name (``replug``: what a Podman
network disconnect/connect or a re-plugged USB adapter look like).
Every transition: foreign to foreign, foreign to home, home to foreign again, and a "move"
to the link the node is on. A 1 kHz UDP stream from the correspondent node to the home
address runs all along; after each move the stream must flow again, the home agent's
binding must say where the node is, and the node's kernel must hold nothing of the links
it left. Each case prints one JSON line with the gap (ms without datagrams) of its move.
Deadlines bound the waiting; they are not performance assertions.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Interface, IPv6Network
from pathlib import Path

import pytest
from agents import AgentProcess
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule
from netns import stop_daemon
from test_agent_integration import HOME_PREFIX, binding_coa, ha_config, mn_config
from topology import CN_ADDRESS, LINKS, MN_SLAAC_ID, NODE_IFNAME, Link, Topology

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

PORT = 40000
RATE = 1000  # datagrams per second
WINDOW = 0.1  # seconds
SETTLE = 8.0  # deadline for a move to settle, seconds
IPV6_FREEBIND = 78  # linux/in6.h; bind to the home address even while it is being moved
SO_TIMESTAMPNS = 35  # asm-generic/socket.h


# --- the stream -----------------------------------------------------------------------------


# The sender is its own process: a thread here would share the interpreter with the test's
# polling and stall with it; the receiver takes the kernel's receive timestamps for the same
# reason. Datagrams carry a sequence number.
SENDER = """
import socket, sys, time
home, port, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
tx.setblocking(False)
start, seq = time.monotonic(), 0
while True:
    seq += 1
    try:
        tx.sendto(seq.to_bytes(8, "big"), (home, port))
    except OSError:
        pass
    delay = start + seq / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
"""


class Stream:
    """CN -> home address at ``RATE``; (kernel arrival time, sequence) at the mobile node.

    Times are ``time.time()`` seconds (the kernel stamps with the real-time clock).
    """

    def __init__(self, topo: Topology, home: IPv6Address) -> None:
        with topo.inside("mn"):
            self._rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self._rx.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        self._rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._rx.bind((str(home), PORT))
        self._rx.settimeout(0.2)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.arrivals: list[float] = []
        self.sequences: list[int] = []
        self._thread = threading.Thread(target=self._receive, daemon=True, name="stream-rx")
        self._thread.start()
        self._sender = topo.popen(
            "cn", sys.executable, "-c", SENDER, str(home), str(PORT), str(RATE),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancillary, _flags, _address = self._rx.recvmsg(64, 64)
            except TimeoutError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EBADF, errno.ENOTSOCK):
                    return
                continue
            stamp = time.time()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanoseconds = struct.unpack("@qq", value[:16])
                    stamp = seconds + nanoseconds / 1e9
            with self._lock:
                self.arrivals.append(stamp)
                self.sequences.append(int.from_bytes(data[:8], "big"))

    def flowing(self, since: float) -> bool:
        """Datagrams that arrived after ``since`` fill the last two windows to at least half
        the rate, measured back from the last arrival, which is recent (a moment in which
        this process did not read the socket is not a gap: the kernel stamped them)."""
        with self._lock:
            recent = [t for t in self.arrivals[-4 * int(RATE * WINDOW) :] if t > since]
        if not recent or time.time() - recent[-1] > 2.5 * WINDOW:
            return False
        last, need = recent[-1], RATE * WINDOW * 0.5
        full = sum(1 for t in recent if last - WINDOW < t <= last)
        before = sum(1 for t in recent if last - 2 * WINDOW < t <= last - WINDOW)
        return full >= need and before >= need

    def received_since(self, since: float) -> int:
        with self._lock:
            return sum(1 for t in self.arrivals if t > since)

    def gap_since(self, start: float) -> float:
        """The longest time without a datagram from ``start`` until the last one, in ms."""
        with self._lock:
            times = [start] + [t for t in self.arrivals if t >= start]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0) * 1000

    def lost_since(self, start: float) -> int:
        """Datagrams missing between the first and the last one received since ``start``
        (the move's gap, in datagrams, plus any other loss)."""
        with self._lock:
            seqs = [q for t, q in zip(self.arrivals, self.sequences, strict=True) if t >= start]
        return max(seqs) - min(seqs) + 1 - len(set(seqs)) if seqs else 0

    def close(self) -> None:
        self._sender.kill()
        self._sender.wait(timeout=5)
        self._stop.set()
        self._thread.join(timeout=2)
        self._rx.close()


# --- where the node is, and what its kernel holds -------------------------------------------


def _addresses(topo: Topology, ifname: str) -> list[IPv6Interface]:
    out = topo.ip("mn", "-6", "-o", "addr", "show", "dev", ifname, "scope", "global")
    return [IPv6Interface(line.split()[3]) for line in out.splitlines() if " inet6 " in line]


def kernel_problems(topo: Topology, link: str, homes: tuple[IPv6Address, ...]) -> list[str]:
    """Leftovers of other links in the mobile node's kernel; [] when clean."""
    problems = []
    prefix = link_of(link).prefix
    home_prefix = IPv6Network(HOME_PREFIX)
    defaults = [
        line
        for line in topo.ip("mn", "-6", "route", "show", "default").splitlines()
        if line.startswith("default")
    ]
    if len(defaults) != 1:
        problems.append(f"{len(defaults)} default routes: {defaults}")
    on_eth0 = _addresses(topo, NODE_IFNAME)
    for address in on_eth0:
        if address.ip not in prefix:
            problems.append(f"{address} on {NODE_IFNAME}, outside {prefix} ({link})")
    on_lo = [a.ip for a in _addresses(topo, "lo")]
    for address in on_lo:
        if address not in homes or link == "home":
            problems.append(f"{address} on lo at {link}")
    for home in homes:
        if link == "home" and home not in {a.ip for a in on_eth0}:
            problems.append(f"home address {home} not on {NODE_IFNAME} at home")
        if link != "home" and home not in on_lo:
            problems.append(f"home address {home} not on lo away from home")
    routes = topo.ip("mn", "-6", "route", "show", "table", "main", "dev", NODE_IFNAME)
    for line in routes.splitlines():
        dst = line.split()[0]
        if dst == "default" or IPv6Network(dst).is_link_local:
            continue
        if link != "home" and IPv6Network(dst).overlaps(home_prefix):
            problems.append(f"home prefix route via {NODE_IFNAME} away from home: {line}")
        elif not IPv6Network(dst).overlaps(prefix):
            # An on-link route of a link left behind sends its hosts' traffic into this one.
            problems.append(f"route of another link via {NODE_IFNAME} at {link}: {line}")
    problems += _data_plane_problems(topo, link)
    return problems


def _data_plane_problems(topo: Topology, link: str) -> list[str]:
    """The agent's own kernel objects (proto 86): none at home; away, decapsulation only at
    the current care-of address."""
    rules = [line for line in topo.ip("mn", "-6", "rule").splitlines() if "proto 86" in line]
    routes = topo.ip("mn", "-6", "route", "show", "table", "all", "proto", "86").splitlines()
    if link == "home":
        return [f"agent's {line} at home" for line in rules + routes]
    coa = str(coa_at(topo, link))
    decap = [line for line in rules if "ipproto ipv6" in line]
    problems = [f"decapsulation rule of another care-of address: {line}" for line in decap]
    problems = [p for p in problems if f"to {coa} " not in p]
    if len(decap) != 1:
        problems.append(f"{len(decap)} decapsulation rules at {link}: {decap}")
    for line in routes:
        if "seg6local" in line and not line.startswith(f"{coa} "):
            problems.append(f"decapsulation route of another care-of address: {line}")
    return problems


def binding_matches(
    ha: AgentProcess, topo: Topology, link: str, homes: tuple[IPv6Address, ...]
) -> bool:
    want = None if link == "home" else str(coa_at(topo, link))
    return all(binding_coa(ha, home) == want for home in homes)


@dataclass
class Walk:
    topo: Topology
    ha: AgentProcess
    mn: AgentProcess
    homes: tuple[IPv6Address, ...]
    stream: Stream | None = None
    link: str = "foreign1"
    log: list[dict] = field(default_factory=list)
    tags: dict = field(default_factory=dict)  # added to every record

    def settled(self, since: float) -> bool:
        if not binding_matches(self.ha, self.topo, self.link, self.homes):
            return False
        if self.stream is not None and not self.stream.flowing(since):
            return False
        return not kernel_problems(self.topo, self.link, self.homes)

    def describe(self, since: float) -> str:
        state = {
            "link": self.link,
            "bindings": self.ha.call("bindings"),
            "bul": self.mn.call("bul"),
            "kernel": kernel_problems(self.topo, self.link, self.homes),
            "received since the move": self.stream.received_since(since) if self.stream else None,
            "gap_ms": round(self.stream.gap_since(since)) if self.stream else None,
        }
        return json.dumps(state, default=str)

    def settle(self, since: float, deadline: float = SETTLE) -> float:
        """Wait until everything matches the location at once; seconds it took.

        The stream must flow with datagrams sent after ``since`` (the move).
        """
        start = time.monotonic()
        end = start + deadline
        while not (settled := self.settled(since)) and time.monotonic() < end:
            time.sleep(0.05)
        took = time.monotonic() - start
        if not settled:  # each invariant on its own, so that the failure says which one
            assert binding_matches(self.ha, self.topo, self.link, self.homes), self.describe(since)
            problems = kernel_problems(self.topo, self.link, self.homes)
            assert problems == [], f"kernel leftovers at {self.link}: {problems}"
            assert self.stream is not None and self.stream.flowing(since), (
                f"stream not delivered again at {self.link}\n{self.describe(since)}"
            )
        for home in self.homes:
            assert self.topo.ping("mn", CN_ADDRESS, source=home, deadline=5), (
                f"{home} -> CN at {self.link}"
            )
        return took

    def move(self, link: str, kind: str) -> dict:
        """Move, settle, check; the record of the move (also printed as JSON)."""
        before_bu = self.ha.call("counters").get("mh_in.bu", 0)
        before_seq = {e["home_address"]: e["sequence"] for e in self.mn.call("bul")}
        frm, moved_at = self.link, time.time()
        if kind == "ra-only":
            move_by_router(self.topo, link)
        else:
            self.topo.move("mn", link, flap=kind == "carrier", replug=kind == "replug")
        self.link = link
        # The same link again: nothing may happen (RS, RA, address events all pass). Not
        # after a replug, whose new interface needs the node's kernel state again.
        same = frm == link and kind != "replug"
        if same:
            time.sleep(0.6)  # observe for a while
        took = self.settle(moved_at)
        record = {
            "kind": kind,
            "from": frm,
            "to": link,
            "settle_ms": round(took * 1000),
            "gap_ms": round(self.stream.gap_since(moved_at)) if self.stream else None,
            "lost": self.stream.lost_since(moved_at) if self.stream else None,
            "bu_in": self.ha.call("counters").get("mh_in.bu", 0) - before_bu,
            **self.tags,
        }
        if same:
            after_seq = {e["home_address"]: e["sequence"] for e in self.mn.call("bul")}
            assert after_seq == before_seq, f"re-registered on a move to the same link {link}"
            assert record["bu_in"] == 0, f"binding updates on a move to the same link {link}"
        self.log.append(record)
        print(json.dumps(record))
        return record

    def restart(self, which: str, move_to: str | None = None) -> dict:
        """kill -9 one agent, optionally move while it is down, start it again, settle.

        The kernel keeps forwarding while the agent is down; the restarted agent picks up
        from its saved state (or, at home, has nothing to pick up)."""
        agent = self.mn if which == "mn" else self.ha
        frm, killed_at = self.link, time.time()
        agent.kill9()
        if move_to is not None and move_to != self.link:
            self.topo.move("mn", move_to, flap=False)
            self.link = move_to
        time.sleep(0.5)
        restarted_at = time.time()
        agent.start()
        answering_at = time.time()  # the restore is done before the control socket answers
        took = self.settle(restarted_at, deadline=SETTLE + 4)
        if which == "mn":
            # A restored registration is refreshed 1 s after its restore: let that BU and
            # its BA go now, not inside a later move's "nothing may happen" window.
            time.sleep(max(0.0, answering_at + 1.5 - time.time()))
        record = {
            "kind": "restart",
            "agent": which,
            "from": frm,
            "to": self.link,
            "settle_after_restart_ms": round(took * 1000),
            "gap_ms": round(self.stream.gap_since(killed_at)) if self.stream else None,
            **self.tags,
        }
        self.log.append(record)
        print(json.dumps(record))
        return record


@contextlib.contextmanager
def walk(
    tmp_path: Path,
    start: str = "foreign1",
    stream: bool = True,
    dhaad: bool = False,
    homes: tuple[IPv6Address, ...] = (),
    **mobile_node: object,
) -> Iterator[Walk]:
    config = mn_config(tmp_path / "mn", **mobile_node)
    entries = config["mobile_node"]["home_addresses"]
    entries += [{**entries[0], "address": f"{home}/64"} for home in homes]
    if dhaad:
        # No home agent configured: DHAAD from the foreign link finds it (RFC 6275 11.4.1).
        config["mobile_node"].pop("home_addresses")
        config["mobile_node"]["home_prefix"] = HOME_PREFIX
    with (
        Topology(mn_link=start, addressing="slaac", radvd=True, mn_dad=True) as topo,
        AgentProcess(topo.ns["ha"], tmp_path / "ha", ha_config(tmp_path / "ha", dad=False)) as ha,
        AgentProcess(topo.ns["mn"], tmp_path / "mn", config) as mn,
    ):
        homes = tuple(IPv6Address(e["home_address"]) for e in mn.call("bul"))
        w = Walk(topo, ha, mn, homes, link=start)
        if stream:
            w.stream = Stream(topo, homes[0])
        try:
            w.settle(time.time(), deadline=20)
            yield w
        finally:
            if w.stream is not None:
                w.stream.close()


# --- a change of router with no change of port ---------------------------------------------

# foreign1's port, but served by another router with another prefix: "foreign1-b".
OTHER_ROUTER = Link("foreign1-b", IPv6Network("2001:db8:5::/64"))
OTHER_ROUTER_ON_FOREIGN1 = LINKS["foreign1"].host(0xFFFD)


def link_of(name: str) -> Link:
    return OTHER_ROUTER if name == OTHER_ROUTER.name else LINKS[name]


def coa_at(topo: Topology, name: str) -> IPv6Address:
    return link_of(name).host(MN_SLAAC_ID) if name == OTHER_ROUTER.name else topo.mn_address(name)


def _add_other_router(topo: Topology) -> None:
    """A second router namespace on foreign1's bridge, for 2001:db8:5::/64, behind which the
    main router routes that prefix; its radvd starts only when the node "moves" there."""
    name = topo.ns["lan"].rsplit("-", 1)[0] + "-rtrb"
    subprocess.run(["ip", "netns", "add", name], check=True)
    topo._created.append(name)  # removed with the topology
    topo.ns["rtrb"] = name
    topo.ip("rtrb", "link", "set", "lo", "up")
    topo.sysctl("rtrb", **{"net.ipv6.conf.all.forwarding": 1, "net.ipv6.conf.all.accept_dad": 0})
    topo.sysctl("rtrb", **{"net.ipv6.conf.default.accept_dad": 0})
    topo.ip("rtrb", "link", "add", NODE_IFNAME, "type", "veth", "peer", "name", "rb-eth0",
            "netns", topo.ns["lan"])  # fmt: skip
    topo.ip("lan", "link", "set", "rb-eth0", "master", "foreign1", "up")
    topo.ip("rtrb", "link", "set", NODE_IFNAME, "up")
    topo.ip("rtrb", "addr", "add", f"{OTHER_ROUTER.router}/64", "dev", NODE_IFNAME, "nodad")
    topo.ip("rtrb", "addr", "add", f"{OTHER_ROUTER_ON_FOREIGN1}/64", "dev", NODE_IFNAME, "nodad")
    topo.ip("rtrb", "-6", "route", "add", "default", "via", str(LINKS["foreign1"].router))
    topo.ip("router", "-6", "route", "add", str(OTHER_ROUTER.prefix), "via",
            str(OTHER_ROUTER_ON_FOREIGN1), "dev", "foreign1")  # fmt: skip


def _router_conf(topo: Topology, links: list[str]) -> str:
    return "".join(
        f"interface {name} {{\n{topo._ra_common()}{topo._ra_prefix(LINKS[name].router)}}};\n"
        for name in links
    )


def move_by_router(topo: Topology, link: str) -> None:
    """The node's port stays on foreign1's bridge; the router advertising there changes."""
    if "rtrb" not in topo.ns:
        _add_other_router(topo)
    for node in ("router", "rtrb"):
        proc = topo._radvd.pop(node, None)
        if proc is not None:
            stop_daemon(proc)
    if link == OTHER_ROUTER.name:
        topo._start_radvd("router", _router_conf(topo, ["foreign2"]))
        conf = (
            f"interface {NODE_IFNAME} {{\n{topo._ra_common()}"
            f"{topo._ra_prefix(OTHER_ROUTER.router)}}};\n"
        )
        topo._start_radvd("rtrb", conf)
    elif link == "foreign1":
        topo._start_radvd("router", _router_conf(topo, ["foreign1", "foreign2"]))
    else:
        raise ValueError(f"a change of router on foreign1's port cannot reach {link}")


# --- the matrix -----------------------------------------------------------------------------

# (walk before the measured move, the measured move's destination)
TRANSITIONS = {
    "foreign-foreign": ((), "foreign2"),
    "foreign-home": ((), "home"),
    "home-foreign": (("home",), "foreign2"),
    "same-foreign": ((), "foreign1"),
    "same-home": (("home",), "home"),
    "foreign-foreign-home": (("foreign2",), "home"),
}
KINDS = ["carrier", "no-carrier"]
# A replug is a new interface: the same link again is a move like any other for it.
REPLUG_TRANSITIONS = [
    "foreign-foreign",
    "foreign-home",
    "home-foreign",
    "same-foreign",
    "same-home",
    "foreign-foreign-home",
]


@pytest.mark.parametrize(
    ("kind", "transition"),
    [(k, t) for k in KINDS for t in TRANSITIONS if t != "foreign-foreign-home"]
    + [("replug", t) for t in REPLUG_TRANSITIONS],
)
def test_move_matrix(tmp_path: Path, kind: str, transition: str) -> None:
    before, to = TRANSITIONS[transition]
    with walk(tmp_path) as w:
        w.tags["case"] = f"matrix {kind} {transition}"
        for link in before:
            w.move(link, kind)
        w.move(to, kind)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("eager", [0, 1, 2])
def test_eager_movement_detection(tmp_path: Path, eager: int, kind: str) -> None:
    """eager_movement_detection 0, 1 and 2 (docs/agent-config.md) on the same walk, with and
    without carrier changes (2 may switch before reachability is confirmed: it must still
    end where the node is, with nothing left of the links it passed)."""
    with walk(tmp_path, eager_movement_detection=eager) as w:
        w.tags["case"] = f"eager {eager} {kind}"
        for link in ("foreign2", "home", "foreign1", "foreign1", "home", "foreign2"):
            w.move(link, kind)


# --- restarts in the middle of a walk ------------------------------------------------------

RESTARTS = ["mn-away", "ha-away", "ha-down-during-move", "mn-down-during-move", "mn-starts-at-home"]


@pytest.mark.parametrize("case", RESTARTS)
def test_restart_in_a_walk(tmp_path: Path, case: str) -> None:
    """RFC 6275 walks with an agent restart (kill -9) in them: the kernel keeps forwarding
    while an agent is down, the restarted agent picks up where it was, and the walk goes on
    (the node started at home leaves and comes back like any other)."""
    with walk(tmp_path, start="home" if case == "mn-starts-at-home" else "foreign1") as w:
        w.tags["case"] = f"restart {case}"
        if case == "mn-starts-at-home":
            for link in ("foreign1", "home", "foreign2", "home"):
                w.move(link, "no-carrier")
            return
        assert w.stream is not None
        agent = w.mn if case.startswith("mn") else w.ha
        killed_at = time.time()
        agent.kill9()
        if case.endswith("during-move"):
            # The node moves while one end is down: its BUs go unanswered (HA down) or
            # are never sent (MN down) until the agent is back.
            w.topo.move("mn", "foreign2", flap=False)
            w.link = "foreign2"
            time.sleep(1.0)
        else:
            time.sleep(1.0)
            assert w.stream.flowing(killed_at), "the kernel forwards while the agent is down"
        restarted_at = time.time()
        agent.start()
        took = w.settle(restarted_at, deadline=SETTLE + 4)
        record = {
            "kind": "restart",
            "case": case,
            "down_s": round(restarted_at - killed_at, 2),
            "settle_after_restart_ms": round(took * 1000),
            "gap_ms": round(w.stream.gap_since(killed_at)),
        }
        print(json.dumps(record))
        w.log.append(record)
        # The walk goes on from wherever the restart left it.
        for link in ("home", "foreign1", "foreign2"):
            w.move(link, "no-carrier")


# --- more home addresses, a discovered home agent -------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_two_home_addresses_walk_home_and_away_twice(tmp_path: Path, kind: str) -> None:
    with walk(tmp_path, homes=(IPv6Address("2001:db8:1::200"),)) as w:
        assert len(w.homes) == 2
        w.tags["case"] = "two home addresses"
        for link in ("home", "foreign2", "home", "foreign1"):
            w.move(link, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_discovered_home_agent_leaving_home_twice(tmp_path: Path, kind: str) -> None:
    with walk(tmp_path, dhaad=True) as w:
        # the home address comes from the home prefix and the interface identifier: the
        # very address SLAAC gives at home, so the kernel's own prefix route is in play
        assert w.homes == (w.topo.mn_address("home"),)
        w.tags["case"] = "discovered home agent"
        assert w.mn.call("bul")[0]["home_agent"] == str(LINKS["home"].host(1))
        assert w.ha.call("counters").get("dhaad_request_in", 0) >= 1, "found by DHAAD"
        for link in ("home", "foreign2", "home", "foreign1"):
            w.move(link, kind)


# --- random walks ---------------------------------------------------------------------------


# One random step: a move (weighted so that most steps are moves) or a kill -9 and restart of
# either agent, at rest or with the node moving while its own agent is down.
LINK_NAMES = ("home", "foreign1", "foreign2")
MOVES = [("move", link, kind) for link in LINK_NAMES for kind in ("carrier", "no-carrier")]
REPLUGS = [("move", link, "replug") for link in LINK_NAMES]
STEPS = [
    *MOVES,
    *MOVES,
    *REPLUGS,
    ("restart", "mn", None),
    ("restart", "ha", None),
    *(("restart", "mn", link) for link in LINK_NAMES),
]


class RandomWalk(RuleBasedStateMachine):
    """One topology, home agent and mobile node per run; random moves and agent restarts,
    invariants after each settle (the HA's binding, the stream, the kernel, the reverse
    tunnel)."""

    def __init__(self) -> None:
        super().__init__()
        self._dir = Path(tempfile.mkdtemp(prefix="mip6-walk-"))
        self._stack = contextlib.ExitStack()
        try:
            self.walk = self._stack.enter_context(walk(self._dir))
            self.walk.tags["case"] = "random walk"
        except BaseException:
            self._stack.close()
            shutil.rmtree(self._dir, ignore_errors=True)
            raise

    @rule(step=st.sampled_from(STEPS))
    def step(self, step: tuple[str, str, object]) -> None:
        kind, where, how = step
        if kind == "move":
            assert isinstance(how, str)
            self.walk.move(where, how)
        else:
            self.walk.restart(where, move_to=how if isinstance(how, str) else None)

    def teardown(self) -> None:
        try:
            moves = sum(1 for r in self.walk.log if r["kind"] != "restart")
            print(json.dumps({"random_walk_moves": moves, "steps": len(self.walk.log)}))
            self._stack.close()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)


TestRandomWalk = RandomWalk.TestCase
# Hypothesis runs the full step count but for a tiny chance: 14 steps per walk, about 11 of
# them moves. No shrinking: each step is a real handover; the failing walk is printed as it
# ran.
TestRandomWalk.settings = settings(
    max_examples=3,
    stateful_step_count=14,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def test_change_of_router_without_any_link_change(tmp_path: Path) -> None:
    """Only the RAs change: foreign1's router stops advertising, another router on the same
    port starts with another prefix (RFC 6275 11.5.1 without link-layer triggers)."""
    with walk(tmp_path) as w:
        w.tags["case"] = "change of router"
        for link in ("foreign1-b", "foreign1", "foreign1-b", "foreign1"):
            w.move(link, "ra-only")


# --- the kernel side of leaving a link ------------------------------------------------------


def test_leaving_a_link_drops_its_prefix_routes_even_with_a_slaac_home_address() -> None:
    """kernel.leave_old_links then remove_from_links, as LeaveOldLinks and LeaveHomeLink run
    when a node whose home address SLAAC made leaves home: the kernel keeps a dynamic
    address's prefix route after the address; the agent must not (the BU to the home agent
    would go out of the foreign link). Static addresses and their prefixes stay."""
    from mip6agent.daemon import kernel

    home = LINKS["home"].host(MN_SLAAC_ID)
    static = IPv6Interface("2001:db8:9::1/64")
    with Topology(mn_link="foreign1") as topo:
        lifetimes = ("valid_lft", "3600", "preferred_lft", "3600", "nodad")
        topo.ip("mn", "addr", "add", f"{home}/64", "dev", NODE_IFNAME, *lifetimes)
        topo.ip("mn", "addr", "add", f"{link_of('foreign2').host(MN_SLAAC_ID)}/64", "dev",
                NODE_IFNAME, *lifetimes)  # fmt: skip
        topo.ip("mn", "addr", "add", str(static), "dev", NODE_IFNAME, "nodad")
        errors: list[BaseException] = []

        def leave() -> None:  # a thread of its own: kernel keeps one netlink socket per thread
            try:
                with topo.inside("mn"):
                    done = kernel.leave_old_links(
                        NODE_IFNAME, None, (LINKS["foreign1"].prefix,), {home}
                    )
                    kernel.remove_from_links(home)
                assert "route 2001:db8:1::/64" in done and "route 2001:db8:3::/64" in done
            except BaseException as exc:  # reported in the test's thread
                errors.append(exc)

        thread = threading.Thread(target=leave)
        thread.start()
        thread.join(timeout=30)
        assert not errors, errors
        routes = topo.ip("mn", "-6", "route", "show", "dev", NODE_IFNAME)
        dsts = {line.split()[0] for line in routes.splitlines()}
        assert "2001:db8:1::/64" not in dsts and "2001:db8:3::/64" not in dsts, routes
        assert {"2001:db8:2::/64", str(static.network)} <= dsts, routes
        left = {a.ip for a in _addresses(topo, NODE_IFNAME)}
        assert left == {topo.mn_address("foreign1"), static.ip}, left


# --- a node with two interfaces ------------------------------------------------------------

ETH1_MAC = "02:00:00:00:02:00"
ETH1_SLAAC_ID = 0x00FF_FE00_0200  # modified EUI-64 of ETH1_MAC


def test_two_interfaces_fail_over_go_home_and_leave_again(tmp_path: Path) -> None:
    """eth0 on foreign1 and eth1 on foreign2, both watched: when eth0's link goes, the
    binding moves to eth1's care-of address; eth0 on the home link makes the node home
    (deregistered, whatever eth1 sees); eth0 away again registers again. The stream to the
    home address flows after every step."""
    config = mn_config(tmp_path / "mn", interfaces=[NODE_IFNAME, "eth1"])
    with Topology(mn_link="foreign1", addressing="slaac", radvd=True, mn_dad=True) as topo:
        topo._plug("mn", "eth1", "foreign2", mac=ETH1_MAC)
        eth0_at = {name: LINKS[name].host(MN_SLAAC_ID) for name in ("foreign1", "foreign2")}
        eth1_coa = str(LINKS["foreign2"].host(ETH1_SLAAC_ID))
        ha_dir, mn_dir = tmp_path / "ha", tmp_path / "mn"
        with (
            AgentProcess(topo.ns["ha"], ha_dir, ha_config(ha_dir, dad=False)) as ha,
            AgentProcess(topo.ns["mn"], mn_dir, config) as mn,
        ):
            home = IPv6Address(mn.call("bul")[0]["home_address"])
            stream = Stream(topo, home)
            try:

                def settle(want: set[str | None], what: str) -> str | None:
                    since, end = time.time(), time.monotonic() + SETTLE + 4
                    while time.monotonic() < end:
                        coa = binding_coa(ha, home)
                        if coa in want and stream.flowing(since):
                            return coa
                        time.sleep(0.05)
                    raise AssertionError(
                        f"{what}: binding {binding_coa(ha, home)} (want one of {want}), "
                        f"stream flowing {stream.flowing(since)}, bul {mn.call('bul')}"
                    )

                first = settle({str(eth0_at["foreign1"]), eth1_coa}, "registered at start")
                print(json.dumps({"case": "two interfaces", "first_coa": first}))
                # eth0's link goes away (carrier down): only eth1 is left
                topo.ip("lan", "link", "set", f"mn-{NODE_IFNAME}", "down")
                settle({eth1_coa}, "eth0 down: eth1's care-of address")
                assert topo.ping("mn", CN_ADDRESS, source=home, deadline=5), "HoA -> CN via eth1"
                # eth0 back, now on the home link: the node is home
                topo.ip("lan", "link", "set", f"mn-{NODE_IFNAME}", "master", "home")
                topo.ip("lan", "link", "set", f"mn-{NODE_IFNAME}", "up")
                settle({None}, "eth0 at home: deregistered")
                # eth0 leaves home for foreign1: registered again, from either interface
                topo.move("mn", "foreign1", flap=False)
                settle({str(eth0_at["foreign1"]), eth1_coa}, "eth0 away again")
                assert topo.ping("mn", CN_ADDRESS, source=home, deadline=5), "HoA -> CN"
            finally:
                stream.close()
