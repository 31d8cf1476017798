"""systemd notification (sd_notify(3)) from a real agent process: READY=1 only once it
serves, STATUS= lines, WATCHDOG=1 keep-alives at half of WATCHDOG_USEC that stop while the
process is stopped, STOPPING=1 at SIGTERM. The test plays systemd's part with its own
AF_UNIX datagram socket, as NOTIFY_SOCKET names it."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest
from agents import AgentProcess
from mip6agent.control.client import call
from mip6agent.daemon.sdnotify import Notifier
from test_agent_integration import ha_config
from topology import Topology

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


class FakeSystemd:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def messages(self, seconds: float) -> list[tuple[float, dict[str, str]]]:
        """(arrival time, fields) of every datagram in the next ``seconds``."""
        out, end = [], time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                break
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            out.append((time.monotonic(), fields))
        return out

    def wait_for(self, key: str, seconds: float) -> dict[str, str]:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _at, fields in self.messages(min(0.5, end - time.monotonic())):
                if key in fields:
                    return fields
        raise AssertionError(f"no {key} in {seconds} s")

    def close(self) -> None:
        self.sock.close()


def test_notifier_without_systemd_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.notify(ready=1) is False
    assert notifier.watchdog_interval is None


def test_notifier_reads_the_watchdog_and_its_pid() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "3000000"}
    assert Notifier(env).watchdog_interval == 1.5
    assert Notifier({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 1.5
    # meant for another process (a shell that exec'd us would have passed its own pid)
    assert Notifier({**env, "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_interval is None
    assert Notifier({**env, "WATCHDOG_USEC": "soon"}).watchdog_interval is None
    assert Notifier({"NOTIFY_SOCKET": "@abstract"}).address == b"\0abstract"


def test_notifier_sends_key_value_lines(tmp_path: Path) -> None:
    systemd = FakeSystemd(tmp_path / "notify")
    try:
        assert Notifier({"NOTIFY_SOCKET": str(systemd.path)}).notify(ready=1, status="a b")
        assert systemd.sock.recv(100) == b"READY=1\nSTATUS=a b"
    finally:
        systemd.close()


def test_notifier_survives_a_vanished_socket(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.notify(ready=1) is False
    assert notifier.notify(watchdog=1) is False  # warned once, still no exception


@root
def test_agent_notifies_ready_status_watchdog_and_stopping(tmp_path: Path) -> None:
    systemd = FakeSystemd(tmp_path / "notify")
    with Topology(mn_link="foreign1") as topo:
        agent = AgentProcess(topo.ns["ha"], tmp_path / "ha", ha_config(tmp_path / "ha"))
        agent.environ = {"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "400000"}
        try:
            agent.start(reconciled=False)
            ready = systemd.wait_for("READY", 30)
            # READY=1 came once the agent serves: its control socket answers, reconciled
            status = call(agent.socket, "status", timeout=2)
            assert (status.get("restored") or {}).get("reconciled", True) is True
            assert ready["READY"] == "1"
            assert ready["STATUS"] == "role ha, 0 bindings"
            beats = [at for at, f in systemd.messages(2.0) if f.get("WATCHDOG") == "1"]
            # every 0.2 s: about 10 in 2 s; a loose bound, the point is that they come
            assert len(beats) >= 5, beats
            assert agent.proc is not None
            agent.proc.send_signal(signal.SIGSTOP)  # the loop cannot run: no keep-alives
            try:
                systemd.messages(0.1)  # what was already on its way
                stalled = systemd.messages(1.0)
            finally:
                agent.proc.send_signal(signal.SIGCONT)
            assert [f for _at, f in stalled if "WATCHDOG" in f] == []
            assert systemd.wait_for("WATCHDOG", 5)["WATCHDOG"] == "1"
            agent.proc.send_signal(signal.SIGTERM)
            assert systemd.wait_for("STOPPING", 15)["STOPPING"] == "1"
            assert agent.proc.wait(timeout=15) == 0
        finally:
            agent.stop()
            systemd.close()


@root
def test_agent_without_watchdog_sends_no_keep_alives(tmp_path: Path) -> None:
    systemd = FakeSystemd(tmp_path / "notify")
    with Topology(mn_link="foreign1") as topo:
        agent = AgentProcess(topo.ns["ha"], tmp_path / "ha", ha_config(tmp_path / "ha"))
        agent.environ = {"NOTIFY_SOCKET": str(systemd.path)}
        try:
            agent.start(reconciled=False)
            systemd.wait_for("READY", 30)
            assert [f for _at, f in systemd.messages(1.5) if "WATCHDOG" in f] == []
        finally:
            agent.stop()
            systemd.close()
