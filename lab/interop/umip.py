"""UMIP's mip6d (the interop peer) run in a test namespace: its configuration, its process,
its debug console and its log.

mip6d exits with status 0 even when it fails to start, so everything here reads its log
(stderr, where it writes with ``DebugLevel`` set and no ``DebugLogFile``) and its console
(``--enable-vt``: a line-based text console on localhost:7777 in its own namespace, with
``bc`` for the binding cache and ``bul`` for the binding update list).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from ipaddress import IPv6Address
from pathlib import Path

VT_PORT = 7777
VT_PROMPT = b"mip6d> "
_ESCAPES = re.compile(r"\x1b\[[0-9;]*m")
# A log line that means mip6d did not come up although it keeps running or exits 0.
START_FAILURES = re.compile(r"(failed|unable to|can't|cannot|error)", re.IGNORECASE)
_ADDR = r"([0-9a-f:]+)"


def mip6d_binary() -> str | None:
    """The static mip6d the host built (lab/interop/build-umip.sh), shared into the VM."""
    path = os.environ.get("MIP6_INTEROP_MIP6D", "")
    return path if path and os.access(path, os.X_OK) else None


def common_conf(debug_level: int = 10) -> str:
    return f"DebugLevel {debug_level};\nUseMnHaIPsec disabled;\nKeyMngMobCapability disabled;\n"


def ha_conf(interface: str = "eth0") -> str:
    return (
        f'NodeConfig HA;\n{common_conf()}Interface "{interface}";\nDefaultBindingAclPolicy allow;\n'
    )


def mn_conf(
    home_address: str,
    home_agent: str,
    interface: str = "eth0",
    route_optimization: bool = False,
) -> str:
    ro = "enabled" if route_optimization else "disabled"
    return (
        "NodeConfig MN;\n"
        f"{common_conf()}"
        f"DoRouteOptimizationMN {ro};\n"
        # With route optimization: the A bit in correspondent BUs, so the CN answers a BA.
        f"UseCnBuAck {ro};\n"
        "InitialBindackTimeoutFirstReg 1.5;\n"
        f'Interface "{interface}";\n'
        f'MnHomeLink "{interface}" {{\n'
        f"    HomeAgentAddress {home_agent};\n"
        f"    HomeAddress {home_address};\n"
        "}\n"
    )


def cn_conf() -> str:
    return f"NodeConfig CN;\n{common_conf()}DoRouteOptimizationCN enabled;\n"


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One binding cache (``bc``) or binding update list (``bul``) entry of the console."""

    home_address: IPv6Address
    care_of_address: IPv6Address | None
    peer: IPv6Address | None
    status: str
    flags: str
    text: str


def _addr(match: re.Match[str] | None) -> IPv6Address | None:
    return IPv6Address(match.group(1)) if match else None


def parse_bc(text: str) -> list[CacheEntry]:
    """``bc``: ``hoa H status registered`` / `` coa C flags AHL-`` / `` local L ...``."""
    entries = []
    for block in re.split(r"\n(?=hoa )", text.strip()):
        hoa = re.search(r"^hoa " + _ADDR, block, re.MULTILINE)
        if hoa is None:
            continue
        status = re.search(r" status (\S+)", block)
        flags = re.search(r" flags (\S+)", block)
        entries.append(
            CacheEntry(
                IPv6Address(hoa.group(1)),
                _addr(re.search(r" coa " + _ADDR, block)),
                _addr(re.search(r" local " + _ADDR, block)),
                status.group(1) if status else "",
                flags.group(1) if flags else "",
                block,
            )
        )
    return entries


def parse_bul(text: str) -> list[CacheEntry]:
    """``bul``: ``== BUL_ENTRY ==`` / ``Home address H`` / ``Care-of address C`` / ``CN
    address P`` / `` lifetime ...`` / `` flags: IP6_MH_BU_HOME ...`` / `` ack ready|wait``.
    The status is the ack state: ready once the Binding Acknowledgement came."""
    entries = []
    for block in re.split(r"(?m)^(?=== )", text):
        hoa = re.search(r"Home address\s+" + _ADDR, block)
        if hoa is None:
            continue
        ack = re.search(r" ack (\S+)", block)
        flags = "".join(
            letter
            for letter, name in (("A", "ACK"), ("H", "HOME"), ("L", "LLOCAL"), ("K", "KEYM"))
            if f"IP6_MH_BU_{name}" in block
        )
        entries.append(
            CacheEntry(
                IPv6Address(hoa.group(1)),
                _addr(re.search(r"Care-of address\s+" + _ADDR, block)),
                _addr(re.search(r"CN address\s+" + _ADDR, block)),
                ack.group(1) if ack else "",
                flags,
                block.strip(),
            )
        )
    return entries


class Mip6d:
    """One mip6d in one namespace, in the foreground; ``with`` guarantees it is stopped."""

    def __init__(self, binary: str, namespace: str, directory: Path, conf: str) -> None:
        self.binary = binary
        self.namespace = namespace
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.conf_path = directory / "mip6d.conf"
        self.conf_path.write_text(conf)
        self.log_path = directory / "mip6d.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: float = 60.0) -> Mip6d:
        handle = self.log_path.open("ab")
        argv = ["ip", "netns", "exec", self.namespace, self.binary, "-c", str(self.conf_path)]
        self.proc = subprocess.Popen(argv, stdout=handle, stderr=handle)
        handle.close()
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mip6d in {self.namespace} exited with {self.proc.returncode} "
                    f"(its exit status says nothing):\n{self.log()}"
                )
            try:
                self.vt("stats", timeout=2)
                return self
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"mip6d in {self.namespace} has no console:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def vt(self, command: str, timeout: float = 10.0) -> str:
        """One console command's output (the console runs in mip6d's namespace)."""
        netns = os.open(f"/run/netns/{self.namespace}", os.O_RDONLY)
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _setns(netns)
            try:
                sock = socket.create_connection(("::1", VT_PORT), timeout=timeout)
            except OSError:
                sock = socket.create_connection(("127.0.0.1", VT_PORT), timeout=timeout)
        finally:
            _setns(home)
            os.close(netns)
            os.close(home)
        with sock:
            sock.settimeout(timeout)
            _read_reply(sock, timeout, VT_PROMPT)  # the greeting: a prompt, no NUL
            # TCP sessions start with bold/underlined output and a prompt: both off.
            for setting in ("fancy no", "prompt no"):
                sock.sendall(setting.encode() + b"\n")
                _read_reply(sock, timeout)
            sock.sendall(command.encode() + b"\n")
            out = _read_reply(sock, timeout)
            with contextlib.suppress(OSError):
                sock.sendall(b"quit\n")
        text = out.decode(errors="replace").replace("\r", "")
        return _ESCAPES.sub("", text).replace(VT_PROMPT.decode(), "")

    def binding_cache(self) -> list[CacheEntry]:
        return parse_bc(self.vt("bc"))

    def binding_update_list(self) -> list[CacheEntry]:
        return parse_bul(self.vt("bul"))

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=5)

    def __enter__(self) -> Mip6d:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_reply(sock: socket.socket, timeout: float, end_mark: bytes = b"\0") -> bytes:
    """Everything up to the NUL byte the console sends after each reply (and prompt)."""
    data = b""
    end = time.monotonic() + timeout
    while end_mark not in data and time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data.split(end_mark, 1)[0]


_LIBC = ctypes.CDLL(None, use_errno=True)  # os.setns arrives only in Python 3.12


def _setns(fd: int) -> None:
    if _LIBC.setns(fd, 0x40000000) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")
