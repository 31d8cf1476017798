"""RFC 2473 IPv6-in-IPv6 through ``ip6tnl`` devices, for kernels with CONFIG_IPV6_TUNNEL.

The development machines have no ip6tnl (KERNEL.md): this backend is tested on Debian's
distro kernel under qemu (``make vm-test``, lab/kernel-vm/), with the same real-packet
tests as seg6. The kernel paths it relies on are named below.

- One device per tunnel: ``<prefix>h<n>`` on a home agent (local HA, remote CoA, one per
  CoA in use), ``<prefix>m<n>`` on a mobile node (local CoA, remote HA, one per HA).
- A home agent's devices have ``link`` 0. A device's link only makes the outer route
  lookup prefer that interface (not strict: the source is set), but ip6_tnl_xmit_ctl()
  wants the local address on it; and one device per pair of endpoints serves every
  binding with that CoA, whatever its home link. Which home link a binding belongs to is
  read from its proxy NDP entry.
- A mobile node's device is bound to the CoA's interface, where its outer packets belong.
- Mode ip6ip6 (IFLA_IPTUN_PROTO 41), hop limit 64, flags IGN_ENCAP_LIMIT (no Tunnel
  Encapsulation Limit destination option: plain next header 41 on the wire, like the seg6
  backend) and MIP6_DEV (which the kernel no longer reads; it marks our devices).
- The kernel decapsulates by itself: a packet from ``remote`` to ``local`` with next
  header 41 is matched to the device (ip6_tnl_lookup) and the inner packet is received
  on it, so no policy rules are needed for decapsulation.
- ip6_tnl_netlink_parms() zeroes every parameter not in a message, so changes repeat
  them all; a handover on the mobile node changes ``local`` and ``link`` in place.
- ip6_tnl_xmit_ctl()/ip6_tnl_rcv_ctl() refuse a tentative local address: with DAD on, a
  new CoA carries traffic only once DAD is over (or with optimistic DAD).
- Creating the first ip6tnl device loads the module, which adds ``ip6tnl0`` to every
  namespace; it is the kernel's, not ours, and stays.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from ipaddress import IPv6Address

from .base import DataPlaneError
from .common import HaView, HomeState, KernelBackend
from .netlink import DEFAULT_ROUTE, RT_TABLE_MAIN, Ip6Tunnel, ProxyEntry, Route, host


class Ip6tnlDataPlane(KernelBackend):
    """The data plane built from ip6tnl devices and plain routes."""

    name = "ip6tnl"

    # --- devices ----------------------------------------------------------------------

    def _tunnels(self, role: str) -> list[Ip6Tunnel]:
        prefix = self.config.tunnel_prefix + role
        return [
            t
            for t in self._nl.tunnels()
            if t.name.startswith(prefix) and t.name[len(prefix) :].isdigit()
        ]

    def _free_name(self, role: str) -> str:
        taken = {t.name for t in self._nl.tunnels()} | set(self._nl.link_names())
        return _free(self.config.tunnel_prefix + role, taken)

    def _drop_unused(self, role: str) -> None:
        used = {r.oif for r in self._our_routes()}
        for tunnel in self._tunnels(role):
            if tunnel.index not in used:
                self._nl.delete_link(tunnel.index, f"unused ip6tnl tunnel {tunnel.name}")

    # --- home agent -------------------------------------------------------------------

    def _ha_install(
        self, hoa: IPv6Address, coa: IPv6Address, ha_addr: IPv6Address, home: int
    ) -> None:
        tunnel = self._ha_tunnel(ha_addr, coa)
        cfg = self.config
        route = Route(host(hoa), RT_TABLE_MAIN, tunnel.index, cfg.proto, metric=cfg.metric)
        self._nl.replace_route(route, f"tunnel route {hoa} -> {coa}")
        for stale in self._home_routes(hoa):
            if stale.key != route.key:
                self._nl.delete_route(stale, f"duplicate route for {hoa}")

    def _ha_tunnel(self, ha_addr: IPv6Address, coa: IPv6Address) -> Ip6Tunnel:
        for tunnel in self._tunnels("h"):
            if (tunnel.local, tunnel.remote) == (ha_addr, coa):
                # Devices made by earlier versions were bound to the home link: unbind them.
                wanted = Ip6Tunnel(tunnel.name, ha_addr, coa, 0, tunnel.index)
                if wanted != tunnel:
                    self._nl.change_tunnel(wanted, f"ip6tnl tunnel {tunnel.name} to {coa}")
                return wanted
        name = self._free_name("h")
        return self._create(Ip6Tunnel(name, ha_addr, coa, 0), f"ip6tnl tunnel {name} to {coa}")

    def _create(self, tunnel: Ip6Tunnel, what: str) -> Ip6Tunnel:
        try:
            self._nl.create_tunnel(tunnel, what)
        except DataPlaneError as exc:
            # ip6_tnl_locate() allows one device per pair of endpoints: name the one in the way.
            ends = (tunnel.local, tunnel.remote)
            clash = [t.name for t in self._nl.tunnels() if (t.local, t.remote) == ends]
            if exc.errno != errno.EEXIST or not clash:
                raise
            reason = f"{exc.reason}: device {clash[0]} has the same endpoints"
            raise DataPlaneError(exc.operation, exc.subject, reason, exc.errno) from None
        return self._lookup(tunnel.name)

    def _lookup(self, name: str) -> Ip6Tunnel:
        for tunnel in self._nl.tunnels():
            if tunnel.name == name:
                return tunnel
        raise DataPlaneError("create", f"ip6tnl tunnel {name}", "device missing after creation")

    def _ha_remove(self, hoa: IPv6Address) -> None:
        for route in self._home_routes(hoa):
            self._nl.delete_route(route, f"tunnel route for {hoa}")

    def _ha_collect_garbage(self) -> None:
        self._drop_unused("h")

    def ha_bindings(self) -> dict[IPv6Address, IPv6Address]:
        tunnels = {t.index: t for t in self._tunnels("h")}
        return {
            r.dst.network_address: tunnels[r.oif].remote
            for r in self._our_routes()
            if r.table == RT_TABLE_MAIN and r.dst.prefixlen == 128 and r.oif in tunnels
        }

    def _ha_links(self) -> dict[IPv6Address, int]:
        # The devices are not bound to a home link; the proxy entry says which one it is.
        proxied = {e.address: e.ifindex for e in self._our_proxies()}
        return {hoa: proxied[hoa] for hoa in self.ha_bindings() if hoa in proxied}

    # --- reconciliation on one picture (common.HaView) ----------------------------------

    def _ha_view(self) -> HaView:
        return HaView(self._our_routes(), self._our_proxies(), self._tunnels("h"))

    def _view_bindings(self, view: HaView) -> dict[IPv6Address, IPv6Address]:
        return {
            r.dst.network_address: view.tunnels[r.oif].remote
            for r in view.all_home_routes()
            if r.oif in view.tunnels
        }

    def _view_links(
        self, view: HaView, bindings: Mapping[IPv6Address, IPv6Address]
    ) -> dict[IPv6Address, int]:
        # The devices are not bound to a home link; the proxy entry says which one it is.
        links = {}
        for hoa in bindings:
            entries = view.proxies_of(hoa)
            if entries:
                links[hoa] = entries[-1].ifindex
        return links

    def _view_complete(
        self, view: HaView, hoa: IPv6Address, coa: IPv6Address, ha_addr: IPv6Address, home: int
    ) -> bool:
        routes = view.home_routes(hoa)
        if len(routes) != 1 or routes[0].oif not in view.tunnels:
            return False
        tunnel = view.tunnels[routes[0].oif]
        wanted = Ip6Tunnel(tunnel.name, ha_addr, coa, 0, tunnel.index)
        return tunnel == wanted and view.has_proxy(ProxyEntry(hoa, home, self.config.proto))

    def _ha_install_many(
        self,
        items: list[tuple[IPv6Address, IPv6Address]],
        ha_addr: IPv6Address,
        home: int,
        view: HaView,
    ) -> None:
        if not items:
            return
        # 1. One device per CoA: fix the ones there, create the missing ones, then read
        #    the devices once for the new indexes.
        by_ends = {(t.local, t.remote): t for t in view.tunnels.values()}
        devices: dict[IPv6Address, Ip6Tunnel] = {}
        created = False
        taken: set[str] | None = None
        for coa in sorted({coa for _hoa, coa in items}):
            tunnel = by_ends.get((ha_addr, coa))
            if tunnel is not None:
                wanted = Ip6Tunnel(tunnel.name, ha_addr, coa, 0, tunnel.index)
                if wanted != tunnel:
                    self._nl.change_tunnel(wanted, f"ip6tnl tunnel {tunnel.name} to {coa}")
                    view.tunnels[tunnel.index] = wanted
                devices[coa] = wanted
                continue
            if taken is None:
                taken = {t.name for t in self._nl.tunnels()} | set(self._nl.link_names())
            name = _free(self.config.tunnel_prefix + "h", taken)
            taken.add(name)
            try:
                self._nl.create_tunnel(
                    Ip6Tunnel(name, ha_addr, coa, 0), f"ip6tnl tunnel {name} to {coa}"
                )
            except DataPlaneError as exc:
                clash = [
                    t.name for t in self._nl.tunnels() if (t.local, t.remote) == (ha_addr, coa)
                ]
                if exc.errno != errno.EEXIST or not clash:
                    raise
                reason = f"{exc.reason}: device {clash[0]} has the same endpoints"
                raise DataPlaneError(exc.operation, exc.subject, reason, exc.errno) from None
            created = True
        if created:
            for tunnel in self._tunnels("h"):
                view.tunnels[tunnel.index] = tunnel
                if tunnel.local == ha_addr and tunnel.remote not in devices:
                    devices[tunnel.remote] = tunnel
        # 2. The routes into them.
        cfg = self.config
        for hoa, coa in items:
            if coa not in devices:
                raise DataPlaneError(
                    "create", f"ip6tnl tunnel to {coa}", "device missing after creation"
                )
            route = Route(
                host(hoa), RT_TABLE_MAIN, devices[coa].index, cfg.proto, metric=cfg.metric
            )
            self._view_replace_home_route(view, hoa, coa, route)

    def _ha_collect_garbage_in(self, view: HaView) -> None:
        used = {r.oif for r in view.routes.values()}
        for index, tunnel in sorted(view.tunnels.items()):
            if index not in used:
                self._nl.delete_link(index, f"unused ip6tnl tunnel {tunnel.name}")
                del view.tunnels[index]

    # --- mobile node ------------------------------------------------------------------

    def _mn_install(
        self, hoa: IPv6Address, coa: IPv6Address, ha_addr: IPv6Address, index: int, table: int
    ) -> None:
        self._add_home_address(hoa)
        target = None
        # Every tunnel of this node moves to the new CoA and interface (one CoA per node).
        for tunnel in self._tunnels("m"):
            wanted = Ip6Tunnel(tunnel.name, coa, tunnel.remote, index, tunnel.index)
            if wanted != tunnel:
                self._nl.change_tunnel(wanted, f"ip6tnl tunnel {tunnel.name} to {coa}")
            if tunnel.remote == ha_addr:
                target = wanted
        if target is None:
            name = self._free_name("m")
            target = self._create(
                Ip6Tunnel(name, coa, ha_addr, index), f"ip6tnl tunnel {name} to {ha_addr}"
            )
        reverse = Route(
            DEFAULT_ROUTE, table, target.index, self.config.proto, metric=self.config.metric
        )
        self._nl.replace_route(reverse, f"reverse tunnel of {hoa} to {ha_addr}")
        self._flush_table(table, f"stale reverse tunnel of {hoa}", keep=reverse)
        self._install_mn_rule(hoa, table)
        self._drop_unused("m")

    def _mn_home_states(self) -> dict[IPv6Address, HomeState]:
        tunnels = {t.index: t for t in self._tunnels("m")}
        routes = self._our_routes()
        addresses = self._home_addresses()
        states = {}
        for hoa, table in self._mn_tables().items():
            reverse = [r for r in routes if r.table == table]
            if len(reverse) == 1 and reverse[0].oif in tunnels:
                tunnel = tunnels[reverse[0].oif]
                # Same endpoints, but our flags, hop limit and state.
                wanted = Ip6Tunnel(
                    tunnel.name, tunnel.local, tunnel.remote, tunnel.link, tunnel.index
                )
                complete = hoa in addresses and reverse[0].dst == DEFAULT_ROUTE and tunnel == wanted
                states[hoa] = HomeState(
                    hoa, table, tunnel.local, tunnel.remote, tunnel.link, complete
                )
            else:
                states[hoa] = HomeState(hoa, table, None, None, 0, False)
        return states

    def _mn_collect_garbage(self) -> None:
        self._drop_unused("m")


def _free(prefix: str, taken: set[str]) -> str:
    """The first ``<prefix><n>`` not in ``taken``."""
    n = 0
    while f"{prefix}{n}" in taken:
        n += 1
    return f"{prefix}{n}"
