"""The collection's modules, run by ansible-playbook, against real agents in namespaces.

Each playbook runs inside a node's network namespace (``ip netns exec``) with connection
local, the collection found through a temporary ``ansible_collections/mobileip/mipv6``
symlink to the repository, and a small callback plugin that writes every task result as a
JSON line, so the tests read what the modules returned rather than parse screen output.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from agents import AgentProcess, wait_until
from test_agent_integration import HOA, binding_coa, bul_state, ha_config, mn_config
from topology import Topology

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

REPO = Path(__file__).resolve().parents[2]
PROBE_TABLE = "1835626595"  # mip6_capabilities' throwaway routing table

CALLBACK = '''
import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    """Append every task result to $MIP6_RESULTS as one JSON line."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "mip6_results"
    CALLBACK_NEEDS_ENABLED = True

    def _write(self, result, status):
        task = getattr(result, "task", None) or result._task
        data = result.result if hasattr(type(result), "result") else result._result
        line = {"task": task.get_name(), "status": status, "result": dict(data)}
        with open(os.environ["MIP6_RESULTS"], "a") as handle:
            handle.write(json.dumps(line, default=str) + "\\n")

    def v2_runner_on_ok(self, result):
        self._write(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._write(result, "failed")
'''


def ansible_playbook() -> str:
    """The ansible-playbook next to this Python, in the repository's venv, or the tool venv."""
    candidates = [
        Path(sys.executable).parent / "ansible-playbook",
        REPO / ".venv" / "bin" / "ansible-playbook",
        Path("/tmp/ansv/bin/ansible-playbook"),
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("ansible-playbook")
    if found:
        return found
    pytest.fail(
        "ansible-playbook not found: the module tests need ansible-core installed "
        f"(pip install -c constraints.txt ansible-core into {REPO / '.venv'}); looked in "
        + ", ".join(str(c) for c in candidates)
        + " and PATH"
    )


@dataclass
class PlayResult:
    returncode: int
    stdout: str
    stderr: str
    tasks: dict[str, dict[str, Any]]

    def __getitem__(self, task: str) -> dict[str, Any]:
        if task not in self.tasks:
            raise AssertionError(
                f"no result for task {task!r}; got {sorted(self.tasks)}\n{self.stdout}\n"
                f"{self.stderr}"
            )
        return self.tasks[task]


class Ansible:
    """Runs one-play playbooks on localhost inside a topology node."""

    def __init__(self, directory: Path, topology: Topology) -> None:
        self.directory = directory
        self.topology = topology
        self.binary = ansible_playbook()
        collections = directory / "collections"
        (collections / "ansible_collections" / "mobileip").mkdir(parents=True)
        (collections / "ansible_collections" / "mobileip" / "mipv6").symlink_to(REPO)
        plugins = directory / "callback_plugins"
        plugins.mkdir()
        (plugins / "mip6_results.py").write_text(CALLBACK)
        config = directory / "ansible.cfg"
        config.write_text("[defaults]\n")
        (directory / "tmp").mkdir()
        self.env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(config),
            "ANSIBLE_COLLECTIONS_PATH": str(collections),
            "ANSIBLE_CALLBACK_PLUGINS": str(plugins),
            "ANSIBLE_CALLBACKS_ENABLED": "mip6_results",
            "ANSIBLE_LOCAL_TEMP": str(directory / "tmp"),
            "ANSIBLE_REMOTE_TEMP": str(directory / "tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_DEPRECATION_WARNINGS": "0",
        }
        self.count = 0

    def play(self, node: str, tasks: list[dict[str, Any]], *flags: str) -> PlayResult:
        self.count += 1
        playbook = self.directory / f"play{self.count}.yml"
        results = self.directory / f"results{self.count}.jsonl"
        playbook.write_text(
            yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}])
        )
        argv = [
            "ip",
            "netns",
            "exec",
            self.topology.ns[node],
            self.binary,
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            str(playbook),
            *flags,
        ]
        proc = subprocess.run(
            argv,
            env={**self.env, "MIP6_RESULTS": str(results)},
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=120,
        )
        tasks_out: dict[str, dict[str, Any]] = {}
        if results.exists():
            for line in results.read_text().splitlines():
                record = json.loads(line)
                tasks_out[record["task"]] = {**record["result"], "_status": record["status"]}
        return PlayResult(proc.returncode, proc.stdout, proc.stderr, tasks_out)


@dataclass
class Lab:
    topology: Topology
    ha: AgentProcess
    mn: AgentProcess
    ansible: Ansible


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("modules")
    ha_dir, mn_dir = base / "ha", base / "mn"
    with (
        Topology(mn_link="foreign1") as topo,
        AgentProcess(topo.ns["ha"], ha_dir, ha_config(ha_dir, dad=False, preference=10)) as ha,
        AgentProcess(topo.ns["mn"], mn_dir, mn_config(mn_dir)) as mn,
    ):
        wait_until(lambda: binding_coa(ha) == str(topo.coa), what="registration")
        yield Lab(topo, ha, mn, Ansible(base / "ansible", topo))


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ansible]:
    """The topology without agents: for modules that need none (mip6_capabilities)."""
    with Topology(mn_link="foreign1") as topo:
        yield Ansible(tmp_path_factory.mktemp("bare") / "ansible", topo)


def config_task(name: str, **args: Any) -> dict[str, Any]:
    return {"name": name, "mobileip.mipv6.mip6_config": args}


def test_config_changes_ha_preference_idempotently(lab: Lab) -> None:
    sock = lab.ha.socket
    run = lab.ansible.play(
        "ha",
        [
            config_task("set", socket=sock, role="ha", preference=20),
            config_task("again", socket=sock, role="ha", preference=20),
        ],
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run["set"]["changed"] is True
    assert run["set"]["config"]["home_agent"]["preference"] == 20
    assert run["again"]["changed"] is False and run["again"]["commands"] == []
    assert lab.ha.call("show-config")["home_agent"]["preference"] == 20

    preview = lab.ansible.play(
        "ha", [config_task("preview", socket=sock, role="ha", preference=30)], "--check", "--diff"
    )
    assert preview.returncode == 0, preview.stdout + preview.stderr
    assert preview["preview"]["changed"] is True
    assert "-  preference: 20" in preview.stdout and "+  preference: 30" in preview.stdout
    assert f"--- before: {sock}" in preview.stdout
    assert lab.ha.call("show-config")["home_agent"]["preference"] == 20, "check mode applied"
    assert binding_coa(lab.ha) == str(lab.topology.coa), "bindings survive the change"


def test_config_on_the_mobile_node_and_role_errors(lab: Lab) -> None:
    sock = lab.mn.socket
    run = lab.ansible.play(
        "mn",
        [
            config_task(
                "lifetimes",
                socket=sock,
                role="mn",
                home_registration_lifetime=600,
                bu_lifetime=200,
            ),
            config_task(
                "lifetimes again",
                socket=sock,
                role="mn",
                home_registration_lifetime=600,
                bu_lifetime=200,
            ),
            {**config_task("wrong role", socket=lab.ha.socket, role="mn"), "ignore_errors": True},
            {
                **config_task("mn option on ha", socket=lab.ha.socket, role="ha", bu_lifetime=9),
                "ignore_errors": True,
            },
            {
                **config_task("refused", socket=sock, role="mn", bu_lifetime=1000),
                "ignore_errors": True,
            },
            {"name": "bul", "mobileip.mipv6.mip6_stat": {"socket": sock, "gather": ["bul"]}},
        ],
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run["lifetimes"]["changed"] is True
    assert run["lifetimes again"]["changed"] is False
    node = lab.mn.call("show-config")["mobile_node"]
    assert node["home_registration_lifetime"] == 600 and node["bu_lifetime"] == 200

    wrong = run["wrong role"]
    assert wrong["_status"] == "failed"
    assert wrong["msg"].startswith(
        f"the agent on {lab.ha.socket} runs as ha (home agent), not mn (mobile node)"
    )
    early = run["mn option on ha"]
    assert early["_status"] == "failed"
    assert early["msg"] == (
        "bu_lifetime is a mobile node option (role mn); this task has role ha (home agent)"
    )
    refused = run["refused"]
    assert refused["_status"] == "failed" and "mobile_node.bu_lifetime" in refused["msg"]
    assert lab.mn.call("show-config")["mobile_node"]["bu_lifetime"] == 200
    assert run["bul"]["ansible_facts"]["mip6"]["bul"][0]["home_address"] == str(HOA)
    assert bul_state(lab.mn) == "registered"


def test_stat_gathers_bindings_and_clears_counters(lab: Lab) -> None:
    sock = lab.ha.socket
    assert lab.ha.call("counters").get("mh_in.bu", 0) >= 1
    run = lab.ansible.play(
        "ha",
        [
            {"name": "gather", "mobileip.mipv6.mip6_stat": {"socket": sock}},
            {
                "name": "clear",
                "mobileip.mipv6.mip6_stat": {"socket": sock, "clear": ["counters"]},
            },
            {
                "name": "clear again",
                "mobileip.mipv6.mip6_stat": {"socket": sock, "clear": ["counters"]},
            },
            {
                "name": "facts are set",
                "ansible.builtin.assert": {
                    "that": ["ansible_facts.mip6.bindings | length == 1"],
                },
            },
        ],
    )
    assert run.returncode == 0, run.stdout + run.stderr
    facts = run["gather"]["ansible_facts"]["mip6"]
    assert set(facts) == {"bindings", "home_agents", "counters", "status"}
    assert facts["status"]["role"] == "ha"
    assert facts["status"]["lists"] == ["bindings", "home_agents", "counters"]
    assert facts["bindings"][0]["home_address"] == str(HOA)
    assert facts["bindings"][0]["care_of_address"] == str(lab.topology.coa)
    assert facts["counters"]["mh_in.bu"] >= 1
    assert run["gather"]["changed"] is False
    assert run["clear"]["changed"] is True and run["clear"]["cleared"] == ["counters"]
    assert not any(k.startswith("mh_in") for k in run["clear"]["ansible_facts"]["mip6"]["counters"])
    assert run["clear again"]["changed"] is False
    assert binding_coa(lab.ha) == str(lab.topology.coa), "clearing counters kept the binding"


def _kernel_config() -> dict[str, str]:
    try:
        with gzip.open("/proc/config.gz", "rt") as handle:
            text = handle.read()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        if match := re.match(r"^(CONFIG_\w+)=(.*)$", line):
            values[match.group(1)] = match.group(2)
        elif match := re.match(r"^# (CONFIG_\w+) is not set$", line):
            values[match.group(1)] = "n"
    return values


def test_capabilities_match_the_kernel_config(bare: Ansible) -> None:
    # The probe needs no agent (the kernel may have no data plane for one): none runs.
    run = bare.play(
        "cn",
        [
            {"name": "probe", "mobileip.mipv6.mip6_capabilities": {}},
            {
                "name": "probe in check mode",
                "mobileip.mipv6.mip6_capabilities": {},
                "check_mode": True,
            },
        ],
    )
    assert run.returncode == 0, run.stdout + run.stderr
    caps = run["probe"]["ansible_facts"]["mip6_capabilities"]
    assert run["probe"]["changed"] is False
    checked = run["probe in check mode"]["ansible_facts"]["mip6_capabilities"]
    assert {k: checked[k] for k in ("seg6", "ip6tnl", "esp", "mip6")} == {
        k: caps[k] for k in ("seg6", "ip6tnl", "esp", "mip6")
    }
    assert caps["raw_mh"] is True
    assert caps["nftables"] is (shutil.which("nft") is not None)
    assert caps["radvd"] is (shutil.which("radvd") is not None)

    kernel = _kernel_config()
    if not kernel:
        pytest.skip("no /proc/config.gz to compare with")
    expected = {
        "seg6": kernel.get("CONFIG_IPV6_SEG6_LWTUNNEL"),
        "ip6tnl": kernel.get("CONFIG_IPV6_TUNNEL"),
        "esp": kernel.get("CONFIG_INET6_ESP"),
        "mip6": kernel.get("CONFIG_IPV6_MIP6"),
    }
    for name, value in expected.items():
        if value == "y":
            assert caps[name] is True, f"{name}: {caps['reasons'][name]}"
        elif value in ("n", None):
            assert caps[name] is False, f"{name}: {caps['reasons'][name]}"
        # "m": loadable, either answer can be right
    if expected["seg6"] == "y":
        assert caps["dataplane"] == "seg6"
    elif expected["ip6tnl"] in ("n", None) and kernel.get("CONFIG_LWTUNNEL_BPF") == "y":
        # Neither tunnel built in: the eBPF tunnel, where clang and bpftool are installed.
        tools = shutil.which("clang") and shutil.which("bpftool")
        assert caps["bpf"] is bool(tools), caps["reasons"]["bpf"]
        assert caps["dataplane"] == ("bpf" if tools else None)
    if expected["esp"] == "n":
        assert "Requested type not found" in caps["reasons"]["esp"]

    # every throwaway object is gone
    node = bare.topology
    routes = node.run("cn", "ip", "-6", "route", "show", "table", PROBE_TABLE)
    assert routes.stdout.strip() == "", "a probe route is left"  # (no table at all is fine)
    assert PROBE_TABLE not in node.ip("cn", "-6", "rule", "show")
    assert "m6cap" not in node.ip("cn", "link", "show")
    assert node.run("cn", "ip", "xfrm", "state", "list").stdout.strip() == ""
