"""The mobile node core against the home agent core, over an in-memory link."""

from __future__ import annotations

import copy
from ipaddress import IPv6Address, IPv6Interface, IPv6Network

from hypothesis import given, settings
from hypothesis import strategies as st
from mip6agent import wire
from mip6agent.core import actions as act
from mip6agent.core.auth import MobilityKey
from mip6agent.core.home_agent import HomeAgent, HomeAgentSettings, HomeLink
from mip6agent.core.mobile_node import (
    HomeAddressSpec,
    MobileNode,
    MobileNodeSettings,
    home_agents_anycast,
)

HA = IPv6Address("2001:db8:1::1")
HOA = IPv6Address("2001:db8:1::100")
PREFIX = IPv6Network("2001:db8:1::/64")
F1 = IPv6Interface("2001:db8:2::100/64")
F2 = IPv6Interface("2001:db8:3::100/64")
AT_HOME = IPv6Interface("2001:db8:1::8/64")
NAI = "mn1@example.net"
KEY = MobilityKey(1000, bytes(range(20)))
T0 = 1_800_000_000.0


def mn(home_agent: IPv6Address | None = HA, **overrides) -> MobileNode:
    base = {
        "home": (HomeAddressSpec(HOA, PREFIX, "eth0", home_agent),),
        "interfaces": ("eth0",),
        "nai": NAI,
        "key": KEY,
    }
    return MobileNode(MobileNodeSettings(**{**base, **overrides}))


def ha(**overrides) -> HomeAgent:
    base = {"links": (HomeLink("home0", HA, (PREFIX,)),), "dad": False}
    return HomeAgent(HomeAgentSettings(**{**base, **overrides}), keys={NAI: KEY}.get)


def packets(actions: list) -> list[wire.Packet]:
    return [wire.parse_packet(a.data) for a in actions if isinstance(a, act.SendPacket)]


class Net:
    """Carries packets between one MN and one HA; the HA can be made deaf."""

    def __init__(self, node: MobileNode, agent: HomeAgent | None) -> None:
        self.mn, self.ha = node, agent
        self.log: list = []

    def run(self, actions: list, now: float) -> list:
        """Deliver everything sent, to a fixed point; return all MN actions seen."""
        seen = list(actions)
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            self.log.append(action)
            if not isinstance(action, act.SendPacket) or self.ha is None:
                continue
            packet = wire.parse_packet(action.data)
            if packet.dst == HA or packet.dst == home_agents_anycast(PREFIX):
                replies = self.ha.receive(packet, now)
                self.log += replies
                for reply in replies:
                    if isinstance(reply, act.SendPacket):
                        more = self.mn.receive(wire.parse_packet(reply.data), now)
                        seen += more
                        queue += more
        return seen

    def move(self, address: IPv6Interface, now: float) -> list:
        return self.run(self.mn.addresses_changed("eth0", [address], now), now)


def attach(node: MobileNode, now: float = T0) -> list:
    return node.link_changed("eth0", True, now)


def test_link_up_sends_router_solicitation_at_once() -> None:
    node = mn()
    assert attach(node) == [act.SendRouterSolicitation("eth0")]
    assert node.link_changed("eth0", True, T0) == []  # already up: nothing new


def test_registration_from_foreign_link_attaches_tunnel() -> None:
    node, agent = mn(), ha()
    net = Net(node, agent)
    attach(node)
    out = net.move(F1, T0)
    assert act.AttachTunnel(HOA, F1.ip, HA, "eth0") in out
    entry = node.entries[HOA]
    assert entry.state == "registered"
    assert agent.cache.get(HOA).care_of_address == F1.ip
    bu = next(p for p in packets(net.log) if isinstance(p.payload, wire.BindingUpdate))
    assert bu.src == F1.ip and bu.home_address_option == HOA and bu.payload.ack


def test_retransmission_backs_off_exponentially_to_the_maximum() -> None:
    node = mn()
    attach(node)
    node.addresses_changed("eth0", [F1], T0)
    now, gaps = T0, []
    for _ in range(9):
        deadline = node.get_timer()
        gaps.append(round(deadline - now, 3))
        now = deadline
        sent = packets(node.handle_timer(now))
        assert len(sent) == 1 and isinstance(sent[0].payload, wire.BindingUpdate)
    assert gaps == [1.5, 3.0, 6.0, 12.0, 24.0, 32.0, 32.0, 32.0, 32.0]
    seqs = {e for e in [node.entries[HOA].sequence]}
    assert seqs == {10}  # every retransmission used a new sequence number


