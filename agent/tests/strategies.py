"""Hypothesis strategies for every wire message and option."""

from __future__ import annotations

from ipaddress import IPv6Address

from hypothesis import strategies as st
from mip6agent import wire

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 2**64 - 1)
addresses = st.builds(IPv6Address, st.integers(0, 2**128 - 1))
cookies = st.binary(min_size=8, max_size=8)

mobility_options = st.one_of(
    st.builds(wire.BindingRefreshAdvice, u16),
    st.builds(wire.AlternateCareofAddress, addresses),
    st.builds(wire.NonceIndices, u16, u16),
    st.builds(wire.BindingAuthorizationData, st.binary(min_size=0, max_size=32)),
    st.builds(wire.MobileNodeIdentifier, st.binary(max_size=64), u8),
    st.builds(wire.MessageIdentification, u64),
    st.builds(
        wire.UnknownMobilityOption,
        st.integers(11, 255),
        st.binary(max_size=40),
    ),
)
authentication = st.builds(wire.MessageAuthentication, u32, st.binary(max_size=32), u8)


@st.composite
def option_lists(draw: st.DrawFn) -> list:
    options = draw(st.lists(mobility_options, max_size=5))
    if draw(st.booleans()):
        options.append(draw(authentication))
    return options


mobility_messages = st.one_of(
    st.builds(wire.BindingRefreshRequest, option_lists()),
    st.builds(wire.HomeTestInit, cookies, option_lists()),
    st.builds(wire.CareofTestInit, cookies, option_lists()),
    st.builds(wire.HomeTest, u16, cookies, cookies, option_lists()),
    st.builds(wire.CareofTest, u16, cookies, cookies, option_lists()),
    st.builds(wire.BindingUpdate, u16, u16, u16, option_lists()),
    st.builds(wire.BindingAck, u8, u8, u16, u16, option_lists()),
    st.builds(wire.BindingError, u8, addresses, option_lists()),
    st.builds(
        wire.UnknownMessage,
        st.integers(8, 255),
        st.integers(0, 20).flatmap(lambda n: st.binary(min_size=2 + 8 * n, max_size=2 + 8 * n)),
    ),
)

nd_options = st.one_of(
    st.builds(
        wire.PrefixInformation,
        st.integers(0, 128),
        u8,
        u32,
        u32,
        addresses,
    ),
    st.builds(wire.MTUOption, u32),
    st.builds(wire.AdvertisementInterval, u32),
    st.builds(wire.HomeAgentInformation, u16, u16, u16),
    st.builds(
        wire.LinkLayerAddress,
        st.integers(0, 3).flatmap(lambda n: st.binary(min_size=6 + 8 * n, max_size=6 + 8 * n)),
        st.sampled_from([1, 2]),
    ),
    st.builds(
        wire.UnknownNDOption,
        st.integers(9, 255),
        st.integers(0, 4).flatmap(lambda n: st.binary(min_size=6 + 8 * n, max_size=6 + 8 * n)),
    ),
)
nd_lists = st.lists(nd_options, max_size=5)

icmpv6_messages = st.one_of(
    st.builds(wire.HAADRequest, u16, u8),
    st.builds(wire.HAADReply, u16, st.lists(addresses, max_size=6), u8),
    st.builds(wire.MobilePrefixSolicitation, u16, u8),
    st.builds(wire.MobilePrefixAdvertisement, u16, u8, nd_lists, u8),
    st.builds(wire.RouterSolicitation, nd_lists, u8),
    st.builds(wire.RouterAdvertisement, u8, u8, u16, u32, u32, nd_lists, u8),
    st.builds(wire.NeighborSolicitation, addresses, nd_lists, u8),
    st.builds(wire.NeighborAdvertisement, addresses, u8, nd_lists, u8),
    st.builds(
        wire.UnknownICMPv6, st.sampled_from([1, 2, 3, 4, 128, 129, 200]), u8, st.binary(max_size=64)
    ),
)
