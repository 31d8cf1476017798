"""The collection's roles, inventories and playbooks, without changing this machine.

- ``ansible-playbook --syntax-check`` of every playbook against both inventories;
- the roles' validation: plays that apply each role with bad variables to local hosts in
  check mode fail with one message naming the variable and the host;
- agent.yml and keys.yml rendered for every host of both inventories (site.yml with
  ``mip6_validate_only``, keeping the preflight's files), checked with the real agent
  validator (``python -m mip6agent.cli.mip6agent --config FILE --check``);
- the roles' activation (``mobileip.mipv6.mip6_config``) against real agents in network
  namespaces started from those files: nothing to change, then a change, then nothing;
- the role variables map 1:1, with the same defaults, onto the agent configuration schema;
- the wheelhouse is built on this controller (PyPI) and installed offline into a venv by
  the role's own tasks, twice (the second run changes nothing);
- the stats playbook writes its report; ansible-lint's production profile is clean.

The slow ansible runs start together when the module starts (``background``) and share
the cores. Applying the whole roles to real hosts (packages, services, sysctls, radvd,
idempotence of a full second run) is the Molecule lab's job (docs/roles.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from dataplane_probe import require_dataplane

REPO = Path(__file__).resolve().parents[2]
ROLES = ("agent", "ha", "mn", "cn")
PLAYBOOKS = ("site.yml", "stats.yml")
INVENTORIES = {
    "lab": REPO / "inventories/lab/hosts.yml",
    "example": REPO / "inventories/example/hosts.yml",
}
# The documented throwaway password of the example vault (inventories/example/README.md).
EXAMPLE_VAULT_PASSWORD = "example-only-not-a-secret"
# Playbooks and roles call these modules; a test that runs them needs the module file.
MODULES = ("mip6_config", "mip6_stat", "mip6_capabilities")
AGENT_PYTHON = REPO / ".venv/bin/python"


def ansible_bin(name: str) -> Path:
    """The ansible tool: the project venv's, else /tmp/ansv's (see the module docstring)."""
    for directory in (REPO / ".venv/bin", Path("/tmp/ansv/bin")):
        if (directory / name).exists():
            return directory / name
    pytest.fail(
        f"{name} not found in {REPO / '.venv/bin'} or /tmp/ansv/bin: install ansible-core "
        "and ansible-lint (pinned in constraints.txt) into the project venv (make venv)"
    )


def require_modules(*names: str) -> None:
    missing = [n for n in names if not (REPO / f"plugins/modules/{n}.py").exists()]
    if missing:
        pytest.skip(f"modules not written yet: {', '.join(missing)}")


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for ansible: the collection found through a symlink tree outside the repo."""
    root = tmp_path_factory.mktemp("collections")
    (root / "ansible_collections/mobileip").mkdir(parents=True)
    (root / "ansible_collections/mobileip/mipv6").symlink_to(REPO)
    vault = root / "example-vault-pass"
    vault.write_text(EXAMPLE_VAULT_PASSWORD + "\n")
    vault.chmod(0o600)
    bindir = ansible_bin("ansible-playbook").parent
    return {
        **os.environ,
        "PATH": f"{bindir}:{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(root),
        "ANSIBLE_VAULT_PASSWORD_FILE": str(vault),
        "ANSIBLE_LOCAL_TEMP": str(root / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
    }


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files of the background runs: inventories, plays, rendered configurations, reports."""
    return tmp_path_factory.mktemp("roles")


@pytest.fixture(scope="module", autouse=True)
def background(request: pytest.FixtureRequest, env: dict[str, str], work: Path):
    """Start every slow, independent ansible run (syntax checks, the validation play, the
    site.yml renders, the stats play, ansible-lint) that the selected tests need before any
    test runs, so that they share the machine's cores; each test collects its result."""
    selected = {getattr(item, "originalname", item.name) for item in request.session.items}
    runs = Background()
    for job in JOBS:
        if selected & job.tests:
            job.start(runs, env, work)
    yield runs
    runs.stop()


def local_vars(bindir: Path) -> list[str]:
    """Extra vars that turn every inventory host into this machine, unprivileged."""
    return [
        "-e",
        "ansible_connection=local",
        "-e",
        f"ansible_python_interpreter={bindir / 'python'}",
        "-e",
        "ansible_become=false",
    ]


def playbook_command(env: dict[str, str], *args: str) -> tuple[list[str], dict[str, str]]:
    """ansible-playbook with the default callback printing results as one-line JSON."""
    run_env = {
        **env,
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
        "ANSIBLE_CALLBACK_FORMAT_PRETTY": "false",
        "ANSIBLE_DISPLAY_SKIPPED_HOSTS": "false",
        "ANSIBLE_DISPLAY_OK_HOSTS": "true",
    }
    return [str(ansible_bin("ansible-playbook")), *args], run_env


def playbook(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    command, run_env = playbook_command(env, *args)
    return subprocess.run(
        command, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=300
    )


class Background:
    """Slow, independent commands started together at the beginning of the module, so that
    they overlap with the other tests; a test collects its result with result(name)."""

    def __init__(self) -> None:
        self.processes: dict[str, tuple[list[str], subprocess.Popen]] = {}

    def start(self, name: str, command: list[str], run_env: dict[str, str]) -> None:
        process = subprocess.Popen(
            command, cwd=REPO, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.processes[name] = (command, process)

    def result(self, name: str) -> subprocess.CompletedProcess:
        command, process = self.processes[name]
        stdout, stderr = process.communicate(timeout=300)
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)

    def stop(self) -> None:
        for _, process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.communicate()


class Job:
    """A background run: the tests that read it and how to start it."""

    def __init__(self, tests: set[str], start) -> None:
        self.tests = tests
        self.start = start


FAILED = re.compile(r"^(?:fatal|failed): \[([^\]]+?)(?: -> [^\]]+)?\]: FAILED! => (\{.*\})$")
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


def failures(result: subprocess.CompletedProcess) -> dict[str, list[str]]:
    """Host -> the messages of its failed tasks."""
    out: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        m = FAILED.match(line)
        if m:
            res = json.loads(m.group(2))
            out.setdefault(m.group(1), []).append(str(res.get("msg", res)))
    return out


def recap(result: subprocess.CompletedProcess) -> dict[str, dict[str, int]]:
    """Host -> ok, changed, unreachable, failed counts of the PLAY RECAP."""
    out = {}
    for line in result.stdout.splitlines():
        m = RECAP.match(line)
        if m:
            out[m.group(1)] = dict(
                zip(
                    ("ok", "changed", "unreachable", "failed"),
                    map(int, m.groups()[1:]),
                    strict=True,
                )
            )
    return out


# --- syntax ---------------------------------------------------------------------------------


def start_syntax(runs: Background, env: dict[str, str], work: Path) -> None:
    paths = [str(REPO / "playbooks" / p) for p in PLAYBOOKS]
    for name, inventory in INVENTORIES.items():
        runs.start(
            f"syntax-{name}", *playbook_command(env, "--syntax-check", "-i", str(inventory), *paths)
        )


@pytest.mark.parametrize("inventory", sorted(INVENTORIES))
def test_playbooks_syntax(background: Background, inventory: str) -> None:
    require_modules(*MODULES)
    result = background.result(f"syntax-{inventory}")
    assert result.returncode == 0, result.stdout + result.stderr
    for p in PLAYBOOKS:
        assert f"playbook: {REPO / 'playbooks' / p}" in result.stdout


# --- validation -----------------------------------------------------------------------------

KEY = "00112233445566778899aabbccddeeff00112233"
GOOD_KEYS = {"mn-good@test.example": {"spi": 1001, "key": KEY}}
HA_GOOD = {
    "mip6_ha_interfaces": ["eth0"],
    "mip6_ha_home_prefixes": ["2001:db8:1::/64"],
    "mip6_ha_address": "2001:db8:1::1",
    "mip6_agent_keys": GOOD_KEYS,
    "mip6_ha_mobile_node_group": "no_such_group",
}
MN_GOOD = {
    "mip6_mn_interfaces": ["eth0"],
    "mip6_mn_home_addresses": [
        {"address": "2001:db8:1::100/64", "interface": "eth0", "home_agent": "2001:db8:1::1"}
    ],
    "mip6_mn_nai": "mn-good@test.example",
    "mip6_agent_keys": GOOD_KEYS,
}

# host -> (role, variables, groups, the strings the failure message must contain);
# every message must also name the host. None: the host passes.
CASES: dict[str, tuple[str, dict, list[str], list[str] | None]] = {
    "ha-good": ("ha", {}, [], None),
    "ha-min-interval": (
        "ha",
        {"mip6_ha_ra_min_interval": 2.5, "mip6_ha_ra_max_interval": 3},
        [],
        [
            "mip6_ha_ra_min_interval (MinRtrAdvInterval) is 2.5 s",
            "0.75 x mip6_ha_ra_max_interval = 2.25 s",
        ],
    ),
    "ha-max-interval": (
        "ha",
        {"mip6_ha_ra_max_interval": 0.05, "mip6_ha_ra_min_interval": 0.03},
        [],
        ["mip6_ha_ra_max_interval (MaxRtrAdvInterval) is 0.05 s"],
    ),
    "ha-default-lifetime": (
        "ha",
        {"mip6_ha_ra_default_lifetime": 1},
        [],
        ["mip6_ha_ra_default_lifetime (AdvDefaultLifetime) is 1 s", "max(1 s"],
    ),
    "ha-min-delay": (
        "ha",
        {"mip6_ha_ra_min_delay_between_ras": 0.01},
        [],
        ["mip6_ha_ra_min_delay_between_ras (MinDelayBetweenRAs) is 0.01 s"],
    ),
    "ha-prefix-lifetimes": (
        "ha",
        {"mip6_ha_ra_prefix_valid_lifetime": 600, "mip6_ha_ra_prefix_preferred_lifetime": 900},
        [],
        ["mip6_ha_ra_prefix_preferred_lifetime (900 s) is longer than mip6_ha_ra_prefix_valid"],
    ),
    "ha-radvd-router-address": (
        "ha",
        {"mip6_ha_home_prefixes": ["2001:db8:2::/64", "2001:db8:1::/64"]},
        [],
        ["router_address", "2001:db8:1::1"],
    ),
    "ha-ipsec-missing": ("ha", {"mip6_ha_ipsec": True}, [], ["mip6_ipsec_home_agent_address"]),
    "ha-also-mn": (
        "ha",
        {"mip6_ha_mobile_node_group": "mobile_nodes"},
        ["mobile_nodes"],
        ["a home agent (mip6_ha_interfaces) cannot also be a mobile node", "group mobile_nodes"],
    ),
    "ha-mn-vars": (
        "ha",
        {"mip6_mn_home_prefix": "2001:db8:1::/64"},
        [],
        ["cannot also be a mobile node", "it sets mip6_mn_home_prefix"],
    ),
    "ha-no-keys": (
        "ha",
        {"mip6_agent_keys": {}},
        [],
        ["mip6_agent_keys is empty", 'mip6_agent_authentication is "required"'],
    ),
    "ha-fleet-key": (
        "ha",
        {"mip6_ha_mobile_node_group": "fleet"},
        [],
        ["mip6_agent_keys has no key for mobile node fleet-mn (mip6_mn_nai fleet-mn@test.example)"],
    ),
    "ha-no-address": ("ha", {"mip6_ha_address": None}, [], ["mip6_ha_address is not set"]),
    "ha-host-bits": (
        "ha",
        {"mip6_ha_home_prefixes": ["2001:db8:1::1/64"]},
        [],
        ["mip6_ha_home_prefixes[0] (home_agent.home_prefixes[0])"],
    ),
    "ha-preference-range": (
        "ha",
        {"mip6_ha_preference": 70000},
        [],
        ["mip6_ha_preference (home_agent.preference)"],
    ),
    "ha-preference-type": ("ha", {"mip6_ha_preference": "high"}, [], ["mip6_ha_preference"]),
    "ha-bad-address": (
        "ha",
        {"mip6_ha_address": "2001:db8:1::zz"},
        [],
        ["mip6_ha_address (home_agent.address)"],
    ),
    "mn-good": ("mn", {}, [], None),
    "mn-malformed": (
        "mn",
        {"mip6_mn_home_addresses": [{"address": "2001:db8::zz/64", "interface": "eth0"}]},
        [],
        [
            "mip6_mn_home_addresses[0].address (mobile_node.home_addresses[0].address)",
            "2001:db8::zz/64",
        ],
    ),
    "mn-two-ways": (
        "mn",
        {"mip6_mn_home_prefix": "2001:db8:1::/64"},
        [],
        ["mip6_mn_home_addresses (-H) and mip6_mn_home_prefix (-P)", "exactly one"],
    ),
    "mn-no-way": (
        "mn",
        {"mip6_mn_home_addresses": []},
        [],
        ["no home address", "mip6_mn_autoconfigure"],
    ),
    "mn-no-nai": (
        "mn",
        {"mip6_mn_nai": None},
        [],
        ["mip6_mn_nai is not set", 'mip6_agent_authentication is "required"'],
    ),
    "mn-no-key": (
        "mn",
        {"mip6_mn_nai": "other@test.example"},
        [],
        ["mip6_agent_keys has no key for mip6_mn_nai other@test.example"],
    ),
    "mn-also-ha": (
        "mn",
        {"mip6_ha_interfaces": ["eth0"]},
        [],
        ["a mobile node cannot also be a home agent", "mip6_ha_interfaces"],
    ),
    "mn-in-ha-group": (
        "mn",
        {},
        ["home_agents"],
        ["a mobile node cannot also be a home agent", "group home_agents"],
    ),
    "mn-lifetime": (
        "mn",
        {"mip6_mn_home_registration_lifetime": 2},
        [],
        ["mip6_mn_home_registration_lifetime (mobile_node.home_registration_lifetime)"],
    ),
    "mn-short-key": (
        "mn",
        {"mip6_agent_keys": {"mn-good@test.example": {"spi": 1001, "key": "0011223344"}}},
        [],
        ['mip6_agent_keys["mn-good@test.example"].key (keys file)', "at least 16"],
    ),
    "mn-suboption": (
        "mn",
        {
            "mip6_mn_home_addresses": [
                {
                    "address": "2001:db8:1::100/64",
                    "interface": "eth0",
                    "hoem_agent": "2001:db8:1::1",
                }
            ]
        },
        [],
        ["mip6_mn_home_addresses", "hoem_agent"],
    ),
    "mn-eager": (
        "mn",
        {"mip6_mn_eager_movement_detection": 3},
        [],
        ["mip6_mn_eager_movement_detection"],
    ),
    "cn-good": ("cn", {}, [], None),
    "cn-in-group": (
        "cn",
        {},
        ["home_agents"],
        ["it is in group home_agents", "mip6_cn_conflicting_groups"],
    ),
    "cn-brr": (
        "cn",
        {"mip6_cn_binding_refresh_request_before": 500},
        [],
        ["mip6_cn_binding_refresh_request_before (correspondent_node.binding_refresh_request_"],
    ),
}
# Failures of the roles' argument specifications: Ansible's own message names the variable;
# the host is the one of the "fatal: [host]" line.
SPEC_CASES = {"ha-preference-type", "mn-suboption", "mn-eager", "ha-ipsec-missing"}


def validation_inventory(bindir: Path) -> dict:
    hosts: dict[str, dict] = {}
    groups: dict[str, dict] = {"fleet": {"hosts": {"fleet-mn": {}}}}
    for host, (role, variables, member_of, _) in CASES.items():
        base = {"ha": HA_GOOD, "mn": MN_GOOD, "cn": {}}[role]
        hosts[host] = {**base, **variables, "test_role": role}
        for group in member_of:
            groups.setdefault(group, {"hosts": {}})["hosts"][host] = {}
    hosts["fleet-mn"] = {"mip6_mn_nai": "fleet-mn@test.example"}
    hosts["dual"] = {}
    return {
        "all": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": str(bindir / "python"),
                "mip6_validate_only": True,
            },
            "hosts": hosts,
            "children": groups,
        }
    }


