"""Captures of every link of the test topology, decoded by tshark and by mip6dump.

Each link is a bridge in the topology's ``lan`` namespace. A bridge in promiscuous mode
hands every frame it forwards between its ports to its own device as well, so one
AF_PACKET socket per bridge sees the whole link. A thread per link reads them into memory
with the kernel's receive timestamps; :meth:`LinkCaptures.write` saves one pcap per link.

:func:`decode_both` runs ``mip6dump -T json`` and ``tshark -T fields`` on a capture and
returns the Mobile IPv6 packets as mip6dump sees them plus every disagreement between the
two decoders, field by field (the fields mip6dump prints, by their Wireshark names).
"""

from __future__ import annotations

import json
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import dpkt

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
SO_TIMESTAMPNS = 35
LINKTYPE_ETHERNET = 1
# Where tshark 4.0 is wrong and mip6dump is not (docs/mip6dump.md): compared differently.
TSHARK_BUGS = {"mip6.auth.auth_data", "mip6.mseg_id.timestamp"}


class LinkCaptures:
    """Capture every listed bridge of the ``lan`` namespace until :meth:`stop`."""

    def __init__(self, topology, links: list[str]) -> None:
        self._socks: dict[str, socket.socket] = {}
        self.frames: dict[str, list[tuple[float, bytes]]] = {link: [] for link in links}
        with topology.inside("lan"):
            for link in links:
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                sock.bind((link, 0))
                index = socket.if_nametoindex(link)
                mreq = struct.pack("iHH8s", index, PACKET_MR_PROMISC, 0, b"")
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
                self._socks[link] = sock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="link-captures", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        by_fd = {sock.fileno(): (link, sock) for link, sock in self._socks.items()}
        while not self._stop.is_set():
            ready, _, _ = select.select(list(by_fd), [], [], 0.1)
            for fd in ready:
                link, sock = by_fd[fd]
                self._read(link, sock)

    def _read(self, link: str, sock: socket.socket) -> None:
        data, ancillary, _flags, _address = sock.recvmsg(65535, 64)
        stamp = time.time()
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                seconds, nanoseconds = struct.unpack("qq", value[:16])
                stamp = seconds + nanoseconds / 1e9
        self.frames[link].append((stamp, data))

    def stop(self) -> None:
        if self._stop.is_set():
            return
        time.sleep(0.2)  # the last frames in flight
        self._stop.set()
        self._thread.join(timeout=5)
        for link, sock in self._socks.items():
            while select.select([sock], [], [], 0)[0]:
                self._read(link, sock)
            sock.close()

    def write(self, directory: Path) -> dict[str, Path]:
        """One pcap per link (``<link>.pcap``); returns link -> path."""
        self.stop()
        directory.mkdir(parents=True, exist_ok=True)
        paths = {}
        for link, frames in self.frames.items():
            path = directory / f"{link}.pcap"
            with path.open("wb") as handle:
                writer = dpkt.pcap.Writer(
                    handle, snaplen=65535, linktype=LINKTYPE_ETHERNET, nano=True
                )
                for stamp, data in frames:
                    writer.writepkt(data, ts=stamp)
            paths[link] = path
        return paths


def mip6dump_json(path: Path) -> list[dict[str, str]]:
    result = subprocess.run(
        [sys.executable, "-m", "mip6agent.cli.mip6dump", "-r", str(path), "-T", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return [json.loads(line) for line in result.stdout.splitlines()]


def tshark_rows(path: Path, names: list[str]) -> dict[int, dict[str, str]]:
    """``tshark -T fields`` for ``frame.number`` and ``names``: frame number -> values."""
    args = ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=/t", "-e", "frame.number"]
    for name in names:
        args += ["-e", name]
    result = subprocess.run(args, capture_output=True, text=True, check=True, timeout=300)
    rows = {}
    for line in result.stdout.splitlines():
        values = line.split("\t")
        rows[int(values[0])] = dict(zip(names, values[1:], strict=True))
    return rows


def decode_both(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    """mip6dump's Mobile IPv6 packets of a capture, and where tshark says otherwise."""
    ours = mip6dump_json(path)
    names = sorted({n for row in ours for n in row} - {"frame.number", "_ws.malformed"})
    theirs = tshark_rows(path, names) if names else {}
    disagreements = []
    for mine in ours:
        frame = int(mine["frame.number"])
        if "_ws.malformed" in mine:
            disagreements.append(f"{path.name} frame {frame}: mip6dump: {mine['_ws.malformed']}")
            continue
        other = theirs.get(frame)
        if other is None:
            disagreements.append(f"{path.name} frame {frame}: tshark has no such frame")
            continue
        for name in names:
            value, expected = mine.get(name, ""), other[name]
            if name == "mip6.auth.auth_data":
                # tshark shows two octets fewer than the option holds.
                value = ",".join(v[:-4] for v in value.split(",")) if value else ""
                expected = expected.replace(":", "")
            elif name in TSHARK_BUGS:
                continue
            elif name in {"mip6.bad.auth", "mip6.binding_refresh_request"}:
                expected = expected.replace(":", "")
            if value != expected:
                disagreements.append(
                    f"{path.name} frame {frame}: {name}: mip6dump {value!r}, tshark {expected!r}"
                )
    return ours, disagreements


def tshark_mobility(path: Path) -> list[dict[str, str]]:
    """tshark's own view of every Mobility Header packet (to catch ones mip6dump missed)."""
    names = ["ipv6.src", "ipv6.dst", "mip6.mhtype"]
    args = ["tshark", "-r", str(path), "-Y", "mipv6", "-T", "fields", "-E", "separator=/t"]
    args += ["-e", "frame.number", *[x for n in names for x in ("-e", n)]]
    result = subprocess.run(args, capture_output=True, text=True, check=True, timeout=300)
    rows = []
    for line in result.stdout.splitlines():
        values = line.split("\t")
        rows.append({"frame.number": values[0], **dict(zip(names, values[1:], strict=True))})
    return rows
