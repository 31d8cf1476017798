"""The Podman lab (docs/lab.md): image, shared Molecule create/destroy, topology, handover.

These tests drive the real thing: ``lab/build-image.sh`` (debootstrap + ``podman import``,
reused when its key has an image), ``molecule/shared/create.yml`` and ``destroy.yml``
through ``ansible-playbook``, containers with systemd as PID 1 on internal IPv6 Podman
networks, and ``lab/move.sh`` for a handover. They need root, podman (``lab/bootstrap.sh``)
and an Ansible with the containers.podman collection (the ``ansible`` package) next to the
running Python or on PATH. They skip without those, unless MIP6_LAB_REQUIRED=1 (``make
lab``), where a missing tool is a failure.

Every lab here is its own instance (``pytest<pid>...``): containers and networks carry the
label ``mip6-lab=<instance>`` and a finalizer removes them whatever happened; labs left by
a killed run (dead pid) are removed first.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "lab"
SHARED = REPO / "molecule" / "shared"
LABEL = "mip6-lab"
TOPOLOGY = yaml.safe_load((SHARED / "vars" / "topology.yml").read_text())
LINKS = {name: IPv6Network(link["prefix"]) for name, link in TOPOLOGY["lab_links"].items()}
NODES = {node["name"]: node for node in TOPOLOGY["lab_nodes"]}
ROUTER_ID = int(TOPOLOGY["lab_router_id"], 16)
MN_LINKS = TOPOLOGY["lab_mn_links"]
CAP_SYS_ADMIN = 21
_INSTANCE = re.compile(r"^pytest(\d+)")


def address(link: str, interface_id: str | int) -> IPv6Address:
    value = int(interface_id, 16) if isinstance(interface_id, str) else interface_id
    return LINKS[link].network_address + value


def router_address(link: str) -> IPv6Address:
    return address(link, ROUTER_ID)


def slaac_address(link: str, mac: str) -> IPv6Address:
    """The modified EUI-64 address for ``mac`` on ``link``."""
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] ^= 0x02
    eui = [*octets[:3], 0xFF, 0xFE, *octets[3:]]
    return LINKS[link].network_address + int.from_bytes(bytes(eui), "big")


# --- tools -------------------------------------------------------------------------------


def _tool(name: str) -> str | None:
    """``name`` next to the running Python (the project venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (rootful Podman)"
    for tool in ("podman", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed: run lab/bootstrap.sh"
    if _tool("ansible-playbook") is None:
        return "ansible-playbook not found next to Python or on PATH"
    listing = subprocess.run(
        [_tool("ansible-galaxy") or "ansible-galaxy", "collection", "list", "containers.podman"],
        capture_output=True,
        text=True,
        env=_env(),
    )
    if "containers.podman" not in listing.stdout:
        return "the containers.podman collection is missing (pip install ansible)"
    return None


def _env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
    }


@pytest.fixture(scope="module")
def lab_tools() -> None:
    reason = _missing()
    if reason is not None:
        if os.environ.get("MIP6_LAB_REQUIRED") == "1":
            pytest.fail(f"lab tests required but cannot run: {reason}")
        pytest.skip(reason)


def run(
    argv: list[str], check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_env())
    if check and result.returncode != 0:
        output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}\n{output}")
    return result


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return run(["podman", *args], check=check, timeout=timeout)


def labelled(instance: str) -> list[str]:
    """Containers and networks that carry this lab instance's label."""
    found = []
    for kind, name in ((["ps", "--all"], "{{.Names}}"), (["network", "ls"], "{{.Name}}")):
        found += podman(
            *kind, "--filter", f"label={LABEL}={instance}", "--format", name
        ).stdout.split()
    return found


def remove_by_label(instance: str) -> None:
    """The last line of defence: remove the instance's containers and networks directly."""
    containers = podman(
        "ps", "--all", "--quiet", "--filter", f"label={LABEL}={instance}", check=False
    ).stdout.split()
    if containers:
        podman("rm", "--force", "--time", "0", *containers, check=False)
    networks = podman(
        "network", "ls", "--quiet", "--filter", f"label={LABEL}={instance}", check=False
    ).stdout.split()
    if networks:
        podman("network", "rm", "--force", *networks, check=False)


