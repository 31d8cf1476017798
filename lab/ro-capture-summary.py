"""Summarise a lab capture of traffic between a correspondent and a mobile node's home
address, as decoded by tshark (not by the agent's decoder), for the Molecule
route-optimization scenario. Prints one JSON document:

- ``direct_to_mn``: packets from the correspondent to a care-of address carrying a Type 2
  Routing Header that names the home address (RFC 6275 6.4), by kind;
- ``direct_from_mn``: packets to the correspondent from a care-of address carrying a Home
  Address option with the home address (RFC 6275 6.3), by kind;
- ``plain``: packets between the correspondent and the home address itself (no RH2, no
  Home Address option: the triangle through the home agent), by kind;
- ``tunnelled``: IPv6-in-IPv6 packets whose inner header is between the two, by kind;
- ``care_of_addresses``: the destinations of ``direct_to_mn``;
- ``mobility``: Mobility Header types seen between the two (HoTI, CoTI, HoT, CoT, BU,
  BA, BE, BRR), outer or inner.

A kind is ``echo_request``, ``echo_reply``, ``udp`` or ``other``; Mobility Header packets
are counted only under ``mobility``.

Usage: python3 lab/ro-capture-summary.py CAPTURE --correspondent ADDR --home-address ADDR
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import subprocess
import sys
from collections import Counter

FIELDS = [
    "ipv6.src",
    "ipv6.dst",
    "ipv6.nxt",
    "ipv6.routing.type",
    "ipv6.routing.mipv6.home_address",
    "ipv6.opt.mipv6.home_address",
    "icmpv6.type",
    "udp.srcport",
    "mip6.mhtype",
]
MH_NAMES = {0: "brr", 1: "hoti", 2: "coti", 3: "hot", 4: "cot", 5: "bu", 6: "ba", 7: "be"}


def addresses(text: str) -> list[ipaddress.IPv6Address]:
    return [ipaddress.IPv6Address(a) for a in text.split(",") if a]


def numbers(text: str) -> list[int]:
    return [int(n) for n in text.split(",") if n]


def kind(icmp: list[int], udp: str) -> str:
    if 128 in icmp:
        return "echo_request"
    if 129 in icmp:
        return "echo_reply"
    return "udp" if udp else "other"


def summarise(capture: str, cn: ipaddress.IPv6Address, hoa: ipaddress.IPv6Address) -> dict:
    done = subprocess.run(
        ["tshark", "-r", capture, "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a",
         *(arg for field in FIELDS for arg in ("-e", field))],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"tshark failed on {capture}: {done.stderr.strip()[-800:]}")
    result: dict[str, Counter[str]] = {
        name: Counter() for name in ("direct_to_mn", "direct_from_mn", "plain", "tunnelled")
    }
    mobility: Counter[str] = Counter()
    care_of: set[str] = set()
    for line in done.stdout.splitlines():
        cols = (line.split("\t") + [""] * len(FIELDS))[: len(FIELDS)]
        srcs, dsts = addresses(cols[0]), addresses(cols[1])
        if not srcs or not dsts:
            continue
        nxt, rtype = numbers(cols[2]), numbers(cols[3])
        rh2_home, hao = addresses(cols[4]), addresses(cols[5])
        what = kind(numbers(cols[6]), cols[7])
        ends = {cn, hoa}
        pairs = list(zip(srcs, dsts, strict=False))
        if cols[8] and cn in srcs + dsts:  # CoTI and CoT name the care-of address only
            for mh in numbers(cols[8]):
                mobility[MH_NAMES.get(mh, str(mh))] += 1
            continue
        src, dst = srcs[0], dsts[0]
        if src == cn and 2 in rtype and hoa in rh2_home and dst != hoa:
            result["direct_to_mn"][what] += 1
            care_of.add(str(dst))
        elif dst == cn and hoa in hao and src != hoa:
            result["direct_from_mn"][what] += 1
        elif 41 in nxt[:1] and any({s, d} == ends for s, d in pairs[1:]):
            result["tunnelled"][what] += 1
        elif {src, dst} == ends:
            result["plain"][what] += 1
    summary: dict[str, object] = {name: dict(counts) for name, counts in result.items()}
    summary["care_of_addresses"] = sorted(care_of)
    summary["mobility"] = dict(mobility)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("capture", help="a pcap or pcapng file")
    parser.add_argument("--correspondent", required=True, type=ipaddress.IPv6Address)
    parser.add_argument("--home-address", required=True, type=ipaddress.IPv6Address)
    args = parser.parse_args(argv)
    json.dump(summarise(args.capture, args.correspondent, args.home_address), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
