"""Movement detection from router advertisements alone (RFC 6275 11.5.1), sans I/O.

No link event is ever reported here after the start: the mobile node only hears RAs, as
after a Wi-Fi roam or a VLAN change with the carrier up. Time is fake; the expected
values come from RFC 6275 11.5.1 and docs/agent-config.md (``eager_movement_detection``):

- an RA from a router of the current link keeps the link alive;
- an RA from a router whose prefixes are disjoint from the current link's is a movement
  *candidate*: with eager 0 and 1 nothing is sent until the current link's routers have
  been silent for 3 (eager 0) or 1.5 (eager 1) of their advertised intervals (RFC 6275
  7.3: the Advertisement Interval option lets a mobile node count missed RAs); then the
  node switches: LeaveOldLinks with the new prefixes and router, and a Binding Update from
  the new care-of address once it exists;
- eager 2 switches on the first such RA;
- a second router of the same link (sharing a prefix) is not a move.
"""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Interface, IPv6Network

import pytest
from mip6agent import wire
from mip6agent.core import actions as act
from mip6agent.core.auth import MobilityKey
from mip6agent.core.home_agent import HomeAgent, HomeAgentSettings, HomeLink
from mip6agent.core.mobile_node import HomeAddressSpec, MobileNode, MobileNodeSettings

HA = IPv6Address("2001:db8:1::1")
HOA = IPv6Address("2001:db8:1::100")
HOME = IPv6Network("2001:db8:1::/64")
F1 = IPv6Interface("2001:db8:2::100/64")
F2 = IPv6Interface("2001:db8:3::100/64")
SHARED_EXTRA = IPv6Network("2001:db8:22::/64")
R_HOME = IPv6Address("fe80::1:1")
R1 = IPv6Address("fe80::2:1")
R1B = IPv6Address("fe80::2:2")  # a second router on foreign1
R2 = IPv6Address("fe80::3:1")
NAI = "mn1@example.net"
KEY = MobilityKey(1000, bytes(range(20)))
T0 = 1_800_000_000.0
INTERVAL_MS = 100
INTERVAL = INTERVAL_MS / 1000
# Missed intervals before the current link counts as lost, per eager_movement_detection.
LOSS_FACTOR = {0: 3.0, 1: 1.5}
EPS = 1e-3


def ra(router: IPv6Address, *prefixes: IPv6Network, interval_ms: int | None = INTERVAL_MS):
    options: list = [
        wire.PrefixInformation(64, 0xC0, 86400, 14400, p.network_address) for p in prefixes
    ]
    if interval_ms is not None:
        options.append(wire.AdvertisementInterval(interval_ms))
    message = wire.RouterAdvertisement(64, 0, 1800, options=options)
    return wire.parse_packet(wire.build_packet(router, IPv6Address("ff02::1"), message))


def bus(actions: list) -> list[tuple[wire.Packet, wire.BindingUpdate]]:
    out = []
    for action in actions:
        if isinstance(action, act.SendPacket):
            packet = wire.parse_packet(action.data)
            if isinstance(packet.payload, wire.BindingUpdate):
                out.append((packet, packet.payload))
    return out


def leaves(actions: list) -> list[act.LeaveOldLinks]:
    return [a for a in actions if isinstance(a, act.LeaveOldLinks)]


def solicitations(actions: list) -> list:
    return [a for a in actions if isinstance(a, act.SendRouterSolicitation)]


