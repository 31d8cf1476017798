"""Route optimization (RFC 6275 sections 6.3, 6.4, 9.3, 11.3) as TC eBPF programs.

For kernels without ``CONFIG_IPV6_MIP6``, where the stack drops a Type 2 Routing Header
and cannot insert a Home Address option. ``bpf/ro.bpf.c`` has four clsact programs:

- ``cn_egress`` (correspondent): a packet to a home address with a binding gets
  ``dst := care-of address`` and a 24-byte Type 2 Routing Header carrying the home
  address (segments left 1);
- ``mn_egress`` (mobile node): a packet from a home address to a correspondent with a
  binding gets ``src := care-of address`` and a 24-byte Destination Options header
  (PadN, then the Home Address option at 8n+6);
- ``cn_ingress``: a Home Address option from the care-of address of a binding becomes
  ``src := home address``, and the option goes (the whole header when it held nothing
  else; otherwise the option becomes an experimental one every stack skips);
- ``mn_ingress``: a Type 2 Routing Header to the care-of address of a binding, carrying
  our home address, becomes ``dst := home address``, and the header goes.

Upper-layer checksums stay as they are: the sender computed them over the home address,
which the receiving stack sees again after the swap (RFC 8200 section 8.1). Mobility
Header packets pass untouched (the agent handles them). Ingress rewrites only for a
binding that exists; anything else goes up unchanged, so that the agent sees the Home
Address option (raw socket on protocol 60) and answers Binding Error status 1 (RFC 6275
section 9.3.1).

Bindings are two BPF hash maps, ``cn_bindings`` and ``mn_bindings``, keyed by
(correspondent address, home address) with the care-of address as value, plus the
packets rewritten for that binding and the time of the last one (``bpf_ktime_get_ns``,
which is ``time.monotonic_ns()``), which tell the agent a binding is still in use; a
per-CPU array counts rewrites per direction, packets passed up without a binding,
packets without room and drops (:data:`COUNTERS`).

Intended use by the daemon (not wired in yet)::

    ok, reason = available()          # at start: otherwise log reason, keep the tunnel
    ro = RoBpf("default")             # pins under /sys/fs/bpf/mip6agent/default
    ro.load()                         # compiles if stale, loads or reopens the pins;
                                      # True: loaded anew, maps empty (re-add bindings)
    ro.attach("eth0", "cn")           # each interface the routes to home addresses use
    for b in ro.bindings("cn"):       # restart: reconcile with the persisted bindings;
        ...                           # b.packets / b.last_used_ns: Correspondent.note_use
    ro.add_binding("cn", cn, hoa, coa)      # after a BU is accepted (A bit or not)
    ro.remove_binding("cn", cn, hoa)        # expiry, deregistration
    ro.counters()                     # mip6stat; cn_ingress_no_binding feeds BE status 1
    ro.detach()                       # agent stop: filters, clsact, programs, pins

What the daemon must add around it (routes, not this module's business):

- MTU headroom: a rewritten packet is :data:`RO_OVERHEAD` (24) bytes longer. A packet
  already at the device MTU cannot grow (``bpf_skb_adjust_room`` refuses): the
  correspondent's copy goes out unchanged, towards the home agent
  (``cn_egress_too_big``); the mobile node's is dropped (``mn_egress_too_big``), since a
  home address must not leave a foreign link bare. Give each route-optimized peer a
  route whose MTU is the link MTU minus 24 (TCP then sizes its segments to fit).
  TCP GSO packets are fine: the kernel lowers their segment size by 24.
- On the mobile node, traffic to a route-optimized correspondent must not enter the
  reverse tunnel (the egress program sees the outer header there): a route for the
  correspondent out of the foreign link in the home address's policy table.
- Programs run on the interfaces they are attached to: the correspondent's egress
  program on the interface its route to the home address uses, the mobile node's on the
  interface its route to the correspondent uses. The next hop stays the one the route to
  the original address chose.

Maps and programs are pinned under ``/sys/fs/bpf/mip6agent/<instance>`` (bpffs is
mounted there if it is not). Pins outlive the agent, so that a restarted agent finds
its bindings with :meth:`RoBpf.bindings` and its filters still in place. Attachments are
found again by their filter name (``mip6-<instance>-<program>``) and priority. The object
is compiled with ``clang -O2 -g -target bpf`` into a cache directory keyed by a hash of
the source and the build flags (``MIP6AGENT_BPF_CACHE``, else
``/var/cache/mip6agent/bpf`` as root, else ``~/.cache/mip6agent/bpf``);
``python -m mip6agent.io.dataplane.ro_bpf build`` does it at install time.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import platform
import shutil
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from pathlib import Path
from typing import Literal

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .bpf_objects import (
    NR_BPF,
    PIN_ROOT,
    BpfError,
    PinnedObjects,
    compile_object,
    default_cache_dir,
    digest,
    ensure_bpffs,
    obj_id,
)

Role = Literal["cn", "mn"]
Direction = Literal["egress", "ingress"]

RO_OVERHEAD = 24
SOURCE = Path(__file__).with_name("bpf") / "ro.bpf.c"
COUNTERS = (
    "cn_egress",
    "cn_ingress",
    "mn_egress",
    "mn_ingress",
    "cn_ingress_no_binding",
    "mn_ingress_no_binding",
    "cn_egress_too_big",
    "mn_egress_too_big",
    "dropped",
)
PROGRAMS: dict[Role, dict[Direction, str]] = {
    "cn": {"egress": "cn_egress", "ingress": "cn_ingress"},
    "mn": {"egress": "mn_egress", "ingress": "mn_ingress"},
}
MAPS: dict[Role, str] = {"cn": "cn_bindings", "mn": "mn_bindings"}
COUNTER_MAP = "ro_counters"
# tc filter priorities: the correspondent's programs first, so that both roles can share
# an interface (each program returns TC_ACT_UNSPEC for packets it leaves alone).
PRIORITY: dict[Role, int] = {"cn": 0x6D36, "mn": 0x6D37}
_PARENT: dict[Direction, int] = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}
_ETH_P_IPV6 = 0x86DD
_FILTER_HANDLE = 1

_KEY = struct.Struct("16s16s")
_VALUE = struct.Struct("=16sQQ")  # struct ro_value: care-of address, packets, last use


class RoBpfError(BpfError):
    """The eBPF route-optimization data path could not do what was asked."""


@dataclass(frozen=True, slots=True)
class RoBinding:
    """One entry of a binding map: traffic between ``cn`` and ``home`` uses ``coa``.

    ``packets`` (rewritten for it, both directions) and ``last_used_ns``
    (``time.monotonic_ns()`` of the last one, 0 if none) tell the agent a binding is
    still in use; they take no part in comparisons.
    """

    role: Role
    cn: IPv6Address
    home: IPv6Address
    coa: IPv6Address
    packets: int = field(default=0, compare=False)
    last_used_ns: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Attachment:
    """A filter of ours: ``program`` on ``direction`` of ``ifname``."""

    ifname: str
    direction: Direction
    program: str


# --- building -----------------------------------------------------------------------


def build_digest(cn_max_bindings: int = 4096, mn_max_bindings: int = 1024) -> str:
    """What identifies one build: a hash of the source and the compiler flags."""
    return digest(SOURCE, _defines(cn_max_bindings, mn_max_bindings))


def build(
    cache_dir: Path | None = None,
    *,
    cn_max_bindings: int = 4096,
    mn_max_bindings: int = 1024,
    clang: str = "clang",
) -> Path:
    """The compiled object for these limits; compiled only when no cached copy matches."""
    for limit in (cn_max_bindings, mn_max_bindings):
        if not 1 <= limit <= 1 << 20:
            raise RoBpfError(f"binding map size {limit} is outside 1..{1 << 20}")
    try:
        return compile_object(
            SOURCE, "ro", _defines(cn_max_bindings, mn_max_bindings), cache_dir, clang
        )
    except BpfError as exc:
        raise RoBpfError(str(exc)) from None


def _defines(cn_max: int, mn_max: int) -> list[str]:
    return [f"RO_CN_MAX_BINDINGS={cn_max}", f"RO_MN_MAX_BINDINGS={mn_max}"]


# --- bpffs and netlink --------------------------------------------------------------


@contextlib.contextmanager
def _ipr(netns: str | None) -> Iterator[IPRoute]:
    ipr = IPRoute(netns=netns) if netns else IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def _ifindex(ipr: IPRoute, ifname: str) -> int:
    links = ipr.link_lookup(ifname=ifname)
    if not links:
        raise RoBpfError(f"no interface {ifname}")
    return int(links[0])


def _filters(ipr: IPRoute, index: int, direction: Direction) -> list[tuple[int, str]]:
    """(priority, name) of every bpf filter on one clsact direction of a link."""
    try:
        messages = ipr.get_filters(index=index, parent=_PARENT[direction])
    except NetlinkError as exc:
        if exc.code in (errno.EINVAL, errno.ENOENT):
            return []
        raise
    found = []
    for msg in messages:
        if msg.get_attr("TCA_KIND") != "bpf":
            continue
        options = msg.get_attr("TCA_OPTIONS")
        name = options.get_attr("TCA_BPF_NAME") if options is not None else None
        if name:
            found.append((msg["info"] >> 16, name))
    return found


def _filter_count(ipr: IPRoute, index: int, direction: Direction) -> int:
    """Filters of any kind on one clsact direction of a link."""
    try:
        return len(list(ipr.get_filters(index=index, parent=_PARENT[direction])))
    except NetlinkError as exc:
        if exc.code in (errno.EINVAL, errno.ENOENT):
            return 0
        raise


def _has_clsact(ipr: IPRoute, index: int) -> bool:
    return any(q.get_attr("TCA_KIND") == "clsact" for q in ipr.get_qdiscs(index=index))


# --- the data path ------------------------------------------------------------------


class RoBpf:
    """One set of programs and maps, pinned under ``pin_root/instance``, in one netns.

    ``netns`` (a name under /run/netns, or None for the caller's) is where interfaces are
    looked up and filters attached; programs, maps and pins are not per namespace.
    """

    def __init__(
        self,
        instance: str = "default",
        *,
        netns: str | None = None,
        pin_root: Path = PIN_ROOT,
        cache_dir: Path | None = None,
        cn_max_bindings: int = 4096,
        mn_max_bindings: int = 1024,
    ) -> None:
        if not instance or "/" in instance or instance.startswith("."):
            raise RoBpfError(f"bad instance name {instance!r}")
        self.instance = instance
        self.netns = netns
        self.pin_dir = pin_root / instance
        self.cache_dir = cache_dir
        self.cn_max_bindings = cn_max_bindings
        self.mn_max_bindings = mn_max_bindings
        self._objects = PinnedObjects(
            self.pin_dir,
            [p for role in PROGRAMS.values() for p in role.values()],
            [*MAPS.values(), COUNTER_MAP],
            RoBpfError,
        )

    @property
    def _progs(self) -> dict[str, int]:
        return self._objects.progs

    @property
    def _maps(self) -> dict[str, int]:
        return self._objects.maps

    # loading and pins

    def load(self) -> bool:
        """Load the programs and maps, or reopen the pinned ones; True if loaded anew.

        A partial set of pins (an interrupted load), or pins of another build (another
        version of the source, other map sizes), is removed and loaded anew; the maps
        are then empty and filters still run the old programs until :meth:`attach`
        replaces them, so the caller re-attaches and adds its bindings again.
        """
        return self._objects.load(
            lambda: build(
                self.cache_dir,
                cn_max_bindings=self.cn_max_bindings,
                mn_max_bindings=self.mn_max_bindings,
            ),
            build_digest(self.cn_max_bindings, self.mn_max_bindings),
            prog_type="tc",
            keep="clsact-",
        )

    def close(self) -> None:
        """Close our descriptors; pins, filters and maps stay (a restart finds them)."""
        self._objects.close()

    def _unpin(self) -> None:
        """Remove progs/, maps/, the build marker and the clsact markers."""
        self._objects.unpin()

    def _qdisc_marker(self, index: int) -> Path:
        """Marks a clsact this instance added (bpffs holds directories, not files)."""
        ns = f"/run/netns/{self.netns}" if self.netns else "/proc/thread-self/ns/net"
        return self.pin_dir / f"clsact-{os.stat(ns).st_ino}-{index}"

    def program_ids(self) -> dict[str, int]:
        """Kernel ids of our loaded programs (``bpftool prog show id N``)."""
        self._need_loaded()
        return {name: obj_id(fd) for name, fd in self._progs.items()}

    def map_ids(self) -> dict[str, int]:
        self._need_loaded()
        return {name: obj_id(fd) for name, fd in self._maps.items()}

    def _need_loaded(self) -> None:
        if not self._progs:
            raise RoBpfError("not loaded: call load() first")

    # attaching

    def _filter_name(self, program: str) -> str:
        return f"mip6-{self.instance}-{program}"

    def attach(self, ifname: str, role: Role) -> None:
        """Attach ``role``'s two programs to ``ifname`` (clsact egress and ingress).

        Idempotent: a filter of ours already there is replaced (a new program version
        takes over without a gap).
        """
        self._need_loaded()
        with _ipr(self.netns) as ipr:
            index = _ifindex(ipr, ifname)
            if not _has_clsact(ipr, index):
                try:
                    ipr.tc("add", "clsact", index)
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise RoBpfError(f"clsact on {ifname}: {exc}") from exc
                else:
                    self._qdisc_marker(index).mkdir(exist_ok=True)
            for direction, program in PROGRAMS[role].items():
                try:
                    ipr.tc(
                        "replace-filter",
                        "bpf",
                        index,
                        _FILTER_HANDLE,
                        fd=self._progs[program],
                        name=self._filter_name(program),
                        parent=_PARENT[direction],
                        prio=PRIORITY[role],
                        protocol=_ETH_P_IPV6,
                        direct_action=True,
                    )
                except NetlinkError as exc:
                    raise RoBpfError(f"{program} on {ifname} {direction}: {exc}") from exc

    def attachments(self) -> list[Attachment]:
        """Our filters on every interface of the namespace (found by name)."""
        prefix = f"mip6-{self.instance}-"
        found = []
        with _ipr(self.netns) as ipr:
            for link in ipr.get_links():
                ifname = link.get_attr("IFLA_IFNAME")
                for direction in _PARENT:
                    for _prio, name in _filters(ipr, link["index"], direction):
                        if name.startswith(prefix):
                            found.append(Attachment(ifname, direction, name[len(prefix) :]))
        return found

    def detach_interface(self, ifname: str) -> None:
        """Remove our filters from one interface, and the clsact qdisc if we added it and
        no filter (ours or anyone's) is left on it."""
        with _ipr(self.netns) as ipr:
            self._detach_index(ipr, _ifindex(ipr, ifname))

    def _detach_index(self, ipr: IPRoute, index: int) -> None:
        prefix = f"mip6-{self.instance}-"
        ours = 0
        for direction in _PARENT:
            for prio, name in _filters(ipr, index, direction):
                if not name.startswith(prefix):
                    continue
                ours += 1
                with contextlib.suppress(NetlinkError):
                    ipr.tc(
                        "del-filter",
                        "bpf",
                        index,
                        _FILTER_HANDLE,
                        parent=_PARENT[direction],
                        prio=prio,
                        protocol=_ETH_P_IPV6,
                    )
        marker = self._qdisc_marker(index)
        if marker.is_dir() and not any(_filter_count(ipr, index, d) for d in _PARENT):
            with contextlib.suppress(NetlinkError):
                ipr.tc("del", "clsact", index)
            marker.rmdir()

    def detach(self) -> None:
        """Remove every filter of ours in the namespace, the clsact qdiscs we added that
        are left empty, and the programs, maps and pins (bindings with them)."""
        with _ipr(self.netns) as ipr:
            for link in ipr.get_links():
                self._detach_index(ipr, link["index"])
        self.close()
        self._unpin()

    # bindings

    def add_binding(
        self, role: Role, cn: str | IPv6Address, home: str | IPv6Address, coa: str | IPv6Address
    ) -> None:
        """Add or update the binding between correspondent ``cn`` and ``home``.

        An update (a new care-of address) keeps the binding's use counters.
        """
        self._need_loaded()
        name, key = MAPS[role], _key(cn, home)
        current = self._objects.lookup(name, key, _VALUE.size)
        _, packets, last_used = _VALUE.unpack(current) if current else (b"", 0, 0)
        self._objects.update(name, key, _VALUE.pack(_addr(coa), packets, last_used))

    def remove_binding(self, role: Role, cn: str | IPv6Address, home: str | IPv6Address) -> bool:
        """Remove one binding; False if there was none."""
        self._need_loaded()
        return self._objects.delete(MAPS[role], _key(cn, home))

    def bindings(self, role: Role | None = None) -> list[RoBinding]:
        """Every binding in the maps (both roles unless one is given), for reconciling."""
        self._need_loaded()
        found = []
        for each in [role] if role else ["cn", "mn"]:
            for key, value in self._objects.items(MAPS[each], _KEY.size, _VALUE.size):
                cn, home = _KEY.unpack(key)
                coa, packets, last_used = _VALUE.unpack(value[: _VALUE.size])
                addresses = (IPv6Address(cn), IPv6Address(home), IPv6Address(coa))
                found.append(RoBinding(each, *addresses, packets, last_used))
        return found

    def counters(self) -> dict[str, int]:
        """Packet counters (:data:`COUNTERS`), summed over CPUs."""
        self._need_loaded()
        return dict(zip(COUNTERS, self._objects.per_cpu_sums(COUNTER_MAP, len(COUNTERS)),
                        strict=True))  # fmt: skip


def _addr(address: str | IPv6Address) -> bytes:
    return ipaddress.IPv6Address(address).packed


def _key(cn: str | IPv6Address, home: str | IPv6Address) -> bytes:
    return _KEY.pack(_addr(cn), _addr(home))


def available(netns: str | None = None, cache_dir: Path | None = None) -> tuple[bool, str]:
    """Can this host run the eBPF data path? (ok, reason); the reason says what failed.

    Tries it: compiles (or finds the cached object), loads the programs into a throwaway
    pin directory, attaches one to the loopback's egress and removes everything again.
    """
    if os.geteuid() != 0:
        return False, "needs root (CAP_BPF and CAP_NET_ADMIN)"
    for tool in ("clang", "bpftool"):
        if shutil.which(tool) is None:
            return False, f"{tool} is not installed"
    if platform.machine() not in NR_BPF:
        return False, f"no bpf(2) system call number known for {platform.machine()}"
    probe = RoBpf(f"probe-{os.getpid()}", netns=netns, cache_dir=cache_dir)
    try:
        probe.load()
        with _ipr(netns) as ipr:
            index = _ifindex(ipr, "lo")
            had_clsact = _has_clsact(ipr, index)
            if not had_clsact:
                ipr.tc("add", "clsact", index)
            try:
                ipr.tc(
                    "add-filter",
                    "bpf",
                    index,
                    _FILTER_HANDLE,
                    fd=probe._progs["cn_egress"],
                    name=probe._filter_name("cn_egress"),
                    parent=_PARENT["egress"],
                    prio=0xFFF0,
                    protocol=_ETH_P_IPV6,
                    direct_action=True,
                )
                ipr.tc(
                    "del-filter",
                    "bpf",
                    index,
                    _FILTER_HANDLE,
                    parent=_PARENT["egress"],
                    prio=0xFFF0,
                    protocol=_ETH_P_IPV6,
                )
            finally:
                if not had_clsact:
                    with contextlib.suppress(NetlinkError):
                        ipr.tc("del", "clsact", index)
    except (RoBpfError, OSError, NetlinkError) as exc:
        return False, str(exc).strip() or type(exc).__name__
    finally:
        with contextlib.suppress(OSError, RoBpfError, NetlinkError):
            probe.detach()
    return True, "tc clsact eBPF programs load and attach"


def main(argv: list[str] | None = None) -> int:
    """``build`` (compile into the cache, print the object's path) or ``probe``."""
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "probe"
    if command == "build":
        print(build())
        return 0
    if command == "probe":
        ok, reason = available()
        print(("available: " if ok else "unavailable: ") + reason)
        return 0 if ok else 1
    print("usage: python -m mip6agent.io.dataplane.ro_bpf [build|probe]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "COUNTERS",
    "PIN_ROOT",
    "RO_OVERHEAD",
    "Attachment",
    "RoBinding",
    "RoBpf",
    "RoBpfError",
    "available",
    "build",
    "build_digest",
    "default_cache_dir",
    "ensure_bpffs",
]
