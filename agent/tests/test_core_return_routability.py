"""Return routability crypto and the correspondent node with route optimisation.

Every token, Kbm and authenticator the core produces or accepts is checked against the
RFC formulas recomputed in rr_reference with hashlib/hmac, never with the core's own code.
"""

from __future__ import annotations

import itertools
from ipaddress import IPv6Address

import pytest
import rr_reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from mip6agent import wire
from mip6agent.core import actions as act
from mip6agent.core import return_routability as rr
from mip6agent.core.correspondent import Correspondent, CorrespondentSettings
from mip6agent.core.ratelimit import ReplyLimiter
from mip6agent.wire.constants import BU_FLAG_A, BU_FLAG_H, BAStatus, BEStatus
from rr_reference import CN, COA, COA2, HOA, HOA2, T0, of_type, sent
from strategies import addresses

keys = st.binary(min_size=20, max_size=20)
nonces = st.binary(min_size=8, max_size=8)
tokens = st.binary(min_size=8, max_size=8)


# --- crypto against the RFC formulas ------------------------------------------------------


@given(keys, addresses, nonces, st.sampled_from([0, 1]))
def test_keygen_token_is_the_rfc_formula(kcn: bytes, address, nonce: bytes, kind: int) -> None:
    assert rr.keygen_token(kcn, address, nonce, kind) == ref.token(kcn, address, nonce, kind)


@given(tokens, st.one_of(st.none(), tokens))
def test_binding_key_is_sha1_of_the_tokens(home: bytes, careof: bytes | None) -> None:
    assert rr.binding_key(home, careof) == ref.kbm(home, careof)


@given(
    st.binary(min_size=20, max_size=20),
    addresses,
    addresses,
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.lists(st.builds(wire.NonceIndices, st.integers(0, 9), st.integers(0, 9)), max_size=2),
)
def test_sign_matches_the_rfc_and_verifies(
    kbm: bytes, care_of, cn, sequence: int, lifetime: int, options: list
) -> None:
    bu = rr.sign(wire.BindingUpdate(sequence, BU_FLAG_A, lifetime, options), kbm, care_of, cn)
    data = wire.build_packet(care_of, cn, bu, home_address=HOA)
    packet = wire.parse_packet(data, check_checksum=True)
    mh = packet.payload_bytes
    assert ref.bad_ok(kbm, care_of, cn, mh)  # also asserts: BAD last, no trailing padding
    assert rr.authorization_problem(mh, kbm, care_of, cn) is None
    # Any other key, care-of address or correspondent fails.
    assert rr.authorization_problem(mh, bytes(20), care_of, cn) is not None or kbm == bytes(20)
    other = IPv6Address(int(cn) ^ 1)
    assert rr.authorization_problem(mh, kbm, care_of, other) is not None


def test_authorization_needs_bad_last_without_padding() -> None:
    kbm = bytes(range(20))
    good = rr.sign(wire.BindingUpdate(1, 0, 10, [wire.NonceIndices(1, 2)]), kbm, COA, CN)
    mh = wire.encode_mh(good, HOA, CN)
    assert rr.authorization_problem(mh, kbm, COA, CN) is None
    # An option after the BAD, and a BAD of the wrong length, are refused.
    after = wire.BindingUpdate(1, 0, 10, [*good.options, wire.BindingRefreshAdvice(1)])
    assert "last" in rr.authorization_problem(wire.encode_mh(after, HOA, CN), kbm, COA, CN)
    short = wire.BindingUpdate(1, 0, 10, [wire.BindingAuthorizationData(bytes(8))])
    assert rr.authorization_problem(wire.encode_mh(short, HOA, CN), kbm, COA, CN) is not None
    flipped = bytearray(mh)
    flipped[-1] ^= 1
    assert rr.authorization_problem(bytes(flipped), kbm, COA, CN) == (
        "authenticator does not verify"
    )
    # The checksum field is not covered: the authenticator is computed over zero there.
    recheck = bytearray(mh)
    recheck[4:6] = b"\xff\xff"
    assert rr.authorization_problem(bytes(recheck), kbm, COA, CN) is None


