"""Packets built by our encoder, decoded by tshark, compared with what we encoded.

The expected values are computed here from the message objects, not by our decoder or
mip6dump, so a wrong byte in the encoder shows up as a tshark field that disagrees.
"""

from __future__ import annotations

import socket
from ipaddress import IPv6Address
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from mip6agent import wire
from strategies import addresses, cookies, u8, u16, u32, u64
from tshark import tshark_json, write_pcap

# Option, MH and ND types tshark does not know, so it prints our unknown ones as unknown.
unknown_mobility_options = st.builds(
    wire.UnknownMobilityOption, st.integers(200, 250), st.binary(max_size=24)
)
# tshark 4.0 leaves out identifiers shorter than 3 octets; real NAIs are longer anyway.
nai = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.@-", min_size=3, max_size=40)
mobility_options = st.one_of(
    st.builds(wire.BindingRefreshAdvice, u16),
    st.builds(wire.AlternateCareofAddress, addresses),
    st.builds(wire.NonceIndices, u16, u16),
    st.builds(wire.BindingAuthorizationData, st.binary(min_size=12, max_size=12)),
    st.builds(wire.MobileNodeIdentifier, nai.map(str.encode), st.just(1)),
    st.builds(wire.MessageIdentification, u64),
    unknown_mobility_options,
)
authentication = st.builds(
    wire.MessageAuthentication, u32, st.binary(min_size=12, max_size=20), st.sampled_from([1, 2])
)
option_lists = st.tuples(
    st.lists(mobility_options, max_size=4), st.lists(authentication, max_size=1)
).map(lambda pair: pair[0] + pair[1])

mobility_messages = st.one_of(
    st.builds(wire.BindingRefreshRequest, option_lists),
    st.builds(wire.HomeTestInit, cookies, option_lists),
    st.builds(wire.CareofTestInit, cookies, option_lists),
    st.builds(wire.HomeTest, u16, cookies, cookies, option_lists),
    st.builds(wire.CareofTest, u16, cookies, cookies, option_lists),
    st.builds(wire.BindingUpdate, u16, u16, u16, option_lists),
    st.builds(wire.BindingAck, u8, u8, u16, u16, option_lists),
    st.builds(wire.BindingError, u8, addresses, option_lists),
)
nd_options = st.one_of(
    st.builds(wire.PrefixInformation, st.integers(0, 128), u8, u32, u32, addresses),
    st.builds(wire.AdvertisementInterval, u32),
    st.builds(wire.HomeAgentInformation, u16, u16, st.just(0)),
    st.builds(wire.MTUOption, u32),
)
icmpv6_messages = st.one_of(
    st.builds(wire.HAADRequest, u16),
    st.builds(wire.HAADReply, u16, st.lists(addresses, max_size=4)),
    st.builds(wire.MobilePrefixSolicitation, u16),
    st.builds(
        wire.MobilePrefixAdvertisement,
        u16,
        u8,
        st.lists(
            st.builds(wire.PrefixInformation, st.integers(0, 128), u8, u32, u32, addresses),
            max_size=3,
        ),
    ),
    st.builds(wire.RouterAdvertisement, u8, u8, u16, u32, u32, st.lists(nd_options, max_size=5)),
)


def ntop(address: IPv6Address) -> str:
    return socket.inet_ntop(socket.AF_INET6, address.packed)


def bit(value: int, mask: int) -> str:
    return "1" if value & mask else "0"


