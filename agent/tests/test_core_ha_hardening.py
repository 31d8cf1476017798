"""Hardening of the home agent core against hostile or odd input (sans-I/O, fake clock).

Address validation of Binding Updates, where rejections go, reply rate limits, per-key
authorization and caps, DAD that cannot run, Neighbor Discovery sanity, DHAAD reply size,
key reload and recovered bindings. Expected values come from RFC 6275, RFC 4861, RFC 2526,
RFC 4285 and the home agent's hardening specification, never from the code under test.
"""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from mip6agent import wire
from mip6agent.core import actions as act
from mip6agent.core.auth import MobilityKey, ntp_timestamp, protect
from mip6agent.core.binding_cache import Binding
from mip6agent.core.home_agent import HomeAgent, HomeAgentSettings
from mip6agent.core.ratelimit import ReplyLimiter
from mip6agent.wire.constants import BU_FLAG_A, BU_FLAG_H
from test_core_home_agent import (
    COA,
    COA2,
    HA,
    HA2,
    HOA,
    HOME,
    KEY,
    NAI,
    PREFIX,
    T0,
    _fields,
    sent,
    the_ba,
)

ANYCAST = IPv6Address("2001:db8:1::fdff:ffff:ffff:fffe")  # RFC 2526 ID 126 of PREFIX
SUBNET_ROUTER = IPv6Address("2001:db8:1::")
NAI2 = "mn2@example.net"
KEY2 = MobilityKey(2000, b"k" * 20)
LL = IPv6Address("fe80::1")
ALL_NODES = IPv6Address("ff02::1")
FOREIGN = IPv6Address("2001:db8:9::1")
RESERVED_IID_FIRST = 0xFDFF_FFFF_FFFF_FF80  # RFC 2526: the top 128 interface IDs
RESERVED_IID_LAST = 0xFDFF_FFFF_FFFF_FFFF
MIN_MTU = 1280


def home_agent(keys: dict | None = None, **overrides) -> HomeAgent:
    settings = HomeAgentSettings(**{**_fields(HOME), **overrides})
    return HomeAgent(settings, keys=(keys if keys is not None else {NAI: KEY}).get)