def test_nonce_ring_rotates_every_30_seconds_and_expires_after_240() -> None:
    ring = rr.NonceRing(ref.Randomness())
    first = ring.current(T0)
    assert ring.current(T0 + 29.9) is first
    second = ring.current(T0 + 30)
    assert second.index == (first.index + 1) & 0xFFFF and second.value != first.value
    assert ring.lookup(first.index, T0 + 239.9) is first
    assert ring.lookup(first.index, T0 + 240) is None
    assert ring.lookup((first.index + 100) & 0xFFFF, T0) is None
    for step in range(100):
        ring.current(T0 + 30 * step)
    assert len(ring) <= 9  # bounded: 240 / 30 + 1


@given(st.floats(0, 10_000), st.floats(0, 29.999))
def test_an_index_is_usable_210s_after_first_use_and_never_past_240(
    start: float, wait: float
) -> None:
    """5.2.7: at least MAX_TOKEN_LIFETIME after first use, at most MAX_NONCE_LIFETIME."""
    ring = rr.NonceRing(ref.Randomness())
    ring.current(T0)  # some nonce exists already
    made = ring.current(T0 + start)
    first_use = made.created + wait
    used = ring.current(first_use)
    assert ring.lookup(used.index, first_use + rr.MAX_TOKEN_LIFETIME) is used
    assert ring.lookup(used.index, first_use + rr.MAX_NONCE_LIFETIME) is None


def test_new_kcn_keeps_the_old_nonces_verifiable() -> None:
    ring = rr.NonceRing(ref.Randomness(), kcn_lifetime=60)
    old = ring.current(T0)
    new = ring.current(T0 + 60)
    assert ring.kcn_generations == 2 and old.kcn != new.kcn
    assert ring.lookup(old.index, T0 + 61) is old  # still with the Kcn it was made under


def test_nonce_ring_rejects_an_interval_that_breaks_the_token_lifetime() -> None:
    with pytest.raises(ValueError):
        rr.NonceRing(ref.Randomness(), interval=31)


# --- the correspondent node ----------------------------------------------------------------


def correspondent(**settings: object) -> Correspondent:
    values: dict = {"route_optimization": True, **settings}
    return Correspondent(
        settings=CorrespondentSettings(**values),
        random_bytes=ref.Randomness(),
        limiter=ReplyLimiter(1000, 10000),
    )


class MobileSide:
    """Just enough of a mobile node to drive the correspondent: tokens and signed BUs."""

    def __init__(self, cn: Correspondent, home=HOA, care_of=COA) -> None:
        self.cn, self.home, self.care_of = cn, home, care_of
        self.sequence = 0

    def hot(self, now: float, cookie: bytes = b"H" * 8) -> wire.HomeTest:
        data = wire.build_packet(self.home, CN, wire.HomeTestInit(cookie))
        [reply] = sent(self.cn.receive(wire.parse_packet(data), now))
        assert isinstance(reply.payload, wire.HomeTest)
        assert (reply.src, reply.dst, reply.payload.cookie) == (CN, self.home, cookie)
        return reply.payload

    def cot(self, now: float, cookie: bytes = b"C" * 8) -> wire.CareofTest:
        data = wire.build_packet(self.care_of, CN, wire.CareofTestInit(cookie))
        [reply] = sent(self.cn.receive(wire.parse_packet(data), now))
        assert isinstance(reply.payload, wire.CareofTest)
        assert (reply.src, reply.dst, reply.payload.cookie) == (CN, self.care_of, cookie)
        return reply.payload

    def bu(
        self,
        hot: wire.HomeTest,
        cot: wire.CareofTest | None,
        lifetime: int = 105,
        flags: int = BU_FLAG_A,
        sequence: int | None = None,
        from_home: bool = False,
        sign_with: IPv6Address | None = None,
    ) -> tuple[wire.Packet, bytes]:
        if sequence is None:
            self.sequence += 1
            sequence = self.sequence
        key = ref.kbm(hot.token, cot.token if cot is not None else None)
        indices = wire.NonceIndices(hot.nonce_index, cot.nonce_index if cot else 0)
        src = self.home if from_home else self.care_of
        signer = sign_with or src
        bu = wire.BindingUpdate(sequence, flags, lifetime, [indices])
        bu = ref.signed_bu(bu, key, signer, CN)
        home = None if from_home else self.home
        return wire.parse_packet(wire.build_packet(src, CN, bu, home_address=home)), key


