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

The mobile node's side (role ``mn``, binding home address ``home`` at ``coa`` with
correspondent ``cn``) is the mirror image:

- out, MN -> CN: a ``proto hao mode ro`` state ``src home dst cn coa coa`` and a policy
  ``dir out`` for ``home -> cn`` with that template: ``mip6_destopt_output`` puts the home
  address in a Home Address option and the care-of address in the source, and the bundle
  is routed from the care-of address (``XFRM_TYPE_LOCAL_COADDR``), so the packet leaves
  by the foreign link, not the reverse tunnel. Two template-less policies of a higher
  priority (:data:`MN_BYPASS_PRIORITY`) let the Mobility Header (protocol 135) and the
  agent's own header-included raw packets (flow protocol 255: HoTI, a deregistration from
  home) from ``home`` to ``cn`` through untouched: the HoTI must take the tunnel (RFC 6275
  11.6.1).
- in, CN -> MN: a ``proto route2 mode ro`` state ``src cn dst home coa coa``: ``ipv6_rthdr_rcv``
  finds it for a Type 2 Routing Header naming ``home`` (``mip6_rthdr_input`` checks the
  destination is its care-of address), and a ``dir in`` policy with an optional
  ``proto route2`` template lets the socket layer take the packet. The kernel also wants
  the home address to carry ``IFA_F_HOMEADDRESS`` (``ipv6_chk_home_addr``), else it drops
  the packet: :meth:`RoXfrm.add_binding` sets that flag on the home address's /128 on
  ``lo`` and makes it deprecated (preferred lifetime 0), so that source address selection
  (RFC 6724 rule 3, before rule 4's preference for home addresses) still picks the
  care-of address for sockets that do not ask for the home address.

Every state and template carries :data:`REQID` (:data:`MN_REQID` for the mobile node) and
every policy :data:`PRIORITY` (:data:`MN_PRIORITY`, :data:`MN_BYPASS_PRIORITY`), which is
how :meth:`RoXfrm.bindings` tells ours from anyone else's (and how a restart finds what a
previous run left). Counters are the states' packet counts (``ip -s xfrm state``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from ipaddress import IPv6Address

from .ro_bpf import RoBinding, Role

