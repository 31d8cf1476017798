"""Hostile-input helpers for the home agent: a signed canary mobile node and attackers.

Everything on the wire here is built by hand with :mod:`struct` and signed with
:mod:`hmac`, independently of mip6agent's own codec, so a codec bug cannot hide itself.

* :func:`add_node` puts an extra namespace (attacker, canary) on a link of a
  :class:`topology.Topology`; it is removed with the topology.
* :class:`Canary` is a signed mobile node (RFC 6275 + RFC 4285) in such a namespace: every
  ``interval`` it sends a Binding Update and records whether, how and how fast the
  Binding Acknowledgement came back. ``stats()`` is the availability measure of a test.
* :class:`Sniffer` records the IPv6 packets an interface sends (BAs, DHAAD replies).
* The packet builders (:func:`signed_bu`, :func:`unsigned_bu`, :func:`router_advert`, ...)
  and :func:`mutate` make the attack traffic; ``python hostile.py '<json>'`` runs a bulk
  attacker (flood, fuzz, nd) in its own process, so it has a core of its own, and prints
  JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import os
import random
import select
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

HOME_PREFIX = IPv6Network("2001:db8:1::/64")
HA = IPv6Address("2001:db8:1::1")
# RFC 2526: the Home-Agents anycast address of a /64 is interface id fdff:ffff:ffff:fffe.
HA_ANYCAST = IPv6Address("2001:db8:1::fdff:ffff:ffff:fffe")
SUBNET_ROUTER_ANYCAST = HOME_PREFIX.network_address

IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS = 0, 43, 60
IPPROTO_ICMPV6, IPPROTO_NONE, IPPROTO_MH = 58, 59, 135
ETH_P_ALL, ETH_P_IPV6 = 0x0003, 0x86DD
PACKET_OUTGOING = 4
SOL_PACKET, PACKET_STATISTICS = 263, 6

BU_A, BU_H = 0x8000, 0x4000
NTP_UNIX_OFFSET = 2_208_988_800

# Mobility option types (RFC 6275 6.2, RFC 4283, RFC 4285)
OPT_PAD1, OPT_PADN, OPT_ALT_COA, OPT_MN_ID, OPT_AUTH, OPT_MESG_ID = 0, 1, 3, 8, 9, 10
HAO_TYPE = 201

PYTHON = sys.executable
HERE = Path(__file__).resolve().parent


# --- checksums and headers ----------------------------------------------------------------


def ones_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def upper_checksum(src: IPv6Address, dst: IPv6Address, proto: int, data: bytes) -> int:
    pseudo = src.packed + dst.packed + struct.pack("!I3xB", len(data), proto)
    value = ~ones_sum(pseudo + data) & 0xFFFF
    return value or 0xFFFF


def ipv6(src: IPv6Address, dst: IPv6Address, nh: int, payload: bytes, hlim: int = 64) -> bytes:
    return struct.pack("!IHBB", 6 << 28, len(payload), nh, hlim) + src.packed + dst.packed + payload


def pad(position: int, modulus: int, remainder: int) -> bytes:
    """Pad1/PadN so that ``position + len(result)`` is ``remainder`` modulo ``modulus``."""
    n = (remainder - position) % modulus
    if n == 0:
        return b""
    if n == 1:
        return b"\0"
    return bytes([OPT_PADN, n - 2]) + bytes(n - 2)


def hao_header(next_header: int, home: IPv6Address) -> bytes:
    """Destination Options header with PadN(2 data octets) + Home Address option (8n+6)."""
    return bytes([next_header, 2, 1, 2, 0, 0, HAO_TYPE, 16]) + home.packed


def ntp_now(at: float | None = None) -> int:
    now = time.time() if at is None else at
    seconds = int(now)
    fraction = int((now - seconds) * (1 << 32)) & 0xFFFFFFFF
    return ((seconds + NTP_UNIX_OFFSET) & 0xFFFFFFFF) << 32 | fraction


def _mh(mh_type: int, body: bytes, options: bytes) -> bytearray:
    message = bytearray(bytes([IPPROTO_NONE, 0, mh_type, 0, 0, 0]) + body + options)
    assert len(message) % 8 == 0, len(message)
    message[1] = len(message) // 8 - 1
    return message


def _finish_mh(
    message: bytearray, src: IPv6Address, dst: IPv6Address, home: IPv6Address | None, hlim: int
) -> bytes:
    # RFC 6275 6.1.1: with a Home Address option the pseudo-header carries the home address.
    struct.pack_into("!H", message, 4, upper_checksum(home or src, dst, IPPROTO_MH, message))
    if home is None:
        return ipv6(src, dst, IPPROTO_MH, bytes(message), hlim)
    return ipv6(src, dst, IPPROTO_DSTOPTS, hao_header(IPPROTO_MH, home) + message, hlim)


def signed_bu(
    *,
    src: IPv6Address,
    home: IPv6Address,
    seq: int,
    nai: str,
    spi: int,
    key: bytes,
    dst: IPv6Address = HA,
    alt_coa: IPv6Address | None = None,
    lifetime: int = 60,
    flags: int = BU_A | BU_H,
    timestamp: int | None = None,
    hlim: int = 64,
    with_hao: bool = True,
) -> bytes:
    """A home registration signed as RFC 4285 says, the authentication option last.

    Authenticator: First(96, HMAC_SHA1(key, CoA | HoA | MH data)), MH data with a zero
    checksum, up to and including the SPI; the CoA is the Alternate CoA when there is one.
    """
    body = struct.pack("!HHH", seq & 0xFFFF, flags, lifetime // 4)
    options = bytearray()
    at = 12  # offset of the first option in the Mobility Header
    if alt_coa is not None:
        options += pad(at + len(options), 8, 6) + bytes([OPT_ALT_COA, 16]) + alt_coa.packed
    nai_bytes = nai.encode()
    options += bytes([OPT_MN_ID, 1 + len(nai_bytes), 1]) + nai_bytes
    options += pad(at + len(options), 8, 2)
    options += bytes([OPT_MESG_ID, 8]) + struct.pack(
        "!Q", ntp_now() if timestamp is None else timestamp
    )
    # The 19-octet authentication option ends the message on an 8-octet boundary.
    options += pad(at + len(options), 8, 5)
    options += bytes([OPT_AUTH, 17, 1]) + struct.pack("!I", spi)
    message = bytearray(bytes([IPPROTO_NONE, 0, 5, 0, 0, 0]) + body + options)
    message[1] = (len(message) + 12) // 8 - 1
    coa = alt_coa if alt_coa is not None else src
    mac = hmac.new(key, coa.packed + home.packed + bytes(message), hashlib.sha1).digest()[:12]
    message += mac
    return _finish_mh(message, src, dst, home if with_hao else None, hlim)


def unsigned_bu(
    *,
    src: IPv6Address,
    home: IPv6Address | None,
    seq: int,
    dst: IPv6Address = HA,
    alt_coa: IPv6Address | None = None,
    lifetime: int = 60,
    flags: int = BU_A | BU_H,
    hlim: int = 64,
) -> bytes:
    """A Binding Update without RFC 4285 options; with an Alternate CoA it is the 96-octet one."""
    body = struct.pack("!HHH", seq & 0xFFFF, flags, lifetime // 4)
    options = b""
    if alt_coa is not None:
        options = pad(12, 8, 6) + bytes([OPT_ALT_COA, 16]) + alt_coa.packed
    options += pad(12 + len(options), 8, 0)
    return _finish_mh(_mh(5, body, options), src, dst, home, hlim)


def _icmpv6(src: IPv6Address, dst: IPv6Address, message: bytes, hlim: int) -> bytes:
    data = bytearray(message)
    struct.pack_into("!H", data, 2, 0)
    struct.pack_into("!H", data, 2, upper_checksum(src, dst, IPPROTO_ICMPV6, bytes(data)))
    return ipv6(src, dst, IPPROTO_ICMPV6, bytes(data), hlim)


def dhaad_request(src: IPv6Address, ident: int, dst: IPv6Address = HA_ANYCAST) -> bytes:
    return _icmpv6(src, dst, struct.pack("!BBHHH", 144, 0, 0, ident, 0), 64)


def router_advert(
    src: IPv6Address,
    dst: IPv6Address,
    router_address: IPv6Address,
    *,
    preference: int = 65535,
    ha_lifetime: int = 1800,
    hlim: int = 255,
    mac: bytes | None = None,
) -> bytes:
    """RA with the H flag, a Home Agent Information option and a PIO with the R bit."""
    message = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0x20, 1800, 0, 0)
    message += struct.pack("!BBHHH", 8, 1, 0, preference, ha_lifetime)
    prefix_len = 64
    message += struct.pack("!BBBBIII", 3, 4, prefix_len, 0xE0, 86400, 14400, 0)
    message += router_address.packed
    if mac is not None:
        message += bytes([1, 1]) + mac
    return _icmpv6(src, dst, message, hlim)


def neighbor_advert(
    src: IPv6Address,
    dst: IPv6Address,
    target: IPv6Address,
    mac: bytes = b"\x02\xba\xdb\xad\x00\x01",
    hlim: int = 255,
) -> bytes:
    message = struct.pack("!BBHI", 136, 0, 0, 0x20 << 24) + target.packed + bytes([2, 1]) + mac
    return _icmpv6(src, dst, message, hlim)


def neighbor_solicit(
    src: IPv6Address, dst: IPv6Address, target: IPv6Address, hlim: int = 255
) -> bytes:
    message = struct.pack("!BBHI", 135, 0, 0, 0) + target.packed
    if not src.is_unspecified:
        message += bytes([1, 1]) + b"\x02\xba\xdb\xad\x00\x02"
    return _icmpv6(src, dst, message, hlim)


# --- parsing what comes back ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """A Mobility Header or ICMPv6 message found in an IPv6 packet."""

    src: IPv6Address
    dst: IPv6Address
    proto: int  # 135 or 58
    kind: int  # MH type or ICMPv6 type
    body: bytes  # the MH / ICMPv6 message
    routing_home: IPv6Address | None
    length: int  # of the whole IPv6 packet
    at: float

    @property
    def ba_status(self) -> int:
        return self.body[6]

    @property
    def ba_sequence(self) -> int:
        return struct.unpack_from("!H", self.body, 8)[0]

    def dhaad_addresses(self) -> list[IPv6Address]:
        return [IPv6Address(self.body[i : i + 16]) for i in range(8, len(self.body) - 15, 16)]


def parse_reply(packet: bytes, at: float = 0.0) -> Reply | None:
    if len(packet) < 40 or packet[0] >> 4 != 6:
        return None
    nh = packet[6]
    src, dst = IPv6Address(packet[8:24]), IPv6Address(packet[24:40])
    offset, routing_home = 40, None
    for _ in range(8):
        if nh not in (IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS):
            break
        if offset + 8 > len(packet):
            return None
        length = (packet[offset + 1] + 1) * 8
        if nh == IPPROTO_ROUTING and packet[offset + 2] == 2 and length == 24:
            routing_home = IPv6Address(packet[offset + 8 : offset + 24])
        nh = packet[offset]
        offset += length
    if nh not in (IPPROTO_MH, IPPROTO_ICMPV6) or offset + 4 > len(packet):
        return None
    body = packet[offset:]
    kind = body[2] if nh == IPPROTO_MH else body[0]
    if nh == IPPROTO_MH and (len(body) < 6 or (kind == 6 and len(body) < 12)):
        return None
    return Reply(src, dst, nh, kind, body, routing_home, len(packet), at)


# --- extra nodes on the topology ----------------------------------------------------------------


def add_node(topo: Any, name: str, link: str, address: IPv6Address) -> str:
    """A namespace ``name`` (lower-case letters) with one interface eth0 on ``link``.

    It joins the topology's bookkeeping, so :meth:`Topology.close` removes it (and kills
    what runs in it) like its own nodes; ``topo.ip(name, ...)``, ``topo.inside(name)`` work.
    """
    from topology import LINKS  # only here: the bulk attacker process does not need it

    assert name.isalpha() and name.islower(), name
    run_id = topo.ns["lan"].removesuffix("-lan")
    ns = f"{run_id}-{name}"
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
    topo._created.append(ns)
    topo.ns[name] = ns
    topo._links[name] = link
    topo.ip(name, "link", "set", "lo", "up")
    topo.sysctl(name, **{"net.ipv6.conf.all.accept_dad": 0, "net.ipv6.conf.default.accept_dad": 0})
    peer = f"x-{name}"[:15]
    topo.ip(
        name, "link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns", topo.ns["lan"]
    )
    topo.ip("lan", "link", "set", peer, "master", link, "up")
    topo.ip(name, "link", "set", "eth0", "up")
    topo.ip(name, "addr", "add", f"{address}/64", "dev", "eth0", "nodad")
    topo.ip(name, "-6", "route", "add", "default", "via", str(LINKS[link].router))
    return ns


def mac_of(topo: Any, node: str, ifname: str = "eth0") -> bytes:
    out = topo.ip(node, "-o", "link", "show", "dev", ifname)
    word = out.split("link/ether", 1)[1].split()[0]
    return bytes.fromhex(word.replace(":", ""))


def raw_sender(topo: Any, node: str) -> socket.socket:
    """A header-included raw socket (IPPROTO_RAW) in the node: any source address goes."""
    with topo.inside(node):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    return sock


def send_raw(sock: socket.socket, packet: bytes, scope: int = 0) -> bool:
    dst = str(IPv6Address(packet[24:40]))
    try:
        sock.sendto(packet, (dst, 0, 0, scope))
        return True
    except OSError:
        return False


class FrameSender:
    """Ethernet frames out of a node's interface (on-link attacks from any source)."""

    def __init__(self, topo: Any, node: str, ifname: str = "eth0") -> None:
        with topo.inside(node):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        self.sock.bind((ifname, 0))
        self.mac = mac_of(topo, node, ifname)

    def send(self, packet: bytes, dst_mac: bytes | None = None) -> None:
        dst = IPv6Address(packet[24:40])
        if dst_mac is None:
            assert dst.is_multicast, "unicast frames need the destination MAC"
            dst_mac = b"\x33\x33" + dst.packed[-4:]
        frame = dst_mac + self.mac + struct.pack("!H", ETH_P_IPV6) + packet
        for _ in range(50):
            try:
                self.sock.send(frame)
                return
            except BlockingIOError:
                time.sleep(0.001)
            except OSError as exc:
                if exc.errno != 105:  # ENOBUFS: the queue is full, wait a little
                    raise
                time.sleep(0.001)

    def close(self) -> None:
        self.sock.close()