def test_hot_and_cot_carry_the_rfc_tokens_and_keep_no_state() -> None:
    cn = correspondent()
    mn = MobileSide(cn)
    hot, cot = mn.hot(T0), mn.cot(T0)
    nonce = cn.nonces.lookup(hot.nonce_index, T0)
    assert nonce is not None and hot.nonce_index == cot.nonce_index
    assert hot.token == ref.token(nonce.kcn, HOA, nonce.value, 0)
    assert cot.token == ref.token(nonce.kcn, COA, nonce.value, 1)
    assert cn.bindings == {} and cn.snapshot() == {} and cn.get_timer() is None
    assert cn.counters["mh_out.hot"] == 1 and cn.counters["mh_out.cot"] == 1


def test_test_init_with_a_home_address_option_is_ignored() -> None:
    cn = correspondent()
    data = wire.build_packet(COA, CN, wire.HomeTestInit(bytes(8)), home_address=HOA)
    assert cn.receive(wire.parse_packet(data), T0) == []
    assert cn.counters["rr_init_with_hao"] == 1


def test_hot_and_cot_are_rate_limited() -> None:
    cn = Correspondent(
        settings=CorrespondentSettings(route_optimization=True),
        random_bytes=ref.Randomness(),
        test_limiter=ReplyLimiter(5, 100),
    )
    data = wire.parse_packet(wire.build_packet(HOA, CN, wire.HomeTestInit(bytes(8))))
    answered = sum(len(sent(cn.receive(data, T0))) for _ in range(20))
    assert answered == 5 and cn.counters["reply_rate_limited"] == 15
    spoofed = wire.build_packet(IPv6Address("ff02::1"), CN, wire.CareofTestInit(bytes(8)))
    assert cn.receive(wire.parse_packet(spoofed), T0) == []


def test_binding_update_creates_a_binding_and_an_authenticated_ack() -> None:
    cn = correspondent()
    mn = MobileSide(cn)
    packet, key = mn.bu(mn.hot(T0), mn.cot(T0), lifetime=0xFFFF)
    out = cn.receive(packet, T0 + 1)
    assert of_type(out, act.InstallCorrespondentBinding) == [
        act.InstallCorrespondentBinding(HOA, COA, CN)
    ]
    [ba] = sent(out)
    assert (ba.src, ba.dst, ba.routing_header_type2.home_address) == (CN, COA, HOA)
    assert ba.payload.status == 0 and ba.payload.sequence == 1
    assert ba.payload.lifetime == 105  # MAX_RR_BINDING_LIFETIME, 420 s, in 4 s units
    assert ref.bad_ok(key, COA, CN, ba.payload_bytes)
    binding = cn.bindings[(HOA, CN)]
    assert binding.care_of_address == COA and binding.expires == T0 + 1 + 420
    assert cn.get_timer() == T0 + 421
    assert cn.snapshot()["bindings"][0]["care_of_address"] == str(COA)


def test_no_ack_without_the_a_bit() -> None:
    cn = correspondent()
    mn = MobileSide(cn)
    packet, _ = mn.bu(mn.hot(T0), mn.cot(T0), flags=0)
    out = cn.receive(packet, T0)
    assert sent(out) == [] and len(of_type(out, act.InstallCorrespondentBinding)) == 1


def test_bad_authenticator_is_dropped_silently() -> None:
    cn = correspondent()
    mn = MobileSide(cn)
    hot, cot = mn.hot(T0), mn.cot(T0)
    wrong = wire.CareofTest(cot.nonce_index, cot.cookie, bytes(8))  # a guessed token
    packet, _ = mn.bu(hot, wrong)
    assert sent(cn.receive(packet, T0)) == []
    assert cn.bindings == {} and cn.counters["rr_auth_failed"] == 1


def test_binding_update_without_prior_test_init_is_dropped() -> None:
    """Tokens for another home address, or made up, do not authorise this one."""
    cn = correspondent()
    other = MobileSide(cn, home=HOA2)
    hot, cot = other.hot(T0), other.cot(T0)  # valid indices, but HOA never did a HoTI
    mn = MobileSide(cn)
    packet, _ = mn.bu(hot, cot)
    assert sent(cn.receive(packet, T0)) == [] and cn.bindings == {}
    # Indices that were never handed out at all earn "expired nonces" (138), unsigned.
    made_up = wire.HomeTest((hot.nonce_index + 50) & 0xFFFF, bytes(8), bytes(8))
    made_up_cot = wire.CareofTest((hot.nonce_index + 51) & 0xFFFF, bytes(8), bytes(8))
    packet, _ = mn.bu(made_up, made_up_cot)
    [ba] = sent(cn.receive(packet, T0))
    assert ba.payload.status == BAStatus.EXPIRED_NONCES and ba.payload.options == []