class World:
    """One MN (eth0) and one HA core; every BU is answered, fake time only moves forward."""

    def __init__(self, eager: int = 0, homes: tuple[IPv6Address, ...] = (HOA,)) -> None:
        settings = MobileNodeSettings(
            home=tuple(HomeAddressSpec(h, HOME, "eth0", HA) for h in homes),
            interfaces=("eth0",),
            nai=NAI,
            key=KEY,
            eager_movement_detection=eager,
        )
        self.mn = MobileNode(settings)
        self.ha = HomeAgent(
            HomeAgentSettings(links=(HomeLink("home0", HA, (HOME,)),), dad=False),
            keys={NAI: KEY}.get,
        )
        self.now = T0
        self.seen: list = []

    def run(self, actions: list) -> list:
        """Deliver what the MN sends to the HA and the answers back; all MN actions."""
        seen, queue = list(actions), list(actions)
        while queue:
            action = queue.pop(0)
            if not isinstance(action, act.SendPacket) or action.destination != HA:
                continue
            for reply in self.ha.receive(wire.parse_packet(action.data), self.now):
                if isinstance(reply, act.SendPacket):
                    more = self.mn.receive(wire.parse_packet(reply.data), self.now)
                    seen += more
                    queue += more
        self.seen += seen
        return seen

    def at(self, now: float) -> World:
        assert now >= self.now
        self.now = now
        return self

    def hear(self, packet: wire.Packet) -> list:
        return self.run(self.mn.receive(packet, self.now, interface="eth0"))

    def addresses(self, *addresses: IPv6Interface) -> list:
        return self.run(self.mn.addresses_changed("eth0", list(addresses), self.now))

    def timers_until(self, end: float) -> list:
        """Fire every timer due up to ``end`` (each at its own time); then time is ``end``."""
        out: list = []
        while (due := self.mn.get_timer()) is not None and due <= end:
            self.at(max(due, self.now))
            out += self.run(self.mn.handle_timer(self.now))
        self.at(end)
        return out

    def binding(self) -> IPv6Address | None:
        entry = self.ha.cache.get(HOA)
        return None if entry is None else entry.care_of_address

    def start_on_foreign1(self) -> None:
        """Carrier up, foreign1's router speaks, SLAAC gives F1: registered there."""
        self.run(self.mn.link_changed("eth0", True, self.now))
        self.hear(ra(R1, F1.network))
        self.addresses(F1)
        assert self.binding() == F1.ip
        assert all(e.state == "registered" for e in self.mn.entries.values())


# --- the current link ---------------------------------------------------------------------


@pytest.mark.parametrize("eager", [0, 1, 2])
def test_ras_from_the_current_router_keep_the_link_alive(eager: int) -> None:
    world = World(eager)
    world.start_on_foreign1()
    factor = LOSS_FACTOR.get(eager, 1.5)
    assert world.mn.get_timer() == pytest.approx(T0 + factor * INTERVAL)
    out: list = []
    t = T0
    for _ in range(40):  # 4 s of RAs, each one interval after the previous
        t += INTERVAL
        out += world.timers_until(t - EPS)
        out += world.at(t).hear(ra(R1, F1.network))
        assert world.mn.get_timer() == pytest.approx(t + factor * INTERVAL)
    assert solicitations(out) == [] and leaves(out) == [] and bus(out) == []
    assert world.binding() == F1.ip


def test_the_current_router_going_silent_alone_solicits() -> None:
    world = World(0)
    world.start_on_foreign1()
    assert world.timers_until(T0 + 3 * INTERVAL - EPS) == []
    out = world.timers_until(T0 + 3 * INTERVAL + EPS)
    assert out == [act.SendRouterSolicitation("eth0")]
    assert world.binding() == F1.ip, "no router heard elsewhere: no move yet"


# --- another link's router: a candidate, confirmed by the current link's silence -----------


