"""Mobile node side of route optimisation, alone and against the correspondent core.

Packets between the two cores go through the wire layer (encoded by the sender, parsed
with checksum checks for the receiver). A HoTI or HoT crosses the home agent's tunnel
unchanged, so the harness hands it over as it is. Authenticators and Kbm are checked with
rr_reference (hashlib/hmac from the RFC formulas), never with the core's own functions.
"""

from __future__ import annotations

from ipaddress import IPv6Address

import rr_reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from mip6agent import wire
from mip6agent.core import actions as act
from mip6agent.core.correspondent import Correspondent, CorrespondentSettings
from mip6agent.core.correspondent_registration import (
    CorrespondentRegistration,
    RouteOptimizationSettings,
)
from mip6agent.core.ratelimit import ReplyLimiter
from mip6agent.wire.constants import BAStatus, BEStatus
from rr_reference import CN, COA, COA2, HOA, T0, of_type, sent


def registration(**settings: object) -> CorrespondentRegistration:
    return CorrespondentRegistration(
        HOA,
        CN,
        ref.Randomness(7),
        RouteOptimizationSettings(**settings),  # type: ignore[arg-type]
    )


def kinds(packets: list[wire.Packet]) -> list[str]:
    return [type(p.payload).__name__ for p in packets]


class Exchange:
    """A mobile node's registration and a correspondent core, wired through the wire layer."""

    def __init__(self, **settings: object) -> None:
        self.mn = registration(**settings)
        self.cn = self.new_cn()
        self.log: list[wire.Packet] = []  # every packet that crossed, in order
        self.mn_actions: list = []
        self.cn_actions: list = []
        self.drop = lambda packet: False
        self.tokens: dict[str, bytes] = {}  # the last HoT and CoT tokens the node got
        self.checked = 0

    def check_bu(self, packet: wire.Packet) -> None:
        """Every BU the node sends verifies, by the RFC formula, under the tokens it got."""
        bu = packet.payload
        if not isinstance(bu, wire.BindingUpdate):
            return
        if bu.lifetime == 0:
            key, care_of = ref.kbm(self.tokens["home"]), HOA
        else:
            key, care_of = ref.kbm(self.tokens["home"], self.tokens["careof"]), packet.src
        assert ref.bad_ok(key, care_of, CN, packet.payload_bytes)
        self.checked += 1

    def to_mn(self, packet: wire.Packet, now: float) -> list:
        if not self.mn.wants(packet):
            return []
        if isinstance(packet.payload, wire.HomeTest):
            self.tokens["home"] = packet.payload.token
        elif isinstance(packet.payload, wire.CareofTest):
            self.tokens["careof"] = packet.payload.token
        return self.mn.receive(packet, now)

    @staticmethod
    def new_cn(seed: int = 3) -> Correspondent:
        return Correspondent(
            settings=CorrespondentSettings(route_optimization=True),
            random_bytes=ref.Randomness(seed),
            limiter=ReplyLimiter(1000, 10000),
            test_limiter=ReplyLimiter(1000, 10000),
        )

    def deliver(self, actions: list, now: float) -> None:
        """Carry packets back and forth until nothing is left in flight."""
        queue = [(a, "mn") for a in actions]
        while queue:
            action, sender = queue.pop(0)
            (self.mn_actions if sender == "mn" else self.cn_actions).append(action)
            if not isinstance(action, act.SendPacket):
                continue
            packet = wire.parse_packet(action.data, check_checksum=True)
            self.log.append(packet)
            if sender == "mn":
                self.check_bu(packet)
            if self.drop(packet):
                continue
            if sender == "mn":
                queue += [(a, "cn") for a in self.cn.receive(packet, now)]
            else:
                queue += [(a, "mn") for a in self.to_mn(packet, now)]

    def run_timers(self, until: float) -> None:
        while True:
            deadlines = [t for t in (self.mn.get_timer(), self.cn.get_timer()) if t is not None]
            if not deadlines or min(deadlines) > until:
                return
            now = min(deadlines)
            self.deliver(self.mn.handle_timer(now), now)
            for action in self.cn.handle_timer(now):
                self.deliver_from_cn(action, now)

    def deliver_from_cn(self, action: object, now: float) -> None:
        self.cn_actions.append(action)
        if isinstance(action, act.SendPacket):
            packet = wire.parse_packet(action.data, check_checksum=True)
            self.log.append(packet)
            if not self.drop(packet):
                self.deliver(self.to_mn(packet, now), now)

    def take_log(self) -> list[wire.Packet]:
        log, self.log = self.log, []
        return log


