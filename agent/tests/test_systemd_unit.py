"""The shipped systemd unit passes systemd's own checker."""

from __future__ import annotations

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
