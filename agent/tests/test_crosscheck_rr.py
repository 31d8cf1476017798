"""Return routability messages the two cores emit, decoded by scapy and by tshark.

A whole exchange (HoTI, CoTI, HoT, CoT, BU, BA, BRR, BE 1 and 2, deregistration) is run
through the mobile node's CorrespondentRegistration and the Correspondent core. Every
packet is then:

* dissected by scapy, whose fields must be those the core put in, and rebuilt by scapy
  from scratch (its own checksum, alignment and padding) to the same octets;
* decoded by tshark, field by field (expected values from test_crosscheck_tshark);
* for BU and BA, the authenticator is recomputed from the octets scapy and tshark saw,
  with hashlib/hmac from the RFC formula (rr_reference), from tokens taken off the wire.
"""

from __future__ import annotations

import socket
from ipaddress import IPv6Address
from pathlib import Path

import pytest
import rr_reference as ref
from mip6agent import wire
from mip6agent.core.correspondent import Correspondent, CorrespondentSettings
from rr_reference import CN, COA, COA2, HOA, T0
from scapy.compat import raw
from scapy.layers.inet6 import (
    MIP6MH_BA,
    MIP6MH_BE,
    MIP6MH_BRR,
    MIP6MH_BU,
    IPv6,
    MIP6MH_CoT,
    MIP6MH_CoTI,
    MIP6MH_HoT,
    MIP6MH_HoTI,
    MIP6OptBindingAuthData,
    MIP6OptNonceIndices,
)
from test_core_correspondent_registration import Exchange
from test_crosscheck_scapy import assert_scapy_extension_headers, scapy_ip, to_scapy_mh
from test_crosscheck_tshark import expected_mobility
from tshark import tshark_json, write_pcap

SCAPY_CLASS = {
    wire.HomeTestInit: MIP6MH_HoTI,
    wire.CareofTestInit: MIP6MH_CoTI,
    wire.HomeTest: MIP6MH_HoT,
    wire.CareofTest: MIP6MH_CoT,
    wire.BindingUpdate: MIP6MH_BU,
    wire.BindingAck: MIP6MH_BA,
    wire.BindingRefreshRequest: MIP6MH_BRR,
    wire.BindingError: MIP6MH_BE,
}


def ntop(address: IPv6Address) -> str:
    return socket.inet_ntop(socket.AF_INET6, address.packed)


@pytest.fixture(scope="module")
def exchange() -> list[bytes]:
    """Every packet of a registration, a refresh request, a handover, errors and a return."""
    net = Exchange(refresh_fraction=0.99)  # so that the correspondent's BRR comes first
    net.cn.settings = CorrespondentSettings(True, binding_refresh_request_before=60)
    net.deliver(net.mn.away(COA, T0), T0)
    net.cn.note_use(HOA, T0 + 10)
    net.run_timers(T0 + 361)  # BRR at 360 s, answered by a new return routability
    net.deliver(net.mn.away(COA2, T0 + 380), T0 + 380)
    net.deliver(net.mn.home(T0 + 390), T0 + 390)
    # Binding Errors: a HAO without a binding (status 1), route optimisation off (status 2).
    echo = wire.build_packet(COA, CN, wire.UnknownICMPv6(128, 0, bytes(4)), home_address=HOA)
    net.deliver_from_cn(net.cn.receive(wire.parse_packet(echo), T0 + 400)[0], T0 + 400)
    plain = Correspondent(random_bytes=ref.Randomness())
    hoti = wire.parse_packet(wire.build_packet(HOA, CN, wire.HomeTestInit(b"q" * 8)))
    net.deliver_from_cn(plain.receive(hoti, T0 + 400)[0], T0 + 400)
    packets = net.take_log()
    seen = {type(p.payload) for p in packets}
    assert seen == set(SCAPY_CLASS), seen
    return [wire.build_packet(p.src, p.dst, p.payload, **extensions(p)) for p in packets]


def extensions(packet: wire.Packet) -> dict:
    rh2 = packet.routing_header_type2
    return {
        "home_address": packet.home_address_option,
        "routing_home_address": rh2.home_address if rh2 is not None else None,
    }


def authenticated(packets: list[wire.Packet]) -> list[tuple[wire.Packet, bytes, IPv6Address]]:
    """(BU or BA, Kbm from the tokens seen on the wire before it, care-of address)."""
    home_token = careof_token = None
    out = []
    for packet in packets:
        message = packet.payload
        if isinstance(message, wire.HomeTest):
            home_token = message.token
        elif isinstance(message, wire.CareofTest):
            careof_token = message.token
        elif isinstance(message, wire.BindingUpdate):
            dereg = message.lifetime == 0
            key = ref.kbm(home_token, None if dereg else careof_token)  # type: ignore[arg-type]
            care_of = packet.src
            out.append((packet, key, care_of))
        elif isinstance(message, wire.BindingAck) and message.options:
            out.append((packet, out[-1][1], out[-1][2]))
    return out


