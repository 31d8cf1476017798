"""Prometheus metrics (metrics config section): the counter mapping on its own, and a real
home agent's endpoint and textfile against what mip6stat says. The scrape is parsed with
prometheus_client's own text parser, not with the code that wrote it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from agents import AgentProcess, wait_until
from dataplane_probe import verdict
from mip6agent.config.schema import check_mapping
from mip6agent.control.protocol import ControlError
from mip6agent.daemon.metrics import Snapshot, families
from prometheus_client.core import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_agent_integration import binding_coa, ha_config, mn_config
from topology import Topology

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
PORT = 19436


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class _Fixed:
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self):
        return families(self.snap)


def test_counters_status_and_states_as_exposition_text() -> None:
    snap = Snapshot(
        counters={"mh_in.bu": 3, "ba_out.0_accepted": 2, "ba_out.129_reason_unspecified": 1,
                  "reconcile_failed": 0},
        status={"role": "ha", "version": "9.9", "dataplane": "seg6", "config_generation": 4,
                "uptime": 12.5, "input_queued": 0, "restored": {"reconciled": True}},
        home_bindings={"active": 5, "recovered": 1},
    )  # fmt: skip
    registry = CollectorRegistry()
    registry.register(_Fixed(snap))
    got = _samples(generate_latest(registry).decode())
    assert got[("mip6_mh_in_total", (("kind", "bu"),))] == 3
    assert got[("mip6_ba_out_total", (("kind", "0_accepted"),))] == 2
    assert got[("mip6_ba_out_total", (("kind", "129_reason_unspecified"),))] == 1
    assert got[("mip6_reconcile_failed_total", ())] == 0
    assert got[("mip6_config_generation", ())] == 4
    assert got[("mip6_uptime_seconds", ())] == 12.5
    assert got[("mip6_reconciled", ())] == 1
    assert got[("mip6_home_bindings", (("state", "active"),))] == 5
    assert got[("mip6_home_bindings", (("state", "recovered"),))] == 1
    info = (("dataplane", "seg6"), ("role", "ha"), ("version", "9.9"))
    assert got[("mip6_agent_info", info)] == 1


def test_bul_lists_every_state() -> None:
    registry = CollectorRegistry()
    registry.register(_Fixed(Snapshot(counters={}, status={}, bul={"registered": 2})))
    got = _samples(generate_latest(registry).decode())
    states = {dict(k[1])["state"]: v for k, v in got.items() if k[0] == "mip6_bul_entries"}
    assert states == {"idle": 0, "discovering": 0, "registering": 0, "registered": 2,
                      "deregistering": 0, "failed": 0}  # fmt: skip


def test_return_routability_states_are_listed_all() -> None:
    registry = CollectorRegistry()
    snap = Snapshot(counters={"mh_out.hoti": 2}, status={}, correspondents={"bound": 3})
    registry.register(_Fixed(snap))
    got = _samples(generate_latest(registry).decode())
    states = {
        dict(k[1])["state"]: v for k, v in got.items() if k[0] == "mip6_correspondent_entries"
    }
    assert states == {"idle": 0, "testing": 0, "updating": 0, "bound": 3, "held": 0}
    assert got[("mip6_mh_out_total", (("kind", "hoti"),))] == 2
    # Without route optimisation the family is absent, not all zeros.
    registry = CollectorRegistry()
    registry.register(_Fixed(Snapshot(counters={}, status={})))
    assert "mip6_correspondent_entries" not in generate_latest(registry).decode()


def test_config_refuses_what_cannot_work() -> None:
    _config, ctx = check_mapping(
        {"role": "cn", "metrics": {"address": "ff02::1", "port": 70000, "textfile": "/m.txt"}}
    )
    text = "\n".join(str(p) for p in ctx.problems)
    assert "metrics.address" in text and "multicast" in text
    assert "metrics.port" in text
    assert "metrics.textfile" in text and ".prom" in text
    config, ctx = check_mapping({"role": "cn"})
    assert config is not None and config.metrics.enabled is False
    assert str(config.metrics.address) == "::1"


def _scrape(topo: Topology, node: str) -> str:
    url = f"http://[::1]:{PORT}/metrics"
    with topo.inside(node), urllib.request.urlopen(url, timeout=10) as reply:
        return reply.read().decode()


@root
def test_home_agent_metrics_match_mip6stat(tmp_path: Path) -> None:
    textfile = tmp_path / "prom" / "mip6.prom"
    textfile.parent.mkdir()
    config = ha_config(tmp_path / "ha")
    config["metrics"] = {"enabled": True, "port": PORT, "textfile": str(textfile), "interval": 1}
    with (
        Topology(mn_link="foreign1") as topo,
        AgentProcess(topo.ns["ha"], tmp_path / "ha", config) as ha,
        AgentProcess(topo.ns["mn"], tmp_path / "mn", mn_config(tmp_path / "mn")),
    ):
        wait_until(lambda: binding_coa(ha) == str(topo.coa), what="binding at foreign1")
        time.sleep(0.5)  # the BA's batch has ended: its time is in the histogram
        got = _samples(_scrape(topo, "ha"))
        stat = subprocess.run(
            [sys.executable, "-m", "mip6agent.cli.mip6stat", "-S", ha.socket, "-s", "--json"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        counters = json.loads(stat.stdout)["counters"]
        for name in ("mh_in.bu", "mh_out.ba", "ba_out.0_accepted"):
            group, _, kind = name.partition(".")
            assert got[(f"mip6_{group}_total", (("kind", kind),))] == counters[name], name
        assert counters["mh_in.bu"] >= 1
        assert got[("mip6_home_bindings", (("state", "active"),))] == 1
        assert got[("mip6_bu_processing_seconds_count", ())] >= counters["mh_in.bu"] - 1 >= 0
        assert got[("mip6_bu_processing_seconds_count", ())] >= 1
        assert 0 < got[("mip6_bu_processing_seconds_sum", ())] < 30
        roles = [dict(k[1]) for k in got if k[0] == "mip6_agent_info"]
        assert roles and roles[0]["role"] == "ha"
        assert roles[0]["dataplane"] == verdict().backend  # what the probe picks here
        assert got[("mip6_config_generation", ())] == 1
        # the textfile: the same metrics, rewritten every second; one written before the
        # binding existed still says 0, so wait for a rewrite after the scrape above
        seen = time.time()
        wait_until(
            lambda: textfile.exists() and textfile.stat().st_mtime > seen + 0.05,
            what="metrics textfile rewritten after the binding",
        )
        from_file = _samples(textfile.read_text())
        assert from_file[("mip6_home_bindings", (("state", "active"),))] == 1
        ha.proc.send_signal(1)  # SIGHUP: the config generation moves on
        wait_until(
            lambda: _samples(_scrape(topo, "ha"))[("mip6_config_generation", ())] == 2,
            what="generation 2 after SIGHUP",
        )


@root
def test_metrics_port_taken_is_a_clear_start_failure(tmp_path: Path) -> None:
    config = ha_config(tmp_path / "ha")
    config["metrics"] = {"enabled": True, "port": PORT}
    with Topology(mn_link="foreign1") as topo:
        blocker = topo.popen(
            "ha", sys.executable, "-c",
            f"import socket,time; s=socket.socket(socket.AF_INET6); s.bind(('::1',{PORT})); "
            "s.listen(); print('ok', flush=True); time.sleep(60)",
            stdout=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert blocker.stdout is not None and blocker.stdout.readline().strip() == "ok"
            agent = AgentProcess(topo.ns["ha"], tmp_path / "ha", config)
            with pytest.raises(RuntimeError, match="metrics endpoint"):
                agent.start()
            assert agent.proc is not None and agent.proc.returncode != 0
            assert "Traceback" not in agent.log.read_text()
        finally:
            blocker.kill()
            blocker.wait()


def _scrape_port(topo: Topology, node: str, port: int) -> str | None:
    try:
        with (
            topo.inside(node),
            urllib.request.urlopen(f"http://[::1]:{port}/metrics", timeout=5) as reply,
        ):
            return reply.read().decode()
    except OSError:
        return None


@root
def test_reload_moves_the_metrics_endpoint_or_refuses(tmp_path: Path) -> None:
    """A reload with a new metrics port serves there (and no longer on the old one); a
    reload to a port that is taken is refused, and the running endpoint keeps serving."""
    config = ha_config(tmp_path / "ha")
    config["metrics"] = {"enabled": True, "port": PORT}
    with (
        Topology(mn_link="foreign1") as topo,
        AgentProcess(topo.ns["ha"], tmp_path / "ha", config) as ha,
    ):
        assert _scrape_port(topo, "ha", PORT) is not None
        ha.config["metrics"]["port"] = PORT + 1
        ha.write_config()
        ha.call("reload")
        assert _scrape_port(topo, "ha", PORT + 1) is not None
        assert _scrape_port(topo, "ha", PORT) is None, "the old endpoint still answers"
        blocker = topo.popen(
            "ha", sys.executable, "-c",
            f"import socket,time; s=socket.socket(socket.AF_INET6); s.bind(('::1',{PORT + 2})); "
            "s.listen(); print('ok', flush=True); time.sleep(60)",
            stdout=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert blocker.stdout is not None and blocker.stdout.readline().strip() == "ok"
            ha.config["metrics"]["port"] = PORT + 2
            ha.write_config()
            with pytest.raises(ControlError, match="metrics endpoint"):
                ha.call("reload")
        finally:
            blocker.kill()
            blocker.wait()
        text = _scrape_port(topo, "ha", PORT + 1)
        assert text is not None, "the running endpoint went with the refused reload"
        assert _samples(text)[("mip6_config_generation", ())] == 2  # one reload applied