def test_full_exchange_through_both_cores() -> None:
    net = Exchange()
    net.deliver(net.mn.away(COA, T0), T0)
    hoti, coti, hot, cot, bu, ba = net.take_log()
    assert kinds([hoti, coti, hot, cot, bu, ba]) == [
        "HomeTestInit",
        "CareofTestInit",
        "HomeTest",
        "CareofTest",
        "BindingUpdate",
        "BindingAck",
    ]
    # HoTI from the home address (the tunnel carries it), CoTI from the CoA without HAO.
    assert (hoti.src, hoti.dst, hoti.home_address_option) == (HOA, CN, None)
    assert (coti.src, coti.dst, coti.home_address_option) == (COA, CN, None)
    assert (hot.dst, cot.dst) == (HOA, COA)
    assert hot.payload.cookie == hoti.payload.cookie and cot.payload.cookie == coti.payload.cookie
    # The BU: from the CoA with HAO, Nonce Indices, and an authenticator the RFC agrees with.
    assert (bu.src, bu.home_address_option) == (COA, HOA)
    [indices] = [o for o in bu.payload.options if isinstance(o, wire.NonceIndices)]
    assert (indices.home_nonce_index, indices.careof_nonce_index) == (
        hot.payload.nonce_index,
        cot.payload.nonce_index,
    )
    key = ref.kbm(hot.payload.token, cot.payload.token)
    assert ref.bad_ok(key, COA, CN, bu.payload_bytes)
    assert bu.payload.ack and not bu.payload.home_registration and bu.payload.lifetime == 105
    assert ba.payload.status == 0 and ref.bad_ok(key, COA, CN, ba.payload_bytes)
    assert net.mn.state == "bound" and net.cn.bindings[(HOA, CN)].care_of_address == COA
    install = act.InstallCorrespondentBinding(HOA, COA, CN)
    assert install in net.mn_actions and install in net.cn_actions
    assert net.mn.get_timer() == T0 + 0.8 * 420


def test_handover_needs_only_a_new_care_of_test() -> None:
    net = Exchange()
    net.deliver(net.mn.away(COA, T0), T0)
    net.take_log()
    net.deliver(net.mn.away(COA2, T0 + 50), T0 + 50)
    assert kinds(net.take_log()) == ["CareofTestInit", "CareofTest", "BindingUpdate", "BindingAck"]
    assert net.cn.bindings[(HOA, CN)].care_of_address == COA2
    assert act.RemoveCorrespondentBinding(HOA, CN) in net.mn_actions  # tunnel meanwhile
    assert net.mn_actions[-2:][0] == act.InstallCorrespondentBinding(HOA, COA2, CN)


def test_handover_after_the_token_lifetime_needs_both_tests() -> None:
    net = Exchange()
    net.deliver(net.mn.away(COA, T0), T0)
    net.take_log()
    net.deliver(net.mn.away(COA2, T0 + 211), T0 + 211)
    assert kinds(net.take_log())[:2] == ["HomeTestInit", "CareofTestInit"]
    assert net.mn.state == "bound"


def test_same_care_of_address_again_sends_nothing() -> None:
    net = Exchange()
    net.deliver(net.mn.away(COA, T0), T0)
    assert net.mn.away(COA, T0 + 1) == []


def test_return_home_deregisters_with_the_home_token_only() -> None:
    net = Exchange()
    net.deliver(net.mn.away(COA, T0), T0)
    hot = net.take_log()[2]
    net.deliver(net.mn.home(T0 + 20), T0 + 20)  # home token still fresh: no HoTI
    [bu, ba] = net.take_log()
    assert (bu.src, bu.home_address_option, bu.payload.lifetime) == (HOA, None, 0)
    key = ref.kbm(hot.payload.token)  # SHA1(home keygen token)
    assert ref.bad_ok(key, HOA, CN, bu.payload_bytes)  # care-of address = home address
    assert ba.payload.status == 0 and ba.dst == HOA and ba.routing_header_type2 is None
    assert net.cn.bindings == {} and net.mn.state == "idle" and net.mn.get_timer() is None
    assert act.RemoveCorrespondentBinding(HOA, CN) in net.mn_actions
    assert act.RemoveCorrespondentBinding(HOA, CN) in net.cn_actions


