"""encode -> decode returns the same value, for every message and option type."""

from __future__ import annotations

from ipaddress import IPv6Address

from hypothesis import given
from hypothesis import strategies as st
from mip6agent import wire
from strategies import addresses, icmpv6_messages, mobility_messages


@given(mobility_messages)
def test_mobility_header_roundtrip(message: wire.MobilityMessage) -> None:
    data = wire.encode_mh(message)
    assert len(data) % 8 == 0
    assert data[1] == len(data) // 8 - 1
    assert wire.parse_mh(data) == message


@given(mobility_messages)
def test_options_meet_alignment(message: wire.MobilityMessage) -> None:
    """Walk the encoded options by hand and check each xn+y rule (RFC 6275 6.2.1)."""
    if isinstance(message, wire.UnknownMessage):
        return
    data = wire.encode_mh(message)
    fixed = {0: 8, 1: 16, 2: 16, 3: 24, 4: 24, 5: 12, 6: 12, 7: 24}[data[2]]
    rules = {2: (2, 0), 3: (8, 6), 4: (2, 0), 5: (8, 2), 9: (4, 1), 10: (8, 2)}
    pos, seen = fixed, []
    while pos < len(data):
        kind = data[pos]
        if kind == 0:
            pos += 1
            continue
        if kind != 1:
            seen.append(kind)
            mod, rem = rules.get(kind, (1, 0))
            assert pos % mod == rem, f"option {kind} at {pos}"
        pos += 2 + data[pos + 1]
    assert pos == len(data)
    assert seen == [o.TYPE for o in message.options]
    if seen and seen[-1] == 9:
        assert pos == len(data)


@given(icmpv6_messages)
def test_icmpv6_roundtrip(message: wire.ICMPv6Message) -> None:
    data = wire.encode_icmpv6(message)
    assert wire.decode_icmpv6(data) == message


@given(
    mobility_messages | icmpv6_messages,
    addresses,
    addresses,
    addresses,
    st.booleans(),
    st.booleans(),
)
def test_packet_roundtrip_and_home_address_checksum(
    message, src: IPv6Address, dst: IPv6Address, home: IPv6Address, hao: bool, rh2: bool
) -> None:
    data = wire.build_packet(
        src,
        dst,
        message,
        home_address=home if hao else None,
        routing_home_address=home if rh2 else None,
    )
    packet = wire.parse_packet(data)
    assert packet.src == src and packet.dst == dst
    assert packet.home_address_option == (home if hao else None)
    assert (packet.routing_header_type2 is not None) == rh2
    assert packet.payload == message
    assert packet.checksum_ok()
    # The pseudo-header uses the home address, so the outer addresses alone must not verify,
    # unless they sum to the same one's complement value (then no checksum can tell).
    pseudo = _fold(home if hao else src) + _fold(home if rh2 else dst)
    if pseudo % 0xFFFF != (_fold(src) + _fold(dst)) % 0xFFFF:
        outer = wire.verify_upper_layer_checksum(src, dst, packet.protocol, packet.payload_bytes)
        assert not outer


def _fold(address: IPv6Address) -> int:
    return int.from_bytes(address.packed, "big") % 0xFFFF


def test_message_authentication_is_last_without_trailing_padding() -> None:
    bu = wire.BindingUpdate(
        1,
        0xC000,
        10,
        [
            wire.MobileNodeIdentifier(b"mn@example.net"),
            wire.MessageIdentification(1),
            wire.MessageAuthentication(7, bytes(12)),
        ],
    )
    data = wire.encode_mh(bu)
    # the last 19 octets are exactly the authentication option, with no padding after it
    assert data[-19] == 9 and data[-18] == 17
