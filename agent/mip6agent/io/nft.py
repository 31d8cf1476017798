"""Keep a kernel without MIP6 from answering Mobile IPv6 packets with Parameter Problems.

Such a kernel drops a packet with a Home Address option with ICMPv6 Parameter Problem
code 2 (unrecognized option) and one with a Type 2 Routing Header with code 0 (erroneous
header field), after our raw sockets have got their copy (KERNEL.md). The mobile node
or correspondent would read those errors as "this node does not support Mobile IPv6".

We own one nftables table, ``inet mip6agent``, with an output chain that drops exactly
those errors: the code, the Pointer, the invoking packet's first Next Header and the octet
the Pointer names (0xC9 = HAO option type, 2 = routing type 2) are all matched in the
quoted packet with raw ``@th`` payload expressions. nft cannot follow the invoking
packet's header chain, so each rule fixes one header layout; the defaults cover the layout
RFC 6275 senders use (and wire.build_packet builds). docs/transport.md explains the choice.

``nft`` (JSON in, JSON out) is the only subprocess: pyroute2's nftables support cannot
express raw payload matches.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from ..wire.constants import (
    DSTOPT_HOME_ADDRESS,
    IPPROTO_DSTOPTS,
    IPPROTO_IPV6,
    IPPROTO_MH,
    IPPROTO_ROUTING,
    ROUTING_TYPE_2,
)

FAMILY = "inet"
TABLE = "mip6agent"
CHAIN = "output"
TUNNEL_CHAIN = "prerouting"
TUNNELLED_IN = "tunnelled_in"
# Home agent admission: Mobility Headers from the care-of addresses of current bindings pass;
# from anyone else at most a set rate, so that a flood beyond what the agent can read is
# dropped here, not at random in the socket queue in front of known mobile nodes' refreshes.
ADMISSION_CHAIN = "input"
KNOWN_SET = "known_senders"
ADMITTED = "admitted_known"
UNKNOWN_DROPPED = "unknown_over_rate"
# Mobile node route optimisation trigger (RFC 6275 11.7.2 leaves it to us): every packet
# from or to a watched home address puts (home address . peer) into a timed set; the agent
# reads it every second. "update" restarts an element's timeout, so an element's
# ``expires`` tells when it was last seen.
WATCHED_HOMES = "ro_homes"
TRAFFIC_SET = "ro_traffic"
TRAFFIC_CHAIN = "ro_input"
TRAFFIC_TIMEOUT = 60
TRAFFIC_SIZE = 4096
_ICMPV6_ERROR_HEADER = 8  # type, code, checksum, pointer: the invoking packet follows
_NEXT_HEADER_OFFSET = 6  # in the quoted IPv6 header
_TIMEOUT = 10.0


class NftError(RuntimeError):
    """``nft`` is missing or refused the request; the message says which and why."""


@dataclass(frozen=True, slots=True)
class SuppressedError:
    """One Parameter Problem the stack sends that the rule set drops.

    ``pointer`` is the Pointer field (offset into the invoking packet), which must name an
    octet equal to ``octet``; ``first_header`` is the invoking packet's Next Header.
    """

    name: str
    code: int
    pointer: int
    first_header: int
    octet: int


# Destination Options right after the IPv6 header, HAO after 4 octets of padding (8n+6).
HAO_AFTER_IPV6_HEADER = SuppressedError("hao", 2, 46, IPPROTO_DSTOPTS, DSTOPT_HOME_ADDRESS)
# Type 2 Routing Header right after the IPv6 header; the Pointer names the routing type.
RH2_AFTER_IPV6_HEADER = SuppressedError("rh2", 0, 42, IPPROTO_ROUTING, ROUTING_TYPE_2)
DEFAULT_SUPPRESSED = (HAO_AFTER_IPV6_HEADER, RH2_AFTER_IPV6_HEADER)


def _payload_match(field: dict[str, Any], value: int | str) -> dict[str, Any]:
    return {"match": {"op": "==", "left": {"payload": field}, "right": value}}


def _icmpv6(field: str) -> dict[str, Any]:
    return {"protocol": "icmpv6", "field": field}


def _quoted_octet(offset: int) -> dict[str, Any]:
    """One octet of the quoted invoking packet, as a raw transport-header payload."""
    return {"base": "th", "offset": (_ICMPV6_ERROR_HEADER + offset) * 8, "len": 8}


def _rule(table: str, error: SuppressedError) -> dict[str, Any]:
    return {
        "rule": {
            "family": FAMILY,
            "table": table,
            "chain": CHAIN,
            "comment": error.name,
            "expr": [
                _payload_match(_icmpv6("type"), "parameter-problem"),
                _payload_match(_icmpv6("code"), error.code),
                _payload_match(_icmpv6("parameter-problem"), error.pointer),
                _payload_match(_quoted_octet(_NEXT_HEADER_OFFSET), error.first_header),
                _payload_match(_quoted_octet(error.pointer), error.octet),
                {"counter": None},
                {"drop": None},
            ],
        }
    }


def _admission(table: str, chain: dict[str, Any], rate: int) -> list[dict[str, Any]]:
    """The input chain: MH from a known sender is accepted, from others limited to ``rate``.

    ``meta l4proto`` is the transport protocol after the extension headers, so a Binding
    Update behind a Destination Options header (the Home Address option) matches too.
    """
    mh = {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": IPPROTO_MH}}
    known = {
        "match": {
            "op": "==",
            "left": {"payload": {"protocol": "ip6", "field": "saddr"}},
            "right": f"@{KNOWN_SET}",
        }
    }
    over = {"limit": {"rate": rate, "per": "second", "burst": rate, "inv": True}}
    base = {"family": FAMILY, "table": table, "chain": ADMISSION_CHAIN}
    return [
        {
            "add": {
                "set": {"family": FAMILY, "table": table, "name": KNOWN_SET, "type": "ipv6_addr"}
            }
        },
        # Before the filter hooks (prio 0): the admission must not depend on other tables.
        {"add": {"chain": {**chain, "name": ADMISSION_CHAIN, "hook": "input", "prio": -150}}},
        {
            "add": {
                "rule": {
                    **base,
                    "comment": ADMITTED,
                    "expr": [mh, known, {"counter": None}, {"accept": None}],
                }
            }
        },
        {
            "add": {
                "rule": {
                    **base,
                    "comment": UNKNOWN_DROPPED,
                    "expr": [mh, over, {"counter": None}, {"drop": None}],
                }
            }
        },
    ]


def _address(field: str) -> dict[str, Any]:
    return {"payload": {"protocol": "ip6", "field": field}}


def _traffic_watch(table: str, chain: dict[str, Any]) -> list[dict[str, Any]]:
    """Sets and rules of the mobile node's traffic watch: output from a watched home
    address, and input to one (after the tunnel has decapsulated it)."""
    base = {"family": FAMILY, "table": table}
    homes = {"set": {**base, "name": WATCHED_HOMES, "type": "ipv6_addr"}}
    seen = {
        "set": {
            **base,
            "name": TRAFFIC_SET,
            "type": ["ipv6_addr", "ipv6_addr"],
            "flags": ["timeout"],
            "timeout": TRAFFIC_TIMEOUT,
            "size": TRAFFIC_SIZE,
        }
    }

    def note(home: str, peer: str, chain_name: str, comment: str) -> dict[str, Any]:
        watched = {"match": {"op": "==", "left": _address(home), "right": f"@{WATCHED_HOMES}"}}
        key = {"concat": [_address(home), _address(peer)]}
        update = {"set": {"op": "update", "elem": key, "set": f"@{TRAFFIC_SET}"}}
        rule = {**base, "chain": chain_name, "comment": comment, "expr": [watched, update]}
        return {"add": {"rule": rule}}

    return [
        {"add": homes},
        {"add": seen},
        {"add": {"chain": {**chain, "name": TRAFFIC_CHAIN, "hook": "input"}}},
        note("saddr", "daddr", CHAIN, "ro_traffic_out"),
        note("daddr", "saddr", TRAFFIC_CHAIN, "ro_traffic_in"),
    ]


def ruleset(
    table: str = TABLE,
    suppressed: tuple[SuppressedError, ...] = DEFAULT_SUPPRESSED,
    admission_rate: int | None = None,
    watch_traffic: bool = False,
) -> dict[str, Any]:
    """The JSON batch that (re)creates the table atomically: add, delete, add again.

    ``admission_rate``: a home agent's limit on Mobility Headers per second from senders
    that are not in the known-senders set (None or 0: no admission chain).
    ``watch_traffic``: a mobile node's route optimisation trigger (see TRAFFIC_SET).
    """
    ref = {"family": FAMILY, "name": table}
    chain = {
        "family": FAMILY,
        "table": table,
        "name": CHAIN,
        "type": "filter",
        "hook": "output",
        "prio": 0,
        "policy": "accept",
    }
    commands: list[dict[str, Any]] = [
        {"add": {"table": ref}},  # so that the delete cannot fail
        {"delete": {"table": ref}},
        {"add": {"table": ref}},
        {"add": {"chain": chain}},
    ]
    commands += [{"add": _rule(table, error)} for error in suppressed]
    # Count IPv6-in-IPv6 arriving: at a home agent, the mobile nodes' reverse-tunnelled
    # packets (mip6stat's counter); at a mobile node, what its home agent tunnelled to it.
    # Prerouting sees them before seg6local or ip6tnl decapsulates.
    commands.append({"add": {"chain": {**chain, "name": TUNNEL_CHAIN, "hook": "prerouting"}}})
    commands.append(
        {
            "add": {
                "rule": {
                    "family": FAMILY,
                    "table": table,
                    "chain": TUNNEL_CHAIN,
                    "comment": TUNNELLED_IN,
                    "expr": [
                        {
                            "match": {
                                "op": "==",
                                "left": {"meta": {"key": "l4proto"}},
                                "right": IPPROTO_IPV6,
                            }
                        },
                        {"counter": None},
                    ],
                }
            }
        }
    )
    if admission_rate:
        commands += _admission(table, chain, admission_rate)
    if watch_traffic:
        commands += _traffic_watch(table, chain)
    return {"nftables": commands}


def watch_homes(homes: list[str], table: str = TABLE, *, nft: str | None = None) -> None:
    """Watch exactly these home addresses (one batch: flush, then add)."""
    ref = {"family": FAMILY, "table": table, "name": WATCHED_HOMES}
    commands: list[dict[str, Any]] = [{"flush": {"set": ref}}]
    if homes:
        commands.append({"add": {"element": {**ref, "elem": homes}}})
    _run(["-f", "-"], {"nftables": commands}, nft)


def traffic_seen(
    within: float, table: str = TABLE, *, nft: str | None = None
) -> list[tuple[str, str]]:
    """(home address, peer) pairs with a packet in the last ``within`` seconds."""
    out: list[tuple[str, str]] = []
    for item in _list(nft, "set", FAMILY, table, TRAFFIC_SET):
        found = item.get("set")
        if not found:
            continue
        for element in found.get("elem", []):
            entry = element.get("elem", {}) if isinstance(element, dict) else {}
            pair = entry.get("val", {}).get("concat") if isinstance(entry, dict) else None
            expires = entry.get("expires", 0) if isinstance(entry, dict) else 0
            if isinstance(pair, list) and len(pair) == 2 and TRAFFIC_TIMEOUT - expires <= within:
                out.append((str(pair[0]), str(pair[1])))
    return out


def set_known_senders(
    add: list[str], remove: list[str], table: str = TABLE, *, nft: str | None = None
) -> None:
    """Change the known-senders set in one batch (an element removed must be in it)."""
    commands: list[dict[str, Any]] = []
    ref = {"family": FAMILY, "table": table, "name": KNOWN_SET}
    if remove:
        commands.append({"delete": {"element": {**ref, "elem": remove}}})
    if add:
        commands.append({"add": {"element": {**ref, "elem": add}}})
    if commands:
        _run(["-f", "-"], {"nftables": commands}, nft)


def known_senders(table: str = TABLE, *, nft: str | None = None) -> set[str]:
    """The addresses in the known-senders set now."""
    out: set[str] = set()
    for item in _list(nft, "set", FAMILY, table, KNOWN_SET):
        found = item.get("set")
        if found:
            out.update(str(e) for e in found.get("elem", []) if isinstance(e, str))
    return out


def _binary(nft: str | None) -> str:
    name = nft or "nft"
    # sbin is not always on a service's PATH.
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")
    if path is None:
        raise NftError(f"{name}: not found; install nftables (package 'nftables')")
    return path


def _run(args: list[str], document: dict[str, Any] | None = None, nft: str | None = None) -> str:
    binary = _binary(nft)
    argv = [binary, "-j", *args]
    stdin = json.dumps(document) if document is not None else None
    try:
        result = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NftError(f"{' '.join(argv)}: {exc}") from exc
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"
        raise NftError(f"{' '.join(argv)} failed: {detail}")
    return result.stdout


def install(
    table: str = TABLE,
    suppressed: tuple[SuppressedError, ...] = DEFAULT_SUPPRESSED,
    *,
    nft: str | None = None,
    admission_rate: int | None = None,
    watch_traffic: bool = False,
) -> None:
    """Create (or replace) the table; running it twice leaves one table with one rule set."""
    _run(["-f", "-"], ruleset(table, suppressed, admission_rate, watch_traffic), nft)


def remove(table: str = TABLE, *, nft: str | None = None) -> None:
    """Delete the table if it is there (one atomic batch, so never an error if it is not)."""
    ref = {"family": FAMILY, "name": table}
    _run(["-f", "-"], {"nftables": [{"add": {"table": ref}}, {"delete": {"table": ref}}]}, nft)


def _list(nft: str | None, *args: str) -> list[dict[str, Any]]:
    output = _run(["list", *args], nft=nft)
    try:
        return json.loads(output).get("nftables", [])
    except (ValueError, AttributeError) as exc:
        raise NftError(f"nft -j list {' '.join(args)}: unreadable output ({exc})") from exc


def is_installed(table: str = TABLE, *, nft: str | None = None) -> bool:
    for item in _list(nft, "tables", FAMILY):
        found = item.get("table")
        if found and found.get("family") == FAMILY and found.get("name") == table:
            return True
    return False


def counters(table: str = TABLE, *, nft: str | None = None) -> dict[str, int]:
    """Packets counted so far, per rule name ({} when the table is not installed).

    ``hao``/``rh2``: Parameter Problems dropped; ``tunnelled_in``: IPv6-in-IPv6 received.
    """
    if not is_installed(table, nft=nft):
        return {}
    result: dict[str, int] = {}
    for item in _list(nft, "table", FAMILY, table):
        rule = item.get("rule")
        if not rule:
            continue
        for expr in rule.get("expr", []):
            if isinstance(expr, dict) and isinstance(expr.get("counter"), dict):
                name = rule.get("comment", str(rule.get("handle")))
                result[name] = result.get(name, 0) + int(expr["counter"].get("packets", 0))
    return result


class ParameterProblemSuppression:
    """Context manager: the table exists inside the ``with`` block and is removed after."""

    def __init__(
        self,
        table: str = TABLE,
        suppressed: tuple[SuppressedError, ...] = DEFAULT_SUPPRESSED,
        *,
        nft: str | None = None,
    ) -> None:
        self.table, self.suppressed, self.nft = table, suppressed, nft

    def __enter__(self) -> ParameterProblemSuppression:
        install(self.table, self.suppressed, nft=self.nft)
        return self

    def __exit__(self, *exc: object) -> None:
        remove(self.table, nft=self.nft)

    def counters(self) -> dict[str, int]:
        return counters(self.table, nft=self.nft)
