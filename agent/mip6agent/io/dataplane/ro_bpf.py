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
import ctypes
import errno
import hashlib
import ipaddress
import os
import platform
import shutil
import struct
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from pathlib import Path
from typing import Literal

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

Role = Literal["cn", "mn"]
Direction = Literal["egress", "ingress"]

RO_OVERHEAD = 24
SOURCE = Path(__file__).with_name("bpf") / "ro.bpf.c"
PIN_ROOT = Path("/sys/fs/bpf/mip6agent")
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

_NR_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "riscv64": 280, "ppc64le": 361}
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_OBJ_GET = 7
BPF_OBJ_GET_INFO_BY_FD = 15
_ATTR_SIZE = 128
_KEY = struct.Struct("16s16s")
_VALUE = struct.Struct("=16sQQ")  # struct ro_value: care-of address, packets, last use

_libc = ctypes.CDLL(None, use_errno=True)


class RoBpfError(Exception):
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


# --- the bpf(2) system call, for map access and object ids --------------------------


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    number = _NR_BPF.get(platform.machine())
    if number is None:
        raise RoBpfError(f"bpf(2): unknown system call number on {platform.machine()}")
    result = _libc.syscall(number, cmd, attr, _ATTR_SIZE)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(result)


def _obj_get(path: Path) -> int:
    """A file descriptor for the map or program pinned at ``path``."""
    name = ctypes.create_string_buffer(os.fsencode(path))
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("=QII", attr, 0, ctypes.addressof(name), 0, 0)
    return _bpf(BPF_OBJ_GET, attr)