def bu(
    seq: int,
    *,
    src: IPv6Address = COA,
    hoa: IPv6Address = HOA,
    alt: IPv6Address | None = None,
    lifetime_s: int = 400,
    now: float = T0,
    key: MobilityKey | None = KEY,
    nai: str = NAI,
    flags: int = BU_FLAG_A | BU_FLAG_H,
    dst: IPv6Address = HA,
) -> wire.Packet:
    """A BU from ``src`` (HAO ``hoa`` unless src is hoa), optionally with an Alternate CoA,
    signed per RFC 4285 over the care-of address it names."""
    options = [wire.AlternateCareofAddress(alt)] if alt is not None else []
    message = wire.BindingUpdate(seq, flags, lifetime_s // 4, options)
    coa = alt if alt is not None else src
    if key is not None:
        message = protect(message, nai.encode(), key, ntp_timestamp(now), coa, hoa)
    data = wire.build_packet(src, dst, message, home_address=None if src == hoa else hoa)
    return wire.parse_packet(data)


def ba_out(ha: HomeAgent, status: int) -> int:
    """How many BAs with ``status`` the agent decided on (sent or suppressed)."""
    return sum(
        count
        for name, count in ha.counters.snapshot().items()
        if name == f"ba_out.{status}" or name.startswith(f"ba_out.{status}_")
    )


def sends(actions: list) -> list[act.SendPacket]:
    return [a for a in actions if isinstance(a, act.SendPacket)]


def installs_anything(actions: list) -> bool:
    return any(isinstance(a, (act.InstallBinding, act.StartDAD)) for a in actions)


def usable_unicast(address: IPv6Address) -> bool:
    """RFC 4291 unicast an MN can receive at: not unspecified, loopback, multicast,
    link-local nor IPv4-mapped."""
    return not (
        address.is_unspecified
        or address.is_loopback
        or address.is_multicast
        or address.is_link_local
        or address.ipv4_mapped is not None
    )


def in_prefix(prefix: IPv6Network, iid: int) -> IPv6Address:
    return IPv6Address(int(prefix.network_address) | iid)


# --- strategies --------------------------------------------------------------------

link_local = st.integers(0xFE80 << 112, (0xFEC0 << 112) - 1).map(IPv6Address)  # fe80::/10
multicast = st.integers(0xFF << 120, (1 << 128) - 1).map(IPv6Address)  # ff00::/8
ipv4_mapped = st.integers(0, (1 << 32) - 1).map(lambda v: IPv6Address(0xFFFF << 32 | v))
reserved_anycast = st.integers(RESERVED_IID_FIRST, RESERVED_IID_LAST).map(
    lambda iid: in_prefix(PREFIX, iid)
)
inside_home = (
    st.integers(1, (1 << 64) - 1).map(lambda iid: in_prefix(PREFIX, iid)).filter(lambda a: a != HOA)
)
special = st.sampled_from([IPv6Address("::"), IPv6Address("::1"), HA, ANYCAST, SUBNET_ROUTER])
bad_care_of = st.one_of(link_local, multicast, ipv4_mapped, inside_home, reserved_anycast, special)
outside_home = st.integers(0, (1 << 128) - 1).map(IPv6Address).filter(lambda a: a not in PREFIX)


# --- 1. address validation -----------------------------------------------------------

BAD_CARE_OF = [
    IPv6Address("fe80::1234"),
    IPv6Address("ff02::1"),
    IPv6Address("ff0e::1"),
    IPv6Address("::1"),
    IPv6Address("::"),
    IPv6Address("::ffff:192.0.2.1"),
    IPv6Address("2001:db8:1::200"),  # inside the home prefix
    SUBNET_ROUTER,
    HA,
    ANYCAST,
]


def _assert_refused_129(ha: HomeAgent, out: list) -> None:
    assert ba_out(ha, 129) == 1, ha.counters.snapshot()
    assert ha.counters["bu_bad_address"] == 1
    assert len(ha.cache) == 0
    assert not installs_anything(out), out
    for packet in sent(out):
        assert isinstance(packet.payload, wire.BindingAck)
        assert packet.payload.status == 129


@pytest.mark.parametrize("dad", [False, True])
@pytest.mark.parametrize("coa", BAD_CARE_OF, ids=str)
def test_bad_source_care_of_address_gets_129(coa: IPv6Address, dad: bool) -> None:
    ha = home_agent(dad=dad)
    out = ha.receive(bu(1, src=coa), T0)
    _assert_refused_129(ha, out)


@pytest.mark.parametrize("dad", [False, True])
@pytest.mark.parametrize("coa", BAD_CARE_OF, ids=str)
def test_bad_alternate_care_of_address_gets_129_at_the_source(coa, dad) -> None:
    ha = home_agent(dad=dad)
    out = ha.receive(bu(1, src=COA, alt=coa), T0)
    _assert_refused_129(ha, out)
    [send] = sends(out)
    assert send.destination == COA
    assert sent(out)[0].dst == COA


@given(coa=bad_care_of)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_any_bad_care_of_address_is_refused(coa: IPv6Address) -> None:
    for packet in (bu(1, src=coa), bu(1, src=COA, alt=coa)):
        ha = home_agent(dad=True)
        out = ha.receive(packet, T0)
        _assert_refused_129(ha, out)
        for send in sends(out):
            assert send.destination == packet.src
            assert usable_unicast(send.destination)
            assert send.destination not in (HA, SUBNET_ROUTER)
            assert int(send.destination) & (2**64 - 1) < RESERVED_IID_FIRST


@pytest.mark.parametrize(
    "hoa",
    [
        HA,
        SUBNET_ROUTER,
        ANYCAST,
        in_prefix(PREFIX, RESERVED_IID_FIRST),
        in_prefix(PREFIX, 2**64 - 1),
    ],
    ids=str,
)
def test_reserved_home_address_gets_129(hoa: IPv6Address) -> None:
    ha = home_agent(dad=True)
    out = ha.receive(bu(1, hoa=hoa), T0)
    assert the_ba(out).status == 129
    assert len(ha.cache) == 0 and not installs_anything(out)


@given(hoa=reserved_anycast)
def test_any_rfc2526_anycast_home_address_gets_129(hoa: IPv6Address) -> None:
    ha = home_agent(dad=True)
    out = ha.receive(bu(1, hoa=hoa), T0)
    assert the_ba(out).status == 129
    assert len(ha.cache) == 0 and not installs_anything(out)


@pytest.mark.parametrize(
    "hoa",
    [IPv6Address("fe80::100"), IPv6Address("ff02::1"), IPv6Address("::1"), IPv6Address("::")],
    ids=str,
)
def test_non_unicast_home_address_gets_132(hoa: IPv6Address) -> None:
    ha = home_agent(dad=True)
    out = ha.receive(bu(1, hoa=hoa), T0)
    assert the_ba(out).status == 132
    assert len(ha.cache) == 0 and not installs_anything(out)
    assert sends(out)[0].destination == COA


@given(hoa=st.one_of(link_local, multicast, outside_home))
@settings(max_examples=300)
def test_any_home_address_outside_the_home_prefixes_gets_132(hoa: IPv6Address) -> None:
    ha = home_agent(dad=True)
    out = ha.receive(bu(1, hoa=hoa), T0)
    assert the_ba(out).status == 132
    assert len(ha.cache) == 0 and not installs_anything(out)
    [send] = sends(out)
    assert send.destination == COA


@given(iid=st.integers(1, RESERVED_IID_FIRST - 1))
def test_ordinary_home_addresses_are_accepted(iid: int) -> None:
    hoa = in_prefix(PREFIX, iid)
    if hoa == HA:
        return
    ha = home_agent()
    out = ha.receive(bu(1, hoa=hoa), T0)
    assert the_ba(out).status == 0
    assert ha.cache.get(hoa).care_of_address == COA


def test_deregistration_from_home_still_works() -> None:
    """The CoA equal to the HoA (at home) is not 'inside a home prefix' (RFC 6275 10.3.2)."""
    ha = home_agent()
    ha.receive(bu(1), T0)
    out = ha.receive(bu(2, src=HOA, lifetime_s=0, now=T0 + 1), T0 + 1)
    assert act.RemoveBinding(HOA) in out
    assert the_ba(out).status == 0 and len(ha.cache) == 0


def test_link_local_source_naming_the_home_address_as_alternate_coa_is_refused() -> None:
    """Packet source link-local is a bad care-of address even when the Alternate CoA
    option names the home address (spec: the packet source is always checked)."""
    ha = home_agent()
    ha.receive(bu(1), T0)
    out = ha.receive(bu(2, src=IPv6Address("fe80::66"), alt=HOA, now=T0 + 1), T0 + 1)
    assert ba_out(ha, 129) == 1, ha.counters.snapshot()
    assert ha.counters["bu_bad_address"] == 1
    assert ha.cache.get(HOA) is not None  # the binding is left alone
    assert not any(isinstance(a, act.RemoveBinding) for a in out)


# --- 2. where rejections go ----------------------------------------------------------


def test_unauthenticated_rejection_goes_to_source_not_alternate_coa() -> None:
    ha = home_agent()
    wrong = MobilityKey(KEY.spi, b"w" * 20)
    out = ha.receive(bu(1, src=COA, alt=COA2, key=wrong), T0)
    assert the_ba(out).status == 146
    [send] = sends(out)
    assert send.destination == COA
    assert sent(out)[0].dst == COA
    assert COA2 not in {s.destination for s in sends(out)}


def test_rejection_in_unauthenticated_mode_goes_to_source() -> None:
    ha = home_agent(authentication=False)
    out = ha.receive(bu(1, src=COA, alt=COA2, hoa=FOREIGN, key=None), T0)
    assert the_ba(out).status == 132
    [send] = sends(out)
    assert send.destination == COA and sent(out)[0].dst == COA


@pytest.mark.parametrize("case", ["foreign_hoa_132", "unauthorized_133", "sequence_135", "cap_130"])
def test_authenticated_rejection_goes_to_the_authenticated_care_of_address(case: str) -> None:
    """Once the BU verifies, its Alternate CoA is covered by the authenticator (RFC 4285:
    HMAC over CoA | HoA | MH data), so a later refusal goes there like an acceptance would
    (RFC 6275 6.1.8: the BA goes to the care-of address); only unverified BUs are answered
    at the packet's source (docs/security.md)."""
    narrow = MobilityKey(KEY.spi, KEY.key, home_addresses=(IPv6Network(f"{HOA}/128"),))
    keys = {NAI: narrow if case == "unauthorized_133" else KEY}
    ha = home_agent(keys, max_bindings_per_nai=1)
    now = T0
    if case in ("sequence_135", "cap_130"):
        ha.receive(bu(10), now)
        now += 1
    packet = {
        "foreign_hoa_132": lambda: bu(1, alt=COA2, hoa=FOREIGN, now=now),
        "unauthorized_133": lambda: bu(1, alt=COA2, hoa=IPv6Address("2001:db8:1::200"), now=now),
        "sequence_135": lambda: bu(5, alt=COA2, now=now),
        "cap_130": lambda: bu(1, alt=COA2, hoa=IPv6Address("2001:db8:1::200"), now=now),
    }[case]()
    out = ha.receive(packet, now)
    assert the_ba(out).status >= 128
    [send] = sends(out)
    assert send.destination == COA2, f"rejection sent to {send.destination}"
    assert sent(out)[0].dst == COA2


@pytest.mark.parametrize(
    "source",
    [
        IPv6Address("fe80::7"),
        IPv6Address("ff02::1"),
        IPv6Address("ff05::2"),
        IPv6Address("::"),
        IPv6Address("::1"),
        IPv6Address("::ffff:198.51.100.7"),
        HA,
        ANYCAST,
    ],
    ids=str,
)
def test_rejection_to_unusable_source_is_suppressed(source: IPv6Address) -> None:
    ha = home_agent()
    wrong = MobilityKey(KEY.spi, b"w" * 20)
    for packet in (bu(1, src=source), bu(1, src=source, alt=COA2, key=wrong)):
        before = ha.counters["reply_suppressed"]
        out = ha.receive(packet, T0)
        assert sends(out) == [], out
        assert ha.counters["reply_suppressed"] == before + 1
    assert len(ha.cache) == 0


def test_accepted_bu_with_alternate_coa_is_answered_at_the_alternate_coa() -> None:
    ha = home_agent()
    out = ha.receive(bu(1, src=COA, alt=COA2), T0)
    [send] = sends(out)
    assert send.destination == COA2
    packet = wire.parse_packet(send.data)
    assert packet.dst == COA2 and packet.src == HA
    assert packet.routing_header_type2 is not None
    assert packet.routing_header_type2.home_address == HOA
    assert packet.payload.status == 0
    assert ha.cache.get(HOA).care_of_address == COA2
    assert act.InstallBinding(HOA, COA2, HA, "home0") in out


# --- 3. rate limiting ------------------------------------------------------------------

R, T = 3, 5
SOURCES = [IPv6Address(f"2001:db8:{n + 10:x}::1") for n in range(6)]


def _forged(src: IPv6Address, now: float) -> wire.Packet:
    return bu(1, src=src, key=MobilityKey(KEY.spi, b"f" * 20), now=now)


def test_error_bas_to_one_destination_are_limited_per_destination() -> None:
    ha = home_agent(error_rate_per_destination=R, error_rate_total=1000)
    out = [a for _ in range(20) for a in ha.receive(_forged(COA, T0), T0)]
    assert len(sends(out)) == R
    assert all(s.destination == COA for s in sends(out))
    assert ha.counters["reply_rate_limited"] == 20 - R
    # another destination has its own budget
    other = [a for _ in range(20) for a in ha.receive(_forged(COA2, T0), T0)]
    assert len(sends(other)) == R
    assert ha.counters["reply_rate_limited"] == 2 * (20 - R)


def test_error_bas_are_limited_in_total_and_refill_after_a_second() -> None:
    ha = home_agent(error_rate_per_destination=R, error_rate_total=T)
    for now in (T0, T0 + 1, T0 + 2):
        before = ha.counters["reply_rate_limited"]
        out = [a for src in SOURCES for _ in range(10) for a in ha.receive(_forged(src, now), now)]
        per_destination: dict[IPv6Address, int] = {}
        for send in sends(out):
            per_destination[send.destination] = per_destination.get(send.destination, 0) + 1
        assert max(per_destination.values()) <= R
        assert len(sends(out)) == T  # burst = rate: a full bucket after 1 s
        assert ha.counters["reply_rate_limited"] - before == len(SOURCES) * 10 - T


def test_rate_limit_covers_binding_errors_and_dhaad_replies_together() -> None:
    ha = home_agent(error_rate_per_destination=R, error_rate_total=1000)
    unknown = wire.parse_packet(wire.build_packet(COA, HA, wire.UnknownMessage(42, bytes(10))))
    dhaad = wire.parse_packet(wire.build_packet(COA, ANYCAST, wire.HAADRequest(1)))
    out = []
    for _ in range(4):
        out += ha.receive(unknown, T0)
        out += ha.receive(dhaad, T0)
        out += ha.receive(_forged(COA, T0), T0)
    assert len(sends(out)) == R
    assert ha.counters["reply_rate_limited"] == 12 - R


@pytest.mark.parametrize("kind", ["binding_error", "dhaad"])
def test_binding_errors_and_dhaad_replies_are_limited(kind: str) -> None:
    ha = home_agent(error_rate_per_destination=R, error_rate_total=1000)
    if kind == "binding_error":
        data = wire.build_packet(COA, HA, wire.UnknownMessage(42, bytes(10)))
    else:
        data = wire.build_packet(COA, ANYCAST, wire.HAADRequest(9))
    packet = wire.parse_packet(data)
    out = [a for _ in range(10) for a in ha.receive(packet, T0)]
    assert len(sends(out)) == R
    assert ha.counters["reply_rate_limited"] == 10 - R
    later = [a for _ in range(10) for a in ha.receive(packet, T0 + 1)]
    assert len(sends(later)) == R


def test_accepted_bas_are_never_rate_limited() -> None:
    ha = home_agent(error_rate_per_destination=1, error_rate_total=1)
    ha.receive(_forged(COA, T0), T0)  # uses up both budgets
    assert len(sends(ha.receive(_forged(COA, T0), T0))) == 0
    for n in range(20):
        now = T0 + n * 0.001
        out = ha.receive(bu(n + 1, now=now), now)
        assert the_ba(out).status == 0
    assert ha.counters["reply_rate_limited"] == 1


def test_rate_zero_means_unlimited() -> None:
    ha = home_agent(error_rate_per_destination=0, error_rate_total=0)
    out = [a for src in SOURCES for _ in range(50) for a in ha.receive(_forged(src, T0), T0)]
    assert len(sends(out)) == 50 * len(SOURCES)
    assert ha.counters["reply_rate_limited"] == 0
    only_total = home_agent(error_rate_per_destination=0, error_rate_total=T)
    out = [a for _ in range(50) for a in only_total.receive(_forged(COA, T0), T0)]
    assert len(sends(out)) == T


def test_reply_limiter_per_destination_token_bucket() -> None:
    a, b = IPv6Address("2001:db8:a::1"), IPv6Address("2001:db8:b::1")
    limiter = ReplyLimiter(2, 0)
    assert [limiter.allow(a, 0.0) for _ in range(3)] == [True, True, False]
    assert [limiter.allow(b, 0.0) for _ in range(3)] == [True, True, False]  # independent
    assert limiter.allow(a, 0.5) and not limiter.allow(a, 0.5)  # 2/s: one token in 0.5 s
    # a long pause refills to the burst (= rate) and no further
    assert [limiter.allow(a, 100.0) for _ in range(3)] == [True, True, False]


def test_reply_limiter_total_bucket() -> None:
    limiter = ReplyLimiter(0, 3)
    dests = [IPv6Address(f"2001:db8:c::{n + 1:x}") for n in range(10)]
    assert [limiter.allow(d, 0.0) for d in dests] == [True] * 3 + [False] * 7
    assert [limiter.allow(d, 1.0) for d in dests] == [True] * 3 + [False] * 7


def test_reply_limiter_forgets_least_recently_used_beyond_4096() -> None:
    limiter = ReplyLimiter(1, 0)
    victim = IPv6Address("2001:db8:d::1")
    others = [IPv6Address(int(IPv6Address("2001:db8:e::")) + n) for n in range(1, 10_000)]
    assert limiter.allow(victim, 0.0) and not limiter.allow(victim, 0.0)
    for address in others[:4095]:  # 4096 destinations in all: the victim is still known
        assert limiter.allow(address, 0.0)
    assert len(limiter) == 4096
    assert not limiter.allow(victim, 0.0)  # and used most recently now
    assert limiter.allow(others[4095], 0.0)  # evicts others[0], the least recently used
    assert len(limiter) == 4096
    assert not limiter.allow(victim, 0.0)
    for address in others[4096:]:
        limiter.allow(address, 0.0)
    assert len(limiter) <= 4096


# --- 4. authorization per key -------------------------------------------------------------


def test_key_limited_to_its_home_addresses() -> None:
    narrow = MobilityKey(KEY.spi, KEY.key, home_addresses=(IPv6Network("2001:db8:1::100/127"),))
    ha = home_agent({NAI: narrow})
    out = ha.receive(bu(1, hoa=IPv6Address("2001:db8:1::200")), T0)
    assert the_ba(out).status == 133
    assert ha.counters["unauthorized_home_address"] == 1
    assert len(ha.cache) == 0 and not installs_anything(out)
    assert the_ba(ha.receive(bu(2, now=T0 + 1), T0 + 1)).status == 0
    other = IPv6Address("2001:db8:1::101")
    assert the_ba(ha.receive(bu(3, hoa=other, now=T0 + 2), T0 + 2)).status == 0
    assert ha.cache.get(other).nai == NAI


def test_key_home_addresses_outside_home_prefixes_still_get_132() -> None:
    odd = MobilityKey(KEY.spi, KEY.key, home_addresses=(IPv6Network("2001:db8:9::/64"),))
    ha = home_agent({NAI: odd})
    assert the_ba(ha.receive(bu(1, hoa=FOREIGN), T0)).status == 132
    assert len(ha.cache) == 0


@given(iid=st.integers(1, RESERVED_IID_FIRST - 1))
@settings(max_examples=50)
def test_key_without_home_addresses_may_register_any_home_address(iid: int) -> None:
    hoa = in_prefix(PREFIX, iid)
    if hoa == HA:
        return
    ha = home_agent({NAI: MobilityKey(KEY.spi, KEY.key, home_addresses=None)})
    assert the_ba(ha.receive(bu(1, hoa=hoa), T0)).status == 0


# --- 5. caps -------------------------------------------------------------------------------


def hoa_n(n: int) -> IPv6Address:
    return IPv6Address(int(HOA) + n)


def test_total_cap_counts_bindings_and_pending_dad() -> None:
    ha = home_agent({NAI: KEY, NAI2: KEY2}, dad=True, max_bindings=2)
    assert ha.receive(bu(1, hoa=hoa_n(0)), T0) == [act.StartDAD(hoa_n(0), "home0")]
    assert the_ba(ha.handle_timer(T0 + 1)).status == 0  # one binding
    now = T0 + 1.1
    assert ha.receive(bu(1, hoa=hoa_n(1), key=KEY2, nai=NAI2, now=now), now) == [
        act.StartDAD(hoa_n(1), "home0")
    ]
    now += 0.1
    out = ha.receive(bu(1, hoa=hoa_n(2), key=KEY2, nai=NAI2, now=now), now)  # 1 + 1 pending
    assert the_ba(out).status == 130 and not installs_anything(out)
    assert ha.counters["binding_limit"] == 1
    # a retransmission of the pending one and a refresh of the binding are not refused
    now += 0.1
    assert ha.receive(bu(2, hoa=hoa_n(1), key=KEY2, nai=NAI2, now=now), now) == []
    now += 0.1
    assert the_ba(ha.receive(bu(2, hoa=hoa_n(0), now=now), now)).status == 0
    done = ha.handle_timer(T0 + 2.2)
    assert the_ba(done).status == 0 and len(ha.cache) == 2
    now = T0 + 3
    assert the_ba(ha.receive(bu(3, hoa=hoa_n(0), now=now), now)).status == 0  # refresh
    assert ha.counters["binding_limit"] == 1
    # deregistration frees the slot
    now += 0.1
    assert the_ba(ha.receive(bu(4, hoa=hoa_n(0), lifetime_s=0, now=now), now)).status == 0
    now += 0.1
    assert ha.receive(bu(3, hoa=hoa_n(2), key=KEY2, nai=NAI2, now=now), now) == [
        act.StartDAD(hoa_n(2), "home0")
    ]


def test_total_cap_without_dad_and_expiry_frees_the_slot() -> None:
    ha = home_agent({NAI: KEY, NAI2: KEY2}, max_bindings=1)
    assert the_ba(ha.receive(bu(1, lifetime_s=40), T0)).status == 0
    out = ha.receive(bu(1, hoa=hoa_n(1), key=KEY2, nai=NAI2, now=T0 + 1), T0 + 1)
    assert the_ba(out).status == 130 and len(ha.cache) == 1
    assert ha.counters["binding_limit"] == 1
    assert act.RemoveBinding(HOA) in ha.handle_timer(T0 + 40)
    out = ha.receive(bu(2, hoa=hoa_n(1), key=KEY2, nai=NAI2, now=T0 + 41), T0 + 41)
    assert the_ba(out).status == 0 and len(ha.cache) == 1


def _register_many(ha: HomeAgent, count: int, key=KEY, nai=NAI, start=T0) -> list[int]:
    statuses = []
    for n in range(count):
        now = start + n * 0.01
        statuses.append(
            the_ba(ha.receive(bu(1, hoa=hoa_n(n), key=key, nai=nai, now=now), now)).status
        )
    return statuses


def test_per_nai_cap() -> None:
    ha = home_agent({NAI: KEY, NAI2: KEY2}, max_bindings_per_nai=2)
    assert _register_many(ha, 3) == [0, 0, 130]
    assert ha.counters["binding_limit"] == 1
    assert ha.cache.count_for(NAI) == 2
    # another NAI is not affected
    out = ha.receive(bu(1, hoa=hoa_n(10), key=KEY2, nai=NAI2, now=T0 + 1), T0 + 1)
    assert the_ba(out).status == 0
    # refresh of an existing binding at the cap is fine
    assert the_ba(ha.receive(bu(2, hoa=hoa_n(0), now=T0 + 2), T0 + 2)).status == 0
    # deregistering one frees the slot
    assert the_ba(ha.receive(bu(3, hoa=hoa_n(0), lifetime_s=0, now=T0 + 3), T0 + 3)).status == 0
    assert the_ba(ha.receive(bu(1, hoa=hoa_n(2), now=T0 + 4), T0 + 4)).status == 0


@pytest.mark.parametrize("key_cap, expected", [(3, [0, 0, 0, 130]), (1, [0, 130, 130, 130])])
def test_key_max_bindings_overrides_the_per_nai_cap(key_cap: int, expected: list[int]) -> None:
    key = MobilityKey(KEY.spi, KEY.key, max_bindings=key_cap)
    ha = home_agent({NAI: key}, max_bindings_per_nai=2)
    assert _register_many(ha, 4, key=key) == expected
    assert ha.cache.count_for(NAI) == key_cap


def test_per_nai_cap_counts_pending_dad() -> None:
    ha = home_agent(dad=True, max_bindings_per_nai=2)
    outs = [ha.receive(bu(1, hoa=hoa_n(n), now=T0 + n * 0.01), T0 + n * 0.01) for n in range(3)]
    assert outs[0] == [act.StartDAD(hoa_n(0), "home0")]
    assert outs[1] == [act.StartDAD(hoa_n(1), "home0")]
    assert the_ba(outs[2]).status == 130 and not installs_anything(outs[2])


def test_pending_dad_cap() -> None:
    ha = home_agent({NAI: KEY, NAI2: KEY2}, dad=True, max_pending_dad=2)
    outs = [ha.receive(bu(1, hoa=hoa_n(n), now=T0 + n * 0.01), T0 + n * 0.01) for n in range(3)]
    assert outs[0] == [act.StartDAD(hoa_n(0), "home0")]
    assert outs[1] == [act.StartDAD(hoa_n(1), "home0")]
    assert the_ba(outs[2]).status == 130
    assert ha.counters["binding_limit"] == 1
    done = ha.handle_timer(T0 + 1.5)
    assert [p.payload.status for p in sent(done)] == [0, 0]
    out = ha.receive(bu(1, hoa=hoa_n(2), key=KEY2, nai=NAI2, now=T0 + 2), T0 + 2)
    assert out == [act.StartDAD(hoa_n(2), "home0")]


# --- 6. DAD that cannot start --------------------------------------------------------------


def test_dad_unavailable_refuses_with_130_and_never_registers() -> None:
    ha = home_agent(dad=True)
    assert ha.receive(bu(1), T0) == [act.StartDAD(HOA, "home0")]
    out = ha.dad_unavailable(HOA, "no such interface", T0 + 0.1)
    assert the_ba(out).status == 130
    assert ha.counters["dad_unavailable"] == 1
    assert len(ha.cache) == 0 and not installs_anything(out)
    later = ha.handle_timer(T0 + 5)
    assert not any(isinstance(a, (act.InstallBinding, act.AnnounceHomeAddress)) for a in later)
    assert sent(later) == [] and len(ha.cache) == 0
    # nothing pending: a second call is a no-op
    assert ha.dad_unavailable(HOA, "again", T0 + 6) == []
    assert ha.counters["dad_unavailable"] == 1


# --- 7. Neighbor Discovery ------------------------------------------------------------------


def _defender_na(hop_limit: int) -> wire.Packet:
    data = wire.build_packet(
        IPv6Address("fe80::99"),
        ALL_NODES,
        wire.NeighborAdvertisement(HOA, 0x20),
        hop_limit=hop_limit,
    )
    return wire.parse_packet(data)


def _dad_ns(hop_limit: int) -> wire.Packet:
    solicited = IPv6Address("ff02::1:ff00:100")
    data = wire.build_packet(
        IPv6Address("::"), solicited, wire.NeighborSolicitation(HOA), hop_limit=hop_limit
    )
    return wire.parse_packet(data)


@pytest.mark.parametrize("make", [_defender_na, _dad_ns], ids=["NA", "NS"])
@pytest.mark.parametrize("hop_limit, status", [(254, 0), (64, 0), (1, 0), (255, 134)])
def test_nd_during_dad_needs_hop_limit_255(make, hop_limit: int, status: int) -> None:
    ha = home_agent(dad=True)
    ha.receive(bu(1), T0)
    ha.receive(make(hop_limit), T0 + 0.2, interface="home0")
    assert ha.counters["nd_bad_hop_limit"] == (0 if hop_limit == 255 else 1)
    done = ha.handle_timer(T0 + 1)
    assert the_ba(done).status == status
    assert (len(ha.cache) == 1) == (status == 0)


def _ra(
    source: IPv6Address,
    addresses: list[IPv6Address],
    *,
    hop_limit: int = 255,
    preference: int = 0,
    lifetime: int = 1800,
) -> wire.Packet:
    options = [wire.PrefixInformation(64, 0xE0, 86400, 14400, a) for a in addresses]
    options.append(wire.HomeAgentInformation(preference, lifetime))
    ra = wire.RouterAdvertisement(64, 0x20, 1800, options=options)  # H flag
    return wire.parse_packet(wire.build_packet(source, ALL_NODES, ra, hop_limit=hop_limit))


def _dhaad_reply(ha: HomeAgent, now: float) -> tuple[act.SendPacket, wire.Packet]:
    request = wire.parse_packet(wire.build_packet(COA, ANYCAST, wire.HAADRequest(5)))
    [send] = sends(ha.receive(request, now))
    return send, wire.parse_packet(send.data)


def test_ra_with_bad_hop_limit_is_ignored() -> None:
    ha = home_agent()
    ha.receive(_ra(IPv6Address("fe80::2"), [HA2], hop_limit=254), T0, interface="home0")
    assert ha.counters["nd_bad_hop_limit"] == 1
    assert len(ha.home_agents) == 0
    assert _dhaad_reply(ha, T0)[1].payload.home_agents == [HA]
    ha.receive(_ra(IPv6Address("fe80::2"), [HA2]), T0, interface="home0")
    assert len(ha.home_agents) == 1


def test_ra_from_global_source_is_ignored() -> None:
    ha = home_agent()
    ha.receive(_ra(HA2, [HA2]), T0, interface="home0")
    assert ha.counters["nd_bad_source"] == 1
    assert len(ha.home_agents) == 0
    assert _dhaad_reply(ha, T0)[1].payload.home_agents == [HA]


def test_home_agents_list_is_bounded() -> None:
    ha = home_agent(max_home_agents=3)
    for n in range(5):
        router = IPv6Address(f"fe80::{n + 10:x}")
        ha.receive(_ra(router, [hoa_n(1000 + n)], lifetime=100), T0, interface="home0")
    assert len(ha.home_agents) == 3
    assert ha.counters["home_agents_full"] == 2
    # a refresh from a known router is not refused
    ha.receive(_ra(IPv6Address("fe80::a"), [hoa_n(1000)]), T0 + 1, interface="home0")
    assert ha.counters["home_agents_full"] == 2
    # once entries expire there is room again
    ha.handle_timer(T0 + 200)
    ha.receive(_ra(IPv6Address("fe80::99"), [hoa_n(2000)]), T0 + 200, interface="home0")
    assert ha.counters["home_agents_full"] == 2
    assert hoa_n(2000) in _dhaad_reply(ha, T0 + 200)[1].payload.home_agents


def test_ra_with_many_router_addresses_lists_only_16() -> None:
    ha = home_agent()
    addresses = [hoa_n(3000 + n) for n in range(20)]
    ha.receive(_ra(IPv6Address("fe80::2"), addresses), T0, interface="home0")
    [entry] = ha.home_agents.entries()
    assert len(entry.addresses) == 16
    assert set(entry.addresses) <= set(addresses)
    listed = _dhaad_reply(ha, T0)[1].payload.home_agents
    assert len(listed) == 17 and HA in listed


# --- 8. DHAAD reply size ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "ours, others", [(0, 0), (10, 0), (0, 10)], ids=["equal", "we_prefer_us", "others_higher"]
)
def test_dhaad_reply_fits_minimum_mtu_and_keeps_the_most_preferred(ours: int, others: int) -> None:
    """At most (1280 - 40 - 8) // 16 addresses, <= 1280 octets; RFC 6275 10.5: the ones
    kept are those of highest preference, so ours is left out when 77 others rank higher."""
    ha = home_agent(max_home_agents=200, preference=ours)
    for n in range(100):
        router = IPv6Address(int(IPv6Address("fe80::1:0")) + n)
        ha.receive(_ra(router, [hoa_n(5000 + n)], preference=others), T0, interface="home0")
    assert len(ha.home_agents) == 100
    send, packet = _dhaad_reply(ha, T0)
    assert len(send.data) <= MIN_MTU
    assert send.destination == COA and packet.dst == COA
    agents = packet.payload.home_agents
    assert len(agents) == (MIN_MTU - 40 - 8) // 16 == 77
    assert len(set(agents)) == len(agents)
    assert (HA in agents) == (ours >= others)


