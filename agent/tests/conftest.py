from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))

settings.register_profile("default", max_examples=200, deadline=None)
settings.register_profile(
    "long",
    max_examples=int(os.environ.get("MIP6_LONG_EXAMPLES", "20000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def _forced_dataplane(monkeypatch: pytest.MonkeyPatch) -> None:
    """MIP6_TEST_DATAPLANE=seg6|ip6tnl: agents that tests start use that data plane.

    Their configuration otherwise says nothing, so they pick one themselves (auto: seg6
    first). lab/kernel-vm/run.sh sets ip6tnl to run the agent tests on ip6tnl devices.
    """
    forced = os.environ.get("MIP6_TEST_DATAPLANE")
    if not forced:
        return
    import agents  # only then: it imports the agent's control client

    write_config = agents.AgentProcess.write_config

    def forcing(self: agents.AgentProcess) -> None:
        self.config.setdefault("dataplane", forced)
        write_config(self)

    monkeypatch.setattr(agents.AgentProcess, "write_config", forcing)


@pytest.fixture(scope="session", autouse=True)
def _shared_bpf_pins() -> Iterator[None]:
    """One bpffs for the session's agents (netns.shared_bpf_pins)."""
    if os.geteuid() != 0:
        yield
        return
    from netns import shared_bpf_pins

    with shared_bpf_pins():
        yield
