"""Throwaway network namespaces for integration tests; always removed afterwards."""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_counter = itertools.count()
NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
_LIBC = ctypes.CDLL(None, use_errno=True)  # os.setns arrives only in Python 3.12


def _setns(fd: int) -> None:
    """Move the calling thread (only it) into the network namespace open as ``fd``."""
    if _LIBC.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the block with the calling thread in namespace ``ns`` (a name under /run/netns)."""
    target = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def unique(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 10000}x{next(_counter)}"


@contextmanager
def namespaces(*roles: str) -> Iterator[dict[str, str]]:
    """Create one namespace per role name; yield role -> namespace name."""
    names = {role: unique(f"m6{role[:3]}") for role in roles}
    try:
        for name in names.values():
            ip("netns", "add", name)
            ip("-n", name, "link", "set", "lo", "up")
        yield names
    finally:
        for name in names.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@contextmanager
def shared_bpf_pins() -> Iterator[str | None]:
    """A bpffs under /run that every agent started from here sees, as a systemd-run agent
    sees /sys/fs/bpf: ``ip netns exec`` mounts a fresh /sys, so without it an agent's eBPF
    tunnel pins would vanish with each run and a restarted agent could never adopt them.

    Sets ``MIP6AGENT_BPF_PINS`` for the block (child processes inherit it) and yields its
    path; keeps one the caller already set; yields None where no bpffs can be mounted.
    """
    if os.environ.get("MIP6AGENT_BPF_PINS"):
        yield os.environ["MIP6AGENT_BPF_PINS"]
        return
    root = Path(tempfile.mkdtemp(prefix="mip6-tests-bpffs-", dir="/run"))
    mounted = subprocess.run(["mount", "-t", "bpf", "bpf", str(root)], check=False).returncode == 0
    if mounted:
        os.environ["MIP6AGENT_BPF_PINS"] = str(root)
    try:
        yield str(root) if mounted else None
    finally:
        if mounted:
            os.environ.pop("MIP6AGENT_BPF_PINS", None)
            subprocess.run(["umount", "-l", str(root)], check=False)
        root.rmdir()


def netns_cookie(ns: str) -> int:
    """The namespace's cookie (Linux 5.14+), which names the eBPF tunnel's pin directory."""
    with inside(ns), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        raw = sock.getsockopt(socket.SOL_SOCKET, 71, 8)  # SO_NETNS_COOKIE
    return int.from_bytes(raw, "little")


def veth(ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
    """A veth pair between two namespaces, both ends up."""
    ip("link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
    ip("-n", ns_a, "link", "set", if_a, "up")
    ip("-n", ns_b, "link", "set", if_b, "up")


def address(ns: str, ifname: str, cidr: str) -> None:
    ip("-n", ns, "addr", "add", cidr, "dev", ifname, "nodad")


def run_in(ns: str, *argv: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], text=True, **kwargs)  # type: ignore[call-overload]


def popen_in(ns: str, *argv: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv], text=True, **kwargs)  # type: ignore[call-overload]


def namespace_pids(ns: str) -> list[int]:
    result = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(p) for p in result.stdout.split()]


def kill_namespace_processes(ns: str) -> None:
    for pid in namespace_pids(ns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def stop_daemon(proc: subprocess.Popen[str]) -> None:
    """Stop a daemon started with ``ip netns exec`` and its helpers, helpers first.

    With radvd, stopping its privilege-separation helper first means no radvd process is
    still running when the namespace goes. radvd does not reap it, so it stays a zombie
    (dead, holding nothing) until PID 1 reaps it; we cannot reap a grandchild without
    making the whole test process a subreaper.
    """
    helpers = _children(proc.pid)
    for pid in helpers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + 1.0
    while helpers and any(_running(pid) for pid in helpers) and time.monotonic() < end:
        time.sleep(0.01)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def _running(pid: int) -> bool:
    """Alive and not yet a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
