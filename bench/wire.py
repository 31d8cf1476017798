"""Throughput of the mip6agent.wire Mobility Header codec, with its baselines, as one JSON document.

What is measured (operations per second, best of several repeats):

* ``parse_mh`` and ``encode_mh`` on three messages: a plain Binding Update (no options,
  16 octets with its PadN), a plain Binding Acknowledgement, and an RFC 4285-authenticated
  home registration Binding Update (Mobile Node Identifier NAI, Message Identification and
  Message Authentication options, 64 octets). Encoding leaves the checksum at zero, as
  ``encode_mh`` does without pseudo-header addresses.
* scapy dissecting the very same bytes (``MIP6MH_BU(data)``, ``MIP6MH_BA(data)``): the
  library a Python home agent would otherwise use. Target: ours >= 20 times its rate.
* the floor: one ``struct.unpack_from("!BBBBHHHH", data, 0)`` of the fixed 12-octet MH + BU
  header of the plain BU, i.e. what any pure-Python decoder must at least spend. Target:
  our plain BU decode within 4 times the floor's time.
* ``parse_packet`` on whole IPv6 packets carrying a BU behind a Home Address option (the
  plain BU and the authenticated one), as a home agent receives them.

The baselines run in the same process, interleaved with our measurements (every repeat
visits every measurement once), because only ratios taken on the same interpreter, at the
same moment, on the same noisy machine mean anything; absolute rates are for context.
Statements are timed with :mod:`timeit` (string statements, so no extra call per loop,
garbage collector off while timing) and each measurement keeps its fastest repeat.

Run: ``.venv/bin/python bench/wire.py [--seconds S] [--repeats N] [--check]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import sys
import timeit
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from typing import Any

import scapy
from machine import cpu_model
from mip6agent import wire
from mip6agent.wire.constants import BU_FLAG_A, BU_FLAG_H, BU_FLAG_K
from scapy.layers.inet6 import MIP6MH_BA, MIP6MH_BU

TARGET_VS_SCAPY_MIN = 20.0
TARGET_VS_FLOOR_MAX = 4.0
FLOOR = struct.Struct("!BBBBHHHH")

CARE_OF = IPv6Address("2001:db8:ffff::10")
HOME_AGENT = IPv6Address("2001:db8:1::1")
HOME_ADDRESS = IPv6Address("2001:db8:1::100")
NAI = b"mn1@home.example.net"
HOME_REGISTRATION = BU_FLAG_A | BU_FLAG_H | BU_FLAG_K


@dataclass
class Measurement:
    """One timed statement; ``best`` is the fastest seconds-per-operation seen."""

    name: str
    stmt: str
    namespace: dict[str, Any]
    number: int = 0
    best: float = float("inf")
    samples: list[float] = field(default_factory=list)

    def timer(self) -> timeit.Timer:
        return timeit.Timer(self.stmt, globals=self.namespace)

    def calibrate(self, seconds_per_repeat: float) -> None:
        """Pick a loop count that makes one repeat last about ``seconds_per_repeat``."""
        timer = self.timer()
        number = 1
        while True:
            elapsed = timer.timeit(number)
            if elapsed >= 0.02 or number >= 1 << 30:
                break
            number *= 10 if elapsed < 0.002 else 2
        per_op = elapsed / number
        self.number = max(1, int(seconds_per_repeat / per_op))

    def run_once(self) -> None:
        per_op = self.timer().timeit(self.number) / self.number
        self.samples.append(per_op)
        self.best = min(self.best, per_op)

    @property
    def per_s(self) -> float:
        return 1.0 / self.best


def messages() -> dict[str, wire.MobilityMessage]:
    return {
        "bu": wire.BindingUpdate(sequence=1, flags=HOME_REGISTRATION, lifetime=100),
        "ba": wire.BindingAck(status=0, flags=0, sequence=1, lifetime=100),
        "auth_bu": wire.BindingUpdate(
            sequence=7,
            flags=HOME_REGISTRATION,
            lifetime=100,
            options=[
                wire.MobileNodeIdentifier(NAI),
                wire.MessageIdentification(0xE9A1_5C3B_0000_8000),
                # MN-HA authenticator: the first 96 bits of an HMAC-SHA1 (RFC 4285 5.5).
                wire.MessageAuthentication(spi=256, authenticator=bytes(range(12))),
            ],
        ),
    }


def check_inputs(
    msgs: dict[str, wire.MobilityMessage], encoded: dict[str, bytes], packets: dict[str, bytes]
) -> None:
    """Fail loudly unless every contender really decodes what it is timed on."""
    for name, data in encoded.items():
        if wire.parse_mh(data) != msgs[name]:
            raise SystemExit(f"bench: parse_mh does not round-trip {name}")
    for name, data in packets.items():
        packet = wire.parse_packet(data)
        if packet.payload != msgs[name.removeprefix("packet_")] or not packet.checksum_ok():
            raise SystemExit(f"bench: parse_packet does not round-trip {name}")
        if packet.home_address_option != HOME_ADDRESS:
            raise SystemExit(f"bench: {name} lost its Home Address option")
    bu, ba, auth = (
        MIP6MH_BU(encoded["bu"]),
        MIP6MH_BA(encoded["ba"]),
        MIP6MH_BU(encoded["auth_bu"]),
    )
    if (bu.seq, bu.mhtime, ba.seq, ba.mhtime) != (1, 100, 1, 100):
        raise SystemExit("bench: scapy did not dissect the plain BU/BA fields")
    kinds = [type(option).__name__ for option in auth.options]
    for wanted in ("MIP6OptMNID", "MIP6OptReplayProtection", "MIP6OptMsgAuth"):
        if wanted not in kinds:
            raise SystemExit(f"bench: scapy did not dissect {wanted} in the authenticated BU")
    if FLOOR.unpack_from(encoded["bu"], 0)[5:] != (1, HOME_REGISTRATION, 100):
        raise SystemExit("bench: the struct floor does not read the BU fields")


def run(seconds: float, repeats: int) -> dict[str, Any]:
    msgs = messages()
    encoded = {name: wire.encode_mh(message) for name, message in msgs.items()}
    packets = {
        f"packet_{name}": wire.build_packet(
            CARE_OF, HOME_AGENT, msgs[name], home_address=HOME_ADDRESS
        )
        for name in ("bu", "auth_bu")
    }
    check_inputs(msgs, encoded, packets)

    measurements: list[Measurement] = []

    def add(name: str, stmt: str, **namespace: Any) -> None:
        measurements.append(Measurement(name, stmt, namespace))

    for name, data in encoded.items():
        add(f"{name}_decode", "parse_mh(data)", parse_mh=wire.parse_mh, data=data)
        add(f"{name}_encode", "encode_mh(message)", encode_mh=wire.encode_mh, message=msgs[name])
        scapy_class = MIP6MH_BA if name == "ba" else MIP6MH_BU
        add(f"scapy_{name}_decode", "dissect(data)", dissect=scapy_class, data=data)
    add("struct_floor", "unpack_from(data, 0)", unpack_from=FLOOR.unpack_from, data=encoded["bu"])
    for name, data in packets.items():
        add(f"{name}_hao_parse", "parse_packet(data)", parse_packet=wire.parse_packet, data=data)

    per_repeat = seconds / repeats
    for measurement in measurements:
        measurement.calibrate(per_repeat)
    for _ in range(repeats):  # round robin: a noisy spell hits every measurement alike
        for measurement in measurements:
            measurement.run_once()

    by_name = {m.name: m for m in measurements}
    floor = by_name["struct_floor"]
    vs_scapy = {
        name: by_name[f"{name}_decode"].per_s / by_name[f"scapy_{name}_decode"].per_s
        for name in encoded
    }
    vs_floor = by_name["bu_decode"].best / floor.best
    result: dict[str, Any] = {
        "benchmark": "mip6agent.wire Mobility Header codec",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "scapy": scapy.__version__,
        "method": {
            "timer": "timeit, string statements, gc disabled while timing",
            "seconds_per_measurement": seconds,
            "repeats": repeats,
            "statistic": "fastest repeat; repeats interleaved round robin",
        },
        "message_octets": {name: len(data) for name, data in encoded.items()}
        | {f"{name}_hao": len(data) for name, data in packets.items()},
    }
    for m in measurements:
        result[f"{m.name}_per_s"] = round(m.per_s)
    result["ns_per_op"] = {m.name: round(m.best * 1e9, 1) for m in measurements}
    result["worst_repeat_ns_per_op"] = {
        m.name: round(max(m.samples) * 1e9, 1) for m in measurements
    }
    result["vs_scapy_decode_ratio"] = round(min(vs_scapy.values()), 1)
    result["vs_scapy_decode_ratio_by_message"] = {k: round(v, 1) for k, v in vs_scapy.items()}
    result["vs_struct_floor_ratio"] = round(vs_floor, 2)
    result["targets"] = {
        "vs_scapy_decode_ratio_min": TARGET_VS_SCAPY_MIN,  # ours/scapy rate, every message
        "vs_struct_floor_ratio_max": TARGET_VS_FLOOR_MAX,  # plain BU decode time / floor time
    }
    result["met"] = {
        "vs_scapy_decode_ratio": min(vs_scapy.values()) >= TARGET_VS_SCAPY_MIN,
        "vs_struct_floor_ratio": vs_floor <= TARGET_VS_FLOOR_MAX,
    }
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=1.0,
        help="timed seconds per measurement, split over the repeats (default 1.0; "
        "12 measurements, so about 15 s in all with calibration)",
    )
    parser.add_argument("--repeats", type=int, default=7, help="repeats per measurement")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is not met")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.repeats < 1:
        parser.error("--seconds must be positive and --repeats at least 1")
    result = run(args.seconds, args.repeats)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 1 if args.check and not all(result["met"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