@pytest.mark.parametrize("eager", [0, 1])
def test_another_links_router_is_a_candidate_until_the_current_link_is_lost(eager: int) -> None:
    world = World(eager)
    world.start_on_foreign1()
    factor = LOSS_FACTOR[eager]
    last_r1 = T0 + 5 * INTERVAL
    lost = last_r1 + factor * INTERVAL
    # foreign1's router until last_r1; foreign2's router is heard between them from the
    # start and keeps speaking after foreign1 stops (the port moved, carrier up).
    events = [(T0 + k * INTERVAL, R1, F1.network) for k in range(1, 6)]
    events += [(T0 + (k + 0.5) * INTERVAL, R2, F2.network) for k in range(0, 60)]
    out: list = []
    for when, router, prefix in sorted(e for e in events if e[0] < lost - EPS):
        out += world.timers_until(when)
        out += world.hear(ra(router, prefix))
    out += world.timers_until(lost - EPS)
    assert bus(out) == [] and leaves(out) == [], "nothing sent for a candidate alone"
    assert world.binding() == F1.ip
    assert world.mn.counters["movement_candidate"] >= 1

    out = world.timers_until(lost + EPS)
    assert leaves(out) == [act.LeaveOldLinks("eth0", R2, (F2.network,))]
    assert bus(out) == [], "no care-of address on foreign2 yet: nothing to register"
    assert solicitations(out) == []
    # SLAAC gives the foreign2 address; the foreign1 one lingers in the kernel a moment.
    out = world.addresses(F1, F2)
    sent = bus(out)
    assert len(sent) == 1
    packet, bu = sent[0]
    assert packet.src == F2.ip and packet.dst == HA and bu.lifetime_seconds > 0
    assert world.binding() == F2.ip
    assert act.AttachTunnel(HOA, F2.ip, HA, "eth0") in out


def test_eager_1_loses_the_link_sooner_than_eager_0() -> None:
    """1.5 intervals of silence are a move with eager 1, not yet with eager 0."""
    worlds = {eager: World(eager) for eager in (0, 1)}
    results = {}
    for eager, world in worlds.items():
        world.start_on_foreign1()
        world.at(T0 + INTERVAL / 2).hear(ra(R2, F2.network))
        world.at(T0 + INTERVAL).hear(ra(R2, F2.network))
        results[eager] = world.timers_until(T0 + 1.5 * INTERVAL + EPS)
    assert leaves(results[1]) == [act.LeaveOldLinks("eth0", R2, (F2.network,))]
    assert leaves(results[0]) == [] and bus(results[0]) == []


def test_eager_2_switches_on_the_first_ra_of_another_link() -> None:
    world = World(2)
    world.start_on_foreign1()
    out = world.at(T0 + INTERVAL / 2).hear(ra(R2, F2.network))
    assert leaves(out) == [act.LeaveOldLinks("eth0", R2, (F2.network,))]
    assert bus(out) == []
    out = world.addresses(F2)
    ((packet, _bu),) = bus(out)
    assert packet.src == F2.ip
    assert world.binding() == F2.ip
    # foreign1's router, now on another link for us, is the candidate; foreign2's keeps it
    out = world.at(T0 + INTERVAL).hear(ra(R2, F2.network))
    assert leaves(out) == [] and bus(out) == []


def test_eager_2_with_the_new_address_already_there_registers_at_once() -> None:
    world = World(2)
    world.start_on_foreign1()
    world.addresses(F1, F2)  # an address of a prefix no RA announced on this link yet
    assert world.binding() == F1.ip
    out = world.at(T0 + INTERVAL / 2).hear(ra(R2, F2.network))
    assert leaves(out)[0] == act.LeaveOldLinks("eth0", R2, (F2.network,))
    ((packet, _bu),) = bus(out)
    assert packet.src == F2.ip and world.binding() == F2.ip


@pytest.mark.parametrize("eager", [0, 1])
def test_a_stale_candidate_is_not_used(eager: int) -> None:
    """Heard once long ago, then silent: when foreign1 goes quiet, ask (RS), and let the
    next RA say where we are."""
    world = World(eager)
    world.start_on_foreign1()
    world.at(T0 + INTERVAL / 2).hear(ra(R2, F2.network))
    t = T0
    for _ in range(20):  # foreign1 speaks for 2 s more; foreign2 stays silent
        t += INTERVAL
        world.timers_until(t)
        world.hear(ra(R1, F1.network))
    out = world.timers_until(t + LOSS_FACTOR[eager] * INTERVAL + EPS)
    assert out == [act.SendRouterSolicitation("eth0")], "stale candidate: solicit, no switch"
    assert world.binding() == F1.ip
    # the answer comes from foreign1's router: we never moved, nothing to register
    out = world.at(world.now + 0.01).hear(ra(R1, F1.network))
    assert bus(out) == [] and world.binding() == F1.ip
    assert all(a.prefixes == (F1.network,) for a in leaves(out))


