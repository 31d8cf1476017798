"""The radvd and ipsec roles' templates, rendered through the real roles with ansible-playbook.

- radvd.conf: ``radvd --configtest`` passes, then radvd runs in a namespace pair with the
  rendered file and mip6dump checks the router advertisements on the wire.
- rtadvd.conf, setkey, ip xfrm and swanctl files: compared with reviewed golden files in
  tests/golden/ (each says in its ``#|`` header what it was checked against). Set
  MIP6_UPDATE_GOLDEN=1 to rewrite the bodies (the headers are kept; review the diff).
- ip xfrm: the policy lines are applied with the real ``ip`` in a throwaway namespace, read
  back and removed again; the role itself refuses to apply on a kernel without ESP and
  leaves no policy behind.
- swanctl: the files are loaded into a charon started in a namespace.
- Wrong variables: one message naming the variable and the host.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netns import kill_namespace_processes, namespaces, popen_in, run_in, stop_daemon, veth

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
AGENT_DIR = REPO / "agent"
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root for network namespaces")

HA = "2001:db8:1::1"
HOA = "2001:db8:1::100"
COA = "2001:db8:2::100"
HOA2 = "2001:db8:1::200"
COA2 = "2001:db8:3::200"
ESP_MISSING = (
    "this kernel has no ESP (CONFIG_INET6_ESP): refusing to install IPsec policies without "
    "states, which would silently drop MN-HA traffic"
)


def _key(nbytes: int, seed: int) -> str:
    """A visibly fake, deterministic test key (never use such keys anywhere real)."""
    return bytes((seed + 7 * i) % 256 for i in range(nbytes)).hex()


def _sa(spi: int, seed: int, enc: int | None, auth: int | None) -> dict[str, Any]:
    sa: dict[str, Any] = {"spi": spi}
    if enc:
        sa["enc_key"] = "0x" + _key(enc, seed)
    if auth:
        sa["auth_key"] = _key(auth, seed + 100)
    return sa


def _pair(spi: int, seed: int, enc: int | None, auth: int | None) -> dict[str, Any]:
    return {
        "mn_to_ha": _sa(spi, seed, enc, auth),
        "ha_to_mn": _sa(spi + 1, seed + 1, enc, auth),
    }


# --- the variable sets --------------------------------------------------------------------

RADVD_HOSTS: dict[str, dict[str, Any]] = {
    # A home agent on its home link at the RFC 6275 floors, a preference above 32767, and a
    # second prefix without the router address.
    "radvd-ha": {
        "mip6_radvd_flavor": "radvd",
        "mip6_radvd_interfaces": [
            {
                "name": "m6ha0",
                "min_interval": 0.03,
                "max_interval": 0.07,
                "min_delay_between_ras": 0.03,
                "default_lifetime": 1800,
                "home_agent": {"preference": 65000, "lifetime": 300},
                "prefixes": [
                    {"prefix": "2001:db8:1::/64", "router_address": HA},
                    {"prefix": "2001:db8:10::/64", "preferred_lifetime": 3600},
                ],
            }
        ],
    },
    # A foreign-link access router: R flag and interval option, no home agent.
    "radvd-ar": {
        "mip6_radvd_flavor": "radvd",
        "mip6_radvd_interfaces": [
            {
                "name": "m6ar0",
                "min_interval": 1,
                "max_interval": 1.5,
                "prefixes": [{"prefix": "2001:db8:2::/64", "router_address": "2001:db8:2::fffe"}],
            }
        ],
    },
    # The same home agent for a BSD host with the KAME rtadvd.
    "rtadvd-ha": {
        "mip6_radvd_flavor": "rtadvd",
        "mip6_radvd_interfaces": [
            {
                "name": "em0",
                "min_interval": 1,
                "max_interval": 2,
                "default_lifetime": 1800,
                "home_agent": {"preference": 10, "lifetime": 1800},
                "prefixes": [
                    {"prefix": "2001:db8:1::/64", "router_address": HA},
                    {"prefix": "2001:db8:10::/64", "autonomous": False},
                ],
            }
        ],
    },
}

IPSEC_HOSTS: dict[str, dict[str, Any]] = {
    "xfrm-mn": {
        "mip6_ipsec_node": "mobile_node",
        "mip6_ipsec_backend": "xfrm",
        "mip6_ipsec_encryption": "aes-gcm-256",
        "mip6_ipsec_mobile_nodes": [
            {"name": "mn1", "home_address": HOA, "sa": _pair(0x1001, 1, 36, None)}
        ],
    },
    "xfrm-ha": {
        "mip6_ipsec_node": "home_agent",
        "mip6_ipsec_backend": "xfrm",
        "mip6_ipsec_mode": "tunnel",
        "mip6_ipsec_encryption": "aes-cbc-128",
        "mip6_ipsec_integrity": "hmac-sha256",
        "mip6_ipsec_mobile_nodes": [
            {
                "name": "mn1",
                "home_address": HOA,
                "care_of_address": COA,
                "sa": _pair(0x1001, 11, 16, 32),
                "tunnel_sa": _pair(0x2001, 21, 16, 32),
            },
            {
                "name": "mn2",
                "home_address": HOA2,
                "care_of_address": COA2,
                "sa": _pair(0x1101, 31, 16, 32),
                "tunnel_sa": _pair(0x2101, 41, 16, 32),
            },
        ],
    },
    "setkey-mn": {
        "mip6_ipsec_node": "mobile_node",
        "mip6_ipsec_backend": "setkey",
        "mip6_ipsec_protocol": "ah",
        "mip6_ipsec_integrity": "hmac-sha256",
        "mip6_ipsec_mobile_nodes": [
            {"name": "mn1", "home_address": HOA, "sa": _pair(0x1001, 51, None, 32)}
        ],
    },
    "setkey-ha": {
        "mip6_ipsec_node": "home_agent",
        "mip6_ipsec_backend": "setkey",
        "mip6_ipsec_mode": "tunnel",
        "mip6_ipsec_encryption": "aes-cbc-256",
        "mip6_ipsec_mobile_nodes": [
            {
                "name": "mn1",
                "home_address": HOA,
                "care_of_address": COA,
                "sa": _pair(0x1001, 61, 32, 32),
                "tunnel_sa": _pair(0x2001, 71, 32, 32),
            }
        ],
    },
    "swanctl-mn": {
        "mip6_ipsec_node": "mobile_node",
        "mip6_ipsec_backend": "swanctl",
        "mip6_ipsec_mode": "tunnel",
        "mip6_ipsec_swanctl_home_agent_id": "ha.example.net",
        # trap installs the kernel policies at load time, so the test can read them back.
        "mip6_ipsec_swanctl_start_action": "trap",
        "mip6_ipsec_mobile_nodes": [
            {
                "name": "mn1",
                "home_address": HOA,
                "id": "mn1@example.net",
                "psk": "test-only pre-shared key, mn1",
            }
        ],
    },
    "swanctl-ha": {
        "mip6_ipsec_node": "home_agent",
        "mip6_ipsec_backend": "swanctl",
        "mip6_ipsec_mode": "tunnel",
        "mip6_ipsec_swanctl_home_agent_id": "ha.example.net",
        "mip6_ipsec_mobile_nodes": [
            {
                "name": "mn1",
                "home_address": HOA,
                "id": "mn1@example.net",
                "psk": "test-only pre-shared key, mn1",
            },
            {
                "name": "mn2",
                "home_address": HOA2,
                "id": "mn2@example.net",
                "psk": "0x" + _key(32, 81),
            },
        ],
    },
}

# host -> (rendered file name in its directory, golden file name)
GOLDEN_FILES = {
    "radvd-ha": ("radvd.conf", "radvd-ha.radvd.conf"),
    "rtadvd-ha": ("radvd.conf", "rtadvd-ha.rtadvd.conf"),
    "xfrm-mn": ("mip6-ipsec.xfrm", "xfrm-mn.xfrm"),
    "xfrm-ha": ("mip6-ipsec.xfrm", "xfrm-ha.xfrm"),
    "setkey-mn": ("mip6-ipsec.setkey", "setkey-mn.setkey"),
    "setkey-ha": ("mip6-ipsec.setkey", "setkey-ha.setkey"),
    "swanctl-mn": ("mip6.conf", "swanctl-mn.conf"),
    "swanctl-ha": ("mip6.conf", "swanctl-ha.conf"),
}


# --- running the roles ----------------------------------------------------------------------


def _find_ansible_playbook() -> Path:
    for candidate in (REPO / ".venv/bin/ansible-playbook", Path("/tmp/ansv/bin/ansible-playbook")):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "ansible-playbook not found: looked for /work/main/.venv/bin/ansible-playbook and "
        "/tmp/ansv/bin/ansible-playbook; install ansible-core 2.19 into the project venv "
        "(make venv) to run the role template tests"
    )


class Ansible:
    """ansible-playbook against local-connection hosts, with this repo as the collection."""

    def __init__(self, base: Path) -> None:
        self.playbook = _find_ansible_playbook()
        self.python = self.playbook.parent / "python"
        self.base = base
        collections = base / "collections"
        link = collections / "ansible_collections" / "mobileip" / "mipv6"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(REPO)
        (base / "ansible.cfg").write_text("[defaults]\n")
        self.env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(base / "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": str(collections),
            "ANSIBLE_LOCAL_TEMP": str(base / "ansible-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_DEPRECATION_WARNINGS": "0",
            "ANSIBLE_FORKS": "16",
        }

    def run(
        self,
        name: str,
        hosts: dict[str, dict[str, Any]],
        netns: str | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run the radvd role on radvd-* hosts and the ipsec role on the others."""
        groups: dict[str, dict[str, Any]] = {"radvd_hosts": {}, "ipsec_hosts": {}}
        for host, hostvars in hosts.items():
            group = "radvd_hosts" if "mip6_radvd_interfaces" in hostvars else "ipsec_hosts"
            groups[group][host] = hostvars
        inventory = {
            "all": {
                "vars": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": str(self.python),
                },
                "children": {g: {"hosts": h} for g, h in groups.items()},
            }
        }
        inv = self.base / f"{name}.inventory.json"
        inv.write_text(json.dumps(inventory, indent=1))
        play = self.base / f"{name}.yml"
        # One play: when every host of a play fails, ansible-playbook skips the later plays.
        play.write_text(
            "- hosts: all\n"
            "  gather_facts: false\n"
            "  tasks:\n"
            "    - name: Router advertisements\n"
            "      ansible.builtin.include_role:\n"
            "        name: mobileip.mipv6.radvd\n"
            "      when: \"'radvd_hosts' in group_names\"\n"
            "    - name: IPsec\n"
            "      ansible.builtin.include_role:\n"
            "        name: mobileip.mipv6.ipsec\n"
            "      when: \"'ipsec_hosts' in group_names\"\n"
        )
        argv = [str(self.playbook), "-i", str(inv), str(play)]
        if check:
            argv.append("--check")
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        return subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=180, check=False
        )


