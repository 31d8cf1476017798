"""Find the IPv6 packet inside a captured frame, by pcap link type."""

from __future__ import annotations

import struct

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
ETHERTYPE_IPV6 = 0x86DD
_VLAN_TYPES = (0x8100, 0x88A8)
_U16 = struct.Struct("!H")


def ipv6_payload(linktype: int, frame: bytes) -> bytes | None:
    """The IPv6 packet in ``frame``, or None when the frame carries something else."""
    if linktype == LINKTYPE_ETHERNET:
        pos = 12
        while pos + 2 <= len(frame):
            ethertype = _U16.unpack_from(frame, pos)[0]
            if ethertype in _VLAN_TYPES:
                pos += 4
                continue
            return frame[pos + 2 :] if ethertype == ETHERTYPE_IPV6 else None
        return None
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV6, 12, 14):
        return frame if frame[:1] and frame[0] >> 4 == 6 else None
    if linktype == LINKTYPE_LINUX_SLL:
        if len(frame) >= 16 and _U16.unpack_from(frame, 14)[0] == ETHERTYPE_IPV6:
            return frame[16:]
        return None
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(frame) >= 20 and _U16.unpack_from(frame, 0)[0] == ETHERTYPE_IPV6:
            return frame[20:]
        return None
    return None
