"""mip6config, mip6stat and the control API against live agents; start-up refusals."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from agents import AgentProcess, wait_until
from netns import namespaces
from test_agent_integration import HOA, binding_coa, bul_state, ha_config, mn_config
from topology import Topology

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


def cli(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"mip6agent.cli.{tool}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_operator_tools_against_a_registered_pair(tmp_path: Path) -> None:
    with (
        Topology(mn_link="foreign1") as topo,
        AgentProcess(topo.ns["ha"], tmp_path / "ha", ha_config(tmp_path / "ha", dad=False)) as ha,
        AgentProcess(
            topo.ns["mn"], tmp_path / "mn", mn_config(tmp_path / "mn", home_registration_lifetime=8)
        ) as mn,
    ):
        wait_until(lambda: binding_coa(ha) == str(topo.coa), what="registration")
        sock = ["-S", ha.socket]
        assert stat.S_IMODE(os.stat(ha.socket).st_mode) == 0o600

        # mip6stat: table, JSON and the seed's key:value ... ENDOFDATA form
        table = cli("mip6stat", *sock, "-b")
        assert table.returncode == 0 and str(HOA) in table.stdout and str(topo.coa) in table.stdout
        data = json.loads(cli("mip6stat", *sock, "--json").stdout)
        assert data["bindings"][0]["home_address"] == str(HOA)
        assert data["counters"]["mh_in.bu"] >= 1
        keyvalue = cli("mip6stat", *sock, "-k", "-b").stdout.splitlines()
        assert keyvalue[0] == "list:bindings" and keyvalue[-1] == "ENDOFDATA"
        assert f"home_address:{HOA}" in keyvalue
        mn_view = json.loads(cli("mip6stat", "-S", mn.socket, "--json").stdout)
        assert mn_view["bul"][0]["state"] == "registered"
        assert mn_view["home-addresses"][0]["home_address"] == str(HOA)

        # -c clears counters, and only counters
        assert cli("mip6stat", *sock, "-c").returncode == 0
        after = json.loads(cli("mip6stat", *sock, "--json", "-s", "-b").stdout)
        assert not any(k.startswith("mh_in") for k in after["counters"])
        assert after["bindings"], "clearing counters kept the bindings"

        # mip6config: -g -y changes the preference without dropping bindings
        assert cli("mip6config", *sock, "-g", "-y", "20").returncode == 0
        shown = json.loads(cli("mip6config", *sock, "-n").stdout)
        assert shown["home_agent"]["preference"] == 20
        assert binding_coa(ha) == str(topo.coa)
        assert cli("mip6config", *sock, "-d", "1").returncode == 0
        assert ha.call("status")["debug"] is True

        # HA and MN on one host are refused, with the seed's reason
        refused = cli("mip6config", *sock, "-H", f"{HOA}/64@eth0%2001:db8:1::1")
        assert refused.returncode == 1 and "cannot be active on one host" in refused.stderr

        # a seed file with a bad line: exit 2, the line number, nothing sent
        seed = tmp_path / "mip6.conf"
        seed.write_text("# comment\nenable_ha\nbogus line\n")
        bad = cli("mip6config", *sock, "-f", str(seed))
        assert bad.returncode == 2 and ":3" in bad.stderr and "Traceback" not in bad.stderr

        # unimplemented KAME flags are rejected by name; -r is not a home agent's function
        rejected = cli("mip6config", *sock, "-u", "1")
        assert rejected.returncode == 2 and "site-local" in rejected.stderr
        refused = cli("mip6config", *sock, "-r", "1")
        assert refused.returncode == 1 and "this agent is a home agent" in refused.stderr

        # -x stops the home agent: bindings go, and a new BU is refused with 131
        assert cli("mip6config", *sock, "-x").returncode == 0
        wait_until(lambda: binding_coa(ha) is None, what="bindings cleared by -x")
        wait_until(
            lambda: ha.call("counters").get("ba_out.131_home_registration_not_supported", 0) >= 1,
            deadline=20,
            what="a refresh refused with 131",
        )
        assert cli("mip6config", *sock, "-g").returncode == 0
        assert ha.call("status")["enabled"] is True

        # the MN: lifetimes and foreign addresses through the schema
        msock = ["-S", mn.socket]
        assert cli("mip6config", *msock, "-l", "600", "-b", "200").returncode == 0
        config = json.loads(cli("mip6config", *msock, "-n").stdout)["mobile_node"]
        assert config["home_registration_lifetime"] == 600 and config["bu_lifetime"] == 200
        wrong = cli("mip6config", *msock, "-l", "-5")
        assert wrong.returncode == 1 and "home_registration_lifetime" in wrong.stderr
        # -r on a mobile node: Binding Updates to correspondents on, then off again
        assert cli("mip6config", *msock, "-r", "1").returncode == 0
        assert json.loads(cli("mip6config", *msock, "-n").stdout)["mobile_node"][
            "route_optimization"
        ]
        assert cli("mip6config", *msock, "-r", "0").returncode == 0
        config = json.loads(cli("mip6config", *msock, "-n").stdout)["mobile_node"]
        assert config["route_optimization"] is False


def test_sighup_reload_keeps_bindings_and_applies_changes(tmp_path: Path) -> None:
    with (
        Topology(mn_link="foreign1") as topo,
        AgentProcess(topo.ns["ha"], tmp_path / "ha", ha_config(tmp_path / "ha", dad=False)) as ha,
        AgentProcess(topo.ns["mn"], tmp_path / "mn", mn_config(tmp_path / "mn")) as mn,
    ):
        wait_until(lambda: bul_state(mn) == "registered", what="registration")
        pid = ha.call("status")["pid"]
        ha.config["home_agent"]["max_binding_lifetime"] = 120
        ha.write_config()
        os.kill(pid, signal.SIGHUP)
        wait_until(
            lambda: ha.call("show-config")["home_agent"]["max_binding_lifetime"] == 120,
            what="reloaded configuration",
        )
        assert ha.call("status")["pid"] == pid, "reload, not restart"
        assert binding_coa(ha) == str(topo.coa), "bindings survive the reload"
        # a broken file is refused and the running configuration stays
        ha.path.write_text("role: ha\nhome_agent: {interfaces: []}\n")
        os.kill(pid, signal.SIGHUP)
        wait_until(lambda: "reload refused" in ha.log.read_text(), what="refusal logged")
        assert ha.call("show-config")["home_agent"]["max_binding_lifetime"] == 120
        assert ha.proc is not None and ha.proc.poll() is None


def test_invalid_configuration_exits_2_without_touching_the_host(tmp_path: Path) -> None:
    bad = tmp_path / "agent.yml"
    bad.write_text(
        yaml.safe_dump({"role": "ha", "home_agent": {"interfaces": ["eth0"]}, "bogus": 1})
    )
    with namespaces("ha") as ns:
        result = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns["ha"],
                sys.executable,
                "-m",
                "mip6agent.cli.mipagent_missing",
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode != 0
        result = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns["ha"],
                sys.executable,
                "-m",
                "mip6agent.cli.mip6agent",
                "--config",
                str(bad),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2
        assert "bogus" in result.stderr and "home_agent.home_prefixes" in result.stderr
        assert "Traceback" not in result.stderr
        tables = subprocess.run(
            ["ip", "netns", "exec", ns["ha"], "nft", "list", "tables"],
            capture_output=True,
            text=True,
        )
        assert "mip6agent" not in tables.stdout
        routes = subprocess.run(
            ["ip", "-n", ns["ha"], "-6", "rule", "show"], capture_output=True, text=True
        ).stdout
        assert "lookup 100" not in routes


def test_home_agent_and_mobile_node_on_one_host_refused(tmp_path: Path) -> None:
    config = ha_config(tmp_path)
    config["mobile_node"] = mn_config(tmp_path)["mobile_node"]
    path = tmp_path / "agent.yml"
    path.write_text(yaml.safe_dump(config))
    result = cli("mip6agent", "--config", str(path), "--check")
    assert result.returncode == 2
    assert "one host" in result.stderr


def test_unauthenticated_mode_warns_at_start(tmp_path: Path) -> None:
    with Topology(mn_link="foreign1") as topo:
        config = ha_config(tmp_path / "ha", dad=False)
        config["authentication"] = "disabled"
        del config["keys_file"]
        with AgentProcess(topo.ns["ha"], tmp_path / "ha", config) as ha:
            assert ha.call("status")["role"] == "ha"
        assert "WARNING" in ha.log.read_text() and "authentication" in ha.log.read_text()


def test_reload_applies_keys_at_once_and_says_what_changed(tmp_path: Path) -> None:
    """SIGHUP with mn1's key gone and another added: mn1's binding and route go at once,
    its next BU is refused, and status / mip6stat -i name what changed."""
    with (
        Topology(mn_link="foreign1") as topo,
        AgentProcess(topo.ns["ha"], tmp_path / "ha", ha_config(tmp_path / "ha", dad=False)) as ha,
        AgentProcess(topo.ns["mn"], tmp_path / "mn", mn_config(tmp_path / "mn")) as mn,
    ):
        wait_until(lambda: binding_coa(ha) == str(topo.coa), what="registration")
        assert ha.call("status")["config_generation"] == 1
        keys = Path(ha.config["keys_file"])
        keys.write_text(
            yaml.safe_dump({"mobile_nodes": {"other@example.net": {"spi": 4321, "key": "ab" * 20}}})
        )
        assert ha.proc is not None
        ha.proc.send_signal(signal.SIGHUP)
        status = wait_until(
            lambda: (s := ha.call("status"))["config_generation"] == 2 and s,
            what="the reload",
        )
        reload = status["last_reload"]
        assert reload["keys_removed"] == ["mn1@example.net"]
        assert reload["keys_added"] == ["other@example.net"]
        assert reload["keys_changed"] == [] and reload["bindings_removed"] == 1
        assert binding_coa(ha) is None
        wait_until(
            lambda: str(HOA) not in topo.ip("ha", "-6", "route", "show", "table", "all"),
            what="the revoked binding's route to go",
        )
        # The mobile node keeps trying with its old key: refused with 146 (MIPV6-AUTH-FAIL).
        mn.call("clear-bul")
        mn.call("enable")
        wait_until(
            lambda: ha.call("counters").get("ba_out.146_mipv6_auth_fail", 0) >= 1,
            what="a refused BU",
        )
        assert binding_coa(ha) is None
        shown = cli("mip6stat", "-S", ha.socket, "-i")
        assert shown.returncode == 0, shown.stderr
        line = next(x for x in shown.stdout.splitlines() if "last_reload.keys_removed" in x)
        assert "mn1@example.net" in line
        assert "configuration reloaded (generation 2): keys added 1" in ha.log.read_text()


NETNS_EXEC = ("ip", "netns", "exec")


def _known_senders(topo: Topology) -> set[str]:
    out = topo.run("ha", "nft", "-j", "list", "set", "inet", "mip6agent", "known_senders")
    found: set[str] = set()
    for item in json.loads(out.stdout)["nftables"]:
        if "set" in item:
            found.update(e for e in item["set"].get("elem", []) if isinstance(e, str))
    return found


def test_kernel_admission_follows_the_bindings(tmp_path: Path) -> None:
    """The home agent's nftables set of known senders holds exactly its bindings' CoAs, and
    their Binding Updates are counted as admitted; deregistration takes the CoA out."""
    config = ha_config(tmp_path / "ha", dad=False, unknown_sender_rate=50)
    with (
        Topology(mn_link="foreign1") as topo,
        AgentProcess(topo.ns["ha"], tmp_path / "ha", config) as ha,
        AgentProcess(
            topo.ns["mn"], tmp_path / "mn", mn_config(tmp_path / "mn", home_registration_lifetime=8)
        ) as mn,
    ):
        wait_until(lambda: binding_coa(ha) == str(topo.coa), what="registration")
        wait_until(lambda: _known_senders(topo) == {str(topo.coa)}, what="the CoA in the set")
        chain = topo.run("ha", "nft", "list", "chain", "inet", "mip6agent", "input").stdout
        assert "limit rate over 50/second" in chain
        # A refresh (lifetime 8 s: the MN refreshes within it) passes as a known sender.
        wait_until(
            lambda: ha.call("counters").get("admission.admitted_known", 0) >= 1,
            deadline=20,
            what="a refresh admitted as known",
        )
        # A reload with another rate makes the table anew: the set is filled again.
        ha.call("set-config", config={"home_agent": {"unknown_sender_rate": 70}}, merge=True)
        chain = topo.run("ha", "nft", "list", "chain", "inet", "mip6agent", "input").stdout
        assert "limit rate over 70/second" in chain
        wait_until(lambda: _known_senders(topo) == {str(topo.coa)}, what="the set refilled")
        mn.call("clear-bul")  # deregisters
        wait_until(lambda: binding_coa(ha) is None, what="deregistration")
        wait_until(lambda: _known_senders(topo) == set(), what="the CoA out of the set")


@pytest.mark.parametrize("defect", ["missing_interface", "control_socket"])
def test_start_up_failure_is_refused_before_the_kernel_is_touched(
    tmp_path: Path, defect: str
) -> None:
    """A live binding of another agent (other state_dir) on the home link survives an agent
    that cannot start: it exits 1 with a message, no traceback, nothing reconciled."""
    with Topology(mn_link="foreign1") as topo:
        with (
            AgentProcess(topo.ns["ha"], tmp_path / "ha", ha_config(tmp_path / "ha", dad=False)),
            AgentProcess(topo.ns["mn"], tmp_path / "mn", mn_config(tmp_path / "mn")) as mn,
        ):
            wait_until(lambda: bul_state(mn) == "registered", what="registration")
        before = topo.ip("ha", "-6", "route", "show", "table", "all")
        assert str(HOA) in before
        config = ha_config(tmp_path / "other", dad=False)
        config["state_dir"] = str(tmp_path / "other" / "state")  # an empty cache
        if defect == "missing_interface":
            config["home_agent"]["interfaces"] = ["eth0", "nope0"]
            expected = "interface nope0 does not exist"
        else:
            blocker = tmp_path / "not-a-directory"
            blocker.write_text("")
            config["control_socket"] = str(blocker / "agent.sock")
            expected = "control_socket directory"
        path = tmp_path / "other.yml"
        path.write_text(yaml.safe_dump(config))
        agent = (sys.executable, "-m", "mip6agent.cli.mip6agent", "--config", str(path))
        result = subprocess.run(
            [*NETNS_EXEC, topo.ns["ha"], *agent],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1, result.stderr
        assert expected in result.stderr and "Traceback" not in result.stderr
        assert topo.ip("ha", "-6", "route", "show", "table", "all") == before


def test_mip6config_route_optimization_flags_on_a_correspondent(tmp_path: Path) -> None:
    """-r, -q and -w as KAME meant them: -w is a percentage of the binding lifetime left,
    of the 420 s correspondent binding lifetime (RFC 6275 MAX_RR_BINDING_LIFETIME)."""
    with (
        Topology(mn_link="foreign1") as topo,
        AgentProcess(topo.ns["cn"], tmp_path / "cn", {"role": "cn"}) as cn,
    ):
        sock = ["-S", cn.socket]

        def section() -> dict:
            return json.loads(cli("mip6config", *sock, "-n").stdout)["correspondent_node"]

        assert cli("mip6config", *sock, "-r", "1", "-w", "60").returncode == 0
        assert section()["route_optimization"] is True
        assert section()["binding_refresh_request_before"] == 252  # 60 % of 420 s
        assert cli("mip6config", *sock, "-w", "10").returncode == 0
        assert section()["binding_refresh_request_before"] == 42
        assert cli("mip6config", *sock, "-q", "0").returncode == 0
        assert section()["binding_refresh_request_before"] is None
        assert cli("mip6config", *sock, "-q", "1").returncode == 0  # KAME's default, 60 %
        assert section()["binding_refresh_request_before"] == 252
        for argv, words in (
            (["-w", "0"], "1 to 99"),
            (["-w", "100"], "1 to 99"),
            (["-q", "0", "-w", "50"], "-q 0 turns them off"),
        ):
            bad = cli("mip6config", *sock, *argv)
            assert bad.returncode == 2 and words in bad.stderr and "Traceback" not in bad.stderr
        assert section()["binding_refresh_request_before"] == 252  # nothing was sent
        assert cli("mip6config", *sock, "-r", "0").returncode == 0
        assert section()["route_optimization"] is False
        assert cn.call("status")["route_optimization"]["configured"] is False