def test_return_home_later_runs_a_home_test_only() -> None:
    net = Exchange()
    net.deliver(net.mn.away(COA, T0), T0)
    net.take_log()
    net.deliver(net.mn.home(T0 + 300), T0 + 300)
    assert kinds(net.take_log()) == ["HomeTestInit", "HomeTest", "BindingUpdate", "BindingAck"]
    assert net.cn.bindings == {}


def test_home_without_a_registration_is_quiet() -> None:
    mn = registration()
    assert mn.home(T0) == [] and mn.state == "idle"


def test_test_inits_back_off_then_hold() -> None:
    mn = registration()
    first = sent(mn.away(COA, T0))
    cookies = [p.payload.cookie for p in first]
    times, now = [], T0
    while mn.state == "testing":
        now = mn.get_timer()
        again = sent(mn.handle_timer(now))
        if again:
            assert [p.payload.cookie for p in again] == cookies  # same request, same cookie
        times.append(now - T0)
    assert times == [1, 3, 7, 15, 31, 63]  # 1, 2, 4, 8, 16, 32 s apart; then it gives up
    assert mn.state == "held" and mn.get_timer() == now + 60
    assert mn.counters["rr_failed"] == 1
    # The hold over: it tries again from the start.
    assert kinds(sent(mn.handle_timer(now + 60))) == ["HomeTestInit", "CareofTestInit"]


def test_binding_update_is_retransmitted_with_new_sequence_numbers() -> None:
    net = Exchange()
    net.drop = lambda p: isinstance(p.payload, wire.BindingAck)
    net.deliver(net.mn.away(COA, T0), T0)
    first = net.take_log()[4].payload.sequence
    net.drop = lambda p: False
    net.run_timers(T0 + 1)
    bu, ba = net.take_log()
    assert bu.payload.sequence == first + 1 and ba.payload.status == 0
    assert net.mn.state == "bound"


def test_correspondent_restart_is_recovered_through_expired_nonces() -> None:
    net = Exchange()
    net.deliver(net.mn.away(COA, T0), T0)
    net.take_log()
    net.cn = Exchange.new_cn(seed=4)  # restarted: new Kcn, new nonce indices, no bindings
    net.deliver(net.mn.away(COA2, T0 + 30), T0 + 30)
    log = net.take_log()
    statuses = [p.payload.status for p in log if isinstance(p.payload, wire.BindingAck)]
    assert statuses[0] in (BAStatus.EXPIRED_HOME_NONCE_INDEX, BAStatus.EXPIRED_NONCES)
    assert statuses[-1] == 0 and net.mn.state == "bound"
    assert net.cn.bindings[(HOA, CN)].care_of_address == COA2


def cn_packet(message: wire.MobilityMessage, to_home: bool = False) -> wire.Packet:
    if to_home:
        return wire.parse_packet(wire.build_packet(CN, HOA, message))
    return wire.parse_packet(wire.build_packet(CN, COA, message, routing_home_address=HOA))


def bound_by_hand() -> tuple[CorrespondentRegistration, wire.HomeTest, wire.CareofTest]:
    """A registration that got its tokens from a hand-made correspondent and sent its BU."""
    mn = registration()
    hoti, coti = sent(mn.away(COA, T0))
    hot = wire.HomeTest(5, hoti.payload.cookie, b"h" * 8)
    cot = wire.CareofTest(6, coti.payload.cookie, b"c" * 8)
    assert sent(mn.receive(cn_packet(hot, to_home=True), T0)) == []
    [bu] = sent(mn.receive(cn_packet(cot), T0))
    assert ref.bad_ok(ref.kbm(hot.token, cot.token), COA, CN, bu.payload_bytes)
    return mn, hot, cot


def test_wrong_cookie_or_sender_is_not_ours() -> None:
    mn = registration()
    hoti, _ = sent(mn.away(COA, T0))
    assert not mn.wants(cn_packet(wire.HomeTest(1, b"x" * 8, bytes(8)), to_home=True))
    stranger = wire.build_packet(COA2, HOA, wire.HomeTest(1, hoti.payload.cookie, bytes(8)))
    assert not mn.wants(wire.parse_packet(stranger))
    assert mn.receive(wire.parse_packet(stranger), T0) == []


def test_ba_without_a_valid_authenticator_is_ignored() -> None:
    mn, hot, cot = bound_by_hand()
    forged = wire.BindingAck(0, 0, mn.sequence, 105, [wire.BindingAuthorizationData(bytes(12))])
    out = mn.receive(cn_packet(forged), T0)
    assert mn.state == "updating" and mn.counters["rr_auth_failed"] == 1
    assert of_type(out, act.InstallCorrespondentBinding) == []
    plain = wire.BindingAck(0, 0, mn.sequence, 105)
    mn.receive(cn_packet(plain), T0)
    assert mn.state == "updating"
    good = ref.signed_ba(plain, ref.kbm(hot.token, cot.token), COA, CN)
    assert of_type(mn.receive(cn_packet(good), T0), act.InstallCorrespondentBinding)
    assert mn.state == "bound" and mn.expires == T0 + 420


