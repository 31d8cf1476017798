"""The shipped systemd unit passes systemd's own checker."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).parents[1] / "systemd" / "mip6agent.service"


def test_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing (Debian package systemd)")
    binary = Path(sys.executable).parent / "mip6agent"
    text = UNIT.read_text().replace("/opt/mip6/venv/bin/mip6agent", str(binary))
    unit = tmp_path / "mip6agent.service"
    unit.write_text(text)
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "mip6agent.service" not in result.stderr, result.stderr


def test_unit_reloads_with_sighup_and_does_not_restart_on_bad_config() -> None:
    text = UNIT.read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text
    assert "RestartPreventExitStatus=2" in text


def _installed_copy(tmp_path: Path) -> Path:
    binary = Path(sys.executable).parent / "mip6agent"
    unit = tmp_path / "mip6agent.service"
    unit.write_text(UNIT.read_text().replace("/opt/mip6/venv/bin/mip6agent", str(binary)))
    return unit


def test_unit_sandbox_scores_at_most_2_5(tmp_path: Path) -> None:
    """systemd-analyze security, offline, on the shipped unit (docs/operations.md)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing (Debian package systemd)")
    result = subprocess.run(
        [analyze, "security", "--offline=yes", str(_installed_copy(tmp_path))],
        capture_output=True,
        text=True,
    )
    match = re.search(r"Overall exposure level for mip6agent\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    print(f'{{"systemd_analyze_security": {match.group(1)}, "target": 2.5}}')
    assert float(match.group(1)) <= 2.5, result.stdout


def test_unit_is_notify_with_a_watchdog_and_a_sandbox() -> None:
    lines = set(UNIT.read_text().splitlines())
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=20",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_PERFMON",
        "RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET6 AF_INET",
        "SystemCallFilter=@system-service bpf",
        "MemoryDenyWriteExecute=yes",
    ):
        assert line in lines, line