@pytest.mark.parametrize(
    ("home_age", "careof_age", "status"),
    [
        (241, 0, BAStatus.EXPIRED_HOME_NONCE_INDEX),
        (0, 241, BAStatus.EXPIRED_COA_NONCE_INDEX),
        (241, 241, BAStatus.EXPIRED_NONCES),
    ],
)
def test_stale_nonce_indices(home_age: float, careof_age: float, status: int) -> None:
    cn = correspondent()
    mn = MobileSide(cn)
    now = T0 + 241
    # Asked in time order: the ring's clock only moves forward.
    if home_age >= careof_age:
        hot = mn.hot(now - home_age)
        cot = mn.cot(now - careof_age)
    else:
        cot = mn.cot(now - careof_age)
        hot = mn.hot(now - home_age)
    packet, _ = mn.bu(hot, cot, flags=0)  # no A bit: errors are acknowledged anyway
    [ba] = sent(cn.receive(packet, now))
    assert ba.payload.status == status and ba.dst == COA
    assert ba.routing_header_type2.home_address == HOA
    assert cn.bindings == {} and cn.counters["rr_nonce_expired"] == 1


def test_sequence_rules_and_replay() -> None:
    cn = correspondent()
    mn = MobileSide(cn)
    hot, cot = mn.hot(T0), mn.cot(T0)
    first, key = mn.bu(hot, cot, sequence=100)
    assert sent(cn.receive(first, T0))[0].payload.status == 0
    # The same BU again (a replay) and an older number: 135 with the last accepted one.
    for packet in (first, mn.bu(hot, cot, sequence=99)[0]):
        [ba] = sent(cn.receive(packet, T0 + 1))
        assert ba.payload.status == BAStatus.SEQUENCE_OUT_OF_WINDOW
        assert ba.payload.sequence == 100 and ref.bad_ok(key, COA, CN, ba.payload_bytes)
    # "Newer" is modulo 2^16: up to 2^15 - 1 ahead, across the wrap too.
    ahead = mn.bu(hot, cot, sequence=100 + 0x7FFF)[0]
    assert sent(cn.receive(ahead, T0 + 2))[0].payload.status == 0
    wrapped = mn.bu(hot, cot, sequence=(100 + 0x7FFF + 0x7FFF) & 0xFFFF)[0]
    assert sent(cn.receive(wrapped, T0 + 3))[0].payload.status == 0
    assert cn.counters["sequence_mismatch"] == 2


def test_first_binding_accepts_any_sequence_number() -> None:
    cn = correspondent()
    mn = MobileSide(cn)
    packet, _ = mn.bu(mn.hot(T0), mn.cot(T0), sequence=0xFFFF)
    assert sent(cn.receive(packet, T0))[0].payload.status == 0


def test_deregistration_uses_the_home_token_only_and_blocks_replays() -> None:
    cn = correspondent()
    mn = MobileSide(cn)
    hot, cot = mn.hot(T0), mn.cot(T0)
    register, _ = mn.bu(hot, cot)
    cn.receive(register, T0)
    # Back home: BU from the home address, lifetime 0, Kbm = SHA1(home keygen token).
    dereg, key = mn.bu(hot, None, lifetime=0, from_home=True)
    out = cn.receive(dereg, T0 + 5)
    assert of_type(out, act.RemoveCorrespondentBinding) == [act.RemoveCorrespondentBinding(HOA, CN)]
    [ba] = sent(out)
    assert ba.dst == HOA and ba.routing_header_type2 is None and ba.payload.status == 0
    assert ref.bad_ok(key, HOA, CN, ba.payload_bytes)  # care-of address = home address
    assert cn.bindings == {}
    # 5.2.8: replaying the first BU while its nonces are still good must not bring it back.
    [nack] = sent(cn.receive(register, T0 + 6))
    assert nack.payload.status == BAStatus.SEQUENCE_OUT_OF_WINDOW and cn.bindings == {}
    # Once the nonces are gone, the record goes too (and the replay earns 138 instead).
    cn.handle_timer(T0 + 241)
    assert cn.get_timer() is None
    assert sent(cn.receive(register, T0 + 241))[0].payload.status == BAStatus.EXPIRED_NONCES


