"""Soak the home agent: hostile traffic and moving mobile nodes for a long time; prints JSON.

    sudo .venv/bin/python bench/soak.py [SECONDS]      # or SOAK_SECONDS=...; default 1800

The standard namespace topology (agent/tests/topology.py) with a real mip6agent home agent
(``authentication: required``), a signed canary mobile node on foreign2 (agent/tests/
hostile.py) sending a Binding Update every second, a real mip6agent mobile node moving
between foreign1 and foreign2, and, in turn, phases of: mutation fuzzing and spoofed
Binding Update floods from the off-link attacker on foreign1, forged Neighbor Discovery
(off-link forged RAs and NAs, an on-link RA flood from distinct link-local sources), and
handovers of the mobile node. Every 10 s it samples the agent's RSS, open fds, threads
and, when ``status`` reports them, asyncio tasks.

The JSON: duration, canary sent/answered/median/p95, the legitimate mobile node's BUs
answered (%), handover times, RSS/fds/threads/tasks first/last/max, and a growth verdict
("stable", or "growing: ..." naming what grew). :func:`run` is importable;
agent/tests/test_hostile.py runs it for 60 s.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
import time
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "agent" / "tests"))

import hostile as h  # noqa: E402
from agents import KEY_HEX, NAI, SPI, AgentProcess, write_keys  # noqa: E402
from topology import Topology  # noqa: E402

CANARY = {"nai": "canary@example.net", "spi": 2000, "key": bytes.fromhex("c0ffee" + "42" * 17)}
CANARY_HOA = IPv6Address("2001:db8:1::200")
CANARY_COA = IPv6Address("2001:db8:3::200")
ATTACKER_OFF = IPv6Address("2001:db8:2::66")
ATTACKER_ON = IPv6Address("2001:db8:1::66")
MN_HOA = IPv6Address("2001:db8:1::100")
PHASES = ("fuzz", "flood", "nd", "move")
RSS_GROWTH_LIMIT = 0.20


def _ba_answered(counters: dict[str, int]) -> tuple[int, int]:
    sent = counters.get("mh_out.bu", 0)
    answered = sum(v for k, v in counters.items() if k.startswith("ba_in."))
    return sent, answered


class _Sampler:
    def __init__(self, ha: AgentProcess, every: float) -> None:
        self.ha, self.every = ha, every
        self.samples: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self.next_at = self.started

    def poll(self) -> None:
        now = time.monotonic()
        if now < self.next_at:
            return
        self.next_at = now + self.every
        try:
            status = self.ha.call("status")
        except Exception as exc:  # the agent may be dead: record it, the verdict says so
            self.samples.append({"t": round(now - self.started, 1), "error": str(exc)})
            return
        facts = h.process_facts(int(status["pid"]))
        facts["tasks"] = status.get("tasks")
        facts["bindings"] = len(self.ha.call("bindings"))
        facts["home_agents"] = len(self.ha.call("home-agents"))
        self.samples.append({"t": round(now - self.started, 1), **facts})


def _wait(sampler: _Sampler, seconds: float, attack: h.Attack | None = None) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sampler.poll()
        if attack is not None and attack.proc.poll() is not None:
            break
        time.sleep(0.2)


def _series(samples: list[dict], key: str) -> dict[str, Any]:
    values = [s[key] for s in samples if isinstance(s.get(key), int)]
    if not values:
        return {"first": None, "last": None, "max": None}
    return {"first": values[0], "last": values[-1], "max": max(values)}


def _verdict(samples: list[dict], alive: bool) -> str:
    if not alive or any("error" in s for s in samples):
        return "agent died or stopped answering"
    # The first sample is taken before any attack: judge growth from the second one on.
    steady = samples[1:] if len(samples) > 2 else samples
    grew = []
    rss = _series(steady, "rss_kb")
    if rss["first"] and rss["last"] > rss["first"] * (1 + RSS_GROWTH_LIMIT):
        grew.append(f"rss {rss['first']} -> {rss['last']} kB")
    for key, slack in (("fds", 4), ("threads", 2), ("tasks", 4)):
        series = _series(steady, key)
        if series["first"] is not None and series["last"] > series["first"] + slack:
            grew.append(f"{key} {series['first']} -> {series['last']}")
    return "stable" if not grew else "growing: " + ", ".join(grew)


def _forged_nd(topo: Topology, rng: random.Random, count: int) -> int:
    forged = h.HOME_PREFIX.network_address + 0xBAD
    off = h.raw_sender(topo, "atkoff")
    on = h.FrameSender(topo, "atkon")
    sent = 0
    try:
        for _ in range(count):
            h.send_raw(off, h.router_advert(ATTACKER_OFF, h.HA, forged))
            target = h.HOME_PREFIX.network_address + rng.randrange(0x100, 0x10000)
            h.send_raw(off, h.neighbor_advert(ATTACKER_OFF, h.HA, target))
            src = IPv6Address(f"fe80::1:{rng.randrange(1, 0xFFFF):x}")
            address = h.HOME_PREFIX.network_address + 0xC0000 + rng.randrange(1 << 16)
            on.send(h.router_advert(src, IPv6Address("ff02::1"), address, mac=on.mac))
            sent += 3
            if sent % 300 == 0:
                time.sleep(0.01)
    finally:
        off.close()
        on.close()
    return sent


def run(
    seconds: float,
    directory: Path,
    seed: int = 1,
    sample_every: float = 10.0,
    canary_interval: float = 1.0,
    phase_seconds: float = 10.0,
) -> dict[str, Any]:
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with Topology(mn_link="foreign2") as topo:
        h.add_node(topo, "canary", "foreign2", CANARY_COA)
        h.add_node(topo, "atkoff", "foreign1", ATTACKER_OFF)
        h.add_node(topo, "atkon", "home", ATTACKER_ON)
        for node in ("ha", "atkon", "atkoff", "canary"):
            topo.sysctl(node, **{"net.ipv6.conf.eth0.accept_ra": 0})
        keys = h.write_keys_file(
            directory / "keys" / "keys.yml",
            {
                CANARY["nai"]: {"spi": CANARY["spi"], "key": CANARY["key"]},
                NAI: {"spi": SPI, "key": KEY_HEX},
            },
        )
        ha_config = {
            "role": "ha",
            "keys_file": str(keys),
            "log_level": "info",
            "home_agent": {
                "interfaces": ["eth0"],
                "home_prefixes": ["2001:db8:1::/64"],
                "address": str(h.HA),
                "dad": False,
            },
        }
        mn_config = {
            "role": "mn",
            "log_level": "info",
            "keys_file": str(write_keys(directory / "mn")),
            "mobile_node": {
                "nai": NAI,
                "interfaces": ["eth0"],
                "home_addresses": [
                    {"address": f"{MN_HOA}/64", "interface": "eth0", "home_agent": str(h.HA)}
                ],
            },
        }
        with (
            AgentProcess(topo.ns["ha"], directory / "ha", ha_config) as ha,
            AgentProcess(topo.ns["mn"], directory / "mn", mn_config) as mn,
        ):
            canary = topo.in_node(
                "canary", h.Canary, topo, "canary", home=CANARY_HOA, coa=CANARY_COA, **CANARY
            ).target
            first = canary.register(deadline=15)
            sampler = _Sampler(ha, sample_every)
            sampler.poll()
            start = canary.mark()
            canary.start(canary_interval)
            handovers: list[float | None] = []
            phases: dict[str, int] = {}
            attackers: list[dict] = []
            deadline = began + seconds
            index = 0
            while (left := deadline - time.monotonic()) > 1:
                kind = PHASES[index % len(PHASES)]
                index += 1
                span = min(phase_seconds, left)
                phases[kind] = phases.get(kind, 0) + 1
                if kind == "fuzz":
                    spec = {
                        "mode": "fuzz",
                        "src": str(ATTACKER_OFF),
                        "seed": rng.randrange(1 << 30),
                    }
                    spec.update(nai=CANARY["nai"], spi=CANARY["spi"], key=CANARY["key"].hex())
                    attack = h.Attack(topo, "atkoff", {**spec, "seconds": span, "rate": 800})
                    _wait(sampler, span + 5, attack)
                    attackers.append(attack.result())
                elif kind == "flood":
                    spec = {"mode": "spoof-bu", "seconds": span, "rate": 3000}
                    attack = h.Attack(topo, "atkoff", {**spec, "seed": rng.randrange(1 << 30)})
                    _wait(sampler, span + 5, attack)
                    attackers.append(attack.result())
                elif kind == "nd":
                    t0 = time.monotonic()
                    sent = _forged_nd(topo, rng, 600)
                    attackers.append({"mode": "nd", "sent": sent})
                    _wait(sampler, max(0.0, span - (time.monotonic() - t0)))
                else:
                    link = "foreign1" if topo.link_of("mn") == "foreign2" else "foreign2"
                    t0 = time.monotonic()
                    topo.move("mn", link)
                    coa = str(topo.coa)
                    took = None
                    while time.monotonic() - t0 < span:
                        sampler.poll()
                        found = [b for b in ha.call("bindings") if b["home_address"] == str(MN_HOA)]
                        if found and found[0]["care_of_address"] == coa:
                            took = time.monotonic() - t0
                            break
                        time.sleep(0.05)
                    handovers.append(None if took is None else round(took, 3))
                    _wait(sampler, max(0.0, span - (time.monotonic() - t0)))
            canary.stop()
            sampler.next_at = 0
            sampler.poll()
            stats = canary.stats(since=start)
            mn_sent, mn_answered = _ba_answered(mn.call("counters"))
            alive = ha.proc is not None and ha.proc.poll() is None
            counters = ha.call("counters") if alive else {}
    samples = sampler.samples
    done = [t for t in handovers if t is not None]
    return {
        "duration": round(time.monotonic() - began, 1),
        "seed": seed,
        "agent_alive": alive,
        "canary_first_registration": first.status,
        "canary": {k: stats[k] for k in ("sent", "answered", "ok", "lost", "median_ms", "p95_ms")},
        "legitimate": {
            "bus_sent": mn_sent,
            "bas_received": mn_answered,
            "answered_pct": round(100 * mn_answered / mn_sent, 2) if mn_sent else 0.0,
            "handovers": len(handovers),
            "handovers_failed": len(handovers) - len(done),
            "handover_median_s": round(statistics.median(done), 3) if done else None,
        },
        "phases": phases,
        "attack_packets": sum(a.get("sent", 0) for a in attackers),
        "ha_counters": {
            k: counters.get(k)
            for k in ("mh_in.bu", "auth_failed", "reply_rate_limited", "transport.malformed")
        },
        "rss_kb": _series(samples, "rss_kb"),
        "fds": _series(samples, "fds"),
        "threads": _series(samples, "threads"),
        "tasks": _series(samples, "tasks"),
        "samples": len(samples),
        "verdict": _verdict(samples, alive),
    }


def main() -> None:
    seconds = float(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SOAK_SECONDS", 1800))
    with tempfile.TemporaryDirectory(prefix="mip6-soak-") as tmp:
        result = run(seconds, Path(tmp), seed=int(os.environ.get("SOAK_SEED", "1")))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