def test_ba_with_another_sequence_number_is_ignored() -> None:
    mn, hot, cot = bound_by_hand()
    ba = ref.signed_ba(
        wire.BindingAck(0, 0, mn.sequence + 1, 105), ref.kbm(hot.token, cot.token), COA, CN
    )
    assert mn.receive(cn_packet(ba), T0) == [] and mn.state == "updating"


def test_status_135_steps_past_the_correspondents_number() -> None:
    mn, hot, cot = bound_by_hand()
    ba = ref.signed_ba(wire.BindingAck(135, 0, 500, 0), ref.kbm(hot.token, cot.token), COA, CN)
    [bu] = sent(mn.receive(cn_packet(ba), T0))
    assert bu.payload.sequence == 501


def test_expired_nonce_statuses_restart_the_right_tests() -> None:
    for status, expected in (
        (BAStatus.EXPIRED_HOME_NONCE_INDEX, ["HomeTestInit"]),
        (BAStatus.EXPIRED_COA_NONCE_INDEX, ["CareofTestInit"]),
        (BAStatus.EXPIRED_NONCES, ["HomeTestInit", "CareofTestInit"]),
    ):
        mn, _, _ = bound_by_hand()
        out = sent(mn.receive(cn_packet(wire.BindingAck(status, 0, mn.sequence, 0)), T0))
        assert kinds(out) == expected and mn.state == "testing"


def test_other_refusals_hold() -> None:
    mn, hot, cot = bound_by_hand()
    ba = ref.signed_ba(
        wire.BindingAck(129, 0, mn.sequence, 0), ref.kbm(hot.token, cot.token), COA, CN
    )
    mn.receive(cn_packet(ba), T0)
    assert mn.state == "held" and "129" in mn.reason


def test_binding_error_2_stops_trying_for_a_while() -> None:
    net = Exchange()
    net.cn = Correspondent(random_bytes=ref.Randomness())  # route optimisation off
    net.deliver(net.mn.away(COA, T0), T0)
    assert net.mn.state == "held" and net.mn.get_timer() == T0 + 600
    assert [p.payload.status for p in net.take_log()[2:]] == [2, 2]  # to the HoTI and CoTI
    assert net.mn.away(COA2, T0 + 5) == []  # a handover meanwhile does not retry
    net.run_timers(T0 + 599)
    assert [p for p in net.take_log() if p.src == HOA or p.src == COA2] == []
    net.run_timers(T0 + 600)
    assert kinds(net.take_log())[:2] == ["HomeTestInit", "CareofTestInit"]


def test_binding_error_1_runs_return_routability_again() -> None:
    net = Exchange()
    net.deliver(net.mn.away(COA, T0), T0)
    net.take_log()
    net.cn.bindings.clear()  # the correspondent forgot us
    echo = wire.build_packet(COA, CN, wire.UnknownICMPv6(128, 0, bytes(4)), home_address=HOA)
    [be_action] = net.cn.receive(wire.parse_packet(echo), T0 + 10)
    [be] = sent([be_action])
    assert be.payload.status == BEStatus.UNKNOWN_BINDING_FOR_HAO
    net.deliver(net.mn.receive(be, T0 + 10), T0 + 10)
    assert act.RemoveCorrespondentBinding(HOA, CN) in net.mn_actions
    assert kinds(net.take_log())[:2] == ["HomeTestInit", "CareofTestInit"]
    assert net.mn.state == "bound" and (HOA, CN) in net.cn.bindings


def test_binding_refresh_request_runs_a_new_return_routability() -> None:
    net = Exchange()
    net.cn.settings = CorrespondentSettings(True, binding_refresh_request_before=60)
    net.mn = registration(refresh_fraction=0.99)  # so the BRR comes first
    net.deliver(net.mn.away(COA, T0), T0)
    net.take_log()
    net.cn.note_use(HOA, T0 + 100)
    net.run_timers(T0 + 360)
    log = net.take_log()
    assert kinds(log)[0] == "BindingRefreshRequest"
    assert kinds(log)[1:3] == ["HomeTestInit", "CareofTestInit"]
    assert net.cn.bindings[(HOA, CN)].expires == T0 + 360 + 420