@pytest.mark.parametrize("eager", [0, 1])
def test_after_a_stale_candidate_the_next_ra_decides(eager: int) -> None:
    world = World(eager)
    world.start_on_foreign1()
    world.at(T0 + INTERVAL / 2).hear(ra(R2, F2.network))
    t = T0
    for _ in range(20):  # foreign1 speaks for 2 s more, then both are silent for a minute
        t += INTERVAL
        world.timers_until(t)
        world.hear(ra(R1, F1.network))
    out = world.timers_until(t + 60)
    assert solicitations(out) and leaves(out) == [] and bus(out) == []
    out = world.hear(ra(R2, F2.network))
    assert leaves(out) == [act.LeaveOldLinks("eth0", R2, (F2.network,))]
    world.addresses(F2)
    assert world.binding() == F2.ip


# --- a second router of the same link ----------------------------------------------------


@pytest.mark.parametrize("eager", [0, 1, 2])
def test_a_second_router_of_the_same_link_is_not_a_move(eager: int) -> None:
    world = World(eager)
    world.start_on_foreign1()
    out: list = []
    # the second router shares foreign1's prefix and adds one; the first one then stops
    t = T0
    for _ in range(30):
        t += INTERVAL
        out += world.timers_until(t)
        out += world.hear(ra(R1B, F1.network, SHARED_EXTRA))
    assert leaves(out) == [] and bus(out) == [] and solicitations(out) == []
    assert world.binding() == F1.ip
    assert world.mn.counters["movement_candidate"] == 0
    # a router heard only with the extra prefix is on foreign1 too now
    out = world.at(t + 0.01).hear(ra(IPv6Address("fe80::2:3"), SHARED_EXTRA))
    assert leaves(out) == [] and bus(out) == []


# --- coming home and leaving again without link events -----------------------------------


@pytest.mark.parametrize("eager", [0, 1])
def test_the_home_router_while_away_deregisters_after_the_loss(eager: int) -> None:
    world = World(eager)
    world.start_on_foreign1()
    world.at(T0 + INTERVAL / 2).hear(ra(R_HOME, HOME))
    world.at(T0 + INTERVAL).hear(ra(R_HOME, HOME))
    lost = T0 + LOSS_FACTOR[eager] * INTERVAL
    out = world.timers_until(lost - EPS)
    assert bus(out) == [] and world.binding() == F1.ip
    out = world.timers_until(lost + EPS)
    assert leaves(out) == [act.LeaveOldLinks("eth0", R_HOME, (HOME,))]
    # The RA says we are home (RFC 6275 11.5.4): no address of the home prefix needs to
    # be usable first (DAD for the home address would fail, the home agent defends it).
    ((packet, bu),) = bus(out)
    assert bu.lifetime_seconds == 0, "a deregistration"
    assert packet.src == HOA and packet.dst == HA
    assert packet.home_address_option is None or packet.home_address_option == HOA
    assert act.DetachTunnel(HOA, HOME, "eth0") in out
    assert world.binding() is None
    assert world.mn.entries[HOA].state == "idle"
    # then SLAAC's home-prefix address appears: nothing more to do
    out = world.addresses(F1, IPv6Interface(f"{HOA}/64"))
    assert bus(out) == [] and world.binding() is None


def test_home_by_link_event_and_ra_even_if_the_home_address_never_becomes_usable() -> None:
    """Carrier back on the home link; the only home-prefix address SLAAC makes is the home
    address itself, whose DAD the home agent's proxy fails: the RA is enough."""
    world = World(0)
    world.start_on_foreign1()
    world.at(T0 + 1)
    world.run(world.mn.link_changed("eth0", False, world.now))
    world.run(world.mn.link_changed("eth0", True, world.now))
    assert bus(world.addresses(F1)) == [], "the old address alone is no move"
    out = world.hear(ra(R_HOME, HOME))
    assert leaves(out) == [act.LeaveOldLinks("eth0", R_HOME, (HOME,))]
    ((packet, bu),) = bus(out)
    assert bu.lifetime_seconds == 0 and packet.src == HOA
    assert world.binding() is None
    assert act.AnnounceHomeAddress(HOA, "eth0") in out
    assert bus(world.addresses()) == [] and world.binding() is None


