"""Route optimisation with the kernel's MIP6 XFRM states (``mode ro``), for kernels built
with ``CONFIG_IPV6_MIP6`` (the probe's ``mip6`` capability); the second backend next to
the TC eBPF programs of :mod:`.ro_bpf`, with the same binding interface for the
correspondent node.

Per binding (correspondent ``cn``, home address ``home``, care-of address ``coa``), driven
through ``ip xfrm`` (iproute2):

- out, CN -> MN: a ``proto route2 mode ro`` state ``src cn dst home coa coa`` and a policy
  ``dir out`` for ``cn -> home`` with template ``proto route2 mode ro``: the kernel
  (net/ipv6/mip6.c, ``mip6_rthdr_output``) sends the packet to the care-of address with a
  Type 2 Routing Header holding the home address;
- in, MN -> CN: a ``proto hao mode ro`` state ``src home dst cn coa coa``: a packet from the
  care-of address with a Home Address option is accepted (``xfrm6_input_addr`` /
  ``mip6_destopt_input`` find this state and check the source is its care-of address) and
  its source becomes the home address; a policy ``dir in`` for ``home -> cn`` with an
  optional (``level use``) ``proto hao mode ro`` template lets the socket layer accept
  the packet whose security path holds that non-transport state. Without the state the
  kernel discards a packet with a Home Address option.

Every state and template carries :data:`REQID` and every policy :data:`PRIORITY`, which
is how :meth:`RoXfrm.bindings` tells ours from anyone else's (and how a restart finds what
a previous run left). Counters are the states' packet counts (``ip -s xfrm state``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from ipaddress import IPv6Address

from .ro_bpf import RoBinding, Role

REQID = 0x6D697036  # "mip6"
PRIORITY = 0x6D36  # our policies' priority
_STATE_HEAD = re.compile(r"^src (\S+) dst (\S+)$")
_PROTO = re.compile(r"^\s*proto (route2|hao) .*reqid (\d+).*mode ro")
_COA = re.compile(r"^\s*coa (\S+)")
_PACKETS = re.compile(r"^\s*(\d+)\(bytes\), (\d+)\(packets\)")


class RoXfrmError(Exception):
    """An ``ip xfrm`` command failed; the message carries its error."""


def available() -> tuple[bool, str]:
    """Whether the XFRM ro backend can run here (the probe's ``mip6``), and why not."""
    if shutil.which("ip") is None:
        return False, "no ip (iproute2) command"
    from .probe import probe

    caps = probe()
    if not caps.mip6:
        return False, f"no kernel MIP6 XFRM: {caps.reasons.get('mip6', 'probe said no')}"
    return True, "kernel MIP6 XFRM states (mode ro)"


class RoXfrm:
    """The correspondent's bindings as XFRM ro states and policies in this namespace."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns

    def _ip(self, *args: str) -> str:
        command = ["ip"]
        if self.netns is not None:
            command += ["-n", self.netns]
        command += list(args)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RoXfrmError(f"{' '.join(command)}: {done.stderr.strip() or done.returncode}")
        return done.stdout

    def load(self) -> bool:
        """Nothing to load (the kernel has it); True for the same call shape as RoBpf."""
        return True

    def add_binding(self, role: Role, cn: IPv6Address, home: IPv6Address, coa: IPv6Address) -> None:
        """Install (or update to a new care-of address) the binding's states and policies."""
        if role != "cn":
            raise RoXfrmError("the XFRM ro backend serves the correspondent node only")
        c, h, a = str(cn), str(home), str(coa)
        common = ["reqid", str(REQID), "mode", "ro", "coa", a]
        self._ip("xfrm", "state", "update" if self._has_state(c, h) else "add",
                 "src", c, "dst", h, "proto", "route2", *common,
                 "sel", "src", f"{c}/128", "dst", f"{h}/128")  # fmt: skip
        self._ip("xfrm", "state", "update" if self._has_state(h, c) else "add",
                 "src", h, "dst", c, "proto", "hao", *common,
                 "sel", "src", f"{h}/128", "dst", f"{c}/128")  # fmt: skip
        self._ip("xfrm", "policy", "update", "src", f"{c}/128", "dst", f"{h}/128",
                 "dir", "out", "priority", str(PRIORITY),
                 "tmpl", "src", c, "dst", h, "proto", "route2", "reqid", str(REQID),
                 "mode", "ro", "level", "use")  # fmt: skip
        self._ip("xfrm", "policy", "update", "src", f"{h}/128", "dst", f"{c}/128",
                 "dir", "in", "priority", str(PRIORITY),
                 "tmpl", "src", h, "dst", c, "proto", "hao", "reqid", str(REQID),
                 "mode", "ro", "level", "use")  # fmt: skip

    def _has_state(self, src: str, dst: str) -> bool:
        return any((s, d) == (IPv6Address(src), IPv6Address(dst)) for s, d, *_ in self._states())

    def remove_binding(self, role: Role, cn: IPv6Address, home: IPv6Address) -> None:
        """Remove the binding's states and policies (those already gone are skipped)."""
        c, h = str(cn), str(home)
        for args in (
            ("policy", "delete", "src", f"{c}/128", "dst", f"{h}/128", "dir", "out"),
            ("policy", "delete", "src", f"{h}/128", "dst", f"{c}/128", "dir", "in"),
            ("state", "delete", "src", c, "dst", h, "proto", "route2"),
            ("state", "delete", "src", h, "dst", c, "proto", "hao"),
        ):
            try:
                self._ip("xfrm", *args)
            except RoXfrmError as exc:
                if "No such" not in str(exc) and "not found" not in str(exc).lower():
                    raise

    def _states(self) -> list[tuple[IPv6Address, IPv6Address, str, IPv6Address, int]]:
        """Our states: (src, dst, proto, coa, packets)."""
        found = []
        head = proto = coa = None
        packets = 0
        in_current = False

        def flush() -> None:
            if head is not None and proto is not None and coa is not None:
                found.append((IPv6Address(head[0]), IPv6Address(head[1]), proto, coa, packets))

        for line in self._ip("-s", "xfrm", "state", "list").splitlines():
            if m := _STATE_HEAD.match(line):
                flush()
                head, proto, coa, packets, in_current = (m[1], m[2]), None, None, 0, False
            elif (m := _PROTO.match(line)) and int(m[2]) == REQID:
                proto = m[1]
            elif m := _COA.match(line):
                coa = IPv6Address(m[1].split("/")[0])
            elif "lifetime current:" in line:
                in_current = True
            elif in_current and (m := _PACKETS.match(line)):
                packets, in_current = int(m[2]), False
        flush()
        return found

    def bindings(self, role: Role = "cn") -> list[RoBinding]:
        """The bindings whose route2 state is in the kernel, packets counted both ways."""
        if role != "cn":
            return []
        states = self._states()
        hao = {(s, d): n for s, d, proto, _, n in states if proto == "hao"}
        return [
            RoBinding("cn", s, d, coa, packets=n + hao.get((d, s), 0))
            for s, d, proto, coa, n in states
            if proto == "route2"
        ]

    def policies(self) -> list[tuple[str, str, str]]:
        """Our policies: (source prefix, destination prefix, direction)."""
        out = self._ip("xfrm", "policy", "list", "priority", str(PRIORITY))
        found, head = [], None
        for line in out.splitlines():
            words = line.split()
            if line.startswith("src ") and len(words) >= 4:
                head = (words[1], words[3])
            elif head is not None and words[:1] == ["dir"] and len(words) >= 2:
                found.append((*head, words[1]))
                head = None
        return found

    def counters(self) -> dict[str, int]:
        found = self.bindings("cn")
        return {"xfrm_bindings": len(found), "xfrm_packets": sum(b.packets for b in found)}

    def close(self) -> None:
        """Remove every binding of ours (the agent's stop)."""
        for binding in self.bindings("cn"):
            self.remove_binding("cn", binding.cn, binding.home)
        for src, dst, direction in self.policies():  # any left without their states
            self._ip("xfrm", "policy", "delete", "src", src, "dst", dst, "dir", direction)

    detach = close
