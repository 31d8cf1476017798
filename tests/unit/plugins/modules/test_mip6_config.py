"""mip6_config against the fake agent: desired state, idempotence, check mode, diff, errors."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("ansible", reason="ansible-core is not installed in this environment")

from ansible_collections.mobileip.mipv6.plugins.modules import mip6_config
from mip6_unit_helpers import FakeAgent, run_module

pytestmark = pytest.mark.usefixtures("ansible_module")


def config(agent: FakeAgent, check: bool = False, diff: bool = False, **args: Any) -> dict:
    args.setdefault("role", agent.role)
    args = {"socket": agent.path, "timeout": 2, **args}
    if check:
        args["_ansible_check_mode"] = True
    if diff:
        args["_ansible_diff"] = True
    return run_module(mip6_config.main, args)


# --- home agent -------------------------------------------------------------------------------


def test_preference_changes_then_is_idempotent(agent: FakeAgent) -> None:
    first = config(agent, preference=20)
    assert first["changed"] is True
    assert first["config"]["home_agent"]["preference"] == 20
    assert first["commands"] == [
        {
            "command": "set-config",
            "args": {"config": {"home_agent": {"preference": 20}}, "merge": True},
        }
    ]
    assert agent.config["home_agent"]["preference"] == 20
    assert first["status"]["lists"] == ["bindings", "home_agents", "counters"]

    agent.requests.clear()
    second = config(agent, preference=20)
    assert second["changed"] is False and second["commands"] == []
    assert agent.changing == []
    assert "diff" not in second


def test_check_mode_sends_nothing_and_shows_the_diff(agent: FakeAgent) -> None:
    result = config(agent, check=True, diff=True, preference=30, debug=True)
    assert result["changed"] is True
    assert agent.changing == [], "check mode sent a changing request"
    assert agent.config["home_agent"]["preference"] == 10 and agent.config["debug"] is False
    assert result["config"]["home_agent"]["preference"] == 30
    diff = result["diff"]
    assert diff["before_header"] == diff["after_header"] == agent.path
    assert "  preference: 10\n" in diff["before"] and "  preference: 30\n" in diff["after"]
    assert "debug: false\n" in diff["before"] and "debug: true\n" in diff["after"]
    assert "refresh_advice" not in diff["before"], "null keys are left out of the diff"


def test_diff_after_a_real_change_is_the_agent_view(agent: FakeAgent) -> None:
    result = config(agent, diff=True, preference=11)
    assert result["diff"]["after"].count("preference: 11") == 1
    assert result["diff"]["before"] != result["diff"]["after"]


def test_disable_and_enable_the_home_agent(agent: FakeAgent) -> None:
    agent.bindings = [{"home_address": "2001:db8:1::100"}]
    off = config(agent, enabled=False, diff=True)
    assert off["changed"] is True and agent.commands[-2:] == ["show-config", "status"]
    assert "disable" in agent.changing and agent.enabled is False
    assert off["status"]["enabled"] is False
    assert off["diff"]["before"].startswith("# home agent function: enabled\n")
    assert off["diff"]["after"].startswith("# home agent function: disabled (mip6config -x)\n")
    assert config(agent, enabled=False)["changed"] is False

    agent.requests.clear()
    on = config(agent, check=True)  # enabled defaults to true
    assert on["changed"] is True and agent.changing == [] and agent.enabled is False
    on = config(agent)
    assert on["changed"] is True and agent.changing == ["enable-ha"] and agent.enabled
    assert [c["command"] for c in on["commands"]] == ["enable-ha"]


def test_configuration_first_then_the_switch(agent: FakeAgent) -> None:
    config(agent, preference=5, enabled=False)
    assert agent.changing == ["set-config", "disable"]


def test_settings_merge_any_schema_key(agent: FakeAgent) -> None:
    settings = {"home_agent": {"max_binding_lifetime": 120, "dad": False}, "log_level": "debug"}
    result = config(agent, settings=settings)
    assert result["changed"] is True
    assert agent.config["home_agent"]["max_binding_lifetime"] == 120
    assert agent.config["home_agent"]["preference"] == 10, "merge keeps the other keys"
    assert agent.config["log_level"] == "debug"
    assert config(agent, settings=settings)["changed"] is False


def test_settings_and_an_option_may_agree_but_not_conflict(agent: FakeAgent) -> None:
    same = config(agent, preference=7, settings={"home_agent": {"preference": 7}})
    assert same["changed"] is True
    clash = config(agent, preference=8, settings={"home_agent": {"preference": 9}})
    assert clash["failed"]
    assert clash["msg"] == (
        "settings.home_agent.preference conflicts with the preference option: set it one way only"
    )


def test_agent_refusal_is_returned_verbatim(agent: FakeAgent) -> None:
    result = config(agent, preference=70000)
    assert result["failed"] and result["agent_refused"] is True
    assert result["msg"] == "control request: home_agent.preference: 70000 is out of range 0..65535"


def test_settings_strict_types_are_not_hidden(agent: FakeAgent) -> None:
    # debug: 1 is not the boolean true: the module must send it and let the agent decide.
    result = config(agent, check=True, settings={"debug": 0})
    assert result["changed"] is True


def test_normalised_form_warns_about_drift(agent: FakeAgent) -> None:
    # The fake agent stores what it gets; a real one would normalise "2001:DB8:1::1".
    original = agent._set_config

    def normalising(cfg: dict, merge: bool) -> dict:
        result = original(cfg, merge)
        agent.config["home_agent"]["address"] = "2001:db8:1::1"
        return result

    agent._set_config = normalising  # type: ignore[method-assign]
    result = config(agent, settings={"home_agent": {"address": "2001:DB8:1::1"}})
    assert result["changed"] is True
    assert any("home_agent.address" in w for w in result.get("warnings", []))


# --- role checks ------------------------------------------------------------------------------


def test_wrong_role_fails_clearly_and_changes_nothing(agent: FakeAgent) -> None:
    result = config(agent, role="mn", home_registration_lifetime=600)
    assert result["failed"]
    assert result["msg"].startswith(
        f"the agent on {agent.path} runs as ha (home agent), not mn (mobile node)"
    )
    assert agent.changing == []


@pytest.mark.parametrize(
    ("role", "option", "value", "text"),
    [
        ("ha", "home_prefix", "2001:db8:1::/64", "home_prefix is a mobile node option (role mn)"),
        ("ha", "bu_lifetime", 200, "bu_lifetime is a mobile node option"),
        ("ha", "foreign_addresses", [], "foreign_addresses is a mobile node option"),
        (
            "mn",
            "preference",
            3,
            "preference is a home agent option (role ha); this task has role mn",
        ),
        ("cn", "preference", 3, "preference is a home agent option"),
        ("cn", "enabled", False, "enabled=false needs role ha or mn"),
        ("ha", "settings", {"mobile_node": {"bu_lifetime": 5}}, "settings.mobile_node belongs"),
        ("mn", "settings", {"role": "ha"}, "settings.role: the role is not changed"),
        ("cn", "settings", {"home_agent": {"dad": False}}, "a correspondent node has neither"),
    ],
)
def test_options_of_another_role_fail_before_asking(
    agent: FakeAgent, role: str, option: str, value: object, text: str
) -> None:
    result = config(agent, role=role, **{option: value})
    assert result["failed"] and text in result["msg"]
    assert agent.requests == [], "the agent was asked anyway"


def test_home_address_ways_are_mutually_exclusive(agent: FakeAgent) -> None:
    result = config(agent, role="mn", home_prefix="2001:db8:1::/64", autoconfigure=True)
    assert result["failed"] and "mutually exclusive" in result["msg"]


def test_missing_agent(tmp_path) -> None:
    result = run_module(mip6_config.main, {"socket": str(tmp_path / "x.sock"), "role": "ha"})
    assert result["failed"]
    assert result["msg"] == f"no agent listening on {tmp_path / 'x.sock'} (is mip6agent running?)"


# --- mobile node ------------------------------------------------------------------------------


@pytest.fixture
def mn(agent: FakeAgent) -> FakeAgent:
    agent.set_role("mn")
    return agent


def test_mobile_node_lifetimes_and_eager_md(mn: FakeAgent) -> None:
    args = {"home_registration_lifetime": 600, "bu_lifetime": 200, "eager_movement_detection": 2}
    result = config(mn, **args)
    assert result["changed"] is True
    node = mn.config["mobile_node"]
    assert node["home_registration_lifetime"] == 600 and node["bu_lifetime"] == 200
    assert node["eager_movement_detection"] == 2
    sent = result["commands"][0]["args"]["config"]["mobile_node"]
    assert sent["home_registration_lifetime"] == 600 and isinstance(
        sent["home_registration_lifetime"], int
    ), "600.0 from the float option is sent as the integer the agent shows"
    assert config(mn, **args)["changed"] is False


def test_home_addresses_are_declarative_and_normalised(mn: FakeAgent) -> None:
    wanted = [
        {"address": "2001:DB8:1::0100/64", "interface": "eth0", "home_agent": "2001:DB8:1::1"},
        {"address": "2001:db8:5::100/64", "interface": "eth0"},
    ]
    result = config(mn, home_addresses=wanted)
    assert result["changed"] is True
    assert mn.config["mobile_node"]["home_addresses"] == [
        {"address": "2001:db8:1::100/64", "interface": "eth0", "home_agent": "2001:db8:1::1"},
        {"address": "2001:db8:5::100/64", "interface": "eth0", "home_agent": None},
    ]
    assert config(mn, home_addresses=wanted)["changed"] is False
    # the current single entry, written differently, is no change
    mn.set_role("mn")
    same = [{"address": "2001:db8:1:0::100/64", "interface": "eth0", "home_agent": "2001:db8:1::1"}]
    assert config(mn, home_addresses=same)["changed"] is False


def test_switching_to_autoconfigure_nulls_the_static_addresses(mn: FakeAgent) -> None:
    result = config(mn, autoconfigure=True)
    assert result["changed"] is True
    sent = result["commands"][0]["args"]["config"]["mobile_node"]
    assert sent == {"autoconfigure": True, "home_addresses": None}
    assert mn.config["mobile_node"].get("autoconfigure") is True
    assert "home_addresses" not in mn.config["mobile_node"]
    assert config(mn, autoconfigure=True)["changed"] is False
    # and to a home prefix: autoconfigure goes off
    result = config(mn, home_prefix="2001:DB8:1::/64")
    sent = result["commands"][0]["args"]["config"]["mobile_node"]
    assert sent == {"home_prefix": "2001:db8:1::/64", "autoconfigure": False}
    assert mn.config["mobile_node"]["home_prefix"] == "2001:db8:1::/64"
    assert config(mn, home_prefix="2001:db8:1::/64")["changed"] is False


def test_autoconfigure_false_alone(mn: FakeAgent) -> None:
    # Not autoconfiguring already: nothing to do.
    assert config(mn, autoconfigure=False)["changed"] is False
    config(mn, autoconfigure=True)
    refused = config(mn, autoconfigure=False)
    assert refused["failed"] and "exactly one of" in refused["msg"]


def test_foreign_addresses_are_declarative(mn: FakeAgent) -> None:
    two = [
        {"address": "2001:db8:ff::7/64", "interface": "wlan0"},
        {"address": "2001:db8:fe::7/64", "interface": "eth1"},
    ]
    assert config(mn, foreign_addresses=two)["changed"] is True
    assert mn.config["mobile_node"]["foreign_addresses"] == two
    assert config(mn, foreign_addresses=two)["changed"] is False
    one = config(mn, foreign_addresses=two[1:], diff=True)
    assert one["changed"] is True and mn.config["mobile_node"]["foreign_addresses"] == two[1:]
    assert '"2001:db8:ff::7/64"' in one["diff"]["before"]
    assert '"2001:db8:ff::7/64"' not in one["diff"]["after"]
    assert config(mn, foreign_addresses=[])["changed"] is True
    assert mn.config["mobile_node"]["foreign_addresses"] == []
    assert config(mn, foreign_addresses=[])["changed"] is False


def test_mobile_node_stop_and_start(mn: FakeAgent) -> None:
    check = config(mn, enabled=False, check=True)
    assert check["changed"] is True and mn.changing == []
    stop = config(mn, enabled=False)
    assert stop["changed"] is True and mn.changing == ["disable"]
    assert mn.bul[0]["state"] == "idle"
    assert config(mn, enabled=False)["changed"] is False
    # enabled: true starts a stopped mobile node again, once
    start = config(mn)
    assert start["changed"] is True and mn.changing[-1] == "enable"
    assert config(mn)["changed"] is False


def test_debug_on_a_correspondent_node(agent: FakeAgent) -> None:
    agent.set_role("cn")
    result = config(agent, debug=True)
    assert result["changed"] is True and agent.config["debug"] is True
    assert config(agent, debug=True)["changed"] is False


# --- pure functions -----------------------------------------------------------------------------


def test_build_patch_only_contains_what_the_task_sets() -> None:
    params = {
        "role": "ha",
        "enabled": True,
        "preference": 4,
        "debug": None,
        "settings": None,
        "home_addresses": None,
        "home_prefix": None,
        "autoconfigure": None,
        "home_registration_lifetime": None,
        "bu_lifetime": None,
        "eager_movement_detection": None,
        "foreign_addresses": None,
    }
    assert mip6_config.build_patch(params, {}) == {"home_agent": {"preference": 4}}
    params.update(preference=None)
    assert mip6_config.build_patch(params, {}) == {}
