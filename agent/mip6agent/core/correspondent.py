"""Correspondent node without route optimisation: it answers with Binding Errors.

RFC 6275 9.2/9.3.1: a node that does not process a Mobility Header type answers Binding
Error status 2; a Home Address option with no binding behind it gets status 1.
"""

from __future__ import annotations

from ipaddress import IPv6Address

from ..wire import BindingError, Packet, build_packet
from ..wire.constants import IPPROTO_MH, BEStatus
from . import actions as act
from .counters import Counters


class Correspondent:
    def __init__(self) -> None:
        self.counters = Counters()

    def receive(self, packet: Packet, now: float, interface: str | None = None) -> list:
        if packet.protocol == IPPROTO_MH:
            if not packet.checksum_ok():
                self.counters.add("bad_checksum")
                return []
            mh_type = getattr(packet.payload, "MH_TYPE", getattr(packet.payload, "mh_type", None))
            if mh_type is not None:
                self.counters.received(mh_type)
            if mh_type in (1, 2, 5, 7):  # HoTI, CoTI, BU need route optimisation; BE is fine
                if mh_type == 7:
                    return []
                return self._error(packet, BEStatus.UNRECOGNIZED_MH_TYPE)
            if not isinstance(mh_type, int) or mh_type > 7:
                return self._error(packet, BEStatus.UNRECOGNIZED_MH_TYPE)
            return []
        if packet.home_address_option is not None:
            self.counters.add("hao_in")
            return self._error(packet, BEStatus.UNKNOWN_BINDING_FOR_HAO)
        return []

    def _error(self, packet: Packet, status: int) -> list:
        self.counters.be_status(status, "out")
        self.counters.sent(BindingError.MH_TYPE)
        home = packet.home_address_option or IPv6Address(0)
        be = BindingError(status, home)
        return [act.SendPacket(build_packet(packet.dst, packet.src, be), packet.src)]

    def handle_timer(self, now: float) -> list:
        return []

    def get_timer(self) -> float | None:
        return None

    def snapshot(self) -> dict[str, object]:
        return {}