# --- 9. key reload ------------------------------------------------------------------------------


def test_set_keys_revokes_removed_and_keeps_rotated() -> None:
    ha = home_agent({NAI: KEY, NAI2: KEY2})
    hoa2 = hoa_n(1)
    assert the_ba(ha.receive(bu(1), T0)).status == 0
    assert the_ba(ha.receive(bu(1, hoa=hoa2, key=KEY2, nai=NAI2), T0)).status == 0
    rotated = MobilityKey(1001, b"r" * 20)
    out = ha.set_keys({NAI: rotated}.get)
    assert act.RemoveBinding(hoa2) in out
    assert act.RemoveBinding(HOA) not in out
    assert ha.counters["binding_revoked"] == 1
    assert ha.cache.get(HOA) is not None and ha.cache.get(hoa2) is None
    assert ha.cache.count_for(NAI2) == 0
    assert the_ba(ha.receive(bu(2, now=T0 + 1), T0 + 1)).status == 146  # old key
    assert ha.cache.get(HOA).sequence == 1
    assert the_ba(ha.receive(bu(3, key=rotated, now=T0 + 2), T0 + 2)).status == 0
    assert ha.cache.get(HOA).sequence == 3
    # the revoked NAI cannot come back
    out = ha.receive(bu(2, hoa=hoa2, key=KEY2, nai=NAI2, now=T0 + 3), T0 + 3)
    assert the_ba(out).status == 146 and ha.cache.get(hoa2) is None