def test_refresh_before_expiry_and_brr() -> None:
    node, agent = mn(lifetime=400), ha()
    net = Net(node, agent)
    attach(node)
    net.move(F1, T0)
    entry = node.entries[HOA]
    assert entry.refresh_at == T0 + 320 and entry.expires == T0 + 400
    assert node.get_timer() == T0 + 320
    out = net.run(node.handle_timer(T0 + 320), T0 + 320)
    assert entry.state == "registered" and entry.expires == T0 + 720
    assert not any(isinstance(a, act.AttachTunnel) for a in out)  # same CoA, no churn
    # a Binding Refresh Request from the HA makes the MN refresh now
    brr = wire.build_packet(HA, F1.ip, wire.BindingRefreshRequest(), routing_home_address=HOA)
    sent = packets(node.receive(wire.parse_packet(brr), T0 + 400))
    assert isinstance(sent[0].payload, wire.BindingUpdate)


def test_handover_then_return_home_deregisters() -> None:
    node, agent = mn(), ha()
    net = Net(node, agent)
    attach(node)
    net.move(F1, T0)
    out = net.move(F2, T0 + 10)
    assert act.AttachTunnel(HOA, F2.ip, HA, "eth0") in out
    # the new CoA accepts tunnelled packets before the BU goes out
    prepare = out.index(act.PrepareCareOf(F2.ip, HA, "eth0"))
    assert isinstance(out[prepare + 1], act.SendPacket)
    assert agent.cache.get(HOA).care_of_address == F2.ip
    out = net.move(AT_HOME, T0 + 20)
    assert act.DetachTunnel(HOA, PREFIX, "eth0") in out
    assert act.AnnounceHomeAddress(HOA, "eth0") in out
    assert out.index(act.DetachTunnel(HOA, PREFIX, "eth0")) < out.index(
        act.AnnounceHomeAddress(HOA, "eth0")
    )
    assert len(agent.cache) == 0
    assert node.entries[HOA].state == "idle"
    dereg = [p for p in packets(net.log) if isinstance(p.payload, wire.BindingUpdate)][-1]
    assert dereg.payload.lifetime == 0 and dereg.src == HOA and dereg.home_address_option is None


def test_starting_at_home_sends_nothing_and_puts_the_home_address_on_the_link() -> None:
    node = mn()
    attach(node)
    out = node.addresses_changed("eth0", [AT_HOME], T0)
    # No BU and no timer: only the home address goes on the home link, once.
    assert [type(a) for a in out] == [act.DetachTunnel]
    (placed,) = out
    assert (placed.home_address, placed.interface, placed.at_home) == (HOA, "eth0", True)
    assert node.get_timer() is None
    assert node.addresses_changed("eth0", [AT_HOME], T0 + 1) == []


def test_at_home_a_link_that_comes_back_gets_the_home_address_again() -> None:
    """The home interface went away and a new one of the same name came (a replug): the
    home address went with the old one, so it is placed again, once."""
    node = mn()
    attach(node)
    node.addresses_changed("eth0", [AT_HOME], T0)
    node.link_changed("eth0", False, T0 + 1)
    out = node.link_changed("eth0", True, T0 + 1.5) + node.addresses_changed(
        "eth0", [AT_HOME], T0 + 1.6
    )
    placed = [a for a in out if isinstance(a, act.DetachTunnel)]
    assert [(a.home_address, a.interface, a.at_home) for a in placed] == [(HOA, "eth0", True)]
    assert not [p for p in packets(out) if isinstance(p.payload, wire.BindingUpdate)]
    assert node.addresses_changed("eth0", [AT_HOME], T0 + 2) == []


def test_dhaad_finds_the_home_agent() -> None:
    node, agent = mn(home_agent=None), ha()
    net = Net(node, agent)
    attach(node)
    net.move(F1, T0)
    request = next(p for p in packets(net.log) if isinstance(p.payload, wire.HAADRequest))
    assert request.dst == IPv6Address("2001:db8:1::fdff:ffff:ffff:fffe")
    assert node.entries[HOA].home_agent == HA
    assert node.entries[HOA].state == "registered"


def test_dhaad_gives_up_after_retries() -> None:
    node = mn(home_agent=None)
    attach(node)
    node.addresses_changed("eth0", [F1], T0)
    now, sent = T0, 1
    while node.get_timer() is not None:
        now = node.get_timer()
        sent += len(packets(node.handle_timer(now)))
    assert sent == 4 and node.entries[HOA].state == "failed"
    assert round(now - T0) == 3 + 6 + 12 + 24


def test_sequence_out_of_window_recovers() -> None:
    agent = ha()
    first = mn()
    net = Net(first, agent)
    attach(first)
    for step in range(5):
        net.move(F1 if step % 2 else F2, T0 + step)
    restarted = mn()  # lost its sequence number: starts again from 0
    net = Net(restarted, agent)
    attach(restarted, T0 + 10)
    net.move(F1, T0 + 10)
    assert restarted.entries[HOA].state == "registered"
    assert restarted.counters["sequence_mismatch"] == 1


