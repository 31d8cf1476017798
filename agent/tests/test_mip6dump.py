"""mip6dump against tshark on the same capture, and its behaviour as a command."""

from __future__ import annotations

import json
import subprocess
import sys
from ipaddress import IPv6Address
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mip6agent import wire
from test_crosscheck_tshark import case
from tshark import to_pcapng, tshark_fields, tshark_json, write_pcap

HA, COA, HOA, CN = (
    IPv6Address(a) for a in ("2001:db8:1::1", "2001:db8:2::7", "2001:db8:1::7", "2001:db8:4::9")
)
# Fields where tshark 4.0 is wrong and mip6dump is not (docs/mip6dump.md).
TSHARK_BUGS = {"mip6.auth.auth_data", "mip6.mseg_id.timestamp"}
BYTE_FIELDS = {
    "mip6.bad.auth",
    "mip6.auth.auth_data",
    "mip6.binding_refresh_request",
    "mip6.unknown_type_data",
}


def mip6dump(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mip6agent.cli.mip6dump", *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


def dump_json(path: Path, *extra: str) -> list[dict[str, str]]:
    out = mip6dump("-r", str(path), "-T", "json", *extra).stdout
    return [json.loads(line) for line in out.splitlines()]


def build(cases: list) -> list[bytes]:
    return [
        wire.build_packet(
            src,
            dst,
            msg,
            home_address=home if hao else None,
            routing_home_address=home if rh2 else None,
        )
        for msg, src, dst, home, hao, rh2 in cases
    ]


def _agree(tmp_path: Path, packets: list[bytes]) -> None:
    capture = to_pcapng(write_pcap(tmp_path / "in.pcap", packets), tmp_path / "capture.pcapng")
    ours = dump_json(capture, "-a")
    theirs = tshark_json(capture)
    assert len(ours) == len(theirs) == len(packets)
    for mine in ours:
        frame = int(mine["frame.number"])
        other = theirs[frame - 1]
        assert other["frame.number"] == [mine["frame.number"]]
        for name, value in mine.items():
            if name == "frame.number":
                continue
            assert name in other, f"frame {frame}: tshark has no {name}"
            values = [v.replace(":", "") if name in BYTE_FIELDS else v for v in other[name]]
            if name == "mip6.auth.auth_data":
                # tshark shows two octets fewer than the option holds.
                assert [v[:-4] for v in value.split(",")] == values
            elif name not in TSHARK_BUGS:
                assert ",".join(values) == value, f"frame {frame}: {name}"
    # And the plain `-T fields` form, which is what the values are meant to equal.
    names = sorted({n for row in ours for n in row} - TSHARK_BUGS - {"frame.number"})
    rows = tshark_fields(capture, names)
    for mine, row in zip(ours, rows, strict=True):
        for name in names:
            assert mine.get(name, "") == row[name], f"frame {mine['frame.number']}: {name}"


@settings(max_examples=10, deadline=None)
@given(st.lists(case, min_size=30, max_size=30))
def test_json_matches_tshark(tmp_path_factory, cases: list) -> None:
    _agree(tmp_path_factory.mktemp("dump"), build(cases))


def _sample(tmp_path: Path) -> Path:
    auth = [
        wire.MobileNodeIdentifier(b"mn7@example.net"),
        wire.MessageIdentification(0x0123456789ABCDEF),
        wire.MessageAuthentication(1000, bytes(range(1, 13))),
    ]
    packets = [
        wire.build_packet(COA, HA, wire.BindingUpdate(9, 0xC000, 60, auth), home_address=HOA),
        wire.build_packet(HA, COA, wire.BindingAck(0, 0, 9, 60, auth), routing_home_address=HOA),
        # an ordinary ICMPv6 echo request: not Mobile IPv6
        bytes.fromhex("6000000000083a40")
        + CN.packed
        + HOA.packed
        + bytes.fromhex("8000000000010001"),
        wire.build_packet(COA, HA, wire.BindingUpdate(10, 0xC000, 60)),
    ]
    return write_pcap(tmp_path / "sample.pcap", packets)


def test_text_lines_and_filter(tmp_path: Path) -> None:
    capture = _sample(tmp_path)
    lines = mip6dump("-r", str(capture)).stdout.splitlines()
    assert len(lines) == 3, lines
    assert f"{COA} > {HA}: HAO home {HOA} MH BU seq 9 lifetime 240s [AH]" in lines[0]
    assert f"{HA} > {COA}: RH2 home {HOA} MH BA status 0 (accepted) seq 9" in lines[1]
    assert "mn-id" not in lines[0]
    everything = mip6dump("-r", str(capture), "-a").stdout.splitlines()
    assert len(everything) == 4
    assert f"{CN} > {HOA}: ICMP6 type 128" in everything[2]


def test_verbose_shows_options(tmp_path: Path) -> None:
    line = mip6dump("-r", str(_sample(tmp_path)), "-v", "-c", "1").stdout.splitlines()
    assert len(line) == 1
    assert "mn-id subtype 1 'mn7@example.net'" in line[0]
    assert "mesg-id 0x0123456789abcdef" in line[0]
    assert "mesg-auth subtype 1 spi 1000 data 0102030405060708090a0b0c" in line[0]
    assert "csum 0x" in line[0] and line[0].endswith("ok)")


def test_verbose_flags_a_bad_checksum(tmp_path: Path) -> None:
    packet = bytearray(wire.build_packet(COA, HA, wire.BindingUpdate(1, 0x8000, 1)))
    packet[44] ^= 0xFF  # the MH checksum field
    capture = write_pcap(tmp_path / "csum.pcap", [bytes(packet)])
    line = mip6dump("-r", str(capture), "-v").stdout.strip()
    assert line.endswith("bad)"), line


def test_count_stops_early(tmp_path: Path) -> None:
    assert len(mip6dump("-r", str(_sample(tmp_path)), "-c", "2").stdout.splitlines()) == 2


def test_malformed_packet_is_reported_and_dumping_continues(tmp_path: Path) -> None:
    good = wire.build_packet(COA, HA, wire.BindingUpdate(1, 0x8000, 1))
    bad = bytearray(good)
    bad[41] = 40  # MH header length far past the end
    capture = write_pcap(tmp_path / "bad.pcap", [good, bytes(bad), good])
    lines = mip6dump("-r", str(capture)).stdout.splitlines()
    assert len(lines) == 3
    assert "[malformed: header length 40 exceeds" in lines[1]
    assert "MH BU seq 1" in lines[2]
    records = dump_json(capture)
    assert "_ws.malformed" in records[1] and records[1]["frame.number"] == "2"
    # tshark agrees that frame 2 is malformed
    assert "_ws.malformed" in tshark_json(capture)[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-r", "/nonexistent/capture.pcap"], "No such file or directory"),
        (["-i", "nosuchif0"], "no such interface"),
    ],
)
def test_unreadable_source_exits_2(args: list[str], message: str) -> None:
    result = mip6dump(*args, check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_not_a_capture_file_exits_2(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture file at all")
    result = mip6dump("-r", str(junk), check=False)
    assert result.returncode == 2
    assert "not a pcap or pcapng file" in result.stderr
    assert "Traceback" not in result.stderr


def test_truncated_file_prints_what_it_read_then_exits_2(tmp_path: Path) -> None:
    capture = _sample(tmp_path)
    data = capture.read_bytes()
    capture.write_bytes(data[:-30])
    result = mip6dump("-r", str(capture), check=False)
    assert result.returncode == 2
    assert len(result.stdout.splitlines()) == 2
    assert "Traceback" not in result.stderr


def test_help_explains() -> None:
    out = mip6dump("--help").stdout
    for flag in ("-r FILE", "-i IFACE", "-c N", "-a", "-v", "-T"):
        assert flag in out


def _tunnel(src: IPv6Address, dst: IPv6Address, inner: bytes, hop_limit: int = 64) -> bytes:
    """RFC 2473 IPv6-in-IPv6, as a home agent and a mobile node tunnel."""
    header = bytes.fromhex("60000000") + len(inner).to_bytes(2, "big") + bytes([41, hop_limit])
    return header + src.packed + dst.packed + inner


def _tunnelled_packets() -> list[bytes]:
    ping = bytes.fromhex("6000000000083a40") + HOA.packed + CN.packed
    ping += bytes.fromhex("8000000000010001")
    bu = wire.build_packet(COA, HA, wire.BindingUpdate(3, 0xC000, 60))
    return [
        # a reverse-tunnelled HoTI (MN -> HA -> CN) and the CN's answer tunnelled back
        _tunnel(COA, HA, wire.build_packet(HOA, CN, wire.HomeTestInit(bytes(range(8))))),
        _tunnel(HA, COA, wire.build_packet(CN, HOA, wire.BindingError(2, IPv6Address("::")))),
        # reverse-tunnelled data: not Mobile IPv6 by itself
        _tunnel(COA, HA, ping),
        # a tunnel inside a tunnel, the innermost a BU
        _tunnel(COA, HA, _tunnel(COA, HA, bu)),
    ]


def _tunnelled(tmp_path: Path) -> Path:
    return write_pcap(tmp_path / "tunnelled.pcap", _tunnelled_packets())


def test_tunnelled_mobility_headers_match_tshark(tmp_path: Path) -> None:
    """HoTI/HoT and other MH that a home agent and a mobile node tunnel (next header 41):
    the inner packet's fields follow the outer ones, as tshark lists both layers."""
    capture = _tunnelled(tmp_path)
    ours = dump_json(capture)
    assert [row["frame.number"] for row in ours] == ["1", "2", "4"]
    assert ours[0]["ipv6.src"] == f"{COA},{HOA}" and ours[0]["ipv6.nxt"] == "41,135"
    assert ours[0]["mip6.mhtype"] == "1" and ours[1]["mip6.be.status"] == "2"
    names = sorted({n for row in ours for n in row} - {"frame.number"})
    rows = tshark_fields(capture, names)
    by_frame = dict(zip(range(1, len(rows) + 1), rows, strict=True))
    for mine in ours:
        other = by_frame[int(mine["frame.number"])]
        for name in names:
            assert mine.get(name, "") == other[name], f"frame {mine['frame.number']}: {name}"
    # every frame (with -a) agrees with tshark's JSON as well
    _agree(tmp_path, _tunnelled_packets())


def test_tunnelled_text_line(tmp_path: Path) -> None:
    lines = mip6dump("-r", str(_tunnelled(tmp_path))).stdout.splitlines()
    assert len(lines) == 3, lines
    assert f"{COA} > {HA}: IP6 {HOA} > {CN}: MH HoTI" in lines[0]
    assert f"{COA} > {HA}: IP6 {COA} > {HA}: IP6 {COA} > {HA}: MH BU seq 3" in lines[2]