def test_set_keys_revokes_binding_whose_home_address_is_no_longer_authorized() -> None:
    ha = home_agent()
    hoa2 = hoa_n(1)
    ha.receive(bu(1), T0)
    ha.receive(bu(1, hoa=hoa2, now=T0 + 0.1), T0 + 0.1)
    assert len(ha.cache) == 2
    narrowed = MobilityKey(KEY.spi, KEY.key, home_addresses=(IPv6Network(f"{HOA}/128"),))
    out = ha.set_keys({NAI: narrowed}.get)
    assert act.RemoveBinding(hoa2) in out and act.RemoveBinding(HOA) not in out
    assert ha.counters["binding_revoked"] == 1
    assert ha.cache.count_for(NAI) == 1
    assert the_ba(ha.receive(bu(2, hoa=hoa2, now=T0 + 1), T0 + 1)).status == 133


def test_set_keys_drops_pending_dad_of_revoked_key() -> None:
    ha = home_agent(dad=True)
    ha.receive(bu(1), T0)
    out = ha.set_keys({}.get)
    assert act.StopDAD(HOA, "home0") in out
    done = ha.handle_timer(T0 + 1)
    assert not installs_anything(done) and len(ha.cache) == 0


# --- 10. recovered bindings ---------------------------------------------------------------------


