#!/usr/bin/python
# Copyright: (c) 2025, Mobile IPv6 fleet suite maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mip6_capabilities
short_description: Probe what the running kernel can do for Mobile IPv6
version_added: 0.1.0
description:
  - "Finds out, by trying, what the running Linux kernel supports for Mobile IPv6, and which
    data plane the agent would pick. Kernel versions and config files are never consulted:
    a distribution may build a feature as a module, patch it or blacklist it."
  - Works whether the agent is installed or not, so roles can run it first and fail early
    with a clear reason.
  - "Each probe creates a throwaway object and removes it at once, also when the probe
    fails: a seg6 C(encap.red) route (and a C(seg6local) route) in an unused routing table
    with an C(ipproto 41) rule; an C(ip6tnl) device; an ESP xfrm state with a test key;
    Mobile IPv6 C(route2) and C(hao) xfrm states; and, only when neither seg6 nor ip6tnl
    works, an C(encap bpf xmit) route running a minimal program compiled with clang (the
    agent's eBPF tunnel). Addresses come from the documentation prefix C(2001:db8::/32),
    names start with C(m6cap)."
  - Also checks that a raw Mobility Header socket (C(socket(AF_INET6, SOCK_RAW, 135))) can be
    opened, that C(nft) works, and whether C(radvd) is installed.
author:
  - Mobile IPv6 fleet suite maintainers (@mobileip)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.facts
attributes:
  check_mode:
    support: full
    details:
      - The probes run in check mode too, since a playbook in check mode would otherwise see
        nothing. Every object a probe creates is removed before the module returns, so the
        host ends as it started. C(changed) is always false.
  diff_mode:
    support: none
  facts:
    support: full
  platform:
    platforms: linux
options: {}
requirements:
  - C(ip) from iproute2 (with xfrm support) for the data plane and xfrm probes
  - root (C(CAP_NET_ADMIN), C(CAP_NET_RAW)); run the task with C(become=true).
notes:
  - Probes run in the network namespace the module runs in.
  - A seg6 route needs an up device; in a namespace whose loopback interface is down the
    seg6 probe cannot decide and reports false with that reason.
seealso:
  - module: mobileip.mipv6.mip6_config
"""

EXAMPLES = r"""
- name: Probe the kernel
  mobileip.mipv6.mip6_capabilities:
  become: true

- name: Fail early on a host the agent cannot run on
  ansible.builtin.assert:
    that: ansible_facts.mip6_capabilities.dataplane is not none
    fail_msg: >-
      no Mobile IPv6 data plane on {{ inventory_hostname }}:
      seg6: {{ ansible_facts.mip6_capabilities.reasons.seg6 }};
      ip6tnl: {{ ansible_facts.mip6_capabilities.reasons.ip6tnl }};
      bpf: {{ ansible_facts.mip6_capabilities.reasons.bpf }}

- name: Only configure IPsec where ESP works
  ansible.builtin.debug:
    msg: "ESP available"
  when: ansible_facts.mip6_capabilities.esp
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: complex
  contains:
    mip6_capabilities:
      description: What the kernel accepted, with the reason for each answer.
      returned: always
      type: complex
      contains:
        seg6:
          description:
            - seg6 lightweight tunnels work (C(encap seg6 mode encap.red) routes and
              C(ipproto) rules), the agent's preferred data plane.
          type: bool
          sample: true
        ip6tnl:
          description: IPv6-in-IPv6 tunnel devices (C(CONFIG_IPV6_TUNNEL)).
          type: bool
          sample: false
        bpf:
          description:
            - The agent's eBPF tunnel can run (C(CONFIG_LWTUNNEL_BPF), clang and bpftool
              installed). Probed only when neither seg6 nor ip6tnl works; false otherwise.
          type: bool
          sample: false
        esp:
          description: ESP xfrm states (C(CONFIG_INET6_ESP)), for IPsec between MN and HA.
          type: bool
          sample: false
        mip6:
          description:
            - The kernel's Mobile IPv6 xfrm types, C(route2) and C(hao)
              (C(CONFIG_IPV6_MIP6)). The agent does not need them.
          type: bool
          sample: false
        raw_mh:
          description: A raw Mobility Header socket can be opened (the agent's signalling).
          type: bool
          sample: true
        nftables:
          description: C(nft) is installed and can list the ruleset.
          type: bool
          sample: true
        radvd:
          description: C(radvd) is installed (router advertisements for home links).
          type: bool
          sample: true
        dataplane:
          description:
            - The data plane the agent would pick with C(dataplane=auto), seg6 preferred,
              then ip6tnl, then bpf; null when none works (the agent refuses to start).
          type: str
          sample: seg6
        reasons:
          description: For each key above, what the probe found (the kernel's error text).
          type: dict
          sample:
            seg6: encap.red route ok, seg6local ok, ipproto rules ok
            ip6tnl: "ip link add m6cap4242 type ip6tnl: Error: Unknown device type."
            esp: "ip xfrm state add proto esp: Error: Requested type not found."
"""

import os  # noqa: E402
import platform  # noqa: E402
import socket  # noqa: E402
import tempfile  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

IPPROTO_MH = 135
# Unused routing table ("mipc") and rule preference; documentation addresses (RFC 3849).
TABLE = "1835626595"
RULE_PREF = "32698"
SBIN = ["/usr/sbin", "/sbin", "/usr/local/sbin"]
# The smallest program an "encap bpf xmit" route takes: let every packet through.
BPF_PROBE = """#include <linux/bpf.h>
__attribute__((section("lwt_xmit"), used)) int m6cap(struct __sk_buff *skb) { return BPF_OK; }
char m6cap_license[] __attribute__((section("license"), used)) = "GPL";
"""
# All-zero test keys: the state only has to be accepted, it never protects anything.
TEST_KEYS = ["enc", "cbc(aes)", "0x" + "00" * 16, "auth", "hmac(sha256)", "0x" + "00" * 32]


class Probe:
    """Runs the probes; ``undo`` holds the commands that remove what was created."""

    def __init__(self, module: AnsibleModule, ip: str | None) -> None:
        self.module = module
        self.ip = ip
        tag = os.getpid() & 0xFFFF
        base = f"2001:db8:ffff:{tag:x}"
        self.src, self.dst, self.coa = f"{base}::1", f"{base}::2", f"{base}::3"
        self.link = f"m6cap{os.getpid() % 100000}"
        self.spi = f"0x{0x6D690000 | tag:08x}"
        self.undo: list[list[str]] = []

    # --- helpers --------------------------------------------------------------------------

    def run(self, *args: str) -> tuple[int, str]:
        rc, out, err = self.module.run_command([self.ip, *args])
        return rc, (err or out).strip()

    def create(self, what: str, create: list[str], remove: list[str]) -> None:
        """Run ``ip create``; on success remember ``ip remove``; on failure raise."""
        rc, text = self.run(*create)
        if rc != 0:
            raise ProbeError(f"{what}: {text or f'exit status {rc}'}")
        self.undo.append(remove)

    def cleanup(self) -> list[str]:
        """Remove everything created, newest first; return what could not be removed."""
        left = []
        while self.undo:
            remove = self.undo.pop()
            rc, text = self.run(*remove)
            if rc != 0:
                left.append(f"ip {' '.join(remove)}: {text}")
        return left

    def _ends(self, local: str, remote: str) -> list[str]:
        return [local, self.src, remote, self.dst, "mode", "ip6ip6"]

    # --- probes ---------------------------------------------------------------------------

    def seg6(self) -> str:
        route = [f"{self.dst}/128", "encap", "seg6", "mode", "encap.red", "segs", self.src]
        self.create(
            f"ip -6 route add {self.dst}/128 encap seg6 mode encap.red",
            ["-6", "route", "add", *route, "dev", "lo", "table", TABLE],
            ["-6", "route", "del", f"{self.dst}/128", "table", TABLE],
        )
        notes = ["encap.red route ok"]
        local = [f"{self.src}/128", "encap", "seg6local", "action", "End.DX6", "nh6", "::"]
        rc, text = self.run("-6", "route", "add", *local, "dev", "lo", "table", TABLE)
        if rc == 0:
            self.undo.append(["-6", "route", "del", f"{self.src}/128", "table", TABLE])
            notes.append("seg6local ok")
        else:
            notes.append(f"seg6local not available: {text}")
        rule = ["pref", RULE_PREF, "to", f"{self.dst}/128", "ipproto", "41", "lookup", TABLE]
        self.create(
            "ip -6 rule add ... ipproto 41",
            ["-6", "rule", "add", *rule],
            ["-6", "rule", "del", *rule],
        )
        notes.append("ipproto rules ok")
        return ", ".join(notes)

    def ip6tnl(self) -> str:
        self.create(
            f"ip link add {self.link} type ip6tnl",
            ["-6", "link", "add", self.link, "type", "ip6tnl", *self._ends("local", "remote")],
            ["link", "del", self.link],
        )
        return "ip6tnl device ok"

    def bpf(self) -> str:
        clang = self.module.get_bin_path("clang")
        if clang is None:
            raise ProbeError("clang not found (install clang, libbpf-dev and bpftool)")
        if self.module.get_bin_path("bpftool", opt_dirs=SBIN) is None:
            raise ProbeError("bpftool not found (install bpftool)")
        include = f"/usr/include/{platform.machine()}-linux-gnu"
        with tempfile.TemporaryDirectory(prefix="m6cap") as tmp:
            source, obj = os.path.join(tmp, "probe.c"), os.path.join(tmp, "probe.o")
            with open(source, "w") as handle:
                handle.write(BPF_PROBE)
            rc, out, err = self.module.run_command(
                [clang, "-O2", "-g", "-target", "bpf", f"-I{include}", "-c", source, "-o", obj]
            )
            if rc != 0:
                raise ProbeError(f"clang -target bpf: {(err or out).strip()}")
            route = [f"{self.dst}/128", "encap", "bpf", "xmit", "obj", obj, "section", "lwt_xmit"]
            self.create(
                f"ip -6 route add {self.dst}/128 encap bpf xmit",
                ["-6", "route", "add", *route, "dev", "lo", "table", TABLE],
                ["-6", "route", "del", f"{self.dst}/128", "table", TABLE],
            )
        return "encap bpf xmit route ok"

    def esp(self) -> str:
        sa = ["src", self.src, "dst", self.dst, "proto", "esp", "spi", self.spi]
        self.create(
            "ip xfrm state add proto esp",
            ["xfrm", "state", "add", *sa, "mode", "transport", *TEST_KEYS],
            ["xfrm", "state", "deleteall", "src", self.src, "dst", self.dst, "proto", "esp"],
        )
        return "ESP xfrm state ok"

    def mip6(self) -> str:
        for proto in ("route2", "hao"):
            ends = ["src", self.src, "dst", self.dst, "proto", proto]
            self.create(
                f"ip xfrm state add proto {proto}",
                ["xfrm", "state", "add", *ends, "mode", "ro", "coa", self.coa],
                ["xfrm", "state", "deleteall", *ends],
            )
        return "route2 and hao xfrm states ok"


class ProbeError(Exception):
    pass


def kernel_probes(module: AnsibleModule, ip: str | None) -> tuple[dict, dict, list]:
    found: dict = {}
    reasons: dict = {}
    leftovers: list = []
    names = ("seg6", "ip6tnl", "bpf", "esp", "mip6")
    if ip is None:
        for name in names:
            found[name] = False
            reasons[name] = "ip (iproute2) not found: cannot probe"
        return found, reasons, leftovers
    probe = Probe(module, ip)
    for name in names:
        if name == "bpf" and (found["seg6"] or found["ip6tnl"]):
            found[name] = False  # as the agent: compiled and loaded only when needed
            reasons[name] = "not probed: seg6 or ip6tnl works"
            continue
        try:
            reasons[name] = getattr(probe, name)()
            found[name] = True
        except ProbeError as exc:
            found[name] = False
            reasons[name] = str(exc)
            if name == "seg6" and "not up" in str(exc).lower():
                reasons[name] += " (the loopback interface is down here: seg6 was not decided)"
        finally:
            leftovers += probe.cleanup()
    return found, reasons, leftovers


def open_raw_mh() -> None:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_MH)
    sock.close()


def raw_mh_probe() -> tuple[bool, str]:
    try:
        open_raw_mh()
    except OSError as exc:
        return False, f"socket(AF_INET6, SOCK_RAW, 135): {exc.strerror or exc}"
    return True, "raw Mobility Header socket ok"


def nftables_probe(module: AnsibleModule) -> tuple[bool, str]:
    nft = module.get_bin_path("nft", opt_dirs=SBIN)
    if nft is None:
        return False, "nft not found (install nftables)"
    rc, out, err = module.run_command([nft, "--version"])
    if rc != 0:
        return False, f"nft --version: {(err or out).strip()}"
    version = out.strip()
    rc, out, err = module.run_command([nft, "list", "tables"])
    if rc != 0:
        return False, f"{version}; nft list tables: {(err or out).strip()}"
    return True, f"{version}; nft list tables ok"


def radvd_probe(module: AnsibleModule) -> tuple[bool, str]:
    radvd = module.get_bin_path("radvd", opt_dirs=SBIN)
    if radvd is None:
        return False, "radvd not found (install radvd)"
    _rc, out, err = module.run_command([radvd, "--version"])
    lines = (out or err).strip().splitlines()
    return True, f"{radvd} {lines[0].strip() if lines else ''}".strip()


def run(module: AnsibleModule) -> dict:
    ip = module.get_bin_path("ip", opt_dirs=SBIN)
    found, reasons, leftovers = kernel_probes(module, ip)
    found["raw_mh"], reasons["raw_mh"] = raw_mh_probe()
    found["nftables"], reasons["nftables"] = nftables_probe(module)
    found["radvd"], reasons["radvd"] = radvd_probe(module)
    dataplane = next((name for name in ("seg6", "ip6tnl", "bpf") if found[name]), None)
    reasons["dataplane"] = (
        f"{dataplane} (seg6 preferred, then ip6tnl, then bpf)"
        if dataplane
        else "neither seg6 nor ip6tnl nor the eBPF tunnel works: the agent cannot run here"
    )
    if leftovers:
        module.fail_json(
            msg="a probe could not remove what it created: " + "; ".join(leftovers),
            ansible_facts={"mip6_capabilities": {**found, "dataplane": dataplane}},
        )
    if os.geteuid() != 0:
        module.warn("not running as root: the probes need CAP_NET_ADMIN (use become: true)")
    return {
        "changed": False,
        "ansible_facts": {
            "mip6_capabilities": {**found, "dataplane": dataplane, "reasons": reasons}
        },
    }


def main() -> None:
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    module.run_command_environ_update = {"LANG": "C", "LC_ALL": "C", "LC_MESSAGES": "C"}
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
