"""Rollout time of playbooks/site.yml on Podman labs of 2, 5 and 10 mobile nodes, as JSON.

For each size N (``--sizes``, default ``2,5,10``) the script:

1. builds a lab of N + 3 containers with ``molecule/shared/create.yml`` (docs/lab.md):
   router1, ha1 and cn1 as in ``molecule/shared/vars/topology.yml``, plus mobile nodes
   mn1..mnN, each with its own interface id (``<k>00`` in hex) and MAC
   (``02:00:00:00:<k>:00``), starting on the foreign links (odd k on foreign1, even k on
   foreign2) so that every one of them registers with ha1. The lab is instance
   ``bench<N>``, and the links use prefixes of their own (``2001:db8:<g>1::/64`` home,
   ``:<g>2::`` foreign1, ``:<g>3::`` foreign2, ``:<g>4::`` cn, g = 1, 2, ... by position
   in ``--sizes``): Podman refuses two networks with one subnet, and the standard lab
   (2001:db8:1::/64 to 2001:db8:4::/64) may be up next to the bench;
2. writes, in a temporary directory, an inventory equivalent to ``inventories/lab`` for
   that lab: its ``group_vars`` and ``host_vars`` copied with the prefixes rewritten, a
   static home address per mobile node (``mip6_mn_home_addresses`` as mn1's, home agent
   ha1), and a fresh random MN-HA key per mobile node in place of the lab's keys file
   (mode 0600; the home agent gets every entry, each mobile node its own);
3. runs ``ansible-playbook -i <that inventory> playbooks/site.yml`` (the first run) from a
   snapshot of the checkout taken at the start: its tracked and untracked files, plus the
   ``collections/`` link that ``make`` creates. The roles read the agent's sources from
   the checkout, so an edit made there during the bench would be measured as a rerun
   that builds and installs a new wheelhouse (``--in-place`` runs from the repository
   itself). It then polls ha1's binding cache (``mip6stat -b --json`` through
   ``podman exec``) until every mobile node's home address is bound to a care-of address
   on its foreign link, runs site.yml again (the idempotent rerun) and reads every
   host's ``changed=`` from the play recap;
4. removes the lab with ``molecule/shared/destroy.yml`` (also after a failure, Ctrl-C or
   SIGTERM; ``--keep`` leaves it, and the temporary inventory, for debugging).

Reported per size: the first-run and rerun wall times, seconds per host, the rerun/first
ratio (target at most 0.5), the time from the end of the first run to the poll that sees
every mobile node bound (an upper bound: one poll is a ``podman exec``), the last
registration time taken from the bindings themselves (negative: every mobile node was
registered before the run ended), the rerun's ``changed`` count (0 when idempotent) and
the tasks that changed, the create and destroy times, whether the first run built a new
wheelhouse, and the slowest tasks of each run (``ansible.posix.profile_tasks``, summed
by task name over the plays and batches). site.yml's own mobile node batch size (5) is
used unless ``--mn-batch`` says otherwise, so N = 10 is rolled out in two batches, as a
real fleet would be.

Progress goes to stderr, the JSON document to stdout. A failure (no root, no Podman, an
image build or a playbook that fails) ends with the failed tasks and the play recap on
stderr and a one-line message, exit status 1. Every run's full output stays in the
temporary directory when a run fails.

Run as root, from anywhere: ``.venv/bin/python bench/rollout.py [--sizes 2,5,10] [--keep]``.
It takes several minutes per size on a 2-core machine (most of it is the Podman
connection's cost per task); the first create of a machine also builds the lab image
(about 1 min).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
COLLECTION_LINK = Path("collections/ansible_collections/mobileip/mipv6")  # -> ../../.. (make)
WHEELHOUSE_CACHE = Path("~/.cache/mobileip.mipv6/wheelhouse").expanduser()
MIP6STAT = "/opt/mip6/venv/bin/mip6stat"  # the agent role's fixed venv (roles/agent/vars)

TARGET_RERUN_OVER_FIRST_MAX = 0.5
DEFAULT_SIZES = (2, 5, 10)
MAX_SIZE = 50  # interface ids and MACs are built from k; 50 containers is plenty here
MN_GROUP = "mobile_nodes"
HA_GROUP = "home_agents"
LAB_LABEL = "mip6-lab"
# The lab's prefixes are 2001:db8:<one hex digit>::/64; the bench's are 2001:db8:<g><digit>::.
LAB_PREFIX = re.compile(r"\b2001:db8:([0-9a-f])::", re.IGNORECASE)
RECAP_LINE = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)"
)
# profile_tasks' summary: "<task name> ------ 12.34s" (the dashes may be missing).
PROFILE_LINE = re.compile(r"^(?P<name>.*?) -*\s*(?P<seconds>\d+\.\d{2})s$")
SLOWEST_SHOWN = 8
# What site.yml reads from the checkout (roles, the agent's sources, modules, the docs the
# agent role installs).
SOURCES = (
    "playbooks",
    "roles",
    "plugins",
    "agent/mip6agent",
    "agent/pyproject.toml",
    "constraints.txt",
    "docs",
)


class BenchError(Exception):
    """An expected failure: reported as ``details`` lines and one message, no traceback."""

    def __init__(self, message: str, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.details = list(details)


def progress(message: str) -> None:
    print(f"rollout: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Tree:
    """The checkout the playbooks run from: the repository itself, or a snapshot of it."""

    root: Path

    @property
    def shared(self) -> Path:
        return self.root / "molecule" / "shared"

    @property
    def topology(self) -> Path:
        return self.shared / "vars" / "topology.yml"

    @property
    def lab_inventory(self) -> Path:
        return self.root / "inventories" / "lab"

    @property
    def site(self) -> Path:
        return self.root / "playbooks" / "site.yml"


def snapshot(dest: Path) -> Tree:
    """Copy the checkout's files as they are now (tracked, and untracked but not ignored).

    The roles read the agent's sources, modules and docs from the checkout on every run;
    an edit there between the first run and the rerun (a new wheelhouse, a new task)
    would be measured as a rerun that changes things. The copy holds still."""
    try:
        listed = subprocess.run(
            [
                "git",
                "-C",
                str(ROOT),
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ],
            capture_output=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BenchError(
            f"cannot list the checkout's files with git (or use --in-place): {exc}"
        ) from None
    for name in listed.stdout.decode().split("\0"):
        source = ROOT / name
        if not name or not (source.is_file() or source.is_symlink()):
            continue  # a deleted file git still tracks, or a submodule
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    link = dest / COLLECTION_LINK
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to("../../..")  # git ignores the link: make creates it in a checkout
    return Tree(dest)


# --- the lab plan and its inventory ------------------------------------------------------


@dataclass
class Plan:
    """One lab: its instance, prefixes, nodes and the mobile nodes' home addresses."""

    size: int
    group: int  # g in 2001:db8:<g><digit>::
    instance: str
    topology: dict[str, Any]
    links: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    mn_links: dict[str, str] = field(default_factory=dict)
    home_addresses: dict[str, IPv6Address] = field(default_factory=dict)
    ha_address: IPv6Address | None = None

    def rewrite(self, text: str) -> str:
        """The lab's 2001:db8:<d>:: prefixes as this lab's 2001:db8:<g><d>::."""
        return LAB_PREFIX.sub(lambda m: f"2001:db8:{self.group:x}{m.group(1).lower()}::", text)

    def container(self, node: str) -> str:
        return f"mip6-{self.instance}-{node}"

    def prefix(self, link: str) -> str:
        """'2001:db8:11::' for link home of group 1 (create.yml's "<64 bits>::" form)."""
        return str(self.links[link]["prefix"]).split("/")[0]

    @property
    def mobile_nodes(self) -> list[str]:
        return [f"mn{k}" for k in range(1, self.size + 1)]

    @property
    def hosts(self) -> list[str]:
        return [n["name"] for n in self.nodes]