def _obj_info(fd: int, size: int = 256) -> bytes:
    info = ctypes.create_string_buffer(size)
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("=IIQ", attr, 0, fd, size, ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return info.raw


def _obj_id(fd: int) -> int:
    """The kernel id of a program or map (the second u32 of either info struct)."""
    return int(struct.unpack_from("=I", _obj_info(fd), 4)[0])


def _elem(
    cmd: int, fd: int, key: bytes | None, value: ctypes.Array[ctypes.c_char] | None, flags: int = 0
) -> None:
    kbuf = ctypes.create_string_buffer(key, len(key)) if key is not None else None
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into(
        "=IIQQQ",
        attr,
        0,
        fd,
        0,
        ctypes.addressof(kbuf) if kbuf is not None else 0,
        ctypes.addressof(value) if value is not None else 0,
        flags,
    )
    _bpf(cmd, attr)


def _possible_cpus() -> int:
    """How many values a per-CPU map holds (the kernel's possible CPUs)."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


# --- building -----------------------------------------------------------------------


def default_cache_dir() -> Path:
    if env := os.environ.get("MIP6AGENT_BPF_CACHE"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/mip6agent/bpf")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mip6agent" / "bpf"


def _include_dirs() -> list[str]:
    multiarch = sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu"
    return [f"/usr/include/{multiarch}"]


def _build_flags(cn_max: int, mn_max: int) -> list[str]:
    return [
        "-O2",
        "-g",
        "-target",
        "bpf",
        "-Wall",
        f"-DRO_CN_MAX_BINDINGS={cn_max}",
        f"-DRO_MN_MAX_BINDINGS={mn_max}",
        *(f"-I{d}" for d in _include_dirs()),
    ]


def build_digest(cn_max_bindings: int = 4096, mn_max_bindings: int = 1024) -> str:
    """What identifies one build: a hash of the source and the compiler flags."""
    flags = _build_flags(cn_max_bindings, mn_max_bindings)
    return hashlib.sha256(SOURCE.read_bytes() + "\0".join(flags).encode()).hexdigest()[:16]


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
    defines = [f"RO_CN_MAX_BINDINGS={cn_max_bindings}", f"RO_MN_MAX_BINDINGS={mn_max_bindings}"]
    return compile_object(SOURCE, "ro", defines, cache_dir, clang)


def compile_object(
    source: Path, stem: str, defines: list[str], cache_dir: Path | None = None, clang: str = "clang"
) -> Path:
    """``source`` compiled for BPF into the cache, named by a hash of it and the flags;
    compiled only when no cached copy matches."""
    cache = cache_dir or default_cache_dir()
    flags = ["-O2", "-g", "-target", "bpf", "-Wall", *(f"-D{d}" for d in defines),
             *(f"-I{d}" for d in _include_dirs())]  # fmt: skip
    digest = hashlib.sha256(source.read_bytes() + "\0".join(flags).encode()).hexdigest()[:16]
    target = cache / f"{stem}-{digest}.bpf.o"
    if target.exists():
        return target
    compiler = shutil.which(clang)
    if compiler is None:
        raise RoBpfError(f"{clang} not found (Debian: apt install clang llvm libbpf-dev)")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache, suffix=".o", delete=False) as tmp:
        partial = Path(tmp.name)
    try:
        result = subprocess.run(
            [compiler, *flags, "-c", str(source), "-o", str(partial)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RoBpfError(f"compiling {source.name} failed: {result.stderr.strip()}")
        partial.replace(target)  # atomic: a concurrent build finds a whole object or none
    finally:
        partial.unlink(missing_ok=True)
    return target


# --- bpffs and netlink --------------------------------------------------------------


def _is_bpffs(path: Path) -> bool:
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1:3] == [str(path), "bpf"] for line in mounts)


def ensure_bpffs(root: Path = PIN_ROOT) -> None:
    """Mount bpffs at /sys/fs/bpf when nothing is mounted there (systemd usually does)."""
    mountpoint = Path("/sys/fs/bpf")
    if root.is_relative_to(mountpoint) and not _is_bpffs(mountpoint):
        result = subprocess.run(
            ["mount", "-t", "bpf", "bpf", str(mountpoint)], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise RoBpfError(f"cannot mount bpffs on {mountpoint}: {result.stderr.strip()}")
    root.mkdir(parents=True, exist_ok=True)


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
        self._maps: dict[str, int] = {}
        self._progs: dict[str, int] = {}

    # loading and pins

    def _prog_pin(self, name: str) -> Path:
        return self.pin_dir / "progs" / name

    def _map_pin(self, name: str) -> Path:
        return self.pin_dir / "maps" / name

    def _pins_complete(self) -> bool:
        progs = [p for role in PROGRAMS.values() for p in role.values()]
        maps = [*MAPS.values(), COUNTER_MAP]
        return all(self._prog_pin(p).exists() for p in progs) and all(
            self._map_pin(m).exists() for m in maps
        )

    def load(self) -> bool:
        """Load the programs and maps, or reopen the pinned ones; True if loaded anew.

        A partial set of pins (an interrupted load), or pins of another build (another
        version of the source, other map sizes), is removed and loaded anew; the maps
        are then empty and filters still run the old programs until :meth:`attach`
        replaces them, so the caller re-attaches and adds its bindings again.
        """
        if self._progs:
            return False
        ensure_bpffs(self.pin_dir.parent)
        marker = self.pin_dir / f"build-{build_digest(self.cn_max_bindings, self.mn_max_bindings)}"
        fresh = not (self._pins_complete() and marker.is_dir())
        if fresh:
            self._unpin(keep_qdisc_markers=True)
            obj = build(
                self.cache_dir,
                cn_max_bindings=self.cn_max_bindings,
                mn_max_bindings=self.mn_max_bindings,
            )
            self.pin_dir.mkdir(parents=True, exist_ok=True)
            bpftool = shutil.which("bpftool")
            if bpftool is None:
                raise RoBpfError("bpftool not found (Debian: apt install bpftool)")
            result = subprocess.run(
                [
                    bpftool,
                    "prog",
                    "loadall",
                    str(obj),
                    str(self.pin_dir / "progs"),
                    "type",
                    "tc",
                    "pinmaps",
                    str(self.pin_dir / "maps"),
                ],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                self._unpin()
                raise RoBpfError(f"loading {obj.name} failed: {_tail(result.stderr)}")
            marker.mkdir()  # bpffs holds directories: which build these pins are
        try:
            for role in PROGRAMS.values():
                for name in role.values():
                    self._progs[name] = _obj_get(self._prog_pin(name))
            for name in [*MAPS.values(), COUNTER_MAP]:
                self._maps[name] = _obj_get(self._map_pin(name))
        except OSError as exc:
            self.close()
            raise RoBpfError(f"opening the pins under {self.pin_dir}: {exc}") from exc
        return fresh

    def close(self) -> None:
        """Close our descriptors; pins, filters and maps stay (a restart finds them)."""
        for fd in [*self._progs.values(), *self._maps.values()]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._progs.clear()
        self._maps.clear()

    def _unpin(self, keep_qdisc_markers: bool = False) -> None:
        """Remove progs/, maps/ and the build marker; the clsact markers too unless kept."""
        if not self.pin_dir.is_dir():
            return
        for entry in self.pin_dir.iterdir():
            if keep_qdisc_markers and entry.name.startswith("clsact-"):
                continue
            if entry.is_dir():
                for pin in entry.iterdir():
                    pin.unlink()
                entry.rmdir()
            else:
                entry.unlink()
        if not any(self.pin_dir.iterdir()):
            self.pin_dir.rmdir()

    def _qdisc_marker(self, index: int) -> Path:
        """Marks a clsact this instance added (bpffs holds directories, not files)."""
        ns = f"/run/netns/{self.netns}" if self.netns else "/proc/thread-self/ns/net"
        return self.pin_dir / f"clsact-{os.stat(ns).st_ino}-{index}"

    def program_ids(self) -> dict[str, int]:
        """Kernel ids of our loaded programs (``bpftool prog show id N``)."""
        self._need_loaded()
        return {name: _obj_id(fd) for name, fd in self._progs.items()}

    def map_ids(self) -> dict[str, int]:
        self._need_loaded()
        return {name: _obj_id(fd) for name, fd in self._maps.items()}

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

    def _map(self, role: Role) -> int:
        self._need_loaded()
        return self._maps[MAPS[role]]

    def add_binding(
        self, role: Role, cn: str | IPv6Address, home: str | IPv6Address, coa: str | IPv6Address
    ) -> None:
        """Add or update the binding between correspondent ``cn`` and ``home``.

        An update (a new care-of address) keeps the binding's use counters.
        """
        fd, key = self._map(role), _key(cn, home)
        packets = last_used = 0
        current = ctypes.create_string_buffer(_VALUE.size)
        try:
            _elem(BPF_MAP_LOOKUP_ELEM, fd, key, current)
            _, packets, last_used = _VALUE.unpack(current.raw)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise RoBpfError(f"reading a {role} binding: {exc}") from exc
        value = ctypes.create_string_buffer(_VALUE.pack(_addr(coa), packets, last_used))
        try:
            _elem(BPF_MAP_UPDATE_ELEM, fd, key, value)
        except OSError as exc:
            if exc.errno == errno.E2BIG:
                raise RoBpfError(f"the {role} binding map is full") from exc
            raise RoBpfError(f"adding a {role} binding: {exc}") from exc

    def remove_binding(self, role: Role, cn: str | IPv6Address, home: str | IPv6Address) -> bool:
        """Remove one binding; False if there was none."""
        try:
            _elem(BPF_MAP_DELETE_ELEM, self._map(role), _key(cn, home), None)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise RoBpfError(f"removing a {role} binding: {exc}") from exc
        return True

    def bindings(self, role: Role | None = None) -> list[RoBinding]:
        """Every binding in the maps (both roles unless one is given), for reconciling."""
        roles: list[Role] = [role] if role else ["cn", "mn"]
        found = []
        for each in roles:
            fd = self._map(each)
            key: bytes | None = None
            while True:
                following = ctypes.create_string_buffer(_KEY.size)
                try:
                    _elem(BPF_MAP_GET_NEXT_KEY, fd, key, following)
                except OSError as exc:
                    if exc.errno == errno.ENOENT:
                        break
                    raise
                key = following.raw
                value = ctypes.create_string_buffer(_VALUE.size)
                try:
                    _elem(BPF_MAP_LOOKUP_ELEM, fd, key, value)
                except OSError as exc:
                    if exc.errno == errno.ENOENT:  # removed meanwhile
                        continue
                    raise
                cn, home = _KEY.unpack(key)
                coa, packets, last_used = _VALUE.unpack(value.raw[: _VALUE.size])
                found.append(
                    RoBinding(
                        each,
                        IPv6Address(cn),
                        IPv6Address(home),
                        IPv6Address(coa),
                        packets,
                        last_used,
                    )
                )
        return found

    def counters(self) -> dict[str, int]:
        """Packet counters (:data:`COUNTERS`), summed over CPUs."""
        self._need_loaded()
        cpus = _possible_cpus()
        totals = {}
        for index, name in enumerate(COUNTERS):
            value = ctypes.create_string_buffer(8 * cpus)
            _elem(BPF_MAP_LOOKUP_ELEM, self._maps[COUNTER_MAP], struct.pack("=I", index), value)
            totals[name] = sum(struct.unpack(f"={cpus}Q", value.raw))
        return totals


def _addr(address: str | IPv6Address) -> bytes:
    return ipaddress.IPv6Address(address).packed


def _key(cn: str | IPv6Address, home: str | IPv6Address) -> bytes:
    return _KEY.pack(_addr(cn), _addr(home))


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


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
    if platform.machine() not in _NR_BPF:
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
