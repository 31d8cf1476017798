"""Correspondent node without route optimisation: it answers with Binding Errors.

RFC 6275 9.2/9.3.1: a node that does not process a Mobility Header type answers Binding
Error status 2; a Home Address option with no binding behind it gets status 1.
"""

from __future__ import annotations

from ..wire import Packet
from ..wire.constants import IPPROTO_MH, BEStatus, MHType
from .binding_error import binding_error
from .counters import Counters
from .ratelimit import ReplyLimiter

# HoTI, CoTI and BU need route optimisation; a BE is never answered with a BE.
_REFUSED = {MHType.HOTI, MHType.COTI, MHType.BU}


class Correspondent:
    """``limiter`` bounds the Binding Errors any sender can trigger (RFC 6275 9.3.3)."""

    def __init__(self, limiter: ReplyLimiter | None = None) -> None:
        self.counters = Counters()
        self.limiter = limiter if limiter is not None else ReplyLimiter(10, 200)

    def _error(self, packet: Packet, status: int, now: float) -> list:
        refused = self.limiter.refusal(packet.src, now)
        if refused is not None:
            self.counters.add(refused)
            return []
        return [binding_error(packet, status, self.counters)]

    def receive(self, packet: Packet, now: float, interface: str | None = None) -> list:
        if packet.protocol == IPPROTO_MH:
            if isinstance(packet.payload, bytes):
                return []  # a fragment: nothing to decode
            if not packet.checksum_ok():
                self.counters.add("bad_checksum")
                return []
            mh_type = packet.payload.MH_TYPE
            self.counters.received(mh_type)
            if mh_type in _REFUSED or mh_type > MHType.BE:
                return self._error(packet, BEStatus.UNRECOGNIZED_MH_TYPE, now)
            return []
        if packet.home_address_option is not None:
            self.counters.add("hao_in")
            return self._error(packet, BEStatus.UNKNOWN_BINDING_FOR_HAO, now)
        return []

    def handle_timer(self, now: float) -> list:
        return []

    def get_timer(self) -> float | None:
        return None

    def snapshot(self) -> dict[str, object]:
        return {}