def read_topology(tree: Tree) -> dict[str, Any]:
    try:
        import yaml  # only here: writing the inventory needs no PyYAML
    except ImportError:
        raise BenchError(
            "PyYAML is missing: run with the project venv (.venv/bin/python)"
        ) from None
    try:
        data = yaml.safe_load(tree.topology.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise BenchError(f"cannot read {tree.topology}: {exc}") from None
    if not isinstance(data, dict) or not {"lab_links", "lab_nodes"} <= data.keys():
        raise BenchError(f"{tree.topology} has no lab_links or lab_nodes")
    return data


def make_plan(size: int, group: int, topology: dict[str, Any]) -> Plan:
    plan = Plan(size=size, group=group, instance=f"bench{size}", topology=topology)
    for name, link in topology["lab_links"].items():
        prefix = plan.rewrite(str(link["prefix"]))
        if prefix == link["prefix"]:
            raise BenchError(f"topology link {name} has prefix {prefix}, not 2001:db8:<d>::/64")
        plan.links[name] = {**link, "prefix": prefix}
    # The fixed nodes (router, home agent, correspondent) as topology.yml has them; the
    # mobile nodes are ours.
    plan.nodes = [n for n in topology["lab_nodes"] if MN_GROUP not in n.get("groups", [])]
    has = {g for n in plan.nodes for g in n.get("groups", [])}
    if HA_GROUP not in has or "foreign1" not in plan.links or "foreign2" not in plan.links:
        raise BenchError("topology.yml: no home agent node, or no foreign1/foreign2 link")
    ha = next(n for n in plan.nodes if HA_GROUP in n.get("groups", []))
    if ha["name"] != "ha1":
        raise BenchError(f"topology.yml: the home agent is {ha['name']}, expected ha1")
    plan.ha_address = IPv6Address(plan.prefix(ha.get("link", "home")) + str(ha["id"]))
    for k, name in enumerate(plan.mobile_nodes, start=1):
        node_id = f"{k:x}00"  # mn1 ::100, mn2 ::200 (topology.yml), ... mn10 ::a00
        plan.nodes.append(
            {
                "name": name,
                "groups": [MN_GROUP],
                "slaac": True,
                "id": node_id,
                "mac": f"02:00:00:00:{k:02x}:00",
            }
        )
        plan.mn_links[name] = "foreign1" if k % 2 else "foreign2"
        plan.home_addresses[name] = IPv6Address(plan.prefix("home") + node_id)
    return plan


def write_private(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 from the start (it holds keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def dump(data: object) -> str:
    # JSON is YAML: no PyYAML needed to write, and the files stay readable with --keep.
    return "---\n" + json.dumps(data, indent=2) + "\n"


def write_lab_vars(plan: Plan, path: Path) -> None:
    """The -e file for create.yml and destroy.yml."""
    path.write_text(
        json.dumps(
            {
                "lab_instance": plan.instance,
                "lab_links": plan.links,
                "lab_nodes": plan.nodes,
                "lab_mn_links": plan.mn_links,
            },
            indent=2,
        )
    )


def write_inventory(plan: Plan, directory: Path, tree: Tree) -> Path:
    """inventories/lab for this plan; returns its hosts.yml."""
    nodes_by_group: dict[str, list[str]] = {}
    for node in plan.nodes:
        for group in node.get("groups", []):
            nodes_by_group.setdefault(group, []).append(node["name"])
    lab_children = {
        group: {"hosts": {name: {"ansible_host": plan.container(name)} for name in names}}
        for group, names in nodes_by_group.items()
    }
    hosts = {
        "all": {
            "children": {
                "lab": {"children": lab_children},
                # As inventories/lab: the hosts that hold MN-HA keys.
                "mip6_key_holders": {"children": {HA_GROUP: {}, MN_GROUP: {}}},
            }
        }
    }
    directory.mkdir(parents=True)
    hosts_file = directory / "hosts.yml"
    hosts_file.write_text(dump(hosts))

    keys = {
        f"{name}@lab.example": {"spi": 1000 + k, "key": secrets.token_hex(20)}
        for k, name in enumerate(plan.mobile_nodes, start=1)
    }
    keys_text = dump({"mip6_agent_keys": keys}).replace(
        "---\n", "---\n# Random keys of one bench lab (bench/rollout.py): lab-only.\n", 1
    )
    keys_written = False
    source = tree.lab_inventory / "group_vars"
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        target = directory / "group_vars" / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text()
        if re.search(r"^mip6_agent_keys:", text, re.MULTILINE):
            write_private(target, keys_text)  # the lab's keys name mn1 and mn2 only
            keys_written = True
            continue
        text = re.sub(
            r"^mip6_lab_instance:.*$",
            f'mip6_lab_instance: "{plan.instance}"',
            plan.rewrite(text),
            flags=re.MULTILINE,
        )
        target.write_text(text)
    if not keys_written:
        write_private(directory / "group_vars" / "mip6_key_holders" / "bench-keys.yml", keys_text)

    host_vars = directory / "host_vars"
    host_vars.mkdir()
    mobile = set(plan.mobile_nodes) | {"mn1", "mn2"}
    for path in sorted((tree.lab_inventory / "host_vars").glob("*.yml")):
        if path.stem not in mobile and path.stem in plan.hosts:
            (host_vars / path.name).write_text(plan.rewrite(path.read_text()))
    for name in plan.mobile_nodes:
        address = {
            "address": f"{plan.home_addresses[name]}/64",
            "interface": "eth0",
            "home_agent": str(plan.ha_address),
        }
        (host_vars / f"{name}.yml").write_text(dump({"mip6_mn_home_addresses": [address]}))

    # A lab prefix left over means the lab inventory changed in a way rewrite() misses.
    for path in directory.rglob("*.yml"):
        if path.name != hosts_file.name and LAB_PREFIX.search(path.read_text()):
            raise BenchError(f"{path.relative_to(directory)} still names a lab prefix")
    return hosts_file


# --- running playbooks -------------------------------------------------------------------


@dataclass
class PlaybookRun:
    seconds: float
    finished: float  # time.monotonic() when ansible-playbook exited
    finished_wall: float  # time.time() at the same moment
    rc: int
    lines: list[str]
    recap: dict[str, dict[str, int]]
    slowest: list[list[Any]]
    profiled_s: float  # the sum of profile_tasks' task times
    changed_tasks: dict[str, list[str]]
    task_headers: int

    @property
    def changed(self) -> int:
        return sum(h["changed"] for h in self.recap.values())


def playbook_env(tree: Tree) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLECULE_")}
    env.update(
        {
            "PATH": f"{VENV_BIN}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
            "ANSIBLE_CONFIG": str(tree.root / "ansible.cfg"),  # the collection via collections/
            "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",  # the recap is parsed
            "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
            "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "all",
            "PROFILE_TASKS_SORT_ORDER": "descending",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
        }
    )
    return env


def ansible_playbook() -> str:
    for candidate in (
        VENV_BIN / "ansible-playbook",
        Path(sys.executable).parent / "ansible-playbook",
    ):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("ansible-playbook")
    if found is None:
        raise BenchError("ansible-playbook not found: run make (it creates .venv)")
    return found


def parse_recap(lines: Sequence[str]) -> dict[str, dict[str, int]]:
    recap: dict[str, dict[str, int]] = {}
    inside = False
    for line in lines:
        if line.startswith("PLAY RECAP"):
            inside = True
        elif inside and (m := RECAP_LINE.match(line)):
            fields = ("ok", "changed", "unreachable", "failed")
            recap[m["host"]] = {f: int(m[f]) for f in fields}
        elif inside and line.strip() and not line.startswith(" "):
            inside = False
    return recap


def parse_profile(lines: Sequence[str]) -> dict[str, float]:
    """Seconds per task name. One task has a line per play it runs in (include_role
    makes new task objects), so the lines are summed by name."""
    out: dict[str, float] = {}
    inside = False
    for line in lines:
        if line.startswith("TASKS RECAP"):
            inside = True
        elif inside and (m := PROFILE_LINE.match(line.rstrip())):
            name = m["name"].strip()
            out[name] = out.get(name, 0.0) + float(m["seconds"])
    return out


def parse_changed(lines: Sequence[str]) -> dict[str, list[str]]:
    """Task name -> hosts it reported changed on."""
    out: dict[str, list[str]] = {}
    task = "?"
    for line in lines:
        if m := re.match(r"^(?:TASK|RUNNING HANDLER) \[(.*)\]", line):
            task = m[1]
        elif m := re.match(r"^changed: \[([^\]]+)\]", line):
            host = m[1].split(" -> ")[0]
            if host not in out.setdefault(task, []):
                out[task].append(host)
    return out


def failure_details(lines: Sequence[str], limit: int = 3) -> list[str]:
    """The first failed tasks (their header and first result lines) and the play recap."""
    details: list[str] = []
    task = ""
    shown = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line.rstrip(" *")
        if line.startswith(("fatal: [", "failed: [")):
            block = [line]
            j = i + 1
            while j < len(lines) and lines[j].startswith((" ", "\t")):
                block.append(lines[j])
                j += 1
            ignored = j < len(lines) and lines[j].startswith("...ignoring")
            if not ignored and shown < limit:
                details += [task, *(b[:300] for b in block[:12])]
                shown += 1
            i = j
            continue
        i += 1
    recap_at = next((k for k, line in enumerate(lines) if line.startswith("PLAY RECAP")), None)
    if recap_at is not None:
        details += [lines[recap_at], *(ln for ln in lines[recap_at:] if RECAP_LINE.match(ln))]
    else:
        details += lines[-20:]  # no recap: an error before the first play (syntax, inventory)
    return details


def check_recap(label: str, run: PlaybookRun, plan: Plan) -> None:
    """Every host of the lab ran, and none failed or was unreachable."""
    missing = sorted(set(plan.hosts) - run.recap.keys())
    bad = sorted(h for h, v in run.recap.items() if v["failed"] or v["unreachable"])
    if missing or bad:
        raise BenchError(
            f"{label}: hosts missing from the recap {missing}, failed or unreachable {bad}",
            failure_details(run.lines),
        )


def run_playbook(
    label: str, argv: Sequence[str], log: Path, tree: Tree, *, verbose: bool, check: bool = True
) -> PlaybookRun:
    """Run ansible-playbook from the repository root, its output to ``log``; timed."""
    progress(f"{label}: {' '.join(argv[1:])}")
    lines: list[str] = []
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(
            list(argv),
            cwd=tree.root,
            env=playbook_env(tree),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                out.write(raw)
                lines.append(line)
                if verbose or (line.startswith("PLAY [") and not line.startswith("PLAY RECAP")):
                    print(f"  {label}: {line.rstrip(' *')}", file=sys.stderr, flush=True)
            rc = proc.wait()
        except BaseException:
            # Ctrl-C reaches ansible-playbook too; SIGTERM reaches only us: stop it either way.
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
    finished = time.monotonic()
    seconds = finished - started
    profile = parse_profile(lines)
    run = PlaybookRun(
        seconds=seconds,
        finished=finished,
        finished_wall=time.time(),
        rc=rc,
        lines=lines,
        recap=parse_recap(lines),
        slowest=[[name, round(s, 2)] for name, s in sorted(profile.items(), key=lambda x: -x[1])][
            :SLOWEST_SHOWN
        ],
        profiled_s=round(sum(profile.values()), 1),
        changed_tasks=parse_changed(lines),
        task_headers=sum(1 for line in lines if line.startswith("TASK [")),
    )
    progress(f"{label}: rc {rc} in {seconds:.1f} s")
    if check and rc != 0:
        raise BenchError(f"{label} failed (rc {rc}; full output in {log})", failure_details(lines))
    return run


# --- the home agent's binding cache ------------------------------------------------------


def read_bindings(container: str) -> list[dict[str, Any]] | str:
    """ha1's bindings, or why they could not be read (the agent may still be starting)."""
    try:
        done = subprocess.run(
            ["podman", "exec", container, MIP6STAT, "-b", "--json"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return "podman exec timed out"
    if done.returncode != 0:
        return (done.stderr.strip() or done.stdout.strip() or f"rc {done.returncode}")[-300:]
    try:
        bindings = json.loads(done.stdout).get("bindings", [])
    except (ValueError, AttributeError):
        return f"unreadable mip6stat output: {done.stdout[:200]!r}"
    return bindings if isinstance(bindings, list) else f"bindings is {bindings!r}"


def wait_registered(plan: Plan, since: float, timeout: float) -> tuple[float, list[dict[str, Any]]]:
    """Seconds from ``since`` (monotonic) until ha1 binds every home address to a CoA on
    the mobile node's foreign link, and those bindings."""
    wanted = {
        str(plan.home_addresses[name]): IPv6Network(plan.links[plan.mn_links[name]]["prefix"])
        for name in plan.mobile_nodes
    }
    container = plan.container("ha1")
    last: list[dict[str, Any]] | str = "not asked yet"
    while True:
        last = read_bindings(container)
        now = time.monotonic()
        if isinstance(last, list):
            bound = {
                b.get("home_address"): b
                for b in last
                if b.get("home_address") in wanted
                and IPv6Address(str(b.get("care_of_address"))) in wanted[b["home_address"]]
            }
            if len(bound) == len(wanted):
                return now - since, list(bound.values())
        if now - since > timeout:
            have = (
                sorted(b.get("home_address", "?") for b in last) if isinstance(last, list) else last
            )
            raise BenchError(
                f"not every mobile node registered with ha1 within {timeout:.0f} s "
                f"after the rollout: ha1 has {have}, wants {sorted(wanted)}"
            )
        time.sleep(0.5)


# --- the lab's life ----------------------------------------------------------------------


def lab_leftovers(instance: str) -> list[str]:
    label = f"label={LAB_LABEL}={instance}"
    names: list[str] = []
    for argv in (
        ["podman", "ps", "--all", "--filter", label, "--format", "{{.Names}}"],
        ["podman", "network", "ls", "--filter", label, "--format", "{{.Name}}"],
    ):
        done = subprocess.run(argv, capture_output=True, text=True)
        names += done.stdout.split()
    return names


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the lab is gone (destroy inherits SIGINT ignored)."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def destroy(plan: Plan, vars_file: Path, workdir: Path, tree: Tree, *, verbose: bool) -> float:
    argv = [
        ansible_playbook(),
        "-i",
        "localhost,",
        str(tree.shared / "destroy.yml"),
        "-e",
        f"@{vars_file}",
    ]
    with signals_ignored():
        run = run_playbook(
            f"{plan.instance} destroy",
            argv,
            workdir / f"{plan.instance}-destroy.log",
            tree,
            verbose=verbose,
        )
    return run.seconds


def sources_fingerprint(tree: Tree) -> str:
    """A hash of everything site.yml reads from the checkout."""
    digest = hashlib.sha256()
    for top in SOURCES:
        start = tree.root / top
        for path in [start] if start.is_file() else sorted(start.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(tree.root)).encode() + b"\0")
                with contextlib.suppress(OSError):
                    digest.update(path.read_bytes())
    return digest.hexdigest()


def wheelhouses() -> set[str]:
    with contextlib.suppress(OSError):
        return {p.name for p in WHEELHOUSE_CACHE.iterdir()}
    return set()


def bench_size(
    plan: Plan, workdir: Path, tree: Tree, args: argparse.Namespace, keep_failed: list[bool]
) -> dict[str, Any]:
    playbook = ansible_playbook()
    vars_file = workdir / f"{plan.instance}-lab.json"
    write_lab_vars(plan, vars_file)
    inventory = write_inventory(plan, workdir / f"{plan.instance}-inventory", tree)
    extra = ["-e", f"mip6_site_mn_batch={args.mn_batch}"] if args.mn_batch else []
    hosts = len(plan.nodes)
    result: dict[str, Any] = {
        "mobile_nodes": plan.size,
        "hosts": hosts,
        "instance": plan.instance,
        "prefixes": {link: spec["prefix"] for link, spec in plan.links.items()},
        "mn_batch": args.mn_batch or "site.yml default (5)",
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }

    failed = False
    if leftovers := lab_leftovers(plan.instance):
        progress(f"{plan.instance}: removing what an earlier run left: {', '.join(leftovers)}")
        destroy(plan, vars_file, workdir, tree, verbose=args.verbose)
    try:
        create = run_playbook(
            f"{plan.instance} create",
            [playbook, "-i", "localhost,", str(tree.shared / "create.yml"), "-e", f"@{vars_file}"],
            workdir / f"{plan.instance}-create.log",
            tree,
            verbose=args.verbose,
        )
        result["create_s"] = round(create.seconds, 1)

        site = [playbook, "-i", str(inventory), str(tree.site), *extra]
        before = wheelhouses()
        sources_before = sources_fingerprint(tree)
        first = run_playbook(
            f"{plan.instance} first run",
            site,
            workdir / f"{plan.instance}-first.log",
            tree,
            verbose=args.verbose,
        )
        result["wheelhouse_built"] = bool(wheelhouses() - before)
        check_recap(f"{plan.instance} first run", first, plan)

        progress(f"{plan.instance}: waiting for {plan.size} bindings on ha1")
        to_registered, bindings = wait_registered(plan, first.finished, args.register_timeout)
        last_registered = max(float(b.get("registered", 0.0)) for b in bindings)
        progress(f"{plan.instance}: all {plan.size} bound {to_registered:.1f} s after the run")

        rerun = run_playbook(
            f"{plan.instance} rerun",
            site,
            workdir / f"{plan.instance}-rerun.log",
            tree,
            verbose=args.verbose,
        )
        check_recap(f"{plan.instance} rerun", rerun, plan)

        ratio = rerun.seconds / first.seconds
        result.update(
            {
                "first_run_s": round(first.seconds, 1),
                "rerun_s": round(rerun.seconds, 1),
                "first_s_per_host": round(first.seconds / hosts, 2),
                "rerun_s_per_host": round(rerun.seconds / hosts, 2),
                "rerun_over_first": round(ratio, 3),
                "target_rerun_over_first": TARGET_RERUN_OVER_FIRST_MAX,
                "met": ratio <= TARGET_RERUN_OVER_FIRST_MAX,
                "converge_to_all_registered_s": round(to_registered, 2),
                # From the bindings' own first-registration times (wall clock, shared with
                # the containers): negative when all were registered before the run ended.
                "last_registration_after_converge_s": round(
                    last_registered - first.finished_wall, 2
                ),
                "first_changed": first.changed,
                "rerun_changed": rerun.changed,
                "rerun_changed_by_host": {
                    h: v["changed"] for h, v in sorted(rerun.recap.items()) if v["changed"]
                },
                "idempotent": rerun.changed == 0,
                "task_headers_first": first.task_headers,
                "task_headers_rerun": rerun.task_headers,
                "rerun_changed_tasks": rerun.changed_tasks,
                "profiled_tasks_first_s": first.profiled_s,
                "profiled_tasks_rerun_s": rerun.profiled_s,
                "slowest_tasks_first_s": first.slowest,
                "slowest_tasks_rerun_s": rerun.slowest,
                # The roles and the agent read from the working tree: an edit there during
                # the runs (a new wheelhouse, a new task) shows up as rerun changes.
                "sources_changed_during_runs": sources_before != sources_fingerprint(tree),
                "care_of_addresses": {
                    name: next(
                        str(b["care_of_address"])
                        for b in bindings
                        if b["home_address"] == str(plan.home_addresses[name])
                    )
                    for name in plan.mobile_nodes
                },
            }
        )
    except BaseException as exc:
        failed = True
        if isinstance(exc, BenchError):
            keep_failed[0] = True  # the logs explain the failure: keep the work directory
        raise
    finally:
        if args.keep:
            progress(
                f"{plan.instance}: kept (--keep): podman exec -it {plan.container('ha1')} bash; "
                f"remove with: ansible-playbook -i localhost, molecule/shared/destroy.yml "
                f"-e lab_instance={plan.instance}"
            )
        else:
            try:
                result["destroy_s"] = round(
                    destroy(plan, vars_file, workdir, tree, verbose=args.verbose), 1
                )
            except BenchError as exc:
                if not failed:
                    raise
                # Report it, but let the first failure be the one that ends the run.
                keep_failed[0] = True
                for line in [*exc.details, f"also: {exc}"]:
                    print(f"  {line}", file=sys.stderr)
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


# --- the report --------------------------------------------------------------------------


def command_output(argv: Sequence[str]) -> str | None:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def machine_facts() -> dict[str, Any]:
    ansible_version = command_output([ansible_playbook(), "--version"]) or ""
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "podman": command_output(["podman", "version", "--format", "{{.Client.Version}}"]),
        "ansible_core": (re.findall(r"core ([\d.]+\w*)", ansible_version) or [None])[0],
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text}"
        ) from None
    if not sizes or any(not 1 <= s <= MAX_SIZE for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be 1 to {MAX_SIZE} mobile nodes")
    if len(set(sizes)) != len(sizes) or len(sizes) > 15:
        raise argparse.ArgumentTypeError("at most 15 sizes, each once (one lab each)")
    return sizes


def preflight(in_place: bool) -> None:
    if os.geteuid() != 0:
        raise BenchError("run as root: the lab is rootful Podman (docs/lab.md)")
    if shutil.which("podman") is None:
        raise BenchError("podman is not installed: run lab/bootstrap.sh (docs/lab.md)")
    if in_place and not (ROOT / COLLECTION_LINK).exists():
        raise BenchError(f"{COLLECTION_LINK} is missing: run make (docs/quickstart.md)")
    ansible_playbook()


def raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 measured (1 with --check and a missed target), 1 failure, "
        "130 interrupted. JSON on stdout, progress on stderr.",
    )
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=list(DEFAULT_SIZES),
        help="mobile nodes per lab, comma-separated (default 2,5,10); each size is a lab of "
        "size + 3 containers, built, measured and removed in turn",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave every lab and the temporary inventory, keys and logs for debugging "
        "(remove a lab with molecule/shared/destroy.yml -e lab_instance=bench<N>)",
    )
    parser.add_argument(
        "--mn-batch",
        type=int,
        default=0,
        help="mobile nodes per site.yml batch (mip6_site_mn_batch); default: site.yml's own "
        "(5), as a real rollout; give the size to roll out all mobile nodes at once",
    )
    parser.add_argument(
        "--register-timeout",
        type=float,
        default=120.0,
        help="seconds after the first run for every mobile node to be bound on ha1 (default 120)",
    )
    parser.add_argument(
        "--in-place",
        action="store_true",
        help="run the playbooks from the repository itself instead of a snapshot of its files "
        "taken at the start (then edits made during the run are measured too)",
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a target is missed or a rerun changes"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="copy every playbook line to stderr"
    )
    args = parser.parse_args(argv)
    if args.mn_batch < 0 or args.register_timeout <= 0:
        parser.error("--mn-batch must be positive and --register-timeout more than 0")

    # SIGTERM unwinds like Ctrl-C, so that the labs are removed.
    previous_term = signal.signal(signal.SIGTERM, raise_interrupt)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    workdir: Path | None = None
    keep_failed = [False]
    try:
        preflight(args.in_place)
        report: dict[str, Any] = {
            "benchmark": "rollout of playbooks/site.yml on the Podman lab",
            "machine": machine_facts(),
            "method": {
                "first_run": "ansible-playbook -i <generated inventory> playbooks/site.yml on a "
                "freshly created lab (image cached), wall time",
                "rerun": "the same command again right after every mobile node is bound",
                "converge_to_all_registered": "end of the first run to the first poll of "
                "ha1's binding cache (mip6stat -b --json via podman exec, every 0.5 s) that "
                "shows every home address bound to a care-of address on the node's link",
                "hosts": "router1, ha1, cn1 and the mobile nodes",
                "mobile_nodes_start_on": "foreign1 (odd k) and foreign2 (even k)",
            },
            "targets": {"rerun_over_first_max": TARGET_RERUN_OVER_FIRST_MAX},
            "sizes": [],
        }
        workdir = Path(tempfile.mkdtemp(prefix="mip6-rollout-"))
        progress(f"work directory {workdir}")
        tree = Tree(ROOT) if args.in_place else snapshot(workdir / "checkout")
        report["method"]["checkout"] = (
            "the repository in place" if args.in_place else "a snapshot taken at the start"
        )
        topology = read_topology(tree)
        for group, size in enumerate(args.sizes, start=1):
            plan = make_plan(size, group, topology)
            progress(f"size {size}: lab {plan.instance}, {len(plan.nodes)} hosts")
            report["sizes"].append(bench_size(plan, workdir, tree, args, keep_failed))
            json.dump(report["sizes"][-1], sys.stderr, indent=None)
            sys.stderr.write("\n")
        report["met"] = all(s["met"] for s in report["sizes"])
        report["idempotent"] = all(s["idempotent"] for s in report["sizes"])
        report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    except BenchError as exc:
        for line in exc.details:
            print(f"  {line}", file=sys.stderr)
        print(f"rollout.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rollout.py: interrupted (labs removed unless --keep)", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)
        if workdir is not None:
            if args.keep or keep_failed[0]:
                progress(f"work directory kept: {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 1 if args.check and not (report["met"] and report["idempotent"]) else 0


if __name__ == "__main__":
    sys.exit(main())