def _recovered(sequence: int = 40000) -> Binding:
    return Binding(
        HOA, COA, HA, "home0", sequence, 400, T0 + 400, BU_FLAG_A | BU_FLAG_H, None, T0 - 10, True
    )


@pytest.mark.parametrize("seq", [0, 1, 39999, 40000, 40001, 0xFFFF])
@pytest.mark.parametrize("who", [NAI, NAI2])
def test_recovered_binding_accepts_next_authorized_bu_whatever_its_sequence(seq, who) -> None:
    keys = {NAI: KEY, NAI2: KEY2}
    ha = home_agent(keys)
    ha.cache.put(_recovered())
    out = ha.receive(bu(seq, key=keys[who], nai=who, alt=COA2, now=T0 + 1), T0 + 1)
    assert the_ba(out).status == 0
    binding = ha.cache.get(HOA)
    assert binding.recovered is False
    assert binding.nai == who and binding.sequence == seq
    assert binding.care_of_address == COA2
    assert ha.cache.count_for(who) == 1
    # from now on the usual rules hold: another NAI is refused, an old sequence too
    other = NAI2 if who == NAI else NAI
    out = ha.receive(bu(seq + 1 & 0xFFFF, key=keys[other], nai=other, now=T0 + 2), T0 + 2)
    assert the_ba(out).status == 133
    out = ha.receive(bu(seq, key=keys[who], nai=who, now=T0 + 3), T0 + 3)
    assert the_ba(out).status == 135


