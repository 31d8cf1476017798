"""eBPF objects the agent compiles, loads and pins, shared by the route-optimization
programs (ro_bpf.py) and the tunnel programs (bpf_tunnel.py).

- the bpf(2) system call for map elements and object ids (ctypes: no library needed);
- bpffs: mounted at /sys/fs/bpf when nothing is;
- :func:`compile_object`: ``clang -target bpf`` into a cache keyed by a hash of the source
  and the flags;
- :class:`PinnedObjects`: one object's programs and maps pinned under one directory,
  with a ``build-<digest>`` marker, so that a restarted agent reopens what the previous
  run pinned, and a partial set or another build's pins are loaded anew.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import platform
import shutil
import struct
import subprocess
import sysconfig
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

PIN_ROOT = Path("/sys/fs/bpf/mip6agent")

NR_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "riscv64": 280, "ppc64le": 361}
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_OBJ_GET = 7
BPF_OBJ_GET_INFO_BY_FD = 15
_ATTR_SIZE = 128

_libc = ctypes.CDLL(None, use_errno=True)


class BpfError(Exception):
    """An eBPF object could not be built, loaded, opened or changed."""


# --- the bpf(2) system call ------------------------------------------------------------


def bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    number = NR_BPF.get(platform.machine())
    if number is None:
        raise BpfError(f"bpf(2): unknown system call number on {platform.machine()}")
    result = _libc.syscall(number, cmd, attr, _ATTR_SIZE)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(result)


def obj_get(path: Path) -> int:
    """A file descriptor for the map or program pinned at ``path``."""
    name = ctypes.create_string_buffer(os.fsencode(path))
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("=QII", attr, 0, ctypes.addressof(name), 0, 0)
    return bpf(BPF_OBJ_GET, attr)


def obj_id(fd: int) -> int:
    """The kernel id of a program or map (the second u32 of either info struct)."""
    info = ctypes.create_string_buffer(256)
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("=IIQ", attr, 0, fd, len(info), ctypes.addressof(info))
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return int(struct.unpack_from("=I", info.raw, 4)[0])


def elem(
    cmd: int, fd: int, key: bytes | None, value: ctypes.Array[ctypes.c_char] | None, flags: int = 0
) -> None:
    kbuf = ctypes.create_string_buffer(key, len(key)) if key is not None else None
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    key_at = ctypes.addressof(kbuf) if kbuf is not None else 0
    value_at = ctypes.addressof(value) if value is not None else 0
    struct.pack_into("=IIQQQ", attr, 0, fd, 0, key_at, value_at, flags)
    bpf(cmd, attr)


def possible_cpus() -> int:
    """How many values a per-CPU map holds (the kernel's possible CPUs)."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


# --- bpffs ---------------------------------------------------------------------------


def is_bpffs(path: Path) -> bool:
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1:3] == [str(path), "bpf"] for line in mounts)


