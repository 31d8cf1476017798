"""Internet checksum over the IPv6 pseudo-header (RFC 8200 8.1)."""

from __future__ import annotations

import struct
from ipaddress import IPv6Address

_PSEUDO_TAIL = struct.Struct("!I3xB")


def internet_checksum(data: bytes) -> int:
    """One's complement of the one's complement sum of ``data`` (network order)."""
    if len(data) & 1:
        data += b"\x00"
    words: tuple[int, ...] = struct.unpack(f"!{len(data) // 2}H", data)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo_header(src: IPv6Address, dst: IPv6Address, length: int, next_header: int) -> bytes:
    return src.packed + dst.packed + _PSEUDO_TAIL.pack(length, next_header)


def upper_layer_checksum(
    src: IPv6Address, dst: IPv6Address, next_header: int, payload: bytes
) -> int:
    """Checksum for ICMPv6 or MH ``payload`` whose own checksum field is zero.

    ``src`` and ``dst`` are the addresses of the pseudo-header, which for Mobile IPv6 are the
    home address where a Home Address option or a Type 2 Routing Header carries one.
    """
    return internet_checksum(pseudo_header(src, dst, len(payload), next_header) + payload)


def verify_upper_layer_checksum(
    src: IPv6Address, dst: IPv6Address, next_header: int, payload: bytes
) -> bool:
    """True when ``payload`` (checksum field filled in) sums to zero with its pseudo-header."""
    return internet_checksum(pseudo_header(src, dst, len(payload), next_header) + payload) == 0
