"""mip6_stat against the fake agent: facts, clearing only what is there, check mode."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("ansible", reason="ansible-core is not installed in this environment")

from ansible_collections.mobileip.mipv6.plugins.modules import mip6_stat
from mip6_unit_helpers import FakeAgent, run_module

pytestmark = pytest.mark.usefixtures("ansible_module")

BINDING = {"home_address": "2001:db8:1::100", "care_of_address": "2001:db8:2::100"}


def stat(agent: FakeAgent, check: bool = False, **args: Any) -> dict:
    args = {"socket": agent.path, "timeout": 2, **args}
    if check:
        args["_ansible_check_mode"] = True
    return run_module(mip6_stat.main, args)


def test_default_gathers_every_list_of_the_role_and_status(agent: FakeAgent) -> None:
    agent.bindings = [BINDING]
    agent.counters = {"mh_in.bu": 2}
    result = stat(agent)
    assert result["changed"] is False
    facts = result["ansible_facts"]["mip6"]
    assert set(facts) == {"bindings", "home_agents", "counters", "status"}
    assert facts["bindings"] == [BINDING]
    assert facts["counters"] == {"mh_in.bu": 2}
    assert facts["status"]["role"] == "ha"
    assert facts["status"]["lists"] == ["bindings", "home_agents", "counters"]
    assert agent.changing == []


def test_mobile_node_lists_use_underscores(agent: FakeAgent) -> None:
    agent.set_role("mn")
    facts = stat(agent)["ansible_facts"]["mip6"]
    assert set(facts) == {"bul", "home_addresses", "home_agents", "counters", "status"}
    assert facts["bul"][0]["state"] == "registered"
    assert facts["home_addresses"] == [{"home_address": "2001:db8:1::100"}]


def test_mobile_node_with_route_optimization_gathers_its_correspondents(
    agent: FakeAgent,
) -> None:
    agent.set_role("mn")
    entry = {"home_address": "2001:db8:1::100", "correspondent": "2001:db8:4::9",
             "state": "bound", "dataplane": "2001:db8:2::100"}  # fmt: skip
    agent.correspondents = [entry]
    facts = stat(agent)["ansible_facts"]["mip6"]
    assert facts["correspondents"] == [entry]
    assert "correspondents" in facts["status"]["lists"]
    only = stat(agent, gather=["correspondents"])["ansible_facts"]["mip6"]
    assert only == {"correspondents": [entry]}


def test_gather_a_selection(agent: FakeAgent) -> None:
    facts = stat(agent, gather=["counters"])["ansible_facts"]["mip6"]
    assert facts == {"counters": {}}
    assert stat(agent, gather=[])["ansible_facts"]["mip6"] == {}
    # a list the role does not have is simply empty
    assert stat(agent, gather=["bul"])["ansible_facts"]["mip6"] == {"bul": []}


def test_clear_counters_only_when_something_was_counted(agent: FakeAgent) -> None:
    agent.counters = {"mh_in.bu": 3, "transport.received": 9}
    result = stat(agent, clear=["counters"], gather=["counters"])
    assert result["changed"] is True and result["cleared"] == ["counters"]
    assert agent.changing == ["clear-counters"]
    # the transport counters keep counting: clearing again is no change
    assert result["ansible_facts"]["mip6"]["counters"] == {"transport.received": 9}
    agent.requests.clear()
    again = stat(agent, clear=["counters"])
    assert again["changed"] is False and again["cleared"] == [] and agent.changing == []


def test_check_mode_reports_without_clearing(agent: FakeAgent) -> None:
    agent.bindings = [BINDING]
    agent.counters = {"mh_in.bu": 1}
    result = stat(agent, check=True, clear=["bindings", "counters", "home_agents"])
    assert result["changed"] is True
    assert result["cleared"] == ["bindings", "counters"], "home_agents is already empty"
    assert agent.changing == [] and agent.bindings == [BINDING]
    assert result["ansible_facts"]["mip6"]["bindings"] == [BINDING], "facts before clearing"


def test_clear_bindings_then_gather_shows_them_gone(agent: FakeAgent) -> None:
    agent.bindings = [BINDING]
    result = stat(agent, clear=["bindings"])
    assert result["changed"] is True and agent.changing == ["clear-bindings"]
    assert result["ansible_facts"]["mip6"]["bindings"] == []
    assert stat(agent, clear=["bindings"])["changed"] is False


def test_lists_of_another_role_are_skipped(agent: FakeAgent) -> None:
    result = stat(agent, clear=["bul", "home_addresses"])
    assert result["changed"] is False
    assert result["skipped"] == ["bul", "home_addresses"] and agent.changing == []


def test_mobile_node_bul_and_home_addresses(agent: FakeAgent) -> None:
    agent.set_role("mn")
    result = stat(agent, clear=["bul"])
    assert result["changed"] is True and agent.changing == ["clear-bul"]
    assert agent.bul[0]["state"] == "idle"
    assert stat(agent, clear=["bul"])["changed"] is False, "idle entries are cleared already"

    agent.requests.clear()
    check = stat(agent, check=True, clear=["home_addresses"])
    assert check["changed"] is True and agent.changing == []
    result = stat(agent, clear=["home_addresses"])
    assert result["changed"] is True
    sent = [args for command, args in agent.requests if command == "set-config"]
    assert sent == [{"config": mip6_stat.CLEAR_HOME_ADDRESSES, "merge": True}]
    node = agent.config["mobile_node"]
    assert node.get("autoconfigure") is True and "home_addresses" not in node
    assert stat(agent, clear=["home_addresses"])["changed"] is False


def test_missing_agent(tmp_path) -> None:
    path = str(tmp_path / "gone.sock")
    result = run_module(mip6_stat.main, {"socket": path})
    assert result["failed"] and result["msg"] == (
        f"no agent listening on {path} (is mip6agent running?)"
    )


def test_bad_choice_is_refused(agent: FakeAgent) -> None:
    result = stat(agent, gather=["bindings", "routes"])
    assert result["failed"] and "routes" in result["msg"]
