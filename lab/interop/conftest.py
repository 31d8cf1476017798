"""The interop matrix's pytest plumbing: import paths, the ``lbit`` marker, the per-case
output directory and the JSON summary (``$MIP6_INTEROP_OUT/summary.json``)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "agent" / "tests"))
sys.path.insert(0, str(HERE))

_results: dict[str, dict] = {}
_started = time.time()


def out_dir() -> Path:
    return Path(os.environ.get("MIP6_INTEROP_OUT", "/tmp/mip6-interop-out"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "lbit: the home agent's defence of the mobile node's link-local address (BU L flag)",
    )


@pytest.fixture
def record(request: pytest.FixtureRequest) -> dict:
    """Facts a case measured (timings, statuses seen); they go into the summary."""
    details: dict = {}
    _results.setdefault(request.node.nodeid, {})["details"] = details
    return details


@pytest.fixture
def case_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """The case's working directory (captures, configurations, logs, control sockets).

    It lives in /tmp (tmpfs in the VM): the share is 9p, which refuses Unix sockets. After
    the case, pass or fail, its regular files are copied to ``$MIP6_INTEROP_OUT/<case>``.
    """
    name = request.node.name.replace("[", "-").replace("]", "").replace("/", "_")
    path = Path(tempfile.mkdtemp(prefix=f"mip6-interop-{name}-"))
    try:
        yield path
    finally:
        target = out_dir() / name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(path, target, ignore=_not_regular)
        shutil.rmtree(path, ignore_errors=True)


def _not_regular(directory: str, names: list[str]) -> list[str]:
    """Sockets, links and the like stay behind."""
    paths = {n: os.path.join(directory, n) for n in names}
    return [
        n
        for n, p in paths.items()
        if os.path.islink(p) or not (os.path.isdir(p) or os.path.isfile(p))
    ]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    entry = _results.setdefault(item.nodeid, {})
    entry["duration"] = round(entry.get("duration", 0.0) + report.duration, 2)
    if report.failed:
        entry["outcome"] = "failed"
    elif report.skipped and entry.get("outcome") != "failed":
        entry["outcome"] = "skipped"
    elif report.when == "call" and "outcome" not in entry:
        entry["outcome"] = "passed"
    if report.failed or report.skipped:
        entry.setdefault("reason", _reason(report))
    markers = sorted(m.name for m in item.iter_markers() if m.name in {"lbit"})
    entry["markers"] = markers


def _reason(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    text = str(report.longreprtext or "")
    lines = [line for line in text.splitlines() if line.startswith("E ")]
    return "\n".join(lines[:12]) or text[-2000:]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    cases = [{"case": nodeid.split("::")[-1], **entry} for nodeid, entry in _results.items()]
    summary = {
        "kernel": platform.release(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(_started)),
        "wall_seconds": round(time.time() - _started, 1),
        "passed": sum(c.get("outcome") == "passed" for c in cases),
        "failed": sum(c.get("outcome") == "failed" for c in cases),
        "skipped": sum(c.get("outcome") == "skipped" for c in cases),
        "cases": cases,
    }
    out_dir().mkdir(parents=True, exist_ok=True)
    (out_dir() / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
