"""Mobile node: movement, home registration, binding update list, DHAAD (RFC 6275 11).

``MobileNode`` is a sans-I/O state machine. The I/O layer reports interface and address
events and received packets; the node answers with actions (packets, tunnel changes,
router solicitations) and a next timer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Interface, IPv6Network

from ..wire import (
    AdvertisementInterval,
    BindingAck,
    BindingError,
    BindingRefreshAdvice,
    BindingRefreshRequest,
    BindingUpdate,
    CareofTest,
    HAADReply,
    HAADRequest,
    HomeTest,
    MessageIdentification,
    MobilePrefixAdvertisement,
    MobilityMessage,
    Packet,
    PrefixInformation,
    RouterAdvertisement,
    build_packet,
)
from ..wire.addresses import home_agents_anycast
from ..wire.constants import BU_FLAG_A, BU_FLAG_H, IPPROTO_MH, LIFETIME_UNIT, BAStatus
from . import actions as act
from .auth import MobilityKey, ntp_timestamp, protect, unix_seconds, verify
from .correspondent_registration import CorrespondentRegistration, RouteOptimizationSettings
from .counters import Counters
from .ha_list import HomeAgentList
from .return_routability import RandomBytes
from .seqno import seq_add

INITIAL_BINDACK_TIMEOUT_FIRST_REG = 1.5
INITIAL_BINDACK_TIMEOUT = 1.0
MAX_BINDACK_TIMEOUT = 32.0
DHAAD_RETRIES = 4
# Binding Updates of one attempt left unanswered before the node says so (once per attempt):
# a lost BA looks like nothing at all otherwise, e.g. when IPsec between the node and its
# home agent drops it (no SA, a wrong key: the kernel discards and only counts).
NO_BA_WARN_AFTER = 3
INITIAL_DHAAD_TIMEOUT = 3.0
REFRESH_FRACTION = 0.8  # refresh when this much of the granted lifetime has passed
LOST_ROUTER_FACTOR = 3  # missed advertisement intervals before the link counts as lost
# eager_movement_detection 1: one missed advertisement (with some slack) is a possible move.
EAGER_LOST_ROUTER_FACTOR = 1.5


@dataclass(frozen=True, slots=True)
class HomeAddressSpec:
    address: IPv6Address
    prefix: IPv6Network
    interface: str
    home_agent: IPv6Address | None = None


@dataclass(frozen=True, slots=True)
class MobileNodeSettings:
    home: tuple[HomeAddressSpec, ...]
    interfaces: tuple[str, ...]
    nai: str | None = None
    key: MobilityKey | None = None
    authentication: bool = True
    lifetime: float = 420.0
    initial_timeout_first: float = INITIAL_BINDACK_TIMEOUT_FIRST_REG
    initial_timeout: float = INITIAL_BINDACK_TIMEOUT
    max_timeout: float = MAX_BINDACK_TIMEOUT
    foreign_addresses: tuple[IPv6Address, ...] = ()
    # 0: a router of another link is a candidate until the current link's routers are lost;
    # 1: lost after one missed advertisement; 2: switch to the other link's router at once.
    eager_movement_detection: int = 0
    # Route optimisation (RFC 6275 11.6-11.7): with a correspondent in ``correspondents``,
    # or one whose traffic the tunnel carried (note_traffic), never one in ``no_ro``.
    route_optimization: bool = False
    correspondents: tuple[IPv6Address, ...] = ()
    no_route_optimization: tuple[IPv6Network, ...] = ()
    ro: RouteOptimizationSettings = field(default_factory=RouteOptimizationSettings)
    # Correspondents picked from the traffic the tunnel carries (note_traffic): on or off,
    # and how many at most; one quiet for a refresh interval goes back to the tunnel.
    ro_from_traffic: bool = True
    max_correspondents: int = 64


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A router heard on an interface whose prefixes are not those of the current link."""

    router: IPv6Address
    prefixes: tuple[IPv6Network, ...]
    default: bool  # advertised a router lifetime: it may be the default router
    heard: float
    interval: float | None  # its Advertisement Interval option, seconds