def test_clock_skew_is_corrected_from_the_ha_timestamp() -> None:
    agent, node = ha(), mn()
    attach(node, T0)
    # the MN's clock is 100 s fast: deliver its BU to a HA whose clock says T0
    out = node.addresses_changed("eth0", [F1], T0 + 100)
    bu = packets(out)[0]
    replies = agent.receive(bu, T0)
    assert packets(replies)[0].payload.status == 144
    again = node.receive(packets(replies)[0], T0 + 100)
    replies = agent.receive(packets(again)[0], T0)
    assert packets(replies)[0].payload.status == 0


def test_wrong_key_at_the_ha_fails_registration() -> None:
    agent = HomeAgent(ha().settings, keys={NAI: MobilityKey(1000, b"z" * 20)}.get)
    node = mn()
    net = Net(node, agent)
    attach(node)
    net.move(F1, T0)
    # the HA's 146 is not signed with the MN's key: the MN ignores it and keeps trying
    assert node.entries[HOA].state == "registering"
    assert node.counters["auth_failed"] == 1
    assert len(agent.cache) == 0


def test_lost_router_triggers_solicitation() -> None:
    node = mn()
    attach(node)
    ra = wire.RouterAdvertisement(64, 0, 1800, options=[wire.AdvertisementInterval(70)])
    packet = wire.parse_packet(
        wire.build_packet(IPv6Address("fe80::1"), IPv6Address("ff02::1"), ra)
    )
    node.receive(packet, T0, interface="eth0")
    assert abs(node.get_timer() - (T0 + 0.21)) < 1e-9
    assert node.handle_timer(T0 + 0.21) == [act.SendRouterSolicitation("eth0")]


def test_home_agent_learned_from_ra_at_home() -> None:
    node = mn(home_agent=None)
    ra = wire.RouterAdvertisement(
        64,
        0x20,
        1800,
        options=[
            wire.PrefixInformation(64, 0xE0, 86400, 14400, HA),
            wire.HomeAgentInformation(0, 1800),
        ],
    )
    node.receive(
        wire.parse_packet(wire.build_packet(IPv6Address("fe80::1"), IPv6Address("ff02::1"), ra)),
        T0,
        interface="eth0",
    )
    assert node.entries[HOA].home_agent == HA


def test_renumbering_registers_the_new_home_address() -> None:
    node, agent = mn(), ha()
    net = Net(node, agent)
    attach(node)
    net.move(F1, T0)
    new_prefix = IPv6Network("2001:db8:11::/64")
    settings = HomeAgentSettings(links=(HomeLink("home0", HA, (PREFIX, new_prefix)),), dad=False)
    out = net.run(agent.reconfigure(settings, T0 + 5), T0 + 5)
    for action in out:
        if isinstance(action, act.SendPacket):
            net.run(node.receive(wire.parse_packet(action.data), T0 + 5), T0 + 5)
    new_home = IPv6Address("2001:db8:11::100")
    assert node.entries[new_home].state == "registered"
    assert agent.cache.get(new_home).care_of_address == F1.ip


def test_snapshot_restore_keeps_sequence_and_registration() -> None:
    node, agent = mn(), ha()
    net = Net(node, agent)
    attach(node)
    net.move(F1, T0)
    restarted = mn()
    restarted.restore(node.snapshot(), T0 + 5)
    entry = restarted.entries[HOA]
    assert entry.state == "registered" and entry.sequence == node.entries[HOA].sequence
    assert entry.tunnel == (F1.ip, "eth0")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["f1", "f2", "home", "down", "up", "wait"]), max_size=25))
def test_random_movement_keeps_ha_and_mn_consistent(moves: list[str]) -> None:
    """Whatever the walk, once the MN settles the HA's binding matches where it is."""
    node, agent = mn(), ha()
    net = Net(node, agent)
    now = T0
    net.run(attach(node, now), now)
    where = None
    for move in moves:
        now += 7
        if move == "down":
            net.run(node.link_changed("eth0", False, now), now)
        elif move == "up":
            net.run(node.link_changed("eth0", True, now), now)
        elif move == "wait":
            while (deadline := node.get_timer()) is not None and deadline <= now:
                net.run(node.handle_timer(deadline), deadline)
        else:
            where = {"f1": F1, "f2": F2, "home": AT_HOME}[move]
            net.run(node.addresses_changed("eth0", [where], now), now)
    if where is None or "eth0" not in node._up:
        return
    binding = agent.cache.get(HOA)
    if where == AT_HOME:
        assert binding is None
    else:
        assert binding is not None and binding.care_of_address == where.ip
        assert node.entries[HOA].tunnel == (where.ip, "eth0")