VALIDATION_PLAY = [
    {
        "name": f"Apply the {role} role",
        "hosts": f"{role}-*",
        "gather_facts": False,
        "tasks": [
            {
                "name": f"Role {role}",
                "ansible.builtin.include_role": {"name": f"mobileip.mipv6.{role}"},
            }
        ],
    }
    for role in ("ha", "mn", "cn")
] + [
    {
        "name": "Two roles on one host in one play",
        "hosts": "dual",
        "gather_facts": False,
        "tasks": [
            {
                "name": f"Agent preflight as {role}",
                "ansible.builtin.include_role": {
                    "name": "mobileip.mipv6.agent",
                    "tasks_from": "preflight",
                },
                "vars": {"mip6_agent_role": role, "mip6_agent_preflight": False},
            }
            for role in ("ha", "mn")
        ],
    }
]


def start_validation(runs: Background, env: dict[str, str], work: Path) -> None:
    bindir = ansible_bin("ansible-playbook").parent
    inventory = work / "validation-hosts.yml"
    inventory.write_text(yaml.safe_dump(validation_inventory(bindir)))
    play = work / "validation.yml"
    play.write_text(yaml.safe_dump(VALIDATION_PLAY, sort_keys=False))
    runs.start("validation", *playbook_command(env, "-i", str(inventory), "--check", str(play)))