def _recap(output: str) -> dict[str, dict[str, int]]:
    recap = {}
    for match in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", output, re.M):
        recap[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return recap


def _with_paths(base: Path, hosts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Point every host's output at base/<host>/ and keep services and packages alone."""
    out = {}
    for host, hostvars in hosts.items():
        directory = base / host
        directory.mkdir(parents=True, exist_ok=True)
        extra: dict[str, Any]
        if "mip6_radvd_interfaces" in hostvars:
            extra = {
                "mip6_radvd_config_path": str(directory / "radvd.conf"),
                "mip6_radvd_service_manage": False,
                "mip6_radvd_package_manage": False,
            }
        else:
            extra = {
                "mip6_ipsec_home_agent_address": HA,
                "mip6_ipsec_apply": False,
                "mip6_ipsec_package_manage": False,
                "mip6_ipsec_config_dir": str(directory),
                "mip6_ipsec_swanctl_conf_path": str(directory / "mip6.conf"),
            }
        out[host] = {**extra, **hostvars}
    return out


@pytest.fixture(scope="module")
def ansible(tmp_path_factory: pytest.TempPathFactory) -> Ansible:
    return Ansible(tmp_path_factory.mktemp("mip6-roles"))


@pytest.fixture(scope="module")
def rendered(ansible: Ansible) -> dict[str, Path]:
    """Every good variable set rendered once (apply off); host -> its output directory."""
    hosts = _with_paths(ansible.base / "out", {**RADVD_HOSTS, **IPSEC_HOSTS})
    result = ansible.run("render", hosts)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return {host: ansible.base / "out" / host for host in hosts}


# --- rendering, idempotence, golden files -----------------------------------------------------


def test_second_run_changes_nothing(ansible: Ansible, rendered: dict[str, Path]) -> None:
    hosts = _with_paths(ansible.base / "out", {**RADVD_HOSTS, **IPSEC_HOSTS})
    result = ansible.run("render-again", hosts)
    assert result.returncode == 0, result.stdout[-4000:]
    recap = _recap(result.stdout)
    assert set(recap) == set(hosts)
    assert all(r["changed"] == 0 and r["failed"] == 0 for r in recap.values()), recap


def test_check_mode_on_fresh_hosts_writes_nothing(ansible: Ansible) -> None:
    chosen = ("radvd-ha", "rtadvd-ha", "xfrm-ha", "setkey-mn", "swanctl-mn")
    every = {**RADVD_HOSTS, **IPSEC_HOSTS}
    hosts = _with_paths(ansible.base / "check", {h: every[h] for h in chosen})
    result = ansible.run("check", hosts, check=True)
    assert result.returncode == 0, result.stdout[-4000:]
    recap = _recap(result.stdout)
    assert all(recap[h]["changed"] > 0 and recap[h]["failed"] == 0 for h in chosen), recap
    for host in chosen:
        assert not list((ansible.base / "check" / host).iterdir()), host


def test_secret_files_are_private(rendered: dict[str, Path]) -> None:
    for host in IPSEC_HOSTS:
        files = [p for p in rendered[host].iterdir() if p.is_file()]
        assert files, host
        for path in files:
            assert path.stat().st_mode & 0o777 == 0o600, path


def _strip_review_header(text: str) -> str:
    return "".join(line for line in text.splitlines(True) if not line.startswith("#|"))


@pytest.mark.parametrize("host", sorted(GOLDEN_FILES))
def test_rendering_matches_the_reviewed_golden_file(host: str, rendered: dict[str, Path]) -> None:
    name, golden_name = GOLDEN_FILES[host]
    got = (rendered[host] / name).read_text()
    golden = GOLDEN / golden_name
    if os.environ.get("MIP6_UPDATE_GOLDEN") == "1":
        old = golden.read_text() if golden.exists() else ""
        header = "".join(line for line in old.splitlines(True) if line.startswith("#|"))
        golden.write_text(header + got)
    text = golden.read_text()
    assert text.startswith("#|"), f"{golden} needs its review header"
    assert got == _strip_review_header(text), f"{host}: rendering differs from {golden}"


# --- radvd: configtest and the wire -------------------------------------------------------------


def test_radvd_configtest_accepts_the_rendered_files(rendered: dict[str, Path]) -> None:
    for host in ("radvd-ha", "radvd-ar"):
        result = subprocess.run(
            ["radvd", "--configtest", "-C", str(rendered[host] / "radvd.conf")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr


def _router_advertisements(conf: Path, ifname: str, count: int) -> list[dict[str, str]]:
    """Run radvd with conf on ifname in a namespace; mip6dump's JSON of the first RAs."""
    records: list[dict[str, str]] = []
    with namespaces("rtr", "host") as ns:
        try:
            veth(ns["rtr"], ifname, ns["host"], "m6h0")
            run_in(ns["rtr"], "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", check=True)
            dump = popen_in(
                ns["host"],
                sys.executable,
                "-m",
                "mip6agent.cli.mip6dump",
                "-i",
                "m6h0",
                "-c",
                str(count),
                "-T",
                "json",
                cwd=AGENT_DIR,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            radvd = None
            try:
                time.sleep(0.4)  # the capture socket is open
                log = conf.with_suffix(".log")
                radvd = popen_in(
                    ns["rtr"],
                    "radvd",
                    "-n",
                    "-C",
                    str(conf),
                    "-p",
                    str(conf.with_suffix(".pid")),
                    "-m",
                    "logfile",
                    "-l",
                    str(log),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                out, err = dump.communicate(timeout=15)
                assert dump.returncode == 0, err
                records = [json.loads(line) for line in out.splitlines()]
            finally:
                if dump.poll() is None:
                    dump.kill()
                    dump.wait()
                if radvd is not None:
                    stop_daemon(radvd)
                    if radvd.stderr:
                        radvd.stderr.close()
        finally:
            for name in ns.values():
                kill_namespace_processes(name)
    return records


@needs_root
def test_radvd_home_agent_advertisements_on_the_wire(rendered: dict[str, Path]) -> None:
    records = _router_advertisements(rendered["radvd-ha"] / "radvd.conf", "m6ha0", 2)
    assert len(records) == 2
    for ra in records:
        assert ra["icmpv6.type"] == "134"
        assert ra["icmpv6.nd.ra.flag.h"] == "1"
        assert ra["icmpv6.nd.ra.router_lifetime"] == "1800"
        # R flag with the full router address on the first prefix, not on the second.
        assert ra["icmpv6.opt.prefix"] == f"{HA},2001:db8:10::"
        assert ra["icmpv6.opt.prefix.flag.r"] == "1,0"
        assert ra["icmpv6.opt.prefix.preferred_lifetime"] == "14400,3600"
        # radvd 2.19 adds 20 ms of leeway below 0.2 s (defaults.h
        # Cautious_MaxRtrAdvInterval): MaxRtrAdvInterval 0.07 s is advertised as 90 ms.
        assert ra["icmpv6.opt.advertisement_interval"] == "90"
        # Unsigned (RFC 6275 7.4): a value above 32767 must reach the wire as written.
        assert ra["icmpv6.opt.home_agent_preference"] == "65000"
        assert ra["icmpv6.opt.home_agent_lifetime"] == "300"


@needs_root
def test_radvd_access_router_advertisements_on_the_wire(rendered: dict[str, Path]) -> None:
    (ra,) = _router_advertisements(rendered["radvd-ar"] / "radvd.conf", "m6ar0", 1)
    assert ra["icmpv6.nd.ra.flag.h"] == "0"
    assert ra["icmpv6.opt.prefix"] == "2001:db8:2::fffe"
    assert ra["icmpv6.opt.prefix.flag.r"] == "1"
    assert ra["icmpv6.opt.advertisement_interval"] == "1500"  # exact from 0.2 s up
    assert "icmpv6.opt.home_agent_preference" not in ra


# --- validation ---------------------------------------------------------------------------------

BAD_MIN_MAX = {
    "name": "m6bad0",
    "min_interval": 0.06,
    "max_interval": 0.07,
    "advertisement_interval_option": True,
    "prefixes": [{"prefix": "2001:db8:1::/64", "router_address": HA}],
}

BAD_HOSTS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "radvd-bad-minmax": (
        {"mip6_radvd_flavor": "radvd", "mip6_radvd_interfaces": [BAD_MIN_MAX]},
        [
            "radvd-bad-minmax: mip6_radvd_interfaces[0].min_interval is 0.06 s but must be at "
            "most 0.75 x max_interval"
        ],
    ),
    "radvd-bad-ha": (
        {
            "mip6_radvd_flavor": "radvd",
            "mip6_radvd_interfaces": [
                {
                    "name": "m6bad1",
                    "min_interval": 0.03,
                    "max_interval": 0.07,
                    "home_agent": {"preference": -5, "lifetime": 70000},
                    "prefixes": [
                        {"prefix": "2001:db8:1::/64"},
                        {"prefix": "2001:db8:5::/64", "router_address": "2001:db8:6::1"},
                    ],
                }
            ],
        },
        [
            "radvd-bad-ha: mip6_radvd_interfaces[0].home_agent.preference is -5 but must be "
            "0..65535",
            "radvd-bad-ha: mip6_radvd_interfaces[0].home_agent.lifetime is 70000 s but must be "
            "1..65520",
            "radvd-bad-ha: mip6_radvd_interfaces[0].prefixes[1].router_address 2001:db8:6::1 is "
            "not inside its prefix 2001:db8:5::/64",
        ],
    ),
    "radvd-bad-noaddr": (
        {
            "mip6_radvd_flavor": "radvd",
            "mip6_radvd_interfaces": [
                {
                    "name": "m6bad2",
                    "home_agent": {"preference": 1},
                    "prefixes": [{"prefix": "2001:db8:1::/64"}],
                }
            ],
        },
        [
            "radvd-bad-noaddr: mip6_radvd_interfaces[0].home_agent is set but no prefix of "
            "mip6_radvd_interfaces[0] has a router_address"
        ],
    ),
    "rtadvd-bad-fraction": (
        {
            "mip6_radvd_flavor": "rtadvd",
            "mip6_radvd_interfaces": [
                {
                    "name": "em0",
                    "min_interval": 0.03,
                    "max_interval": 0.07,
                    "prefixes": [{"prefix": "2001:db8:1::/64", "router_address": HA}],
                }
            ],
        },
        [
            "rtadvd-bad-fraction: mip6_radvd_interfaces[0] has min_interval 0.03 and "
            "max_interval 0.07, but KAME rtadvd reads maxinterval#/mininterval# as whole seconds"
        ],
    ),
    "ipsec-bad": (
        {
            "mip6_ipsec_node": "mobile_node",
            "mip6_ipsec_mode": "tunnel",
            "mip6_ipsec_mobile_nodes": [
                {
                    "home_address": "2001:db8:1::100/64",
                    "sa": {
                        "mn_to_ha": {"spi": 200, "enc_key": "0x" + "ab" * 20},
                        "ha_to_mn": {"spi": 0x1002, "enc_key": _key(36, 3)},
                    },
                }
            ],
        },
        [
            "ipsec-bad: mip6_ipsec_mobile_nodes[0].home_address is 2001:db8:1::100/64, not an "
            "IPv6 address",
            "ipsec-bad: mip6_ipsec_mobile_nodes[0].care_of_address is not set, but "
            "mip6_ipsec_mode=tunnel",
            "ipsec-bad: mip6_ipsec_mobile_nodes[0].sa.mn_to_ha.spi is 200 but must be "
            "256..4294967295",
            "ipsec-bad: mip6_ipsec_mobile_nodes[0].sa.mn_to_ha.enc_key must be 72 hex digits "
            "(36 bytes) for ESP with aes-gcm-256",
            "ipsec-bad: mip6_ipsec_mobile_nodes[0].tunnel_sa is not set",
        ],
    ),
    "swanctl-bad": (
        {
            "mip6_ipsec_node": "home_agent",
            "mip6_ipsec_backend": "swanctl",
            "mip6_ipsec_mobile_nodes": [{"home_address": HOA, "psk": 'short"'}],
        },
        ["swanctl-bad: mip6_ipsec_mobile_nodes[0].psk must be at least 20 characters"],
    ),
}


def test_radvd_configtest_accepts_min_above_three_quarters_of_max(tmp_path: Path) -> None:
    """The reason the role checks Min <= 0.75 x Max itself: configtest lets it through."""
    conf = tmp_path / "radvd.conf"
    conf.write_text(
        "interface m6bad0 {\n    AdvSendAdvert on;\n    MinRtrAdvInterval 0.06;\n"
        "    MaxRtrAdvInterval 0.07;\n    AdvIntervalOpt on;\n"
        f"    prefix {HA}/64 {{ AdvRouterAddr on; }};\n}};\n"
    )
    result = subprocess.run(
        ["radvd", "--configtest", "-C", str(conf)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_wrong_variables_give_one_message_naming_variable_and_host(ansible: Ansible) -> None:
    hosts = _with_paths(ansible.base / "bad", {h: v for h, (v, _) in BAD_HOSTS.items()})
    result = ansible.run("bad", hosts)
    assert result.returncode != 0
    recap = _recap(result.stdout)
    for host, (_, expected) in BAD_HOSTS.items():
        assert recap[host]["failed"] == 1, (host, recap)
        fatal = [line for line in result.stdout.splitlines() if line.startswith(f"fatal: [{host}]")]
        assert len(fatal) == 1, (host, fatal)
        for text in expected:
            assert text in fatal[0], (host, text, fatal[0])
        # Nothing was written.
        assert not [p for p in (ansible.base / "bad" / host).iterdir()], host
    assert "ab" * 20 not in result.stdout  # a key's value is never shown


# --- ip xfrm: the policies parse; the role refuses a kernel without ESP ------------------------


def _policies(ns: str) -> str:
    return subprocess.run(
        ["ip", "-n", ns, "xfrm", "policy", "show"], capture_output=True, text=True, check=True
    ).stdout


def _states(ns: str) -> str:
    return subprocess.run(
        ["ip", "-n", ns, "xfrm", "state", "show"], capture_output=True, text=True, check=True
    ).stdout


def _batch(ns: str, lines: list[str], force: bool = False) -> subprocess.CompletedProcess[str]:
    argv = ["ip", "-n", ns, *(["-force"] if force else []), "-batch", "-"]
    return subprocess.run(
        argv, input="\n".join(lines) + "\n", capture_output=True, text=True, check=False
    )


def _kernel_has_esp(ns: str) -> bool:
    """Whether ESP exists in the kernel (an SA with the null cipher; in a throwaway netns)."""
    probe = "xfrm state add src ::1 dst ::1 proto esp spi 0xfffffff1 mode transport"
    result = subprocess.run(
        ["ip", "-n", ns, *probe.split(), "enc", "ecb(cipher_null)", ""],
        capture_output=True,
        text=True,
        check=False,
    )
    return "Requested type not found" not in result.stderr


@needs_root
@pytest.mark.parametrize("host", ["xfrm-mn", "xfrm-ha"])
def test_xfrm_policies_parse_with_the_real_ip(host: str, rendered: dict[str, Path]) -> None:
    lines = (rendered[host] / "mip6-ipsec.xfrm").read_text().splitlines()
    policy_lines = [line for line in lines if line.startswith("xfrm policy add ")]
    expected = len(IPSEC_HOSTS[host]["mip6_ipsec_mobile_nodes"]) * (
        4 + (3 if host == "xfrm-ha" else 0)
    )
    assert len(policy_lines) == expected
    flush = (rendered[host] / "mip6-ipsec-flush.xfrm").read_text().splitlines()
    with namespaces("xfrm") as ns:
        name = ns["xfrm"]
        applied = _batch(name, policy_lines)
        assert applied.returncode == 0, applied.stderr
        shown = _policies(name)
        assert shown.count("\tdir ") == expected
        if host == "xfrm-mn":
            assert f"src {HOA}/128 dst {HA}/128 proto mobility-header type 5 \n\tdir out" in shown
            assert f"src {HA}/128 dst {HOA}/128 proto mobility-header type 6 \n\tdir in" in shown
            assert f"src {HOA}/128 dst {HA}/128 proto ipv6-icmp type 146 \n\tdir out" in shown
            assert f"src {HA}/128 dst {HOA}/128 proto ipv6-icmp type 147 \n\tdir in" in shown
            assert shown.count("level") == 0  # "required" is the default and not printed
        else:
            assert f"src {HOA}/128 dst ::/0 \n\tdir fwd priority 2000" in shown
            assert f"tmpl src {COA} dst {HA}\n\t\tproto esp reqid 6276 mode tunnel" in shown
            assert f"tmpl src {HA} dst {COA2}\n\t\tproto esp reqid 6278 mode tunnel" in shown
            assert f"src {HA}/128 dst {HOA2}/128 proto mobility-header type 6 \n\tdir out" in shown
        # The flush file removes exactly these policies again.
        removed = _batch(name, [line for line in flush if line.startswith("xfrm policy delete")])
        assert removed.returncode == 0, removed.stderr
        assert _policies(name) == ""
        if not _kernel_has_esp(name):
            # The whole file stops at its first SA, before any policy (ip -batch order).
            whole = _batch(name, lines)
            assert whole.returncode != 0
            assert "Requested type not found" in whole.stderr or "not found" in whole.stderr
            assert _policies(name) == ""


@needs_root
def test_role_refuses_to_apply_without_esp_and_leaves_no_policy(ansible: Ansible) -> None:
    chosen = {
        "xfrm-mn": IPSEC_HOSTS["xfrm-mn"],
        "xfrm-ha-ah": {
            **IPSEC_HOSTS["setkey-mn"],
            "mip6_ipsec_backend": "xfrm",
            "mip6_ipsec_node": "home_agent",
        },
        # Transport: tunnel mode with apply is refused before the probe (test_ipsec_esp.py).
        "swanctl-mn": {**IPSEC_HOSTS["swanctl-mn"], "mip6_ipsec_mode": "transport"},
    }
    hosts = _with_paths(ansible.base / "apply", chosen)
    for hostvars in hosts.values():
        hostvars["mip6_ipsec_apply"] = True
    with namespaces("apply") as ns:
        name = ns["apply"]
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        has_esp = _kernel_has_esp(name)
        if has_esp:
            pytest.skip("this kernel has ESP: the refusal cannot be shown here")
        result = ansible.run("apply", hosts, netns=name)
        assert result.returncode != 0
        lines = result.stdout.splitlines()
        fatal = {host: [x for x in lines if x.startswith(f"fatal: [{host}]")] for host in hosts}
        assert ESP_MISSING in fatal["xfrm-mn"][0]
        assert "xfrm-mn: this kernel has no ESP" in fatal["xfrm-mn"][0]
        assert "this kernel has no AH (CONFIG_INET6_AH)" in fatal["xfrm-ha-ah"][0]
        assert ESP_MISSING in fatal["swanctl-mn"][0]
        # The probe's throwaway SA is gone too, and nothing else was installed.
        assert _policies(name) == ""
        assert _states(name) == ""
        # The files were rendered (render-then-refuse), privately.
        batch = ansible.base / "apply" / "xfrm-mn" / "mip6-ipsec.xfrm"
        assert batch.stat().st_mode & 0o777 == 0o600


# --- swanctl: loaded into a real charon ---------------------------------------------------------

STRONGSWAN_CONF = """\
charon-systemd {{
  load_modular = yes
  install_routes = no
  plugins {{
    include /etc/strongswan.d/charon/*.conf
    vici {{
      socket = unix://{socket}
    }}
  }}
  journal {{
    default = -1
  }}
  filelog {{
    test {{
      path = {log}
      default = 1
    }}
  }}
}}
"""


@contextlib.contextmanager
def _charon(ns: str, workdir: Path) -> Iterator[dict[str, Any]]:
    socket_path = workdir / "charon.vici"
    conf = workdir / "strongswan.conf"
    conf.write_text(STRONGSWAN_CONF.format(socket=socket_path, log=workdir / "charon.log"))
    env = {**os.environ, "STRONGSWAN_CONF": str(conf)}
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, "/usr/sbin/charon-systemd"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        end = time.monotonic() + 10
        while not socket_path.exists():
            assert proc.poll() is None, (workdir / "charon.log").read_text()
            assert time.monotonic() < end, "charon did not open its vici socket"
            time.sleep(0.05)
        yield {"env": env, "uri": f"unix://{socket_path}"}
    finally:
        stop_daemon(proc)


def _swanctl(ns: str, charon: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "swanctl", *args, "--uri", charon["uri"]],
        env=charon["env"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@needs_root
@pytest.mark.skipif(
    not (shutil.which("swanctl") and Path("/usr/sbin/charon-systemd").exists()),
    reason="strongSwan is not installed (apt-get install strongswan-swanctl charon-systemd)",
)
def test_swanctl_files_load_into_charon(rendered: dict[str, Path], tmp_path: Path) -> None:
    with namespaces("ike") as ns:
        name = ns["ike"]
        try:
            with _charon(name, tmp_path) as charon:
                loaded = _swanctl(
                    name, charon, "--load-all", "--file", str(rendered["swanctl-mn"] / "mip6.conf")
                )
                assert loaded.returncode == 0, loaded.stdout + loaded.stderr
                assert "loaded ike secret 'ike-mip6-mn1'" in loaded.stdout
                assert "successfully loaded 1 connections" in loaded.stdout
                conns = _swanctl(name, charon, "--list-conns").stdout
                assert "mip6-mn1-mh: TRANSPORT_PROXY" in conns
                assert f"local:  {HOA}/128[mobility-header]" in conns
                assert f"remote: {HA}/128[ipv6-icmp/147]" in conns
                assert "mip6-mn1-payload: TUNNEL" in conns
                # start_action=trap: charon installed the policies in the kernel. They show
                # how strongSwan maps the selectors: all MH types, ICMPv6 146 and 147.
                pols = _policies(name)
                assert f"src {HOA}/128 dst {HA}/128 proto mobility-header \n\tdir out" in pols
                assert f"src {HOA}/128 dst {HA}/128 proto ipv6-icmp type 146 \n\tdir out" in pols
                assert f"src {HA}/128 dst {HOA}/128 proto ipv6-icmp type 147 \n\tdir in" in pols
                assert f"src {HOA}/128 dst ::/0 \n\tdir out" in pols

                loaded = _swanctl(
                    name, charon, "--load-all", "--file", str(rendered["swanctl-ha"] / "mip6.conf")
                )
                assert loaded.returncode == 0, loaded.stdout + loaded.stderr
                assert "successfully loaded 2 connections" in loaded.stdout
                conns = _swanctl(name, charon, "--list-conns").stdout
                assert "mip6-mn2-mh: TRANSPORT_PROXY" in conns
                assert f"remote: {HOA2}/128[ipv6-icmp/146]" in conns
                assert f"local:  {HA}/128[ipv6-icmp/147]" in conns
        finally:
            kill_namespace_processes(name)
