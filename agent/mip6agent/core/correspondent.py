"""Correspondent node (RFC 6275 9): return routability and correspondent bindings.

Without route optimisation (the default) it answers HoTI, CoTI and BU with Binding Error
status 2 (9.2: "unrecognized MH type") and a Home Address option with no binding behind
it with status 1 (9.3.1).

With ``route_optimization`` on:

* HoTI -> HoT and CoTI -> CoT (9.4) from the nonce ring of
  :mod:`.return_routability`, keeping nothing per mobile node; a HoTI or CoTI carrying a
  Home Address option is dropped. HoT and CoT go through ``test_limiter``.
* A Binding Update (9.5.1) needs a Nonce Indices option and, last with nothing after it,
  a Binding Authorization Data option whose authenticator verifies under the Kbm rebuilt
  from the nonces the indices name. Expired indices earn status 136, 137 or 138; a
  sequence number not newer than the last accepted one for the home address earns 135
  (with the last accepted number); anything else that fails is dropped silently. A BU
  with the H bit earns 131 (139 if we hold a binding for the address): we are no home
  agent. Lifetime 0, or a care-of address equal to the home address, deregisters with
  a Kbm from the home keygen token alone.
* A Binding Acknowledgement goes back only when the A bit asks or on error (9.5.4);
  when the BU was authenticated it carries a Binding Authorization Data option too.
  Unauthenticated replies (131, 136-138) and Binding Errors go through ``limiter``.
* Bindings are keyed by (home address, our address), live at most
  MAX_RR_BINDING_LIFETIME and at most ``max_bindings`` at once (130 past that). A binding
  that the data path reports in use (:meth:`Correspondent.note_use`) since it was last
  registered gets a Binding Refresh Request ``binding_refresh_request_before`` seconds
  before it expires (9.5.5).
* 5.2.8: a removed binding's sequence number is remembered for as long as the nonces
  that authorised it are accepted, so its BUs cannot be replayed; if more than
  ``max_bindings`` such records would be kept, the nonces they guard are retired instead.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from ipaddress import IPv6Address

from ..wire import (
    MOBILITY_MESSAGE_TYPES,
    AlternateCareofAddress,
    BindingAck,
    BindingRefreshRequest,
    BindingUpdate,
    CareofTest,
    CareofTestInit,
    HomeTest,
    HomeTestInit,
    NonceIndices,
    Packet,
    build_packet,
)
from ..wire.addresses import unicast_problem
from ..wire.constants import IPPROTO_MH, LIFETIME_UNIT, BAStatus, BEStatus, MHType
from . import actions as act
from .binding_error import binding_error
from .counters import Counters
from .ratelimit import ReplyLimiter
from .return_routability import (
    CAREOF_TOKEN,
    HOME_TOKEN,
    MAX_RR_BINDING_LIFETIME,
    NonceRing,
    RandomBytes,
    authorization_problem,
    binding_key,
    sign,
)
from .seqno import seq_newer

# Without route optimisation HoTI, CoTI and BU are refused; a BE is never answered.
_REFUSED = {MHType.HOTI, MHType.COTI, MHType.BU}
DEFAULT_MAX_BINDINGS = 1024
Key = tuple[IPv6Address, IPv6Address]  # (home address, correspondent address)


@dataclass(frozen=True, slots=True)
class CorrespondentSettings:
    """``binding_refresh_request_before``: None sends no Binding Refresh Requests."""

    route_optimization: bool = False
    binding_refresh_request_before: float | None = None
    max_bindings: int = DEFAULT_MAX_BINDINGS
    max_lifetime: float = MAX_RR_BINDING_LIFETIME


@dataclass(slots=True)
class CorrespondentBinding:
    home_address: IPv6Address
    correspondent: IPv6Address
    care_of_address: IPv6Address
    sequence: int
    registered: float
    expires: float
    nonces_until: float  # when the nonces that authorised the last BU stop being accepted
    last_use: float | None = None
    refresh_requested: bool = False

    def refresh_at(self, before: float | None) -> float | None:
        """When to send a Binding Refresh Request, if one is due at all."""
        if before is None or self.refresh_requested:
            return None
        if self.last_use is None or self.last_use < self.registered:
            return None  # not used since it was registered
        return self.expires - before

    def to_dict(self) -> dict[str, object]:
        return {
            "home_address": str(self.home_address),
            "correspondent": str(self.correspondent),
            "care_of_address": str(self.care_of_address),
            "sequence": self.sequence,
            "registered": self.registered,
            "expires": self.expires,
            "last_use": self.last_use,
            "refresh_requested": self.refresh_requested,
        }


@dataclass(frozen=True, slots=True)
class _Retired:
    sequence: int
    until: float
    nonces_created: float  # the newest nonce creation time it guards against replay


class Correspondent:
    """``limiter`` bounds Binding Errors and unauthenticated BAs (RFC 6275 9.3.3);
    ``test_limiter`` bounds HoT and CoT. ``random_bytes`` feeds Kcn and the nonces."""

    def __init__(
        self,
        limiter: ReplyLimiter | None = None,
        settings: CorrespondentSettings | None = None,
        random_bytes: RandomBytes = os.urandom,
        test_limiter: ReplyLimiter | None = None,
    ) -> None:
        self.counters = Counters()
        self.limiter = limiter if limiter is not None else ReplyLimiter(10, 200)
        self.test_limiter = test_limiter if test_limiter is not None else ReplyLimiter(10, 1000)
        self.settings = settings if settings is not None else CorrespondentSettings()
        self._random = random_bytes
        self._ring: NonceRing | None = None  # made on first use: no randomness until then
        self.bindings: dict[Key, CorrespondentBinding] = {}
        self._retired: OrderedDict[Key, _Retired] = OrderedDict()

    @property
    def nonces(self) -> NonceRing:
        if self._ring is None:
            self._ring = NonceRing(self._random)
        return self._ring

    # --- received packets ----------------------------------------------------------------

    def receive(self, packet: Packet, now: float, interface: str | None = None) -> list[act.Action]:
        if packet.protocol == IPPROTO_MH:
            payload = packet.payload
            if not isinstance(payload, MOBILITY_MESSAGE_TYPES):
                return []  # a fragment: nothing to decode
            if not packet.checksum_ok():
                self.counters.add("bad_checksum")
                return []
            mh_type = payload.MH_TYPE
            self.counters.received(mh_type)
            if mh_type > MHType.BE:
                return self._error(packet, BEStatus.UNRECOGNIZED_MH_TYPE, now)
            if not self.settings.route_optimization:
                if mh_type in _REFUSED:
                    return self._error(packet, BEStatus.UNRECOGNIZED_MH_TYPE, now)
                return []
            if isinstance(payload, HomeTestInit | CareofTestInit):
                return self._test_init(packet, payload, now)
            if isinstance(payload, BindingUpdate):
                return self._binding_update(packet, payload, now)
            return []
        home = packet.home_address_option
        if home is not None:
            self.counters.add("hao_in")
            binding = self.bindings.get((home, packet.dst))
            if binding is not None and binding.care_of_address == packet.src:
                binding.last_use = now
                return []
            return self._error(packet, BEStatus.UNKNOWN_BINDING_FOR_HAO, now)
        return []

    def _error(self, packet: Packet, status: int, now: float) -> list[act.Action]:
        refused = self.limiter.refusal(packet.src, now)
        if refused is not None:
            self.counters.add(refused)
            return []
        return [binding_error(packet, status, self.counters)]

    def _test_init(
        self, packet: Packet, message: HomeTestInit | CareofTestInit, now: float
    ) -> list[act.Action]:
        """9.4.1-9.4.4: a keygen token for the address the init came from; nothing kept."""
        if packet.home_address_option is not None:
            self.counters.add("rr_init_with_hao")
            return []
        refused = self.test_limiter.refusal(packet.src, now)
        if refused is not None:
            self.counters.add(refused)
            return []
        nonce = self.nonces.current(now)
        reply: HomeTest | CareofTest
        if isinstance(message, HomeTestInit):
            token = nonce.token(packet.src, HOME_TOKEN)
            reply = HomeTest(nonce.index, message.cookie, token)
        else:
            token = nonce.token(packet.src, CAREOF_TOKEN)
            reply = CareofTest(nonce.index, message.cookie, token)
        self.counters.sent(reply.MH_TYPE)
        ours = packet.pseudo_addresses[1]
        return [act.SendPacket(build_packet(ours, packet.src, reply), packet.src)]

    # --- binding updates ------------------------------------------------------------------

    def _binding_update(self, packet: Packet, bu: BindingUpdate, now: float) -> list[act.Action]:
        ours = packet.pseudo_addresses[1]
        home = packet.home_address_option or packet.src
        if unicast_problem(home) is not None:
            self.counters.add("bu_discarded")
            return []
        indices = next((o for o in bu.options if isinstance(o, NonceIndices)), None)
        if bu.home_registration:
            if indices is not None:
                self.counters.add("bu_discarded")
                return []
            status = (
                BAStatus.REGISTRATION_TYPE_CHANGE_DISALLOWED
                if (home, ours) in self.bindings
                else BAStatus.HOME_REGISTRATION_NOT_SUPPORTED
            )
            return self._refuse(packet, bu, status, now)
        if indices is None:
            self.counters.add("bu_discarded")
            return []
        alternate = next((o for o in bu.options if isinstance(o, AlternateCareofAddress)), None)
        care_of = alternate.address if alternate is not None else packet.src
        deregister = bu.lifetime == 0 or care_of == home
        if not deregister and unicast_problem(care_of) is not None:
            self.counters.add("bu_discarded")
            return []
        home_nonce = self.nonces.lookup(indices.home_nonce_index, now)
        careof_nonce = None if deregister else self.nonces.lookup(indices.careof_nonce_index, now)
        expired = None
        if home_nonce is None:
            expired = BAStatus.EXPIRED_HOME_NONCE_INDEX
            if not deregister and careof_nonce is None:
                expired = BAStatus.EXPIRED_NONCES
        elif not deregister and careof_nonce is None:
            expired = BAStatus.EXPIRED_COA_NONCE_INDEX
        if expired is not None:
            self.counters.add("rr_nonce_expired")
            return self._refuse(packet, bu, expired, now)
        assert home_nonce is not None
        home_token = home_nonce.token(home, HOME_TOKEN)
        careof_token = careof_nonce.token(care_of, CAREOF_TOKEN) if careof_nonce else None
        kbm = binding_key(home_token, careof_token)
        problem = authorization_problem(packet.payload_bytes, kbm, care_of, ours)
        # 6.2.7 signs a deregistration with the home address as "care-of address"; UMIP
        # signs one sent from a care-of address with that address: both are taken.
        if (
            problem is not None
            and deregister
            and care_of != home
            and authorization_problem(packet.payload_bytes, kbm, home, ours) is None
        ):
            problem, care_of = None, home
        if problem is not None:
            self.counters.add("rr_auth_failed")
            return [
                act.Log(
                    "debug",
                    "BU for %s from %s dropped: %s",
                    "rr_auth_failed",
                    (home, packet.src, problem),
                )
            ]
        key = (home, ours)
        self._expire_retired(now)
        binding = self.bindings.get(key)
        retired = self._retired.get(key)
        last = binding.sequence if binding else (retired.sequence if retired else None)
        if last is not None and not seq_newer(bu.sequence, last):
            self.counters.add("sequence_mismatch")
            return self._ack(packet, bu, BAStatus.SEQUENCE_OUT_OF_WINDOW, kbm, care_of, last, 0)
        created = max(home_nonce.created, careof_nonce.created if careof_nonce else 0.0)
        nonces_until = created + self.nonces.lifetime
        if deregister:
            out = self._remove(key, now, bu.sequence, nonces_until, "deregistered")
            if bu.ack:
                out += self._ack(packet, bu, BAStatus.ACCEPTED, kbm, care_of, bu.sequence, 0)
            return out
        if binding is None and len(self.bindings) >= self.settings.max_bindings:
            self.counters.add("cn_bindings_full")
            return self._ack(
                packet, bu, BAStatus.INSUFFICIENT_RESOURCES, kbm, care_of, bu.sequence, 0
            )
        units = min(bu.lifetime, int(self.settings.max_lifetime) // LIFETIME_UNIT)
        lifetime = units * LIFETIME_UNIT
        out = []
        if binding is None or binding.care_of_address != care_of:
            out.append(act.InstallCorrespondentBinding(home, care_of, ours))
            out.append(act.Log("info", "correspondent binding %s at %s", None, (home, care_of)))
        self._retired.pop(key, None)
        self.bindings[key] = CorrespondentBinding(
            home,
            ours,
            care_of,
            bu.sequence,
            now,
            now + lifetime,
            max(nonces_until, binding.nonces_until if binding else 0.0),
            binding.last_use if binding else None,
        )
        self.counters.add("cn_binding_updates")
        if bu.ack:
            out += self._ack(packet, bu, BAStatus.ACCEPTED, kbm, care_of, bu.sequence, units)
        return out

    def _ack(
        self,
        packet: Packet,
        bu: BindingUpdate,
        status: int,
        kbm: bytes,
        care_of: IPv6Address,
        sequence: int,
        units: int,
    ) -> list[act.Action]:
        """An authenticated BA (9.5.4): to the BU's source, via RH2 if it came from a CoA."""
        ours = packet.pseudo_addresses[1]
        ba = sign(BindingAck(status, 0, sequence, units), kbm, care_of, ours)
        return [self._send_ba(packet, ba)]

    def _refuse(
        self, packet: Packet, bu: BindingUpdate, status: int, now: float
    ) -> list[act.Action]:
        """A BA that cannot be authenticated: rate limited like a Binding Error."""
        refused = self.limiter.refusal(packet.src, now)
        if refused is not None:
            self.counters.add(refused)
            return []
        return [self._send_ba(packet, BindingAck(status, 0, bu.sequence, 0))]

    def _send_ba(self, packet: Packet, ba: BindingAck) -> act.SendPacket:
        self.counters.ba_status(ba.status, "out")
        self.counters.sent(ba.MH_TYPE)
        ours = packet.pseudo_addresses[1]
        home = packet.home_address_option
        data = build_packet(ours, packet.src, ba, routing_home_address=home)
        return act.SendPacket(data, packet.src)

    def _remove(
        self, key: Key, now: float, sequence: int, nonces_until: float, why: str
    ) -> list[act.Action]:
        binding = self.bindings.pop(key, None)
        until = max(nonces_until, binding.nonces_until if binding else 0.0)
        if until > now:
            self._retire(key, _Retired(sequence, until, until - self.nonces.lifetime))
        if binding is None:
            return []
        return [
            act.RemoveCorrespondentBinding(binding.home_address, binding.correspondent),
            act.Log("info", "correspondent binding %s %s", None, (binding.home_address, why)),
        ]

    def _retire(self, key: Key, record: _Retired) -> None:
        self._retired.pop(key, None)
        self._retired[key] = record
        while len(self._retired) > self.settings.max_bindings:
            _, oldest = self._retired.popitem(last=False)
            # 5.2.8's last measure: forgetting it would let its BUs be replayed.
            self.nonces.retire_through(oldest.nonces_created)
            self.counters.add("rr_nonces_retired")

    def _expire_retired(self, now: float) -> None:
        for key in [k for k, r in self._retired.items() if r.until <= now]:
            del self._retired[key]

    # --- data path and timers ----------------------------------------------------------------

    def note_use(self, home_address: IPv6Address, now: float) -> bool:
        """The data path carried packets for ``home_address``: its bindings are in use."""
        found = False
        for binding in self.bindings.values():
            if binding.home_address == home_address:
                binding.last_use, found = now, True
        return found

    def handle_timer(self, now: float) -> list[act.Action]:
        out: list[act.Action] = []
        before = self.settings.binding_refresh_request_before
        for key, binding in list(self.bindings.items()):
            if binding.expires <= now:
                self.counters.add("cn_binding_expired")
                out += self._remove(key, now, binding.sequence, binding.nonces_until, "expired")
                continue
            due = binding.refresh_at(before)
            if due is not None and due <= now:
                binding.refresh_requested = True
                brr = BindingRefreshRequest()
                self.counters.sent(brr.MH_TYPE)
                data = build_packet(
                    binding.correspondent,
                    binding.care_of_address,
                    brr,
                    routing_home_address=binding.home_address,
                )
                out.append(act.SendPacket(data, binding.care_of_address))
        self._expire_retired(now)
        return out

    def get_timer(self) -> float | None:
        before = self.settings.binding_refresh_request_before
        times = [r.until for r in self._retired.values()]
        for binding in self.bindings.values():
            times.append(binding.expires)
            due = binding.refresh_at(before)
            if due is not None:
                times.append(due)
        return min(times, default=None)

    # --- operator requests -------------------------------------------------------------------

    def reconfigure(self, settings: CorrespondentSettings, now: float) -> list[act.Action]:
        """New settings; switching route optimisation off removes every binding."""
        self.settings = settings
        if settings.route_optimization:
            return []
        return self.stop(now)

    def stop(self, now: float = 0.0) -> list[act.Action]:
        """Remove every binding's data-path state (agent stop, route optimisation off)."""
        out: list[act.Action] = []
        for key, binding in list(self.bindings.items()):
            out += self._remove(key, now, binding.sequence, binding.nonces_until, "removed")
        return out

    def snapshot(self) -> dict[str, object]:
        if not self.bindings:
            return {}
        return {"bindings": [b.to_dict() for b in self.bindings.values()]}