@pytest.mark.parametrize("signer", [HOA, COA])
def test_deregistration_from_a_care_of_address(signer: IPv6Address) -> None:
    """Lifetime 0 sent from the CoA: 6.2.7 signs it with the home address as "care-of
    address", UMIP with the CoA it came from; both are taken, the BA signed alike."""
    cn = correspondent()
    mn = MobileSide(cn)
    hot, cot = mn.hot(T0), mn.cot(T0)
    cn.receive(mn.bu(hot, cot)[0], T0)
    packet, key = mn.bu(hot, None, lifetime=0, sign_with=signer)
    out = cn.receive(packet, T0 + 1)
    [ba] = sent(out)
    assert ba.payload.status == 0 and ref.bad_ok(key, signer, CN, ba.payload_bytes)
    assert (ba.dst, ba.routing_header_type2.home_address) == (COA, HOA)
    assert cn.bindings == {} and of_type(out, act.RemoveCorrespondentBinding)
    other = IPv6Address("2001:db8:9::1")
    packet, _ = mn.bu(hot, None, lifetime=0, sign_with=other)
    assert sent(cn.receive(packet, T0 + 2)) == []


def test_deregistration_with_a_care_of_token_key_fails() -> None:
    """Lifetime 0: a Kbm that includes a care-of token is not the RFC's; dropped."""
    cn = correspondent()
    mn = MobileSide(cn)
    hot, cot = mn.hot(T0), mn.cot(T0)
    cn.receive(mn.bu(hot, cot)[0], T0)
    packet, _ = mn.bu(hot, cot, lifetime=0, from_home=True)
    assert sent(cn.receive(packet, T0)) == [] and (HOA, CN) in cn.bindings


def test_home_registration_is_refused() -> None:
    cn = correspondent()
    bu = wire.BindingUpdate(1, BU_FLAG_A | BU_FLAG_H, 100)
    [ba] = sent(cn.receive(wire.parse_packet(wire.build_packet(COA, CN, bu, home_address=HOA)), T0))
    assert ba.payload.status == BAStatus.HOME_REGISTRATION_NOT_SUPPORTED
    with_indices = wire.BindingUpdate(1, BU_FLAG_A | BU_FLAG_H, 100, [wire.NonceIndices(1, 1)])
    data = wire.build_packet(COA, CN, with_indices, home_address=HOA)
    assert cn.receive(wire.parse_packet(data), T0) == []


def test_binding_update_without_nonce_indices_is_dropped() -> None:
    cn = correspondent()
    bu = ref.signed_bu(wire.BindingUpdate(1, BU_FLAG_A, 100), bytes(20), COA, CN)
    data = wire.build_packet(COA, CN, bu, home_address=HOA)
    assert cn.receive(wire.parse_packet(data), T0) == []
    assert cn.counters["bu_discarded"] == 1


def test_binding_cache_cap() -> None:
    cn = correspondent(max_bindings=1)
    one, two = MobileSide(cn), MobileSide(cn, home=HOA2, care_of=COA2)
    assert sent(cn.receive(one.bu(one.hot(T0), one.cot(T0))[0], T0))[0].payload.status == 0
    packet, key = two.bu(two.hot(T0), two.cot(T0))
    [ba] = sent(cn.receive(packet, T0))
    assert ba.payload.status == BAStatus.INSUFFICIENT_RESOURCES
    assert ref.bad_ok(key, COA2, CN, ba.payload_bytes) and len(cn.bindings) == 1
    # The binding already there is refreshed and moved all the same.
    one.care_of = COA2
    assert sent(cn.receive(one.bu(one.hot(T0), one.cot(T0))[0], T0))[0].payload.status == 0
    assert cn.bindings[(HOA, CN)].care_of_address == COA2


