"""The Binding Error reply (RFC 6275 9.3.1, 9.2) that every role sends the same way."""

from __future__ import annotations

from ipaddress import IPv6Address

from ..wire import BindingError, Packet, build_packet
from . import actions as act
from .counters import Counters


def binding_error(
    packet: Packet, status: int, counters: Counters, source: IPv6Address | None = None
) -> act.SendPacket:
    """A BE to the sender of ``packet``, from the address it was sent to unless given."""
    counters.be_status(status, "out")
    counters.sent(BindingError.MH_TYPE)
    home = packet.home_address_option or IPv6Address(0)
    data = build_packet(source or packet.dst, packet.src, BindingError(status, home))
    return act.SendPacket(data, packet.src)