def test_recovered_binding_is_not_taken_by_an_unauthorized_key() -> None:
    narrow = MobilityKey(KEY2.spi, KEY2.key, home_addresses=(IPv6Network("2001:db8:1::200/128"),))
    ha = home_agent({NAI: KEY, NAI2: narrow})
    ha.cache.put(_recovered())
    out = ha.receive(bu(1, key=narrow, nai=NAI2, now=T0 + 1), T0 + 1)
    assert the_ba(out).status == 133
    assert ha.cache.get(HOA).recovered is True
    assert the_ba(ha.receive(bu(1, now=T0 + 2), T0 + 2)).status == 0
    assert ha.cache.get(HOA).nai == NAI


def test_recovered_binding_is_taken_over_even_when_the_cache_is_full() -> None:
    """Taking over a recovered binding adds no binding: the total cap must not refuse it
    (spec 5: a refresh of an existing binding is never refused by a cap; spec 10)."""
    ha = home_agent(max_bindings=1)
    ha.cache.put(_recovered())
    out = ha.receive(bu(1, now=T0 + 1), T0 + 1)
    assert the_ba(out).status == 0, ha.counters.snapshot()
    assert ha.cache.get(HOA).nai == NAI and not ha.cache.get(HOA).recovered
    assert len(ha.cache) == 1