def test_refresh_before_the_lifetime_runs_out() -> None:
    net = Exchange()
    net.deliver(net.mn.away(COA, T0), T0)
    net.take_log()
    net.run_timers(T0 + 336)
    assert kinds(net.take_log())[:2] == ["HomeTestInit", "CareofTestInit"]  # tokens stale
    assert net.mn.expires == T0 + 336 + 420 and net.cn.bindings[(HOA, CN)].expires == (
        T0 + 336 + 420
    )


def test_lifetime_is_capped_by_the_home_registration() -> None:
    net = Exchange(lifetime=1000)
    net.deliver(net.mn.away(COA, T0, home_expires=T0 + 100), T0)
    bu = net.take_log()[4]
    assert bu.payload.lifetime == 25  # 100 s
    net = Exchange(lifetime=1000)
    net.deliver(net.mn.away(COA, T0), T0)
    assert net.take_log()[4].payload.lifetime == 105  # 420 s, MAX_RR_BINDING_LIFETIME


def test_without_the_a_bit_the_binding_counts_once_sent() -> None:
    net = Exchange(ack=False)
    net.deliver(net.mn.away(COA, T0), T0)
    assert kinds(net.take_log())[-1] == "BindingUpdate"
    assert net.mn.state == "bound" and (HOA, CN) in net.cn.bindings


def test_without_the_a_bit_deregistration_is_done_once_sent() -> None:
    net = Exchange(ack=False)
    net.deliver(net.mn.away(COA, T0), T0)
    net.deliver(net.mn.home(T0 + 10), T0 + 10)
    assert kinds(net.take_log())[-1] == "BindingUpdate"
    assert net.mn.state == "idle" and net.mn.get_timer() is None and net.cn.bindings == {}


def test_leaving_home_during_a_hold_registers_afterwards() -> None:
    """Home, then away again while held: the hold's end registers, not deregisters."""
    net = Exchange()
    net.deliver(net.mn.away(COA, T0), T0)
    net.drop = lambda p: True  # the correspondent is unreachable for a while
    net.deliver(net.mn.home(T0 + 300), T0 + 300)  # HoTI for the deregistration, unanswered
    net.run_timers(T0 + 400)
    assert net.mn.state == "held"
    assert net.mn.away(COA2, T0 + 401) == []
    net.drop = lambda p: False
    net.take_log()
    net.run_timers(T0 + 500)
    bus = [p for p in net.take_log() if isinstance(p.payload, wire.BindingUpdate)]
    assert bus and bus[-1].payload.lifetime > 0 and bus[-1].home_address_option == HOA
    assert net.mn.state == "bound" and net.cn.bindings[(HOA, CN)].care_of_address == COA2


def test_stop_goes_back_to_the_tunnel_quietly() -> None:
    net = Exchange()
    net.deliver(net.mn.away(COA, T0), T0)
    assert net.mn.stop() == [act.RemoveCorrespondentBinding(HOA, CN)]
    assert net.mn.state == "idle" and net.mn.get_timer() is None
    assert net.mn.to_dict()["state"] == "idle"


moves = st.lists(
    st.tuples(
        st.sampled_from([COA, COA2, IPv6Address("2001:db8:5::1"), None]),  # None: home
        st.floats(0.5, 400),
        st.integers(0, 3),  # how many of the next packets are lost
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(moves)
def test_random_moves_with_loss_converge(steps: list) -> None:
    """Wherever the node goes and whatever is lost, once packets flow again the two agree."""
    net = Exchange()
    now = T0
    for care_of, wait, lost in steps:
        budget = [lost]

        def drop(packet: wire.Packet, budget: list = budget) -> bool:
            if budget[0] > 0:
                budget[0] -= 1
                return True
            return False

        net.drop = drop
        events = net.mn.away(care_of, now) if care_of is not None else net.mn.home(now)
        net.deliver(events, now)
        net.run_timers(now + wait)
        now += wait
    net.drop = lambda packet: False
    net.run_timers(now + 200)  # retransmissions (at most 63 s) and any hold (60 s) are over
    assert net.checked > 0 or net.mn.state == "idle"
    binding = net.cn.bindings.get((HOA, CN))
    if net.mn.care_of_address is None:
        assert net.mn.state == "idle" and binding is None
    else:
        assert net.mn.state == "bound" and binding is not None
        assert binding.care_of_address == net.mn.care_of_address == net.mn.installed
