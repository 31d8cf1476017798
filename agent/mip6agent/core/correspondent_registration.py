"""Mobile node side of route optimisation: one correspondent registration (RFC 6275 11.6-11.7).

A :class:`CorrespondentRegistration` is the binding update list entry for one (home
address, correspondent) pair. It runs return routability, sends the Binding Update with
Nonce Indices and Binding Authorization Data, handles the Binding Acknowledgement, Binding
Errors and Binding Refresh Requests, refreshes the binding, and deregisters when the node
comes home. Sans-I/O like the rest of the core: it is fed ``(packet, now)`` and events,
returns actions, and says when it next wants the clock.

States::

    idle ──away()──> testing ──HoT+CoT──> updating ──BA 0──> bound ──refresh/BRR──> testing
                        │  ^                  │  │                 │
                        │  └── BA 136-138 ────┘  └── 135: BU again  └──away(new CoA)──> testing
                        │                                            (CoTI only if the home
                        └── no answer after back-off, BA refused, BE 2 ──> held   token is fresh)
    home(): testing/updating/bound ──> testing (HoTI only) ──> updating (lifetime 0) ──> idle

* HoTI goes from the home address (away: the kernel's reverse tunnel policy for the home
  address carries it to the home agent; at home it leaves directly), CoTI from the care-of
  address without a Home Address option. Both are retransmitted from ``initial_timeout``
  with exponential back-off up to ``max_timeout`` (the BU timers of section 12), keeping
  their cookies so that a late answer to the first copy still counts.
* Keygen tokens are kept with their nonce index and reused while younger than
  MAX_TOKEN_LIFETIME (5.2.7, 11.6.1): after a handover only a new CoTI is needed, back home
  only a HoTI (a deregistration's Kbm is SHA1(home keygen token)).
* The BU (11.7.2) asks for min(``lifetime``, MAX_RR_BINDING_LIFETIME, what is left of the
  home registration), always with the A bit unless ``ack`` is off (then the binding counts
  as made once the BU is sent), a new sequence number on every transmission.
* BA (11.7.3): 136/137/138 drop the home, care-of or both tokens and run return routability
  again (they cannot carry an authenticator); any other status must carry a Binding
  Authorization Data option that verifies under the BU's Kbm, else it is ignored. 135: the
  next BU steps past the correspondent's number. Other refusals hold the entry.
* Binding Error (11.7.4 and 9.3.1): status 1 (the correspondent has no binding for our
  Home Address option) drops the tokens and runs return routability again; status 2 (it
  does not speak Mobile IPv6) holds the entry for ``unsupported_holddown`` seconds.
* A Binding Refresh Request runs return routability anew.
* ``refresh_fraction`` of the granted lifetime after the BA, the registration is renewed.

Intended integration (not wired yet): ``MobileNode`` owns one instance per (home address,
correspondent) in a dict, created when route optimisation is wanted for a peer (traffic
seen through the tunnel, or a configured list; never for "no RO" peers) and passing its
own ``counters``. It calls :meth:`away` with the new care-of address after each home
registration is accepted (with ``home_expires`` set to that registration's expiry),
:meth:`home` when the node is back home, and :meth:`stop` when the peer is no longer
wanted or the node stops. Received MH packets go to the instance whose :meth:`wants` says
yes; ``handle_timer`` and ``get_timer`` are folded into the node's. The I/O layer carries
out :class:`~.actions.InstallCorrespondentBinding` (HAO out, RH2 in for that pair) and
:class:`~.actions.RemoveCorrespondentBinding` (back to the tunnel).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv6Address

from ..wire import (
    BindingAck,
    BindingError,
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
from ..wire.constants import BU_FLAG_A, IPPROTO_MH, LIFETIME_UNIT, BAStatus, BEStatus
from . import actions as act
from .counters import Counters
from .return_routability import (
    COOKIE_LENGTH,
    MAX_RR_BINDING_LIFETIME,
    MAX_TOKEN_LIFETIME,
    RandomBytes,
    authorization_problem,
    binding_key,
    sign,
)
from .seqno import seq_add

INITIAL_BINDACK_TIMEOUT = 1.0  # RFC 6275 12
MAX_BINDACK_TIMEOUT = 32.0  # RFC 6275 12
REFRESH_FRACTION = 0.8
UNSUPPORTED_HOLDDOWN = 600.0  # our choice: the RFC says "stop trying for a while"
FAILURE_HOLDDOWN = 60.0  # our choice: after back-off ran out or a refusal
_UNSPECIFIED = IPv6Address(0)
# BA status -> (home token expired, care-of token expired)
_EXPIRED = {
    int(BAStatus.EXPIRED_HOME_NONCE_INDEX): (True, False),
    int(BAStatus.EXPIRED_COA_NONCE_INDEX): (False, True),
    int(BAStatus.EXPIRED_NONCES): (True, True),
}


@dataclass(frozen=True, slots=True)
class RouteOptimizationSettings:
    lifetime: float = MAX_RR_BINDING_LIFETIME
    ack: bool = True
    initial_timeout: float = INITIAL_BINDACK_TIMEOUT
    max_timeout: float = MAX_BINDACK_TIMEOUT
    token_lifetime: float = MAX_TOKEN_LIFETIME
    refresh_fraction: float = REFRESH_FRACTION
    unsupported_holddown: float = UNSUPPORTED_HOLDDOWN
    failure_holddown: float = FAILURE_HOLDDOWN


@dataclass(frozen=True, slots=True)
class KeygenToken:
    """A token from a HoT or CoT, for ``address``, received at ``received``."""

    token: bytes
    nonce_index: int
    address: IPv6Address
    received: float


class CorrespondentRegistration:
    def __init__(
        self,
        home_address: IPv6Address,
        correspondent: IPv6Address,
        random_bytes: RandomBytes,
        settings: RouteOptimizationSettings | None = None,
        counters: Counters | None = None,
        initial_sequence: int = 0,
    ) -> None:
        self.home_address = home_address
        self.correspondent = correspondent
        self.settings = settings if settings is not None else RouteOptimizationSettings()
        self.counters = counters if counters is not None else Counters()
        self._random = random_bytes
        self.state = "idle"  # idle|testing|updating|bound|held
        self.deregistering = False
        self.care_of_address: IPv6Address | None = None  # None: at home
        self.home_expires: float | None = None
        self.sequence = initial_sequence
        self.home_token: KeygenToken | None = None
        self.careof_token: KeygenToken | None = None
        self.home_cookie: bytes | None = None  # outstanding HoTI
        self.careof_cookie: bytes | None = None  # outstanding CoTI
        self.retransmit_at: float | None = None
        self.timeout = self.settings.initial_timeout
        self.refresh_at: float | None = None
        self.expires: float | None = None
        self.hold_until: float | None = None
        self.installed: IPv6Address | None = None  # care-of address in the data path
        self.registered = False  # the correspondent may hold a binding for us
        self.reason = ""
        # The last BU: (Kbm, the care-of address it was signed with), to check the BA.
        self._sent: tuple[bytes, IPv6Address] | None = None

    # --- events from the owner ------------------------------------------------------------

    def away(
        self, care_of_address: IPv6Address, now: float, home_expires: float | None = None
    ) -> list[act.Action]:
        """Registered with the home agent at ``care_of_address``: optimise the route."""
        self.home_expires = home_expires
        moved = care_of_address != self.care_of_address
        self.care_of_address = care_of_address
        was_deregistering, self.deregistering = self.deregistering, False
        if self.state == "held":
            return []  # the hold timer starts over from wherever we are by then
        if not moved and not was_deregistering and self.state != "idle":
            return []
        out = self._uninstall()
        return out + self._run(now)

    def home(self, now: float) -> list[act.Action]:
        """Back on the home link: deregister with the correspondent if it may hold a binding."""
        self.care_of_address = None
        self.careof_token = None
        self.careof_cookie = None
        out = self._uninstall()
        if not self.registered:
            self._idle()
            return out
        if self.state == "held" and self.hold_until is not None and self.hold_until > now:
            return out
        self.deregistering = True
        return out + self._run(now)

    def stop(self) -> list[act.Action]:
        """Forget the correspondent (no longer wanted): back to the tunnel, no signalling."""
        out = self._uninstall()
        self._idle()
        self.registered = False
        return out

    # --- return routability ---------------------------------------------------------------

    def _fresh(self, token: KeygenToken | None, address: IPv6Address | None, now: float) -> bool:
        return (
            token is not None
            and token.address == address
            and 0 <= now - token.received < self.settings.token_lifetime
        )

    def _run(self, now: float) -> list[act.Action]:
        """Get the tokens that are missing or stale, then send the BU."""
        self.refresh_at = None
        self.timeout = self.settings.initial_timeout
        need_home = not self._fresh(self.home_token, self.home_address, now)
        need_careof = not self.deregistering and not self._fresh(
            self.careof_token, self.care_of_address, now
        )
        if not need_home and not need_careof:
            return self._send_bu(now)
        self.state = "testing"
        self.home_cookie = self._random(COOKIE_LENGTH) if need_home else None
        self.careof_cookie = self._random(COOKIE_LENGTH) if need_careof else None
        self.retransmit_at = now + self.timeout
        return self._send_tests()

    def _send_tests(self) -> list[act.Action]:
        out: list[act.Action] = []
        if self.home_cookie is not None:
            hoti = HomeTestInit(self.home_cookie)
            self.counters.sent(hoti.MH_TYPE)
            # From the home address: away, the reverse tunnel to the home agent carries it.
            data = build_packet(self.home_address, self.correspondent, hoti)
            out.append(act.SendPacket(data, self.correspondent))
        if self.careof_cookie is not None and self.care_of_address is not None:
            coti = CareofTestInit(self.careof_cookie)
            self.counters.sent(coti.MH_TYPE)
            data = build_packet(self.care_of_address, self.correspondent, coti)
            out.append(act.SendPacket(data, self.correspondent))
        return out

    def _send_bu(self, now: float) -> list[act.Action]:
        home = self.home_token
        assert home is not None
        self.sequence = seq_add(self.sequence)
        flags = BU_FLAG_A if self.settings.ack else 0
        if self.deregistering:
            care_of, units, careof_token, careof_index = self.home_address, 0, None, 0
        else:
            careof = self.careof_token
            assert careof is not None and self.care_of_address is not None
            care_of, careof_token, careof_index = careof.address, careof.token, careof.nonce_index
            lifetime = min(self.settings.lifetime, MAX_RR_BINDING_LIFETIME)
            if self.home_expires is not None:
                lifetime = min(lifetime, self.home_expires - now)
            units = max(1, int(lifetime) // LIFETIME_UNIT)
        kbm = binding_key(home.token, careof_token)
        indices = NonceIndices(home.nonce_index, careof_index)
        bu = BindingUpdate(self.sequence, flags, units, [indices])
        bu = sign(bu, kbm, care_of, self.correspondent)
        self._sent = (kbm, care_of)
        self.counters.sent(bu.MH_TYPE)
        if self.deregistering:
            data = build_packet(self.home_address, self.correspondent, bu)
        else:
            data = build_packet(care_of, self.correspondent, bu, home_address=self.home_address)
        out: list[act.Action] = [act.SendPacket(data, self.correspondent)]
        self.registered = True
        if self.settings.ack:
            self.state = "updating"
            self.retransmit_at = now + self.timeout
            return out
        # No acknowledgement asked for: the binding counts as made, or gone (11.7.2).
        if self.deregistering:
            self.registered = self.deregistering = False
            self._idle()
            return out
        return out + self._accepted(now, units * LIFETIME_UNIT)

    # --- received packets ------------------------------------------------------------------

    def wants(self, packet: Packet) -> bool:
        """Whether ``packet`` (an MH message) belongs to this registration."""
        if packet.protocol != IPPROTO_MH or packet.src != self.correspondent:
            return False
        message = packet.payload
        rh2 = packet.routing_header_type2
        to_home = (rh2.home_address if rh2 is not None else packet.dst) == self.home_address
        if isinstance(message, HomeTest):
            return to_home and message.cookie == self.home_cookie
        if isinstance(message, CareofTest):
            return packet.dst == self.care_of_address and message.cookie == self.careof_cookie
        if isinstance(message, BindingError):
            if message.home_address == self.home_address:
                return True
            # 6.1.9: the field names a Home Address option's address; none for a HoTI/CoTI.
            return message.home_address == _UNSPECIFIED and (
                to_home or packet.dst == self.care_of_address
            )
        return isinstance(message, BindingAck | BindingRefreshRequest) and to_home

    def receive(self, packet: Packet, now: float) -> list[act.Action]:
        """A HoT, CoT, BA, BE or BRR for which :meth:`wants` said yes (checksum checked)."""
        if not self.wants(packet):
            return []
        message = packet.payload
        if isinstance(message, HomeTest):
            self.home_token = KeygenToken(
                message.token, message.nonce_index, self.home_address, now
            )
            self.home_cookie = None
            return self._tokens_arrived(now)
        if isinstance(message, CareofTest):
            assert self.care_of_address is not None
            self.careof_token = KeygenToken(
                message.token, message.nonce_index, self.care_of_address, now
            )
            self.careof_cookie = None
            return self._tokens_arrived(now)
        if isinstance(message, BindingAck):
            return self._binding_ack(packet, message, now)
        if isinstance(message, BindingError):
            return self._binding_error(message, now)
        if isinstance(message, BindingRefreshRequest) and self.state == "bound":
            self.counters.add("brr_in")
            self.home_token = self.careof_token = None
            return self._run(now)
        return []

    def _tokens_arrived(self, now: float) -> list[act.Action]:
        if self.state != "testing" or self.home_cookie or self.careof_cookie:
            return []
        self.timeout = self.settings.initial_timeout
        return self._send_bu(now)

    def _binding_ack(self, packet: Packet, ba: BindingAck, now: float) -> list[act.Action]:
        if self.state != "updating" or self._sent is None:
            self.counters.add("ba_unexpected")
            return []
        retry = ba.status == BAStatus.SEQUENCE_OUT_OF_WINDOW
        if ba.sequence != self.sequence and not retry:
            self.counters.add("ba_unexpected")
            return []
        expired = _EXPIRED.get(ba.status)
        if expired is not None:
            # No Kbm behind these: the correspondent no longer knows our nonces (9.5.1).
            self.counters.ba_status(ba.status, "in")
            if expired[0]:
                self.home_token = None
            if expired[1] or self.deregistering:
                self.careof_token = None
            return self._run(now)
        kbm, care_of = self._sent
        problem = authorization_problem(packet.payload_bytes, kbm, care_of, self.correspondent)
        if problem is not None:
            self.counters.add("rr_auth_failed")
            return [
                act.Log(
                    "warning",
                    "BA from %s for %s ignored: %s",
                    "rr_auth_failed",
                    (self.correspondent, self.home_address, problem),
                )
            ]
        self.counters.ba_status(ba.status, "in")
        if retry:
            self.counters.add("sequence_mismatch")
            self.sequence = ba.sequence
            return self._send_bu(now)
        if not ba.accepted:
            return self._hold(now, self.settings.failure_holddown, f"refused with {ba.status}")
        if self.deregistering:
            self.registered = self.deregistering = False
            self._idle()
            return [act.Log("info", "%s: deregistered with %s", None, self._names())]
        return self._accepted(now, min(ba.lifetime_seconds, MAX_RR_BINDING_LIFETIME))

    def _accepted(self, now: float, granted: float) -> list[act.Action]:
        self.state, self.retransmit_at, self.reason = "bound", None, ""
        self.expires = now + granted
        self.refresh_at = now + granted * self.settings.refresh_fraction
        out: list[act.Action] = []
        coa = self.care_of_address
        if coa is not None and self.installed != coa:
            self.installed = coa
            out.append(act.InstallCorrespondentBinding(self.home_address, coa, self.correspondent))
            out.append(act.Log("info", "%s: route optimised with %s", None, self._names()))
        return out

    def _binding_error(self, be: BindingError, now: float) -> list[act.Action]:
        self.counters.be_status(be.status, "in")
        if be.status == BEStatus.UNRECOGNIZED_MH_TYPE and self.state != "held":
            return self._hold(now, self.settings.unsupported_holddown, "no Mobile IPv6 there")
        if be.status == BEStatus.UNKNOWN_BINDING_FOR_HAO and self.state == "bound":
            # It lost our binding (restarted?): its Kcn may be new, so new tokens too.
            self.home_token = self.careof_token = None
            return self._uninstall() + self._run(now)
        return []

    # --- timers ----------------------------------------------------------------------------

    def handle_timer(self, now: float) -> list[act.Action]:
        if self.state == "held":
            if self.hold_until is not None and self.hold_until <= now:
                self.hold_until = None
                self._idle()
                if self.care_of_address is not None:
                    return self._run(now)
                if self.registered:
                    self.deregistering = True
                    return self._run(now)
            return []
        if self.retransmit_at is not None and self.retransmit_at <= now:
            return self._retransmit(now)
        if self.state == "bound" and self.expires is not None and self.expires <= now:
            self.counters.add("rr_binding_expired")
            self.registered = False
            return self._uninstall() + self._run(now)
        if self.state == "bound" and self.refresh_at is not None and self.refresh_at <= now:
            return self._run(now)
        return []

    def _retransmit(self, now: float) -> list[act.Action]:
        self.timeout *= 2
        if self.timeout > self.settings.max_timeout:
            what = "HoT/CoT" if self.state == "testing" else "BA"
            return self._hold(now, self.settings.failure_holddown, f"no {what} came")
        self.counters.add("retransmissions")
        self.retransmit_at = now + self.timeout
        if self.state == "testing":
            return self._send_tests()
        # A BU again, with a new sequence number; tokens that went stale meanwhile renewed.
        need_careof = not self.deregistering
        if not self._fresh(self.home_token, self.home_address, now) or (
            need_careof and not self._fresh(self.careof_token, self.care_of_address, now)
        ):
            return self._run(now)
        return self._send_bu(now)

    def get_timer(self) -> float | None:
        if self.state == "held":
            return self.hold_until
        times = [t for t in (self.retransmit_at,) if t is not None]
        if self.state == "bound":
            times += [t for t in (self.refresh_at, self.expires) if t is not None]
        return min(times, default=None)

    # --- helpers ----------------------------------------------------------------------------

    def _hold(self, now: float, seconds: float, reason: str) -> list[act.Action]:
        self.counters.add("rr_failed")
        out = self._uninstall()
        self._idle()
        self.state, self.hold_until, self.reason = "held", now + seconds, reason
        return [
            *out,
            act.Log(
                "warning",
                "%s: route optimisation with %s held for %gs: %s",
                "rr_failed",
                (self.home_address, self.correspondent, seconds, reason),
            ),
        ]

    def _idle(self) -> None:
        self.state = "idle"
        self.retransmit_at = self.refresh_at = self.expires = None
        self.home_cookie = self.careof_cookie = None
        self.timeout = self.settings.initial_timeout

    def _uninstall(self) -> list[act.Action]:
        if self.installed is None:
            return []
        self.installed = None
        return [act.RemoveCorrespondentBinding(self.home_address, self.correspondent)]

    def _names(self) -> tuple[IPv6Address, IPv6Address]:
        return self.home_address, self.correspondent

    def to_dict(self) -> dict[str, object]:
        return {
            "home_address": str(self.home_address),
            "correspondent": str(self.correspondent),
            "state": self.state,
            "deregistering": self.deregistering,
            "care_of_address": str(self.care_of_address) if self.care_of_address else None,
            "sequence": self.sequence,
            "home_token": self.home_token is not None,
            "careof_token": self.careof_token is not None,
            "expires": self.expires,
            "hold_until": self.hold_until,
            "reason": self.reason,
        }
