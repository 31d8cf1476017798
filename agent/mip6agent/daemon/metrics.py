"""Prometheus metrics of one agent: an HTTP endpoint, a textfile for node_exporter, or both.

What is exported (docs/operations.md has the list with examples):

- every counter ``mip6stat -s`` shows, as ``mip6_<group>_total``: a counter named
  ``ba_out.0_accepted`` becomes ``mip6_ba_out_total{kind="0_accepted"}``, one without a
  dot ``mip6_<name>_total``. So registrations by status are ``mip6_ba_out_total`` on a
  home agent, and kernel-install failures ``mip6_action_failed_total``;
- bindings by state: ``mip6_home_bindings{state}`` (home agent), ``mip6_bul_entries{state}``
  (mobile node, every state listed, 0 included), ``mip6_correspondent_bindings``;
- return routability: ``mip6_correspondent_entries{state}``, a mobile node's correspondent
  entries by state (idle, testing, updating, bound, held; every state listed while route
  optimisation is on); the RR messages themselves are counters (``mip6_mh_out_total``
  ``{kind="hoti"}`` and so on);
- ``mip6_bu_processing_seconds``: a histogram of the time from a Binding Update's arrival
  to the end of the batch that answers it (the BA is sent in it, after any kernel change);
- ``mip6_agent_info{role,version,dataplane}``, ``mip6_config_generation``,
  ``mip6_uptime_seconds``, ``mip6_input_queued``, ``mip6_reconciled``.

No label carries an address or a NAI: label sets stay bounded whatever the fleet size.

Values come from the agent's own loop (``snapshot``), so a scrape never reads state that
the loop is changing. The HTTP server runs in a thread of its own and waits for the loop at
most ``SCRAPE_TIMEOUT`` seconds: a stalled loop answers no metrics, which is itself a
signal.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT = 5.0
BU_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BUL_STATES = ("idle", "discovering", "registering", "registered", "deregistering", "failed")
RR_STATES = ("idle", "testing", "updating", "bound", "held")
_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


@dataclass
class Snapshot:
    """What one scrape shows; built on the agent's loop."""

    counters: dict[str, int]
    status: dict[str, Any]
    home_bindings: dict[str, int] | None = None
    bul: dict[str, int] | None = None
    correspondent_bindings: int | None = None
    correspondents: dict[str, int] | None = None  # MN with route optimisation on
    extra: dict[str, float] = field(default_factory=dict)


