"""mip6_capabilities with a simulated ``ip``: answers, data plane choice, and cleanup."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("ansible", reason="ansible-core is not installed in this environment")

from ansible.module_utils import basic
from ansible_collections.mobileip.mipv6.plugins.modules import mip6_capabilities
from mip6_unit_helpers import run_module

pytestmark = pytest.mark.usefixtures("ansible_module")

THIS_KERNEL = {"seg6", "seg6local", "rules"}
DISTRO_KERNEL = {"seg6", "seg6local", "rules", "ip6tnl", "esp", "mip6"}


class FakeHost:
    """``ip``, ``nft`` and ``radvd`` as a kernel with the given features would answer."""

    def __init__(self, features: set[str], binaries: tuple[str, ...] = ("ip", "nft", "radvd")):
        self.features = features
        self.binaries = binaries
        self.objects: set[tuple[str, ...]] = set()
        self.calls: list[list[str]] = []
        self.fail_removal = False

    def get_bin_path(self, name: str, *args: Any, **kwargs: Any) -> str | None:
        return f"/usr/sbin/{name}" if name in self.binaries else None

    def run_command(self, argv: list[str], *args: Any, **kwargs: Any):
        self.calls.append(argv)
        tool, rest = argv[0].rsplit("/", 1)[-1], argv[1:]
        if tool == "nft":
            if rest == ["--version"]:
                return 0, "nftables v1.0.6 (Lester Gooch #5)\n", ""
            return 0, "", ""
        if tool == "radvd":
            return 0, "Version: 2.19\n\nCompiled in settings:\n", ""
        if tool == "clang":
            return 0, "", ""
        return self._ip(rest)

    def _ip(self, args: list[str]) -> tuple[int, str, str]:
        words = [a for a in args if a != "-6"]
        kind = words[0]
        verb = words[2] if kind == "xfrm" else words[1]
        if verb in ("del", "deleteall"):
            key = self._key(words)
            if self.fail_removal or key not in self.objects:
                return 2, "", "RTNETLINK answers: No such process\n"
            self.objects.discard(key)
            return 0, "", ""
        route = "seg6local" if "seg6local" in words else "bpf" if "bpf" in words else "seg6"
        feature = {
            "route": route,
            "rule": "rules",
            "link": "ip6tnl",
            "xfrm": "esp" if "esp" in words else "mip6",
        }[kind]
        if feature not in self.features:
            error = {
                "seg6": "Error: Unknown encapsulation type.",
                "seg6local": "Error: Unknown encapsulation type.",
                "bpf": "Error: Unknown encapsulation type.",
                "rules": "Error: argument ipproto is wrong.",
                "ip6tnl": "Error: Unknown device type.",
                "esp": "Error: Requested type not found.",
                "mip6": "Error: Requested type not found.",
            }[feature]
            return 2, "", error + "\n"
        self.objects.add(self._key(words))
        return 0, "", ""

    @staticmethod
    def _key(words: list[str]) -> tuple[str, ...]:
        kind = words[0]
        if kind == "route":
            return ("route", words[2])
        if kind == "rule":
            return ("rule", *words[2:])
        if kind == "link":
            return ("link", words[2])
        proto = words[words.index("proto") + 1]
        return ("xfrm", proto)


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch):
    def install(features: set[str], **kwargs: Any) -> FakeHost:
        fake = FakeHost(features, **kwargs)
        monkeypatch.setattr(basic.AnsibleModule, "get_bin_path", fake.get_bin_path)
        monkeypatch.setattr(basic.AnsibleModule, "run_command", fake.run_command)
        return fake

    monkeypatch.setattr(mip6_capabilities, "open_raw_mh", lambda: None)
    return install


def probe(check: bool = False) -> dict:
    return run_module(mip6_capabilities.main, {"_ansible_check_mode": True} if check else {})


def facts(result: dict) -> dict:
    assert not result.get("failed"), result.get("msg")
    return result["ansible_facts"]["mip6_capabilities"]


def test_this_kernel_seg6_only(host) -> None:
    fake = host(THIS_KERNEL)
    result = probe()
    caps = facts(result)
    assert result["changed"] is False
    assert caps["seg6"] is True and caps["dataplane"] == "seg6"
    assert caps["ip6tnl"] is False and caps["esp"] is False and caps["mip6"] is False
    assert caps["raw_mh"] is True and caps["nftables"] is True and caps["radvd"] is True
    assert caps["reasons"]["esp"].endswith("Error: Requested type not found.")
    assert "Unknown device type" in caps["reasons"]["ip6tnl"]
    assert caps["reasons"]["seg6"] == "encap.red route ok, seg6local ok, ipproto rules ok"
    assert caps["reasons"]["radvd"] == "/usr/sbin/radvd Version: 2.19"
    assert fake.objects == set(), "a probe left something behind"


def test_distro_kernel_has_everything(host) -> None:
    fake = host(DISTRO_KERNEL)
    caps = facts(probe())
    assert all(caps[k] for k in ("seg6", "ip6tnl", "esp", "mip6"))
    assert caps["dataplane"] == "seg6"
    assert fake.objects == set()
    added = [c for c in fake.calls if "add" in c]
    assert all(any("2001:db8:" in a for a in c) for c in added), "documentation addresses only"
    tunnel = next(c for c in added if "ip6tnl" in c)
    assert tunnel[tunnel.index("add") + 1].startswith("m6cap")


def test_ip6tnl_when_seg6_is_missing(host) -> None:
    host({"ip6tnl"})
    caps = facts(probe())
    assert caps["seg6"] is False and caps["ip6tnl"] is True and caps["dataplane"] == "ip6tnl"


def test_neither_data_plane(host) -> None:
    host(set())
    caps = facts(probe())
    assert caps["dataplane"] is None
    assert "agent cannot run here" in caps["reasons"]["dataplane"]


def test_the_ebpf_tunnel_when_neither_seg6_nor_ip6tnl(host) -> None:
    fake = host({"bpf"}, binaries=("ip", "nft", "radvd", "clang", "bpftool"))
    caps = facts(probe())
    assert caps["bpf"] is True and caps["dataplane"] == "bpf", caps["reasons"]
    compiled = [c for c in fake.calls if c[0].endswith("clang")]
    assert len(compiled) == 1 and "bpf" in compiled[0]
    assert fake.objects == set()  # the probe route went again
    # Without clang the reason says what to install; with seg6 it is not even tried.
    host({"bpf"})
    caps = facts(probe())
    assert caps["dataplane"] is None and "clang not found" in caps["reasons"]["bpf"]
    fake = host(THIS_KERNEL, binaries=("ip", "nft", "radvd", "clang", "bpftool"))
    caps = facts(probe())
    assert caps["dataplane"] == "seg6" and caps["bpf"] is False
    assert not [c for c in fake.calls if c[0].endswith("clang")]


def test_partial_seg6_probe_is_undone(host) -> None:
    # the encap route works, the ipproto rule does not: seg6 is false and the route goes
    fake = host({"seg6", "seg6local"})
    caps = facts(probe())
    assert caps["seg6"] is False and "ipproto 41" in caps["reasons"]["seg6"]
    assert fake.objects == set()
    removed = [c for c in fake.calls if "del" in c]
    assert len(removed) == 2, "both routes removed"


def test_seg6local_is_optional(host) -> None:
    fake = host({"seg6", "rules"})
    caps = facts(probe())
    assert caps["seg6"] is True and "seg6local not available" in caps["reasons"]["seg6"]
    assert fake.objects == set()


def test_check_mode_probes_too(host) -> None:
    fake = host(THIS_KERNEL)
    result = probe(check=True)
    assert facts(result)["seg6"] is True and result["changed"] is False
    assert fake.objects == set()


def test_without_ip_nft_radvd(host) -> None:
    host(DISTRO_KERNEL, binaries=())
    caps = facts(probe())
    assert not any(caps[k] for k in ("seg6", "ip6tnl", "esp", "mip6", "nftables", "radvd"))
    assert caps["reasons"]["seg6"] == "ip (iproute2) not found: cannot probe"
    assert caps["reasons"]["nftables"] == "nft not found (install nftables)"
    assert caps["reasons"]["radvd"] == "radvd not found (install radvd)"


def test_raw_socket_refused(host, monkeypatch: pytest.MonkeyPatch) -> None:
    host(THIS_KERNEL)

    def refuse() -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(mip6_capabilities, "open_raw_mh", refuse)
    caps = facts(probe())
    assert caps["raw_mh"] is False
    assert caps["reasons"]["raw_mh"] == "socket(AF_INET6, SOCK_RAW, 135): Operation not permitted"


def test_a_leftover_fails_the_task(host) -> None:
    fake = host(THIS_KERNEL)
    fake.fail_removal = True
    result = probe()
    assert result["failed"]
    assert result["msg"].startswith("a probe could not remove what it created: ip -6 rule del")
    assert "ip -6 route del 2001:db8:" in result["msg"]