def sweep_stale() -> None:
    """Remove labs that test runs which are gone left behind."""
    values = podman(
        "ps", "--all", "--filter", f"label={LABEL}", "--format", f'{{{{index .Labels "{LABEL}"}}}}'
    ).stdout.split()
    values += podman(
        "network",
        "ls",
        "--filter",
        f"label={LABEL}",
        "--format",
        f'{{{{index .Labels "{LABEL}"}}}}',
    ).stdout.split()
    for instance in set(values):
        match = _INSTANCE.match(instance)
        if match and not _alive(int(match.group(1))):
            remove_by_label(instance)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- the lab -----------------------------------------------------------------------------


@dataclass
class Lab:
    instance: str
    timings: dict[str, float] = field(default_factory=dict)
    image: str = ""

    def container(self, node: str) -> str:
        return f"mip6-{self.instance}-{node}"

    def playbook(
        self, name: str, *extra: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = [_tool("ansible-playbook") or "ansible-playbook", "-i", "localhost,"]
        argv += [str(SHARED / name), "-e", f"lab_instance={self.instance}", *extra]
        return run(argv, check=check)

    def create(self, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        result = self.playbook("create.yml", *extra, check=check)
        self.timings["create"] = time.monotonic() - started
        return result

    def destroy(self) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        result = self.playbook("destroy.yml")
        self.timings["destroy"] = time.monotonic() - started
        return result

    def exec(self, node: str, *argv: str, check: bool = True, timeout: float = 60) -> str:
        return podman("exec", self.container(node), *argv, check=check, timeout=timeout).stdout

    def addresses(self, node: str, ifname: str) -> set[IPv6Address]:
        info = json.loads(self.exec(node, "ip", "-j", "-6", "addr", "show", "dev", ifname))
        return {
            IPv6Address(a["local"])
            for entry in info
            for a in entry.get("addr_info", [])
            if a.get("scope") == "global"
        }

    def default_routes(self, node: str) -> list[dict[str, Any]]:
        return json.loads(self.exec(node, "ip", "-j", "-6", "route", "show", "default"))

    def move(self, node: str, link: str) -> None:
        run([str(LAB / "move.sh"), self.instance, node, link])


@contextlib.contextmanager
def _unwind_on_sigterm() -> Iterator[None]:
    """A SIGTERM (CI timeout) unwinds like Ctrl-C, so the finalizers still run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def lab_instance(suffix: str = "") -> Iterator[Lab]:
    """A lab instance that is removed on the way out, whatever happened."""
    lab = Lab(f"pytest{os.getpid()}{suffix}")
    with _unwind_on_sigterm():
        try:
            yield lab
        finally:
            try:
                lab.destroy()
            finally:
                remove_by_label(lab.instance)


@pytest.fixture(scope="module")
def image(lab_tools: None) -> tuple[str, float]:
    """Build the image if its key has none yet; (tag, seconds)."""
    sweep_stale()
    started = time.monotonic()
    tag = run([str(LAB / "build-image.sh")], timeout=1200).stdout.split()[-1]
    return tag, time.monotonic() - started


@pytest.fixture(scope="module")
def lab(image: tuple[str, float]) -> Iterator[Lab]:
    with lab_instance() as lab:
        lab.image, lab.timings["image"] = image
        lab.create()
        yield lab
        sys.stderr.write(f"\nlab timings (s): {lab.timings}\n")


# --- tests -------------------------------------------------------------------------------


def test_image_key_and_reuse(image: tuple[str, float]) -> None:
    tag, _seconds = image
    key = run([str(LAB / "build-image.sh"), "--tag"]).stdout.strip()
    assert tag == key
    assert re.fullmatch(r"localhost/mip6-lab:[0-9a-f]{12}", tag)
    started = time.monotonic()
    again = run([str(LAB / "build-image.sh")])
    assert again.stdout.split()[-1] == tag
    assert "reusing" in again.stderr
    assert time.monotonic() - started < 10
    labels = json.loads(podman("image", "inspect", tag).stdout)[0]["Labels"]
    assert labels[f"{LABEL}.image"] == tag.rsplit(":", 1)[1]


def test_every_node_runs_systemd(lab: Lab) -> None:
    for node in NODES:
        state = json.loads(podman("inspect", lab.container(node)).stdout)[0]
        assert state["State"]["Running"], node
        assert state["Config"]["Labels"][LABEL] == lab.instance
        assert lab.exec(node, "cat", "/proc/1/comm").strip() == "systemd", node
        assert lab.exec(node, "systemctl", "is-system-running").strip() == "running", node
        # PID 1 dropped SYS_ADMIN once /proc/sys/net was writable.
        status = lab.exec(node, "cat", "/proc/1/status")
        bounding = int(re.search(r"CapBnd:\s*([0-9a-f]+)", status).group(1), 16)
        assert not bounding & (1 << CAP_SYS_ADMIN), node


def test_net_sysctls_writable_and_the_hosts_are_not(lab: Lab) -> None:
    key = "net.ipv6.conf.eth0.accept_ra"
    before = lab.exec("mn2", "sysctl", "-n", key).strip()
    lab.exec("mn2", "sysctl", "-w", f"{key}=2")
    assert lab.exec("mn2", "sysctl", "-n", key).strip() == "2"
    lab.exec("mn2", "sysctl", "-w", f"{key}={before}")
    denied = podman(
        "exec", lab.container("mn2"), "sysctl", "-w", "kernel.pid_max=32768", check=False
    )
    assert denied.returncode != 0
    assert lab.exec("router1", "sysctl", "-n", "net.ipv6.conf.all.forwarding").strip() == "1"


def test_addresses_and_routes_as_planned(lab: Lab) -> None:
    router = NODES["router1"]
    for link in router["links"]:
        assert lab.addresses("router1", link) == {router_address(link)}
    for name, node in NODES.items():
        if name == "router1":
            continue
        link = node.get("link") or MN_LINKS[name]
        planned = address(link, node["id"])
        found = lab.addresses(name, "eth0")
        assert planned in found, (name, found)
        assert all(a in LINKS[link] for a in found), (name, found)
        gateways = {IPv6Address(r["gateway"]) for r in lab.default_routes(name) if "gateway" in r}
        assert router_address(link) in gateways, (name, gateways)
        # No IPv4 on any lab link.
        assert "inet " not in lab.exec(name, "ip", "-4", "addr", "show", "dev", "eth0")
    # The host has no address on the links: nothing but router1 joins them.
    for link in LINKS:
        info = json.loads(podman("network", "inspect", f"mip6-{lab.instance}-{link}").stdout)[0]
        assert info["internal"] and not info["dns_enabled"]
        bridge = info["network_interface"]
        assert Path(f"/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6").read_text().strip() == "1"


def test_ha_reaches_cn_through_router1(lab: Lab) -> None:
    cn = str(address("cn", NODES["cn1"]["id"]))
    output = lab.exec("ha1", "ping", "-6", "-c", "3", "-W", "2", cn)
    assert "ttl=63" in output  # one router on the way
    # And only through router1: with its forwarding off, nothing gets across.
    lab.exec("router1", "sysctl", "-w", "net.ipv6.conf.all.forwarding=0")
    try:
        blocked = podman(
            "exec", lab.container("ha1"), "ping", "-6", "-c", "2", "-W", "1", cn, check=False
        )
        assert blocked.returncode != 0
    finally:
        lab.exec("router1", "sysctl", "-w", "net.ipv6.conf.all.forwarding=1")
    lab.exec("ha1", "ping", "-6", "-c", "1", "-W", "2", cn)


# Runs inside a node: the first router advertisement heard within the deadline, as JSON.
RA_LISTENER = r"""
import ipaddress, json, select, socket, struct, sys, time
sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
end = time.monotonic() + float(sys.argv[1])
while (left := end - time.monotonic()) > 0:
    if not select.select([sock], [], [], left)[0]:
        break
    data, source = sock.recvfrom(65535)
    if len(data) < 16 or data[0] != 134:
        continue
    ra = {"source": source[0].split("%")[0], "interval_ms": None, "prefixes": [],
          "router_lifetime": struct.unpack_from("!H", data, 6)[0]}
    offset = 16
    while offset + 8 <= len(data) and data[offset + 1]:
        kind, length = data[offset], data[offset + 1] * 8
        if kind == 7:
            ra["interval_ms"] = struct.unpack_from("!I", data, offset + 4)[0]
        elif kind == 3:
            ra["prefixes"].append({
                "prefix": str(ipaddress.IPv6Address(data[offset + 16:offset + 32])),
                "length": data[offset + 2], "flags": data[offset + 3]})
        offset += length
    print(json.dumps(ra))
    break
"""


def first_ra(lab: Lab, node: str, deadline: float = 5.0) -> dict[str, Any]:
    output = lab.exec(node, "python3", "-c", RA_LISTENER, str(deadline), timeout=deadline + 30)
    assert output.strip(), f"no router advertisement on {node} within {deadline} s"
    return json.loads(output)


def assert_foreign_ra(ra: dict[str, Any], link: str) -> None:
    assert IPv6Address(ra["source"]).is_link_local
    # Advertisement Interval option (RFC 6275 7.3): MaxRtrAdvInterval 0.07 s and then some.
    assert ra["interval_ms"] is not None and 70 <= ra["interval_ms"] <= 1000, ra
    assert ra["router_lifetime"] == TOPOLOGY["lab_radvd"]["default_lifetime"]
    (prefix,) = ra["prefixes"]
    # The router's full address with the R flag (0x20), on-link and autonomous (0xc0).
    assert IPv6Address(prefix["prefix"]) == router_address(link)
    assert prefix["length"] == 64 and prefix["flags"] & 0xE0 == 0xE0, prefix


def wait_for(predicate: Any, deadline: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > deadline:
            raise AssertionError(f"no {what} after {deadline} s")
        time.sleep(0.05)
    return time.monotonic() - started


def test_mn_hears_fast_ras_with_the_interval_option(lab: Lab) -> None:
    link = MN_LINKS["mn1"]
    assert link in ("foreign1", "foreign2")
    assert_foreign_ra(first_ra(lab, "mn1"), link)
    # SLAAC from those advertisements, next to the planned static address.
    assert slaac_address(link, NODES["mn1"]["mac"]) in lab.addresses("mn1", "eth0")


def test_mn_moves_between_foreign_links(lab: Lab) -> None:
    mac = NODES["mn1"]["mac"]
    cn = str(address("cn", NODES["cn1"]["id"]))
    start = MN_LINKS["mn1"]
    other = "foreign2" if start == "foreign1" else "foreign1"
    for link in (other, start):  # there and back again
        started = time.monotonic()
        lab.move("mn1", link)
        lab.timings[f"move to {link}"] = time.monotonic() - started
        expected = {address(link, NODES["mn1"]["id"]), slaac_address(link, mac)}
        lab.timings[f"slaac on {link}"] = wait_for(
            lambda link=link, expected=expected: lab.addresses("mn1", "eth0") == expected,
            10,
            f"readdressing on {link}",
        )
        assert_foreign_ra(first_ra(lab, "mn1"), link)
        # The new addresses work end to end, through router1.
        for source in expected:
            lab.exec("mn1", "ping", "-6", "-c", "1", "-W", "2", "-I", str(source), cn)
        networks = json.loads(podman("inspect", lab.container("mn1")).stdout)[0]
        assert list(networks["NetworkSettings"]["Networks"]) == [f"mip6-{lab.instance}-{link}"]


def test_destroy_leaves_nothing(lab: Lab) -> None:
    assert len(labelled(lab.instance)) == len(NODES) + len(LINKS)
    lab.destroy()
    assert labelled(lab.instance) == []
    # The image stays for the next create.
    assert podman("image", "exists", lab.image, check=False).returncode == 0


def test_destroy_after_a_half_failed_create(image: tuple[str, float], tmp_path: Path) -> None:
    # ha1 asks for a sysctl that does not exist: its container is created but cannot start,
    # after the networks and router1 are up (the other nodes' items still run).
    nodes = [dict(node) for node in TOPOLOGY["lab_nodes"]]
    nodes[1]["sysctls"] = {"net.ipv6.conf.all.no_such_setting": 1}
    overrides = tmp_path / "broken.yml"
    overrides.write_text(yaml.safe_dump({"lab_nodes": nodes}))
    with lab_instance("half") as lab:
        result = lab.create("-e", f"@{overrides}", check=False)
        assert result.returncode != 0, result.stdout[-2000:]
        assert "no_such_setting" in result.stdout, result.stdout[-2000:]
        left = labelled(lab.instance)
        assert lab.container("router1") in left and f"mip6-{lab.instance}-home" in left, left
        state = json.loads(podman("inspect", lab.container("ha1")).stdout)[0]["State"]
        assert not state["Running"], state
        lab.destroy()
        assert labelled(lab.instance) == []