def metric_name(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("_").lower()


def counter_families(counters: dict[str, int]) -> list[Metric]:
    groups: dict[str, list[tuple[str | None, int]]] = {}
    for name, value in counters.items():
        group, dot, kind = name.partition(".")
        groups.setdefault(metric_name(group), []).append((kind if dot else None, value))
    out: list[Metric] = []
    for group, samples in sorted(groups.items()):
        name = f"mip6_{group}"
        labelled = any(kind is not None for kind, _ in samples)
        family = CounterMetricFamily(
            name, f"mip6stat counters {group}.*", labels=["kind"] if labelled else None
        )
        for kind, value in samples:
            if labelled:
                family.add_metric([kind or ""], value)
            else:
                family.add_metric([], value)
        out.append(family)
    return out


def families(snap: Snapshot) -> Iterator[Metric]:
    yield from counter_families(snap.counters)
    status = snap.status
    info = GaugeMetricFamily(
        "mip6_agent_info",
        "The agent: role, version and data-plane backend (value 1)",
        labels=["role", "version", "dataplane"],
    )
    info.add_metric(
        [str(status.get("role")), str(status.get("version")), str(status.get("dataplane"))], 1
    )
    yield info
    for key, name, text in (
        ("config_generation", "mip6_config_generation", "Configuration generation (1 at start)"),
        ("uptime", "mip6_uptime_seconds", "Seconds since the agent started"),
        ("input_queued", "mip6_input_queued", "Received packets waiting to be handled"),
    ):
        if isinstance(status.get(key), int | float):
            yield GaugeMetricFamily(name, text, value=status[key])
    restored = status.get("restored")
    if isinstance(restored, dict) and "reconciled" in restored:
        yield GaugeMetricFamily(
            "mip6_reconciled",
            "1 once the kernel matches the restored bindings",
            value=1 if restored.get("reconciled") else 0,
        )
    if snap.home_bindings is not None:
        gauge = GaugeMetricFamily(
            "mip6_home_bindings", "Home agent's bindings by state", labels=["state"]
        )
        for state, count in sorted(snap.home_bindings.items()):
            gauge.add_metric([state], count)
        yield gauge
    if snap.bul is not None:
        gauge = GaugeMetricFamily(
            "mip6_bul_entries", "Mobile node's binding update list by state", labels=["state"]
        )
        for state in sorted(set(BUL_STATES) | set(snap.bul)):
            gauge.add_metric([state], snap.bul.get(state, 0))
        yield gauge
    if snap.correspondents is not None:
        gauge = GaugeMetricFamily(
            "mip6_correspondent_entries",
            "Mobile node's correspondent entries by return routability state",
            labels=["state"],
        )
        for state in sorted(set(RR_STATES) | set(snap.correspondents)):
            gauge.add_metric([state], snap.correspondents.get(state, 0))
        yield gauge
    if snap.correspondent_bindings is not None:
        yield GaugeMetricFamily(
            "mip6_correspondent_bindings",
            "Correspondent node's bindings (route optimization)",
            value=snap.correspondent_bindings,
        )


class AgentCollector(Collector):
    def __init__(self, source: Callable[[], Snapshot], histogram: Histogram) -> None:
        self._source = source
        self._histogram = histogram

    def collect(self) -> Iterator[Metric]:
        yield from families(self._source())
        yield from self._histogram.collect()


class Metrics:
    """The endpoint and the textfile writer of one agent.

    ``snapshot`` is a coroutine function run on ``loop``; ``observe_bu`` is called there too.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        snapshot: Callable[[], Coroutine[Any, Any, Snapshot]],
    ) -> None:
        self._loop = loop
        self._snapshot = snapshot
        self.histogram = Histogram(
            "mip6_bu_processing_seconds",
            "Binding Update arrival to the end of the batch that answers it",
            buckets=BU_BUCKETS,
            registry=None,
        )
        self.registry = CollectorRegistry()
        self.registry.register(AgentCollector(self._from_thread, self.histogram))
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._writer: asyncio.Task[None] | None = None

    def observe_bu(self, seconds: float) -> None:
        self.histogram.observe(seconds)

    def _from_thread(self) -> Snapshot:
        future = asyncio.run_coroutine_threadsafe(self._snapshot(), self._loop)
        return future.result(SCRAPE_TIMEOUT)

    def serve(self, address: str, port: int) -> None:
        """Listen at address:port (raises OSError when it cannot)."""
        self._server, self._thread = start_http_server(port, addr=address, registry=self.registry)
        host = f"[{address}]" if ":" in address else address
        log.info("metrics at http://%s:%d/metrics", host, port)

    def write_every(self, path: Path, interval: float) -> None:
        self._writer = asyncio.ensure_future(self._write_loop(path, interval))

    async def write_once(self, path: Path) -> None:
        snap = await self._snapshot()
        registry = CollectorRegistry()
        registry.register(AgentCollector(lambda: snap, self.histogram))
        # write_to_textfile writes a temporary file and renames it: readers never see half.
        await self._loop.run_in_executor(None, write_to_textfile, str(path), registry)

    async def _write_loop(self, path: Path, interval: float) -> None:
        failed = False
        while True:
            try:
                await self.write_once(path)
                failed = False
            except OSError as exc:
                if not failed:
                    log.warning("metrics textfile %s not written: %s", path, exc)
                failed = True
            await asyncio.sleep(interval)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