def expected_mobility(message: wire.MobilityMessage) -> dict[str, list[str]]:
    exp: dict[str, list[str]] = {"mip6.proto": ["59"], "mip6.mhtype": [str(message.MH_TYPE)]}
    if isinstance(message, wire.BindingUpdate):
        exp["mip6.bu.seqnr"] = [str(message.sequence)]
        exp["mip6.bu.lifetime"] = [str(message.lifetime)]
        for name, mask in (
            ("a", 0x8000),
            ("h", 0x4000),
            ("l", 0x2000),
            ("k", 0x1000),
            ("m", 0x800),
        ):
            exp[f"mip6.bu.{name}_flag"] = [bit(message.flags, mask)]
    elif isinstance(message, wire.BindingAck):
        exp["mip6.ba.status"] = [str(message.status)]
        exp["mip6.ba.k_flag"] = [bit(message.flags, 0x80)]
        exp["mip6.ba.seqnr"] = [str(message.sequence)]
        exp["mip6.ba.lifetime"] = [str(message.lifetime)]
    elif isinstance(message, wire.BindingError):
        exp["mip6.be.status"] = [str(message.status)]
        exp["mip6.be.haddr"] = [ntop(message.home_address)]
    elif isinstance(message, wire.HomeTestInit):
        exp["mip6.hoti.cookie"] = ["0x" + message.cookie.hex()]
    elif isinstance(message, wire.CareofTestInit):
        exp["mip6.coti.cookie"] = ["0x" + message.cookie.hex()]
    elif isinstance(message, wire.HomeTest):
        exp["mip6.hot.nindex"] = [str(message.nonce_index)]
        exp["mip6.hot.cookie"] = ["0x" + message.cookie.hex()]
        exp["mip6.hot.token"] = ["0x" + message.token.hex()]
    elif isinstance(message, wire.CareofTest):
        exp["mip6.cot.nindex"] = [str(message.nonce_index)]
        exp["mip6.cot.cookie"] = ["0x" + message.cookie.hex()]
        exp["mip6.hot.token"] = ["0x" + message.token.hex()]  # tshark's name for both tokens
    values: dict[str, list[str]] = {}
    for option in message.options:
        pairs: list[tuple[str, str]] = []
        if isinstance(option, wire.BindingRefreshAdvice):
            pairs = [("mip6.bra.interval", str(option.interval))]
        elif isinstance(option, wire.AlternateCareofAddress):
            pairs = [("mip6.acoa.acoa", ntop(option.address))]
        elif isinstance(option, wire.NonceIndices):
            pairs = [
                ("mip6.ni.hni", str(option.home_nonce_index)),
                ("mip6.ni.cni", str(option.careof_nonce_index)),
            ]
        elif isinstance(option, wire.BindingAuthorizationData):
            pairs = [("mip6.bad.auth", option.authenticator.hex(":"))]
        elif isinstance(option, wire.MobileNodeIdentifier):
            pairs = [
                ("mip6.mnid.subtype", str(option.subtype)),
                ("mip6.mnid.identifier", option.identifier.decode()),
            ]
        elif isinstance(option, wire.MessageAuthentication):
            # tshark 4.0 shows two octets fewer of the authenticator than the option holds.
            pairs = [
                ("mip6.auth.subtype", str(option.subtype)),
                ("mip6.auth.mobility_spi", str(option.spi)),
                ("mip6.auth.auth_data", option.authenticator[:-2].hex(":")),
            ]
        for name, value in pairs:
            values.setdefault(name, []).append(value)
    exp.update(values)
    return exp


def expected_icmpv6(message: wire.ICMPv6Message) -> dict[str, list[str]]:
    exp: dict[str, list[str]] = {
        "icmpv6.type": [str(message.TYPE)],
        "icmpv6.checksum.status": ["1"],
    }
    if isinstance(message, (wire.HAADRequest, wire.HAADReply, wire.MobilePrefixSolicitation)):
        exp["icmpv6.mip6.identifier"] = [str(message.identifier)]
    if isinstance(message, wire.HAADReply) and message.home_agents:
        exp["icmpv6.mip6.home_agent_address"] = [ntop(a) for a in message.home_agents]
    if isinstance(message, wire.MobilePrefixAdvertisement):
        exp["icmpv6.mip6.identifier"] = [str(message.identifier)]
        exp["icmpv6.mip6.flag.m"] = [bit(message.flags, 0x80)]
        exp["icmpv6.mip6.flag.o"] = [bit(message.flags, 0x40)]
    if isinstance(message, wire.RouterAdvertisement):
        exp["icmpv6.nd.ra.cur_hop_limit"] = [str(message.cur_hop_limit)]
        exp["icmpv6.nd.ra.flag.h"] = [bit(message.flags, 0x20)]
        exp["icmpv6.nd.ra.flag.m"] = [bit(message.flags, 0x80)]
        exp["icmpv6.nd.ra.router_lifetime"] = [str(message.router_lifetime)]
        exp["icmpv6.nd.ra.reachable_time"] = [str(message.reachable_time)]
    options = getattr(message, "options", [])
    for option in options:
        pairs: list[tuple[str, str]] = []
        if isinstance(option, wire.PrefixInformation):
            pairs = [
                ("icmpv6.opt.prefix.length", str(option.prefix_length)),
                ("icmpv6.opt.prefix.flag.r", bit(option.flags, 0x20)),
                ("icmpv6.opt.prefix.flag.l", bit(option.flags, 0x80)),
                ("icmpv6.opt.prefix.valid_lifetime", str(option.valid_lifetime)),
                ("icmpv6.opt.prefix", ntop(option.prefix)),
            ]
        elif isinstance(option, wire.AdvertisementInterval):
            pairs = [("icmpv6.opt.advertisement_interval", str(option.interval))]
        elif isinstance(option, wire.HomeAgentInformation):
            pairs = [
                ("icmpv6.opt.home_agent_preference", str(option.preference)),
                ("icmpv6.opt.home_agent_lifetime", str(option.lifetime)),
            ]
        elif isinstance(option, wire.MTUOption):
            pairs = [("icmpv6.opt.mtu", str(option.mtu))]
        for name, value in pairs:
            exp.setdefault(name, []).append(value)
    return exp


