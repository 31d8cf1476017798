"""Where ``mip6dump`` gets frames: a pcap/pcapng file or a live AF_PACKET socket."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import dpkt  # type: ignore[import-untyped]  # dpkt ships no annotations or py.typed

from ..wire.link import ETHERTYPE_IPV6, LINKTYPE_RAW

_PACKET_OUTGOING = 4


class SourceError(Exception):
    """A file or interface that cannot be read; the message is one line for the user."""


@dataclass(slots=True)
class Frame:
    number: int
    timestamp: float
    linktype: int
    data: bytes


class _ShortReadWatch:
    """File wrapper that notices a read cut short by the end of the file.

    dpkt's pcap reader hands back a partial last packet without complaint.
    """

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.short = False

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        if size > 0 and 0 < len(data) < size:
            self.short = True
        return data

    def __getattr__(self, name: str) -> object:
        return getattr(self._handle, name)


def read_file(path: str) -> Iterator[Frame]:
    """Frames of a pcap or pcapng file, numbered from 1 as tshark numbers them."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed in the finally below
    except OSError as exc:
        raise SourceError(f"{path}: {exc.strerror or exc}") from None
    watch = _ShortReadWatch(handle)
    try:
        try:
            reader = dpkt.pcap.UniversalReader(watch)
        except (ValueError, dpkt.Error, struct.error) as exc:
            raise SourceError(f"{path}: not a pcap or pcapng file ({exc})") from None
        linktype = reader.datalink()
        number = 0
        iterator = iter(reader)
        while True:
            try:
                timestamp, data = next(iterator)
            except StopIteration:
                return
            except (ValueError, dpkt.Error, struct.error, EOFError) as exc:
                raise SourceError(
                    f"{path}: truncated or corrupt after frame {number} ({exc})"
                ) from None
            if watch.short:
                raise SourceError(f"{path}: truncated after frame {number}")
            number += 1
            yield Frame(number, float(timestamp), linktype, bytes(data))
    finally:
        handle.close()


def capture(interface: str) -> Iterator[Frame]:
    """IPv6 packets seen on ``interface``, in both directions, as raw IPv6 frames."""
    try:
        socket.if_nametoindex(interface)
    except OSError:
        raise SourceError(f"{interface}: no such interface") from None
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETHERTYPE_IPV6))
        sock.bind((interface, ETHERTYPE_IPV6))
    except PermissionError:
        raise SourceError(f"{interface}: capturing needs root or CAP_NET_RAW") from None
    except OSError as exc:
        raise SourceError(f"{interface}: {exc.strerror or exc}") from None
    loopback = _is_loopback(interface)
    number = 0
    try:
        while True:
            data, address = sock.recvfrom(65535)
            # Loopback shows every packet twice, once outgoing and once incoming.
            if loopback and address[2] == _PACKET_OUTGOING:
                continue
            number += 1
            yield Frame(number, time.time(), LINKTYPE_RAW, data)
    finally:
        sock.close()


def _is_loopback(interface: str) -> bool:
    try:
        with open(f"/sys/class/net/{interface}/type") as handle:
            return handle.read().strip() == "772"
    except OSError:
        return False
