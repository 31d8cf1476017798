"""Cross-check the wire codec against scapy's Mobile IPv6 layers (scapy.layers.inet6).

scapy is an independent encoder and decoder, so every test here compares the two:

* scapy -> ours: packets built with scapy's MH, mobility option, HAO, RH2 and ICMPv6 layers
  are decoded with :func:`wire.parse_packet`; every field must equal what was given to scapy,
  and the checksum scapy computed (home-address rule included) must verify on our side.
* ours -> scapy: packets from :func:`wire.build_packet` are dissected with ``IPv6(data)``;
  scapy must see the fields of our message. The same packet is then built again with scapy
  from scratch (not from the dissection: scapy's ``in6_pseudoheader`` only honours a
  Destination Options header whose option list is exactly ``[HAO]``, so a re-dissected
  ``[PadN, HAO]`` header is checksummed with the care-of address) and our checksum must
  equal scapy's.

scapy 2.8.0 defaults that would hide bugs, and how they are handled here:

* ``MIP6OptNonceIndices`` and ``MIP6OptBindingAuthData`` default to ``olen=16``: olen is
  set to 4 and 12. The BAD authenticator is a 96-bit integer field.
* BU ``flags`` is a 7-bit FlagsField ("PRMKLHA", A in the top bit) followed by 9 reserved
  bits and defaults to "KHA"; our 16-bit field is ``(flags << 9) | reserved``.
  BA ``flags`` is 3 bits ("PRK") over 5 reserved bits: ``(flags << 5) | res2``.
* ``ICMPv6ND_RA`` defaults to ``prf=1``, the HAAD messages to ``R=1`` and ``ICMPv6MPAdv``
  to ``flags=M``: all are set explicitly.
* ``MIP6MH_Generic`` mis-dissects, so it is never used.
"""

from __future__ import annotations

from ipaddress import IPv6Address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mip6agent import wire
from scapy.compat import raw
from scapy.layers.inet6 import (
    HAO,
    MIP6MH_BA,
    MIP6MH_BE,
    MIP6MH_BRR,
    MIP6MH_BU,
    ICMPv6HAADReply,
    ICMPv6HAADRequest,
    ICMPv6MPAdv,
    ICMPv6MPSol,
    ICMPv6ND_RA,
    ICMPv6NDOptAdvInterval,
    ICMPv6NDOptHAInfo,
    ICMPv6NDOptPrefixInfo,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrRouting,
    MIP6MH_CoT,
    MIP6MH_CoTI,
    MIP6MH_HoT,
    MIP6MH_HoTI,
    MIP6OptAltCoA,
    MIP6OptBindingAuthData,
    MIP6OptBRAdvice,
    MIP6OptMNID,
    MIP6OptMsgAuth,
    MIP6OptNonceIndices,
    MIP6OptReplayProtection,
    Pad1,
    PadN,
)
from scapy.packet import NoPayload, Padding, Raw
from scapy.packet import Packet as ScapyPacket
from strategies import addresses, authentication, cookies, u8, u16, u32, u64

