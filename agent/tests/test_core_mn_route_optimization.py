"""The mobile node core's route optimisation, with a home agent core and a correspondent
core, every packet encoded by its sender and parsed (checksums checked) for its receiver.

What the tunnel does in the kernel is played by the harness: packets between the home
address and the correspondent (HoTI, HoT) are handed over as they are. Every BU the node
sends to the correspondent is checked with rr_reference (hashlib/hmac from the RFC 6275
formulas), not with the agent's own functions.
"""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

import pytest
import rr_reference as ref
from mip6agent import wire
from mip6agent.core import actions as act
from mip6agent.core.correspondent import Correspondent, CorrespondentSettings
from mip6agent.core.home_agent import HomeAgent, HomeAgentSettings, HomeLink
from mip6agent.core.mobile_node import HomeAddressSpec, MobileNode, MobileNodeSettings
from mip6agent.core.ratelimit import ReplyLimiter
from rr_reference import CN, COA, COA2, HA, HOA, T0

PREFIX = IPv6Network("2001:db8:1::/64")
FOREIGN1, FOREIGN2 = IPv6Network("2001:db8:2::/64"), IPv6Network("2001:db8:3::/64")
OTHER_CN = IPv6Address("2001:db8:5::9")


class Net:
    def __init__(self, cn_ro: bool = True, **mn: object) -> None:
        options: dict[str, object] = {"route_optimization": True, "correspondents": (CN,)}
        settings = MobileNodeSettings(
            home=(HomeAddressSpec(HOA, PREFIX, "eth0", HA),),
            interfaces=("eth0",),
            authentication=False,
            **{**options, **mn},  # type: ignore[arg-type]
        )
        self.mn = MobileNode(settings, 100, random_bytes=ref.Randomness(11))
        self.ha = HomeAgent(
            HomeAgentSettings(links=(HomeLink("home0", HA, (PREFIX,)),), dad=False,
                              authentication=False),
            keys=lambda nai: None,
        )  # fmt: skip
        self.cn = Correspondent(
            settings=CorrespondentSettings(route_optimization=cn_ro),
            random_bytes=ref.Randomness(3),
            limiter=ReplyLimiter(1000, 10000),
            test_limiter=ReplyLimiter(1000, 10000),
        )
        self.log: list[wire.Packet] = []
        self.mn_actions: list = []
        self.tokens: dict[str, bytes] = {}
        self.checked = 0

    def check_bu(self, packet: wire.Packet) -> None:
        bu = packet.payload
        if packet.dst != CN or not isinstance(bu, wire.BindingUpdate):
            return
        if bu.lifetime == 0:
            key, care_of = ref.kbm(self.tokens["home"]), HOA
        else:
            key, care_of = ref.kbm(self.tokens["home"], self.tokens["careof"]), packet.src
        assert ref.bad_ok(key, care_of, CN, packet.payload_bytes)
        self.checked += 1

    def deliver(self, actions: list, now: float, sender: str = "mn") -> None:
        queue = [(a, sender) for a in actions]
        while queue:
            action, who = queue.pop(0)
            if who == "mn":
                self.mn_actions.append(action)
            if not isinstance(action, act.SendPacket):
                continue
            packet = wire.parse_packet(action.data, check_checksum=True)
            self.log.append(packet)
            if isinstance(packet.payload, wire.HomeTest):
                self.tokens["home"] = packet.payload.token
            elif isinstance(packet.payload, wire.CareofTest):
                self.tokens["careof"] = packet.payload.token
            if who == "mn":
                self.check_bu(packet)
                target = self.ha if packet.dst == HA else self.cn
                queue += [
                    (a, "ha" if target is self.ha else "cn") for a in target.receive(packet, now)
                ]
            else:
                queue += [(a, "mn") for a in self.mn.receive(packet, now, "eth0")]

    def at(self, coa: IPv6Address, net: IPv6Network, now: float) -> None:
        """The node moves to the link of ``coa`` (carrier down and up), is addressed there
        and hears its router."""
        self.deliver(self.mn.link_changed("eth0", False, now), now)
        self.deliver(self.mn.link_changed("eth0", True, now), now)
        ra = wire.RouterAdvertisement(
            64, 0, 1800, 0, 0, [wire.PrefixInformation(64, 0xC0, 86400, 14400, net.network_address)]
        )
        router = IPv6Address("fe80::1")
        data = wire.build_packet(router, IPv6Address("ff02::1"), ra, hop_limit=255)
        self.deliver(self.mn.receive(wire.parse_packet(data), now, "eth0"), now)
        self.deliver(self.mn.addresses_changed("eth0", [wire_interface(coa)], now), now)

    def take(self) -> list[str]:
        log, self.log = self.log, []
        return [type(p.payload).__name__ for p in log]

    def installed(self) -> list:
        return [
            a
            for a in self.mn_actions
            if isinstance(a, act.InstallCorrespondentBinding | act.RemoveCorrespondentBinding)
        ]


def wire_interface(address: IPv6Address):
    from ipaddress import IPv6Interface

    return IPv6Interface(f"{address}/64")