# --- sniffing ---------------------------------------------------------------------------------


class Sniffer:
    """Parsed MH / ICMPv6 packets an interface sends (or receives), drained by a thread."""

    def __init__(self, topo: Any, node: str, ifname: str = "eth0", outgoing: bool = True) -> None:
        # Only ETH_P_ALL taps see outgoing frames.
        with topo.inside(node):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((ifname, 0))
        self.outgoing = outgoing
        self.replies: list[Reply] = []
        self.frames = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"sniff-{node}")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not select.select([self.sock], [], [], 0.1)[0]:
                continue
            for _ in range(256):
                try:
                    data, address = self.sock.recvfrom(65535, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                except OSError:
                    return
                if (address[2] == PACKET_OUTGOING) != self.outgoing:
                    continue
                self.frames += 1
                if data[12:14] != b"\x86\xdd":
                    continue
                reply = parse_reply(data[14:], time.monotonic())
                if reply is not None:
                    with self._lock:
                        self.replies.append(reply)

    def snapshot(self) -> list[Reply]:
        time.sleep(0.15)  # let the thread drain what is queued
        with self._lock:
            return list(self.replies)

    def bas(self, since: float = 0.0) -> list[Reply]:
        return [
            r for r in self.snapshot() if r.proto == IPPROTO_MH and r.kind == 6 and r.at >= since
        ]

    def drops(self) -> int:
        try:
            raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        except OSError:
            return -1
        return struct.unpack("II", raw)[1]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


# --- the canary -------------------------------------------------------------------------------


@dataclass(slots=True)
class Exchange:
    seq: int
    home: IPv6Address
    sent: float
    periodic: bool
    answered: float | None = None
    status: int | None = None
    reply: Reply | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def latency(self) -> float | None:
        return None if self.answered is None else self.answered - self.sent


class Canary:
    """A signed mobile node in a namespace; see the module docstring.

    ``request(...)`` sends one BU (any fields overridden) and waits for its BA;
    ``start(interval)`` sends the canary's own registration every ``interval`` seconds.
    """

    def __init__(
        self,
        topo: Any,
        node: str,
        *,
        nai: str,
        spi: int,
        key: bytes,
        home: IPv6Address,
        coa: IPv6Address,
        ha: IPv6Address = HA,
        timeout: float = 2.0,
        lifetime: int = 120,
        ifname: str = "eth0",
    ) -> None:
        self.nai, self.spi, self.key = nai, spi, key
        self.home, self.coa, self.ha = home, coa, ha
        self.timeout, self.lifetime = timeout, lifetime
        self.tx = raw_sender(topo, node)
        with topo.inside(node):
            self.rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.rx.bind((ifname, 0))
        self._seq = itertools.count(random.Random(str(home) + nai).randrange(1, 20000))
        self._lock = threading.Lock()
        self._pending: dict[int, Exchange] = {}
        self.records: list[Exchange] = []
        self.unmatched: list[Reply] = []
        self._stop = threading.Event()
        self._periodic: threading.Thread | None = None
        self._periodic_stop = threading.Event()
        self._receiver = threading.Thread(target=self._receive, daemon=True, name="canary-rx")
        self._receiver.start()

    # one exchange
    def next_seq(self) -> int:
        return next(self._seq) & 0xFFFF

    def send(self, *, periodic: bool = False, seq: int | None = None, **fields: Any) -> Exchange:
        """Send one signed BU; ``fields`` override :func:`signed_bu` arguments."""
        seq = self.next_seq() if seq is None else seq
        packet = fields.pop("packet", None)
        args: dict[str, Any] = {
            "src": self.coa,
            "home": self.home,
            "seq": seq,
            "nai": self.nai,
            "spi": self.spi,
            "key": self.key,
            "dst": self.ha,
            "lifetime": self.lifetime,
        }
        args.update(fields)
        packet = packet or signed_bu(**args)
        exchange = Exchange(seq, args["home"], time.monotonic(), periodic)
        with self._lock:
            self._pending[seq] = exchange
            self.records.append(exchange)
        send_raw(self.tx, packet)
        return exchange

    def request(self, timeout: float | None = None, **fields: Any) -> Exchange:
        exchange = self.send(**fields)
        exchange.done.wait(self.timeout if timeout is None else timeout)
        return exchange

    def register(self, deadline: float = 10.0, **fields: Any) -> Exchange:
        """Retry until a BA with status 0 (DAD and start-up may eat the first ones)."""
        end = time.monotonic() + deadline
        while True:
            exchange = self.request(**fields)
            if exchange.status == 0 or time.monotonic() > end:
                return exchange

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                ready = select.select([self.rx], [], [], 0.1)[0]
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                data, address = self.rx.recvfrom(65535)
            except OSError:
                return
            if address[2] == PACKET_OUTGOING:
                continue
            now = time.monotonic()
            reply = parse_reply(data[14:], now)
            if reply is None or reply.proto != IPPROTO_MH or reply.kind != 6:
                continue
            with self._lock:
                exchange = self._pending.get(reply.ba_sequence)
                if exchange is None or (
                    reply.routing_home is not None and reply.routing_home != exchange.home
                ):
                    self.unmatched.append(reply)
                    continue
                del self._pending[reply.ba_sequence]
                exchange.answered, exchange.status, exchange.reply = now, reply.ba_status, reply
            exchange.done.set()

    # the periodic canary
    def start(self, interval: float = 1.0) -> Canary:
        assert self._periodic is None, "already running"
        self._periodic_stop.clear()
        self._periodic = threading.Thread(
            target=self._run, args=(max(0.05, interval),), daemon=True, name="canary"
        )
        self._periodic.start()
        return self

    def _run(self, interval: float) -> None:
        next_at = time.monotonic()
        while not self._periodic_stop.is_set():
            self.send(periodic=True)
            next_at += interval
            self._periodic_stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        if self._periodic is not None:
            self._periodic_stop.set()
            self._periodic.join(timeout=5)
            self._periodic = None

    def mark(self) -> float:
        return time.monotonic()

    def stats(self, since: float = 0.0, until: float | None = None, settle: bool = True) -> dict:
        """Periodic BUs sent in [since, until): answered, lost, statuses, latency (ms)."""
        if settle:
            time.sleep(min(self.timeout, 0.2) if until is None else 0)
            end = time.monotonic() + self.timeout
            while time.monotonic() < end:
                with self._lock:
                    young = [
                        e
                        for e in self._pending.values()
                        if e.periodic and time.monotonic() - e.sent < self.timeout
                    ]
                if not young:
                    break
                time.sleep(0.05)
        with self._lock:
            chosen = [
                e
                for e in self.records
                if e.periodic and e.sent >= since and (until is None or e.sent < until)
            ]
        answered = [e for e in chosen if e.answered is not None]
        ok = [e for e in answered if e.status == 0]
        latencies = sorted(1000 * e.latency for e in answered if e.latency is not None)
        statuses: dict[str, int] = {}
        for e in answered:
            statuses[str(e.status)] = statuses.get(str(e.status), 0) + 1
        return {
            "sent": len(chosen),
            "answered": len(answered),
            "ok": len(ok),
            "lost": len(chosen) - len(answered),
            "statuses": statuses,
            "median_ms": round(statistics.median(latencies), 2) if latencies else None,
            "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 2) if latencies else None,
            "max_ms": round(latencies[-1], 2) if latencies else None,
        }

    def close(self) -> None:
        self.stop()
        self._stop.set()
        self._receiver.join(timeout=2)
        self.tx.close()
        self.rx.close()


def all_served(stats: dict) -> bool:
    return stats["sent"] > 0 and stats["ok"] == stats["sent"]


# --- keys files ---------------------------------------------------------------------------------


def write_keys_file(path: Path, entries: dict[str, dict[str, Any]]) -> Path:
    """``entries``: nai -> {spi, key (bytes or hex), home_addresses?, max_bindings?}."""
    import yaml

    nodes = {}
    for nai, entry in entries.items():
        out = dict(entry)
        if isinstance(out["key"], bytes):
            out["key"] = out["key"].hex()
        nodes[nai] = out
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"mobile_nodes": nodes}))
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path


