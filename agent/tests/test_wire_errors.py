"""Malformed input raises DecodeError, with an offset and a reason, and nothing else."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from mip6agent import wire
from mip6agent.wire import DecodeError
from strategies import addresses, icmpv6_messages, mobility_messages


def _only_decode_error(decoder, data: bytes) -> None:
    try:
        decoder(data)
    except DecodeError as exc:
        assert 0 <= exc.offset <= len(data)
        assert exc.reason


def parse_packet_checked(data: bytes) -> wire.Packet:
    return wire.parse_packet(data, check_checksum=True)


DECODERS = [wire.parse_mh, wire.decode_icmpv6, wire.parse_packet, parse_packet_checked]


@pytest.mark.parametrize("decoder", DECODERS, ids=lambda d: d.__name__)
@given(data=st.binary(max_size=300))
@example(data=b"")
def test_random_bytes(decoder, data: bytes) -> None:
    _only_decode_error(decoder, data)


@st.composite
def mutated_packets(draw: st.DrawFn) -> bytes:
    message = draw(mobility_messages | icmpv6_messages)
    src, dst, home = draw(addresses), draw(addresses), draw(addresses)
    data = bytearray(
        wire.build_packet(
            src,
            dst,
            message,
            home_address=home if draw(st.booleans()) else None,
            routing_home_address=home if draw(st.booleans()) else None,
        )
    )
    for _ in range(draw(st.integers(1, 4))):
        choice = draw(st.integers(0, 2))
        if choice == 0 and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif choice == 1:
            data = data[: draw(st.integers(0, len(data)))]
        else:
            data += draw(st.binary(max_size=16))
    return bytes(data)


@given(mutated_packets())
def test_mutated_packets(data: bytes) -> None:
    _only_decode_error(wire.parse_packet, data)
    _only_decode_error(parse_packet_checked, data)


@given(mobility_messages, st.integers(0, 255), st.integers(0, 255))
def test_mutated_mobility_header(message, position: int, value: int) -> None:
    data = bytearray(wire.encode_mh(message))
    data[position % len(data)] = value
    _only_decode_error(wire.parse_mh, bytes(data))


@pytest.mark.long
@given(mutated_packets())
def test_mutated_packets_long(data: bytes) -> None:
    _only_decode_error(wire.parse_packet, data)


@pytest.mark.long
@pytest.mark.parametrize("decoder", DECODERS, ids=lambda d: d.__name__)
@given(data=st.binary(max_size=600))
def test_random_bytes_long(decoder, data: bytes) -> None:
    _only_decode_error(decoder, data)


def _bu(**overrides) -> bytearray:
    return bytearray(wire.encode_mh(wire.BindingUpdate(1, 0x8000, 5, [wire.NonceIndices(1, 2)])))


@pytest.mark.parametrize(
    ("mutate", "offset", "words"),
    [
        (lambda d: d[:5], 0, "truncated"),
        (lambda d: d.__setitem__(0, 6) or d, 0, "payload proto 6"),
        (lambda d: d.__setitem__(1, 9) or d, 1, "exceeds"),
        (lambda d: d.__setitem__(1, 0) or d, 1, "too short"),
        (lambda d: d.__setitem__(13, 3) or d, 13, "bad option length 3 for Nonce Indices"),
        (lambda d: d.__setitem__(13, 30) or d, 13, "runs past"),
    ],
    ids=[
        "truncated",
        "payload-proto",
        "length-too-long",
        "length-too-short",
        "option-length",
        "option-overrun",
    ],
)
def test_error_offsets_and_reasons(mutate, offset: int, words: str) -> None:
    data = mutate(_bu())
    with pytest.raises(DecodeError) as info:
        wire.parse_mh(bytes(data))
    assert info.value.offset == offset
    assert words in info.value.reason


def test_length_mismatch_with_trailing_bytes() -> None:
    with pytest.raises(DecodeError, match="header length says"):
        wire.parse_mh(bytes(_bu()) + bytes(8))


def test_bad_checksum_detected_when_checked() -> None:
    from ipaddress import IPv6Address

    src, dst = IPv6Address("2001:db8::1"), IPv6Address("2001:db8::2")
    data = bytearray(wire.build_packet(src, dst, wire.BindingUpdate(1, 0, 1)))
    assert wire.parse_packet(bytes(data)).checksum_ok()
    data[44] ^= 0x01
    assert not wire.parse_packet(bytes(data)).checksum_ok()
    with pytest.raises(DecodeError, match="bad checksum") as info:
        wire.parse_packet(bytes(data), check_checksum=True)
    assert info.value.offset == 44  # the MH checksum field, right after the IPv6 header


def test_bad_icmpv6_checksum_with_rh2_raises_when_checked() -> None:
    from ipaddress import IPv6Address

    src, dst, home = (IPv6Address(f"2001:db8::{n}") for n in (1, 2, 3))
    data = bytearray(
        wire.build_packet(src, dst, wire.MobilePrefixAdvertisement(5), routing_home_address=home)
    )
    wire.parse_packet(bytes(data), check_checksum=True)  # fine as built
    data[40 + 24 + 2] ^= 0x10
    with pytest.raises(DecodeError, match="bad checksum") as info:
        wire.parse_packet(bytes(data), check_checksum=True)
    assert info.value.offset == 40 + 24 + 2


@pytest.mark.long
def test_fuzz_target_runs_clean() -> None:
    import fuzz_decoder

    assert fuzz_decoder.main(seconds=20) == 0