def test_home_registration_then_return_routability_then_a_correspondent_binding() -> None:
    net = Net()
    net.at(COA, FOREIGN1, T0)
    kinds = net.take()
    assert kinds[:2] == ["BindingUpdate", "BindingAck"]  # the home registration first
    assert kinds[2:] == ["HomeTestInit", "CareofTestInit", "HomeTest", "CareofTest",
                         "BindingUpdate", "BindingAck"]  # fmt: skip
    assert net.checked == 1
    assert net.installed() == [act.InstallCorrespondentBinding(HOA, COA, CN)]
    assert net.cn.bindings[(HOA, CN)].care_of_address == COA
    [entry] = net.mn.correspondent_entries()
    assert entry["state"] == "bound" and entry["care_of_address"] == str(COA)


def test_handover_runs_only_the_care_of_test_again() -> None:
    net = Net()
    net.at(COA, FOREIGN1, T0)
    net.take()
    net.at(COA2, FOREIGN2, T0 + 5)
    kinds = net.take()
    assert "HomeTestInit" not in kinds, kinds  # the home token is still fresh
    assert kinds.count("CareofTestInit") == 1
    assert net.installed()[-1] == act.InstallCorrespondentBinding(HOA, COA2, CN)
    assert net.cn.bindings[(HOA, CN)].care_of_address == COA2
    assert net.checked == 2


def test_return_home_deregisters_with_the_correspondent() -> None:
    net = Net()
    net.at(COA, FOREIGN1, T0)
    net.take()
    net.at(HOA, PREFIX, T0 + 5)
    to_cn = [p for p in net.log if p.dst == CN and isinstance(p.payload, wire.BindingUpdate)]
    kinds = net.take()
    assert "CareofTestInit" not in kinds
    assert [(p.src, p.payload.lifetime, p.home_address_option) for p in to_cn] == [(HOA, 0, None)]
    assert net.installed()[-1] == act.RemoveCorrespondentBinding(HOA, CN)
    assert (HOA, CN) not in net.cn.bindings
    assert net.checked == 2  # the deregistration's BAD verified with the home token alone
    assert net.mn.correspondent_entries()[0]["state"] == "idle"


def test_correspondent_without_route_optimization_keeps_the_tunnel() -> None:
    net = Net(cn_ro=False)
    net.at(COA, FOREIGN1, T0)
    kinds = net.take()
    assert "BindingError" in kinds
    assert kinds.count("BindingUpdate") == 1  # only the home registration
    assert net.installed() == []
    [entry] = net.mn.correspondent_entries()
    assert entry["state"] == "held"


def test_no_route_optimization_list_and_switch_off() -> None:
    net = Net(no_route_optimization=(IPv6Network("2001:db8:4::/64"),))
    net.at(COA, FOREIGN1, T0)
    assert net.take() == ["BindingUpdate", "BindingAck"]
    assert net.mn.correspondent_entries() == []
    off = Net(route_optimization=False)
    off.at(COA, FOREIGN1, T0)
    assert off.take() == ["BindingUpdate", "BindingAck"]


def test_traffic_seen_through_the_tunnel_starts_route_optimization() -> None:
    net = Net(correspondents=())
    net.at(COA, FOREIGN1, T0)
    assert net.take() == ["BindingUpdate", "BindingAck"]
    net.deliver(net.mn.note_traffic(HOA, OTHER_CN, T0 + 1), T0 + 1)
    # (the harness's correspondent core answers for any address)
    assert net.take() == ["HomeTestInit", "CareofTestInit", "HomeTest", "CareofTest",
                          "BindingUpdate", "BindingAck"]  # fmt: skip
    assert net.installed() == [act.InstallCorrespondentBinding(HOA, COA, OTHER_CN)]
    assert net.mn.note_traffic(HOA, OTHER_CN, T0 + 1.5) == []  # already running
    assert net.mn.note_traffic(HOA, HA, T0 + 2) == []  # never the home agent


def test_traffic_picks_no_correspondent_when_switched_off_or_full() -> None:
    off = Net(correspondents=(), ro_from_traffic=False)
    off.at(COA, FOREIGN1, T0)
    off.take()
    assert off.mn.note_traffic(HOA, OTHER_CN, T0 + 1) == []
    assert off.mn.correspondents == {}
    full = Net(max_correspondents=1)  # CN is listed: it takes the one place
    full.at(COA, FOREIGN1, T0)
    full.take()
    assert full.mn.note_traffic(HOA, OTHER_CN, T0 + 1) == []
    assert list(full.mn.correspondents) == [(HOA, CN)]
    assert full.mn.counters.snapshot().get("ro_correspondents_full") == 1


def _run_timers(net: Net, until: float) -> float:
    """Fire the node's timers up to ``until``; the time of the last one fired."""
    now = 0.0
    while (due := net.mn.get_timer()) is not None and due <= until:
        now = due
        net.deliver(net.mn.handle_timer(now), now)
    return now