# --- agent process facts ------------------------------------------------------------------------


def process_facts(pid: int) -> dict[str, int]:
    facts = {"rss_kb": -1, "threads": -1, "fds": -1}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                facts["rss_kb"] = int(line.split()[1])
            elif line.startswith("Threads:"):
                facts["threads"] = int(line.split()[1])
        facts["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return facts


def tunnel_route_for(topo: Any, home: IPv6Address) -> str | None:
    """The home agent's tunnel route for ``home``: seg6 or eBPF (``encap bpf``) encap."""
    out = topo.ip("ha", "-6", "route", "show", "table", "all")
    for line in out.splitlines():
        first = line.split(" ", 1)[0]
        if first in (str(home), f"{home}/128") and ("seg6" in line or "encap bpf" in line):
            return line
    return None


# --- mutation fuzzing -------------------------------------------------------------------------


def mutate(rng: random.Random, packet: bytes, fix_checksum: bool = True) -> bytes:
    """Randomly damage a packet past its IPv6 header (addresses kept, so it gets there).

    One to four mutations: flipped or random bytes, truncation, extension with junk, a
    length field (payload length, extension header length, MH length, option length)
    set to a random value, a random option TLV inserted, an option duplicated. The
    upper-layer checksum is recomputed most of the time so the damage reaches the parser.
    """
    data = bytearray(packet)
    header_end = 40
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if len(data) <= header_end + 2:
            data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif choice < 0.3:
            i = rng.randrange(header_end, len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif choice < 0.45:
            i = rng.randrange(header_end, len(data))
            data[i] = rng.randrange(256)
        elif choice < 0.55:
            del data[rng.randrange(header_end + 1, len(data)) :]
        elif choice < 0.62:
            data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        elif choice < 0.8:
            # a length field: ext header / MH length (offset 1 of a header), option lengths
            positions = [header_end + 1] + [
                i
                for i in range(header_end + 2, len(data) - 1)
                if data[i - 1] in (1, 3, 8, 9, 10, 201)
            ]
            data[rng.choice(positions)] = rng.choice(
                [0, 1, 2, 7, 8, 15, 16, 17, 127, 128, 254, 255]
            )
        elif choice < 0.9:
            kind = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 201, rng.randrange(256)])
            length = rng.randrange(0, 40)
            tlv = bytes([kind, length]) + bytes(rng.randrange(256) for _ in range(length))
            i = rng.randrange(header_end, len(data))
            data[i:i] = tlv
        elif choice < 0.95:
            start = rng.randrange(header_end, len(data))
            chunk = data[start : start + rng.randint(2, 24)]
            data[start:start] = chunk
        else:
            struct.pack_into("!H", data, 4, rng.randrange(0, len(data) + 64))
    if rng.random() < 0.9:
        struct.pack_into("!H", data, 4, max(0, len(data) - 40))
    if fix_checksum:
        _fix_upper_checksum(data)
    return bytes(data[:2000])