def test_scapy_sees_what_the_cores_sent(exchange: list[bytes]) -> None:
    for data in exchange:
        ours = wire.parse_packet(data, check_checksum=True)
        dissected = IPv6(data)
        assert (IPv6Address(dissected.src), IPv6Address(dissected.dst)) == (ours.src, ours.dst)
        ext = extensions(ours)
        assert_scapy_extension_headers(dissected, ext["home_address"], ext["routing_home_address"])
        message = ours.payload
        layer = dissected.getlayer(SCAPY_CLASS[type(message)])
        assert layer is not None, type(message)
        if isinstance(message, wire.HomeTestInit | wire.CareofTestInit):
            assert layer.cookie == message.cookie
        elif isinstance(message, wire.HomeTest | wire.CareofTest):
            assert (layer.index, layer.cookie, layer.token) == (
                message.nonce_index,
                message.cookie,
                message.token,
            )
        elif isinstance(message, wire.BindingUpdate):
            assert (layer.seq, layer.mhtime) == (message.sequence, message.lifetime)
            assert layer.flags == message.flags >> 9  # "PRMKLHA": A in the top bit
            [indices] = [o for o in layer.options if isinstance(o, MIP6OptNonceIndices)]
            ni = message.options[0]
            assert (indices.olen, indices.hni, indices.coni) == (
                4,
                ni.home_nonce_index,
                ni.careof_nonce_index,
            )
        elif isinstance(message, wire.BindingAck):
            assert (layer.status, layer.seq, layer.mhtime) == (
                message.status,
                message.sequence,
                message.lifetime,
            )
        elif isinstance(message, wire.BindingError):
            assert (layer.status, IPv6Address(layer.ha)) == (message.status, message.home_address)
        bad = [o for o in layer.options if isinstance(o, MIP6OptBindingAuthData)]
        if bad:
            assert bad[0].olen == 12
            assert bad[0].authenticator.to_bytes(12, "big") == message.options[-1].authenticator
        # scapy, building the same message from scratch, makes the same octets and checksum.
        scratch = raw(scapy_ip(ours.src, ours.dst, to_scapy_mh(message), **_scapy_ext(ext)))
        assert scratch == data, type(message)


def _scapy_ext(ext: dict) -> dict:
    return {"home": ext["home_address"], "routing_home": ext["routing_home_address"]}


def test_authenticators_verify_on_the_octets_scapy_dissected(exchange: list[bytes]) -> None:
    packets = [wire.parse_packet(d) for d in exchange]
    checked = authenticated(packets)
    assert len(checked) >= 6  # three BUs and three BAs at least
    for packet, key, care_of in checked:
        cls = MIP6MH_BU if isinstance(packet.payload, wire.BindingUpdate) else MIP6MH_BA
        mh = raw(
            IPv6(wire.build_packet(packet.src, packet.dst, packet.payload, **extensions(packet)))[
                cls
            ]
        )
        assert ref.bad_ok(key, care_of, CN, mh), packet.payload


def test_tshark_decodes_the_rr_messages(exchange: list[bytes], tmp_path: Path) -> None:
    decoded = tshark_json(write_pcap(tmp_path / "rr.pcap", exchange))
    assert len(decoded) == len(exchange)
    for index, (data, got) in enumerate(zip(exchange, decoded, strict=True)):
        ours = wire.parse_packet(data)
        assert "_ws.malformed" not in got, f"packet {index}: {got}"
        expected = expected_mobility(ours.payload)
        expected["ipv6.src"] = [ntop(ours.src)]
        expected["ipv6.dst"] = [ntop(ours.dst)]
        if ours.home_address_option is not None:
            expected["ipv6.opt.mipv6.home_address"] = [ntop(ours.home_address_option)]
        if ours.routing_header_type2 is not None:
            expected["ipv6.routing.mipv6.home_address"] = [
                ntop(ours.routing_header_type2.home_address)
            ]
            expected["ipv6.routing.segleft"] = ["1"]
        for name, values in expected.items():
            assert got.get(name) == values, f"packet {index} ({ours.payload}): {name}"


def test_tshark_authenticator_is_the_rfc_one(exchange: list[bytes], tmp_path: Path) -> None:
    """The BAD tshark shows equals First(96, HMAC_SHA1(Kbm, CoA | CN | MH data))."""
    packets = [wire.parse_packet(d) for d in exchange]
    decoded = tshark_json(write_pcap(tmp_path / "rr.pcap", exchange))
    by_packet = {id(p): got for p, got in zip(packets, decoded, strict=True)}
    for packet, key, care_of in authenticated(packets):
        shown = by_packet[id(packet)]["mip6.bad.auth"][0]
        expected = ref.authenticator(key, care_of, CN, packet.payload_bytes)
        assert bytes.fromhex(shown.replace(":", "")) == expected