@dataclass(slots=True)
class BULEntry:
    """One binding update list entry: a home address and its registration with a HA."""

    home_address: IPv6Address
    prefix: IPv6Network
    home_interface: str
    home_agent: IPv6Address | None
    discovered: bool = False
    state: str = "idle"  # idle|discovering|registering|registered|deregistering|failed
    sequence: int = 0
    care_of_address: IPv6Address | None = None
    interface: str | None = None
    tunnel: tuple[IPv6Address, str] | None = None  # (CoA, interface) installed in the kernel
    lifetime: float = 0.0
    expires: float = 0.0
    refresh_at: float | None = None
    retransmit_at: float | None = None
    timeout: float = 0.0
    dhaad_id: int = 0
    dhaad_tries: int = 0
    clock_offset: float = 0.0
    reason: str = ""
    home_agents: list[IPv6Address] = field(default_factory=list)
    # Known to be on the home link (not saved: a started node puts it there once).
    home_placed: bool = False
    # First sequence number of the current (de)registration: a retransmission gets a new
    # number, and a late BA for an earlier one of the same attempt still answers it.
    attempt_first: int | None = None
    # Binding Updates sent since the last Binding Acknowledgement (not saved).
    unanswered: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "home_address": str(self.home_address),
            "prefix": str(self.prefix),
            "home_interface": self.home_interface,
            "home_agent": str(self.home_agent) if self.home_agent else None,
            "state": self.state,
            "sequence": self.sequence,
            "care_of_address": str(self.care_of_address) if self.care_of_address else None,
            "interface": self.interface,
            "lifetime": self.lifetime,
            "expires": self.expires,
            "reason": self.reason,
        }