def ensure_bpffs(root: Path = PIN_ROOT) -> None:
    """Mount bpffs at /sys/fs/bpf when nothing is mounted there (systemd usually does)."""
    mountpoint = Path("/sys/fs/bpf")
    if root.is_relative_to(mountpoint) and not is_bpffs(mountpoint):
        result = subprocess.run(
            ["mount", "-t", "bpf", "bpf", str(mountpoint)], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise BpfError(f"cannot mount bpffs on {mountpoint}: {result.stderr.strip()}")
    root.mkdir(parents=True, exist_ok=True)


# --- building ------------------------------------------------------------------------


def default_cache_dir() -> Path:
    if env := os.environ.get("MIP6AGENT_BPF_CACHE"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/mip6agent/bpf")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mip6agent" / "bpf"


def include_dirs() -> list[str]:
    multiarch = sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu"
    return [f"/usr/include/{multiarch}"]


def build_flags(defines: Iterable[str]) -> list[str]:
    return ["-O2", "-g", "-target", "bpf", "-Wall", *(f"-D{d}" for d in defines),
            *(f"-I{d}" for d in include_dirs())]  # fmt: skip


def digest(source: Path, defines: Iterable[str]) -> str:
    """What identifies one build: a hash of the source and the compiler flags."""
    flags = build_flags(defines)
    return hashlib.sha256(source.read_bytes() + "\0".join(flags).encode()).hexdigest()[:16]


def compile_object(
    source: Path, stem: str, defines: list[str], cache_dir: Path | None = None, clang: str = "clang"
) -> Path:
    """``source`` compiled for BPF into the cache, named by a hash of it and the flags;
    compiled only when no cached copy matches."""
    cache = cache_dir or default_cache_dir()
    target = cache / f"{stem}-{digest(source, defines)}.bpf.o"
    if target.exists():
        return target
    compiler = shutil.which(clang)
    if compiler is None:
        raise BpfError(f"{clang} not found (Debian: apt install clang llvm libbpf-dev)")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache, suffix=".o", delete=False) as tmp:
        partial = Path(tmp.name)
    try:
        result = subprocess.run(
            [compiler, *build_flags(defines), "-c", str(source), "-o", str(partial)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise BpfError(f"compiling {source.name} failed: {result.stderr.strip()}")
        partial.replace(target)  # atomic: a concurrent build finds a whole object or none
    finally:
        partial.unlink(missing_ok=True)
    return target


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# --- pinned programs and maps ---------------------------------------------------------


class PinnedObjects:
    """The programs and maps of one object, pinned as ``<pin_dir>/progs/<program>`` and
    ``<pin_dir>/maps/<map>``; errors are raised as ``error(message)``.

    Map access is by map name; keys and values are the packed C structs.
    """

    def __init__(
        self,
        pin_dir: Path,
        programs: Iterable[str],
        maps: Iterable[str],
        error: Callable[[str], Exception] = BpfError,
    ) -> None:
        self.pin_dir = pin_dir
        self.program_names = tuple(programs)
        self.map_names = tuple(maps)
        self.error = error
        self.progs: dict[str, int] = {}
        self.maps: dict[str, int] = {}

    @property
    def loaded(self) -> bool:
        return bool(self.progs)

    def _pins(self) -> list[Path]:
        return [self.pin_dir / "progs" / p for p in self.program_names] + [
            self.pin_dir / "maps" / m for m in self.map_names
        ]

    def load(
        self,
        build: Callable[[], Path],
        build_id: str,
        prog_type: str | None = None,
        keep: str | None = None,
    ) -> bool:
        """Reopen the pins of build ``build_id``, or load ``build()`` anew and pin it;
        True if loaded anew (maps empty). A partial set of pins or another build's is
        removed first (entries whose name starts with ``keep`` stay)."""
        if self.progs:
            return False
        marker = self.pin_dir / f"build-{build_id}"  # bpffs holds directories, not files
        try:
            ensure_bpffs(self.pin_dir.parent)
            fresh = not (marker.is_dir() and all(p.exists() for p in self._pins()))
            if fresh:
                self.unpin(keep)
                obj = build()
                bpftool = shutil.which("bpftool")
                if bpftool is None:
                    raise BpfError("bpftool not found (Debian: apt install bpftool)")
                self.pin_dir.mkdir(parents=True, exist_ok=True)
                typed = ["type", prog_type] if prog_type else []
                result = subprocess.run(
                    [bpftool, "prog", "loadall", str(obj), str(self.pin_dir / "progs"), *typed,
                     "pinmaps", str(self.pin_dir / "maps")],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                if result.returncode != 0:
                    self.unpin()
                    raise BpfError(f"loading {obj.name} failed: {_tail(result.stderr)}")
                marker.mkdir()
        except (BpfError, OSError) as exc:
            raise self.error(str(exc)) from exc
        try:
            self.progs = {p: obj_get(self.pin_dir / "progs" / p) for p in self.program_names}
            self.maps = {m: obj_get(self.pin_dir / "maps" / m) for m in self.map_names}
        except OSError as exc:
            self.close()
            raise self.error(f"opening the pins under {self.pin_dir}: {exc}") from exc
        return fresh

    def close(self) -> None:
        """Close our descriptors; pins stay (a restart finds them)."""
        for fd in [*self.progs.values(), *self.maps.values()]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.progs, self.maps = {}, {}

    def unpin(self, keep: str | None = None) -> None:
        """Remove the pins and the marker (entries starting with ``keep`` stay), and the
        directory once empty."""
        if not self.pin_dir.is_dir():
            return
        for entry in self.pin_dir.iterdir():
            if keep and entry.name.startswith(keep):
                continue
            if entry.is_dir():
                for pin in entry.iterdir():
                    pin.unlink()
                entry.rmdir()
            else:
                entry.unlink()
        if not any(self.pin_dir.iterdir()):
            self.pin_dir.rmdir()

    def prog_id(self, name: str) -> int:
        return obj_id(self.progs[name])

    # map elements

    def _fd(self, name: str) -> int:
        if not self.maps:
            raise self.error("not loaded: call load() first")
        return self.maps[name]

    def update(self, name: str, key: bytes, value: bytes) -> None:
        buffer = ctypes.create_string_buffer(value, len(value))
        try:
            elem(BPF_MAP_UPDATE_ELEM, self._fd(name), key, buffer)
        except OSError as exc:
            why = "full" if exc.errno == errno.E2BIG else str(exc)
            raise self.error(f"map {name}: {why}") from None

    def delete(self, name: str, key: bytes) -> bool:
        """False if there was no such entry."""
        try:
            elem(BPF_MAP_DELETE_ELEM, self._fd(name), key, None)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise self.error(f"map {name}: {exc}") from None
        return True

    def lookup(self, name: str, key: bytes, size: int) -> bytes | None:
        """The value, None if there is no such entry."""
        value = ctypes.create_string_buffer(size)
        try:
            elem(BPF_MAP_LOOKUP_ELEM, self._fd(name), key, value)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise self.error(f"map {name}: {exc}") from None
        return value.raw

    def items(self, name: str, key_size: int, value_size: int) -> list[tuple[bytes, bytes]]:
        """Every (key, value); entries removed during the walk are left out."""
        found: list[tuple[bytes, bytes]] = []
        fd, key = self._fd(name), None
        while True:
            following = ctypes.create_string_buffer(key_size)
            try:
                elem(BPF_MAP_GET_NEXT_KEY, fd, key, following)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    return found
                raise self.error(f"map {name}: {exc}") from None
            key = following.raw
            value = self.lookup(name, key, value_size)
            if value is not None:
                found.append((key, value))

    def per_cpu_sums(self, name: str, count: int) -> list[int]:
        """Entries 0..count-1 of a per-CPU array of u64, each summed over CPUs."""
        cpus = possible_cpus()
        sums = []
        for index in range(count):
            raw = self.lookup(name, struct.pack("=I", index), 8 * cpus)
            sums.append(sum(struct.unpack(f"={cpus}Q", raw)) if raw else 0)
        return sums