def test_alternate_care_of_address_is_the_one_registered_and_signed() -> None:
    """9.5.1: with an Alternate Care-of Address option, that address is in the
    authenticator and in the binding; its care-of keygen token is for that address."""
    cn = correspondent()
    mn = MobileSide(cn, care_of=COA2)
    hot, cot = mn.hot(T0), mn.cot(T0)  # CoTI from COA2
    key = ref.kbm(hot.token, cot.token)
    indices = wire.NonceIndices(hot.nonce_index, cot.nonce_index)
    options = [wire.AlternateCareofAddress(COA2), indices]
    bu = ref.signed_bu(wire.BindingUpdate(1, BU_FLAG_A, 50, options), key, COA2, CN)
    packet = wire.parse_packet(wire.build_packet(COA, CN, bu, home_address=HOA))
    out = cn.receive(packet, T0)
    [ba] = sent(out)
    assert ba.payload.status == 0 and ref.bad_ok(key, COA2, CN, ba.payload_bytes)
    assert ba.dst == COA  # the BU's source, with RH2 (9.5.4)
    assert cn.bindings[(HOA, CN)].care_of_address == COA2
    # Signed with the source address instead: not accepted.
    wrong = ref.signed_bu(wire.BindingUpdate(2, BU_FLAG_A, 50, options), key, COA, CN)
    packet = wire.parse_packet(wire.build_packet(COA, CN, wrong, home_address=HOA))
    assert sent(cn.receive(packet, T0)) == []


def test_handover_moves_the_binding() -> None:
    cn = correspondent()
    mn = MobileSide(cn)
    hot = mn.hot(T0)
    cn.receive(mn.bu(hot, mn.cot(T0))[0], T0)
    mn.care_of = COA2
    out = cn.receive(mn.bu(hot, mn.cot(T0 + 10))[0], T0 + 10)  # home token reused
    assert of_type(out, act.InstallCorrespondentBinding) == [
        act.InstallCorrespondentBinding(HOA, COA2, CN)
    ]
    assert sent(out)[0].dst == COA2


def test_binding_expires() -> None:
    cn = correspondent()
    mn = MobileSide(cn)
    cn.receive(mn.bu(mn.hot(T0), mn.cot(T0), lifetime=10)[0], T0)  # 40 s
    assert cn.handle_timer(T0 + 39) == []
    out = cn.handle_timer(T0 + 40)
    assert of_type(out, act.RemoveCorrespondentBinding) == [act.RemoveCorrespondentBinding(HOA, CN)]
    assert cn.counters["cn_binding_expired"] == 1


def test_binding_refresh_request_only_for_a_binding_in_use() -> None:
    cn = correspondent(binding_refresh_request_before=30)
    mn = MobileSide(cn)
    cn.receive(mn.bu(mn.hot(T0), mn.cot(T0))[0], T0)
    assert cn.get_timer() == T0 + 420  # unused: no BRR, only the expiry
    assert cn.note_use(HOA, T0 + 100) and not cn.note_use(HOA2, T0 + 100)
    assert cn.get_timer() == T0 + 390
    assert cn.handle_timer(T0 + 389) == []
    [brr] = sent(cn.handle_timer(T0 + 390))
    assert isinstance(brr.payload, wire.BindingRefreshRequest)
    assert (brr.src, brr.dst, brr.routing_header_type2.home_address) == (CN, COA, HOA)
    assert cn.handle_timer(T0 + 391) == []  # one per registration
    unused = correspondent(binding_refresh_request_before=30)
    mn = MobileSide(unused)
    unused.receive(mn.bu(mn.hot(T0), mn.cot(T0))[0], T0)
    assert sent(unused.handle_timer(T0 + 390)) == []


def test_home_address_option_needs_a_binding_from_that_care_of_address() -> None:
    cn = correspondent()
    mn = MobileSide(cn)
    echo = wire.UnknownICMPv6(128, 0, bytes(4))
    data = wire.parse_packet(wire.build_packet(COA, CN, echo, home_address=HOA))
    [be] = sent(cn.receive(data, T0))
    assert be.payload.status == BEStatus.UNKNOWN_BINDING_FOR_HAO and be.dst == COA
    cn.receive(mn.bu(mn.hot(T0), mn.cot(T0))[0], T0)
    assert cn.receive(data, T0 + 1) == [] and cn.bindings[(HOA, CN)].last_use == T0 + 1
    elsewhere = wire.parse_packet(wire.build_packet(COA2, CN, echo, home_address=HOA))
    assert sent(cn.receive(elsewhere, T0 + 1))[0].payload.status == 1


def test_route_optimization_off_keeps_binding_errors() -> None:
    cn = Correspondent(random_bytes=ref.Randomness())
    data = wire.parse_packet(wire.build_packet(HOA, CN, wire.HomeTestInit(bytes(8))))
    [be] = sent(cn.receive(data, T0))
    assert be.payload.status == BEStatus.UNRECOGNIZED_MH_TYPE


