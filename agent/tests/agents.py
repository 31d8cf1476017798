"""Run real mip6agent processes inside test namespaces and talk to them over the control API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from dataplane_probe import require_dataplane
from mip6agent.control.client import call
from mip6agent.control.protocol import ControlError

NAI = "mn1@example.net"
SPI = 1000
KEY_HEX = "00112233445566778899aabbccddeeff00112233"


def write_keys(directory: Path, key_hex: str = KEY_HEX, nai: str = NAI) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "keys.yml"
    path.write_text(yaml.safe_dump({"mobile_nodes": {nai: {"spi": SPI, "key": key_hex}}}))
    os.chmod(path, 0o600)
    return path


class AgentProcess:
    """One agent in one namespace; ``with`` guarantees it is stopped.

    A home agent or mobile node needs a data plane: on a kernel with none, :meth:`start`
    skips the test (:func:`dataplane_probe.require_dataplane`) rather than fail it. A test
    that wants such an agent to fail before the data plane matters sets
    ``needs_dataplane`` to False.
    """

    def __init__(self, namespace: str, directory: Path, config: dict[str, Any]) -> None:
        self.namespace = namespace
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket = str(directory / "agent.sock")
        self.config = {
            "control_socket": self.socket,
            "state_dir": str(directory / "state"),
            "log_level": "debug",
            **config,
        }
        self.path = directory / "agent.yml"
        self.write_config()
        self.log = directory / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.environ: dict[str, str] = {}  # added to this process's environment at start
        self.needs_dataplane = self.config.get("role") in ("ha", "mn")

    def write_config(self) -> None:
        self.path.write_text(yaml.safe_dump(self.config))

    def start(self, wait: float = 60.0, reconciled: bool = True) -> AgentProcess:
        """Start and wait until the control socket answers, and (``reconciled``) until a
        home agent has reconciled the kernel with its restored bindings."""
        if self.needs_dataplane:
            require_dataplane()
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.namespace,
                sys.executable,
                "-m",
                "mip6agent.cli.mip6agent",
                "--config",
                str(self.path),
            ],
            stdout=handle,
            stderr=handle,
            env={**os.environ, **self.environ},
        )
        handle.close()
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent in {self.namespace} exited:\n{self.log.read_text()}")
            try:
                status = call(self.socket, "status", timeout=1)
            except ControlError:
                time.sleep(0.05)
                continue
            # A home agent serves while it reconciles the kernel; tests start from after.
            if not reconciled or (status.get("restored") or {}).get("reconciled", True):
                return self
            time.sleep(0.05)
        raise TimeoutError(f"agent in {self.namespace} did not answer:\n{self.log.read_text()}")

    def call(self, command: str, **args: Any) -> Any:
        return call(self.socket, command, args)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=5)

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(predicate, deadline: float = 15.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` on timeout."""
    end = time.monotonic() + deadline
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(interval)
