"""The agent configuration schema: the one source of truth for every setting.

Role variables, ``mip6config`` flags and the seed's ``mip6.conf`` lines all map onto the keys
declared here; ``docs/agent-config.md`` carries :func:`markdown_table` verbatim.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from ipaddress import IPv6Address, IPv6Interface
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .keys import SPI_MAX, SPI_MIN, load_keys_checked
from .kinds import (
    AbsPath,
    Address,
    HostPrefix,
    IfName,
    ListenAddress,
    Nai,
    Prefix,
    anycast_problem,
)
from .model import (
    AgentConfig,
    CorrespondentNodeConfig,
    ForeignAddressConfig,
    HomeAddressConfig,
    HomeAgentConfig,
    MetricsConfig,
    MobileNodeConfig,
)
from .walker import (
    INVALID,
    Bool,
    Choice,
    Ctx,
    Field,
    Int,
    Kind,
    ListOf,
    Opt,
    Seconds,
    Section,
    SectionView,
    describe,
    quote,
)

ROLES = ("ha", "mn", "cn")
DEFAULT_CONFIG_PATH = Path("/etc/mip6/agent.yml")

# RFC 6275: lifetimes in Binding Updates/Acknowledgements and the Binding Refresh Advice are
# 16-bit counts of 4-second units.
MAX_BINDING_LIFETIME = 0xFFFF * 4
MAX_RR_BINDING_LIFETIME = 420  # RFC 6275 section 12
MAX_BINDACK_TIMEOUT = 32  # RFC 6275 section 12
INITIAL_BINDACK_TIMEOUT_FIRST_REG = 1.5  # RFC 6275 section 13
# radvd refuses HomeAgentLifetime above 65520, and the role renders radvd.conf from this value.
MAX_HA_LIFETIME = 65520

_ROLE_NAMES = {"ha": "Home Agent", "mn": "Mobile Node", "cn": "Correspondent Node"}
_SECTION_ROLE = {"home_agent": "ha", "mobile_node": "mn"}


def _none(value: Any) -> bool:
    return value is None


def _empty(value: Any) -> bool:
    return not value


# --- home_agent ------------------------------------------------------------------------------


def _check_home_agent(v: SectionView) -> None:
    if v.ok("home_prefixes"):
        prefixes = v.values["home_prefixes"]
        for i, prefix in enumerate(prefixes):
            for j in range(i):
                if prefix.overlaps(prefixes[j]):
                    v.item_error(
                        "home_prefixes",
                        i,
                        f'"{prefix}" overlaps home_prefixes[{j}] "{prefixes[j]}"',
                    )
        if v.ok("address") and v.values["address"] is not None:
            address = v.values["address"]
            inside = [p for p in prefixes if address in p]
            if not inside:
                shown = ", ".join(str(p) for p in prefixes)
                v.error("address", f'"{address}" is not inside any home prefix ({shown})')
            else:
                problem = anycast_problem(IPv6Interface(f"{address}/{inside[0].prefixlen}"))
                if problem:
                    v.error("address", f'"{address}" {problem}')
    if v.ok("refresh_advice", "max_binding_lifetime"):
        advice, limit = v.values["refresh_advice"], v.values["max_binding_lifetime"]
        if advice is not None and advice >= limit:
            v.error(
                "refresh_advice",
                f"must be less than max_binding_lifetime ({limit:g} s), got {advice:g}",
            )


HOME_AGENT = Section(
    [
        Field(
            "interfaces",
            ListOf(IfName(), min_items=1, unique=lambda x: x, noun="interface names"),
            doc="Home link interfaces this home agent serves (proxy Neighbor Discovery, DHAAD, "
            "Mobile Prefix Advertisements).",
            compat="rtadvd `-m <interfaces>`",
        ),
        Field(
            "address",
            Opt(Address()),
            None,
            doc="The home agent's global address on the home link, the one its Router "
            "Advertisements carry with the R bit. Must lie inside a home prefix. null: the "
            "agent uses the interface's address inside the first home prefix.",
            compat='rtadvd `addr="<prefix:id>"`',
        ),
        Field(
            "home_prefixes",
            ListOf(Prefix(), min_items=1, unique=lambda x: x, noun="IPv6 prefixes"),
            doc="Prefixes of the home link. A Binding Update for a home address outside them "
            "is refused with status 132 (not home subnet). Host bits must be zero; no overlaps; "
            "normally /64.",
            compat="—",
        ),
        Field(
            "preference",
            Int(0, 0xFFFF),
            0,
            doc="Home Agent Preference in the Home Agent Information option (RFC 6275 7.4, a "
            "16-bit unsigned field): higher is preferred in DHAAD replies.",
            compat="`-y ha_pref`; `ha_pref N`; rtadvd `hapref#N`; radvd `HomeAgentPreference`",
        ),
        Field(
            "lifetime",
            Seconds(1, MAX_HA_LIFETIME),
            1800.0,
            doc="Home Agent Lifetime advertised in the Home Agent Information option; the "
            "option carries whole seconds, so fractions are dropped.",
            compat="rtadvd `hatime#S`; radvd `HomeAgentLifetime`",
        ),
        Field(
            "max_binding_lifetime",
            Seconds(4, MAX_BINDING_LIFETIME),
            float(MAX_BINDING_LIFETIME),
            doc="Longest lifetime granted to a home registration. The Binding Acknowledgement "
            "counts 4-second units, so a granted lifetime is rounded down to a multiple of 4.",
            compat="UMIP `HaMaxBindingLife`",
        ),
        Field(
            "refresh_advice",
            Opt(Seconds(4, MAX_BINDING_LIFETIME)),
            None,
            doc="Binding Refresh Advice sent in Binding Acknowledgements (RFC 6275 6.2.4), "
            "rounded down to 4 s units; must be less than max_binding_lifetime. null: none "
            "is sent and mobile nodes refresh before the lifetime runs out.",
            compat="—",
        ),
        Field(
            "dad",
            Bool(),
            True,
            doc="Run Duplicate Address Detection on the home link for a new home address "
            "before accepting its first registration (status 134 if it fails).",
            compat="— (the seed always answered OK)",
        ),
        Field(
            "sequence_window",
            Int(2, 32768),
            32768,
            doc="A Binding Update is newer than the cached binding when its sequence number "
            "is ahead by 1 to sequence_window - 1, modulo 2^16; older or equal numbers get "
            "status 135. 32768 is exactly RFC 6275 9.5.1's comparison; smaller values refuse "
            "large jumps.",
            compat="—",
        ),
        Field(
            "replay_window",
            Seconds(1, 300),
            7.0,
            doc="Largest difference allowed between the RFC 4285 Mobility Message "
            "Identification timestamp and the home agent's clock (status 144, "
            "MIPV6-ID-MISMATCH, outside it).",
            compat="—",
        ),
        Field(
            "max_bindings",
            Int(1, 10_000_000),
            1_000_000,
            doc="Most bindings (registered plus waiting for DAD) the home agent holds; a new "
            "home address beyond it gets status 130 (insufficient resources).",
            compat="—",
        ),
        Field(
            "max_bindings_per_nai",
            Int(1, 1 << 20),
            16,
            doc="Most bindings one mobile node identifier (key) holds at once, unless its "
            "entry in keys_file sets max_bindings; beyond it: status 130.",
            compat="—",
        ),
        Field(
            "max_pending_dad",
            Int(1, 4096),
            256,
            doc="Most new home addresses in Duplicate Address Detection at once (each joins a "
            "solicited-node group on the home link); beyond it: status 130. A DAD that cannot "
            "start (the kernel refuses the group) also gets 130, never a silent pass.",
            compat="—",
        ),
        Field(
            "max_home_agents",
            Int(1, 1024),
            32,
            doc="Most entries in the home agents list learnt from Router Advertisements; "
            "Advertisements from further routers are ignored until an entry expires.",
            compat="—",
        ),
        Field(
            "error_rate_per_destination",
            Int(0, 100_000),
            10,
            doc="Replies that any sender can trigger without a key (Binding Acknowledgements "
            "with an error status, Binding Errors, DHAAD replies) per second to one address, "
            "with a burst of the same size; 0: unlimited. RFC 6275 9.3.3 asks for a limit.",
            compat="—",
        ),
        Field(
            "unknown_sender_rate",
            Int(0, 10_000_000),
            5_000,
            doc="Mobility Headers per second the kernel lets through from senders that are not "
            "the care-of address of a current binding (an nftables limit in front of the "
            "agent's sockets); known mobile nodes always pass, so a flood beyond what the agent "
            "can read cannot crowd out their refreshes. 0: no limit.",
            compat="—",
        ),
        Field(
            "error_rate_total",
            Int(0, 1_000_000),
            200,
            doc="The same replies per second to all addresses together; 0: unlimited.",
            compat="—",
        ),
    ],
    build=HomeAgentConfig,
    checks=[_check_home_agent],
)

# --- mobile_node -----------------------------------------------------------------------------

HOME_ADDRESS = Section(
    [
        Field(
            "address",
            HostPrefix(),
            doc="The home address with its home prefix length.",
            compat="`addr/plen` of `-H`",
        ),
        Field(
            "interface",
            IfName(),
            doc="The interface that holds the home address.",
            compat="`@if` of `-H`",
        ),
        Field(
            "home_agent",
            Opt(Address()),
            None,
            doc="The home agent's address; null: found by DHAAD on the home prefix.",
            compat="`%ha` of `-H`",
        ),
    ],
    build=HomeAddressConfig,
)

FOREIGN_ADDRESS = Section(
    [
        Field(
            "address",
            HostPrefix(),
            doc="A pre-assigned care-of address with its prefix length.",
            compat="`addr/plen` of `-F`",
        ),
        Field(
            "interface",
            IfName(),
            doc="The interface on which to use it.",
            compat="`@if` of `-F`",
        ),
    ],
    build=ForeignAddressConfig,
)

_HOME_MODES = ("home_addresses", "home_prefix", "autoconfigure")


def _check_mobile_node(v: SectionView) -> None:
    chosen = [m for m in _HOME_MODES if v.raw.get(m) is not None and v.raw.get(m) is not False]
    if not chosen:
        v.error(
            "",
            "a home address is needed: set exactly one of home_addresses (mip6config -H), "
            "home_prefix (-P) or autoconfigure: true (-a)",
        )
    for extra in chosen[1:]:
        v.error(
            extra,
            f"conflicts with {chosen[0]}: a mobile node gets its home addresses one way, "
            "from home_addresses, home_prefix or autoconfigure",
        )
    interfaces = v.values["interfaces"] if v.ok("interfaces") else None
    home_nets = []
    if v.ok("home_addresses"):
        for i, entry in enumerate(v.values["home_addresses"]):
            home_nets.append(entry.address.network)
            ha = entry.home_agent
            if ha is not None and ha == entry.address.ip:
                v.item_error("home_addresses", i, "home_agent is the home address itself")
            elif ha is not None and ha not in entry.address.network:
                v.item_warn(
                    "home_addresses",
                    i,
                    f'home_agent "{ha}" is outside the home prefix {entry.address.network}; '
                    "this only works if the home link also carries the home agent's prefix",
                )
            if interfaces is not None and entry.interface not in interfaces:
                v.item_warn(
                    "home_addresses",
                    i,
                    f'interface "{entry.interface}" is not in mobile_node.interfaces',
                )
    if v.ok("home_prefix") and v.values["home_prefix"] is not None:
        home_nets.append(v.values["home_prefix"])
    if v.ok("foreign_addresses"):
        for i, entry in enumerate(v.values["foreign_addresses"]):
            home = [n for n in home_nets if entry.address.ip in n]
            if home:
                v.item_error(
                    "foreign_addresses",
                    i,
                    f'"{entry.address}" is inside the home prefix {home[0]}; a care-of address '
                    "must belong to a foreign link",
                )
            elif interfaces is not None and entry.interface not in interfaces:
                v.item_warn(
                    "foreign_addresses",
                    i,
                    f'interface "{entry.interface}" is not in mobile_node.interfaces',
                )
    if v.ok("bu_lifetime", "home_registration_lifetime"):
        bu, home = v.values["bu_lifetime"], v.values["home_registration_lifetime"]
        if bu > home:
            v.warn(
                "bu_lifetime",
                f"{bu:g} s exceeds home_registration_lifetime ({home:g} s); correspondent "
                "bindings never outlive the home registration (RFC 6275 11.7.2)",
            )
    if (
        v.ok("route_optimization", "correspondents", "route_optimization_from_traffic")
        and v.values["route_optimization"]
    ):
        if not v.values["correspondents"] and not v.values["route_optimization_from_traffic"]:
            v.error(
                "correspondents",
                "route_optimization with route_optimization_from_traffic false needs the "
                "correspondents to optimise the route with: list their addresses",
            )
    elif v.ok("correspondents") and v.values["correspondents"]:
        v.warn("correspondents", "have no effect while route_optimization is false")
    if v.ok("initial_bindack_timeout", "max_bindack_timeout"):
        first, limit = v.values["initial_bindack_timeout"], v.values["max_bindack_timeout"]
        if first > limit:
            v.error(
                "initial_bindack_timeout",
                f"{first:g} s is more than max_bindack_timeout ({limit:g} s)",
            )


MOBILE_NODE = Section(
    [
        Field(
            "home_addresses",
            ListOf(HOME_ADDRESS, min_items=1, unique=lambda e: e.address.ip),
            (),
            doc="Static home addresses, each registered with its home agent. Several are "
            "allowed (the seed had one). One of the three home address settings is required.",
            compat="`-H addr/plen@if%ha`; `homeaddr addr/plen@if%ha`",
            omit=_empty,
        ),
        Field(
            "home_prefix",
            Opt(Prefix(max_length=64)),
            None,
            doc="Home prefix (length at most 64): DHAAD finds the home agent and the "
            "interface identifier completes the home address.",
            compat="`-P prefix/plen`; `homepref prefix/plen`",
            omit=_none,
        ),
        Field(
            "autoconfigure",
            Bool(),
            False,
            doc="Learn the home prefix and home agent automatically (true is the only "
            "meaningful value; false is the same as leaving it out).",
            compat="`-a`; `autoconfig`",
            omit=_empty,
        ),
        Field(
            "nai",
            Opt(Nai()),
            None,
            doc="This mobile node's RFC 4283 identifier (e.g. mn1@example.net), sent in "
            "Binding Updates and looked up in keys_file. Required when authentication is "
            "required.",
            compat="—",
        ),
        Field(
            "spi",
            Opt(Int(SPI_MIN, SPI_MAX)),
            None,
            doc="RFC 4285 SPI (0-255 are reserved). null: taken from this NAI's keys_file "
            "entry; if set, it must match that entry.",
            compat="—",
        ),
        Field(
            "interfaces",
            ListOf(IfName(), min_items=1, unique=lambda x: x, noun="interface names"),
            doc="Interfaces watched for movement (router advertisements, link changes) and "
            "used for care-of addresses.",
            compat="—",
        ),
        Field(
            "home_registration_lifetime",
            Seconds(4, MAX_BINDING_LIFETIME),
            3600.0,
            doc="Lifetime requested in home registrations; the home agent may grant less, and "
            "it never exceeds the remaining lifetime of the home or care-of address. Rounded "
            "down to 4 s units.",
            compat="`-l hr_lifetime`; `hr_lifetime N`",
        ),
        Field(
            "bu_lifetime",
            Seconds(4, MAX_RR_BINDING_LIFETIME),
            float(MAX_RR_BINDING_LIFETIME),
            doc="Lifetime requested in correspondent registrations (route optimisation); at "
            "most MAX_RR_BINDING_LIFETIME (420 s).",
            compat="`-b bu_lifetime`; `bu_lifetime N`",
        ),
        Field(
            "route_optimization",
            Bool(),
            False,
            doc="Run return routability and send Binding Updates to correspondents (those "
            "listed in correspondents, and with route_optimization_from_traffic those the "
            "tunnel carries traffic with), so that traffic with them goes direct (TC eBPF "
            "data path; where it cannot run, the agent logs why and keeps the tunnel). "
            "false: all traffic goes through the home agent tunnel.",
            compat="`-r 1|0`; `bu_to_cn 1|0`",
        ),
        Field(
            "correspondents",
            ListOf(Address(), unique=lambda x: x, noun="IPv6 addresses"),
            (),
            doc="Correspondent nodes to run route optimisation with, once registered with "
            "the home agent, whether or not traffic flows. Required with route_optimization "
            "true and route_optimization_from_traffic false.",
            compat="—",
        ),
        Field(
            "route_optimization_from_traffic",
            Bool(),
            True,
            doc="With route_optimization: also run it with every correspondent the home "
            "agent tunnel carries traffic to or from (an nftables set the agent reads every "
            "second). A correspondent picked this way that has seen no traffic for 0.8 times "
            "bu_lifetime (its refresh point) is not refreshed and goes back to the tunnel "
            "when its binding runs out.",
            compat="—",
        ),
        Field(
            "max_correspondents",
            Int(1, 4096),
            64,
            doc="At most this many correspondents in route optimisation at once (listed and "
            "picked from traffic); traffic with more stays on the tunnel (counter "
            "ro_correspondents_full).",
            compat="—",
        ),
        Field(
            "no_route_optimization",
            ListOf(Prefix(), unique=lambda x: x, noun="IPv6 prefixes"),
            (),
            doc="Correspondents in these prefixes stay on the home agent tunnel even when "
            "listed in correspondents.",
            compat="—",
        ),
        Field(
            "foreign_addresses",
            ListOf(FOREIGN_ADDRESS, unique=lambda e: e.address.ip),
            (),
            doc="Pre-assigned care-of addresses to use on foreign links instead of "
            "autoconfigured ones.",
            compat="`-F addr/plen@if` (add), `-E addr` (remove); `coaddr addr/plen@if`",
        ),
        Field(
            "eager_movement_detection",
            Int(0, 2, choices=(0, 1, 2)),
            0,
            doc="0: normal movement detection. 1: treat one missed router advertisement as a "
            "possible move and probe at once. 2: also switch to a new router as soon as it "
            "advertises, before its reachability is confirmed (fastest; may flap).",
            compat="`-e 0|1|2`; `eager_md N`",
        ),
        Field(
            "initial_bindack_timeout",
            Seconds(0.1, 60),
            INITIAL_BINDACK_TIMEOUT_FIRST_REG,
            doc="Retransmission timer for the first Binding Update of a home registration "
            "(InitialBindackTimeoutFirstReg, RFC 6275 13; long enough for the home agent's "
            "DAD); it doubles up to max_bindack_timeout.",
            compat="UMIP `InitialBindackTimeoutFirstReg`",
        ),
        Field(
            "max_bindack_timeout",
            Seconds(1, 3600),
            float(MAX_BINDACK_TIMEOUT),
            doc="Ceiling of the Binding Update retransmission back-off (MAX_BINDACK_TIMEOUT).",
            compat="—",
        ),
    ],
    build=MobileNodeConfig,
    checks=[_check_mobile_node],
)

# --- correspondent_node ----------------------------------------------------------------------


def _check_correspondent_node(v: SectionView) -> None:
    if v.ok("route_optimization", "binding_refresh_request_before") and (
        v.values["binding_refresh_request_before"] is not None
        and not v.values["route_optimization"]
    ):
        v.warn(
            "binding_refresh_request_before",
            "has no effect while route_optimization is false (no correspondent bindings)",
        )


CORRESPONDENT_NODE = Section(
    [
        Field(
            "route_optimization",
            Bool(),
            False,
            doc="Role cn: answer return routability (HoTI/CoTI) and accept correspondent "
            "registrations from mobile nodes, so their traffic can bypass the home agent "
            "(TC eBPF data path; where it cannot run, the agent logs why and keeps "
            "refusing with Binding Error status 2). false: HoTI, CoTI and BU get Binding "
            "Error status 2.",
            compat="`-r 1|0` (on a correspondent node)",
        ),
        Field(
            "binding_refresh_request_before",
            Opt(Seconds(1, MAX_RR_BINDING_LIFETIME - 1)),
            None,
            doc="Send a Binding Refresh Request this many seconds before a correspondent "
            "binding that is still in use expires (RFC 6275 9.5.5). null: never.",
            compat="`-q 1` with `-w br_time` (KAME gave a percentage of the lifetime)",
        ),
    ],
    build=CorrespondentNodeConfig,
    checks=[_check_correspondent_node],
)
_CN_DEFAULT = CORRESPONDENT_NODE.check({}, "correspondent_node", None, Ctx())

# --- metrics -----------------------------------------------------------------------------------

METRICS_PORT = 9436


def _check_metrics(v: SectionView) -> None:
    textfile = v.values["textfile"] if v.ok("textfile") else None
    if textfile is not None and textfile.suffix != ".prom":
        v.error(
            "textfile", "must end in .prom: node_exporter's textfile collector reads only those"
        )


METRICS = Section(
    [
        Field(
            "enabled",
            Bool(),
            False,
            doc="Serve Prometheus metrics over HTTP at address and port (path /metrics): the "
            "mip6stat counters, bindings by state, the BU-to-BA time histogram, the data "
            "plane and the config generation. No per-address labels.",
            compat="—",
        ),
        Field(
            "address",
            ListenAddress(),
            IPv6Address("::1"),
            doc="Address the metrics endpoint listens on; loopback by default. The endpoint "
            "has no authentication: expose it beyond loopback only to a trusted network.",
            compat="—",
        ),
        Field(
            "port", Int(1, 65535), METRICS_PORT, doc="TCP port of the metrics endpoint.", compat="—"
        ),
        Field(
            "textfile",
            Opt(AbsPath()),
            None,
            doc="Also (or instead) write the same metrics to this file every interval, for "
            "node_exporter's textfile collector (a *.prom file in its directory; written "
            "atomically). null: no file.",
            compat="—",
        ),
        Field(
            "interval",
            Seconds(1, 3600),
            15.0,
            doc="Seconds between rewrites of textfile.",
            compat="—",
        ),
    ],
    build=MetricsConfig,
    checks=[_check_metrics],
)
_METRICS_DEFAULT = METRICS.check({}, "metrics", None, Ctx())

# --- top level -------------------------------------------------------------------------------


def _section_line(v: SectionView, section: str, key: str) -> int | None:
    raw = v.raw.get(section)
    return getattr(raw, "lines", {}).get(key, v.line_of(section))


def _check_role_sections(v: SectionView) -> None:
    if not v.ok("role"):
        return
    role = v.values["role"]
    for section, owner in _SECTION_ROLE.items():
        if role == owner and v.ok(section) and v.values[section] is None:
            what = (
                "its interfaces and home prefixes"
                if owner == "ha"
                else "its interfaces and a home address setting"
            )
            v.error(section, f'required for role "{role}" ({what})')


def _check_authentication(v: SectionView) -> None:
    if not v.ok("role", "authentication", "keys_file") or v.values["role"] == "cn":
        return
    role, keys_file = v.values["role"], v.values["keys_file"]
    if v.values["authentication"] == "disabled":
        v.warn(
            "authentication",
            "disabled: Binding Updates and Acknowledgements are not authenticated (RFC 4285), "
            "so anyone who can reach this host can redirect a home address; use only in a lab",
        )
        return
    raw_mn = v.raw.get("mobile_node")
    if role == "mn" and isinstance(raw_mn, Mapping) and raw_mn.get("nai") is None:
        v.ctx.error(
            "mobile_node.nai",
            'required when authentication is "required": the NAI (RFC 4283) names this '
            "mobile node's entry in keys_file",
            _section_line(v, "mobile_node", "nai"),
        )
    keys, found = load_keys_checked(keys_file)
    for p in found.problems:
        if p.path == "" and p.line is None:
            hint = ""
            if p.message == "does not exist":
                hint = (
                    '; it is needed while authentication is "required" '
                    "(authentication: disabled is the explicit opt-out)"
                )
            v.error("keys_file", f"{keys_file} {p.message}{hint}")
        else:
            v.ctx.problems.append(p)
    v.ctx.warnings.extend(found.warnings)
    if keys is None:
        return
    v.ctx.results["keys"] = keys
    if role == "ha" and not len(keys):
        v.warn("keys_file", f"{keys_file} lists no mobile nodes; every registration will fail")
    mn = v.values["mobile_node"] if v.ok("mobile_node") else None
    if role != "mn" or mn is None or mn.nai is None:
        return
    if mn.nai not in keys:
        v.ctx.error(
            "mobile_node.nai",
            f"{quote(mn.nai)} has no entry in keys_file {keys_file}",
            _section_line(v, "mobile_node", "nai"),
        )
        return
    spi = keys.spi_for(mn.nai)
    if mn.spi is not None and mn.spi != spi:
        v.ctx.error(
            "mobile_node.spi",
            f"{mn.spi} does not match the SPI {spi} of {quote(mn.nai)} in keys_file {keys_file}",
            _section_line(v, "mobile_node", "spi"),
        )
    others = [nai for nai in keys.nais if nai != mn.nai]
    if others:
        v.warn(
            "keys_file",
            f"{keys_file} also holds the keys of {len(others)} other mobile node(s); a mobile "
            "node needs only its own",
        )


def _check_correspondent_role(v: SectionView) -> None:
    if not v.ok("role", "correspondent_node") or v.values["role"] == "cn":
        return
    if v.values["correspondent_node"].route_optimization:
        v.warn(
            "correspondent_node",
            f'route_optimization has no effect with role "{v.values["role"]}": only role cn '
            "does route optimisation as a correspondent node so far",
        )


_SECTIONS = {"home_agent": HOME_AGENT, "mobile_node": MOBILE_NODE}


def _elsewhere() -> dict[str, str]:
    homes: dict[str, list[str]] = {}
    for section, kind in [*_SECTIONS.items(), ("correspondent_node", CORRESPONDENT_NODE)]:
        for name in kind.fields:
            homes.setdefault(name, []).append(f"{section}.{name}")
    return {name: " or ".join(paths) for name, paths in homes.items()}


AGENT = Section(
    [
        Field(
            "role",
            Choice(*ROLES),
            doc="The Mobile IPv6 function of this host: home agent, mobile node, or "
            "correspondent node only. One per host: home agent and mobile node cannot be "
            "active on one host.",
            compat="`-g` / `enable_ha`: ha; `-H`, `-P`, `-a` / `homeaddr`, `homepref`, "
            "`autoconfig`: mn; neither: cn",
        ),
        Field(
            "control_socket",
            AbsPath(max_bytes=107),
            Path("/run/mip6/agent.sock"),
            doc="Unix socket of the control API used by mip6config, mip6stat and the Ansible "
            "modules.",
            compat="—",
        ),
        Field(
            "state_dir",
            AbsPath(),
            Path("/var/lib/mip6"),
            doc="Directory for state kept across restarts.",
            compat="—",
        ),
        Field(
            "log_level",
            Choice("debug", "info", "warning", "error"),
            "info",
            doc="Log threshold.",
            compat="—",
        ),
        Field(
            "debug",
            Bool(),
            False,
            doc="Protocol trace: log every signalling message and timer; implies log_level debug.",
            compat="`-d 1|0`; `debug 1|0`",
        ),
        Field(
            "authentication",
            Choice("required", "disabled"),
            "required",
            doc="RFC 4285 MN-HA authentication (HMAC-SHA1-96, subtype 1) of home "
            "registrations with the keys in keys_file. disabled is an explicit opt-out and "
            "gives a warning. Not used by role cn.",
            compat="— (the seed relied on optional IPsec)",
        ),
        Field(
            "keys_file",
            AbsPath(),
            Path("/etc/mip6/keys.yml"),
            doc="Per-mobile-node shared keys (see below). Read for roles ha and mn when "
            "authentication is required: it must exist, be a regular file owned by the "
            "agent's uid, with no group or other permissions.",
            compat="—",
        ),
        Field(
            "dataplane",
            Choice("auto", "seg6", "ip6tnl", "bpf"),
            "auto",
            doc="How tunnelled traffic is carried (IPv6-in-IPv6, RFC 2473, on the wire with "
            "each): ip6tnl (tunnel devices), seg6 (Linux seg6 lightweight tunnels), bpf "
            "(eBPF programs on routes and clsact, for kernels with neither; needs clang and "
            "bpftool), or auto (seg6, else ip6tnl, else bpf: what the kernel supports).",
            compat="—",
        ),
        Field(
            "home_agent",
            Opt(HOME_AGENT),
            None,
            doc="Home agent settings; required with role ha and refused with any other role.",
            compat="`-g`",
            omit=_none,
        ),
        Field(
            "mobile_node",
            Opt(MOBILE_NODE),
            None,
            doc="Mobile node settings; required with role mn and refused with any other role.",
            compat="`-H`, `-P`, `-a`",
            omit=_none,
        ),
        Field(
            "correspondent_node",
            CORRESPONDENT_NODE,
            _CN_DEFAULT,
            doc="Correspondent node settings. Only role cn carries them out so far; with "
            "another role, route_optimization true gives a warning.",
            compat="—",
        ),
        Field(
            "metrics",
            METRICS,
            _METRICS_DEFAULT,
            doc="Prometheus metrics: an HTTP endpoint, a textfile for node_exporter, or "
            "both (docs/operations.md).",
            compat="—",
        ),
    ],
    checks=[_check_role_sections, _check_authentication, _check_correspondent_role],
    elsewhere=_elsewhere(),
)


def _role_conflicts(data: Mapping[Any, Any], ctx: Ctx) -> frozenset[str]:
    """Refuse sections of another role before walking them; their contents are beside the point."""
    lines = getattr(data, "lines", {})
    role = data.get("role")
    skip = set()
    if role in ROLES:
        for section, owner in _SECTION_ROLE.items():
            if data.get(section) is None or role == owner:
                continue
            skip.add(section)
            if {role, owner} == {"ha", "mn"}:
                reason = (
                    "the Home Agent and Mobile Node functions cannot be active on one host; "
                    "run the other function on another host"
                )
            else:
                reason = f"it configures a {_ROLE_NAMES[owner]}, which this host is not"
            message = f'not allowed with role "{role}" ({_ROLE_NAMES[role]}): {reason}'
            ctx.error(section, message, lines.get(section))
    elif data.get("home_agent") is not None and data.get("mobile_node") is not None:
        ctx.error(
            "mobile_node",
            "cannot be configured together with home_agent: the Home Agent and Mobile Node "
            "functions cannot be active on one host",
            lines.get("mobile_node"),
        )
    return frozenset(skip)


def check_mapping(data: Any, source: str | None = None) -> tuple[AgentConfig | None, Ctx]:
    """Validate without raising: the config (or None) and the context with every problem."""
    ctx = Ctx(source)
    if data is None:
        ctx.error("", "the configuration is empty; it needs at least role")
        return None, ctx
    if not isinstance(data, Mapping):
        ctx.error("", f"expected a mapping at the top level, got {describe(data)}")
        return None, ctx
    skip = _role_conflicts(data, ctx)
    out = AGENT.check(data, "", None, ctx, skip=skip)
    if out is INVALID or ctx.problems:
        # This file's problems in line order, then those of the keys file.
        ctx.problems.sort(key=lambda p: (p.source != source, p.line is None, p.line or 0))
        return None, ctx
    config = AgentConfig(
        **out,
        keys=ctx.results.get("keys"),
        warnings=tuple(str(w) for w in ctx.warnings),
        source=source,
    )
    return config, ctx


def validate_mapping(data: Any, source: str | None = None) -> AgentConfig:
    """Validate an in-memory configuration; raises :class:`ConfigError` with every problem.

    Reads ``keys_file`` when the role and ``authentication`` need it.
    """
    config, ctx = check_mapping(data, source)
    if config is None:
        raise ConfigError(ctx.problems)
    return config


def to_dict(config: AgentConfig) -> dict[str, Any]:
    """The configuration as JSON-serialisable data that :func:`validate_mapping` accepts again.

    It never holds key material: keys live only in ``keys_file``.
    """
    return AGENT.dump(config)


def lookup(path: str) -> Field:
    """The schema field at a dotted path, e.g. ``home_agent.preference``."""
    section: Kind = AGENT
    found: Field | None = None
    for name in path.split("."):
        while isinstance(section, Opt | ListOf):
            section = section.inner if isinstance(section, Opt) else section.item
        if not isinstance(section, Section) or name not in section.fields:
            raise KeyError(path)
        found = section.fields[name]
        section = found.kind
    assert found is not None
    return found


# mip6config flags (KAME) and the keys they set; for the mip6config front end and the docs.
MIP6CONFIG_FLAGS: dict[str, tuple[str, ...]] = {
    "-g": ("role",),
    "-H": ("role", "mobile_node.home_addresses"),
    "-P": ("role", "mobile_node.home_prefix"),
    "-a": ("role", "mobile_node.autoconfigure"),
    "-y": ("home_agent.preference",),
    "-l": ("mobile_node.home_registration_lifetime",),
    "-b": ("mobile_node.bu_lifetime",),
    "-r": ("mobile_node.route_optimization", "correspondent_node.route_optimization"),
    "-F": ("mobile_node.foreign_addresses",),
    "-E": ("mobile_node.foreign_addresses",),
    "-e": ("mobile_node.eager_movement_detection",),
    "-q": ("correspondent_node.binding_refresh_request_before",),
    "-w": ("correspondent_node.binding_refresh_request_before",),
    "-d": ("debug",),
}


def _default_text(field: Field) -> str:
    if field.required:
        return "required"
    if isinstance(field.kind, Section):
        return "`{}`"
    if field.default is None:
        return "null"
    return f"`{json.dumps(field.kind.dump(field.default))}`"


def _rows(section: Section, prefix: str) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for name, field in section.fields.items():
        key = f"{prefix}{name}"
        inner = field.kind.inner if isinstance(field.kind, Opt) else field.kind
        kind = inner.item if isinstance(inner, ListOf) else inner
        described = field.kind.describe()
        if isinstance(inner, ListOf) and isinstance(kind, Section):
            described = "list of mappings"
            if inner.min_items:
                described += ", at least 1" if field.required else ", at least 1 when set"
        elif isinstance(kind, Section):
            described = "mapping" + (" or null" if isinstance(field.kind, Opt) else "")
        rows.append((f"`{key}`", described, _default_text(field), field.doc, field.compat))
        if isinstance(kind, Section):
            sub = f"{key}[]." if isinstance(inner, ListOf) else f"{key}."
            rows.extend(_rows(kind, sub))
    return rows


def markdown_table() -> str:
    """The schema as the Markdown table of docs/agent-config.md (a test keeps them equal)."""
    head = ("key", "type", "default", "meaning", "mip6config flag / mip6.conf line")
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in _rows(AGENT, ""):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines) + "\n"