REQID = 0x6D697036  # "mip6"
PRIORITY = 0x6D36  # our policies' priority
MN_REQID = REQID + 1  # the mobile node's states
MN_PRIORITY = 0x6D38  # the mobile node's policies
MN_BYPASS_PRIORITY = 0x6D37  # its template-less policies: MH and raw packets untouched
MN_BYPASS_PROTOCOLS = (135, 255)  # Mobility Header; a raw socket's header-included packets
IFA_F_HOMEADDRESS = 0x10
_REQIDS: dict[Role, int] = {"cn": REQID, "mn": MN_REQID}
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
    """The correspondent's (or the mobile node's) bindings as XFRM ro states and policies
    in this namespace."""

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
        if role == "mn":
            self._add_mn_binding(cn, home, coa)
            return
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

    def _add_mn_binding(self, cn: IPv6Address, home: IPv6Address, coa: IPv6Address) -> None:
        c, h, a = str(cn), str(home), str(coa)
        reqid = str(MN_REQID)
        common = ["reqid", reqid, "mode", "ro", "coa", a]
        self.mark_home_address(home, True)
        for src, dst, proto in ((h, c, "hao"), (c, h, "route2")):
            self._ip("xfrm", "state", "update" if self._has_state(src, dst, MN_REQID) else "add",
                     "src", src, "dst", dst, "proto", proto, *common,
                     "sel", "src", f"{src}/128", "dst", f"{dst}/128")  # fmt: skip
        for protocol in MN_BYPASS_PROTOCOLS:
            self._ip("xfrm", "policy", "update", "src", f"{h}/128", "dst", f"{c}/128",
                     "proto", str(protocol), "dir", "out",
                     "priority", str(MN_BYPASS_PRIORITY))  # fmt: skip
        self._ip("xfrm", "policy", "update", "src", f"{h}/128", "dst", f"{c}/128",
                 "dir", "out", "priority", str(MN_PRIORITY),
                 "tmpl", "src", h, "dst", c, "proto", "hao", "reqid", reqid,
                 "mode", "ro", "level", "use")  # fmt: skip
        self._ip("xfrm", "policy", "update", "src", f"{c}/128", "dst", f"{h}/128",
                 "dir", "in", "priority", str(MN_PRIORITY),
                 "tmpl", "src", c, "dst", h, "proto", "route2", "reqid", reqid,
                 "mode", "ro", "level", "use")  # fmt: skip

    def mark_home_address(self, home: IPv6Address, on: bool) -> bool:
        """Set (or clear) ``IFA_F_HOMEADDRESS`` on the home address's /128 on ``lo``, and
        make it deprecated while set; False when ``lo`` does not hold it (at home)."""
        from .netlink import Address, Netlink

        lo_holds = f"{home}/128" in self._ip("-6", "-o", "address", "show", "dev", "lo")
        if not lo_holds:
            return False
        if self.netns is not None:  # tests: no protocol attribute through ip(8)
            extra = ["home", "preferred_lft", "0"] if on else []
            self._ip("-6", "address", "replace", f"{home}/128", "dev", "lo", "nodad",
                     "noprefixroute", *extra)  # fmt: skip
            return True
        from .base import RTPROT_MIP6
        from .netlink import (
            IFA_F_NODAD,
            IFA_F_NOPREFIXROUTE,
            NLM_F_CREATE,
            NLM_F_REPLACE,
            RTM_NEWADDR,
            address_message,
        )

        nl = Netlink()
        try:
            flags = IFA_F_NODAD | IFA_F_NOPREFIXROUTE | (IFA_F_HOMEADDRESS if on else 0)
            msg = address_message(Address(home, 128, nl.ifindex("lo"), RTPROT_MIP6, flags))
            if on:
                lifetimes = {"ifa_preferred": 0, "ifa_valid": 0xFFFFFFFF, "cstamp": 0, "tstamp": 0}
                msg["attrs"].append(("IFA_CACHEINFO", lifetimes))
            nl.request("install", f"home address flag on {home}", RTM_NEWADDR,
                       NLM_F_CREATE | NLM_F_REPLACE, msg)  # fmt: skip
        finally:
            nl.close()
        return True

    def _has_state(self, src: str, dst: str, reqid: int = REQID) -> bool:
        key = (IPv6Address(src), IPv6Address(dst))
        return any((s, d) == key for s, d, *_ in self._states(reqid))

    def remove_binding(self, role: Role, cn: IPv6Address, home: IPv6Address) -> None:
        """Remove the binding's states and policies (those already gone are skipped)."""
        c, h = str(cn), str(home)
        if role == "mn":
            commands: list[tuple[str, ...]] = [
                ("policy", "delete", "src", f"{h}/128", "dst", f"{c}/128", "dir", "out"),
                ("policy", "delete", "src", f"{c}/128", "dst", f"{h}/128", "dir", "in"),
                *[
                    (
                        "policy",
                        "delete",
                        "src",
                        f"{h}/128",
                        "dst",
                        f"{c}/128",
                        "proto",
                        str(n),
                        "dir",
                        "out",
                    )
                    for n in MN_BYPASS_PROTOCOLS
                ],
                ("state", "delete", "src", h, "dst", c, "proto", "hao"),
                ("state", "delete", "src", c, "dst", h, "proto", "route2"),
            ]
        else:
            commands = [
                ("policy", "delete", "src", f"{c}/128", "dst", f"{h}/128", "dir", "out"),
                ("policy", "delete", "src", f"{h}/128", "dst", f"{c}/128", "dir", "in"),
                ("state", "delete", "src", c, "dst", h, "proto", "route2"),
                ("state", "delete", "src", h, "dst", c, "proto", "hao"),
            ]
        for args in commands:
            try:
                self._ip("xfrm", *args)
            except RoXfrmError as exc:
                if "No such" not in str(exc) and "not found" not in str(exc).lower():
                    raise
        if role == "mn" and not any(b.home == home for b in self.bindings("mn")):
            self.mark_home_address(home, False)

    def _states(
        self, reqid: int = REQID
    ) -> list[tuple[IPv6Address, IPv6Address, str, IPv6Address, int]]:
        """Our states (of this reqid): (src, dst, proto, coa, packets)."""
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
            elif (m := _PROTO.match(line)) and int(m[2]) == reqid:
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
        """The bindings whose out state is in the kernel, packets counted both ways (the
        correspondent's route2 state, the mobile node's hao state)."""
        states = self._states(_REQIDS[role])
        out_proto, in_proto = ("route2", "hao") if role == "cn" else ("hao", "route2")
        inbound = {(s, d): n for s, d, proto, _, n in states if proto == in_proto}
        found = []
        for s, d, proto, coa, n in states:
            if proto != out_proto:
                continue
            cn, home = (s, d) if role == "cn" else (d, s)
            found.append(RoBinding(role, cn, home, coa, packets=n + inbound.get((d, s), 0)))
        return found

    def policies(self, priority: int = PRIORITY) -> list[tuple[str, str, str]]:
        """Our policies of ``priority``: (source prefix, destination prefix, direction)."""
        out = self._ip("xfrm", "policy", "list", "priority", str(priority))
        found, head = [], None
        for line in out.splitlines():
            words = line.split()
            if line.startswith("src ") and len(words) >= 4:
                head = (words[1], words[3])
            elif head is not None and words[:1] == ["dir"] and len(words) >= 2:
                found.append((*head, words[1]))
                head = None
        return found

    def counters(self, role: Role = "cn") -> dict[str, int]:
        found = self.bindings(role)
        return {"xfrm_bindings": len(found), "xfrm_packets": sum(b.packets for b in found)}

    def close(self) -> None:
        """Remove every binding of ours, both roles (the agent's stop)."""
        for role in ("cn", "mn"):
            for binding in self.bindings(role):
                self.remove_binding(role, binding.cn, binding.home)
        # Any left without their states; the bypass policies' selectors carry a protocol.
        out = self._ip("xfrm", "policy", "list")
        for block in re.split(r"(?m)^(?=src )", out):
            words = block.split()
            if len(words) < 4 or "priority" not in words or "dir" not in words:
                continue  # socket policies have no direction
            priority = int(words[words.index("priority") + 1])
            if priority not in (PRIORITY, MN_PRIORITY, MN_BYPASS_PRIORITY):
                continue
            args = ["src", words[1], "dst", words[3]]
            if "proto" in words[: words.index("dir")]:
                args += ["proto", _proto_number(words[words.index("proto") + 1])]
            args += ["dir", words[words.index("dir") + 1]]
            self._ip("xfrm", "policy", "delete", *args)

    detach = close


def _proto_number(name: str) -> str:
    """``ip xfrm policy list`` names protocols (``mobility-header``, ``255``)."""
    names = {"mobility-header": "135", "ipv6-mh": "135", "mh": "135"}
    return names.get(name, name)
