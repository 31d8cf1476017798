"""SIGTERM and SIGHUP while a restarted home agent reconciles the kernel with many saved
bindings (RFC 6275 10.3.1 state kept across restarts; docs/security.md, "Restart").

The kernel and the state directory get what a running agent leaves for N bindings (as in
bench/ha_restart.py), with each backend this kernel has: seg6 routes, or the eBPF tunnel's
pinned programs, routes and map entries (read back with ``ip`` and bpftool). The agent
starts, and the signal comes as soon as its control socket answers, while ``status``
still says it is reconciling. A stop must end in bounded time without removing anything
the saved bindings name; a reload must not disturb the reconciliation. Each case checks
the kernel with ``ip`` and the state with a fresh BindingStore, not with the agent's own
report.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agents import AgentProcess
from dataplane_probe import require_dataplane
from mip6agent.control.client import call
from mip6agent.control.protocol import ControlError
from netns import netns_cookie

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
from ha_rate import HA_ADDRESS, HOME_PREFIX, IFNAME, build_link, lab  # noqa: E402
from ha_restart import seed_kernel, seed_state  # noqa: E402

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.long,
]

N = 20_000
STOP_DEADLINE = 60.0  # seconds; a bound for the test, not a performance figure
RECONCILED = re.compile(
    r"reconciled bindings on \S+: (\d+) adopted, (\d+) added, (\d+) updated, (\d+) removed"
)


@pytest.fixture(params=["seg6", "bpf"])
def seeded(request: pytest.FixtureRequest) -> Iterator[tuple[str, AgentProcess]]:
    backend = request.param
    require_dataplane(backend)  # the kernel is seeded with what that backend leaves
    with lab() as the_lab:
        ha, _lg = build_link(the_lab)
        the_lab.sysctl(ha, "net.ipv6.route.max_size", str(4 * N))
        directory = the_lab.directory / "agent"
        seed_kernel(ha, N, backend)
        seed_state(directory / "state", N)
        config = {
            "role": "ha",
            "dataplane": backend,
            "authentication": "disabled",
            "log_level": "info",
            "home_agent": {
                "interfaces": [IFNAME],
                "home_prefixes": [str(HOME_PREFIX)],
                "address": str(HA_ADDRESS),
                "dad": False,
            },
        }
        agent = AgentProcess(ha, directory, config)
        the_lab.agents.append(agent)
        yield ha, agent


def _kernel_counts(ha: str) -> tuple[int, int]:
    """(tunnel and decapsulation entries, proxy neighbour entries) in the HA's namespace:
    proto 86 routes in every table (seg6: both kinds; bpf: the tunnel routes, whose
    decapsulations are entries of the pinned ``decap`` map, counted with bpftool)."""

    def ip(*args: str) -> int:
        done = subprocess.run(
            ["ip", "-n", ha, "-6", *args], capture_output=True, text=True, check=True
        )
        return len(done.stdout.splitlines())

    routes = ip("route", "show", "table", "all", "proto", "86")
    pins = os.environ.get("MIP6AGENT_BPF_PINS")
    decap = Path(pins or "/nonexistent") / f"tunnel-c{netns_cookie(ha)}" / "maps" / "decap"
    if decap.exists():
        dump = subprocess.run(
            ["bpftool", "-j", "map", "dump", "pinned", str(decap)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        routes += len(json.loads(dump.stdout))
    return routes, ip("neigh", "show", "proxy", "dev", IFNAME)


def _saved_rows(directory: Path) -> int:
    from mip6agent.daemon.persistence import BindingStore

    store = BindingStore(directory / "state")
    try:
        return len(store.load().bindings)
    finally:
        store.close()


def _start_while_reconciling(agent: AgentProcess) -> None:
    agent.start(wait=120, reconciled=False)
    status = call(agent.socket, "status", timeout=5)
    assert (status.get("restored") or {}).get("reconciled") is False, (
        f"already reconciled when the control socket first answered: {status.get('restored')}"
        f" (make N larger than {N} so that the signal comes during reconciliation)"
    )


def test_sigterm_while_reconciling_stops_and_keeps_every_binding(
    seeded: tuple[str, AgentProcess],
) -> None:
    ha, agent = seeded
    before = _kernel_counts(ha)
    assert before == (2 * N, N), f"seeded kernel: {before}"
    _start_while_reconciling(agent)
    assert agent.proc is not None
    stopped_at = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    rc = agent.proc.wait(timeout=STOP_DEADLINE)
    took = time.monotonic() - stopped_at
    print(f'{{"case": "sigterm while reconciling", "bindings": {N}, "stop_s": {took:.2f}}}')
    assert rc == 0, agent.log.read_text()[-3000:]
    assert _kernel_counts(ha) == before, "a stop during reconciliation removed state"
    assert _saved_rows(agent.directory) == N
    # The next start reconciles the same bindings: all adopted, nothing removed.
    log_before = len(agent.log.read_text(errors="replace"))
    agent.start(wait=180)
    tail = agent.log.read_text(errors="replace")[log_before:]
    match = RECONCILED.search(tail)
    assert match, tail[-3000:]
    assert tuple(map(int, match.groups())) == (N, 0, 0, 0), match.group(0)
    assert agent.stop() == 0


def test_sighup_while_reconciling_reloads_and_reconciliation_completes(
    seeded: tuple[str, AgentProcess],
) -> None:
    ha, agent = seeded
    _start_while_reconciling(agent)
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGHUP)
    end = time.monotonic() + 180
    restored: dict = {}
    while time.monotonic() < end:
        assert agent.proc.poll() is None, agent.log.read_text()[-3000:]
        try:
            restored = call(agent.socket, "status", timeout=5).get("restored") or {}
        except ControlError:
            restored = {}
        if restored.get("reconciled"):
            break
        time.sleep(0.2)
    log = agent.log.read_text(errors="replace")
    assert "configuration reloaded" in log, log[-3000:]
    match = RECONCILED.search(log)
    assert restored.get("reconciled") and match, log[-3000:]
    assert tuple(map(int, match.groups())) == (N, 0, 0, 0), match.group(0)
    assert _kernel_counts(ha) == (2 * N, N)
    assert agent.stop() == 0


def test_damaged_state_at_scale_keeps_the_kernel_and_recovers_every_binding(
    seeded: tuple[str, AgentProcess],
) -> None:
    """A truncated state file with N saved bindings: nothing in the kernel goes, and every
    binding the kernel tunnels comes back, marked recovered (docs/security.md)."""
    from mip6agent.daemon.persistence import BINDINGS_FILE

    ha, agent = seeded
    before = _kernel_counts(ha)
    state = agent.directory / "state"
    for extra in state.glob(f"{BINDINGS_FILE}-*"):
        extra.unlink()  # a WAL would still hold the rows
    database = state / BINDINGS_FILE
    with database.open("r+b") as handle:
        handle.truncate(database.stat().st_size // 2)
    started = time.monotonic()
    agent.start(wait=300)
    took = time.monotonic() - started
    status = call(agent.socket, "status", timeout=10)
    restored = status.get("restored") or {}
    print(
        f'{{"case": "damaged state", "bindings": {N}, "serving_s": {took:.2f}, '
        f'"recovered": {restored.get("recovered")}}}'
    )
    assert restored.get("status") == "damaged", restored
    assert restored.get("recovered") == N, restored
    assert restored.get("removed", 0) == 0, restored
    assert _kernel_counts(ha) == before, "routes or proxy entries went on a damaged file"
    log = agent.log.read_text(errors="replace")
    assert "damaged" in log and "ERROR" in log
    assert list(state.glob(f"{BINDINGS_FILE}.damaged-*")), "damaged file kept aside"
    assert agent.stop() == 0
    # What the agent wrote after recovering is a sound file with every binding.
    assert _saved_rows(agent.directory) == N
