"""A home agent that one packet cannot stop: hostile input against a running mip6agent HA.

The home agent runs in namespace ``ha`` (``authentication: required``, seg6 data plane by
default). Around it (see :mod:`hostile`):

* ``canary`` on foreign2 (2001:db8:3::200): a signed mobile node built in the test, home
  address 2001:db8:1::200. It is the availability measure: before, during and after each
  attack its Binding Updates must all be answered with status 0, unless a test says
  otherwise.
* ``atkoff`` on foreign1 (2001:db8:2::66): the off-link attacker, two hops from the HA.
* ``atkon`` on the home link (2001:db8:1::66): the on-link attacker.

Every packet is built by hand (struct + hmac), never with mip6agent's encoder. The tests
are written to the specification of the hardening issue, not to today's behaviour; each
prints its measurements (one JSON line starting with ``HOSTILE``).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

import hostile as h
import pytest
from agents import KEY_HEX, NAI, SPI, AgentProcess, wait_until, write_keys
from topology import Topology

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

CANARY_NAI, CANARY_SPI = "canary@example.net", 2000
CANARY_KEY = bytes.fromhex("c0ffee00112233445566778899aabbccddeeff01")
CANARY_HOA = IPv6Address("2001:db8:1::200")
CANARY_COA = IPv6Address("2001:db8:3::200")
ATTACKER_OFF = IPv6Address("2001:db8:2::66")
ATTACKER_ON = IPv6Address("2001:db8:1::66")
VICTIM = IPv6Address("2001:db8:4::77")
HOME_PREFIX = "2001:db8:1::/64"
MN_HOA = IPv6Address("2001:db8:1::100")

# RFC 6275 6.1.8 status values
ACCEPTED, PROHIBITED, INSUFFICIENT, NOT_HOME_SUBNET, NOT_HA_FOR_MN = 0, 129, 130, 132, 133
DAD_FAILED, AUTH_FAIL = 134, 146


def report(name: str, **values: Any) -> None:
    print("HOSTILE " + json.dumps({"test": name, **values}, default=str), flush=True)


@dataclass
class Lab:
    topo: Topology
    ha: AgentProcess
    canary: h.Canary
    keys_path: Path
    directory: Path

    @property
    def pid(self) -> int:
        return int(self.ha.call("status")["pid"])

    def alive(self) -> bool:
        return self.ha.proc is not None and self.ha.proc.poll() is None

    def bindings(self) -> dict[str, dict]:
        return {b["home_address"]: b for b in self.ha.call("bindings")}

    def new_canary(self, **kwargs: Any) -> h.Canary:
        args: dict[str, Any] = {
            "nai": CANARY_NAI,
            "spi": CANARY_SPI,
            "key": CANARY_KEY,
            "home": CANARY_HOA,
            "coa": CANARY_COA,
        }
        args.update(kwargs)
        return self.topo.in_node("canary", h.Canary, self.topo, "canary", **args).target

    def sniffer(self, ifname: str = "eth0") -> h.Sniffer:
        sniffer = h.Sniffer(self.topo, "ha", ifname)
        self.topo._closers.append(sniffer.close)
        return sniffer


def canary_entry(**extra: Any) -> dict[str, Any]:
    return {"spi": CANARY_SPI, "key": CANARY_KEY, **extra}


@contextlib.contextmanager
def lab(
    tmp_path: Path,
    keys: dict[str, dict] | None = None,
    canary_key: dict | None = None,
    canary_home: IPv6Address = CANARY_HOA,
    mn_link: str = "foreign2",
    log_level: str = "info",
    **home_agent: Any,
) -> Iterator[Lab]:
    """Topology + attackers + HA + a registered canary (not yet sending periodically)."""
    with Topology(mn_link=mn_link) as topo:  # type: ignore[arg-type]
        h.add_node(topo, "canary", "foreign2", CANARY_COA)
        h.add_node(topo, "atkoff", "foreign1", ATTACKER_OFF)
        h.add_node(topo, "atkon", "home", ATTACKER_ON)
        for node in ("ha", "atkon", "atkoff", "canary"):
            # Forged RAs must reach the agent, not reconfigure the test's own routing.
            topo.sysctl(node, **{"net.ipv6.conf.eth0.accept_ra": 0})
        entries = {CANARY_NAI: canary_key or canary_entry(), **(keys or {})}
        keys_path = h.write_keys_file(tmp_path / "keys" / "keys.yml", entries)
        config = {
            "role": "ha",
            "keys_file": str(keys_path),
            "log_level": log_level,
            "home_agent": {
                "interfaces": ["eth0"],
                "home_prefixes": [HOME_PREFIX],
                "address": str(h.HA),
                "dad": False,
                **home_agent,
            },
        }
        with AgentProcess(topo.ns["ha"], tmp_path / "ha", config) as ha:
            the_lab = Lab(topo, ha, None, keys_path, tmp_path)  # type: ignore[arg-type]
            canary = the_lab.new_canary(home=canary_home)
            the_lab.canary = canary
            first = canary.register(deadline=15)
            assert first.status == ACCEPTED, (
                f"the canary registers: {first}\n{ha.log.read_text()[-2000:]}\n"
                + topo.ip("ha", "-6", "neigh")
                + topo.ip("ha", "-6", "route")
            )
            yield the_lab


def served(stats: dict, what: str) -> None:
    assert h.all_served(stats), f"canary {what}: {stats}"


def finish(lab: Lab, start: float, min_seconds: float = 1.0) -> dict:
    """Keep the canary going until it has ``min_seconds`` of samples, stop it, its stats."""
    time.sleep(max(0.0, start + min_seconds - time.monotonic()))
    lab.canary.stop()
    return lab.canary.stats(since=start)


def phase(lab: Lab, seconds: float) -> dict:
    start = lab.canary.mark()
    time.sleep(seconds)
    return lab.canary.stats(since=start, until=time.monotonic(), settle=True)


# --- 1. reserved and special addresses ------------------------------------------------------

LINK_LOCAL = IPv6Address("fe80::1")
MULTICAST = IPv6Address("ff02::1")
LOOPBACK = IPv6Address("::1")
UNSPECIFIED = IPv6Address("::")

SPECIAL_COAS = {
    "link-local": LINK_LOCAL,
    "multicast": MULTICAST,
    "loopback": LOOPBACK,
    "unspecified": UNSPECIFIED,
    "home-prefix": ATTACKER_ON,
    "ha-address": h.HA,
    "ha-anycast": h.HA_ANYCAST,
}
SPECIAL_HOAS = {
    "ha-address": (h.HA, {PROHIBITED}),
    "ha-anycast": (h.HA_ANYCAST, {PROHIBITED}),
    "subnet-router-anycast": (h.SUBNET_ROUTER_ANYCAST, {PROHIBITED}),
    "link-local": (LINK_LOCAL, {PROHIBITED, NOT_HOME_SUBNET}),
    "multicast": (MULTICAST, {PROHIBITED, NOT_HOME_SUBNET}),
    "outside-home-prefix": (IPv6Address("2001:db8:5::1"), {NOT_HOME_SUBNET}),
}


def test_special_addresses_in_every_address_field(tmp_path: Path) -> None:
    with lab(tmp_path) as the:
        topo, canary = the.topo, the.canary
        # The home-link attacker answers for fe80::1 too, so a BA to it would leave the HA.
        topo.ip("atkon", "addr", "add", "fe80::1/64", "dev", "eth0", "nodad")
        sniff, sniff_lo = the.sniffer("eth0"), the.sniffer("lo")
        canary.start(0.2)
        served(phase(the, 1.0), "before")
        during = canary.mark()
        problems: list[str] = []
        results: dict[str, Any] = {}
        homes = iter(range(0x300, 0x400))

        def bas_for(seq: int, since: float) -> list[h.Reply]:
            return [r for r in sniff.bas(since) + sniff_lo.bas(since) if r.ba_sequence == seq]

        # (a) Alternate CoA = special, packet source = the canary's real care-of address
        for name, address in SPECIAL_COAS.items():
            home = h.HOME_PREFIX.network_address + next(homes)
            t0 = time.monotonic()
            exchange = canary.request(home=home, alt_coa=address, timeout=1.5)
            seen = bas_for(exchange.seq, t0)
            results[f"alt-coa {name}"] = [(r.ba_status, str(r.dst)) for r in seen]
            if exchange.status != PROHIBITED:
                problems.append(f"alt CoA {name} {address}: BA status {exchange.status}, want 129")
            if any(r.dst == address for r in seen):
                problems.append(f"alt CoA {name}: a BA went to the Alternate CoA {address}")
            if any(r.dst != CANARY_COA for r in seen):
                problems.append(f"alt CoA {name}: BA not to the packet source: {seen}")
            if str(home) in the.bindings():
                problems.append(f"alt CoA {name}: binding created for {home}")

        # (b) packet source = special (no Alternate CoA). Routable sources come from the
        # off-link attacker through the router; the others from the home link.
        off = h.raw_sender(topo, "atkoff")
        on = h.FrameSender(topo, "atkon")
        ha_mac = h.mac_of(topo, "ha")
        for name, address in SPECIAL_COAS.items():
            home = h.HOME_PREFIX.network_address + next(homes)
            seq = canary.next_seq()
            packet = h.signed_bu(
                src=address,
                home=home,
                seq=seq,
                nai=CANARY_NAI,
                spi=CANARY_SPI,
                key=CANARY_KEY,
            )
            t0 = time.monotonic()
            if address.is_global or name in ("home-prefix", "ha-address", "ha-anycast"):
                h.send_raw(off, packet)
            else:
                on.send(packet, ha_mac)
            time.sleep(1.0)
            seen = bas_for(seq, t0)
            results[f"source {name}"] = [(r.ba_status, str(r.dst)) for r in seen]
            if any(r.ba_status != PROHIBITED for r in seen):
                problems.append(
                    f"source {name} {address}: BA statuses {[r.ba_status for r in seen]}"
                )
            if any(r.dst != address for r in seen):
                problems.append(f"source {name}: a BA not to the packet source: {seen}")
            if name == "home-prefix" and not seen:
                problems.append(f"source {name} {address}: no BA 129 to the source")
            if str(home) in the.bindings():
                problems.append(f"source {name}: binding created for {home}")
        off.close()
        on.close()

        # (c) HoA (Home Address option) = special, from the canary's care-of address
        for name, (address, wanted) in SPECIAL_HOAS.items():
            t0 = time.monotonic()
            exchange = canary.request(home=address, timeout=1.5)
            seen = bas_for(exchange.seq, t0)
            results[f"hoa {name}"] = [(r.ba_status, str(r.dst)) for r in seen]
            if exchange.status not in wanted:
                problems.append(f"HoA {name} {address}: BA status {exchange.status}, want {wanted}")
            if any(r.dst != CANARY_COA for r in seen):
                problems.append(f"HoA {name}: BA not to the packet source: {seen}")
            if str(address) in the.bindings():
                problems.append(f"HoA {name}: binding created for {address}")

        # (d) the unauthenticated 96-octet BU with Alternate CoA ff02::1 / fe80::1
        off = h.raw_sender(topo, "atkoff")
        for alt in (MULTICAST, LINK_LOCAL):
            packet = h.unsigned_bu(src=ATTACKER_OFF, home=CANARY_HOA + 0x77, seq=7, alt_coa=alt)
            assert len(packet) == 96
            for _ in range(3):
                h.send_raw(off, packet)
        off.close()
        time.sleep(1.0)
        assert the.alive(), f"the agent died:\n{the.ha.log.read_text()[-3000:]}"
        during_stats = canary.stats(since=during, until=time.monotonic())
        after_start = canary.mark()
        time.sleep(1.0)
        canary.stop()
        after = canary.stats(since=after_start)
        # With the periodic canary stopped: two BUs of one NAI sent at once from two threads
        # can carry timestamps out of order, and the later-sent one is then a replay (144).
        fresh = CANARY_HOA + 0x50
        registration = canary.register(home=fresh, deadline=5)
        route = h.tunnel_route_for(topo, fresh) if registration.status == ACCEPTED else None
        if route is None:
            wait = time.monotonic() + 3
            while route is None and time.monotonic() < wait:
                time.sleep(0.1)
                route = h.tunnel_route_for(topo, fresh)
        only = set(the.bindings())
        report(
            "special_addresses",
            results=results,
            canary_during=during_stats,
            canary_after=after,
            new_registration=registration.status,
            route=route,
            bindings=sorted(only),
            problems=problems,
        )
        assert registration.status == ACCEPTED, "a new registration after the 96-octet BUs"
        assert route is not None, "the action loop installs the new registration's tunnel route"
        assert only == {str(CANARY_HOA), str(fresh)}, f"no binding for a special address: {only}"
        served(during_stats, "during")
        served(after, "after")
        assert not problems, "\n".join(problems)


# --- 2. mutation fuzzing ----------------------------------------------------------------------


def test_mutation_fuzz_keeps_the_agent_alive_and_serving(tmp_path: Path) -> None:
    count = int(os.environ.get("HOSTILE_FUZZ_COUNT", "5000"))
    with lab(tmp_path) as the:
        topo, canary = the.topo, the.canary
        spec = {"mode": "fuzz", "src": str(ATTACKER_OFF), "nai": CANARY_NAI, "spi": CANARY_SPI}
        spec["key"] = CANARY_KEY.hex()
        # warm-up: the first damaged packets reach error paths that import and cache things
        h.Attack(topo, "atkoff", {**spec, "seed": 99, "count": 500, "rate": 2000}).result()
        time.sleep(0.5)
        pid = the.pid
        before = h.process_facts(pid)
        canary.start(0.2)
        served(phase(the, 1.0), "before")
        during = canary.mark()
        attack = h.Attack(topo, "atkoff", {**spec, "seed": 1, "count": count, "rate": 1000})
        sent = attack.result(timeout=120)
        time.sleep(1.0)
        during_stats = canary.stats(since=during, until=time.monotonic())
        alive = the.alive()
        status = the.ha.call("status") if alive else None
        after_start = canary.mark()
        fresh = CANARY_HOA + 0x60
        registration = canary.register(home=fresh, deadline=5)
        route = None
        end = time.monotonic() + 3
        while route is None and time.monotonic() < end:
            route = h.tunnel_route_for(topo, fresh)
            time.sleep(0.05)
        time.sleep(1.0)
        canary.stop()
        after = canary.stats(since=after_start)
        facts = h.process_facts(pid)
        counters = the.ha.call("counters") if alive else {}
        growth = (facts["rss_kb"] - before["rss_kb"]) / before["rss_kb"]
        ratio = during_stats["ok"] / max(1, during_stats["sent"])
        report(
            "mutation_fuzz",
            attacker=sent,
            canary_during=during_stats,
            canary_after=after,
            answered_ratio=round(ratio, 4),
            rss_before_kb=before["rss_kb"],
            rss_after_kb=facts["rss_kb"],
            rss_growth=round(growth, 3),
            fds=(before["fds"], facts["fds"]),
            tasks=status.get("tasks") if status else None,
            counters={k: v for k, v in counters.items() if "malformed" in k or "bad" in k},
        )
        assert alive, f"the agent died:\n{the.ha.log.read_text()[-3000:]}"
        assert status is not None and status["pid"] == pid
        assert ratio >= 0.99, f"canary answered {ratio:.2%} during the fuzz: {during_stats}"
        assert registration.status == ACCEPTED, f"fresh registration after the fuzz: {registration}"
        assert route is not None, "the action loop installed the fresh registration's route"
        served(after, "after")
        assert growth <= 0.20, f"RSS grew {growth:.1%}: {before} -> {facts}"


# --- 3. key removal and rotation by SIGHUP ----------------------------------------------------

GONE_NAI, GONE_SPI, GONE_KEY = "gone@example.net", 2101, bytes.fromhex("11" * 20)
ROT_NAI, ROT_SPI, ROT_KEY = "rot@example.net", 2102, bytes.fromhex("22" * 20)
ROT_NEW_SPI, ROT_NEW_KEY = 2103, bytes.fromhex("33" * 20)


def reload_and_wait(the: Lab) -> None:
    status = the.ha.call("status")
    generation = status.get("config_generation")
    log_size = the.ha.log.stat().st_size
    assert the.ha.proc is not None
    the.ha.proc.send_signal(signal.SIGHUP)
    if generation is not None:
        wait_until(
            lambda: the.ha.call("status").get("config_generation", 0) > generation,
            deadline=10,
            what="config_generation to advance after SIGHUP",
        )
    else:
        wait_until(
            lambda: b"configuration reloaded" in the.ha.log.read_bytes()[log_size:],
            deadline=10,
            what="'configuration reloaded' in the log",
        )


def test_key_removal_and_rotation_by_sighup(tmp_path: Path) -> None:
    keys = {
        GONE_NAI: {"spi": GONE_SPI, "key": GONE_KEY},
        ROT_NAI: {"spi": ROT_SPI, "key": ROT_KEY},
    }
    with lab(tmp_path, keys=keys) as the:
        gone = the.new_canary(nai=GONE_NAI, spi=GONE_SPI, key=GONE_KEY, home=CANARY_HOA + 1)
        rot = the.new_canary(nai=ROT_NAI, spi=ROT_SPI, key=ROT_KEY, home=CANARY_HOA + 2)
        assert gone.register().status == ACCEPTED
        assert rot.register().status == ACCEPTED
        start = the.canary.mark()
        the.canary.start(0.2)
        registered_before = the.bindings()[str(rot.home)]["registered"]

        # removal
        h.write_keys_file(the.keys_path, {CANARY_NAI: canary_entry(), ROT_NAI: keys[ROT_NAI]})
        reload_and_wait(the)
        removed = gone.request()
        wait_until(lambda: str(gone.home) not in the.bindings(), deadline=3, what="binding gone")
        kept = rot.request()
        assert removed.status == AUTH_FAIL, f"the removed NAI's BU: {removed}"
        assert kept.status == ACCEPTED, f"the other NAI's BU after the removal: {kept}"
        assert str(rot.home) in the.bindings(), "the other NAI's binding was kept"

        # rotation: same NAI, new key and SPI
        rotated = {"spi": ROT_NEW_SPI, "key": ROT_NEW_KEY}
        h.write_keys_file(the.keys_path, {CANARY_NAI: canary_entry(), ROT_NAI: rotated})
        reload_and_wait(the)
        old_key = rot.request()
        rot.spi, rot.key = ROT_NEW_SPI, ROT_NEW_KEY
        new_key = rot.request()
        bindings = the.bindings()
        stats = finish(the, start)
        report(
            "key_reload",
            removed=removed.status,
            kept=kept.status,
            old_key=old_key.status,
            new_key=new_key.status,
            registered=(registered_before, bindings.get(str(rot.home), {}).get("registered")),
            canary=stats,
        )
        assert old_key.status == AUTH_FAIL, f"a BU signed with the old key: {old_key}"
        assert new_key.status == ACCEPTED, f"a BU signed with the new key: {new_key}"
        assert str(rot.home) in bindings, "the binding outlived the key rotation"
        assert bindings[str(rot.home)]["registered"] == registered_before, "same registration"
        served(stats, "across both reloads")


# --- 4. home-address authorization ----------------------------------------------------------

LIMITED_NAI, LIMITED_SPI, LIMITED_KEY = "limited@example.net", 2201, bytes.fromhex("44" * 20)


def test_home_address_authorization_and_per_key_cap(tmp_path: Path) -> None:
    allowed = ["2001:db8:1::200", "2001:db8:1::300/128", "2001:db8:1::1000/120"]
    keys = {
        LIMITED_NAI: {
            "spi": LIMITED_SPI,
            "key": LIMITED_KEY,
            "home_addresses": allowed,
            "max_bindings": 2,
        }
    }
    watch_home = IPv6Address("2001:db8:1::250")
    canary_key = canary_entry(home_addresses=[str(watch_home)])
    with lab(tmp_path, keys=keys, canary_key=canary_key, canary_home=watch_home) as the:
        limited = the.new_canary(nai=LIMITED_NAI, spi=LIMITED_SPI, key=LIMITED_KEY)
        start = the.canary.mark()
        the.canary.start(0.2)
        outside = [IPv6Address("2001:db8:1::201"), IPv6Address("2001:db8:1::1100"), watch_home]
        results = {}
        for home in outside:
            results[str(home)] = limited.request(home=home).status
        first = limited.request(home=IPv6Address("2001:db8:1::200")).status
        second = limited.request(home=IPv6Address("2001:db8:1::10ff")).status
        third = limited.request(home=IPv6Address("2001:db8:1::300")).status
        canary_outside = the.canary.request(home=IPv6Address("2001:db8:1::251")).status
        bindings = the.bindings()
        stats = finish(the, start)
        report(
            "home_address_authorization",
            outside=results,
            inside=(first, second),
            third=third,
            canary_outside=canary_outside,
            bindings=sorted(bindings),
            canary=stats,
        )
        for home, status in results.items():
            assert status == NOT_HA_FOR_MN, f"{home} outside the key's list: status {status}"
            if home != str(watch_home):
                assert home not in bindings
        assert bindings[str(watch_home)]["nai"] == CANARY_NAI, "another key's HoA not taken"
        assert canary_outside == NOT_HA_FOR_MN
        assert (first, second) == (ACCEPTED, ACCEPTED), "inside the list"
        assert third == INSUFFICIENT, "the third distinct HoA with max_bindings: 2"
        assert "2001:db8:1::300" not in bindings
        served(stats, "throughout")


def test_home_agent_total_binding_cap(tmp_path: Path) -> None:
    keys = {LIMITED_NAI: {"spi": LIMITED_SPI, "key": LIMITED_KEY, "max_bindings": 10}}
    with lab(tmp_path, keys=keys, max_bindings=3) as the:
        other = the.new_canary(nai=LIMITED_NAI, spi=LIMITED_SPI, key=LIMITED_KEY)
        start = the.canary.mark()
        the.canary.start(0.2)
        statuses = [other.request(home=CANARY_HOA + 0x10 + i).status for i in range(3)]
        bindings = the.bindings()
        stats = finish(the, start)
        report("total_binding_cap", statuses=statuses, bindings=len(bindings), canary=stats)
        assert statuses == [ACCEPTED, ACCEPTED, INSUFFICIENT], "home_agent.max_bindings: 3"
        assert len(bindings) == 3
        served(stats, "at the cap (refreshes of existing bindings still accepted)")


# --- 6. Neighbor Discovery from off the link ------------------------------------------------


def dhaad(topo: Topology, node: str, ident: int, timeout: float = 3.0) -> tuple[list, int] | None:
    """Send a DHAAD request to the Home-Agents anycast address; (addresses, packet length)."""
    with topo.inside(node):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        end = time.monotonic() + timeout
        sock.sendto(struct.pack("!BBHHH", 144, 0, 0, ident, 0), (str(h.HA_ANYCAST), 0))
        while (left := end - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                break
            data, _ = sock.recvfrom(65535)
            if len(data) >= 8 and data[0] == 145 and struct.unpack_from("!H", data, 4)[0] == ident:
                addresses = [IPv6Address(data[i : i + 16]) for i in range(8, len(data) - 15, 16)]
                return addresses, 40 + len(data)
        return None
    finally:
        sock.close()


def home_agent_addresses(the: Lab) -> list[str]:
    return [a for entry in the.ha.call("home-agents") for a in entry["addresses"]]


def test_neighbor_discovery_from_off_link_and_on_link_floods(tmp_path: Path) -> None:
    forged = IPv6Address("2001:db8:1::bad")
    with lab(tmp_path, dad=True) as the:
        topo, canary = the.topo, the.canary
        start = canary.mark()
        canary.start(0.2)
        off = h.raw_sender(topo, "atkoff")
        router_global = IPv6Address("2001:db8:1::fffe")
        for i in range(100):
            for src in (ATTACKER_OFF, router_global, IPv6Address("2001:db8:1::55")):
                h.send_raw(off, h.router_advert(src, h.HA, forged + (i % 3)))
        time.sleep(0.5)
        listed_off = home_agent_addresses(the)
        reply_off = dhaad(topo, "atkoff", 0x1234)

        # forged NAs for a home address while the canary registers it (DAD on)
        target = CANARY_HOA + 0x10
        stop = threading.Event()

        def forge_nas() -> None:
            while not stop.is_set():
                for src in (ATTACKER_OFF, IPv6Address("2001:db8:1::fffe")):
                    h.send_raw(off, h.neighbor_advert(src, h.HA, target))
                    h.send_raw(off, h.neighbor_solicit(src, h.HA, target))
                time.sleep(0.005)

        forger = threading.Thread(target=forge_nas, daemon=True)
        forger.start()
        time.sleep(0.3)
        try:
            new_registration = canary.request(home=target, timeout=4.0)
        finally:
            stop.set()
            forger.join(timeout=2)
        off.close()

        # on-link: a global-source RA flood with hop limit 255, then 3,000 link-local routers
        on = h.FrameSender(topo, "atkon")
        global_forged = IPv6Address("2001:db8:1::bee")
        for _ in range(300):
            on.send(h.router_advert(ATTACKER_ON, MULTICAST, global_forged, mac=on.mac))
        time.sleep(0.5)
        listed_global = home_agent_addresses(the)
        flood_start = time.monotonic()
        for n in range(1, 3001):
            src = IPv6Address(f"fe80::1:{n:x}")
            on.send(h.router_advert(src, MULTICAST, forged + 0x10000 + n, mac=on.mac))
            if n % 200 == 0:
                time.sleep(0.01)
        flood_seconds = time.monotonic() - flood_start
        on.close()
        time.sleep(1.0)
        entries = the.ha.call("home-agents")
        status = the.ha.call("status")
        cap = 32
        reply_on = dhaad(topo, "atkoff", 0x4321)
        canary.stop()
        stats = canary.stats(since=start)
        report(
            "neighbor_discovery",
            listed_after_off_link=listed_off,
            dhaad_off=[str(a) for a in reply_off[0]] if reply_off else None,
            registration_after_forged_na=new_registration.status,
            listed_after_global_flood=[a for a in home_agent_addresses(the) if "bee" in a],
            home_agents_after_flood=len(entries),
            flood_seconds=round(flood_seconds, 2),
            dhaad_after_flood=(len(reply_on[0]), reply_on[1]) if reply_on else None,
            agent_tasks=status.get("tasks"),
            canary=stats,
        )
        assert the.alive()
        assert not [a for a in listed_off if IPv6Address(a) in (forged, forged + 1, forged + 2)], (
            f"off-link forged RAs made a home agent entry: {listed_off}"
        )
        assert reply_off is not None, "a DHAAD reply to foreign1"
        assert reply_off[0] and reply_off[0][0] == h.HA, f"us first: {reply_off[0]}"
        assert not {forged, forged + 1, forged + 2} & set(reply_off[0]), "no forged HA in DHAAD"
        assert new_registration.status == ACCEPTED, (
            f"registration after forged NAs: {new_registration.status} (134: DAD failed)"
        )
        assert str(global_forged) not in listed_global, "RA from a global source is ignored"
        assert len(entries) <= cap, f"{len(entries)} home agents listed, cap {cap}"
        assert reply_on is not None, "a DHAAD reply after the on-link flood"
        assert reply_on[1] <= 1280, f"DHAAD reply of {reply_on[1]} octets"
        served(stats, "throughout the ND attacks")


# --- 7. rate limits and reflection ----------------------------------------------------------


def test_error_replies_are_rate_limited_and_never_reflected(tmp_path: Path) -> None:
    total_rate, per_destination = 200, 10  # the documented defaults
    with lab(tmp_path, log_level="info") as the:
        topo, canary = the.topo, the.canary
        sniff = the.sniffer("eth0")
        canary.start(0.2)
        served(phase(the, 1.0), "before")
        start = canary.mark()

        # (a) 5,000 spoofed sources
        log_before = the.ha.log.stat().st_size
        t0 = time.monotonic()
        flood = h.Attack(topo, "atkoff", {"mode": "spoof-bu", "count": 5000, "rate": 4000})
        result = flood.result()
        time.sleep(1.0)
        t1 = time.monotonic()
        log_growth = the.ha.log.stat().st_size - log_before
        error_bas = [r for r in sniff.bas(t0) if r.at <= t1 and r.dst != CANARY_COA]
        duration = t1 - t0
        bound_total = total_rate * duration + total_rate

        # (b) one spoofed source, 1,000 BUs
        single = IPv6Address("2001:db8:2::77")
        t2 = time.monotonic()
        one = {"mode": "spoof-bu", "count": 1000, "rate": 1000, "fixed_src": str(single)}
        h.Attack(topo, "atkoff", one).result()
        time.sleep(1.0)
        t3 = time.monotonic()
        to_single = [r for r in sniff.bas(t2) if r.dst == single and r.at <= t3]
        bound_single = per_destination * (t3 - t2) + per_destination

        # (c) 20,000 BUs naming a victim as Alternate CoA
        t4 = time.monotonic()
        spec = {"mode": "spoof-bu", "count": 20000, "rate": 5000, "alt_coa": str(VICTIM)}
        victim_result = h.Attack(topo, "atkoff", spec).result(timeout=60)
        time.sleep(1.0)
        to_victim = [r for r in sniff.snapshot() if r.dst == VICTIM and r.at >= t4]
        canary.stop()
        stats = canary.stats(since=start)
        report(
            "rate_limits",
            flood=result,
            error_bas=len(error_bas),
            seconds=round(duration, 2),
            bound_total=round(bound_total),
            to_single_source=len(to_single),
            bound_single=round(bound_single),
            to_victim=len(to_victim),
            victim_flood=victim_result,
            log_growth_bytes=log_growth,
            sniffer_drops=sniff.drops(),
            canary=stats,
        )
        assert the.alive()
        assert len(error_bas) <= bound_total, (
            f"{len(error_bas)} BAs in {duration:.1f} s, limit {total_rate}/s + burst"
        )
        assert len(to_single) <= bound_single, f"{len(to_single)} BAs to one spoofed source"
        assert not to_victim, f"{len(to_victim)} packets to the victim named as Alternate CoA"
        assert log_growth < 100_000, f"the log grew {log_growth} bytes during 5,000 BUs"
        served(stats, "during and after the floods")


# --- 8. availability under a flood -----------------------------------------------------------


def raw6_drops(topo: Topology) -> int:
    """Packets the kernel dropped at raw IPv6 sockets in the HA (full receive buffers)."""
    lines = topo.run("ha", "cat", "/proc/net/raw6").stdout.splitlines()[1:]
    return sum(int(line.split()[-1]) for line in lines if line.split())


class QueueWatch:
    """Samples ``status`` once a second: (input_queued, how long the call took in ms)."""

    def __init__(self, the: Lab) -> None:
        self.the, self.samples = the, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            t0 = time.monotonic()
            with contextlib.suppress(Exception):
                status = self.the.ha.call("status")
                took = round(1000 * (time.monotonic() - t0), 1)
                self.samples.append((status.get("input_queued", -1), took))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def test_availability_under_a_spoofed_bu_flood(tmp_path: Path) -> None:
    seconds = float(os.environ.get("HOSTILE_FLOOD_SECONDS", "15"))
    keys = {NAI: {"spi": SPI, "key": KEY_HEX}}
    # Below what the agent reads on this machine even while CI runs the rest of the suite
    # beside it (about 5,000 BUs/s; 20,000 idle), as docs/security.md advises.
    with lab(tmp_path, keys=keys, mn_link="foreign2", unknown_sender_rate=2000) as the:
        topo, canary = the.topo, the.canary
        canary.start(0.2)
        served(phase(the, 1.0), "before")
        flood = h.Attack(topo, "atkoff", {"mode": "spoof-bu", "seconds": seconds, "rate": 0})
        during = canary.mark()
        time.sleep(3.0)
        mn_dir = tmp_path / "mn"
        mn_config = {
            "role": "mn",
            "log_level": "info",
            "keys_file": str(write_keys(mn_dir)),
            "mobile_node": {
                "nai": NAI,
                "interfaces": ["eth0"],
                "home_addresses": [
                    {"address": f"{MN_HOA}/64", "interface": "eth0", "home_agent": str(h.HA)}
                ],
            },
        }
        mn = AgentProcess(topo.ns["mn"], mn_dir, mn_config)
        queue = QueueWatch(the)
        started = time.monotonic()
        registered_after: float | None = None
        try:
            mn.start()
            end = started + seconds + 20
            while time.monotonic() < end:
                bul = mn.call("bul")
                if bul and bul[0]["state"] == "registered":
                    registered_after = time.monotonic() - started
                    break
                time.sleep(0.05)
            flood_result = flood.result(timeout=seconds + 30)
            queue.stop()
            until = time.monotonic()
            during_stats = canary.stats(since=during, until=until)
            after = phase(the, 1.0)
        finally:
            mn.stop()
        canary.stop()
        ratio = during_stats["ok"] / max(1, during_stats["sent"])
        counters = the.ha.call("counters")
        report(
            "availability_under_flood",
            flood=flood_result,
            flood_pps=round(flood_result["sent"] / flood_result["seconds"]),
            canary_during=during_stats,
            answered_ratio=round(ratio, 4),
            median_ms=during_stats["median_ms"],
            p95_ms=during_stats["p95_ms"],
            mn_registered_after_s=None if registered_after is None else round(registered_after, 2),
            ha_bu_in=counters.get("mh_in.bu"),
            ha_rate_limited=counters.get("reply_rate_limited"),
            ha_raw_socket_drops=raw6_drops(topo),
            input_queued_max=max((q for q, _ in queue.samples), default=None),
            status_call_max_ms=max((ms for _, ms in queue.samples), default=None),
            canary_after=after,
        )
        assert the.alive()
        assert ratio >= 0.95, f"canary answered {ratio:.1%} under the flood: {during_stats}"
        # A node that is not registered yet competes with the flood at the admission rate
        # (docs/security.md); it must get through, at the latest with a retransmission.
        assert registered_after is not None, (
            "a real mobile node started during the flood never registered"
        )
        served(after, "after the flood")


# --- the soak runner, briefly ---------------------------------------------------------------


def test_soak_smoke(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import soak

    seconds = float(os.environ.get("HOSTILE_SOAK_SMOKE_SECONDS", "60"))
    result = soak.run(seconds, tmp_path, seed=random.randrange(1 << 30), phase_seconds=7.5)
    report("soak_smoke", **result)
    assert result["agent_alive"], result
    assert result["canary"]["answered"] >= 0.99 * result["canary"]["sent"], result["canary"]
    # A minute holds a handful of the real MN's BUs; one lost under load is retransmitted
    # (RFC 6275 11.8), so what must hold is that every handover registered.
    assert result["legitimate"]["handovers_failed"] == 0, result["legitimate"]
    assert result["legitimate"]["bas_received"] >= 1, result["legitimate"]
    assert result["verdict"] == "stable", result