case = st.tuples(
    mobility_messages | icmpv6_messages,
    addresses,
    addresses,
    addresses,
    st.booleans(),
    st.booleans(),
)


def _compare(tmp_path: Path, cases: list) -> None:
    packets, expectations = [], []
    for message, src, dst, home, hao, rh2 in cases:
        packets.append(
            wire.build_packet(
                src,
                dst,
                message,
                home_address=home if hao else None,
                routing_home_address=home if rh2 else None,
            )
        )
        if isinstance(message, wire.MOBILITY_MESSAGE_TYPES):
            exp = expected_mobility(message)
        else:
            exp = expected_icmpv6(message)
        exp["ipv6.src"] = [ntop(src)]
        if hao:
            exp["ipv6.opt.mipv6.home_address"] = [ntop(home)]
        if rh2:
            exp["ipv6.routing.mipv6.home_address"] = [ntop(home)]
            exp["ipv6.routing.segleft"] = ["1"]
        expectations.append(exp)
    decoded = tshark_json(write_pcap(tmp_path / "ours.pcap", packets))
    assert len(decoded) == len(packets)
    for index, (exp, got) in enumerate(zip(expectations, decoded, strict=True)):
        assert "_ws.malformed" not in got, f"packet {index}: tshark says malformed: {got}"
        for name, values in exp.items():
            assert got.get(name) == values, f"packet {index} ({cases[index][0]}): {name}"
        message = cases[index][0]
        if isinstance(message, wire.MOBILITY_MESSAGE_TYPES):
            # No option lost or invented: tshark's count of non-padding options matches.
            found = sum(
                len(values)
                for name, values in got.items()
                if name.startswith("mip6.options.")
                and not name.endswith("_tree")
                and name not in ("mip6.options.pad1", "mip6.options.padn")
            )
            found += len(got.get("mip6.mobility_opt", []))
            assert found == len(message.options), f"packet {index}: options {got}"


@settings(max_examples=15, deadline=None)
@given(st.lists(case, min_size=40, max_size=40))
def test_tshark_agrees_with_encoder(tmp_path_factory, cases: list) -> None:
    _compare(tmp_path_factory.mktemp("tshark"), cases)


def test_every_message_type_tshark_knows(tmp_path: Path) -> None:
    """One fixed packet of each kind, so coverage never depends on the random draw."""
    ha, coa, hoa = (IPv6Address(a) for a in ("2001:db8:1::1", "2001:db8:2::7", "2001:db8:1::7"))
    full = [
        wire.NonceIndices(3, 4),
        wire.AlternateCareofAddress(coa),
        wire.BindingRefreshAdvice(300),
        wire.MobileNodeIdentifier(b"mn7@example.net"),
        wire.MessageIdentification(0x0123456789ABCDEF),
        wire.MessageAuthentication(1000, bytes(range(1, 13))),
    ]
    messages = [
        wire.BindingRefreshRequest(),
        wire.HomeTestInit(b"\x01" * 8),
        wire.CareofTestInit(b"\x02" * 8),
        wire.HomeTest(7, b"\x03" * 8, b"\x04" * 8),
        wire.CareofTest(9, b"\x05" * 8, b"\x06" * 8),
        wire.BindingUpdate(4660, 0xF800, 150, full),
        wire.BindingAck(0, 0x80, 4660, 150, [wire.BindingRefreshAdvice(100)]),
        wire.BindingError(2, hoa),
        wire.BindingUpdate(1, 0x8000, 0, [wire.BindingAuthorizationData(bytes(range(12)))]),
        wire.HAADRequest(0x4242),
        wire.HAADReply(0x4242, [ha, IPv6Address("2001:db8:1::2")]),
        wire.MobilePrefixSolicitation(0x5151),
        wire.MobilePrefixAdvertisement(
            0x5151, 0x40, [wire.PrefixInformation(64, 0xE0, 86400, 14400, ha)]
        ),
        wire.RouterAdvertisement(
            64,
            0x20,
            1800,
            0,
            0,
            [
                wire.PrefixInformation(64, 0xE0, 86400, 14400, ha),
                wire.AdvertisementInterval(90),
                wire.HomeAgentInformation(10, 1800),
            ],
        ),
    ]
    cases = []
    for message in messages:
        hao = isinstance(message, (wire.BindingUpdate, wire.MobilePrefixSolicitation))
        rh2 = isinstance(message, (wire.BindingAck, wire.MobilePrefixAdvertisement, wire.HAADReply))
        src, dst = (coa, ha) if hao else (ha, coa)
        cases.append((message, src, dst, hoa, hao, rh2))
    _compare(tmp_path, cases)
