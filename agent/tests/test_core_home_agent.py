"""The home agent core, driven with plain values and a fake clock."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mip6agent import wire
from mip6agent.core import actions as act
from mip6agent.core.auth import MobilityKey, ntp_timestamp, protect, unix_seconds, verify
from mip6agent.core.home_agent import HomeAgent, HomeAgentSettings, HomeLink
from mip6agent.core.seqno import seq_add
from mip6agent.wire.constants import BU_FLAG_A, BU_FLAG_H, BAStatus, BEStatus

HA = IPv6Address("2001:db8:1::1")
HA2 = IPv6Address("2001:db8:1::2")
HOA = IPv6Address("2001:db8:1::100")
COA = IPv6Address("2001:db8:2::100")
COA2 = IPv6Address("2001:db8:3::100")
PREFIX = IPv6Network("2001:db8:1::/64")
NAI = "mn1@example.net"
KEY = MobilityKey(1000, bytes(range(20)))
T0 = 1_800_000_000.0
HOME = HomeAgentSettings(links=(HomeLink("home0", HA, (PREFIX,)),), dad=False)


def agent(**overrides) -> HomeAgent:
    settings = HomeAgentSettings(**{**_fields(HOME), **overrides})
    return HomeAgent(settings, keys={NAI: KEY}.get)


def _fields(settings: HomeAgentSettings) -> dict:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}


def bu_packet(
    seq: int,
    lifetime_s: int = 400,
    *,
    coa: IPv6Address = COA,
    hoa: IPv6Address = HOA,
    now: float = T0,
    key: MobilityKey | None = KEY,
    nai: str = NAI,
    flags: int = BU_FLAG_A | BU_FLAG_H,
    timestamp: int | None = None,
) -> wire.Packet:
    bu = wire.BindingUpdate(seq, flags, lifetime_s // 4)
    if key is not None:
        bu = protect(bu, nai.encode(), key, timestamp or ntp_timestamp(now), coa, hoa)
    at_home = coa == hoa
    data = wire.build_packet(coa, HA, bu, home_address=None if at_home else hoa)
    return wire.parse_packet(data)


def sent(actions: list) -> list[wire.Packet]:
    return [wire.parse_packet(a.data) for a in actions if isinstance(a, act.SendPacket)]


def the_ba(actions: list) -> wire.BindingAck:
    packets = [p for p in sent(actions) if isinstance(p.payload, wire.BindingAck)]
    assert len(packets) == 1, actions
    packet = packets[0]
    assert packet.checksum_ok()
    return packet.payload


def test_registration_installs_binding_and_answers_with_protected_ba() -> None:
    ha = agent()
    out = ha.receive(bu_packet(10), T0)
    assert act.InstallBinding(HOA, COA, HA, "home0") in out
    assert act.AnnounceHomeAddress(HOA, "home0") in out
    [packet] = sent(out)
    assert packet.src == HA and packet.dst == COA
    assert packet.routing_header_type2.home_address == HOA
    ba = packet.payload
    assert (ba.status, ba.sequence, ba.lifetime_seconds) == (0, 10, 400)
    # The MN can verify the BA with the shared key, and the timestamp echoes the BU's.
    verdict = verify(packet.payload_bytes, ba, COA, HOA, {NAI: KEY}.get)
    assert verdict.status is None
    assert abs(unix_seconds(verdict.timestamp) - T0) < 1e-6
    assert ha.cache.get(HOA).care_of_address == COA


def test_ba_signed_with_wrong_key_does_not_verify_at_the_mn() -> None:
    ha = agent()
    [packet] = sent(ha.receive(bu_packet(1), T0))
    other = MobilityKey(1000, bytes(20))
    assert verify(packet.payload_bytes, packet.payload, COA, HOA, {NAI: other}.get).status == 146


def test_lifetime_is_capped_and_refresh_advice_sent() -> None:
    ha = agent(max_binding_lifetime=100, refresh_advice=60)
    ba = the_ba(ha.receive(bu_packet(1, lifetime_s=4000), T0))
    assert ba.lifetime_seconds == 100
    advice = [o for o in ba.options if isinstance(o, wire.BindingRefreshAdvice)]
    assert advice and advice[0].interval_seconds == 60


def test_handover_updates_route_without_reannouncing() -> None:
    ha = agent()
    ha.receive(bu_packet(1), T0)
    out = ha.receive(bu_packet(2, coa=COA2, now=T0 + 1), T0 + 1)
    assert act.InstallBinding(HOA, COA2, HA, "home0") in out
    assert not any(isinstance(a, act.AnnounceHomeAddress) for a in out)
    assert the_ba(out).status == 0


def test_refresh_with_same_coa_installs_nothing_new() -> None:
    ha = agent()
    ha.receive(bu_packet(1), T0)
    out = ha.receive(bu_packet(2, now=T0 + 100), T0 + 100)
    assert not any(isinstance(a, act.InstallBinding) for a in out)
    assert ha.cache.get(HOA).expires == T0 + 100 + 400


@pytest.mark.parametrize("stale", [5, 4, 5 - 0x8000 & 0xFFFF, 5 + 0x8000 & 0xFFFF])
def test_sequence_out_of_window_gets_135_with_last_accepted(stale: int) -> None:
    ha = agent()
    ha.receive(bu_packet(5), T0)
    out = ha.receive(bu_packet(stale, now=T0 + 1), T0 + 1)
    ba = the_ba(out)
    assert ba.status == BAStatus.SEQUENCE_OUT_OF_WINDOW
    assert ba.sequence == 5
    assert ha.counters["sequence_mismatch"] == 1


def test_sequence_wraps_modulo_2_16() -> None:
    ha = agent()
    ha.receive(bu_packet(0xFFFF), T0)
    assert the_ba(ha.receive(bu_packet(0, now=T0 + 1), T0 + 1)).status == 0


def test_wrong_key_gets_146_and_no_binding() -> None:
    ha = agent()
    out = ha.receive(bu_packet(1, key=MobilityKey(1000, b"x" * 20)), T0)
    assert the_ba(out).status == BAStatus.MIPV6_AUTH_FAIL
    assert len(ha.cache) == 0
    assert not any(isinstance(a, act.InstallBinding) for a in out)


def test_unknown_nai_and_wrong_spi_get_146() -> None:
    ha = agent()
    assert the_ba(ha.receive(bu_packet(1, nai="who@example.net"), T0)).status == 146
    assert the_ba(ha.receive(bu_packet(1, key=MobilityKey(7, KEY.key)), T0)).status == 146
    assert len(ha.cache) == 0


def test_missing_options_get_145_or_146() -> None:
    ha = agent()
    plain = bu_packet(1, key=None)
    assert the_ba(ha.receive(plain, T0)).status == BAStatus.MIPV6_AUTH_FAIL
    no_ident = wire.BindingUpdate(
        1, BU_FLAG_A | BU_FLAG_H, 100, [wire.MobileNodeIdentifier(NAI.encode())]
    )
    packet = wire.parse_packet(wire.build_packet(COA, HA, no_ident, home_address=HOA))
    assert the_ba(ha.receive(packet, T0)).status == BAStatus.MIPV6_MESG_ID_REQD
    assert len(ha.cache) == 0


def test_tampered_bu_fails_authentication() -> None:
    ha = agent()
    packet = bu_packet(1)
    packet.payload.lifetime += 1  # re-encode with a changed field but the old authenticator
    data = wire.build_packet(COA, HA, packet.payload, home_address=HOA)
    assert the_ba(ha.receive(wire.parse_packet(data), T0)).status == 146


def test_replay_and_clock_skew_get_144_with_our_clock() -> None:
    ha = agent()
    first = bu_packet(1)
    ha.receive(first, T0)
    replayed = ha.receive(bu_packet(2, timestamp=ntp_timestamp(T0)), T0 + 1)
    ba = the_ba(replayed)
    assert ba.status == BAStatus.MIPV6_ID_MISMATCH
    ident = next(o for o in ba.options if isinstance(o, wire.MessageIdentification))
    assert abs(unix_seconds(ident.timestamp) - (T0 + 1)) < 1e-3
    skewed = ha.receive(bu_packet(3, now=T0 + 100), T0 + 1)
    assert the_ba(skewed).status == BAStatus.MIPV6_ID_MISMATCH
    assert ha.cache.get(HOA).sequence == 1


def test_unauthenticated_mode_counts_unprotected_signaling() -> None:
    ha = agent(authentication=False)
    assert the_ba(ha.receive(bu_packet(1, key=None), T0)).status == 0
    assert ha.counters["unprotected_signaling"] == 1


def test_not_home_subnet_and_disabled() -> None:
    ha = agent()
    foreign = IPv6Address("2001:db8:9::1")
    assert the_ba(ha.receive(bu_packet(1, hoa=foreign), T0)).status == 132
    ha = agent(enabled=False)
    assert the_ba(ha.receive(bu_packet(1), T0)).status == 131


def test_home_address_owned_by_another_mn_gets_133() -> None:
    other = MobilityKey(2000, b"o" * 20)
    ha = HomeAgent(HOME, keys={NAI: KEY, "mn2@example.net": other}.get)
    ha.receive(bu_packet(1), T0)
    out = ha.receive(bu_packet(2, key=other, nai="mn2@example.net", now=T0 + 1), T0 + 1)
    assert the_ba(out).status == BAStatus.NOT_HOME_AGENT_FOR_MN
    assert ha.cache.get(HOA).nai == NAI


def test_correspondent_registration_is_refused() -> None:
    ha = agent()
    assert the_ba(ha.receive(bu_packet(1, flags=BU_FLAG_A), T0)).status == 129


def test_deregistration_from_home_link() -> None:
    ha = agent()
    ha.receive(bu_packet(1), T0)
    out = ha.receive(bu_packet(2, lifetime_s=0, coa=HOA, now=T0 + 5), T0 + 5)
    assert act.RemoveBinding(HOA) in out
    [packet] = sent(out)
    assert packet.dst == HOA and packet.routing_header_type2 is None
    assert packet.payload.status == 0 and packet.payload.lifetime == 0
    assert len(ha.cache) == 0


def test_deregistration_without_binding_gets_133() -> None:
    assert the_ba(agent().receive(bu_packet(1, lifetime_s=0), T0)).status == 133


def test_no_ack_requested_means_no_ba_on_success() -> None:
    ha = agent()
    out = ha.receive(bu_packet(1, flags=BU_FLAG_H), T0)
    assert sent(out) == [] and len(ha.cache) == 1


def test_binding_expires() -> None:
    ha = agent()
    ha.receive(bu_packet(1, lifetime_s=40), T0)
    assert ha.get_timer() == T0 + 40
    assert ha.handle_timer(T0 + 39) == []
    out = ha.handle_timer(T0 + 40)
    assert act.RemoveBinding(HOA) in out and len(ha.cache) == 0
    assert ha.get_timer() is None


def test_dad_success_registers_after_timeout() -> None:
    ha = agent(dad=True)
    out = ha.receive(bu_packet(1), T0)
    assert out == [act.StartDAD(HOA, "home0")]
    assert ha.get_timer() == T0 + 1.0
    # a retransmitted BU while DAD runs changes nothing yet
    assert ha.receive(bu_packet(2, now=T0 + 0.5), T0 + 0.5) == []
    done = ha.handle_timer(T0 + 1.0)
    assert act.StopDAD(HOA, "home0") in done
    assert act.InstallBinding(HOA, COA, HA, "home0") in done
    ba = the_ba(done)
    assert (ba.status, ba.sequence) == (0, 2)


def test_dad_conflict_answers_134_and_creates_nothing() -> None:
    ha = agent(dad=True)
    ha.receive(bu_packet(1), T0)
    defender = wire.build_packet(
        IPv6Address("fe80::99"),
        IPv6Address("ff02::1"),
        wire.NeighborAdvertisement(HOA, 0x20),
        hop_limit=255,
    )
    ha.receive(wire.parse_packet(defender), T0 + 0.2, interface="home0")
    done = ha.handle_timer(T0 + 1.0)
    assert the_ba(done).status == BAStatus.DAD_FAILED
    assert len(ha.cache) == 0
    assert not any(isinstance(a, act.InstallBinding) for a in done)


def test_address_resolution_ns_is_not_a_dad_conflict() -> None:
    ha = agent(dad=True)
    ha.receive(bu_packet(1), T0)
    resolution = wire.build_packet(
        IPv6Address("fe80::5"), HOA, wire.NeighborSolicitation(HOA), hop_limit=255
    )
    ha.receive(wire.parse_packet(resolution), T0 + 0.1)
    assert the_ba(ha.handle_timer(T0 + 1)).status == 0


def test_unknown_mh_type_gets_binding_error_2() -> None:
    ha = agent()
    data = wire.build_packet(COA, HA, wire.UnknownMessage(42, bytes(10)))
    [packet] = sent(ha.receive(wire.parse_packet(data), T0))
    assert isinstance(packet.payload, wire.BindingError)
    assert packet.payload.status == BEStatus.UNRECOGNIZED_MH_TYPE
    assert packet.dst == COA


def test_hao_without_binding_gets_binding_error_1() -> None:
    ha = agent()
    echo = wire.build_packet(COA, HA, wire.UnknownICMPv6(128, 0, bytes(4)), home_address=HOA)
    [packet] = sent(ha.receive(wire.parse_packet(echo), T0))
    assert packet.payload.status == BEStatus.UNKNOWN_BINDING_FOR_HAO
    assert packet.payload.home_address == HOA


def test_bad_checksum_is_dropped_and_counted() -> None:
    ha = agent()
    data = bytearray(
        wire.build_packet(COA, HA, wire.BindingUpdate(1, 0xC000, 10), home_address=HOA)
    )
    data[-12] ^= 0xFF
    assert len(sent(ha.receive(wire.parse_packet(bytes(data)), T0))) == 0
    assert ha.counters["bad_checksum"] == 1


def _ra_from(ha_address: IPv6Address, preference: int, lifetime: int = 1800) -> wire.Packet:
    ra = wire.RouterAdvertisement(
        64,
        0x20,
        1800,
        options=[
            wire.PrefixInformation(64, 0xE0, 86400, 14400, ha_address),
            wire.HomeAgentInformation(preference, lifetime),
        ],
    )
    data = wire.build_packet(IPv6Address("fe80::2"), IPv6Address("ff02::1"), ra, hop_limit=255)
    return wire.parse_packet(data)


def test_dhaad_reply_ranks_home_agents_by_preference() -> None:
    ha = agent(preference=5)
    ha.receive(_ra_from(HA2, 10), T0, interface="home0")
    anycast = IPv6Address("2001:db8:1::fdff:ffff:ffff:fffe")
    request = wire.build_packet(COA, anycast, wire.HAADRequest(77))
    [packet] = sent(ha.receive(wire.parse_packet(request), T0))
    assert packet.src == HA and packet.dst == COA
    assert packet.payload.identifier == 77
    assert packet.payload.home_agents == [HA2, HA]
    # the other agent's lifetime runs out: only we are left
    ha.handle_timer(T0 + 1801)
    [packet] = sent(ha.receive(wire.parse_packet(request), T0 + 1801))
    assert packet.payload.home_agents == [HA]


def test_mobile_prefix_solicitation_and_renumbering() -> None:
    ha = agent()
    ha.receive(bu_packet(1), T0)
    mps = wire.build_packet(COA, HA, wire.MobilePrefixSolicitation(9), home_address=HOA)
    [packet] = sent(ha.receive(wire.parse_packet(mps), T0))
    assert packet.routing_header_type2.home_address == HOA
    assert [o.prefix for o in packet.payload.options] == [PREFIX.network_address]
    new = IPv6Network("2001:db8:11::/64")
    settings = HomeAgentSettings(
        **{**_fields(ha.settings), "links": (HomeLink("home0", HA, (PREFIX, new)),)}
    )
    [packet] = sent(ha.reconfigure(settings, T0 + 1))
    assert isinstance(packet.payload, wire.MobilePrefixAdvertisement)
    assert {o.prefix for o in packet.payload.options} == {
        PREFIX.network_address,
        new.network_address,
    }


def test_snapshot_and_restore_keep_bindings_and_replay_state() -> None:
    ha = agent()
    ha.receive(bu_packet(1, lifetime_s=400), T0)
    state = ha.snapshot()
    fresh = agent()
    fresh.restore(state, T0 + 10)
    assert fresh.cache.get(HOA) == ha.cache.get(HOA)
    # the replayed BU is still refused after the restart
    assert the_ba(fresh.receive(bu_packet(2, timestamp=ntp_timestamp(T0)), T0 + 11)).status == 144
    expired = agent()
    expired.restore(state, T0 + 401)
    assert len(expired.cache) == 0


@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.booleans()), min_size=1, max_size=30))
def test_only_authentic_newer_updates_ever_change_the_binding(steps) -> None:
    """Property: forged BUs never touch the cache; accepted sequences always advance."""
    ha = agent()
    now = T0
    last = None
    for seq, forged in steps:
        now += 1
        key = MobilityKey(1000, b"f" * 20) if forged else KEY
        out = ha.receive(bu_packet(seq, coa=COA, now=now, key=key), now)
        status = the_ba(out).status
        binding = ha.cache.get(HOA)
        if forged:
            assert status == 146
            assert (binding.sequence if binding else None) == last
        elif status == 0:
            assert last is None or 0 < (seq - last) % 65536 < 32768
            last = seq
            assert binding.sequence == seq
        else:
            assert status == 135 and last is not None and binding.sequence == last


def test_seq_add_wraps() -> None:
    assert seq_add(0xFFFF) == 0


def test_correspondent_answers_binding_errors() -> None:
    from mip6agent.core.correspondent import Correspondent

    cn = Correspondent()
    for message, status in (
        (wire.BindingUpdate(1, BU_FLAG_A, 10), BEStatus.UNRECOGNIZED_MH_TYPE),
        (wire.HomeTestInit(bytes(8)), BEStatus.UNRECOGNIZED_MH_TYPE),
        (wire.UnknownMessage(42, bytes(10)), BEStatus.UNRECOGNIZED_MH_TYPE),
    ):
        [packet] = sent(cn.receive(wire.parse_packet(wire.build_packet(COA, HA, message)), T0))
        assert packet.payload.status == status and packet.src == HA and packet.dst == COA
    # a Binding Error is never answered, and a HAO without binding gets status 1
    assert (
        cn.receive(wire.parse_packet(wire.build_packet(COA, HA, wire.BindingError(1, HOA))), T0)
        == []
    )
    echo = wire.build_packet(COA, HA, wire.UnknownICMPv6(128, 0, bytes(4)), home_address=HOA)
    [packet] = sent(cn.receive(wire.parse_packet(echo), T0))
    assert (
        packet.payload.status == BEStatus.UNKNOWN_BINDING_FOR_HAO
        and packet.payload.home_address == HOA
    )
    assert cn.counters["be_out.2_unrecognized_mh_type"] == 3


def test_fragmented_mobility_header_is_ignored() -> None:
    head = (
        bytes.fromhex("60000000")
        + (8 + 8).to_bytes(2, "big")
        + bytes([44, 64])
        + COA.packed
        + HA.packed
    )
    fragment = bytes([135, 0, 0x00, 0x09, 0, 0, 0, 1])  # offset 1, more fragments
    packet = wire.parse_packet(head + fragment + bytes(8))
    assert isinstance(packet.payload, bytes) and packet.protocol == 135
    assert agent().receive(packet, T0) == []


def test_correspondent_binding_errors_are_rate_limited_and_never_to_multicast() -> None:
    from mip6agent.core.correspondent import Correspondent

    cn = Correspondent()
    src, here = IPv6Address("2001:db8:2::7"), IPv6Address("2001:db8:4::9")
    bu = wire.parse_packet(wire.build_packet(src, here, wire.BindingUpdate(1, 0x8000, 10)))
    answered = [len(sent(cn.receive(bu, T0))) for _ in range(50)]
    assert sum(answered) == 10  # a burst of 10 to one source, then nothing in the same instant
    assert len(sent(cn.receive(bu, T0 + 0.15))) == 1  # 10 per second: one more 0.1 s later
    spoofed = wire.parse_packet(
        wire.build_packet(IPv6Address("ff02::1"), here, wire.BindingUpdate(1, 0x8000, 10))
    )
    assert sent(cn.receive(spoofed, T0 + 2)) == []
    assert cn.counters["reply_suppressed"] == 1


def test_binding_cache_reports_care_of_addresses_that_come_and_go() -> None:
    from mip6agent.core.binding_cache import Binding, BindingCache

    def binding(home: str, coa: str) -> Binding:
        return Binding(
            IPv6Address(home), IPv6Address(coa), HA, "home0", 1, 60, T0 + 60, 0, None, T0
        )

    cache = BindingCache()
    c1, c2 = IPv6Address("2001:db8:2::7"), IPv6Address("2001:db8:3::7")
    cache.put(binding("2001:db8:1::100", str(c1)))
    cache.put(binding("2001:db8:1::101", str(c1)))  # a second binding on the same CoA
    assert cache.take_care_of_changes() == {c1} and cache.take_care_of_changes() == set()
    cache.remove(IPv6Address("2001:db8:1::100"))
    assert cache.take_care_of_changes() == set() and cache.has_care_of(c1)
    cache.put(binding("2001:db8:1::101", str(c2)))  # the last one on c1 moves to c2
    assert cache.take_care_of_changes() == {c1, c2}
    assert not cache.has_care_of(c1) and cache.care_of_addresses() == {c2}
    assert [b.home_address for b in cache.pop_expired(T0 + 61)] == [IPv6Address("2001:db8:1::101")]
    assert cache.take_care_of_changes() == {c2} and cache.care_of_addresses() == set()


def test_registration_lines_carry_journal_fields() -> None:
    """MIP6_HOA, MIP6_COA, MIP6_STATUS and MIP6_NAI for the lines operators search for."""

    def fields(actions: list) -> list[dict]:
        return [dict(a.fields) for a in actions if isinstance(a, act.Log) and a.fields]

    ha = agent()
    assert fields(ha.receive(bu_packet(1), T0)) == [
        {"hoa": HOA, "coa": COA, "status": 0, "nai": NAI}
    ]
    assert fields(ha.receive(bu_packet(2, coa=COA2, now=T0 + 1), T0 + 1)) == [
        {"hoa": HOA, "coa": COA2, "status": 0, "nai": NAI}
    ]
    refused = ha.receive(bu_packet(3, key=MobilityKey(1000, b"x" * 20), now=T0 + 2), T0 + 2)
    assert fields(refused) == [
        {"hoa": HOA, "coa": COA, "status": BAStatus.MIPV6_AUTH_FAIL, "nai": NAI}
    ]
    assert fields(ha.receive(bu_packet(4, 0, coa=HOA, now=T0 + 3), T0 + 3)) == [
        {"hoa": HOA, "coa": COA2, "status": 0, "nai": NAI}
    ]