class MobileNode:
    def __init__(
        self,
        settings: MobileNodeSettings,
        initial_sequence: int = 0,
        random_bytes: RandomBytes | None = None,
    ) -> None:
        self.settings = settings
        self.counters = Counters()
        if settings.route_optimization and random_bytes is None:
            # Nonces and cookies come from the I/O layer: the core never reads entropy itself.
            raise ValueError("route optimisation needs random_bytes (cookies, sequence numbers)")
        self._random = random_bytes
        # The binding update list's correspondent entries, per (home address, correspondent).
        self.correspondents: dict[tuple[IPv6Address, IPv6Address], CorrespondentRegistration] = {}
        self._last_traffic: dict[tuple[IPv6Address, IPv6Address], float] = {}
        self.home_agents = HomeAgentList()
        self.entries: dict[IPv6Address, BULEntry] = {}
        for spec in settings.home:
            self._add_entry(spec, initial_sequence)
        self._up: set[str] = set()
        self._addresses: dict[str, list[IPv6Interface]] = {}
        self._ra_deadline: dict[str, float] = {}
        # Prefixes of the link each interface is on, from the last RA; an interface in
        # _fresh had a link change since, and its next RA says where it now is.
        self._link_prefixes: dict[str, tuple[IPv6Network, ...]] = {}
        self._fresh: set[str] = set()
        # RFC 6275 11.5.1 without link events: routers of another link heard meanwhile.
        self._candidates: dict[str, _Candidate] = {}
        self._link_routers: dict[str, set[IPv6Address]] = {}  # routers of the current link
        self._next_dhaad_id = initial_sequence
        self._last_stamp = 0  # the last Mobility Message Identification timestamp sent
        self.enabled = True

    def _add_entry(self, spec: HomeAddressSpec, sequence: int) -> BULEntry:
        entry = BULEntry(
            spec.address, spec.prefix, spec.interface, spec.home_agent, sequence=sequence
        )
        self.entries[spec.address] = entry
        return entry

    # --- movement inputs -----------------------------------------------------------------

    def link_changed(self, interface: str, up: bool, now: float) -> list[act.Action]:
        if interface not in self.settings.interfaces:
            return []
        out: list[act.Action] = []
        if up and interface not in self._up:
            self._up.add(interface)
            self._fresh.add(interface)
            for entry in self.entries.values():
                if entry.home_interface == interface:
                    # A replaced interface took the home address with it: at home, place
                    # it again (placing is idempotent after a mere carrier change).
                    entry.home_placed = False
            self.counters.add("rs_out")
            # The kernel does not solicit on carrier return; waiting for a periodic RA is slow.
            out.append(act.SendRouterSolicitation(interface))
        elif not up and interface in self._up:
            self._up.discard(interface)
            self._ra_deadline.pop(interface, None)
        return out + self._evaluate(now)

    def addresses_changed(
        self, interface: str, addresses: list[IPv6Interface], now: float
    ) -> list[act.Action]:
        """The global unicast addresses now on ``interface``.

        A home address among them (back on the home link) counts: it puts us at home.
        """
        if interface not in self.settings.interfaces:
            return []
        self._addresses[interface] = [a for a in addresses if not a.ip.is_link_local]
        return self._evaluate(now)

    def _location(self) -> tuple[str, IPv6Address, IPv6Network] | None:
        """(interface, care-of address, its prefix), preferring configured foreign addresses."""
        candidates = [
            (name, a)
            for name in self.settings.interfaces
            if name in self._up
            for a in self._addresses.get(name, [])
            if self._on_current_link(name, a)
        ]
        for name, address in candidates:
            if address.ip in self.settings.foreign_addresses:
                return name, address.ip, address.network
        for entry in self.entries.values():
            for name, address in candidates:
                if address.ip == entry.care_of_address and name == entry.interface:
                    return name, address.ip, address.network
        if candidates:
            name, address = candidates[0]
            return name, address.ip, address.network
        return None

    def _on_current_link(self, interface: str, address: IPv6Interface) -> bool:
        """Addresses left over from a previous link do not count once an RA told us better."""
        prefixes = self._link_prefixes.get(interface)
        return prefixes is None or any(address.ip in p for p in prefixes)

    def _home_link(self, prefix: IPv6Network) -> str | None:
        """The interface whose link's routers advertise ``prefix``: we are at home there.

        The RA alone says so (RFC 6275 11.5.4): the home address has no usable copy on
        the link yet, and DAD for it would fail anyway, the home agent defending it.
        """
        for name in self.settings.interfaces:
            if name not in self._up or name in self._fresh:
                continue
            if any(p.overlaps(prefix) for p in self._link_prefixes.get(name, ())):
                return name
        return None

    def _evaluate(self, now: float) -> list[act.Action]:
        if not self.enabled:
            return []
        where = self._location()
        out: list[act.Action] = []
        for entry in self.entries.values():
            home_link = self._home_link(entry.prefix)
            if where is None and home_link is None:
                continue
            if home_link is None:
                assert where is not None
                interface, coa, network = where
                if coa in entry.prefix or network.overlaps(entry.prefix):
                    home_link = interface
            if home_link is not None:
                if entry.state in ("registered", "registering") or entry.tunnel is not None:
                    out += self._go_home(entry, home_link, now)
                elif not entry.home_placed:
                    # Started at home: nothing to deregister, but the home address must be
                    # on the home link like after a return home (no tunnel to remove).
                    entry.home_placed = True
                    out.append(
                        act.DetachTunnel(entry.home_address, entry.prefix, entry.home_interface)
                    )
                continue
            assert where is not None
            interface, coa, network = where
            if entry.state == "failed" and entry.care_of_address == coa:
                continue
            if entry.care_of_address != coa or entry.state in ("idle", "deregistering"):
                entry.care_of_address, entry.interface = coa, interface
                out += self._start_registration(entry, now, first=entry.state != "registered")
        # Every home address off the home link before the first Binding Update: while one
        # is still there, its on-link prefix route sends the others' BUs out of this link.
        leave = [a for a in out if isinstance(a, act.LeaveHomeLink)]
        return leave + [a for a in out if not isinstance(a, act.LeaveHomeLink)]

    # --- registration ----------------------------------------------------------------------

    def _start_registration(self, entry: BULEntry, now: float, first: bool) -> list[act.Action]:
        if entry.home_agent is None:
            return self._discover(entry, now)
        entry.state = "registering"
        entry.attempt_first = seq_add(entry.sequence)
        entry.timeout = (
            self.settings.initial_timeout_first if first else self.settings.initial_timeout
        )
        out: list[act.Action] = []
        coa, interface = entry.care_of_address, entry.interface
        if entry.tunnel is not None and coa is not None and interface is not None:
            # A handover: be ready for the HA's packets at the new CoA before it sends them.
            out.append(act.PrepareCareOf(coa, entry.home_agent, interface))
        elif entry.tunnel is None:
            # Away for the first time since start or since a visit home.
            entry.home_placed = False
            out.append(act.LeaveHomeLink(entry.home_address))
        return out + self._send_bu(entry, now, self.settings.lifetime)

    def _send_bu(self, entry: BULEntry, now: float, lifetime: float) -> list[act.Action]:
        assert entry.home_agent is not None
        entry.sequence = seq_add(entry.sequence)
        entry.unanswered += 1
        entry.lifetime = lifetime
        entry.retransmit_at = now + entry.timeout
        units = min(int(lifetime) // LIFETIME_UNIT, 0xFFFF)
        bu: BindingUpdate = BindingUpdate(entry.sequence, BU_FLAG_A | BU_FLAG_H, units)
        home_registration = lifetime > 0
        coa = entry.care_of_address if home_registration else entry.home_address
        assert coa is not None
        if self.settings.authentication and self.settings.key and self.settings.nai:
            # One security association for all home addresses: its timestamps must
            # increase (RFC 4285 5.1), even for BUs built at the same instant.
            stamp = max(ntp_timestamp(now + entry.clock_offset), self._last_stamp + 1)
            self._last_stamp = stamp
            bu = protect(
                bu, self.settings.nai.encode(), self.settings.key, stamp, coa, entry.home_address
            )  # type: ignore[assignment]
        self.counters.sent(bu.MH_TYPE)
        if home_registration:
            data = build_packet(coa, entry.home_agent, bu, home_address=entry.home_address)
        else:
            data = build_packet(entry.home_address, entry.home_agent, bu)
        return [act.SendPacket(data, entry.home_agent)]

    def _go_home(self, entry: BULEntry, interface: str, now: float) -> list[act.Action]:
        out: list[act.Action] = []
        if entry.tunnel is not None or entry.state in ("registered", "registering"):
            out.append(act.DetachTunnel(entry.home_address, entry.prefix, entry.home_interface))
            entry.home_placed = True
            entry.tunnel = None
            out.append(act.StateChanged("binding_update_list"))
        if entry.home_agent is None:
            entry.state = "idle"
            return out
        entry.state = "deregistering"
        entry.attempt_first = seq_add(entry.sequence)
        entry.care_of_address, entry.interface = entry.home_address, interface
        entry.timeout = self.settings.initial_timeout
        out.append(act.Log("info", f"{entry.home_address}: back home, deregistering"))
        for (home, _cn), registration in self.correspondents.items():
            if home == entry.home_address:
                out += registration.home(now)
        return out + self._send_bu(entry, now, 0)

    # --- DHAAD ---------------------------------------------------------------------------

    def _discover(self, entry: BULEntry, now: float) -> list[act.Action]:
        entry.state = "discovering"
        entry.discovered = True
        entry.dhaad_tries = 0
        entry.timeout = INITIAL_DHAAD_TIMEOUT
        return self._send_dhaad(entry, now)

    def _send_dhaad(self, entry: BULEntry, now: float) -> list[act.Action]:
        assert entry.care_of_address is not None
        self._next_dhaad_id = (self._next_dhaad_id + 1) & 0xFFFF
        entry.dhaad_id = self._next_dhaad_id
        entry.dhaad_tries += 1
        entry.retransmit_at = now + entry.timeout
        anycast = home_agents_anycast(entry.prefix)
        self.counters.add("dhaad_request_out")
        data = build_packet(entry.care_of_address, anycast, HAADRequest(entry.dhaad_id))
        return [act.SendPacket(data, anycast)]

    # --- received packets -----------------------------------------------------------------

    def receive(self, packet: Packet, now: float, interface: str | None = None) -> list[act.Action]:
        payload = packet.payload
        if isinstance(payload, RouterAdvertisement):
            return self._router_advertisement(packet, payload, interface, now)
        if isinstance(payload, HAADReply):
            return self._dhaad_reply(payload, now)
        if isinstance(payload, MobilePrefixAdvertisement):
            return self._prefix_advertisement(packet, payload, now)
        if packet.protocol != IPPROTO_MH or isinstance(payload, bytes):
            return []
        if not packet.checksum_ok():
            self.counters.add("bad_checksum")
            return []
        if not isinstance(payload, MobilityMessage):
            return []  # the wire layer gives MH packets a Mobility Header payload
        self.counters.received(payload.MH_TYPE)
        for registration in self.correspondents.values():
            # Before the home agent's entries: a correspondent's BA also carries an RH2.
            if registration.wants(packet):
                return registration.receive(packet, now)
        if isinstance(payload, HomeTest | CareofTest):
            self.counters.add("rr_unexpected")
            return []
        rh2 = packet.routing_header_type2
        home = rh2.home_address if rh2 is not None else packet.dst
        entry = self.entries.get(home)
        if entry is None:
            return []
        if isinstance(payload, BindingAck):
            return self._binding_ack(entry, packet, payload, now)
        if isinstance(payload, BindingError):
            self.counters.be_status(payload.status, "in")
            return [act.Log("warning", f"{home}: binding error {payload.status} from {packet.src}")]
        if isinstance(payload, BindingRefreshRequest) and entry.state == "registered":
            entry.state, entry.timeout = "registering", self.settings.initial_timeout
            return self._send_bu(entry, now, self.settings.lifetime)
        return []

    def _binding_ack(
        self, entry: BULEntry, packet: Packet, ba: BindingAck, now: float
    ) -> list[act.Action]:
        waiting = entry.state in ("registering", "deregistering")
        # A 135 carries the HA's last accepted number, not ours.
        matches = _in_attempt(entry, ba.sequence) or ba.status == BAStatus.SEQUENCE_OUT_OF_WINDOW
        if not (waiting and matches):
            self.counters.add("ba_unexpected")
            return []
        entry.unanswered = 0
        coa = entry.care_of_address
        assert coa is not None
        if self.settings.authentication and self.settings.key is not None:
            key = self.settings.key
            verdict = verify(
                packet.payload_bytes,
                ba,
                coa,
                entry.home_address,
                lambda nai: key if nai == self.settings.nai else None,
            )
            if verdict.status is not None:
                self.counters.add("auth_failed")
                return [
                    act.Log("warning", f"BA for {entry.home_address} rejected: {verdict.reason}")
                ]
        self.counters.ba_status(ba.status, "in")
        if ba.status == BAStatus.SEQUENCE_OUT_OF_WINDOW:
            self.counters.add("sequence_mismatch")
            entry.sequence = ba.sequence  # _send_bu steps past the HA's last accepted number
            return self._resend(entry, now)
        if ba.status == BAStatus.MIPV6_ID_MISMATCH:
            ident = next((o for o in ba.options if isinstance(o, MessageIdentification)), None)
            if ident is not None:
                entry.clock_offset = unix_seconds(ident.timestamp) - now
                self._last_stamp = 0  # our clock was wrong: count from the corrected one
            return self._resend(entry, now)
        gone = entry.state == "deregistering" and ba.status == BAStatus.NOT_HOME_AGENT_FOR_MN
        if not ba.accepted and not gone:
            entry.state, entry.retransmit_at = "failed", None
            entry.reason = f"home agent refused with status {ba.status}"
            return [act.Log("error", f"{entry.home_address}: {entry.reason}")]
        entry.retransmit_at = None
        if entry.state == "deregistering":
            # 133 to a deregistration: the HA holds no binding (an earlier copy removed it).
            entry.state, entry.refresh_at = "idle", None
            entry.care_of_address = entry.interface = None
            return [
                act.AnnounceHomeAddress(entry.home_address, entry.home_interface),
                act.StateChanged("binding_update_list"),
                act.Log("info", f"{entry.home_address}: deregistered at home"),
            ]
        granted = min(ba.lifetime_seconds, entry.lifetime)
        entry.state, entry.expires, entry.reason = "registered", now + granted, ""
        refresh = granted * REFRESH_FRACTION
        advice = next((o for o in ba.options if isinstance(o, BindingRefreshAdvice)), None)
        if advice is not None and 0 < advice.interval_seconds < refresh:
            refresh = advice.interval_seconds
        entry.refresh_at = now + refresh
        out: list[act.Action] = []
        assert entry.interface is not None and entry.home_agent is not None
        if entry.tunnel != (coa, entry.interface):
            entry.tunnel = (coa, entry.interface)
            out.append(act.AttachTunnel(entry.home_address, coa, entry.home_agent, entry.interface))
            out.append(act.Log("info", f"{entry.home_address} registered at {coa}"))
        # After the tunnel: traffic should not wait for the state file's fsync.
        out.append(act.StateChanged("binding_update_list"))
        return out + self._optimise(entry, now)

    def _resend(self, entry: BULEntry, now: float) -> list[act.Action]:
        lifetime = 0 if entry.state == "deregistering" else self.settings.lifetime
        return self._send_bu(entry, now, lifetime)

    def _dhaad_reply(self, reply: HAADReply, now: float) -> list[act.Action]:
        for entry in self.entries.values():
            if entry.state == "discovering" and reply.identifier == entry.dhaad_id:
                self.counters.add("dhaad_reply_in")
                if not reply.home_agents:
                    return []
                entry.home_agents = list(reply.home_agents)
                entry.home_agent = reply.home_agents[0]
                return [
                    act.Log(
                        "info", f"DHAAD: home agent {entry.home_agent} for {entry.home_address}"
                    ),
                    *self._start_registration(entry, now, first=True),
                ]
        return []

    def _prefix_advertisement(
        self, packet: Packet, mpa: MobilePrefixAdvertisement, now: float
    ) -> list[act.Action]:
        """Home subnet renumbering: a new home prefix gives a new home address to register."""
        rh2 = packet.routing_header_type2
        base = self.entries.get(rh2.home_address) if rh2 is not None else None
        if base is None:
            return []
        out: list[act.Action] = []
        for option in mpa.options:
            if not isinstance(option, PrefixInformation) or option.valid_lifetime == 0:
                continue
            prefix = IPv6Network(f"{option.prefix}/{option.prefix_length}", strict=False)
            if any(e.prefix == prefix for e in self.entries.values()):
                continue
            host = int(base.home_address) & int(base.prefix.hostmask)
            address = IPv6Address(int(prefix.network_address) | host)
            spec = HomeAddressSpec(address, prefix, base.home_interface, base.home_agent)
            entry = self._add_entry(spec, base.sequence)
            entry.care_of_address, entry.interface = base.care_of_address, base.interface
            out.append(
                act.Log("info", f"home prefix {prefix} advertised: new home address {address}")
            )
            if entry.care_of_address is not None:
                out += self._start_registration(entry, now, first=True)
        return out

    def _router_advertisement(
        self, packet: Packet, ra: RouterAdvertisement, interface: str | None, now: float
    ) -> list[act.Action]:
        if interface is None:
            return []
        self.home_agents.update_from_ra(ra, packet.src, interface, now)
        option = ra.option(AdvertisementInterval)
        interval = (
            option.interval / 1000
            if isinstance(option, AdvertisementInterval) and option.interval
            else None
        )
        for entry in self.entries.values():
            if entry.home_agent is None and ra.home_agent:
                agents = self.home_agents.preferred(entry.prefix)
                if agents:
                    entry.home_agent = agents[0]
        prefixes = tuple(
            IPv6Network(f"{o.prefix}/{o.prefix_length}", strict=False)
            for o in ra.options
            if isinstance(o, PrefixInformation) and o.valid_lifetime and (o.on_link or o.autonomous)
        )
        if interface not in self.settings.interfaces:
            return []
        known = self._link_prefixes.get(interface)
        routers = self._link_routers.setdefault(interface, set())
        if not prefixes:
            # Which link it serves cannot be told; a router of the current link keeps it alive.
            if known is None or packet.src in routers:
                routers.add(packet.src)
                self._keep_alive(interface, interval, now)
            return []
        router = packet.src if ra.router_lifetime else None
        if interface in self._fresh or known is None:
            # The first RA since a link change (or ever) says which link we are on now.
            return self._switch(interface, router, prefixes, interval, now)
        if set(prefixes) & set(known):
            # A router of the current link: the link is alive; its prefixes are the link's.
            routers.add(packet.src)
            self._candidates.pop(interface, None)
            self._keep_alive(interface, interval, now)
            if not set(prefixes) <= set(known):
                self._link_prefixes[interface] = tuple(dict.fromkeys((*known, *prefixes)))
                return self._evaluate(now)
            return []
        # A router of another link on the same interface, with no link event: we may have
        # moved (a roamed Wi-Fi, a VLAN change). Confirmed when the current link's routers
        # go silent, or at once with eager movement detection 2.
        self.counters.add("movement_candidate")
        candidate = _Candidate(packet.src, prefixes, router is not None, now, interval)
        self._candidates[interface] = candidate
        if self.settings.eager_movement_detection >= 2:
            return self._switch(interface, router, prefixes, interval, now)
        return []

    def _keep_alive(self, interface: str, interval: float | None, now: float) -> None:
        if interval is None:
            return
        eager = self.settings.eager_movement_detection >= 1
        factor = EAGER_LOST_ROUTER_FACTOR if eager else LOST_ROUTER_FACTOR
        self._ra_deadline[interface] = now + factor * interval

    def _switch(
        self,
        interface: str,
        router: IPv6Address | None,
        prefixes: tuple[IPv6Network, ...],
        interval: float | None,
        now: float,
    ) -> list[act.Action]:
        """We are on the link of ``prefixes`` now: leave the old one and re-evaluate."""
        moved = interface not in self._fresh and interface in self._link_prefixes
        self._fresh.discard(interface)
        self._candidates.pop(interface, None)
        self._link_prefixes[interface] = prefixes
        self._link_routers[interface] = {router} if router is not None else set()
        self._ra_deadline.pop(interface, None)
        self._keep_alive(interface, interval, now)
        out: list[act.Action] = []
        if moved:
            self.counters.add("moved_without_link_event")
            shown = ", ".join(map(str, prefixes))
            out.append(act.Log("info", f"{interface}: on another link ({shown}), no link event"))
        return [*out, act.LeaveOldLinks(interface, router, prefixes), *self._evaluate(now)]

    # --- timers ------------------------------------------------------------------------------

    def handle_timer(self, now: float) -> list[act.Action]:
        out: list[act.Action] = []
        for interface, deadline in list(self._ra_deadline.items()):
            if deadline > now:
                continue
            # The current link's routers went silent: we probably moved.
            del self._ra_deadline[interface]
            candidate = self._candidates.pop(interface, None)
            fresh_enough = candidate is not None and now - candidate.heard <= (
                LOST_ROUTER_FACTOR * (candidate.interval or 1.0)
            )
            if candidate is not None and fresh_enough:
                router = candidate.router if candidate.default else None
                out += self._switch(interface, router, candidate.prefixes, candidate.interval, now)
                continue
            # Nobody else heard: ask, and let the next RA say where we are.
            self._fresh.add(interface)
            self.counters.add("rs_out")
            out.append(act.SendRouterSolicitation(interface))
        for key, registration in list(self.correspondents.items()):
            due = registration.get_timer()
            if due is None or due > now:
                continue
            if registration.state in ("bound", "held") and self._idle_from_traffic(key, now):
                if registration.state == "bound" and (registration.expires or 0) > now:
                    registration.refresh_at = None  # no refresh: let the binding run out
                    continue
                # Expired unrefreshed, or held and quiet: the tunnel carries whatever comes
                # later (and that traffic may pick the peer again).
                out += registration.stop()
                del self.correspondents[key]
                self._last_traffic.pop(key, None)
                out.append(
                    act.Log("info", "%s: no traffic with %s, route optimisation ends", None, key)
                )
                continue
            out += registration.handle_timer(now)
        for entry in self.entries.values():
            if entry.retransmit_at is not None and entry.retransmit_at <= now:
                out += self._retransmit(entry, now)
            elif entry.state == "registered" and entry.refresh_at is not None:
                if entry.expires <= now:
                    entry.state, entry.refresh_at = "registering", None
                    entry.timeout = self.settings.initial_timeout
                    out.append(act.Log("warning", f"{entry.home_address}: binding expired"))
                    out += self._send_bu(entry, now, self.settings.lifetime)
                elif entry.refresh_at <= now:
                    entry.state, entry.timeout = "registering", self.settings.initial_timeout
                    out += self._send_bu(entry, now, self.settings.lifetime)
        self.home_agents.expire(now)
        return out

    def _retransmit(self, entry: BULEntry, now: float) -> list[act.Action]:
        self.counters.add("retransmissions")
        if entry.state == "discovering":
            if entry.dhaad_tries >= DHAAD_RETRIES:
                entry.state, entry.retransmit_at = "failed", None
                entry.reason = "no home agent answered DHAAD"
                return [act.Log("error", f"{entry.home_address}: {entry.reason}")]
            entry.timeout *= 2
            return self._send_dhaad(entry, now)
        if entry.state not in ("registering", "deregistering"):
            entry.retransmit_at = None
            return []
        entry.timeout = min(entry.timeout * 2, self.settings.max_timeout)
        if (
            entry.state == "registering"
            and entry.discovered
            and entry.timeout >= self.settings.max_timeout
        ):
            # The discovered agent stopped answering: look for another one.
            entry.home_agent = None
            return self._discover(entry, now)
        out: list[act.Action] = []
        if entry.unanswered == NO_BA_WARN_AFTER:
            self.counters.add("no_binding_ack")
            what = "deregistration" if entry.state == "deregistering" else "registration"
            out.append(
                act.Log(
                    "warning",
                    f"{entry.home_address}: no Binding Acknowledgement from {entry.home_agent} "
                    f"after {entry.unanswered} Binding Updates ({what}); still retrying. If IPsec "
                    "protects the signalling, check that both ends hold matching SAs (ip xfrm "
                    "state; XfrmInNoStates, XfrmInStateProtoError, XfrmOutNoStates in "
                    "/proc/net/xfrm_stat)",
                )
            )
        return out + self._resend(entry, now)

    def get_timer(self) -> float | None:
        times = list(self._ra_deadline.values())
        for entry in self.entries.values():
            if entry.retransmit_at is not None:
                times.append(entry.retransmit_at)
            elif entry.state == "registered" and entry.refresh_at is not None:
                times.append(min(entry.refresh_at, entry.expires))
        expiry = self.home_agents.next_expiry()
        if expiry is not None:
            times.append(expiry)
        for registration in self.correspondents.values():
            due = registration.get_timer()
            if due is not None:
                times.append(due)
        return min(times, default=None)

    # --- operator requests ---------------------------------------------------------------------

    def reconfigure(self, settings: MobileNodeSettings, now: float) -> list[act.Action]:
        """New settings: keep entries for home addresses still wanted, add and drop the rest."""
        if settings.route_optimization and self._random is None:
            raise ValueError("route optimisation needs random_bytes (cookies, sequence numbers)")
        self.settings = settings
        out: list[act.Action] = []
        wanted = {spec.address: spec for spec in settings.home}
        for key, registration in list(self.correspondents.items()):
            # Route optimisation switched off, or the peer no longer listed: the tunnel.
            home, correspondent = key
            kept = correspondent in settings.correspondents or (
                settings.ro_from_traffic and key in self._last_traffic
            )
            if home not in wanted or not self.wants_route_optimization(correspondent) or not kept:
                out += registration.stop()
                del self.correspondents[key]
                self._last_traffic.pop(key, None)
        for home in [h for h in self.entries if h not in wanted]:
            out += self._drop(self.entries.pop(home))
        for home, spec in wanted.items():
            entry = self.entries.get(home)
            if entry is None:
                self._add_entry(spec, int.from_bytes(home.packed[-2:], "big"))
            elif spec.home_agent is not None and spec.home_agent != entry.home_agent:
                entry.home_agent, entry.state = spec.home_agent, "idle"
        return out + self._evaluate(now)

    def start(self, now: float) -> list[act.Action]:
        """Undo :meth:`stop`: register again from wherever we are."""
        self.enabled = True
        return self._evaluate(now)

    def stop(self) -> list[act.Action]:
        """mip6config -x: tear down tunnels and forget registrations (the HA times them out)."""
        self.enabled = False
        out: list[act.Action] = []
        for registration in self.correspondents.values():
            out += registration.stop()
        self.correspondents.clear()
        self._last_traffic.clear()
        for entry in self.entries.values():
            out += self._drop(entry)
            entry.state, entry.care_of_address, entry.interface = "idle", None, None
        return out

    def _drop(self, entry: BULEntry) -> list[act.Action]:
        entry.retransmit_at = entry.refresh_at = None
        if entry.tunnel is None:
            return []
        entry.tunnel = None
        return [
            act.DetachTunnel(entry.home_address, entry.prefix, entry.home_interface, at_home=False),
            act.StateChanged("binding_update_list"),
        ]

    # --- route optimisation (RFC 6275 11.6-11.7) ------------------------------------------

    def wants_route_optimization(self, correspondent: IPv6Address) -> bool:
        """Route optimisation is on and ``correspondent`` is not one we keep on the tunnel."""
        if not self.settings.route_optimization:
            return False
        if correspondent.is_multicast or correspondent.is_link_local:
            return False
        if any(entry.home_agent == correspondent for entry in self.entries.values()):
            return False  # the home agent is reached through the home registration
        return not any(correspondent in net for net in self.settings.no_route_optimization)

    def note_traffic(
        self, home: IPv6Address, correspondent: IPv6Address, now: float
    ) -> list[act.Action]:
        """The data path saw traffic between ``home`` and ``correspondent``: optimise that
        route if we may (11.7.2 leaves the trigger to us), within max_correspondents."""
        entry = self.entries.get(home)
        if entry is None:
            return []
        key = (home, correspondent)
        registration = self.correspondents.get(key)
        if registration is not None:
            self._last_traffic[key] = now
            if registration.state == "bound" and registration.refresh_at is None:
                registration.refresh_at = now  # it was left to run out: refresh it after all
            return []
        if not self.settings.ro_from_traffic or not self.wants_route_optimization(correspondent):
            return []
        if entry.state != "registered" or entry.care_of_address in (None, home):
            return []
        if len(self.correspondents) >= self.settings.max_correspondents:
            self.counters.add("ro_correspondents_full")
            return []
        self._last_traffic[key] = now
        assert entry.care_of_address is not None
        return self._registration(home, correspondent).away(
            entry.care_of_address, now, entry.expires
        )

    def _idle_from_traffic(self, key: tuple[IPv6Address, IPv6Address], now: float) -> bool:
        """A correspondent picked from traffic that has been quiet for a refresh interval."""
        if key[1] in self.settings.correspondents:
            return False
        last = self._last_traffic.get(key)
        quiet = self.settings.ro.lifetime * self.settings.ro.refresh_fraction
        return last is None or now - last >= quiet

    def _registration(
        self, home: IPv6Address, correspondent: IPv6Address
    ) -> CorrespondentRegistration:
        key = (home, correspondent)
        registration = self.correspondents.get(key)
        if registration is None:
            assert self._random is not None  # settings.route_optimization checked it
            registration = CorrespondentRegistration(
                home,
                correspondent,
                self._random,
                self.settings.ro,
                self.counters,
                int.from_bytes(self._random(2), "big"),
            )
            self.correspondents[key] = registration
        return registration

    def _optimise(self, entry: BULEntry, now: float) -> list[act.Action]:
        """After a home registration is accepted (first, handover or refresh): every wanted
        correspondent runs (or keeps) return routability from this care-of address."""
        coa = entry.care_of_address
        if coa is None or coa == entry.home_address:
            return []
        out: list[act.Action] = []
        for correspondent in self.settings.correspondents:
            if self.wants_route_optimization(correspondent):
                self._registration(entry.home_address, correspondent)
        for (home, _cn), registration in self.correspondents.items():
            if home == entry.home_address:
                out += registration.away(coa, now, entry.expires)
        return out

    def correspondent_entries(self) -> list[dict[str, object]]:
        return [r.to_dict() for r in self.correspondents.values()]

    def home_addresses(self) -> list[dict[str, object]]:
        return [
            {
                "home_address": str(e.home_address),
                "prefix": str(e.prefix),
                "interface": e.home_interface,
                "home_agent": str(e.home_agent) if e.home_agent else None,
                "at_home": e.state == "idle" and e.tunnel is None,
            }
            for e in self.entries.values()
        ]

    # --- persistence -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, object]:
        return {"entries": [e.to_dict() for e in self.entries.values()]}

    def restore(self, state: dict[str, object], now: float) -> list[act.Action]:
        """Keep sequence numbers and live registrations across a restart."""
        entries = state.get("entries", [])
        for raw in entries if isinstance(entries, list) else []:
            home = IPv6Address(raw["home_address"])
            entry = self.entries.get(home)
            if entry is None:
                continue
            entry.sequence = int(raw["sequence"])
            if (
                raw["state"] == "registered"
                and float(raw["expires"]) > now
                and raw["care_of_address"]
            ):
                entry.state = "registered"
                entry.care_of_address = IPv6Address(raw["care_of_address"])
                entry.interface = raw["interface"]
                entry.home_agent = entry.home_agent or IPv6Address(raw["home_agent"])
                entry.expires = float(raw["expires"])
                entry.lifetime = float(raw["lifetime"])
                entry.refresh_at = min(now + 1, entry.expires)
                entry.tunnel = (entry.care_of_address, entry.interface)
        return []


def _in_attempt(entry: BULEntry, sequence: int) -> bool:
    """``sequence`` was sent for the current (de)registration."""
    if sequence == entry.sequence:
        return True
    if entry.attempt_first is None:
        return False
    return (entry.sequence - sequence) & 0xFFFF <= (entry.sequence - entry.attempt_first) & 0xFFFF