def _fix_upper_checksum(data: bytearray) -> None:
    nh, offset, home = data[6], 40, None
    for _ in range(6):
        if nh not in (0, 43, 60) or offset + 2 > len(data):
            break
        length = (data[offset + 1] + 1) * 8
        if nh == 60 and offset + 24 <= len(data) and data[offset + 6] == HAO_TYPE:
            home = IPv6Address(bytes(data[offset + 8 : offset + 24]))
        nh, offset = data[offset], offset + length
    where = {IPPROTO_MH: 4, IPPROTO_ICMPV6: 2}.get(nh)
    if where is None or offset + where + 2 > len(data):
        return
    upper = data[offset:]
    upper[where : where + 2] = b"\0\0"
    src = home if nh == IPPROTO_MH and home is not None else IPv6Address(bytes(data[8:24]))
    value = upper_checksum(src, IPv6Address(bytes(data[24:40])), nh, bytes(upper))
    struct.pack_into("!H", data, offset + where, value)


def fuzz_seeds(spec: dict) -> list[bytes]:
    """Valid packets to mutate: signed and unsigned BUs, DHAAD, RA, NA, NS."""
    src = IPv6Address(spec["src"])
    key = bytes.fromhex(spec["key"])
    seeds = []
    for i in range(8):
        home = HOME_PREFIX.network_address + 0x5000 + i
        seeds.append(
            signed_bu(src=src, home=home, seq=i, nai=spec["nai"], spi=spec["spi"], key=key)
        )
        seeds.append(
            signed_bu(
                src=src, home=home, seq=i, nai=spec["nai"], spi=spec["spi"], key=key, alt_coa=src
            )
        )
        seeds.append(unsigned_bu(src=src, home=home, seq=i))
        seeds.append(unsigned_bu(src=src, home=home, seq=i, alt_coa=src))
    forged = HOME_PREFIX.network_address + 0xBAD
    seeds += [
        dhaad_request(src, 77),
        router_advert(src, HA, forged),
        neighbor_advert(src, HA, HOME_PREFIX.network_address + 0x5001),
        neighbor_solicit(src, HA, HA),
        # not from the HA's codec: a Mobile Prefix Solicitation and a HoTI for variety
        _icmpv6(src, HA, struct.pack("!BBHHH", 146, 0, 0, 5, 0), 64),
        _finish_mh(_mh(1, bytes(2) + bytes(8), b""), src, HA, None, 64),
    ]
    return seeds


