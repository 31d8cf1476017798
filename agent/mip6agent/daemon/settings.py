"""Turn the validated configuration into the core's settings (plain values)."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv6Address, IPv6Interface

from ..config import AgentConfig
from ..config.model import Keys
from ..core.auth import MobilityKey
from ..core.correspondent import CorrespondentSettings
from ..core.correspondent_registration import RouteOptimizationSettings
from ..core.home_agent import HomeAgentSettings, HomeLink
from ..core.mobile_node import HomeAddressSpec, MobileNodeSettings


class SettingsError(Exception):
    """The configuration is valid but does not fit this host (e.g. a missing address)."""


def key_lookup(config: AgentConfig) -> Callable[[str], MobilityKey | None]:
    keys = config.keys
    # Built once per configuration, so a lookup per Binding Update is one dict access and a
    # reload swaps the whole set at once.
    table: dict[str, MobilityKey] = {}
    for nai, entry in keys.entries if keys is not None else ():
        table[nai] = MobilityKey(
            entry.spi, entry.key.reveal(), entry.home_addresses, entry.max_bindings
        )
    return table.get


def key_changes(old: Keys | None, new: Keys | None) -> dict[str, object]:
    """Which NAIs a reload adds, removes or changes (new SPI, key or authorization)."""
    before = dict(old.entries) if old is not None else {}
    after = dict(new.entries) if new is not None else {}
    return {
        "keys_added": sorted(set(after) - set(before)),
        "keys_removed": sorted(set(before) - set(after)),
        "keys_changed": sorted(n for n in set(before) & set(after) if before[n] != after[n]),
    }


def describe_key_changes(changes: dict[str, object]) -> str:
    parts = []
    for name, label in (
        ("keys_added", "added"),
        ("keys_removed", "removed"),
        ("keys_changed", "changed"),
    ):
        nais = changes.get(name) or []
        assert isinstance(nais, list)
        if nais:
            parts.append(
                f"{label} {len(nais)} ({', '.join(nais[:5])}{' ...' if len(nais) > 5 else ''})"
            )
    removed = changes.get("bindings_removed")
    if removed:
        parts.append(f"{removed} bindings removed")
    return (": keys " + "; ".join(parts)) if parts else ""


def home_agent_settings(
    config: AgentConfig,
    addresses: Callable[[str], list[IPv6Interface]],
    enabled: bool = True,
) -> HomeAgentSettings:
    ha = config.home_agent
    assert ha is not None
    links = []
    for ifname in ha.interfaces:
        present = addresses(ifname)
        prefixes = tuple(
            p
            for p in ha.home_prefixes
            if any(a.ip in p for a in present) or len(ha.interfaces) == 1
        )
        if ha.address is not None and any(a.ip == ha.address for a in present):
            own = ha.address
        else:
            own = next((a.ip for a in present if any(a.ip in p for p in prefixes)), None)
        if own is None:
            raise SettingsError(
                f"home_agent.interfaces: {ifname} has no global address in "
                f"{', '.join(map(str, ha.home_prefixes))}; give home_agent.address or add one"
            )
        links.append(HomeLink(ifname, own, prefixes))
    return HomeAgentSettings(
        links=tuple(links),
        preference=ha.preference,
        lifetime=int(ha.lifetime),
        max_binding_lifetime=ha.max_binding_lifetime,
        refresh_advice=ha.refresh_advice,
        dad=ha.dad,
        sequence_window=ha.sequence_window,
        authentication=config.authentication == "required",
        replay_window=ha.replay_window,
        enabled=enabled,
        max_bindings=ha.max_bindings,
        max_bindings_per_nai=ha.max_bindings_per_nai,
        max_pending_dad=ha.max_pending_dad,
        max_home_agents=ha.max_home_agents,
        error_rate_per_destination=ha.error_rate_per_destination,
        error_rate_total=ha.error_rate_total,
    )


def mobile_node_settings(
    config: AgentConfig,
    addresses: Callable[[str], list[IPv6Interface]],
    identifier: Callable[[str], int],
    route_optimization: bool = True,
) -> MobileNodeSettings:
    """``mobile_node``; ``route_optimization`` False when the data path cannot carry
    correspondent bindings (the node then keeps every correspondent on the tunnel)."""
    mn = config.mobile_node
    assert mn is not None
    home: list[HomeAddressSpec] = []
    mode = mn.home_address_mode
    if mode == "static":
        for entry in mn.home_addresses:
            home.append(
                HomeAddressSpec(
                    entry.address.ip, entry.address.network, entry.interface, entry.home_agent
                )
            )
    elif mode == "prefix":
        assert mn.home_prefix is not None
        ifname = mn.interfaces[0]
        address = IPv6Address(int(mn.home_prefix.network_address) | identifier(ifname))
        home.append(HomeAddressSpec(address, mn.home_prefix, ifname, None))
    else:
        for ifname in mn.interfaces:
            found = addresses(ifname)
            if found:
                home.append(HomeAddressSpec(found[0].ip, found[0].network, ifname, None))
                break
        else:
            raise SettingsError(
                "mobile_node.autoconfigure: no global address on "
                f"{', '.join(mn.interfaces)}; start the mobile node on its home link"
            )
    key = None
    if config.authentication == "required" and mn.nai:
        key = key_lookup(config)(mn.nai)
    return MobileNodeSettings(
        home=tuple(home),
        interfaces=mn.interfaces,
        nai=mn.nai,
        key=key,
        authentication=config.authentication == "required",
        lifetime=mn.home_registration_lifetime,
        initial_timeout_first=mn.initial_bindack_timeout,
        max_timeout=mn.max_bindack_timeout,
        foreign_addresses=tuple(f.address.ip for f in mn.foreign_addresses),
        eager_movement_detection=mn.eager_movement_detection,
        route_optimization=mn.route_optimization and route_optimization,
        correspondents=mn.correspondents,
        no_route_optimization=mn.no_route_optimization,
        ro=RouteOptimizationSettings(lifetime=mn.bu_lifetime),
        ro_from_traffic=mn.route_optimization_from_traffic,
        max_correspondents=mn.max_correspondents,
    )


def correspondent_settings(
    config: AgentConfig, route_optimization: bool = True
) -> CorrespondentSettings:
    """``correspondent_node``; ``route_optimization`` False when the data path cannot serve
    correspondent bindings (the agent then refuses them with Binding Error status 2)."""
    cn = config.correspondent_node
    return CorrespondentSettings(
        route_optimization=cn.route_optimization and route_optimization,
        binding_refresh_request_before=cn.binding_refresh_request_before,
    )
