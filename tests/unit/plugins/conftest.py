"""Make ``ansible_collections.mobileip.mipv6`` importable, and shared fixtures.

The repository root is the collection. A temporary ``ansible_collections/mobileip/mipv6``
symlink to it goes first on ``sys.path``, so the modules import their module_utils by the
same fully qualified name as under Ansible. The module tests need ansible-core; they are
skipped with that reason where it is not installed.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent


def _collection_path() -> str:
    base = Path(tempfile.mkdtemp(prefix="mip6-coll-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    namespace = base / "ansible_collections" / "mobileip"
    namespace.mkdir(parents=True)
    (namespace / "mipv6").symlink_to(ROOT, target_is_directory=True)
    return str(base)


if "ansible_collections.mobileip.mipv6" not in sys.modules:
    sys.path.insert(0, _collection_path())
sys.path.insert(0, str(HERE))

from mip6_unit_helpers import FakeAgent  # noqa: E402


@pytest.fixture
def agent(tmp_path: Path):
    """A fake agent (a real Unix socket server speaking the control protocol)."""
    server = FakeAgent(str(tmp_path / "agent.sock"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ansible_module(monkeypatch: pytest.MonkeyPatch):
    """Patch AnsibleModule: exit_json/fail_json raise, warnings are collected (run_module)."""
    basic = pytest.importorskip(
        "ansible.module_utils.basic", reason="ansible-core is not installed in this environment"
    )
    from mip6_unit_helpers import exit_json, fail_json, warn

    monkeypatch.setattr(basic.AnsibleModule, "warn", warn)
    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
    return basic.AnsibleModule