def test_leaving_home_again_takes_the_home_address_off_the_link_before_the_bu() -> None:
    world = World(2)
    world.start_on_foreign1()
    # home (RA-only), deregistered
    world.at(T0 + 1).hear(ra(R_HOME, HOME))
    world.addresses(IPv6Interface(f"{HOA}/64"))
    assert world.binding() is None and world.mn.entries[HOA].state == "idle"
    for now, router, coa in ((T0 + 2, R1, F1), (T0 + 4, R2, F2)):
        # away again, then home again
        out = world.at(now).hear(ra(router, coa.network))
        out += world.addresses(IPv6Interface(f"{HOA}/64"), coa)
        kinds = [type(a) for a in out]
        assert act.LeaveHomeLink(HOA) in out, f"leaving home for {coa}"
        first_bu = next(i for i, a in enumerate(out) if bus([a]))
        assert kinds.index(act.LeaveHomeLink) < first_bu
        assert world.binding() == coa.ip
        out = world.at(now + 1).hear(ra(R_HOME, HOME))
        out += world.addresses(IPv6Interface(f"{HOA}/64"))
        assert [bu.lifetime_seconds for _p, bu in bus(out)] == [0]
        assert world.binding() is None


HOA2 = IPv6Address("2001:db8:1::200")


def test_two_home_addresses_leave_the_home_link_before_any_bu() -> None:
    """The second home address still on the link keeps the home prefix on-link: the first
    address's BU to the home agent would go out of the foreign link and be lost."""
    world = World(0, homes=(HOA, HOA2))
    world.start_on_foreign1()
    world.at(T0 + 1).hear(ra(R_HOME, HOME))
    world.run(world.mn.link_changed("eth0", False, world.now))
    world.run(world.mn.link_changed("eth0", True, world.now))
    world.hear(ra(R_HOME, HOME))
    assert world.ha.cache.get(HOA) is None and world.ha.cache.get(HOA2) is None
    world.at(T0 + 2)
    world.run(world.mn.link_changed("eth0", False, world.now))
    world.run(world.mn.link_changed("eth0", True, world.now))
    out = world.hear(ra(R2, F2.network))
    out += world.addresses(F2)
    first_bu = next(i for i, a in enumerate(out) if bus([a]))
    leaving = [i for i, a in enumerate(out) if isinstance(a, act.LeaveHomeLink)]
    assert sorted(out[i].home_address for i in leaving) == [HOA, HOA2]
    assert max(leaving) < first_bu


def test_two_home_addresses_share_one_increasing_timestamp() -> None:
    """Both BUs are built at the same instant under one NAI: RFC 4285 5.1 wants each
    timestamp newer than the last; an equal one is a replay (144) and costs a round trip."""
    world = World(0, homes=(HOA, HOA2))
    world.start_on_foreign1()
    world.at(T0 + 1).hear(ra(R_HOME, HOME))
    out = world.timers_until(T0 + 1 + 3 * INTERVAL + EPS)
    out += world.at(T0 + 5).hear(ra(R2, F2.network))
    out += world.timers_until(T0 + 5 + 3 * INTERVAL + EPS)
    out += world.addresses(F2)
    assert world.ha.counters["replay_rejected"] == 0
    stamps = []
    for _packet, bu in bus(world.seen):
        ident = next(o for o in bu.options if isinstance(o, wire.MessageIdentification))
        stamps.append(ident.timestamp)
    assert len(stamps) >= 6 and stamps == sorted(set(stamps))
    assert world.ha.cache.get(HOA).care_of_address == F2.ip
    assert world.ha.cache.get(HOA2).care_of_address == F2.ip