# scapy is slow (about 4 ms a packet): every test runs once per message kind and extension
# header variant, so 50 examples each is 200 a message kind. The "long" profile scales it up.
SCAPY = settings(
    max_examples=max(50, settings.default.max_examples // 20),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# RFC 6275 6.1: MH Type values; RFC 8200 / IANA: next header values.
MH_TYPE = {"BRR": 0, "HoTI": 1, "CoTI": 2, "HoT": 3, "CoT": 4, "BU": 5, "BA": 6, "BE": 7}
MH_SCAPY_CLASS = {
    "BRR": MIP6MH_BRR,
    "HoTI": MIP6MH_HoTI,
    "CoTI": MIP6MH_CoTI,
    "HoT": MIP6MH_HoT,
    "CoT": MIP6MH_CoT,
    "BU": MIP6MH_BU,
    "BA": MIP6MH_BA,
    "BE": MIP6MH_BE,
}
PROTO_MH = 135
PROTO_ICMPV6 = 58
PROTO_NONE = 59

# Which Mobile IPv6 extension headers wrap the upper layer: (Home Address option, RH2).
EXTENSIONS = {"plain": (False, False), "hao": (True, False), "rh2": (False, True)}
EXTENSIONS["hao+rh2"] = (True, True)

bit = st.integers(0, 1)


def scapy_ip(
    src: IPv6Address,
    dst: IPv6Address,
    upper: ScapyPacket,
    home: IPv6Address | None,
    routing_home: IPv6Address | None,
    hlim: int = 64,
) -> ScapyPacket:
    """IPv6 [/ RH2 (HoA)] [/ DestOpt(HAO(HoA))] / upper, built by scapy from scratch."""
    pkt = IPv6(src=str(src), dst=str(dst), hlim=hlim, tc=0, fl=0)
    if routing_home is not None:
        pkt = pkt / IPv6ExtHdrRouting(type=2, segleft=1, addresses=[str(routing_home)])
    if home is not None:
        pkt = pkt / IPv6ExtHdrDestOpt(options=[HAO(hoa=str(home))])
    return pkt / upper


def chain(head: ScapyPacket, tail: list[ScapyPacket]) -> ScapyPacket:
    for layer in tail:
        head = head / layer
    return head


def assert_extension_headers(
    packet: wire.Packet, home: IPv6Address | None, routing_home: IPv6Address | None
) -> None:
    """Our parse of the HAO / RH2 the scapy packet carries."""
    assert packet.home_address_option == home
    rh2 = packet.routing_header_type2
    if routing_home is None:
        assert rh2 is None
    else:
        assert rh2 is not None
        assert rh2.home_address == routing_home
        assert rh2.segments_left == 1
    assert len(packet.headers) == (home is not None) + (routing_home is not None)


def assert_scapy_extension_headers(
    dissected: ScapyPacket, home: IPv6Address | None, routing_home: IPv6Address | None
) -> None:
    """scapy's view of the HAO / RH2 in one of our packets."""
    if routing_home is None:
        assert not dissected.haslayer(IPv6ExtHdrRouting)
    else:
        rh = dissected[IPv6ExtHdrRouting]
        assert (rh.type, rh.segleft, rh.reserved) == (2, 1, 0)
        assert [IPv6Address(a) for a in rh.addresses] == [routing_home]
    if home is None:
        assert not dissected.haslayer(IPv6ExtHdrDestOpt)
    else:
        dest = dissected[IPv6ExtHdrDestOpt]
        real = [o for o in dest.options if not isinstance(o, (Pad1, PadN))]
        assert [type(o) for o in real] == [HAO]
        assert real[0].optlen == 16
        assert IPv6Address(real[0].hoa) == home
        for pad in dest.options:
            if isinstance(pad, PadN):
                assert pad.optdata == bytes(len(pad.optdata))
    assert not dissected.haslayer(Raw)
    assert not dissected.haslayer(Padding)


# --- scapy -> ours: strategies yield (scapy layer, the value our decoder must return) ----

scapy_mobility_options = st.one_of(
    u16.map(lambda v: (MIP6OptBRAdvice(rinter=v), wire.BindingRefreshAdvice(v))),
    addresses.map(lambda a: (MIP6OptAltCoA(acoa=str(a)), wire.AlternateCareofAddress(a))),
    st.tuples(u16, u16).map(
        lambda t: (MIP6OptNonceIndices(olen=4, hni=t[0], coni=t[1]), wire.NonceIndices(*t))
    ),
    st.binary(min_size=12, max_size=12).map(
        lambda b: (
            MIP6OptBindingAuthData(olen=12, authenticator=int.from_bytes(b, "big")),
            wire.BindingAuthorizationData(b),
        )
    ),
    st.tuples(st.binary(max_size=64), u8).map(
        lambda t: (MIP6OptMNID(subtype=t[1], id=t[0]), wire.MobileNodeIdentifier(t[0], t[1]))
    ),
    u64.map(lambda v: (MIP6OptReplayProtection(timestamp=v), wire.MessageIdentification(v))),
)
scapy_message_authentication = st.tuples(u32, st.binary(max_size=40), u8).map(
    lambda t: (
        MIP6OptMsgAuth(subtype=t[2], mspi=t[0], authdata=t[1]),
        wire.MessageAuthentication(t[0], t[1], t[2]),
    )
)


@st.composite
def scapy_option_lists(draw: st.DrawFn) -> tuple[list[ScapyPacket], list]:
    pairs = draw(st.lists(scapy_mobility_options, max_size=4))
    if draw(st.booleans()):  # RFC 4285: the authentication option comes last
        pairs.append(draw(scapy_message_authentication))
    return [s for s, _ in pairs], [o for _, o in pairs]


@st.composite
def scapy_brr(draw: st.DrawFn) -> tuple[ScapyPacket, wire.MobilityMessage]:
    sopts, opts = draw(scapy_option_lists())
    return MIP6MH_BRR(res2=draw(u16), options=sopts), wire.BindingRefreshRequest(opts)


def scapy_test_init(scapy_cls: type, our_cls: type) -> st.SearchStrategy:
    @st.composite
    def build(draw: st.DrawFn) -> tuple[ScapyPacket, wire.MobilityMessage]:
        cookie = draw(cookies)
        sopts, opts = draw(scapy_option_lists())
        reserved = draw(st.binary(min_size=2, max_size=2))
        return scapy_cls(reserved=reserved, cookie=cookie, options=sopts), our_cls(cookie, opts)

    return build()


def scapy_test(scapy_cls: type, our_cls: type) -> st.SearchStrategy:
    @st.composite
    def build(draw: st.DrawFn) -> tuple[ScapyPacket, wire.MobilityMessage]:
        index, cookie, token = draw(u16), draw(cookies), draw(cookies)
        sopts, opts = draw(scapy_option_lists())
        layer = scapy_cls(index=index, cookie=cookie, token=token, options=sopts)
        return layer, our_cls(index, cookie, token, opts)

    return build()


@st.composite
def scapy_bu(draw: st.DrawFn) -> tuple[ScapyPacket, wire.MobilityMessage]:
    seq, life = draw(u16), draw(u16)
    flags, reserved = draw(st.integers(0, 0x7F)), draw(st.integers(0, 0x1FF))
    sopts, opts = draw(scapy_option_lists())
    layer = MIP6MH_BU(seq=seq, flags=flags, reserved=reserved, mhtime=life, options=sopts)
    return layer, wire.BindingUpdate(seq, (flags << 9) | reserved, life, opts)


@st.composite
def scapy_ba(draw: st.DrawFn) -> tuple[ScapyPacket, wire.MobilityMessage]:
    status, flags, res2 = draw(u8), draw(st.integers(0, 7)), draw(st.integers(0, 0x1F))
    seq, life = draw(u16), draw(u16)
    sopts, opts = draw(scapy_option_lists())
    layer = MIP6MH_BA(status=status, flags=flags, res2=res2, seq=seq, mhtime=life, options=sopts)
    return layer, wire.BindingAck(status, (flags << 5) | res2, seq, life, opts)


@st.composite
def scapy_be(draw: st.DrawFn) -> tuple[ScapyPacket, wire.MobilityMessage]:
    status, home = draw(u8), draw(addresses)
    sopts, opts = draw(scapy_option_lists())
    layer = MIP6MH_BE(status=status, ha=str(home), options=sopts)
    return layer, wire.BindingError(status, home, opts)


SCAPY_MH = {
    "BRR": scapy_brr(),
    "HoTI": scapy_test_init(MIP6MH_HoTI, wire.HomeTestInit),
    "CoTI": scapy_test_init(MIP6MH_CoTI, wire.CareofTestInit),
    "HoT": scapy_test(MIP6MH_HoT, wire.HomeTest),
    "CoT": scapy_test(MIP6MH_CoT, wire.CareofTest),
    "BU": scapy_bu(),
    "BA": scapy_ba(),
    "BE": scapy_be(),
}


@pytest.mark.parametrize("extension", list(EXTENSIONS))
@pytest.mark.parametrize("kind", list(SCAPY_MH))
@SCAPY
@given(data=st.data(), src=addresses, dst=addresses, home=addresses)
def test_scapy_mobility_header_decodes(
    kind: str,
    extension: str,
    data: st.DataObject,
    src: IPv6Address,
    dst: IPv6Address,
    home: IPv6Address,
) -> None:
    layer, expected = data.draw(SCAPY_MH[kind], label="message")
    with_hao, with_rh2 = EXTENSIONS[extension]
    hoa = home if with_hao else None
    rh = data.draw(addresses, label="rh2 home") if with_rh2 else None
    wire_bytes = raw(scapy_ip(src, dst, layer, hoa, rh))

    packet = wire.parse_packet(wire_bytes)

    assert (packet.src, packet.dst) == (src, dst)
    assert packet.protocol == PROTO_MH
    assert_extension_headers(packet, hoa, rh)
    assert packet.payload == expected  # dataclass equality: type and every field
    assert wire.parse_mh(packet.payload_bytes) == expected
    assert packet.checksum_ok()
    assert packet.payload.checksum == IPv6(wire_bytes)[MH_SCAPY_CLASS[kind]].cksum


# --- scapy -> ours, ICMPv6 ----------------------------------------------------------------


@st.composite
def scapy_prefix_information(
    draw: st.DrawFn, router_address: bool | None = None
) -> tuple[ScapyPacket, wire.NDOption]:
    plen, on_link, auto = draw(st.integers(0, 128)), draw(bit), draw(bit)
    r_flag = draw(bit) if router_address is None else int(router_address)
    res1, valid, preferred, prefix = draw(st.integers(0, 31)), draw(u32), draw(u32), draw(addresses)
    layer = ICMPv6NDOptPrefixInfo(
        prefixlen=plen,
        L=on_link,
        A=auto,
        R=r_flag,
        res1=res1,
        validlifetime=valid,
        preferredlifetime=preferred,
        prefix=str(prefix),
    )
    # RFC 4861 4.6.2 / RFC 6275 7.2: L, A, R are the top three bits of the flags octet.
    flags = on_link << 7 | auto << 6 | r_flag << 5 | res1
    return layer, wire.PrefixInformation(plen, flags, valid, preferred, prefix)


scapy_adv_interval = u32.map(
    lambda v: (ICMPv6NDOptAdvInterval(advint=v), wire.AdvertisementInterval(v))
)
scapy_ha_information = st.tuples(u16, u16, u16).map(
    lambda t: (
        ICMPv6NDOptHAInfo(res=t[0], pref=t[1], lifetime=t[2]),
        wire.HomeAgentInformation(t[1], t[2], t[0]),
    )
)


@st.composite
def scapy_router_advertisement(draw: st.DrawFn) -> tuple[ScapyPacket, wire.ICMPv6Message]:
    chlim, managed, other, proxy = draw(u8), draw(bit), draw(bit), draw(bit)
    lifetime, reachable, retrans = draw(u16), draw(u32), draw(u32)
    required = [
        draw(scapy_prefix_information(router_address=True)),
        draw(scapy_adv_interval),
        draw(scapy_ha_information),
    ]
    extra = draw(
        st.lists(
            st.one_of(scapy_prefix_information(), scapy_adv_interval, scapy_ha_information),
            max_size=2,
        )
    )
    pairs = draw(st.permutations(required + extra))
    layer = ICMPv6ND_RA(
        chlim=chlim,
        M=managed,
        O=other,
        H=1,
        prf=0,
        P=proxy,
        res=0,
        routerlifetime=lifetime,
        reachabletime=reachable,
        retranstimer=retrans,
    )
    # RFC 4861 4.2: M, O; RFC 6275 7.1: H; RFC 4191: Prf (2 bits); RFC 4389: P.
    flags = managed << 7 | other << 6 | 1 << 5 | 0 << 3 | proxy << 2
    expected = wire.RouterAdvertisement(
        chlim, flags, lifetime, reachable, retrans, [o for _, o in pairs]
    )
    return chain(layer, [s for s, _ in pairs]), expected


@st.composite
def scapy_haad_request(draw: st.DrawFn) -> tuple[ScapyPacket, wire.ICMPv6Message]:
    ident, code = draw(u16), draw(u8)
    return ICMPv6HAADRequest(code=code, id=ident, R=0), wire.HAADRequest(ident, code)


@st.composite
def scapy_haad_reply(draw: st.DrawFn) -> tuple[ScapyPacket, wire.ICMPv6Message]:
    ident, code, agents = draw(u16), draw(u8), draw(st.lists(addresses, max_size=6))
    layer = ICMPv6HAADReply(code=code, id=ident, R=0, addresses=[str(a) for a in agents])
    return layer, wire.HAADReply(ident, agents, code)


@st.composite
def scapy_mps(draw: st.DrawFn) -> tuple[ScapyPacket, wire.ICMPv6Message]:
    ident, code = draw(u16), draw(u8)
    return ICMPv6MPSol(code=code, id=ident), wire.MobilePrefixSolicitation(ident, code)


@st.composite
def scapy_mpa(draw: st.DrawFn) -> tuple[ScapyPacket, wire.ICMPv6Message]:
    ident, code, flags = draw(u16), draw(u8), draw(st.integers(0, 3))
    pairs = draw(st.lists(scapy_prefix_information(), max_size=3))
    layer = ICMPv6MPAdv(code=code, id=ident, flags=flags, res=0)
    # RFC 6275 6.8: M then O in the top two bits of the octet after the identifier.
    expected = wire.MobilePrefixAdvertisement(ident, flags << 6, [o for _, o in pairs], code)
    return chain(layer, [s for s, _ in pairs]), expected


SCAPY_ICMPV6 = {
    "RA": (scapy_router_advertisement(), ICMPv6ND_RA),
    "HAADRequest": (scapy_haad_request(), ICMPv6HAADRequest),
    "HAADReply": (scapy_haad_reply(), ICMPv6HAADReply),
    "MPS": (scapy_mps(), ICMPv6MPSol),
    "MPA": (scapy_mpa(), ICMPv6MPAdv),
}


@pytest.mark.parametrize("extension", list(EXTENSIONS))
@pytest.mark.parametrize("kind", list(SCAPY_ICMPV6))
@SCAPY
@given(data=st.data(), src=addresses, dst=addresses, home=addresses)
def test_scapy_icmpv6_decodes(
    kind: str,
    extension: str,
    data: st.DataObject,
    src: IPv6Address,
    dst: IPv6Address,
    home: IPv6Address,
) -> None:
    strategy, scapy_cls = SCAPY_ICMPV6[kind]
    layer, expected = data.draw(strategy, label="message")
    with_hao, with_rh2 = EXTENSIONS[extension]
    hoa = home if with_hao else None
    rh = data.draw(addresses, label="rh2 home") if with_rh2 else None
    wire_bytes = raw(scapy_ip(src, dst, layer, hoa, rh, hlim=255))

    packet = wire.parse_packet(wire_bytes)

    assert (packet.src, packet.dst, packet.hop_limit) == (src, dst, 255)
    assert packet.protocol == PROTO_ICMPV6
    assert_extension_headers(packet, hoa, rh)
    assert packet.payload == expected
    assert wire.decode_icmpv6(packet.payload_bytes) == expected
    assert packet.checksum_ok()
    assert packet.payload.checksum == IPv6(wire_bytes)[scapy_cls].cksum


# --- ours -> scapy ------------------------------------------------------------------------

# Options scapy can dissect: its BAD field is a fixed 96 bits, so authenticators are 12 octets.
our_mobility_options = st.one_of(
    st.builds(wire.BindingRefreshAdvice, u16),
    st.builds(wire.AlternateCareofAddress, addresses),
    st.builds(wire.NonceIndices, u16, u16),
    st.builds(wire.BindingAuthorizationData, st.binary(min_size=12, max_size=12)),
    st.builds(wire.MobileNodeIdentifier, st.binary(max_size=64), u8),
    st.builds(wire.MessageIdentification, u64),
)


@st.composite
def our_option_lists(draw: st.DrawFn) -> list:
    options = draw(st.lists(our_mobility_options, max_size=4))
    if draw(st.booleans()):
        options.append(draw(authentication))
    return options


OUR_MH = {
    "BRR": st.builds(wire.BindingRefreshRequest, our_option_lists()),
    "HoTI": st.builds(wire.HomeTestInit, cookies, our_option_lists()),
    "CoTI": st.builds(wire.CareofTestInit, cookies, our_option_lists()),
    "HoT": st.builds(wire.HomeTest, u16, cookies, cookies, our_option_lists()),
    "CoT": st.builds(wire.CareofTest, u16, cookies, cookies, our_option_lists()),
    "BU": st.builds(wire.BindingUpdate, u16, u16, u16, our_option_lists()),
    "BA": st.builds(wire.BindingAck, u8, u8, u16, u16, our_option_lists()),
    "BE": st.builds(wire.BindingError, u8, addresses, our_option_lists()),
}


def view_mobility_options(options: list[ScapyPacket]) -> list:
    """Rebuild our option values from the fields scapy dissected (padding checked, dropped)."""
    seen = []
    for opt in options:
        if isinstance(opt, Pad1):
            continue
        if isinstance(opt, PadN):
            assert opt.optdata == bytes(len(opt.optdata)), "PadN carries non-zero octets"
            continue
        if isinstance(opt, MIP6OptBRAdvice):
            assert opt.olen == 2
            seen.append(wire.BindingRefreshAdvice(opt.rinter))
        elif isinstance(opt, MIP6OptAltCoA):
            assert opt.olen == 16
            seen.append(wire.AlternateCareofAddress(IPv6Address(opt.acoa)))
        elif isinstance(opt, MIP6OptNonceIndices):
            assert opt.olen == 4
            seen.append(wire.NonceIndices(opt.hni, opt.coni))
        elif isinstance(opt, MIP6OptBindingAuthData):
            assert opt.olen == 12
            seen.append(wire.BindingAuthorizationData(opt.authenticator.to_bytes(12, "big")))
        elif isinstance(opt, MIP6OptMNID):
            assert opt.olen == len(opt.id) + 1
            seen.append(wire.MobileNodeIdentifier(opt.id, opt.subtype))
        elif isinstance(opt, MIP6OptMsgAuth):
            assert opt.olen == len(opt.authdata) + 5
            seen.append(wire.MessageAuthentication(opt.mspi, opt.authdata, opt.subtype))
        elif isinstance(opt, MIP6OptReplayProtection):
            assert opt.olen == 8
            seen.append(wire.MessageIdentification(opt.timestamp))
        else:
            pytest.fail(f"scapy dissected an unexpected mobility option {opt!r}")
    return seen


def view_mobility_header(layer: ScapyPacket) -> wire.MobilityMessage:
    """Our message rebuilt from the fields of a dissected scapy MH layer."""
    opts = view_mobility_options(layer.options)
    kind = type(layer)
    if kind is MIP6MH_BRR:
        return wire.BindingRefreshRequest(opts)
    if kind is MIP6MH_HoTI:
        return wire.HomeTestInit(layer.cookie, opts)
    if kind is MIP6MH_CoTI:
        return wire.CareofTestInit(layer.cookie, opts)
    if kind is MIP6MH_HoT:
        return wire.HomeTest(layer.index, layer.cookie, layer.token, opts)
    if kind is MIP6MH_CoT:
        return wire.CareofTest(layer.index, layer.cookie, layer.token, opts)
    if kind is MIP6MH_BU:
        return wire.BindingUpdate(
            layer.seq, int(layer.flags) << 9 | layer.reserved, layer.mhtime, opts
        )
    if kind is MIP6MH_BA:
        flags = int(layer.flags) << 5 | layer.res2
        return wire.BindingAck(layer.status, flags, layer.seq, layer.mhtime, opts)
    if kind is MIP6MH_BE:
        return wire.BindingError(layer.status, IPv6Address(layer.ha), opts)
    raise AssertionError(f"unexpected scapy layer {kind.__name__}")


def scapy_padding(count: int) -> list[ScapyPacket]:
    if count == 0:
        return []
    if count == 1:
        return [Pad1()]
    return [PadN(optdata=bytes(count - 2))]


def to_scapy_option(option: wire.MobilityOption) -> ScapyPacket:
    if isinstance(option, wire.BindingRefreshAdvice):
        return MIP6OptBRAdvice(rinter=option.interval)
    if isinstance(option, wire.AlternateCareofAddress):
        return MIP6OptAltCoA(acoa=str(option.address))
    if isinstance(option, wire.NonceIndices):
        return MIP6OptNonceIndices(
            olen=4, hni=option.home_nonce_index, coni=option.careof_nonce_index
        )
    if isinstance(option, wire.BindingAuthorizationData):
        auth = int.from_bytes(option.authenticator, "big")
        return MIP6OptBindingAuthData(olen=12, authenticator=auth)
    if isinstance(option, wire.MobileNodeIdentifier):
        return MIP6OptMNID(subtype=option.subtype, id=option.identifier)
    if isinstance(option, wire.MessageAuthentication):
        return MIP6OptMsgAuth(
            subtype=option.subtype, mspi=option.spi, authdata=option.authenticator
        )
    if isinstance(option, wire.MessageIdentification):
        return MIP6OptReplayProtection(timestamp=option.timestamp)
    raise AssertionError(f"no scapy option for {option!r}")


def to_scapy_options(options: list, start: int) -> list[ScapyPacket]:
    """scapy options for ``options`` laid out from ``start`` octets into the header.

    scapy's autopad gives every option its xn+y alignment. RFC 4285 5 wants the Mobility
    Message Authentication option last, so when it can (authenticator length a multiple of
    4) it is moved on by 4 octets to end the header instead of being followed by padding;
    the explicit pad in front of it leaves scapy no alignment padding of its own to add.
    """
    converted = [to_scapy_option(o) for o in options]
    if not converted or not isinstance(converted[-1], MIP6OptMsgAuth):
        return converted
    pos = start
    for opt in converted[:-1]:
        pos += opt.alignment_delta(pos) + len(raw(opt))
    auth = converted[-1]
    natural = auth.alignment_delta(pos)
    pad = natural
    if (pos + natural + len(raw(auth))) % 8 and (pos + natural + 4 + len(raw(auth))) % 8 == 0:
        pad = natural + 4
    return [*converted[:-1], *scapy_padding(pad), auth]


def to_scapy_mh(message: wire.MobilityMessage) -> ScapyPacket:
    """The scapy layer for ``message``, built from its field values."""
    if isinstance(message, wire.BindingRefreshRequest):
        layer = MIP6MH_BRR(res2=0)
    elif isinstance(message, wire.HomeTestInit | wire.CareofTestInit):
        cls = MIP6MH_HoTI if isinstance(message, wire.HomeTestInit) else MIP6MH_CoTI
        layer = cls(cookie=message.cookie)
    elif isinstance(message, wire.HomeTest | wire.CareofTest):
        cls = MIP6MH_HoT if isinstance(message, wire.HomeTest) else MIP6MH_CoT
        layer = cls(index=message.nonce_index, cookie=message.cookie, token=message.token)
    elif isinstance(message, wire.BindingUpdate):
        layer = MIP6MH_BU(
            seq=message.sequence,
            flags=message.flags >> 9,
            reserved=message.flags & 0x1FF,
            mhtime=message.lifetime,
        )
    elif isinstance(message, wire.BindingAck):
        layer = MIP6MH_BA(
            status=message.status,
            flags=message.flags >> 5,
            res2=message.flags & 0x1F,
            seq=message.sequence,
            mhtime=message.lifetime,
        )
    elif isinstance(message, wire.BindingError):
        layer = MIP6MH_BE(status=message.status, ha=str(message.home_address))
    else:
        raise AssertionError(f"no scapy layer for {message!r}")
    start = layer.get_field("options").curpos
    layer.options = to_scapy_options(message.options, start)
    return layer


@pytest.mark.parametrize("extension", list(EXTENSIONS))
@pytest.mark.parametrize("kind", list(OUR_MH))
@SCAPY
@given(data=st.data(), src=addresses, dst=addresses, home=addresses)
def test_our_mobility_header_dissects_in_scapy(
    kind: str,
    extension: str,
    data: st.DataObject,
    src: IPv6Address,
    dst: IPv6Address,
    home: IPv6Address,
) -> None:
    message = data.draw(OUR_MH[kind], label="message")
    with_hao, with_rh2 = EXTENSIONS[extension]
    hoa = home if with_hao else None
    rh = data.draw(addresses, label="rh2 home") if with_rh2 else None
    ours = wire.build_packet(src, dst, message, home_address=hoa, routing_home_address=rh)

    dissected = IPv6(ours)

    assert (IPv6Address(dissected.src), IPv6Address(dissected.dst)) == (src, dst)
    assert dissected.plen == len(ours) - 40
    assert_scapy_extension_headers(dissected, hoa, rh)
    cls = MH_SCAPY_CLASS[kind]
    layer = dissected.getlayer(cls)
    assert type(layer) is cls
    assert (layer.nh, layer.mhtype, layer.res) == (PROTO_NONE, MH_TYPE[kind], 0)
    assert layer.underlayer.nh == PROTO_MH
    assert (layer.len + 1) * 8 == len(raw(layer))
    assert view_mobility_header(layer) == message

    scratch = raw(scapy_ip(src, dst, to_scapy_mh(message), hoa, rh))
    assert layer.cksum == IPv6(scratch)[cls].cksum, "checksum differs from scapy's"
    assert ours == scratch


# --- ours -> scapy, ICMPv6 ----------------------------------------------------------------

our_prefix_information = st.builds(
    wire.PrefixInformation, st.integers(0, 128), u8, u32, u32, addresses
)
our_ra_options = st.lists(
    st.one_of(
        our_prefix_information,
        st.builds(wire.AdvertisementInterval, u32),
        st.builds(wire.HomeAgentInformation, u16, u16, u16),
    ),
    max_size=5,
)

OUR_ICMPV6 = {
    "RA": st.builds(wire.RouterAdvertisement, u8, u8, u16, u32, u32, our_ra_options, u8),
    "HAADRequest": st.builds(wire.HAADRequest, u16, u8),
    "HAADReply": st.builds(wire.HAADReply, u16, st.lists(addresses, max_size=6), u8),
    "MPS": st.builds(wire.MobilePrefixSolicitation, u16, u8),
    "MPA": st.builds(
        wire.MobilePrefixAdvertisement, u16, u8, st.lists(our_prefix_information, max_size=3), u8
    ),
}
ICMPV6_SCAPY_CLASS = {
    "RA": ICMPv6ND_RA,
    "HAADRequest": ICMPv6HAADRequest,
    "HAADReply": ICMPv6HAADReply,
    "MPS": ICMPv6MPSol,
    "MPA": ICMPv6MPAdv,
}
# RFC 4861 4.2, RFC 6275 6.5-6.8.
ICMPV6_TYPE = {"RA": 134, "HAADRequest": 144, "HAADReply": 145, "MPS": 146, "MPA": 147}


def view_nd_options(payload: ScapyPacket) -> list:
    seen = []
    while not isinstance(payload, NoPayload):
        if isinstance(payload, ICMPv6NDOptPrefixInfo):
            assert (payload.len, payload.res2) == (4, 0)
            flags = payload.L << 7 | payload.A << 6 | payload.R << 5 | payload.res1
            seen.append(
                wire.PrefixInformation(
                    payload.prefixlen,
                    flags,
                    payload.validlifetime,
                    payload.preferredlifetime,
                    IPv6Address(payload.prefix),
                )
            )
        elif isinstance(payload, ICMPv6NDOptAdvInterval):
            assert (payload.len, payload.res) == (1, 0)
            seen.append(wire.AdvertisementInterval(payload.advint))
        elif isinstance(payload, ICMPv6NDOptHAInfo):
            assert payload.len == 1
            seen.append(wire.HomeAgentInformation(payload.pref, payload.lifetime, payload.res))
        else:
            pytest.fail(f"scapy dissected an unexpected ND option {payload!r}")
        payload = payload.payload
    return seen


def view_icmpv6(layer: ScapyPacket) -> wire.ICMPv6Message:
    """Our message rebuilt from the fields of a dissected scapy ICMPv6 layer."""
    kind = type(layer)
    if kind is ICMPv6HAADRequest:
        assert (layer.R, layer.res) == (0, 0)
        assert isinstance(layer.payload, NoPayload)
        return wire.HAADRequest(layer.id, layer.code)
    if kind is ICMPv6HAADReply:
        assert (layer.R, layer.res) == (0, 0)
        assert isinstance(layer.payload, NoPayload)
        return wire.HAADReply(layer.id, [IPv6Address(a) for a in layer.addresses], layer.code)
    if kind is ICMPv6MPSol:
        assert layer.res == 0
        assert isinstance(layer.payload, NoPayload)
        return wire.MobilePrefixSolicitation(layer.id, layer.code)
    if kind is ICMPv6MPAdv:
        flags = int(layer.flags) << 6 | layer.res >> 8
        assert layer.res & 0xFF == 0, "the octet after the MPA flags is reserved"
        options = view_nd_options(layer.payload)
        return wire.MobilePrefixAdvertisement(layer.id, flags, options, layer.code)
    if kind is ICMPv6ND_RA:
        flags = (
            layer.M << 7 | layer.O << 6 | layer.H << 5 | layer.prf << 3 | layer.P << 2 | layer.res
        )
        return wire.RouterAdvertisement(
            layer.chlim,
            flags,
            layer.routerlifetime,
            layer.reachabletime,
            layer.retranstimer,
            view_nd_options(layer.payload),
            layer.code,
        )
    raise AssertionError(f"unexpected scapy layer {kind.__name__}")


def to_scapy_nd_option(option: wire.NDOption) -> ScapyPacket:
    if isinstance(option, wire.PrefixInformation):
        return ICMPv6NDOptPrefixInfo(
            prefixlen=option.prefix_length,
            L=option.flags >> 7 & 1,
            A=option.flags >> 6 & 1,
            R=option.flags >> 5 & 1,
            res1=option.flags & 0x1F,
            validlifetime=option.valid_lifetime,
            preferredlifetime=option.preferred_lifetime,
            prefix=str(option.prefix),
        )
    if isinstance(option, wire.AdvertisementInterval):
        return ICMPv6NDOptAdvInterval(advint=option.interval)
    if isinstance(option, wire.HomeAgentInformation):
        return ICMPv6NDOptHAInfo(res=option.flags, pref=option.preference, lifetime=option.lifetime)
    raise AssertionError(f"no scapy ND option for {option!r}")


def to_scapy_icmpv6(message: wire.ICMPv6Message) -> ScapyPacket:
    if isinstance(message, wire.HAADRequest):
        return ICMPv6HAADRequest(code=message.code, id=message.identifier, R=0)
    if isinstance(message, wire.HAADReply):
        addrs = [str(a) for a in message.home_agents]
        return ICMPv6HAADReply(code=message.code, id=message.identifier, R=0, addresses=addrs)
    if isinstance(message, wire.MobilePrefixSolicitation):
        return ICMPv6MPSol(code=message.code, id=message.identifier)
    if isinstance(message, wire.MobilePrefixAdvertisement):
        head = ICMPv6MPAdv(
            code=message.code,
            id=message.identifier,
            flags=message.flags >> 6,
            res=(message.flags & 0x3F) << 8,
        )
        return chain(head, [to_scapy_nd_option(o) for o in message.options])
    if isinstance(message, wire.RouterAdvertisement):
        f = message.flags
        head = ICMPv6ND_RA(
            code=message.code,
            chlim=message.cur_hop_limit,
            M=f >> 7 & 1,
            O=f >> 6 & 1,
            H=f >> 5 & 1,
            prf=f >> 3 & 3,
            P=f >> 2 & 1,
            res=f & 3,
            routerlifetime=message.router_lifetime,
            reachabletime=message.reachable_time,
            retranstimer=message.retrans_timer,
        )
        return chain(head, [to_scapy_nd_option(o) for o in message.options])
    raise AssertionError(f"no scapy layer for {message!r}")


@pytest.mark.parametrize("extension", list(EXTENSIONS))
@pytest.mark.parametrize("kind", list(OUR_ICMPV6))
@SCAPY
@given(data=st.data(), src=addresses, dst=addresses, home=addresses)
def test_our_icmpv6_dissects_in_scapy(
    kind: str,
    extension: str,
    data: st.DataObject,
    src: IPv6Address,
    dst: IPv6Address,
    home: IPv6Address,
) -> None:
    message = data.draw(OUR_ICMPV6[kind], label="message")
    with_hao, with_rh2 = EXTENSIONS[extension]
    hoa = home if with_hao else None
    rh = data.draw(addresses, label="rh2 home") if with_rh2 else None
    ours = wire.build_packet(
        src, dst, message, home_address=hoa, routing_home_address=rh, hop_limit=255
    )

    dissected = IPv6(ours)

    assert (IPv6Address(dissected.src), IPv6Address(dissected.dst)) == (src, dst)
    assert (dissected.hlim, dissected.plen) == (255, len(ours) - 40)
    assert_scapy_extension_headers(dissected, hoa, rh)
    cls = ICMPV6_SCAPY_CLASS[kind]
    layer = dissected.getlayer(cls)
    assert type(layer) is cls
    assert layer.type == ICMPV6_TYPE[kind]
    assert layer.underlayer.nh == PROTO_ICMPV6
    assert view_icmpv6(layer) == message

    scratch = raw(scapy_ip(src, dst, to_scapy_icmpv6(message), hoa, rh, hlim=255))
    assert layer.cksum == IPv6(scratch)[cls].cksum, "checksum differs from scapy's"
    assert ours == scratch
