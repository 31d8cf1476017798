"""What both backends install the same way: proxy NDP, home addresses, rules, sysctls.

A backend subclass adds the tunnel itself (seg6 routes or ip6tnl devices) through a few
hooks; binding, reconciliation and cleanup are written once here on top of them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import Self

from .base import DataPlaneConfig, DataPlaneError, ReconcileReport, _ReportBuilder
from .netlink import (
    IP6_TNL_F_MIP6_DEV,
    IPPROTO_IPV6,
    RT_TABLE_LOCAL,
    RT_TABLE_MAIN,
    RTPROT_KERNEL,
    Address,
    Ip6Tunnel,
    Netlink,
    ProxyEntry,
    Route,
    Rule,
    host,
)

LOOPBACK = "lo"
UNSPECIFIED = IPv6Address("::")


@dataclass(frozen=True, slots=True)
class HomeState:
    """One home address on a mobile node as found in the kernel.

    ``coa``/``ha`` are None when that part is missing; ``complete`` says every piece the
    backend installs is there, on interface ``ifindex``.
    """

    hoa: IPv6Address
    table: int
    coa: IPv6Address | None
    ha: IPv6Address | None
    ifindex: int
    complete: bool


class HaView:
    """The home agent's kernel objects as read once, updated with every change made.

    Routes are keyed like the kernel keys them (:attr:`Route.key`); home routes (main
    table, /128) and proxy entries are also indexed by home address.
    """

    def __init__(
        self,
        routes: list[Route],
        proxies: list[ProxyEntry],
        tunnels: list[Ip6Tunnel] | None = None,
    ) -> None:
        self.routes: dict[tuple, Route] = {}
        self._home: dict[IPv6Address, dict[tuple, Route]] = {}
        self._proxies: dict[IPv6Address, set[ProxyEntry]] = {}
        self.tunnels: dict[int, Ip6Tunnel] = {t.index: t for t in tunnels or ()}
        for route in routes:
            self.add_route(route)
        for entry in proxies:
            self.add_proxy(entry)

    @staticmethod
    def _home_key(route: Route) -> IPv6Address | None:
        if route.table == RT_TABLE_MAIN and route.dst.prefixlen == 128:
            return route.dst.network_address
        return None

    def add_route(self, route: Route) -> None:
        key = route.key  # made once: hashing its networks is most of the work here
        old = self.routes.get(key)
        if old is not None:
            self.drop_route(old)
        self.routes[key] = route
        hoa = self._home_key(route)
        if hoa is not None:
            self._home.setdefault(hoa, {})[key] = route

    def drop_route(self, route: Route) -> None:
        self.routes.pop(route.key, None)
        hoa = self._home_key(route)
        if hoa is not None and hoa in self._home:
            self._home[hoa].pop(route.key, None)
            if not self._home[hoa]:
                del self._home[hoa]

    def home_routes(self, hoa: IPv6Address) -> list[Route]:
        return list(self._home.get(hoa, {}).values())

    def all_home_routes(self) -> list[Route]:
        return [r for routes in self._home.values() for r in routes.values()]

    def add_proxy(self, entry: ProxyEntry) -> None:
        self._proxies.setdefault(entry.address, set()).add(entry)

    def drop_proxy(self, entry: ProxyEntry) -> None:
        entries = self._proxies.get(entry.address)
        if entries is not None:
            entries.discard(entry)
            if not entries:
                del self._proxies[entry.address]

    def proxies_of(self, hoa: IPv6Address) -> list[ProxyEntry]:
        return sorted(self._proxies.get(hoa, ()), key=lambda e: e.ifindex)

    def has_proxy(self, entry: ProxyEntry) -> bool:
        return entry in self._proxies.get(entry.address, ())

    def all_proxies(self) -> list[ProxyEntry]:
        return [e for entries in self._proxies.values() for e in entries]


class KernelBackend:
    """Common base of the seg6 and ip6tnl backends (not a backend by itself)."""

    name = "base"

    def __init__(self, config: DataPlaneConfig | None = None, netlink: Netlink | None = None):
        self.config = config or DataPlaneConfig()
        self._nl = netlink if netlink is not None else Netlink()
        self._ha_ready: tuple[str, IPv6Address] | None = None

    def close(self) -> None:
        self._nl.close()

    def counters(self) -> dict[str, int]:
        """The backend's own packet counters (none: the kernel's tunnels count nothing
        the agent reports). ``decapsulated``: packets taken out of the tunnel before
        netfilter could count them as tunnelled in."""
        return {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # --- hooks ------------------------------------------------------------------------

    def _ha_plumbing(self, home_ifname: str, ha_addr: IPv6Address) -> None:
        """Backend-specific part of ha_setup (decapsulation for the HA address)."""

    def _ha_install(
        self, hoa: IPv6Address, coa: IPv6Address, ha_addr: IPv6Address, home: int
    ) -> None:
        raise NotImplementedError

    def _ha_remove(self, hoa: IPv6Address) -> None:
        raise NotImplementedError

    def _ha_collect_garbage(self) -> None:
        """Remove tunnel objects no binding uses any more."""

    def ha_bindings(self) -> dict[IPv6Address, IPv6Address]:
        raise NotImplementedError

    def _ha_links(self) -> dict[IPv6Address, int]:
        """HoA -> index of the home interface its binding uses, where the kernel says."""
        raise NotImplementedError

    def _mn_home_states(self) -> dict[IPv6Address, HomeState]:
        raise NotImplementedError

    def _mn_install(
        self, hoa: IPv6Address, coa: IPv6Address, ha_addr: IPv6Address, index: int, table: int
    ) -> None:
        raise NotImplementedError

    def _mn_collect_garbage(self) -> None:
        """Remove tunnel objects no home address uses any more."""

    # --- home agent -------------------------------------------------------------------

    def ha_setup(self, home_ifname: str, ha_addr: IPv6Address) -> None:
        """Forwarding on, proxy NDP on the home link without delay, decapsulation ready."""
        _check_unicast(ha_addr, "home agent address")
        self._nl.ifindex(home_ifname)
        self._nl.sysctl(("net", "ipv6", "conf", "all", "forwarding"), "1")
        self._nl.sysctl(("net", "ipv6", "conf", home_ifname, "proxy_ndp"), "1")
        # Default 80 (jiffies): a random 0-0.8 s wait before answering each NS for the HoA.
        self._nl.sysctl(("net", "ipv6", "neigh", home_ifname, "proxy_delay"), "0")
        self._ha_plumbing(home_ifname, ha_addr)
        self._ha_ready = (home_ifname, ha_addr)

    def ha_bind(
        self, hoa: IPv6Address, coa: IPv6Address, ha_addr: IPv6Address, home_ifname: str
    ) -> None:
        """Route the HoA into the tunnel to the CoA and answer ND for it on the home link."""
        _check_unicast(hoa, "home address")
        _check_unicast(coa, "care-of address")
        _check_away(hoa, coa)
        if self._ha_ready != (home_ifname, ha_addr):
            self.ha_setup(home_ifname, ha_addr)
        home = self._nl.ifindex(home_ifname)
        self._ha_install(hoa, coa, ha_addr, home)
        self._nl.replace_proxy(ProxyEntry(hoa, home, self.config.proto), f"proxy NDP for {hoa}")
        for entry in self._our_proxies():
            if entry.address == hoa and entry.ifindex != home:
                self._nl.delete_proxy(entry, f"stale proxy NDP for {hoa}")
        self._ha_collect_garbage()

    def ha_unbind(self, hoa: IPv6Address) -> None:
        """Stop answering ND for the HoA, then stop tunnelling it."""
        for entry in self._our_proxies():
            if entry.address == hoa:
                self._nl.delete_proxy(entry, f"proxy NDP for {hoa}")
        self._ha_remove(hoa)
        self._ha_collect_garbage()

    def ha_proxy(self, address: IPv6Address, home_ifname: str) -> None:
        """Answer and defend ND for ``address`` on the home link, tunnelling nothing to it
        (a mobile node's link-local address, L flag). The kernel discards packets for a
        proxied link-local address instead of forwarding them."""
        entry = ProxyEntry(address, self._nl.ifindex(home_ifname), self.config.proto)
        self._nl.replace_proxy(entry, f"proxy NDP for {address}")

    def ha_unproxy(self, address: IPv6Address, home_ifname: str) -> None:
        entry = ProxyEntry(address, self._nl.ifindex(home_ifname), self.config.proto)
        self._nl.delete_proxy(entry, f"proxy NDP for {address}")

    def ha_reconcile(
        self,
        wanted: Mapping[IPv6Address, IPv6Address],
        ha_addr: IPv6Address,
        home_ifname: str,
        remove_stale: bool = True,
        link_locals: Collection[IPv6Address] = (),
    ) -> ReconcileReport:
        """Make this home link hold exactly ``wanted`` (HoA -> CoA), keeping what matches.

        Only bindings on ``home_ifname`` are candidates for removal, so an agent with several
        home links reconciles each one on its own. With ``remove_stale`` False nothing is
        removed (a restore from a damaged state file: the kernel may know more than it).

        The kernel is read once per object type (routes, proxy entries, devices, rules),
        whatever the number of bindings; what to keep, add, rewrite and remove is set
        arithmetic on that picture, which is kept up to date with every change made.
        ``link_locals`` are the mobile nodes' link-local addresses to defend (ha_proxy);
        other link-local proxy entries of ours on this link are stale.
        """
        for hoa, coa in wanted.items():
            _check_unicast(hoa, "home address")
            _check_unicast(coa, "care-of address")
            _check_away(hoa, coa)
        self.ha_setup(home_ifname, ha_addr)
        home = self._nl.ifindex(home_ifname)
        report = _ReportBuilder()
        view = self._ha_view()
        everywhere = self._view_bindings(view)
        links = self._view_links(view, everywhere)
        # A route whose home link cannot be told (ip6tnl, proxy entry lost in a crash) is
        # a candidate on every home link: the one that wants it installs it again.
        present = {h: c for h, c in everywhere.items() if links.get(h, home) == home}
        proxied = {e.address for e in view.all_proxies() if e.ifindex == home}
        defended = {a for a in proxied if a.is_link_local}
        proxied -= defended
        stale = sorted((set(present) | proxied) - set(wanted)) if remove_stale else []
        self._ha_remove_many(stale, view)
        report.removed.extend(stale)
        keep = set(link_locals)
        for address in sorted(defended - keep) if remove_stale else []:
            entry = ProxyEntry(address, home, self.config.proto)
            self._nl.delete_proxy(entry, f"stale proxy NDP for {address}")
            view.drop_proxy(entry)
        for address in sorted(keep - defended):
            entry = ProxyEntry(address, home, self.config.proto)
            self._nl.replace_proxy(entry, f"proxy NDP for {address}")
            view.add_proxy(entry)
        install = []
        for hoa, coa in sorted(wanted.items()):
            if hoa not in everywhere:
                report.added.append(hoa)
            elif present.get(hoa) == coa and self._view_complete(view, hoa, coa, ha_addr, home):
                report.adopted.append(hoa)
                continue
            else:
                report.updated.append(hoa)
            install.append((hoa, coa))
        self._ha_install_many(install, ha_addr, home, view)
        for hoa, _coa in install:
            entry = ProxyEntry(hoa, home, self.config.proto)
            self._nl.replace_proxy(entry, f"proxy NDP for {hoa}")
            for old in view.proxies_of(hoa):
                if old.ifindex != home:
                    self._nl.delete_proxy(old, f"stale proxy NDP for {hoa}")
                    view.drop_proxy(old)
            view.add_proxy(entry)
        self._ha_collect_garbage_in(view)
        self._ha_reconciled(view)
        return report.build()

    def ha_binding_links(self) -> dict[IPv6Address, tuple[IPv6Address, int]]:
        """HoA -> (CoA, index of its home interface, 0 when unknown), in one read."""
        view = self._ha_view()
        bindings = self._view_bindings(view)
        links = self._view_links(view, bindings)
        return {hoa: (coa, links.get(hoa, 0)) for hoa, coa in bindings.items()}

    # --- reconciliation on one picture of the kernel ------------------------------------

    def _ha_view(self) -> HaView:
        """One read of our routes and proxy entries (backends add what else they need)."""
        return HaView(self._our_routes(), self._our_proxies())

    def _view_bindings(self, view: HaView) -> dict[IPv6Address, IPv6Address]:
        raise NotImplementedError

    def _view_links(
        self, view: HaView, bindings: Mapping[IPv6Address, IPv6Address]
    ) -> dict[IPv6Address, int]:
        raise NotImplementedError

    def _view_complete(
        self, view: HaView, hoa: IPv6Address, coa: IPv6Address, ha_addr: IPv6Address, home: int
    ) -> bool:
        raise NotImplementedError

    def _view_replace_home_route(
        self, view: HaView, hoa: IPv6Address, coa: IPv6Address, route: Route
    ) -> None:
        """Install the HoA's tunnel route and drop any other route for it, kernel and view."""
        self._nl.replace_route(route, f"tunnel route {hoa} -> {coa}")
        for stale in view.home_routes(hoa):
            if stale.key != route.key:
                self._nl.delete_route(stale, f"duplicate route for {hoa}")
                view.drop_route(stale)
        view.add_route(route)

    def _ha_install_many(
        self,
        items: list[tuple[IPv6Address, IPv6Address]],
        ha_addr: IPv6Address,
        home: int,
        view: HaView,
    ) -> None:
        """The tunnel part of each (HoA, CoA), without reading the kernel again."""
        raise NotImplementedError

    def _ha_remove_many(self, hoas: list[IPv6Address], view: HaView) -> None:
        """ha_unbind for each HoA (garbage collection is left to the caller)."""
        for hoa in hoas:
            for entry in view.proxies_of(hoa):
                self._nl.delete_proxy(entry, f"proxy NDP for {hoa}")
                view.drop_proxy(entry)
            for route in view.home_routes(hoa):
                self._nl.delete_route(route, f"tunnel route for {hoa}")
                view.drop_route(route)

    def _ha_collect_garbage_in(self, view: HaView) -> None:
        """_ha_collect_garbage from the picture instead of a fresh read."""
        self._ha_collect_garbage()

    def _ha_reconciled(self, view: HaView) -> None:
        """The picture after reconciliation, for a backend that keeps an index."""

    def _our_proxies(self) -> list[ProxyEntry]:
        return [e for e in self._nl.proxies() if e.proto == self.config.proto]

    def _home_routes(self, hoa: IPv6Address) -> list[Route]:
        """Our routes for the HoA in the main table (the HA side), duplicates included."""
        return [r for r in self._our_routes() if r.dst == host(hoa) and r.table == RT_TABLE_MAIN]

    # --- mobile node ------------------------------------------------------------------

    def mn_attach(
        self, hoa: IPv6Address, coa: IPv6Address, ha_addr: IPv6Address, ifname: str
    ) -> None:
        """Reverse-tunnel traffic from the HoA to the HA and accept what the HA tunnels.

        A call with another CoA or interface is a handover: the new path is installed
        before the old one is removed, and every attached home address moves with it.
        """
        _check_unicast(hoa, "home address")
        _check_unicast(coa, "care-of address")
        _check_unicast(ha_addr, "home agent address")
        _check_away(hoa, coa)
        index = self._nl.ifindex(ifname)
        states = self._mn_home_states()
        table = states[hoa].table if hoa in states else self._free_table(states)
        self._mn_install(hoa, coa, ha_addr, index, table)

    def mn_prepare(self, coa: IPv6Address, ha_addr: IPv6Address, ifname: str) -> None:
        """Before a handover's BU: accept what the HA will tunnel to the new CoA.

        Optional speed-up; mn_attach installs the same. Backends without it do nothing.
        """

    def mn_detach(self, hoa: IPv6Address) -> None:
        """Back home: drop the HoA's rule, its table and its address on ``lo``."""
        for rule in self._our_rules():
            if rule.priority == self.config.mn_pref and rule.src == host(hoa):
                self._nl.delete_rule(rule, f"reverse-tunnel rule for {hoa}")
                self._flush_table(rule.table, f"reverse tunnel of {hoa}")
        lo = self._nl.ifindex(LOOPBACK)
        for address in self._nl.addresses():
            if address.address == hoa and address.ifindex == lo and address.prefixlen == 128:
                self._nl.delete_address(address, f"home address {hoa} on lo")
        self._mn_collect_garbage()

    def mn_state(self) -> dict[IPv6Address, tuple[IPv6Address, IPv6Address]]:
        """HoA -> (CoA, HA) for every home address whose reverse tunnel is in the kernel."""
        return {
            s.hoa: (s.coa, s.ha)
            for s in self._mn_home_states().values()
            if s.coa is not None and s.ha is not None
        }

    def mn_reconcile(
        self, wanted: Mapping[IPv6Address, tuple[IPv6Address, IPv6Address]], ifname: str
    ) -> ReconcileReport:
        """Make the kernel hold exactly ``wanted`` (HoA -> (CoA, HA)) on ``ifname``."""
        coas = sorted({coa for coa, _ha in wanted.values()})
        if len(coas) > 1:
            listed = ", ".join(map(str, coas))
            raise DataPlaneError(
                "reconcile", "mobile node", f"one care-of address per node, got {listed}"
            )
        index = self._nl.ifindex(ifname)
        report = _ReportBuilder()
        states = self._mn_home_states()
        for hoa in sorted(set(states) - set(wanted)):
            self.mn_detach(hoa)
            report.removed.append(hoa)
        for hoa, (coa, ha) in sorted(wanted.items()):
            state = states.get(hoa)
            if state is None:
                report.added.append(hoa)
            elif state.complete and (state.coa, state.ha, state.ifindex) == (coa, ha, index):
                report.adopted.append(hoa)
                continue
            else:
                report.updated.append(hoa)
            self.mn_attach(hoa, coa, ha, ifname)
        self._mn_collect_garbage()
        return report.build()

    def _mn_rule(self, hoa: IPv6Address, table: int) -> Rule:
        return Rule(self.config.mn_pref, table, self.config.proto, src=host(hoa))

    def _install_mn_rule(self, hoa: IPv6Address, table: int) -> None:
        """The ``from <HoA>`` rule, added after its table is filled so nothing leaks."""
        wanted = self._mn_rule(hoa, table)
        self._nl.add_rule(wanted, f"reverse-tunnel rule for {hoa}")
        for rule in self._our_rules():
            if rule.src == host(hoa) and rule != wanted:
                self._nl.delete_rule(rule, f"stale reverse-tunnel rule for {hoa}")

    def _mn_tables(self) -> dict[IPv6Address, int]:
        """HoA -> its reverse-tunnel table, read from our ``from <HoA>`` rules."""
        return {
            rule.src.network_address: rule.table
            for rule in self._our_rules()
            if rule.priority == self.config.mn_pref
            and rule.src is not None
            and rule.src.prefixlen == 128
        }

    def _free_table(self, states: Mapping[IPv6Address, HomeState]) -> int:
        cfg = self.config
        used = {s.table for s in states.values()}
        used |= {r.table for r in self._our_routes()}
        for table in range(cfg.mn_table, cfg.mn_table + cfg.mn_table_count):
            if table not in used:
                return table
        raise DataPlaneError(
            "attach",
            "home address",
            f"all {cfg.mn_table_count} reverse-tunnel tables from {cfg.mn_table} are in use",
        )

    def _add_home_address(self, hoa: IPv6Address) -> None:
        lo = self._nl.ifindex(LOOPBACK)
        self._nl.replace_address(
            Address(hoa, 128, lo, self.config.proto), f"home address {hoa} on lo"
        )

    def _home_addresses(self) -> set[IPv6Address]:
        lo = self._nl.ifindex(LOOPBACK)
        return {a.address for a in self._nl.addresses() if a.ifindex == lo and a.prefixlen == 128}

    def _flush_table(self, table: int, what: str, keep: Route | None = None) -> None:
        for route in self._our_routes():
            if route.table == table and (keep is None or route.key != keep.key):
                self._nl.delete_route(route, what)

    # --- rules and the local table ----------------------------------------------------

    def _our_rules(self) -> list[Rule]:
        return [r for r in self._nl.rules() if r.proto == self.config.proto]

    def _our_routes(self) -> list[Route]:
        return self._nl.routes(proto=self.config.proto)

    def _decap_rule(self, pref: int, own: IPv6Address) -> Rule:
        """``pref P to <own>/128 ipproto 41 lookup <decap_table>``."""
        cfg = self.config
        return Rule(pref, cfg.decap_table, cfg.proto, dst=host(own), ip_proto=IPPROTO_IPV6)

    def _local_rule_moved(self) -> bool:
        rules = self._nl.rules()
        ours = Rule(self.config.local_pref, RT_TABLE_LOCAL, self.config.proto)
        early = [r for r in rules if r.table == RT_TABLE_LOCAL and r.priority == 0]
        return ours in rules and not early

    def _ensure_local_rule_moved(self) -> None:
        """Decapsulation rules must run before the ``local`` table, which sits at pref 0.

        Our copy of the local rule goes in first, so local delivery never pauses.
        """
        rules = self._nl.rules()
        ours = Rule(self.config.local_pref, RT_TABLE_LOCAL, self.config.proto)
        if ours not in rules:  # no write when it is there (a restart)
            self._nl.add_rule(ours, "local-table rule at its new priority")
        for rule in rules:
            plain = rule.src is None and rule.dst is None and rule.ip_proto is None
            if rule.table == RT_TABLE_LOCAL and rule.priority == 0 and plain:
                self._nl.delete_rule(rule, "local-table rule at priority 0")

    def _restore_local_rule(self) -> None:
        """Put the local table back at pref 0 (first), then drop our moved copy."""
        rules = self._nl.rules()
        ours = [r for r in rules if r.table == RT_TABLE_LOCAL and r.proto == self.config.proto]
        if not ours:
            return
        if not any(r.table == RT_TABLE_LOCAL and r.priority == 0 for r in rules):
            self._nl.add_rule(Rule(0, RT_TABLE_LOCAL, RTPROT_KERNEL), "local-table rule at 0")
        for rule in ours:
            self._nl.delete_rule(rule, "local-table rule at its moved priority")

    # --- cleanup ----------------------------------------------------------------------

    def cleanup(self) -> None:
        """Remove everything installed with this config's marks in this namespace.

        Covers both backends' objects. Sysctls (forwarding, proxy_ndp, proxy_delay) stay:
        the node may route for other reasons, and their earlier values are unknown.
        """
        rules = self._our_rules()
        homes = {r.src.network_address for r in rules if r.src is not None}
        decap_targets = {r.dst.network_address for r in rules if r.dst is not None}
        self._restore_local_rule()
        for rule in self._our_rules():
            self._nl.delete_rule(rule, "rule")
        for route in self._our_routes():
            self._nl.delete_route(route, f"route to {route.dst} (table {route.table})")
        for entry in self._our_proxies():
            self._nl.delete_proxy(entry, f"proxy NDP for {entry.address}")
        lo = self._nl.ifindex(LOOPBACK)
        for address in self._nl.addresses():
            ours = address.proto == self.config.proto
            # Kernels before 5.18 drop IFA_PROTO: fall back to the addresses our rules named.
            legacy = address.proto is None and address.address in homes
            if address.ifindex == lo and address.prefixlen == 128 and (ours or legacy):
                self._nl.delete_address(address, f"home address {address.address} on lo")
        if self._nl.tunsrc() in decap_targets:
            self._nl.set_tunsrc(UNSPECIFIED)
        prefix = self.config.tunnel_prefix
        for tunnel in self._nl.tunnels():
            if tunnel.name.startswith(prefix) and tunnel.flags & IP6_TNL_F_MIP6_DEV:
                self._nl.delete_link(tunnel.index, f"tunnel {tunnel.name}")
        self._ha_ready = None


def _check_away(hoa: IPv6Address, coa: IPv6Address) -> None:
    if hoa == coa:
        raise DataPlaneError("use", f"care-of address {coa}", "equals the home address (at home)")


def _check_unicast(address: IPv6Address, what: str) -> None:
    """Refuse what the kernel would accept but could never work as a tunnel end."""
    if not isinstance(address, IPv6Address):
        raise DataPlaneError("use", f"{what} {address!r}", "not an IPv6Address")
    # is_unspecified, is_multicast, is_loopback and is_link_local from the integer (the
    # properties test network membership: slow for every binding of a restart).
    value = int(address)
    if value <= 1 or value >> 120 == 0xFF:
        raise DataPlaneError("use", f"{what} {address}", "not a unicast address")
    if value >> 118 == 0xFE80 >> 6:
        raise DataPlaneError("use", f"{what} {address}", "a link-local address cannot be used")
