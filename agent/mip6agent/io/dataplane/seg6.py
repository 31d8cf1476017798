"""RFC 2473 IPv6-in-IPv6 from seg6 lightweight tunnels, for kernels without ip6tnl.

Encapsulation is ``encap seg6 mode encap.red`` with a single segment: the reduced mode
leaves the Segment Routing Header out when one segment is enough, so the packet on the
wire is a plain IPv6 header (next header 41) around the original packet. The outer
source is the namespace-wide seg6 tunnel source, set over the SEG6 generic-netlink family.

Decapsulation is a ``seg6local`` route (End.DX6 on the home agent: forward the inner
packet; End.DT6 table local on the mobile node: deliver it) reached through a policy rule
``to <own address> ipproto 41`` that must run before the ``local`` table, so the local
table's rule moves from priority 0 to ``local_pref``. With ``strict_decap`` the seg6local
routes are source-specific (``from <peer>``), so only the registered peer's packets are
decapsulated; that needs CONFIG_IPV6_SUBTREES and falls back to any source without it.

The tunnel source is per namespace, so this backend keeps one CoA per mobile node and one
home agent address per home agent. KERNEL.md has the measurements behind each choice.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace
from ipaddress import IPv6Address, IPv6Network

from .base import DataPlaneConfig, DataPlaneError, ReconcileReport
from .common import (
    UNSPECIFIED,
    HaView,
    HomeState,
    KernelBackend,
    _check_away,
    _check_unicast,
)
from .netlink import (
    DEFAULT_ROUTE,
    RT_TABLE_LOCAL,
    RT_TABLE_MAIN,
    SEG6_LOCAL_ACTION_END_DT6,
    SEG6_LOCAL_ACTION_END_DX6,
    Netlink,
    ProxyEntry,
    Route,
    Seg6Encap,
    Seg6LocalEncap,
    host,
)

log = logging.getLogger(__name__)
_DX6 = Seg6LocalEncap(SEG6_LOCAL_ACTION_END_DX6, nh6=UNSPECIFIED)  # nh6 :: = route the inner dst


class Seg6DataPlane(KernelBackend):
    """The data plane built from seg6 routes and policy rules (no tunnel devices)."""

    name = "seg6"

    def __init__(self, config: DataPlaneConfig | None = None, netlink: Netlink | None = None):
        super().__init__(config, netlink)
        self._strict = self.config.strict_decap
        # HoA -> (CoA, home ifindex) as installed, read from the kernel once. Dumping every
        # route per registration made filling the table O(N^2) (bench/ha_rate.py).
        self._bound: dict[IPv6Address, tuple[IPv6Address, int]] | None = None
        self._reconciling = False
        self._host_of_ha: IPv6Network | None = None  # host(ha_addr), for _view_complete

    # --- home agent fast path -----------------------------------------------------------

    def _bindings_index(self) -> dict[IPv6Address, tuple[IPv6Address, int]]:
        if self._bound is None:
            self._bound = self.ha_binding_links()
        return self._bound

    def ha_bind(
        self, hoa: IPv6Address, coa: IPv6Address, ha_addr: IPv6Address, home_ifname: str
    ) -> None:
        """As KernelBackend.ha_bind, in three netlink writes when nothing else changes."""
        if self._reconciling or self._ha_ready != (home_ifname, ha_addr):
            super().ha_bind(hoa, coa, ha_addr, home_ifname)
            self._bound = None
            return
        _check_unicast(hoa, "home address")
        _check_unicast(coa, "care-of address")
        _check_away(hoa, coa)
        home = self._nl.ifindex(home_ifname)
        bound = self._bindings_index()
        old = bound.get(hoa)
        decap = self._decap(ha_addr, coa, home, SEG6_LOCAL_ACTION_END_DX6)
        self._install_decap(decap, f"decapsulation of {coa} -> {ha_addr}")
        route = self._encap(hoa, RT_TABLE_MAIN, home, coa)
        self._nl.replace_route(route, f"tunnel route {hoa} -> {coa}")
        self._nl.replace_proxy(ProxyEntry(hoa, home, self.config.proto), f"proxy NDP for {hoa}")
        bound[hoa] = (coa, home)
        if old is not None and old[1] != home:
            stale = ProxyEntry(hoa, old[1], self.config.proto)
            self._nl.delete_proxy(stale, f"stale proxy NDP for {hoa}")
            self._nl.delete_route(
                self._encap(hoa, RT_TABLE_MAIN, old[1], old[0]), f"old tunnel route for {hoa}"
            )
        if old is not None and old[0] != coa:
            self._release_decap(old[0], ha_addr, old[1])

    def ha_unbind(self, hoa: IPv6Address) -> None:
        ready = self._ha_ready is not None and not self._reconciling
        old = self._bindings_index().pop(hoa, None) if ready else None
        if old is None or self._ha_ready is None:
            super().ha_unbind(hoa)
            self._bound = None
            return
        coa, home = old
        self._nl.delete_proxy(ProxyEntry(hoa, home, self.config.proto), f"proxy NDP for {hoa}")
        self._nl.delete_route(self._encap(hoa, RT_TABLE_MAIN, home, coa), f"tunnel route for {hoa}")
        self._release_decap(coa, self._ha_ready[1], home)

    def _release_decap(self, coa: IPv6Address, ha_addr: IPv6Address, home: int) -> None:
        """Drop the decapsulation from ``coa`` when no binding uses that CoA any more."""
        assert self._bound is not None
        in_use = {c for c, _ in self._bound.values()}
        if not self._strict:
            if not in_use:
                self._nl.delete_route(
                    replace(self._decap(ha_addr, coa, home, SEG6_LOCAL_ACTION_END_DX6), src=None),
                    "unused decapsulation",
                )
            return
        if coa not in in_use:
            decap = self._decap(ha_addr, coa, home, SEG6_LOCAL_ACTION_END_DX6)
            self._nl.delete_route(decap, f"unused decapsulation from {coa}")

    def mn_prepare(self, coa: IPv6Address, ha_addr: IPv6Address, ifname: str) -> None:
        """Decapsulation at the new CoA before the BU leaves, so that packets the HA
        tunnels there right after switching its route are not dropped while the BA is
        on its way and mn_attach runs (bench/handover.py measured ~12 ms of that)."""
        _check_unicast(coa, "care-of address")
        index = self._nl.ifindex(ifname)
        self._ensure_local_rule_moved()
        self._nl.add_rule(
            self._decap_rule(self.config.mn_decap_pref, coa), f"decapsulation at {coa}"
        )
        self._install_decap(
            self._decap(coa, ha_addr, index, SEG6_LOCAL_ACTION_END_DT6),
            f"decapsulation of {ha_addr} -> {coa}",
        )

    def ha_reconcile(
        self,
        wanted: Mapping[IPv6Address, IPv6Address],
        ha_addr: IPv6Address,
        home_ifname: str,
        remove_stale: bool = True,
        link_locals: Collection[IPv6Address] = (),
    ) -> ReconcileReport:
        # Reconciliation trusts only the kernel and does the full checks (duplicates, stray
        # proxies); the index is rebuilt from its final picture (_ha_reconciled).
        self._bound, self._reconciling = None, True
        try:
            return super().ha_reconcile(wanted, ha_addr, home_ifname, remove_stale, link_locals)
        except BaseException:
            self._bound = None
            raise
        finally:
            self._reconciling = False

    def cleanup(self) -> None:
        self._bound = None
        super().cleanup()

    # --- building blocks --------------------------------------------------------------

    def _encap(self, dst: IPv6Address | None, table: int, index: int, peer: IPv6Address) -> Route:
        """``<dst> encap seg6 mode encap.red segs <peer> dev <index>``."""
        cfg = self.config
        target = host(dst) if dst is not None else DEFAULT_ROUTE
        return Route(target, table, index, cfg.proto, metric=cfg.metric, encap=Seg6Encap((peer,)))

    def _decap(self, own: IPv6Address, peer: IPv6Address, index: int, action: int) -> Route:
        """``<own> [from <peer>] encap seg6local action End.DX6|End.DT6 ...`` in decap_table."""
        cfg = self.config
        if action == SEG6_LOCAL_ACTION_END_DX6:
            encap = _DX6
        else:
            encap = Seg6LocalEncap(action, table=RT_TABLE_LOCAL)
        src = host(peer) if self._strict else None
        return Route(host(own), cfg.decap_table, index, cfg.proto, src, cfg.metric, encap)

    def _install_decap(self, route: Route, what: str) -> Route:
        try:
            self._nl.replace_route(route, what)
            return route
        except DataPlaneError as exc:
            # Without CONFIG_IPV6_SUBTREES the kernel refuses source-specific routes.
            if route.src is None or exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            log.warning("%s; decapsulating from any source instead", exc)
        self._strict = False
        relaxed = replace(route, src=None)
        self._nl.replace_route(relaxed, what)
        return relaxed

    def _decap_routes(self, action: int) -> list[Route]:
        cfg = self.config
        return [
            r
            for r in self._our_routes()
            if r.table == cfg.decap_table
            and isinstance(r.encap, Seg6LocalEncap)
            and r.encap.action == action
        ]

    def _set_tunsrc(self, address: IPv6Address) -> None:
        if self._nl.tunsrc() == address:
            return
        if not self._nl.set_tunsrc(address):
            log.warning(
                "cannot set the seg6 tunnel source (%s); the kernel picks outer sources",
                self._nl.tunsrc_unavailable,
            )

    # --- home agent -------------------------------------------------------------------

    def _ha_plumbing(self, home_ifname: str, ha_addr: IPv6Address) -> None:
        """Tunnel source, the moved local rule, ``to <HA> ipproto 41 lookup decap_table``.

        One home agent address per namespace (the tunnel source is per namespace): a new
        address takes over, and bindings made for the old one stop working.
        """
        cfg = self.config
        ours = self._our_rules()
        others = {
            r.dst.network_address
            for r in ours
            if r.priority == cfg.ha_decap_pref and r.dst is not None
        } - {ha_addr}
        if others and self.ha_bindings():
            log.warning(
                "seg6 data plane: home agent address %s replaces %s, whose bindings stop working",
                ha_addr,
                ", ".join(map(str, sorted(others))),
            )
        self._set_tunsrc(ha_addr)
        self._ensure_local_rule_moved()
        wanted = self._decap_rule(cfg.ha_decap_pref, ha_addr)
        if wanted not in ours:  # no write when it is there (a restart)
            self._nl.add_rule(wanted, f"decapsulation rule for {ha_addr}")
        for rule in ours:
            if rule.priority == cfg.ha_decap_pref and rule != wanted:
                self._nl.delete_rule(rule, f"stale decapsulation rule for {rule.dst}")

    def _ha_install(
        self, hoa: IPv6Address, coa: IPv6Address, ha_addr: IPv6Address, home: int
    ) -> None:
        # Decapsulation from the new CoA first, so the reverse tunnel works at once.
        decap = self._decap(ha_addr, coa, home, SEG6_LOCAL_ACTION_END_DX6)
        self._install_decap(decap, f"decapsulation of {coa} -> {ha_addr}")
        route = self._encap(hoa, RT_TABLE_MAIN, home, coa)
        self._nl.replace_route(route, f"tunnel route {hoa} -> {coa}")
        for stale in self._home_routes(hoa):
            if stale.key != route.key:
                self._nl.delete_route(stale, f"duplicate route for {hoa}")

    def _ha_remove(self, hoa: IPv6Address) -> None:
        for route in self._home_routes(hoa):
            self._nl.delete_route(route, f"tunnel route for {hoa}")

    def _ha_collect_garbage(self) -> None:
        """Keep one End.DX6 route per CoA in use, to a current HA address."""
        cfg = self.config
        coas = set(self.ha_bindings().values())
        own = {r.dst for r in self._our_rules() if r.priority == cfg.ha_decap_pref}
        for route in self._decap_routes(SEG6_LOCAL_ACTION_END_DX6):
            if self._strict:
                keep = route.src is not None and route.src.network_address in coas
            else:
                keep = route.src is None and bool(coas)
            if not keep or route.dst not in own:
                self._nl.delete_route(route, f"unused decapsulation at {route.dst}")

    def ha_bindings(self) -> dict[IPv6Address, IPv6Address]:
        """HoA -> CoA for every tunnel route in the kernel now."""
        return _tunnel_targets(self._our_routes())

    def _ha_links(self) -> dict[IPv6Address, int]:
        return {
            r.dst.network_address: r.oif
            for r in self._our_routes()
            if r.table == RT_TABLE_MAIN
            and r.dst.prefixlen == 128
            and isinstance(r.encap, Seg6Encap)
        }

    # --- reconciliation on one picture (common.HaView) ----------------------------------

    def _view_bindings(self, view: HaView) -> dict[IPv6Address, IPv6Address]:
        return _tunnel_targets(view.all_home_routes())

    def _view_links(
        self, view: HaView, bindings: Mapping[IPv6Address, IPv6Address]
    ) -> dict[IPv6Address, int]:
        return {
            r.dst.network_address: r.oif
            for r in view.all_home_routes()
            if isinstance(r.encap, Seg6Encap)
        }

    def _view_decaps(self, view: HaView) -> set[Route]:
        cfg = self.config
        return {
            r
            for r in view.routes.values()
            if r.table == cfg.decap_table
            and isinstance(r.encap, Seg6LocalEncap)
            and r.encap.action == SEG6_LOCAL_ACTION_END_DX6
        }

    def _view_complete(
        self, view: HaView, hoa: IPv6Address, coa: IPv6Address, ha_addr: IPv6Address, home: int
    ) -> bool:
        """The tunnel route is exactly ``_encap(hoa, main, home, coa)`` and alone, the
        decapsulation exactly ``_decap(ha_addr, coa, home, End.DX6)``, the proxy entry there.

        Compared field by field: this runs for every binding at a restart, and building
        the two wanted routes (three networks) cost more than the comparison itself.
        """
        cfg = self.config
        routes = view.home_routes(hoa)  # main table, dst <hoa>/128
        if len(routes) != 1:
            return False
        route = routes[0]
        if not (
            route.oif == home
            and route.proto == cfg.proto
            and route.metric == cfg.metric
            and route.src is None
            and route.encap == Seg6Encap((coa,))
        ):
            return False
        own = self._host_of_ha
        if own is None or own.network_address != ha_addr:
            own = self._host_of_ha = host(ha_addr)
        key = (own, host(coa) if self._strict else None, cfg.decap_table, cfg.metric)
        decap = view.routes.get(key)
        return (
            decap is not None
            and decap.oif == home
            and decap.proto == cfg.proto
            and decap.encap == _DX6
            and view.has_proxy(ProxyEntry(hoa, home, cfg.proto))
        )

    def _ha_install_many(
        self,
        items: list[tuple[IPv6Address, IPv6Address]],
        ha_addr: IPv6Address,
        home: int,
        view: HaView,
    ) -> None:
        for hoa, coa in items:
            # Decapsulation from the new CoA first, so the reverse tunnel works at once.
            decap = self._decap(ha_addr, coa, home, SEG6_LOCAL_ACTION_END_DX6)
            if view.routes.get(decap.key) != decap:
                view.add_route(self._install_decap(decap, f"decapsulation of {coa} -> {ha_addr}"))
            self._view_replace_home_route(
                view, hoa, coa, self._encap(hoa, RT_TABLE_MAIN, home, coa)
            )

    def _ha_collect_garbage_in(self, view: HaView) -> None:
        """As _ha_collect_garbage, with the CoAs and decapsulations of the picture."""
        cfg = self.config
        coas = set(self._view_bindings(view).values())
        own = {r.dst for r in self._our_rules() if r.priority == cfg.ha_decap_pref}
        unused = []
        for route in self._view_decaps(view):
            if self._strict:
                keep = route.src is not None and route.src.network_address in coas
            else:
                keep = route.src is None and bool(coas)
            if not keep or route.dst not in own:
                unused.append(route)
        # Sorted for a repeatable order; only what goes (the key's text is slow to make).
        for route in sorted(unused, key=lambda r: str(r.key)):
            self._nl.delete_route(route, f"unused decapsulation at {route.dst}")
            view.drop_route(route)

    def _ha_reconciled(self, view: HaView) -> None:
        links = self._view_links(view, {})
        self._bound = {h: (c, links.get(h, 0)) for h, c in self._view_bindings(view).items()}

    # --- mobile node ------------------------------------------------------------------

    def _mn_install(
        self, hoa: IPv6Address, coa: IPv6Address, ha_addr: IPv6Address, index: int, table: int
    ) -> None:
        cfg = self.config
        others = [s for h, s in self._mn_home_states().items() if h != hoa]
        peers = {ha_addr} | {s.ha for s in others if s.ha is not None}
        # 1. Accept packets tunnelled to the new CoA before anything points at it.
        self._ensure_local_rule_moved()
        self._nl.add_rule(self._decap_rule(cfg.mn_decap_pref, coa), f"decapsulation at {coa}")
        decaps = [
            self._install_decap(
                self._decap(coa, peer, index, SEG6_LOCAL_ACTION_END_DT6),
                f"decapsulation of {peer} -> {coa}",
            )
            for peer in sorted(peers)
        ]
        # 2. Outer source, home address, reverse tunnel; replace switches in one step.
        self._set_tunsrc(coa)
        self._add_home_address(hoa)
        reverse = self._encap(None, table, index, ha_addr)
        self._nl.replace_route(reverse, f"reverse tunnel of {hoa} to {ha_addr}")
        self._flush_table(table, f"stale reverse tunnel of {hoa}", keep=reverse)
        self._install_mn_rule(hoa, table)
        # 3. Other home addresses follow: the tunnel source is one per namespace.
        for other in others:
            if other.ha is not None and other.ifindex != index:
                moved = self._encap(None, other.table, index, other.ha)
                self._nl.replace_route(moved, f"reverse tunnel of {other.hoa} to {other.ha}")
        # 4. Only now forget the old CoA.
        wanted = {r.key for r in decaps}
        for route in self._decap_routes(SEG6_LOCAL_ACTION_END_DT6):
            if route.key not in wanted:
                self._nl.delete_route(route, f"old decapsulation at {route.dst}")
        for rule in self._our_rules():
            if rule.priority == cfg.mn_decap_pref and rule.dst != host(coa):
                self._nl.delete_rule(rule, f"old decapsulation rule for {rule.dst}")

    def _mn_home_states(self) -> dict[IPv6Address, HomeState]:
        cfg = self.config
        routes = self._our_routes()
        coas = [
            r.dst.network_address
            for r in self._our_rules()
            if r.priority == cfg.mn_decap_pref and r.dst is not None
        ]
        tunsrc = self._nl.tunsrc()
        coa = coas[0] if len(coas) == 1 else (tunsrc if tunsrc in coas else None)
        decaps = self._decap_routes(SEG6_LOCAL_ACTION_END_DT6)
        addresses = self._home_addresses()
        plumbing = self._local_rule_moved() and tunsrc in (None, coa)
        states = {}
        for hoa, table in self._mn_tables().items():
            reverse = [r for r in routes if r.table == table]
            ha, ifindex, complete = None, 0, False
            if len(reverse) == 1 and isinstance(reverse[0].encap, Seg6Encap):
                route = reverse[0]
                ha, ifindex = route.encap.segments[0], route.oif
                complete = (
                    coa is not None
                    and route == self._encap(None, table, ifindex, ha)
                    and self._decap(coa, ha, ifindex, SEG6_LOCAL_ACTION_END_DT6) in decaps
                    and hoa in addresses
                    and plumbing
                )
            states[hoa] = HomeState(hoa, table, coa, ha, ifindex, complete)
        return states

    def _mn_collect_garbage(self) -> None:
        cfg = self.config
        states = self._mn_home_states()
        peers = {s.ha for s in states.values() if s.ha is not None}
        for route in self._decap_routes(SEG6_LOCAL_ACTION_END_DT6):
            peer = route.src.network_address if route.src is not None else None
            if not states or (peer is not None and peer not in peers):
                self._nl.delete_route(route, f"unused decapsulation at {route.dst}")
        if states:
            return
        decap_rules = [r for r in self._our_rules() if r.priority == cfg.mn_decap_pref]
        for rule in decap_rules:
            self._nl.delete_rule(rule, f"decapsulation rule for {rule.dst}")
        if self._nl.tunsrc() in {r.dst.network_address for r in decap_rules if r.dst}:
            self._nl.set_tunsrc(UNSPECIFIED)
        if not any(r.priority == cfg.ha_decap_pref for r in self._our_rules()):
            self._restore_local_rule()


def _tunnel_targets(routes: Iterable[Route]) -> dict[IPv6Address, IPv6Address]:
    """HoA -> CoA of the seg6 tunnel routes (main table, /128, one segment) among ``routes``."""
    return {
        r.dst.network_address: r.encap.segments[0]
        for r in routes
        if r.table == RT_TABLE_MAIN
        and r.dst.prefixlen == 128
        and isinstance(r.encap, Seg6Encap)
        and len(r.encap.segments) == 1
    }