def test_stop_then_start_registers_again() -> None:
    node, agent = mn(), ha()
    net = Net(node, agent)
    attach(node)
    net.move(F1, T0)
    out = node.stop()
    assert act.DetachTunnel(HOA, PREFIX, "eth0", at_home=False) in out
    assert net.move(F2, T0 + 5) == [], "a stopped mobile node does not register"
    out = net.run(node.start(T0 + 6), T0 + 6)
    assert act.AttachTunnel(HOA, F2.ip, HA, "eth0") in out
    assert agent.cache.get(HOA).care_of_address == F2.ip


def _ra(prefix: IPv6Network, router: str = "fe80::1") -> wire.Packet:
    ra = wire.RouterAdvertisement(
        64,
        0,
        1800,
        options=[wire.PrefixInformation(64, 0xC0, 86400, 14400, prefix.network_address)],
    )
    return wire.parse_packet(wire.build_packet(IPv6Address(router), IPv6Address("ff02::1"), ra))


def test_slaac_move_leaves_the_old_link_once_the_new_router_speaks() -> None:
    """The kernel keeps the old SLAAC address; the first RA after the flap decides."""
    node, agent = mn(), ha()
    net = Net(node, agent)
    attach(node)
    net.run(node.receive(_ra(F1.network), T0, interface="eth0"), T0)
    net.move(F1, T0)
    assert agent.cache.get(HOA).care_of_address == F1.ip
    # the link flaps onto foreign2; both addresses are on the interface for a while
    node.link_changed("eth0", False, T0 + 1)
    assert node.link_changed("eth0", True, T0 + 1) == [act.SendRouterSolicitation("eth0")]
    assert net.run(node.addresses_changed("eth0", [F1, F2], T0 + 1), T0 + 1) == []
    out = net.run(node.receive(_ra(F2.network, "fe80::2"), T0 + 1.01, interface="eth0"), T0 + 1.01)
    assert out[0] == act.LeaveOldLinks("eth0", IPv6Address("fe80::2"), (F2.network,))
    assert agent.cache.get(HOA).care_of_address == F2.ip
    # a second router on the same link adds its prefix without a new "leave"
    extra = IPv6Network("2001:db8:33::/64")
    out = node.receive(_ra(extra, "fe80::3"), T0 + 2, interface="eth0")
    assert not any(isinstance(a, act.LeaveOldLinks) for a in out)


def test_a_late_ba_to_a_retransmitted_deregistration_still_ends_it_cleanly() -> None:
    """The deregistration's BA arrives after the MN resent the BU with a new sequence
    number; the HA answers the resends with 133 (it holds no binding any more). Seen
    against a slow home agent in the UMIP interop matrix: the MN ended "failed"."""
    node, agent = mn(), ha()
    net = Net(node, agent)
    attach(node)
    net.move(F1, T0)
    first = node.addresses_changed("eth0", [AT_HOME], T0 + 10)  # the HA does not see it yet
    (bu1,) = [p for p in packets(first) if isinstance(p.payload, wire.BindingUpdate)]
    entry = node.entries[HOA]
    resend = node.handle_timer(entry.retransmit_at)
    (bu2,) = [p for p in packets(resend) if isinstance(p.payload, wire.BindingUpdate)]
    assert bu2.payload.sequence != bu1.payload.sequence and bu2.payload.lifetime == 0
    ba1 = [a for a in agent.receive(bu1, T0 + 12) if isinstance(a, act.SendPacket)]
    ba2 = [a for a in agent.receive(bu2, T0 + 12) if isinstance(a, act.SendPacket)]
    statuses = [wire.parse_packet(a.data).payload.status for a in ba1 + ba2]
    assert statuses == [0, 133]
    # In the order the HA sent them, and the other way round.
    for order in (ba1 + ba2, ba2 + ba1):
        node2 = copy.deepcopy(node)
        for reply in order:
            node2.receive(wire.parse_packet(reply.data), T0 + 12.1)
        assert node2.entries[HOA].state == "idle", order
        assert node2.entries[HOA].reason == ""


def test_a_ba_for_a_sequence_number_never_sent_is_ignored() -> None:
    node = mn()
    attach(node)
    out = node.addresses_changed("eth0", [F1], T0)
    (bu,) = [p for p in packets(out) if isinstance(p.payload, wire.BindingUpdate)]
    stray = wire.BindingAck(0, 0, (bu.payload.sequence + 5) & 0xFFFF, 100)
    data = wire.build_packet(HA, F1.ip, stray, routing_home_address=HOA)
    node.receive(wire.parse_packet(data), T0 + 0.1)
    assert node.entries[HOA].state == "registering"
    assert node.counters["ba_unexpected"] == 1