def test_route_optimization_off_draws_no_randomness() -> None:
    randomness = ref.Randomness()
    cn = Correspondent(random_bytes=randomness)
    for message in (wire.HomeTestInit(bytes(8)), wire.BindingUpdate(1, BU_FLAG_A, 10)):
        cn.receive(wire.parse_packet(wire.build_packet(HOA, CN, message)), T0)
    assert randomness.given == [] and cn.get_timer() is None


def test_switching_route_optimization_off_removes_bindings() -> None:
    cn = correspondent()
    mn = MobileSide(cn)
    cn.receive(mn.bu(mn.hot(T0), mn.cot(T0))[0], T0)
    out = cn.reconfigure(CorrespondentSettings(route_optimization=False), T0 + 1)
    assert of_type(out, act.RemoveCorrespondentBinding) and cn.bindings == {}


def test_retired_records_are_bounded_and_retire_their_nonces() -> None:
    """More deregistered home addresses than the cap: the oldest nonces stop working."""
    cn = correspondent(max_bindings=2)
    homes = [IPv6Address(int(HOA) + i) for i in range(3)]
    for i, home in enumerate(homes):
        mn = MobileSide(cn, home=home)
        hot = mn.hot(T0 + 30 * i)
        cn.receive(mn.bu(hot, None, lifetime=0, from_home=True)[0], T0 + 30 * i)
    assert len(cn._retired) == 2 and cn.counters["rr_nonces_retired"] == 1


@given(st.integers(0, 200), st.integers(0, 7))
def test_any_changed_octet_is_never_accepted(position: int, bit: int) -> None:
    """Flip one bit of the MH (checksum fixed up): never a binding, never an accepted BA."""
    cn = correspondent()
    mn = MobileSide(cn)
    packet, _ = mn.bu(mn.hot(T0), mn.cot(T0))
    mh = bytearray(packet.payload_bytes)
    position %= len(mh)
    if position in (4, 5):
        return  # the checksum octets: not covered by the authenticator, by design
    mh[position] ^= 1 << bit
    mh[4:6] = b"\x00\x00"
    csum = wire.upper_layer_checksum(HOA, CN, 135, bytes(mh))
    mh[4:6] = csum.to_bytes(2, "big")
    raw = wire.build_packet(COA, CN, wire.BindingError(0, HOA), home_address=HOA)
    head = bytearray(raw[: len(raw) - 24])
    head[4:6] = (len(head) - 40 + len(mh)).to_bytes(2, "big")
    try:
        changed = wire.parse_packet(bytes(head) + bytes(mh))
    except wire.DecodeError:
        return
    out = cn.receive(changed, T0)
    assert of_type(out, act.InstallCorrespondentBinding) == []
    for reply in sent(out):
        assert not (isinstance(reply.payload, wire.BindingAck) and reply.payload.accepted)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 0xFFFF),
    st.lists(st.integers(0, 1000), min_size=1, max_size=6, unique=True),
    st.randoms(use_true_random=False),
    st.lists(st.floats(0, 5), min_size=24, max_size=24),
)
def test_replayed_and_reordered_updates_never_go_back(
    base: int, offsets: list[int], shuffle, gaps: list[float]
) -> None:
    """BUs (registrations and a deregistration) delivered in any order, each three times:
    every accepted one is newer than the one accepted before it, none twice.

    The numbers span less than 2^15, as one mobile node's do within a nonce lifetime:
    "newer modulo 2^16" is not transitive over a wider span (0 < 2 < 32769 < 0).
    """
    sequences = [(base + offset) & 0xFFFF for offset in offsets]
    cn = correspondent()
    mn = MobileSide(cn)
    hot, cot = mn.hot(T0), mn.cot(T0)
    packets = [mn.bu(hot, cot, sequence=s)[0] for s in sequences]
    packets.append(mn.bu(hot, None, lifetime=0, from_home=True, sequence=(base + 1001) & 0xFFFF)[0])
    deliveries = packets * 3
    shuffle.shuffle(deliveries)
    now, accepted = T0, []
    for packet, gap in zip(deliveries, gaps, strict=False):
        now += gap
        for reply in sent(cn.receive(packet, now)):
            if reply.payload.status == 0:
                accepted.append(reply.payload.sequence)
    for older, newer in itertools.pairwise(accepted):
        assert 0 < (newer - older) % 0x10000 < 0x8000
    assert len(accepted) == len(set(accepted))
