"""Home agent: home registrations (RFC 6275 10.3), DAD, DHAAD and mobile prefixes.

``HomeAgent`` is a sans-I/O state machine. Feed it received packets with
:meth:`HomeAgent.receive` and the clock with :meth:`HomeAgent.handle_timer`; it returns
actions. :meth:`HomeAgent.get_timer` says when it next wants the clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from typing import cast

from ..wire import (
    AlternateCareofAddress,
    BindingAck,
    BindingRefreshAdvice,
    BindingUpdate,
    HAADReply,
    HAADRequest,
    ICMPv6Message,
    MobilePrefixAdvertisement,
    MobilePrefixSolicitation,
    MobilityMessage,
    MobilityOption,
    NDOption,
    NeighborAdvertisement,
    NeighborSolicitation,
    Packet,
    PrefixInformation,
    RouterAdvertisement,
    UnknownMessage,
    build_packet,
)
from ..wire.addresses import anycast_in_prefix, link_local_of, unicast_problem
from ..wire.constants import (
    BU_FLAG_A,
    BU_FLAG_H,
    BU_FLAG_L,
    IPPROTO_MH,
    LIFETIME_UNIT,
    PI_FLAG_A,
    PI_FLAG_L,
    BAStatus,
    BEStatus,
)
from . import actions as act
from .auth import MobilityKey, ReplayGuard, ntp_timestamp, protect, verify
from .binding_cache import Binding, BindingCache
from .binding_error import binding_error
from .counters import Counters
from .ha_list import HomeAgentList
from .ratelimit import ReplyLimiter
from .seqno import HALF, seq_newer

DAD_TIMEOUT = 1.0  # RetransTimer (1 s) x DupAddrDetectTransmits (1), RFC 4862
MAX_LIFETIME_UNITS = 0xFFFF
ND_HOP_LIMIT = 255  # RFC 4861 6.1.2, 7.1.1, 7.1.2: anything less crossed a router
MIN_MTU = 1280
# A DHAAD reply that fits the IPv6 minimum MTU (RFC 6275 10.5): IPv6 header, ICMPv6 header.
MAX_DHAAD_ADDRESSES = (MIN_MTU - 40 - 8) // 16


@dataclass(frozen=True, slots=True)
class HomeLink:
    interface: str
    address: IPv6Address
    prefixes: tuple[IPv6Network, ...]


@dataclass(frozen=True, slots=True)
class HomeAgentSettings:
    links: tuple[HomeLink, ...]
    preference: int = 0
    lifetime: int = 1800
    max_binding_lifetime: float = 262_140
    refresh_advice: float | None = None
    dad: bool = True
    dad_timeout: float = DAD_TIMEOUT
    sequence_window: int = HALF
    authentication: bool = True
    replay_window: float = 7.0
    enabled: bool = True
    prefix_valid_lifetime: int = 86_400
    prefix_preferred_lifetime: int = 14_400
    max_bindings: int = 1_000_000
    max_bindings_per_nai: int = 16
    max_pending_dad: int = 256
    max_home_agents: int = 32
    error_rate_per_destination: int = 10
    error_rate_total: int = 200

    def link_for(self, home_address: IPv6Address) -> HomeLink | None:
        for link in self.links:
            if any(home_address in prefix for prefix in link.prefixes):
                return link
        return None

    @property
    def addresses(self) -> tuple[IPv6Address, ...]:
        return tuple(link.address for link in self.links)

    def care_of_problem(self, address: IPv6Address) -> str | None:
        """Why ``address`` cannot be a care-of address at this home agent, if it cannot.

        The Home-Agents and subnet-router anycast addresses are inside a home prefix."""
        problem = unicast_problem(address)
        if problem:
            return problem
        if address in self.addresses:
            return "is this home agent's own address"
        if any(address in prefix for link in self.links for prefix in link.prefixes):
            return "is inside a home prefix"
        return None

    def home_address_problem(self, address: IPv6Address) -> str | None:
        """Why ``address``, inside a home prefix, can never be registered here (status 129).

        Addresses that are not unicast at all are outside every home prefix (status 132).
        """
        if address in self.addresses:
            return "is this home agent's own address"
        for link in self.links:
            for prefix in link.prefixes:
                if address in prefix:
                    return anycast_in_prefix(address, prefix.prefixlen)
        return None


@dataclass(slots=True)
class _Pending:
    """A new registration waiting for DAD on the home link."""

    bu: BindingUpdate
    home_address: IPv6Address
    care_of_address: IPv6Address
    home_agent: IPv6Address
    link: HomeLink
    nai: str | None
    timestamp: int | None
    deadline: float
    conflict: bool = False
    # The MN's link-local address, probed as well when the BU has the L flag.
    link_local: IPv6Address | None = None


@dataclass(slots=True)
class _Request:
    """What the BA needs to know about the BU it answers."""

    bu: BindingUpdate
    home_address: IPv6Address
    care_of_address: IPv6Address
    home_agent: IPv6Address
    nai: str | None = None
    timestamp: int | None = None
    key: MobilityKey | None = None
    at_home: bool = False
    extra: list[MobilityOption] = field(default_factory=list)
    # Where a rejection goes: the packet's source until the BU is authenticated (an
    # Alternate CoA named by an unverified BU must never receive anything), then the CoA.
    reply_to: IPv6Address | None = None


class HomeAgent:
    def __init__(
        self,
        settings: HomeAgentSettings,
        keys: Callable[[str], MobilityKey | None] = lambda nai: None,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.cache = BindingCache()
        self.counters = Counters()
        self.home_agents = HomeAgentList(settings.max_home_agents)
        self.replay = ReplayGuard(settings.replay_window)
        self.limiter = ReplyLimiter(settings.error_rate_per_destination, settings.error_rate_total)
        self._pending: dict[IPv6Address, _Pending] = {}
        self._pending_ll: dict[IPv6Address, IPv6Address] = {}  # link-local -> home address
        self._auth_failures: dict[str, float] = {}  # NAI with a key -> last failure

    # --- inputs --------------------------------------------------------------------

    def receive(self, packet: Packet, now: float, interface: str | None = None) -> list[act.Action]:
        payload = packet.payload
        if packet.protocol == IPPROTO_MH:
            if isinstance(payload, bytes):
                return []  # a fragment: nothing to decode
            if not packet.checksum_ok():
                self.counters.add("bad_checksum")
                return [act.Log("debug", f"MH from {packet.src} with a bad checksum dropped")]
            if not isinstance(payload, MobilityMessage):
                return []  # the wire layer gives MH packets a Mobility Header payload
            self.counters.received(payload.MH_TYPE)
            if isinstance(payload, BindingUpdate):
                return self._binding_update(packet, payload, now)
            if isinstance(payload, UnknownMessage):
                return self._binding_error(packet, BEStatus.UNRECOGNIZED_MH_TYPE, now)
            return []
        if packet.home_address_option is not None:
            self.counters.add("hao_in")
            home = packet.home_address_option
            binding = self.cache.get(home)
            if binding is None or binding.care_of_address != packet.src:
                return self._binding_error(packet, BEStatus.UNKNOWN_BINDING_FOR_HAO, now)
        if isinstance(payload, HAADRequest):
            return self._dhaad(packet, payload, now)
        if isinstance(payload, MobilePrefixSolicitation):
            return self._prefix_solicitation(packet, payload, now)
        nd = isinstance(payload, (RouterAdvertisement, NeighborAdvertisement, NeighborSolicitation))
        if nd and packet.hop_limit != ND_HOP_LIMIT:
            self.counters.add("nd_bad_hop_limit")
            return []
        if isinstance(payload, RouterAdvertisement) and interface is not None:
            if not packet.src.is_link_local:  # RFC 4861 6.1.2
                self.counters.add("nd_bad_source")
                return []
            refused = self.home_agents.refused
            self.home_agents.update_from_ra(payload, packet.src, interface, now)
            if self.home_agents.refused != refused:
                self.counters.add("home_agents_full")
                return [
                    act.Log(
                        "warning",
                        f"home agents list full ({self.settings.max_home_agents}): "
                        f"RA from {packet.src} on {interface} ignored",
                        "home_agents_full",
                    )
                ]
            return []
        if isinstance(payload, (NeighborAdvertisement, NeighborSolicitation)):
            return self._dad_input(packet, payload)
        return []

    def handle_timer(self, now: float) -> list[act.Action]:
        out: list[act.Action] = []
        for pending in list(self._pending.values()):
            if pending.deadline <= now:
                out += self._stop_dad(pending)
                out += self._finish_dad(pending, now)
        for binding in self.cache.pop_expired(now):
            self.counters.add("binding_expired")
            out += self._unbound(binding)
            fields = _fields(binding.home_address, binding.care_of_address, None, binding.nai)
            out.append(
                act.Log("info", f"binding for {binding.home_address} expired", fields=fields)
            )
            out.append(act.StateChanged("binding_cache", key=binding.home_address))
        self.home_agents.expire(now)
        return out

    def get_timer(self) -> float | None:
        deadlines = [p.deadline for p in self._pending.values()]
        for candidate in (self.cache.next_expiry(), self.home_agents.next_expiry()):
            if candidate is not None:
                deadlines.append(candidate)
        return min(deadlines, default=None)

    # --- operator requests -----------------------------------------------------------

    def clear_bindings(self) -> list[act.Action]:
        out: list[act.Action] = [a for b in self.cache.clear() for a in self._unbound(b)]
        if out:
            out.append(act.StateChanged("binding_cache"))
        return out

    def reconfigure(self, settings: HomeAgentSettings, now: float) -> list[act.Action]:
        """Apply new settings; renumbered home prefixes go out to every registered MN."""
        old_prefixes = {p for link in self.settings.links for p in link.prefixes}
        self.settings = settings
        self.replay.window = settings.replay_window
        self.limiter.reconfigure(settings.error_rate_per_destination, settings.error_rate_total)
        self.home_agents.max_entries = settings.max_home_agents
        out: list[act.Action] = []
        new_prefixes = {p for link in settings.links for p in link.prefixes}
        if new_prefixes != old_prefixes:
            for binding in self.cache:
                link = settings.link_for(binding.home_address)
                if link is None:
                    continue
                mpa = MobilePrefixAdvertisement(0, 0, self._prefix_options(link))
                out.append(
                    self._send_to_mn(
                        binding.home_agent, binding.care_of_address, binding.home_address, mpa
                    )
                )
                self.counters.add("mpa_out")
        return out

    def set_keys(self, keys: Callable[[str], MobilityKey | None]) -> list[act.Action]:
        """Use a new key set at once (reload); drop bindings it no longer authorizes.

        A binding whose NAI keeps a key (the same or a rotated one) stays: its next
        refresh must verify with the new key. One whose NAI lost its key, or whose home
        address the new entry no longer lists, is removed with its kernel state.
        """
        self.keys = keys
        out: list[act.Action] = []
        for binding in self.cache:
            if binding.nai is None:
                continue
            key = keys(binding.nai)
            if key is not None and key.authorizes(binding.home_address):
                continue
            self.cache.remove(binding.home_address)
            self.counters.add("binding_revoked")
            why = "no key any more" if key is None else "home address no longer authorized"
            out += [
                *self._unbound(binding),
                act.StateChanged("binding_cache", key=binding.home_address),
                act.Log("info", f"binding for {binding.home_address} removed: {binding.nai} {why}"),
            ]
        for home, pending in list(self._pending.items()):
            key = keys(pending.nai) if pending.nai else None
            if pending.nai is not None and (key is None or not key.authorizes(home)):
                out += self._stop_dad(pending)
        return out

    def failed_recently(self, nai: str, now: float, within: float = 1.0) -> bool:
        """Whether a BU naming ``nai`` failed to verify in the last ``within`` seconds."""
        last = self._auth_failures.get(nai)
        return last is not None and now - last < within

    def dad_unavailable(
        self, home_address: IPv6Address, reason: str, now: float
    ) -> list[act.Action]:
        """The I/O layer could not start DAD for ``home_address``: refuse, never pass."""
        home = self._pending_ll.get(home_address, home_address)
        pending = self._pending.get(home)
        if pending is None:
            return []
        self.counters.add("dad_unavailable")
        log = act.Log(
            "warning", f"DAD for {home_address} could not run ({reason}): status 130", "dad"
        )
        request = self._pending_request(pending)
        stop = self._stop_dad(pending)
        return [log, *stop, *self._reply(request, BAStatus.INSUFFICIENT_RESOURCES, now)]

    def snapshot(self) -> dict[str, object]:
        return {
            "bindings": [b.to_dict() for b in self.cache],
            "timestamps": self.replay.snapshot(),
        }

    def restore(self, state: dict[str, object], now: float) -> list[act.Action]:
        """Reload a persisted cache; entries already expired are dropped.

        A row of the wrong shape is skipped and reported (an error Log), never fatal.
        """
        out: list[act.Action] = []
        rows = state.get("bindings", [])
        for n, raw in enumerate(rows if isinstance(rows, list) else []):
            try:
                binding = Binding.from_dict(raw)
            except ValueError as exc:
                out.append(act.Log("error", f"saved binding {n} skipped: {exc}", "restore"))
                continue
            if binding.expires > now:
                self.cache.put(binding)
        if not isinstance(rows, list):
            out.append(act.Log("error", "saved bindings skipped: not a list", "restore"))
        stamps = state.get("timestamps", {})
        if isinstance(stamps, dict):
            self.replay.restore(
                {k: v for k, v in stamps.items() if isinstance(k, str) and isinstance(v, int)}
            )
        else:
            out.append(act.Log("error", "saved replay timestamps skipped: not an object"))
        return out

    # --- Binding Update processing ---------------------------------------------------

    def _binding_update(self, packet: Packet, bu: BindingUpdate, now: float) -> list[act.Action]:
        home = packet.home_address_option or packet.src
        alternate = next((o for o in bu.options if isinstance(o, AlternateCareofAddress)), None)
        coa = alternate.address if alternate is not None else packet.src
        request = _Request(bu, home, coa, packet.dst, at_home=coa == home, reply_to=packet.src)
        out: list[act.Action] = []
        if not bu.flags & BU_FLAG_H:
            # A correspondent registration: route optimisation is the CN role's job.
            return self._reply(request, BAStatus.ADMINISTRATIVELY_PROHIBITED, now)
        # Cheap address checks first: they need no key and no state.
        not_unicast = unicast_problem(home)
        if not_unicast is not None:
            self.counters.add("bu_bad_address")
            return self._reply(request, BAStatus.NOT_HOME_SUBNET, now)
        problem = self.settings.home_address_problem(home)
        if problem is not None:
            problem = f"home address {home} {problem}"
        elif request.at_home:
            # Back home the source is the home address itself, or any usable unicast one.
            source_problem = unicast_problem(packet.src)
            if source_problem is not None:
                problem = f"source {packet.src} {source_problem}"
        else:
            problem = self._care_of_problem(packet.src, "source")
            if problem is None and alternate is not None:
                problem = self._care_of_problem(coa, "Alternate Care-of Address")
        if problem is not None:
            self.counters.add("bu_bad_address")
            out.append(
                act.Log(
                    "info",
                    "BU for %s from %s: %s",
                    "bu_address",
                    (home, packet.src, problem),
                    _fields(home, coa, BAStatus.ADMINISTRATIVELY_PROHIBITED),
                )
            )
            return out + self._reply(request, BAStatus.ADMINISTRATIVELY_PROHIBITED, now)
        if self.settings.authentication:
            verdict = verify(packet.payload_bytes, bu, coa, home, self.keys)
            request.nai = verdict.nai
            if verdict.status is not None:
                self.counters.add("auth_failed")
                if verdict.nai is not None and self.keys(verdict.nai) is not None:
                    self._auth_failures[verdict.nai] = now  # bounded by the keys
                why = (home, coa, verdict.reason)
                fields = _fields(home, coa, verdict.status, verdict.nai)
                out.append(act.Log("warning", "BU for %s from %s: %s", "bu_auth", why, fields))
                return out + self._reply(request, verdict.status, now)
            assert verdict.nai is not None and verdict.timestamp is not None
            request.key = self.keys(verdict.nai)
            request.timestamp = verdict.timestamp
            request.reply_to = coa  # the authenticator covers the care-of address
            stale = self.replay.check(verdict.nai, verdict.timestamp, now)
            if stale is not None:
                self.counters.add("replay_rejected")
                out.append(
                    act.Log(
                        "warning",
                        f"BU for {home} from {verdict.nai}: {stale}",
                        "bu_replay",
                        fields=_fields(home, coa, BAStatus.MIPV6_ID_MISMATCH, verdict.nai),
                    )
                )
                # Our own clock goes back so that the MN can resynchronise (RFC 4285 6.1).
                request.timestamp = ntp_timestamp(now)
                return out + self._reply(request, BAStatus.MIPV6_ID_MISMATCH, now)
        else:
            self.counters.add("unprotected_signaling")
        if not self.settings.enabled:
            return out + self._reply(request, BAStatus.HOME_REGISTRATION_NOT_SUPPORTED, now)
        link = self.settings.link_for(home)
        if link is None:
            return out + self._reply(request, BAStatus.NOT_HOME_SUBNET, now)
        if request.key is not None and not request.key.authorizes(home):
            self.counters.add("unauthorized_home_address")
            text = f"BU for {home} from {request.nai}: not its home address"
            fields = _fields(home, coa, BAStatus.NOT_HOME_AGENT_FOR_MN, request.nai)
            out.append(act.Log("warning", text, "bu_authz", fields=fields))
            return out + self._reply(request, BAStatus.NOT_HOME_AGENT_FOR_MN, now)
        existing = self.cache.get(home)
        recovered = existing is not None and existing.recovered
        if existing is not None and not recovered and existing.nai != request.nai:
            out.append(
                act.Log(
                    "warning",
                    f"BU for {home} from {request.nai}, bound to {existing.nai}",
                    "bu_authz",
                )
            )
            return out + self._reply(request, BAStatus.NOT_HOME_AGENT_FOR_MN, now)
        if (
            existing is not None
            and not recovered
            and not seq_newer(bu.sequence, existing.sequence, self.settings.sequence_window)
        ):
            self.counters.add("sequence_mismatch")
            return out + self._reply(
                request, BAStatus.SEQUENCE_OUT_OF_WINDOW, now, sequence=existing.sequence
            )
        if request.nai is not None and request.timestamp is not None:
            self.replay.accept(request.nai, request.timestamp)
        if bu.lifetime == 0 or request.at_home:
            return out + self._deregister(request, existing, now)
        if existing is None or recovered:
            full = self._limit_problem(request, replacing=recovered)
            if full is not None:
                self.counters.add("binding_limit")
                out.append(act.Log("warning", f"BU for {home}: {full}", "bu_limit"))
                return out + self._reply(request, BAStatus.INSUFFICIENT_RESOURCES, now)
        held = self._link_local_problem(home, bu)
        if held is not None:
            self.counters.add("link_local_in_use")
            out.append(act.Log("warning", f"BU for {home}: {held}", "bu_link_local"))
            return out + self._reply(request, BAStatus.DAD_FAILED, now)
        if existing is None and self.settings.dad:
            return out + self._start_dad(request, link, now)
        return out + self._register(request, link, existing, now)

    def _link_local_problem(self, home: IPv6Address, bu: BindingUpdate) -> str | None:
        """With the L flag: the link-local address another binding already holds (134)."""
        if not bu.flags & BU_FLAG_L:
            return None
        ll = link_local_of(home)
        holder = self.cache.link_local_holder(ll)
        if holder is None:
            holder = self._pending_ll.get(ll)
        if holder is None or holder == home:
            return None
        return f"link-local address {ll} (L flag) is already defended for {holder}"

    def _unbound(self, binding: Binding) -> list[act.Action]:
        """The kernel state that goes with ``binding``: its route, its link-local proxy."""
        out: list[act.Action] = [act.RemoveBinding(binding.home_address)]
        if binding.link_local is not None:
            out.append(act.UnproxyAddress(binding.link_local, binding.interface))
        return out

    def _care_of_problem(self, address: IPv6Address, what: str) -> str | None:
        problem = self.settings.care_of_problem(address)
        return None if problem is None else f"{what} {address} {problem}"

    def _limit_problem(self, request: _Request, replacing: bool = False) -> str | None:
        """Why a new home address cannot be taken on now (status 130), if it cannot.

        ``replacing``: the BU takes over a recovered binding, which adds no binding.
        """
        settings = self.settings
        if request.home_address in self._pending:
            return None  # a retransmission while DAD runs
        if not replacing and len(self.cache) + len(self._pending) >= settings.max_bindings:
            return f"binding cache full ({settings.max_bindings} bindings)"
        if request.nai is not None:
            cap = settings.max_bindings_per_nai
            if request.key is not None and request.key.max_bindings is not None:
                cap = request.key.max_bindings
            held = self.cache.count_for(request.nai) + sum(
                1 for p in self._pending.values() if p.nai == request.nai
            )
            if held >= cap:
                return f"{request.nai} already holds {held} bindings (limit {cap})"
        if settings.dad and len(self._pending) >= settings.max_pending_dad:
            return f"{len(self._pending)} home addresses already in DAD"
        return None

    def _granted(self, bu: BindingUpdate) -> int:
        seconds = min(bu.lifetime * LIFETIME_UNIT, self.settings.max_binding_lifetime)
        return min(int(seconds) // LIFETIME_UNIT, MAX_LIFETIME_UNITS)

    def _register(
        self, request: _Request, link: HomeLink, existing: Binding | None, now: float
    ) -> list[act.Action]:
        units = self._granted(request.bu)
        lifetime = units * LIFETIME_UNIT
        binding = Binding(
            request.home_address,
            request.care_of_address,
            request.home_agent,
            link.interface,
            request.bu.sequence,
            lifetime,
            now + lifetime,
            request.bu.flags,
            request.nai,
            existing.registered if existing is not None else now,
        )
        self.cache.put(binding)
        moved = existing is None or existing.care_of_address != binding.care_of_address
        old_ll = existing.link_local if existing is not None else None
        advice = self.settings.refresh_advice
        if advice is not None and advice < lifetime:
            request.extra.append(BindingRefreshAdvice(int(advice) // LIFETIME_UNIT))
        # Order matters for handover time: route first, then the BA, then the rest.
        out: list[act.Action] = []
        if moved:
            out.append(
                act.InstallBinding(
                    binding.home_address,
                    binding.care_of_address,
                    binding.home_agent,
                    link.interface,
                )
            )
        # RFC 6275 10.4.1: with L, the MN's link-local address is defended on the home link.
        if old_ll is not None and old_ll != binding.link_local and existing is not None:
            out.append(act.UnproxyAddress(old_ll, existing.interface))
        if binding.link_local is not None and binding.link_local != old_ll:
            out.append(act.ProxyAddress(binding.link_local, link.interface))
        # A new or moved binding is written before its BA leaves, so an acknowledged
        # binding survives kill -9 (a restart would otherwise reinstall the old CoA).
        urgent = moved or (existing is not None and existing.recovered)
        state = act.StateChanged("binding_cache", urgent=urgent, key=binding.home_address)
        if urgent:
            out.append(state)
        out += self._reply(request, BAStatus.ACCEPTED, now, lifetime_units=units)
        if existing is None:
            out.append(act.AnnounceHomeAddress(binding.home_address, link.interface))
            if binding.link_local is not None:
                out.append(act.AnnounceHomeAddress(binding.link_local, link.interface))
            out.append(
                act.Log(
                    "info",
                    f"registered {binding.home_address} at {binding.care_of_address}",
                    fields=_fields(binding.home_address, binding.care_of_address, 0, binding.nai),
                )
            )
        elif moved:
            out.append(
                act.Log(
                    "info",
                    f"{binding.home_address} moved to {binding.care_of_address}",
                    fields=_fields(binding.home_address, binding.care_of_address, 0, binding.nai),
                )
            )
        if not urgent:  # a refresh: batched, after the BA
            out.append(state)
        return out

    def _deregister(
        self, request: _Request, existing: Binding | None, now: float
    ) -> list[act.Action]:
        if existing is None:
            return self._reply(request, BAStatus.NOT_HOME_AGENT_FOR_MN, now)
        self.cache.remove(request.home_address)
        out = [
            *self._unbound(existing),
            act.StateChanged("binding_cache", key=request.home_address),
            act.Log(
                "info",
                f"deregistered {request.home_address}",
                fields=_fields(request.home_address, existing.care_of_address, 0, existing.nai),
            ),
        ]
        return out + self._reply(request, BAStatus.ACCEPTED, now, lifetime_units=0)

    # --- DAD on the home link (the seed always answered OK here) --------------------

    def _start_dad(self, request: _Request, link: HomeLink, now: float) -> list[act.Action]:
        home = request.home_address
        pending = self._pending.get(home)
        if pending is not None:
            # A retransmission while DAD runs: answer the newest BU when DAD ends.
            pending.bu, pending.care_of_address = request.bu, request.care_of_address
            pending.timestamp = request.timestamp
            return []
        ll = link_local_of(home) if request.bu.flags & BU_FLAG_L else None
        self._pending[home] = _Pending(
            request.bu,
            home,
            request.care_of_address,
            request.home_agent,
            link,
            request.nai,
            request.timestamp,
            now + self.settings.dad_timeout,
            link_local=ll,
        )
        out: list[act.Action] = [act.StartDAD(home, link.interface)]
        if ll is not None:
            self._pending_ll[ll] = home
            out.append(act.StartDAD(ll, link.interface))
        return out

    def _stop_dad(self, pending: _Pending) -> list[act.Action]:
        """Forget a DAD run (both addresses it probes)."""
        self._pending.pop(pending.home_address, None)
        out: list[act.Action] = [act.StopDAD(pending.home_address, pending.link.interface)]
        if pending.link_local is not None:
            self._pending_ll.pop(pending.link_local, None)
            out.append(act.StopDAD(pending.link_local, pending.link.interface))
        return out

    def _dad_input(
        self, packet: Packet, message: NeighborAdvertisement | NeighborSolicitation
    ) -> list[act.Action]:
        home = self._pending_ll.get(message.target, message.target)
        pending = self._pending.get(home)
        if pending is None:
            return []
        if isinstance(message, NeighborSolicitation) and not packet.src.is_unspecified:
            return []  # address resolution, not another node's DAD
        pending.conflict = True
        return []

    def _pending_request(self, pending: _Pending) -> _Request:
        return _Request(
            pending.bu,
            pending.home_address,
            pending.care_of_address,
            pending.home_agent,
            pending.nai,
            pending.timestamp,
            self.keys(pending.nai) if pending.nai else None,
            reply_to=pending.care_of_address,
        )

    def _finish_dad(self, pending: _Pending, now: float) -> list[act.Action]:
        request = self._pending_request(pending)
        if pending.conflict:
            self.counters.add("dad_failed")
            what = f"{pending.home_address}"
            if pending.link_local is not None:
                what += f" (or its link-local {pending.link_local})"
            log = act.Log("warning", f"DAD found {what} in use on the home link")
            return [log, *self._reply(request, BAStatus.DAD_FAILED, now)]
        return self._register(request, pending.link, self.cache.get(pending.home_address), now)

    # --- replies -------------------------------------------------------------------------

    def _reply(
        self,
        request: _Request,
        status: int,
        now: float,
        *,
        lifetime_units: int = 0,
        sequence: int | None = None,
    ) -> list[act.Action]:
        self.counters.ba_status(status, "out")
        if status < 128 and not request.bu.flags & BU_FLAG_A:
            return []
        home = request.home_address
        if status < 128:
            destination = home if request.at_home else request.care_of_address
        else:
            destination = request.reply_to or request.care_of_address
            if not self._may_answer(destination, now):
                return []
        ba = BindingAck(
            status,
            0,
            request.bu.sequence if sequence is None else sequence,
            lifetime_units,
            list(request.extra),
        )
        if request.key is not None and request.nai is not None:
            timestamp = request.timestamp if request.timestamp is not None else ntp_timestamp(now)
            ba = cast(
                BindingAck,
                protect(ba, request.nai.encode(), request.key, timestamp, destination, home),
            )
        self.counters.sent(ba.MH_TYPE)
        if destination == home or unicast_problem(home) is not None:
            data = build_packet(request.home_agent, destination, ba)
            return [act.SendPacket(data, destination)]
        return [self._send_to_mn(request.home_agent, destination, home, ba)]

    def _may_answer(self, destination: IPv6Address, now: float) -> bool:
        """Replies a sender can trigger without a key: a sane destination, rate-limited."""
        if self.settings.home_address_problem(destination) is not None:  # ours, anycast
            self.counters.add("reply_suppressed")
            return False
        refused = self.limiter.refusal(destination, now)
        if refused is not None:
            self.counters.add(refused)
        return refused is None

    def _send_to_mn(
        self,
        src: IPv6Address,
        coa: IPv6Address,
        home: IPv6Address,
        message: MobilityMessage | ICMPv6Message,
    ) -> act.SendPacket:
        self.counters.add("rh2_out")
        return act.SendPacket(build_packet(src, coa, message, routing_home_address=home), coa)

    def _binding_error(self, packet: Packet, status: int, now: float) -> list[act.Action]:
        if not self._may_answer(packet.src, now):
            return []
        source = self.settings.addresses[0] if packet.dst.is_multicast else None
        return [binding_error(packet, status, self.counters, source)]

    # --- DHAAD and mobile prefix discovery -------------------------------------------

    def _dhaad(self, packet: Packet, request: HAADRequest, now: float) -> list[act.Action]:
        self.counters.add("dhaad_request_in")
        if not self._may_answer(packet.src, now):
            return []
        link = next(
            (k for k in self.settings.links if any(packet.dst in p for p in k.prefixes)),
            self.settings.links[0],
        )
        prefix = next((p for p in link.prefixes if packet.dst in p), link.prefixes[0])
        agents = self._ranked_home_agents(link, prefix)[:MAX_DHAAD_ADDRESSES]
        reply = HAADReply(request.identifier, agents)
        self.counters.add("dhaad_reply_out")
        return [act.SendPacket(build_packet(link.address, packet.src, reply), packet.src)]

    def _ranked_home_agents(self, link: HomeLink, prefix: IPv6Network) -> list[IPv6Address]:
        others = [e for e in self.home_agents.entries() if e.interface == link.interface]
        ranked: list[tuple[int, IPv6Address]] = [(self.settings.preference, link.address)]
        for entry in others:
            for address in entry.addresses:
                if address in prefix and address != link.address:
                    ranked.append((entry.preference, address))
        ranked.sort(key=lambda pair: -pair[0])  # stable: ties keep us first
        return [address for _, address in ranked]

    def _prefix_options(self, link: HomeLink) -> list[NDOption]:
        return [
            PrefixInformation(
                prefix.prefixlen,
                PI_FLAG_L | PI_FLAG_A,
                self.settings.prefix_valid_lifetime,
                self.settings.prefix_preferred_lifetime,
                prefix.network_address,
            )
            for prefix in link.prefixes
        ]

    def _prefix_solicitation(
        self, packet: Packet, request: MobilePrefixSolicitation, now: float
    ) -> list[act.Action]:
        self.counters.add("mps_in")
        home = packet.home_address_option
        binding = self.cache.get(home) if home is not None else None
        if binding is None or home is None:
            return []
        link = self.settings.link_for(home)
        if link is None or not self._may_answer(binding.care_of_address, now):
            return []
        mpa = MobilePrefixAdvertisement(request.identifier, 0, self._prefix_options(link))
        self.counters.add("mpa_out")
        return [self._send_to_mn(packet.dst, binding.care_of_address, home, mpa)]


def _fields(
    home: IPv6Address, coa: IPv6Address | None, status: int | None, nai: str | None = None
) -> tuple[tuple[str, object], ...]:
    """The journal fields of a registration line (MIP6_HOA, MIP6_COA, MIP6_STATUS, MIP6_NAI)."""
    out: list[tuple[str, object]] = [("hoa", home)]
    if coa is not None:
        out.append(("coa", coa))
    if status is not None:
        out.append(("status", int(status)))
    if nai is not None:
        out.append(("nai", nai))
    return tuple(out)