def test_a_correspondent_from_traffic_that_goes_quiet_returns_to_the_tunnel() -> None:
    net = Net(correspondents=(), lifetime=3600.0)
    net.at(COA, FOREIGN1, T0)
    net.deliver(net.mn.note_traffic(HOA, OTHER_CN, T0 + 1), T0 + 1)
    net.take()
    granted = net.cn.bindings[(HOA, OTHER_CN)].expires - (T0 + 1)
    assert 0 < granted <= 420  # MAX_RR_BINDING_LIFETIME
    # No more traffic: the refresh point passes without a new return routability ...
    _run_timers(net, T0 + 1 + granted - 1)
    assert "HomeTestInit" not in net.take()
    assert net.installed() == [act.InstallCorrespondentBinding(HOA, COA, OTHER_CN)]
    # ... and at expiry the data path entry goes and the peer is forgotten.
    _run_timers(net, T0 + 2 + granted)
    assert net.installed()[-1] == act.RemoveCorrespondentBinding(HOA, OTHER_CN)
    assert net.mn.correspondents == {}
    assert "HomeTestInit" not in net.take()


def test_traffic_again_before_expiry_refreshes_the_binding() -> None:
    net = Net(correspondents=(), lifetime=3600.0)
    net.at(COA, FOREIGN1, T0)
    net.deliver(net.mn.note_traffic(HOA, OTHER_CN, T0 + 1), T0 + 1)
    net.take()
    expires = net.cn.bindings[(HOA, OTHER_CN)].expires
    refresh_passed = _run_timers(net, expires - 20)  # quiet through the refresh point
    assert refresh_passed > 0 and net.take() == []
    now = expires - 10
    net.deliver(net.mn.note_traffic(HOA, OTHER_CN, now), now)  # traffic again
    _run_timers(net, now)
    assert net.take() == ["HomeTestInit", "CareofTestInit", "HomeTest", "CareofTest",
                          "BindingUpdate", "BindingAck"]  # fmt: skip
    assert net.cn.bindings[(HOA, OTHER_CN)].expires > expires
    assert (HOA, OTHER_CN) in net.mn.correspondents


def test_listed_correspondents_are_refreshed_without_traffic() -> None:
    net = Net(lifetime=3600.0)
    net.at(COA, FOREIGN1, T0)
    net.take()
    expires = net.cn.bindings[(HOA, CN)].expires
    _run_timers(net, expires + 1)
    assert "BindingUpdate" in net.take()
    assert net.cn.bindings[(HOA, CN)].expires > expires


def test_stop_removes_every_correspondent_binding() -> None:
    net = Net()
    net.at(COA, FOREIGN1, T0)
    out = net.mn.stop()
    assert act.RemoveCorrespondentBinding(HOA, CN) in out
    assert net.mn.correspondents == {}


class RefusingNet(Net):
    """The correspondent answers the first Binding Update with ``status`` (the harness
    builds that BA: the correspondent core would not expire a nonce this early)."""

    def __init__(self, status: int) -> None:
        super().__init__()
        self.status: int | None = status
        real = self.cn.receive

        def receive(packet: wire.Packet, now: float) -> list:
            bu = packet.payload
            if self.status is None or not isinstance(bu, wire.BindingUpdate):
                return real(packet, now)
            ba = wire.BindingAck(self.status, 0, bu.sequence, 0)
            self.status = None
            data = wire.build_packet(CN, packet.src, ba, routing_home_address=HOA)
            return [act.SendPacket(data, packet.src)]

        self.cn.receive = receive  # type: ignore[method-assign]


@pytest.mark.parametrize(
    ("status", "again"),
    [
        (wire.BAStatus.EXPIRED_HOME_NONCE_INDEX, ["HomeTestInit"]),
        (wire.BAStatus.EXPIRED_COA_NONCE_INDEX, ["CareofTestInit"]),
        (wire.BAStatus.EXPIRED_NONCES, ["HomeTestInit", "CareofTestInit"]),
    ],
)
def test_expired_nonce_ba_restarts_only_the_tests_it_names(status: int, again: list) -> None:
    net = RefusingNet(int(status))
    net.at(COA, FOREIGN1, T0)
    kinds = net.take()
    acks = [i for i, k in enumerate(kinds) if k == "BindingAck"]
    assert len(acks) == 3, repr(kinds)  # home registration, the refusal, the binding
    between = kinds[acks[1] + 1 : acks[2]]
    assert [k for k in between if k.endswith("Init")] == again, kinds
    assert between[-1] == "BindingUpdate"
    assert net.installed() == [act.InstallCorrespondentBinding(HOA, COA, CN)]
    assert net.cn.bindings[(HOA, CN)].care_of_address == COA


def test_route_optimization_needs_a_randomness_source_from_the_io_layer() -> None:
    import pytest

    settings = MobileNodeSettings(
        home=(HomeAddressSpec(HOA, PREFIX, "eth0", HA),),
        interfaces=("eth0",),
        route_optimization=True,
        correspondents=(CN,),
    )
    with pytest.raises(ValueError, match="random_bytes"):
        MobileNode(settings)
    plain = MobileNode(MobileNodeSettings(home=settings.home, interfaces=("eth0",)))
    with pytest.raises(ValueError, match="random_bytes"):
        plain.reconfigure(settings, T0)