def test_max_pending_dad_does_not_apply_without_dad() -> None:
    ha = home_agent(dad=False, max_pending_dad=0)
    assert _register_many(ha, 3) == [0, 0, 0]


# --- 11. property: random traffic keeps the invariants -------------------------------------------

MAX_BINDINGS, PER_NAI = 6, 3
NAIS = {f"mn{n}@example.net": MobilityKey(100 + n, bytes([n + 1]) * 20) for n in range(4)}
HOME_ADDRESSES = [hoa_n(n) for n in range(12)]
CARE_OFS = [COA, COA2, IPv6Address("2001:db8:4::1")]
ANY_ADDRESS = st.one_of(
    st.sampled_from(CARE_OFS + HOME_ADDRESSES + [HA, ANYCAST, SUBNET_ROUTER, FOREIGN]),
    link_local,
    multicast,
    ipv4_mapped,
    reserved_anycast,
    inside_home,
    st.sampled_from([IPv6Address("::"), IPv6Address("::1")]),
)


class HomeAgentTraffic(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ha = home_agent(
            dict(NAIS),
            dad=True,
            max_bindings=MAX_BINDINGS,
            max_bindings_per_nai=PER_NAI,
            max_pending_dad=4,
            error_rate_per_destination=2,
            error_rate_total=5,
        )
        self.now = T0
        self.seq = dict.fromkeys(NAIS, 0)

    def _feed(self, actions: list) -> None:
        for send in sends(actions):
            assert usable_unicast(send.destination), send
            assert send.destination not in self.ha.settings.addresses
            assert send.destination != ANYCAST
            packet = wire.parse_packet(send.data)
            assert packet.dst == send.destination
            assert len(send.data) <= MIN_MTU

    @rule(
        nai=st.sampled_from(sorted(NAIS)),
        hoa=st.sampled_from(HOME_ADDRESSES),
        coa=st.sampled_from(CARE_OFS),
        lifetime=st.sampled_from([0, 8, 60, 400]),
        seq_step=st.integers(-3, 5),
        forged=st.booleans(),
    )
    def valid_bu(self, nai, hoa, coa, lifetime, seq_step, forged) -> None:
        self.now += 0.01
        self.seq[nai] = (self.seq[nai] + seq_step) & 0xFFFF
        key = NAIS[nai] if not forged else MobilityKey(NAIS[nai].spi, b"x" * 20)
        packet = bu(
            self.seq[nai], src=coa, hoa=hoa, lifetime_s=lifetime, key=key, nai=nai, now=self.now
        )
        self._feed(self.ha.receive(packet, self.now))

    @rule(
        nai=st.sampled_from(sorted(NAIS)),
        hoa=st.sampled_from(HOME_ADDRESSES),
        coa=st.sampled_from(CARE_OFS),
    )
    def register_and_wait_for_dad(self, nai, hoa, coa) -> None:
        self.now += 0.01
        self.seq[nai] = (self.seq[nai] + 1) & 0xFFFF
        packet = bu(self.seq[nai], src=coa, hoa=hoa, key=NAIS[nai], nai=nai, now=self.now)
        self._feed(self.ha.receive(packet, self.now))
        self.now += 1.01
        self._feed(self.ha.handle_timer(self.now))

    @rule(
        src=ANY_ADDRESS,
        hoa=ANY_ADDRESS,
        alt=st.none() | ANY_ADDRESS,
        nai=st.sampled_from(sorted(NAIS)),
        seq=st.integers(0, 0xFFFF),
    )
    def odd_bu(self, src, hoa, alt, nai, seq) -> None:
        self.now += 0.01
        packet = bu(seq, src=src, hoa=hoa, alt=alt, key=NAIS[nai], nai=nai, now=self.now)
        self._feed(self.ha.receive(packet, self.now))

    @rule(src=ANY_ADDRESS, dst=st.sampled_from([ANYCAST, HA, SUBNET_ROUTER, FOREIGN]))
    def dhaad(self, src, dst) -> None:
        packet = wire.parse_packet(wire.build_packet(src, dst, wire.HAADRequest(3)))
        self._feed(self.ha.receive(packet, self.now))

    @rule(src=ANY_ADDRESS)
    def unknown_mh(self, src) -> None:
        packet = wire.parse_packet(wire.build_packet(src, HA, wire.UnknownMessage(42, bytes(10))))
        self._feed(self.ha.receive(packet, self.now))

    @rule(hoa=st.sampled_from(HOME_ADDRESSES), hop_limit=st.sampled_from([255, 254]))
    def defender(self, hoa, hop_limit) -> None:
        na = wire.NeighborAdvertisement(hoa, 0x20)
        data = wire.build_packet(IPv6Address("fe80::99"), ALL_NODES, na, hop_limit=hop_limit)
        self._feed(self.ha.receive(wire.parse_packet(data), self.now, interface="home0"))

    @rule(hoa=st.sampled_from(HOME_ADDRESSES))
    def dad_unavailable(self, hoa) -> None:
        self._feed(self.ha.dad_unavailable(hoa, "test", self.now))

    @rule(step=st.sampled_from([0.1, 0.5, 1.0, 3.0, 30.0, 500.0]))
    def tick(self, step) -> None:
        self.now += step
        self._feed(self.ha.handle_timer(self.now))

    @invariant()
    def bounded(self) -> None:
        cache = self.ha.cache
        assert len(cache) <= MAX_BINDINGS
        bindings = list(cache)
        for nai in NAIS:
            held = sum(1 for b in bindings if b.nai == nai)
            assert cache.count_for(nai) == held
            assert held <= PER_NAI
        for binding in bindings:
            home = binding.home_address
            assert home in PREFIX and home not in (HA, SUBNET_ROUTER)
            assert int(home) & (2**64 - 1) < RESERVED_IID_FIRST
            assert usable_unicast(binding.care_of_address)
            assert binding.care_of_address not in PREFIX


HomeAgentTraffic.TestCase.settings = settings(
    max_examples=100, stateful_step_count=60, deadline=None
)
test_random_traffic_keeps_invariants = HomeAgentTraffic.TestCase