def test_validation_names_variable_and_host(background: Background) -> None:
    result = background.result("validation")
    failed = failures(result)
    problems = []
    for host, (_, _, _, expected) in CASES.items():
        got = failed.get(host)
        if expected is None:
            if got:
                problems.append(f"{host} should pass: {got}")
            continue
        if not got:
            problems.append(f"{host} should fail with {expected}")
            continue
        message = got[-1]
        wanted = expected if host in SPEC_CASES else [host, *expected]
        missing = [s for s in wanted if s not in message]
        if missing:
            problems.append(f"{host}: {missing} not in {message!r}")
        if len(got) != 1:
            problems.append(f"{host}: more than one failure {got}")
    dual = failed.get("dual", [])
    if not (
        len(dual) == 1 and "already applied the agent with role ha" in dual[0] and "dual" in dual[0]
    ):
        problems.append(f"dual: {dual}")
    assert not problems, "\n".join(problems) + "\n" + result.stderr[-3000:]


# --- agent.yml and keys.yml for every host of both inventories ------------------------------

AGENT_GROUPS = {"home_agents": "ha", "mobile_nodes": "mn", "correspondents": "cn"}


def inventory_groups(env: dict[str, str], inventory: Path) -> dict[str, list[str]]:
    result = subprocess.run(
        [str(ansible_bin("ansible-inventory")), "-i", str(inventory), "--list"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(result.stdout)

    def members(group: str) -> list[str]:
        entry = data.get(group, {})
        hosts = list(entry.get("hosts", []))
        for child in entry.get("children", []):
            hosts += members(child)
        return sorted(set(hosts))

    return {group: members(group) for group in [*AGENT_GROUPS, "routers"]}


# Runs of site.yml with mip6_validate_only against each inventory, keeping the preflight's
# files: <dir>/<host>/agent.yml and keys.yml, exactly what the hosts would get (but for
# keys_file, which points at the keys.yml beside it). "lab-auto" is the lab's mn2 with
# autoconfiguration (-a) instead of its home prefix (-P).
RENDER_RUNS = {
    "lab": [],
    "example": [],
    "lab-auto": [
        "--limit",
        "mn2",
        "-e",
        '{"mip6_mn_home_prefix": null, "mip6_mn_autoconfigure": true}',
    ],
}


def start_renders(runs: Background, env: dict[str, str], work: Path) -> None:
    bindir = ansible_bin("ansible-playbook").parent
    out = work / "rendered"
    for name, extra in RENDER_RUNS.items():
        inventory = INVENTORIES[name.split("-")[0]]
        runs.start(
            f"render-{name}",
            *playbook_command(
                env, "-i", str(inventory), str(REPO / "playbooks/site.yml"), *local_vars(bindir),
                "-e", "mip6_validate_only=true",
                "-e", f"mip6_agent_preflight_output_dir={out / name}", *extra,
            ),
        )  # fmt: skip


@pytest.fixture(scope="module")
def rendered(background: Background, work: Path) -> dict[str, Path]:
    for name in RENDER_RUNS:
        result = background.result(f"render-{name}")
        assert result.returncode == 0, f"{name}:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
        assert all(r["failed"] == 0 for r in recap(result).values()), result.stdout[-4000:]
    return {name: work / "rendered" / name for name in RENDER_RUNS}


@pytest.mark.parametrize("inventory", sorted(INVENTORIES))
def test_every_agent_host_rendered(
    env: dict[str, str], rendered: dict[str, Path], inventory: str
) -> None:
    groups = inventory_groups(env, INVENTORIES[inventory])
    expected = {host: role for group, role in AGENT_GROUPS.items() for host in groups[group]}
    assert expected, groups
    assert sorted(p.name for p in rendered[inventory].iterdir()) == sorted(expected)
    for host, role in expected.items():
        directory = rendered[inventory] / host
        config = yaml.safe_load((directory / "agent.yml").read_text())
        assert config["role"] == role, host
        keys = directory / "keys.yml"
        if role == "cn":
            assert not keys.exists(), host
            continue
        assert stat.S_IMODE(keys.stat().st_mode) == 0o600, host
        assert config["keys_file"] == str(keys)
        nais = set(yaml.safe_load(keys.read_text())["mobile_nodes"])
        if role == "mn":
            assert nais == {config["mobile_node"]["nai"]}, f"{host} must hold only its own key"
        else:
            mobile_nodes = groups["mobile_nodes"]
            assert nais == {
                f"{h.split('.')[0]}@{'lab.example' if inventory == 'lab' else 'example.net'}"
                for h in mobile_nodes
            }
    for router in groups["routers"]:
        assert not (rendered[inventory] / router).exists()


# One host of every variable set: each role and each way of getting a home address, from
# both inventories (the preflight already checked all hosts with the same load_config).
VALIDATED = {
    "lab": ["ha1", "mn1", "mn2", "cn1"],
    "lab-auto": ["mn2"],
    "example": [
        "ha-a.example.net", "ha-b.example.net", "mn01.example.net", "mn02.example.net",
        "mn17.example.net", "mn19.example.net", "cn1.example.net",
    ],
}  # fmt: skip


def test_rendered_configs_pass_the_agent_validator(rendered: dict[str, Path]) -> None:
    """python -m mip6agent.cli.mip6agent --config FILE --check, the agent's real command line,
    with the keys file (0600) beside each agent.yml."""
    if not AGENT_PYTHON.exists():
        pytest.fail(f"{AGENT_PYTHON} missing: make venv installs the agent")
    configs = [
        rendered[run] / host / "agent.yml" for run, hosts in VALIDATED.items() for host in hosts
    ]

    def check(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(AGENT_PYTHON), "-m", "mip6agent.cli.mip6agent", "--config", str(path), "--check"],
            capture_output=True,
            text=True,
            cwd=REPO,
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(check, configs))
    bad = [
        f"{p}: {r.stdout}{r.stderr}" for p, r in zip(configs, results, strict=True) if r.returncode
    ]
    assert not bad, "\n".join(bad)
    for path, result in zip(configs, results, strict=True):
        role = yaml.safe_load(path.read_text())["role"]
        assert f"configuration is valid (role {role})" in result.stdout


def load(rendered: dict[str, Path], run: str, host: str) -> dict:
    return yaml.safe_load((rendered[run] / host / "agent.yml").read_text())


def test_rendered_values_follow_the_variables(rendered: dict[str, Path]) -> None:
    ha1 = load(rendered, "lab", "ha1")
    assert ha1["home_agent"] == {
        "interfaces": ["eth0"],
        "address": "2001:db8:1::1",
        "home_prefixes": ["2001:db8:1::/64"],
        "preference": 10,
        "lifetime": 1800,
        "max_binding_lifetime": 262140,
        "dad": True,
        "sequence_window": 32768,
        "replay_window": 7,
        "max_bindings": 1000000,
        "max_bindings_per_nai": 16,
        "max_pending_dad": 256,
        "max_home_agents": 32,
        "error_rate_per_destination": 10,
        "error_rate_total": 200,
        "unknown_sender_rate": 5000,
    }
    assert "mobile_node" not in ha1
    assert ha1["authentication"] == "required" and ha1["dataplane"] == "auto"
    # -H, -P and -a
    mn1 = load(rendered, "lab", "mn1")["mobile_node"]
    assert mn1["home_addresses"] == [
        {"address": "2001:db8:1::100/64", "interface": "eth0", "home_agent": "2001:db8:1::1"}
    ]
    assert "home_prefix" not in mn1 and mn1["nai"] == "mn1@lab.example"
    assert mn1["eager_movement_detection"] == 1
    mn2 = load(rendered, "lab", "mn2")["mobile_node"]
    assert mn2["home_prefix"] == "2001:db8:1::/64" and "home_addresses" not in mn2
    auto = load(rendered, "lab-auto", "mn2")["mobile_node"]
    assert auto["autoconfigure"] is True and "home_prefix" not in auto
    assert sorted(p.name for p in rendered["lab-auto"].iterdir()) == ["mn2"]
    # The example derives per-host values from the host name.
    for n, ha in ((7, "2001:db8:100::1"), (8, "2001:db8:100::2")):
        mn = load(rendered, "example", f"mn{n:02d}.example.net")["mobile_node"]
        assert mn["home_addresses"] == [
            {"address": f"2001:db8:100::{1000 + n}/64", "interface": "eth0", "home_agent": ha}
        ]
        assert mn["nai"] == f"mn{n:02d}@example.net"
    assert (
        load(rendered, "example", "mn17.example.net")["mobile_node"]["home_prefix"]
        == "2001:db8:100::/64"
    )
    assert load(rendered, "example", "mn20.example.net")["mobile_node"]["autoconfigure"] is True
    prefs = {
        h: load(rendered, "example", h)["home_agent"]["preference"]
        for h in ("ha-a.example.net", "ha-b.example.net")
    }
    assert prefs == {"ha-a.example.net": 20, "ha-b.example.net": 10}
    ha_a = load(rendered, "example", "ha-a.example.net")["home_agent"]
    assert ha_a["refresh_advice"] == 3600 and ha_a["max_binding_lifetime"] == 7200
    cn1 = load(rendered, "example", "cn1.example.net")
    assert cn1["correspondent_node"] == {
        "route_optimization": False,
        "binding_refresh_request_before": 10,
    }
    assert "home_agent" not in cn1 and "mobile_node" not in cn1


def load_keys(rendered: dict[str, Path], run: str, host: str) -> dict:
    return yaml.safe_load((rendered[run] / host / "keys.yml").read_text())["mobile_nodes"]


def test_rendered_keys_carry_home_addresses_on_home_agents_only(
    rendered: dict[str, Path],
) -> None:
    """mip6_agent_keys' home_addresses and max_bindings reach the home agents' keys files
    (each key authorized for its own mobile node's home address or the home prefix) and
    not the mobile nodes' ones; an entry without them gets neither field."""
    ha1 = load_keys(rendered, "lab", "ha1")
    assert {nai: e.get("home_addresses") for nai, e in ha1.items()} == {
        "mn1@lab.example": ["2001:db8:1::100"],
        "mn2@lab.example": ["2001:db8:1::/64"],
    }
    assert not any("max_bindings" in e for e in ha1.values())
    for host in ("mn1", "mn2"):
        [entry] = load_keys(rendered, "lab", host).values()
        assert set(entry) == {"spi", "key"}, host
    ha_a = load_keys(rendered, "example", "ha-a.example.net")
    assert len(ha_a) == 20
    for n in range(1, 21):
        expected = [f"2001:db8:100::{1000 + n}" if n <= 16 else "2001:db8:100::/64"]
        assert ha_a[f"mn{n:02d}@example.net"]["home_addresses"] == expected, n
        assert {"spi", "key"} <= set(ha_a[f"mn{n:02d}@example.net"]), n
    [entry] = load_keys(rendered, "example", "mn07.example.net").values()
    assert set(entry) == {"spi", "key"}


# --- activation against running agents ------------------------------------------------------


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture
def lab_agents(rendered: dict[str, Path], tmp_path: Path):
    """The lab's ha1, mn1 and cn1 agents, each in a network namespace of its own (ha1 and mn1
    joined by a veth pair on the home link), started from the agent.yml and keys.yml the
    roles rendered for them; only control_socket and state_dir are moved under tmp_path."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and ip(8) for network namespaces")
    require_dataplane()  # ha1 and mn1 cannot start on a kernel without one
    tag = f"m6t{os.getpid() % 100000}"
    hosts = {"ha1": "2001:db8:1::1/64", "mn1": "2001:db8:1::100/64", "cn1": None}
    processes, sockets = [], {}
    try:
        for host in hosts:
            sh("ip", "netns", "add", f"{tag}-{host}")
            sh("ip", "-n", f"{tag}-{host}", "link", "set", "lo", "up")
        sh("ip", "link", "add", f"{tag}a", "type", "veth", "peer", "name", f"{tag}b")
        for end, host in ((f"{tag}a", "ha1"), (f"{tag}b", "mn1")):
            sh("ip", "link", "set", end, "netns", f"{tag}-{host}")
            sh("ip", "-n", f"{tag}-{host}", "link", "set", end, "name", "eth0")
            sh("ip", "-n", f"{tag}-{host}", "addr", "add", hosts[host], "dev", "eth0", "nodad")
            sh("ip", "-n", f"{tag}-{host}", "link", "set", "eth0", "up")
        for host in hosts:
            sockets[host] = tmp_path / f"{host}.sock"
            config = (rendered["lab"] / host / "agent.yml").read_text()
            config = config.replace('"/run/mip6/agent.sock"', f'"{sockets[host]}"')
            config = config.replace('"/var/lib/mip6"', f'"{tmp_path / host}"')
            (tmp_path / f"{host}.yml").write_text(config)
            log = (tmp_path / f"{host}.log").open("w")
            command = [
                *("ip", "netns", "exec", f"{tag}-{host}", str(REPO / ".venv/bin/mip6agent")),
                *("--config", str(tmp_path / f"{host}.yml")),
            ]
            processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 20
        while not all(s.exists() for s in sockets.values()):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                logs = {h: (tmp_path / f"{h}.log").read_text() for h in hosts}
                pytest.fail(f"the agents did not start: {logs}")
            time.sleep(0.1)
        yield sockets
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        for host in hosts:
            subprocess.run(["ip", "netns", "del", f"{tag}-{host}"], capture_output=True)


def test_activation_agrees_with_the_rendered_configuration(
    env: dict[str, str], lab_agents: dict[str, Path], tmp_path: Path
) -> None:
    """The ha, mn and cn roles' activation (mobileip.mipv6.mip6_config, tasks/activate.yml)
    with the lab inventory's variables against agents running the agent.yml the roles
    rendered from the same variables: nothing to change. A changed variable is applied
    (a diff, changed) and a repeat changes nothing."""
    require_modules("mip6_config")
    bindir = ansible_bin("ansible-playbook").parent
    overrides = {
        "all": {
            "hosts": {
                host: {"mip6_agent_control_socket": str(socket), "test_role": host[:2]}
                for host, socket in lab_agents.items()
            },
            "vars": {
                # What the cn role's main.yml builds from mip6_cn_* for tasks/activate.yml.
                "mip6_agent_correspondent_node": {
                    "route_optimization": "{{ mip6_cn_route_optimization | bool }}",
                    "binding_refresh_request_before": (
                        "{{ mip6_cn_binding_refresh_request_before }}"
                    ),
                }
            },
        }
    }
    (tmp_path / "overrides.yml").write_text(yaml.safe_dump(overrides))
    play = [
        {
            "name": "Activation as the roles do it",
            "hosts": "ha1:mn1:cn1",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Activate",
                    "ansible.builtin.include_role": {
                        "name": "mobileip.mipv6.{{ test_role }}",
                        "tasks_from": "activate",
                    },
                }
            ],
        }
    ]
    (tmp_path / "activate.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    base = [
        "-i", str(INVENTORIES["lab"]), "-i", str(tmp_path / "overrides.yml"),
        str(tmp_path / "activate.yml"), *local_vars(bindir),
    ]  # fmt: skip
    same = playbook(env, *base)
    assert same.returncode == 0, same.stdout[-4000:] + same.stderr[-2000:]
    assert {h: r["changed"] for h, r in recap(same).items()} == {"ha1": 0, "mn1": 0, "cn1": 0}
    change = [
        "-e", "mip6_ha_preference=20", "-e", "mip6_mn_home_registration_lifetime=1800",
        "-e", "mip6_cn_route_optimization=true", "--diff",
    ]  # fmt: skip
    changed = playbook(env, *base, *change)
    assert changed.returncode == 0, changed.stdout[-4000:]
    assert {h: r["changed"] for h, r in recap(changed).items()} == {"ha1": 1, "mn1": 1, "cn1": 1}
    for line in (
        "+  preference: 20",
        "+  home_registration_lifetime: 1800",
        "+  route_optimization: true",
    ):
        assert line in changed.stdout, changed.stdout[-4000:]
    again = playbook(env, *base, *change)
    assert {h: r["changed"] for h, r in recap(again).items()} == {"ha1": 0, "mn1": 0, "cn1": 0}


# --- the wheelhouse: built on the controller, installed offline -----------------------------


def pins() -> dict[str, str]:
    out = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            out[name.lower().replace("_", "-")] = version
    return out


WHEELHOUSE_CACHE = Path.home() / ".cache/mobileip.mipv6/test-wheelhouse"


def test_wheelhouse_build_and_offline_install(env: dict[str, str], tmp_path: Path) -> None:
    """The agent role's wheelhouse and install tasks on this machine, into a temporary venv:
    a wheelhouse built from agent/ and constraints.txt (PyPI), copied, installed with
    --no-index; a second run changes nothing."""
    if os.geteuid() != 0:
        pytest.skip("the role's files are owned by root")
    bindir = ansible_bin("ansible-playbook").parent
    (tmp_path / "sbin").mkdir()  # the command directory exists, as /usr/local/sbin does
    where = {
        "__mip6_agent_venv": str(tmp_path / "venv"),
        "__mip6_agent_wheelhouse": str(tmp_path / "host-wheelhouse"),
        "__mip6_agent_docdir": str(tmp_path / "doc"),
        "mip6_agent_command_dir": str(tmp_path / "sbin"),
        "mip6_agent_python": str(bindir / "python"),
        # The role's own cache key (agent sources, constraints, Python, machine) decides
        # whether to build: the first run builds from PyPI, later ones reuse the wheels.
        "mip6_agent_wheelhouse_cache": str(WHEELHOUSE_CACHE),
    }
    play = [
        {
            "name": "Wheelhouse and offline install",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "tasks": [
                {
                    "name": f"Agent role, {part}",
                    "ansible.builtin.include_role": {
                        "name": "mobileip.mipv6.agent",
                        "tasks_from": part,
                    },
                    "vars": where,
                }
                for part in ("host_state", "wheelhouse", "install")
            ],
        }
    ]
    path = tmp_path / "install.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    first = playbook(env, "-i", "localhost,", str(path))
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert recap(first)["localhost"]["changed"] >= 3
    version = re.search(
        r'__version__ = "([^"]+)"', (REPO / "agent/mip6agent/__init__.py").read_text()
    )[1]
    # The controller's cache: the agent and its pinned dependencies, as wheels.
    cached = WHEELHOUSE_CACHE / (tmp_path / "venv/.mip6-wheelhouse").read_text().strip()
    assert cached.name.startswith(f"{version}-py3.")
    names = sorted(p.name for p in cached.iterdir())
    assert f"mip6agent-{version}-py3-none-any.whl" in names and "constraints.txt" in names
    wanted = {k: v for k, v in pins().items() if k in ("dpkt", "pyroute2", "pyyaml")}
    for name, pinned in wanted.items():
        assert any(n.lower().startswith(f"{name}-{pinned}-") for n in names), (name, names)
    # The host's venv, installed with --no-index from the copied wheelhouse.
    venv = tmp_path / "venv"
    out = subprocess.run([str(venv / "bin/mip6agent"), "--version"], capture_output=True, text=True)
    assert out.stdout.strip() == f"mip6agent {version}"
    listed = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
    )
    installed = {p["name"].lower(): p["version"] for p in json.loads(listed.stdout)}
    assert {k: installed.get(k) for k in wanted} == wanted
    commands = ("mip6agent", "mip6config", "mip6stat", "mip6dump")
    assert {c: os.readlink(tmp_path / "sbin" / c) for c in commands} == {
        c: str(venv / "bin" / c) for c in commands
    }
    assert (tmp_path / "doc/agent-config.md").read_text() == (
        REPO / "docs/agent-config.md"
    ).read_text()
    second = playbook(env, "-i", "localhost,", str(path))
    assert second.returncode == 0, second.stdout[-4000:]
    assert recap(second)["localhost"]["changed"] == 0, second.stdout[-4000:]
    # A link an operator removed comes back; the others are left as they are.
    (tmp_path / "sbin/mip6stat").unlink()
    third = playbook(env, "-i", "localhost,", str(path))
    assert third.returncode == 0, third.stdout[-4000:]
    assert recap(third)["localhost"]["changed"] == 1, third.stdout[-4000:]
    assert os.readlink(tmp_path / "sbin/mip6stat") == str(venv / "bin/mip6stat")


def test_host_state_probe_reports_what_is_right_already(tmp_path: Path) -> None:
    """roles/agent/files/mip6_host_state.py, run as the role runs it (the host's Python)."""
    if os.geteuid() != 0:
        pytest.skip("directory ownership root:root needs root")
    venv_bin, sbin = tmp_path / "venv/bin", tmp_path / "sbin"
    venv_bin.mkdir(parents=True)
    sbin.mkdir()
    (tmp_path / "venv/.mip6-wheelhouse").write_text("0.1.0-py3.11-x86_64-abc\n")
    (tmp_path / "agent.yml").write_text('# generated\nrole: "mn"\nmobile_node: {}\n')
    (sbin / "mip6agent").symlink_to(venv_bin / "mip6agent")  # right
    (sbin / "mip6stat").symlink_to(tmp_path / "elsewhere/mip6stat")  # wrong target
    (sbin / "mip6config").write_text("")  # a file, not a link
    right, loose, missing = tmp_path / "state", tmp_path / "etc", tmp_path / "nothere"
    right.mkdir(mode=0o700)
    loose.mkdir()
    loose.chmod(0o777)
    given = {
        "stamp": str(tmp_path / "venv/.mip6-wheelhouse"),
        "config": str(tmp_path / "agent.yml"),
        "unit": str(tmp_path / "mip6agent.service"),
        "venv_bin": str(venv_bin),
        "command_dir": str(sbin),
        "commands": ["mip6agent", "mip6config", "mip6stat", "mip6dump"],
        "dirs": {str(right): "0700", str(loose): "0755", str(missing): "0755"},
    }
    script = REPO / "roles/agent/files/mip6_host_state.py"
    out = subprocess.run(
        ["/usr/bin/python3", str(script), json.dumps(given)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    state = json.loads(out.stdout)
    assert state["installed"] == "0.1.0-py3.11-x86_64-abc"
    assert state["role"] == "mn"
    assert state["unit"] is False
    assert state["links"] == ["mip6agent"]
    assert state["dirs"] == [str(right)]
    python = subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print(*sys.version_info[:2], sep='.')"],
        capture_output=True,
        text=True,
    )
    assert state["version"] == python.stdout.strip()
    # Nothing there yet (a new host): every answer says "do it".
    empty = {**given, "stamp": str(missing / "s"), "config": str(missing / "c"), "dirs": {}}
    fresh = subprocess.run(
        ["/usr/bin/python3", str(script), json.dumps(empty)], capture_output=True, text=True
    )
    assert json.loads(fresh.stdout)["installed"] == json.loads(fresh.stdout)["role"] == ""
    bad = subprocess.run(["/usr/bin/python3", str(script)], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr


# --- the stats playbook ---------------------------------------------------------------------

SAMPLE_REPORT = {
    "generated": "2026-01-01T00:00:00Z",
    "hosts": {
        "ha1": {
            "status": {"role": "ha", "version": "0.1.0", "dataplane": "seg6", "enabled": True},
            "bindings": [
                {
                    "home_address": "2001:db8:1::100",
                    "care_of_address": "2001:db8:2::100",
                    "lifetime": 3600,
                    "sequence": 5,
                }
            ],
            "home_agents": [],
            "counters": {"mh_in.bu": 3, "mh_out.ba": 3},
        },
        "mn1": {
            "status": {"role": "mn", "version": "0.1.0", "dataplane": "seg6", "enabled": True},
            "bul": [{"home_address": "2001:db8:1::100", "state": "registered"}],
            "home_agents": [{"address": "2001:db8:1::1"}],
            "counters": {"mh_in.ba": 3, "mh_out.bu": 4, "auth_failed": 1},
        },
        "cn1": {"error": "cannot connect to /run/mip6/agent.sock"},
    },
}


def start_stats(runs: Background, env: dict[str, str], work: Path) -> None:
    """stats.yml against the lab's hosts as this machine, then the table of a sample report."""
    bindir = ansible_bin("ansible-playbook").parent
    out = work / "stats"
    out.mkdir()
    sample = out / "sample.json"
    sample.write_text(json.dumps(SAMPLE_REPORT))
    table_template = REPO / "playbooks/templates/mip6-stats.txt.j2"
    play = [
        {"ansible.builtin.import_playbook": str(REPO / "playbooks/stats.yml")},
        {
            "name": "The table of a sample report",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars": {
                "mip6_stats_report": "{{ lookup('ansible.builtin.file', sample) | from_json }}"
            },
            "tasks": [
                {
                    "name": "Render",
                    "vars": {"sample": str(sample), "table": str(table_template)},
                    "ansible.builtin.copy": {
                        "content": "{{ lookup('ansible.builtin.template', table) }}",
                        "dest": str(out / "sample.txt"),
                        "mode": "0644",
                    },
                }
            ],
        },
    ]
    path = out / "stats.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    runs.start(
        "stats",
        *playbook_command(
            env, "-i", str(INVENTORIES["lab"]), str(path), *local_vars(bindir),
            "-e", f"mip6_stats_report_dir={out / 'report'}",
            "-e", "mip6_agent_control_socket=/nonexistent/agent.sock",
        ),
    )  # fmt: skip


def test_stats_playbook_writes_the_report(background: Background, work: Path) -> None:
    """stats.yml where no agent runs: every host is reported with its error, in JSON and in
    the table; the table of a sample report."""
    require_modules("mip6_stat")
    result = background.result("stats")
    tmp_path = work / "stats"
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    report = json.loads((tmp_path / "report/mip6-stats.json").read_text())
    assert sorted(report["hosts"]) == ["cn1", "ha1", "mn1", "mn2"]
    assert all("error" in v for v in report["hosts"].values())
    page = (tmp_path / "report/mip6-fleet.html").read_text()
    assert '<span id="answered">0</span>' in page and '<span id="silent-count">4</span>' in page
    for host in ("cn1", "ha1", "mn1", "mn2"):
        assert f'<tr class="silent" data-host="{host}">' in page, host
    table = (tmp_path / "report/mip6-stats.txt").read_text().splitlines()
    assert table[1].split() == [
        "HOST",
        "ROLE",
        "AGENT",
        "DATAPLANE",
        "BINDINGS",
        "BUL",
        "HAS",
        "MH-IN",
        "MH-OUT",
        "AUTH-FAIL",
    ]
    assert [line.split()[0] for line in table[2:6]] == ["cn1", "ha1", "mn1", "mn2"]
    assert all("ERROR" in line for line in table[2:6])
    sample_table = (tmp_path / "sample.txt").read_text().splitlines()
    rows = {line.split()[0]: line.split() for line in sample_table[2:5]}
    assert rows["ha1"] == ["ha1", "ha", "on", "0.1.0", "seg6", "1", "-", "0", "3", "3", "0"]
    assert rows["mn1"] == ["mn1", "mn", "on", "0.1.0", "seg6", "-", "1/1", "1", "3", "4", "1"]
    assert rows["cn1"][2] == "ERROR"
    assert "  2001:db8:1::100 -> 2001:db8:2::100  lifetime 3600  seq 5" in "\n".join(sample_table)


# --- lint and structure ---------------------------------------------------------------------


LINT_PATHS = [f"roles/{r}" for r in ROLES] + ["playbooks"]
MINE = tuple(f"{p}/" for p in LINT_PATHS)


def start_lint(runs: Background, env: dict[str, str], work: Path) -> None:
    command = [str(ansible_bin("ansible-lint")), "--profile", "production", "--offline"]
    runs.start("lint", [*command, "--nocolor", "-f", "json", *LINT_PATHS], env)


def test_ansible_lint_production_profile(background: Background) -> None:
    """The brief's command, ansible-lint --profile production --offline on the roles and
    playbooks: no violation in them. Included roles of other owners (radvd, ipsec) are
    linted too by ansible-lint; their findings are shown but belong to them."""
    lint = background.result("lint")
    stdout, stderr = lint.stdout, lint.stderr
    try:
        found = json.loads(stdout)
    except ValueError:
        pytest.fail(f"ansible-lint gave no report:\n{stdout[-3000:]}\n{stderr[-3000:]}")
    described = [
        f"{v['location']['path']}:{v['location'].get('lines', {}).get('begin')}: "
        f"{v['check_name']}: {v['description']}"
        for v in found
    ]
    mine = [
        d for d, v in zip(described, found, strict=True) if v["location"]["path"].startswith(MINE)
    ]
    assert not mine, "\n".join(mine)
    others = [d for d in described if d not in mine]
    if lint.returncode != 0 and not others:
        pytest.fail(f"ansible-lint failed:\n{stderr[-3000:]}")


def spec(role: str) -> dict:
    return yaml.safe_load((REPO / f"roles/{role}/meta/argument_specs.yml").read_text())[
        "argument_specs"
    ]


def defaults(role: str) -> dict:
    return yaml.safe_load((REPO / f"roles/{role}/defaults/main.yml").read_text()) or {}


@pytest.mark.parametrize("role", ROLES)
def test_defaults_match_the_argument_specs(role: str) -> None:
    """Every variable is declared (type, description; choices/defaults agree with defaults)."""
    entry_points = spec(role)
    options = {}
    for entry in entry_points.values():
        for name, option in entry["options"].items():
            options.setdefault(name, option)
            assert "type" in option and option.get("description"), (role, name)
    main = entry_points["main"]["options"]
    values = defaults(role)
    assert set(values) <= set(options), set(values) - set(options)
    for name, option in main.items():
        if option.get("required"):
            assert name not in values, f"{role}: required {name} has a default"
            continue
        assert name in values, f"{role}: {name} has no default in defaults/main.yml"
        assert option.get("default") == values[name], (
            role,
            name,
            option.get("default"),
            values[name],
        )
        if "choices" in option:
            assert values[name] in option["choices"], (role, name)


def schema_rows() -> list[tuple[str, str]]:
    """(dotted key, default) of every key of the agent configuration schema."""
    sys.path.insert(0, str(REPO / "agent"))
    from mip6agent.config import schema

    return [(key.strip("`"), default) for key, _, default, *_ in schema._rows(schema.AGENT, "")]


SECTION_ROLES = {
    "home_agent": ("ha", ["ha"]),
    "mobile_node": ("mn", ["mn"]),
    "correspondent_node": ("cn", ["cn", "ha", "mn"]),
    "metrics": ("agent_metrics", ["agent"]),
}


def test_role_variables_map_one_to_one_onto_the_agent_schema() -> None:
    """mip6_agent_<key> for top-level keys, mip6_ha_/mip6_mn_/mip6_cn_<key> for the sections,
    with the schema's defaults (docs/roles.md)."""
    seen = set()
    for key, default in schema_rows():
        if "[]" in key or key == "role":
            continue
        section, _, name = key.partition(".")
        if not name:
            if section in SECTION_ROLES:
                continue
            roles, variable = ["agent"], f"mip6_agent_{section}"
        else:
            prefix, roles = SECTION_ROLES[section]
            variable = f"mip6_{prefix}_{name}"
        for role in roles:
            option = spec(role)["main"]["options"].get(variable)
            assert option is not None, f"{key}: {variable} missing from roles/{role}"
            if default == "required":
                assert option.get("required"), (role, variable)
            else:
                expected = None if default == "null" else json.loads(default.strip("`"))
                assert option.get("default") == expected, (role, variable, expected)
        seen.add(variable)
    assert len(seen) == 7 + 17 + 17 + 2 + 5


def test_docs_list_every_variable() -> None:
    text = (REPO / "docs/roles.md").read_text()
    missing = [
        name
        for role in ROLES
        for entry in spec(role).values()
        for name in entry["options"]
        if f"| `{name}` |" not in text
    ]
    assert not missing, f"docs/roles.md lacks {missing}"


def tasks(path: str) -> list[dict]:
    return yaml.safe_load((REPO / path).read_text())


def test_keys_are_written_0600_with_no_log() -> None:
    [keys] = [
        t for t in tasks("roles/agent/tasks/config.yml") if "keys file (mode 0600)" in t["name"]
    ]
    assert keys["no_log"] is True
    assert keys["ansible.builtin.template"]["mode"] == "0600"
    assert keys["ansible.builtin.template"]["dest"] == "{{ mip6_agent_keys_file }}"
    for t in tasks("roles/agent/tasks/preflight.yml"):
        if "keys" in str(t.get("ansible.builtin.set_fact", "")) or "stdin" in str(t):
            assert t.get("no_log") is True, t["name"]


def test_configuration_changes_reload_and_versions_restart() -> None:
    notify = {
        t["name"]: t.get("notify")
        for f in ("config", "install")
        for t in tasks(f"roles/agent/tasks/{f}.yml")
    }
    assert (
        notify["Config | write /etc/mip6/agent.yml (checked by the installed agent)"]
        == "mip6agent reload"
    )
    assert notify["Config | write the keys file (mode 0600)"] == "mip6agent reload"
    assert (
        notify["Install | install the agent from the wheelhouse (offline)"] == "mip6agent restart"
    )
    assert notify["Config | install the systemd unit"] == "mip6agent restart"
    handlers = {
        h["listen"]: h
        for h in tasks("roles/agent/handlers/main.yml")
        if "name" in h.get("ansible.builtin.systemd_service", {})
    }
    reload_state = handlers["mip6agent reload"]["ansible.builtin.systemd_service"]["state"]
    assert "reloaded" in reload_state and "__mip6_agent_role_changed" in reload_state
    assert handlers["mip6agent restart"]["ansible.builtin.systemd_service"]["state"] == "restarted"
    unit = (REPO / "agent/systemd/mip6agent.service").read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    # The agent role installs exactly the paths the unit expects.
    fixed = yaml.safe_load((REPO / "roles/agent/vars/main.yml").read_text())
    venv, config = fixed["__mip6_agent_venv"], fixed["__mip6_agent_config"]
    assert f"ExecStart={venv}/bin/mip6agent --config {config}" in unit


JOBS = [
    Job({"test_playbooks_syntax"}, start_syntax),
    Job({"test_validation_names_variable_and_host"}, start_validation),
    Job(
        {
            "test_every_agent_host_rendered",
            "test_rendered_configs_pass_the_agent_validator",
            "test_rendered_values_follow_the_variables",
            "test_activation_agrees_with_the_rendered_configuration",
        },
        start_renders,
    ),
    Job({"test_stats_playbook_writes_the_report"}, start_stats),
    Job({"test_ansible_lint_production_profile"}, start_lint),
]