# --- the bulk attacker process ----------------------------------------------------------------


def _pace(rate: float, started: float, sent: int) -> None:
    if rate > 0:
        ahead = sent / rate - (time.monotonic() - started)
        if ahead > 0.002:
            time.sleep(ahead)


def run_attack(spec: dict) -> dict:
    """Run in the attacker's namespace (the process is started there)."""
    rng = random.Random(spec.get("seed", 1))
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    mode = spec["mode"]
    count = int(spec.get("count", 0)) or 1 << 62
    seconds = float(spec.get("seconds", 0)) or float("inf")
    rate = float(spec.get("rate", 0))
    started = time.monotonic()
    sent = failed = 0
    seeds = fuzz_seeds(spec) if mode == "fuzz" else []
    source_net = IPv6Network(spec.get("sources", "2001:db8:2::/64"))
    alt = IPv6Address(spec["alt_coa"]) if spec.get("alt_coa") else None
    fixed_src = IPv6Address(spec["fixed_src"]) if spec.get("fixed_src") else None
    while sent + failed < count and time.monotonic() - started < seconds:
        if mode == "fuzz":
            packet = mutate(rng, rng.choice(seeds), fix_checksum=rng.random() < 0.8)
        elif mode == "spoof-bu":
            src = fixed_src or source_net.network_address + rng.randrange(1, 1 << 64)
            home = HOME_PREFIX.network_address + rng.randrange(0x10000, 1 << 32)
            packet = unsigned_bu(src=src, home=home, seq=rng.randrange(65536), alt_coa=alt)
        elif mode == "replay":
            packet = bytes.fromhex(spec["packets"][(sent + failed) % len(spec["packets"])])
        else:
            raise ValueError(mode)
        if send_raw(sock, packet):
            sent += 1
        else:
            failed += 1
            time.sleep(0.0005)
        _pace(rate, started, sent + failed)
    return {"mode": mode, "sent": sent, "failed": failed, "seconds": time.monotonic() - started}


class Attack:
    """``python hostile.py '<spec>'`` in a node, as a process; ``result()`` waits for its JSON."""

    def __init__(self, topo: Any, node: str, spec: dict) -> None:
        self.proc = topo.popen(
            node,
            PYTHON,
            str(HERE / "hostile.py"),
            json.dumps(spec),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        topo._closers.append(self.kill)

    def result(self, timeout: float = 120) -> dict:
        out, err = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise RuntimeError(f"attacker failed ({self.proc.returncode}): {err}")
        return json.loads(out.strip().splitlines()[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


if __name__ == "__main__":
    print(json.dumps(run_attack(json.loads(sys.argv[1]))), flush=True)
