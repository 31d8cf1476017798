"""The correspondent node's route-optimisation data path: the TC eBPF programs of
:mod:`mip6agent.io.dataplane.ro_bpf`, driven by the core's correspondent-binding actions.

Every method blocks (netlink, bpf(2), bpftool): the agent calls them on its kernel thread.

- :meth:`start` probes the backend (``available()``), loads the programs, removes any
  binding a previous run left in the maps (a restarted correspondent starts with none:
  mobile nodes whose packets then carry a Home Address option without a binding get
  Binding Error status 1 and run return routability again), and attaches to every
  Ethernet-framed interface of the namespace.
- :meth:`install` also attaches to the interfaces the routes to the home address and to
  the care-of address leave by, if they were not attached yet (an interface added later),
  and adds a headroom route: the home address (/128) by the same gateway and interface as
  before, with ``mtu lock`` :data:`~mip6agent.io.dataplane.ro_bpf.RO_OVERHEAD` (24) below
  the interface's MTU, so that TCP sizes its segments, and UDP and ICMPv6 fragment, to
  fit the Type 2 Routing Header the egress program adds. :meth:`remove` deletes it; the
  routes carry protocol :data:`RTPROT_MIP6_RO` and :meth:`start` / :meth:`stop` flush
  any left.
- :meth:`used` reads the per-binding packet counters: the home addresses whose bindings
  carried packets since the last call (for ``Correspondent.note_use``).
- :meth:`stop` removes filters, the clsact qdiscs added, programs, maps and pins.

Backends, in this order: the TC eBPF programs when they load and attach; else, when the
probe says ``mip6`` (a kernel with ``CONFIG_IPV6_MIP6``), the kernel's XFRM ro states of
:mod:`mip6agent.io.dataplane.ro_xfrm` (no programs, interfaces or headroom routes: the
kernel's XFRM bundle takes the Type 2 Routing Header off the path MTU itself; a start
removes the states and policies a previous run left); else none, with ``reason`` naming
why each was refused, and the agent keeps mobile nodes on the tunnel. ``backend`` names
the one running.
"""

from __future__ import annotations

import contextlib
import logging
from ipaddress import IPv6Address

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..io.dataplane import ro_bpf, ro_xfrm
from ..io.dataplane.ro_bpf import RoBpf, RoBpfError
from ..io.dataplane.ro_xfrm import RoXfrm, RoXfrmError

log = logging.getLogger("mip6agent")
ARPHRD_ETHER = 1
BACKEND = "tc-ebpf"
BACKEND_XFRM = "xfrm-ro"
RTPROT_MIP6_RO = 87  # the correspondent's headroom routes (the home agent's are 86)
_RTAX_MTU = 2


class CorrespondentPathError(Exception):
    """The data path could not be started or changed; the message says why."""


class CorrespondentPath:
    def __init__(self, instance: str = "default") -> None:
        self.instance = instance
        self.ro: RoBpf | RoXfrm | None = None
        self.backend: str | None = None  # BACKEND or BACKEND_XFRM while running
        self.reason: str | None = None  # why the data path is not running
        # (name, index): an interface that comes back under the same name is a new one.
        self.attached: set[tuple[str, int]] = set()
        self._packets: dict[tuple[IPv6Address, IPv6Address], int] = {}

    @property
    def active(self) -> bool:
        return self.ro is not None

    def start(self) -> bool:
        """eBPF if it starts, else XFRM ro if the kernel has MIP6; False (with ``reason``)."""
        if self.ro is not None:
            return True
        if self._start_bpf():
            self.backend = BACKEND
            return True
        bpf_reason = self.reason
        if self._start_xfrm():
            log.info("route optimisation with kernel MIP6 XFRM ro states: %s", bpf_reason)
            self.backend = BACKEND_XFRM
            return True
        self.reason = f"{bpf_reason}; {self.reason}"
        return False

    def _start_xfrm(self) -> bool:
        try:
            ok, reason = ro_xfrm.available()
        except (OSError, NetlinkError) as exc:
            ok, reason = False, f"probe failed: {exc}"
        if not ok:
            self.reason = f"XFRM ro data path unavailable: {reason}"
            return False
        ro = RoXfrm()
        try:
            ro.close()  # what a previous run left
        except (RoXfrmError, OSError) as exc:
            self.reason = f"XFRM ro data path failed to start: {exc}"
            return False
        self.ro, self.reason = ro, None
        self._packets.clear()
        return True

    def _start_bpf(self) -> bool:
        ok, reason = ro_bpf.available()
        if not ok:
            self.reason = f"TC eBPF data path unavailable: {reason}"
            return False
        ro = RoBpf(self.instance)
        try:
            ro.load()
            for stale in ro.bindings("cn"):
                ro.remove_binding("cn", stale.cn, stale.home)
            with IPRoute() as ipr:
                _flush_headroom(ipr)
                names = [
                    (link.get_attr("IFLA_IFNAME"), link["index"])
                    for link in ipr.get_links()
                    if link["ifi_type"] == ARPHRD_ETHER
                ]
            for ifname, index in names:
                ro.attach(ifname, "cn")
                self.attached.add((ifname, index))
        except (RoBpfError, OSError, NetlinkError) as exc:
            with contextlib.suppress(RoBpfError, OSError, NetlinkError):
                ro.detach()
            self.attached.clear()
            self.reason = f"TC eBPF data path failed to start: {exc}"
            return False
        self.ro, self.reason = ro, None
        self._packets.clear()
        return True

    @property
    def interfaces(self) -> list[str]:
        """The names of the interfaces our programs are attached to."""
        return sorted({name for name, _index in self.attached})

    def stop(self) -> None:
        ro, self.ro = self.ro, None
        self.backend = None
        self.attached.clear()
        self._packets.clear()
        if isinstance(ro, RoXfrm):
            ro.close()
        elif ro is not None:
            with IPRoute() as ipr:
                _flush_headroom(ipr)
            ro.detach()

    def _need(self) -> RoBpf | RoXfrm:
        if self.ro is None:
            raise CorrespondentPathError(self.reason or "the route-optimisation data path is off")
        return self.ro

    def _attach_routes(self, ro: RoBpf, *addresses: IPv6Address) -> None:
        """Attach to the interfaces the routes to ``addresses`` use, if not yet."""
        with IPRoute() as ipr:
            for address in addresses:
                try:
                    routes = ipr.route("get", dst=str(address))
                except NetlinkError:
                    continue  # no route: the packets cannot leave anyway
                for route in routes:
                    index = route.get_attr("RTA_OIF")
                    if index is None:
                        continue
                    links = ipr.get_links(index)
                    if not links or links[0]["ifi_type"] != ARPHRD_ETHER:
                        continue
                    ifname = links[0].get_attr("IFLA_IFNAME")
                    if (ifname, index) not in self.attached:
                        ro.attach(ifname, "cn")
                        self.attached.add((ifname, index))
                        log.info("route optimisation: programs attached to %s", ifname)

    def install(
        self, home_address: IPv6Address, care_of_address: IPv6Address, correspondent: IPv6Address
    ) -> None:
        ro = self._need()
        if isinstance(ro, RoBpf):
            self._attach_routes(ro, home_address, care_of_address)
            self._headroom(home_address)
        ro.add_binding("cn", correspondent, home_address, care_of_address)

    def remove(self, home_address: IPv6Address, correspondent: IPv6Address) -> None:
        self._packets.pop((correspondent, home_address), None)
        if self.ro is not None:
            self.ro.remove_binding("cn", correspondent, home_address)
            if isinstance(self.ro, RoXfrm):
                return
            if not any(b.home == home_address for b in self.ro.bindings("cn")):
                with IPRoute() as ipr, contextlib.suppress(NetlinkError):
                    ipr.route("del", dst=f"{home_address}/128", proto=RTPROT_MIP6_RO)

    def _headroom(self, home_address: IPv6Address) -> None:
        """The home address by the route it has now, its MTU locked 24 octets lower."""
        with IPRoute() as ipr:
            try:
                routes = ipr.route("get", dst=str(home_address))
            except NetlinkError as exc:
                log.warning("no headroom route for %s: %s", home_address, exc)
                return
            if not routes:
                return
            route = routes[0]
            index = route.get_attr("RTA_OIF")
            links = ipr.get_links(index) if index is not None else []
            if not links:
                return
            mtu = links[0].get_attr("IFLA_MTU") - ro_bpf.RO_OVERHEAD
            gateway = route.get_attr("RTA_GATEWAY")
            extra = {"gateway": gateway} if gateway else {}
            ipr.route(
                "replace",
                dst=f"{home_address}/128",
                oif=index,
                proto=RTPROT_MIP6_RO,
                metrics={"mtu": mtu, "lock": 1 << _RTAX_MTU},
                **extra,
            )

    def used(self) -> list[IPv6Address]:
        """Home addresses whose bindings carried packets since the last call."""
        if self.ro is None:
            return []
        found = []
        seen = {}
        for binding in self.ro.bindings("cn"):
            key = (binding.cn, binding.home)
            seen[key] = binding.packets
            if binding.packets > self._packets.get(key, 0):
                found.append(binding.home)
        self._packets = seen
        return found

    def bindings(self) -> dict[tuple[IPv6Address, IPv6Address], ro_bpf.RoBinding]:
        """(correspondent, home address) -> map entry."""
        if self.ro is None:
            return {}
        return {(b.cn, b.home): b for b in self.ro.bindings("cn")}

    def counters(self) -> dict[str, int]:
        if self.ro is None:
            return {}
        return self.ro.counters()


def _flush_headroom(ipr: IPRoute) -> None:
    for route in ipr.get_routes(family=10, proto=RTPROT_MIP6_RO):
        with contextlib.suppress(NetlinkError):
            ipr.route(
                "del",
                dst=f"{route.get_attr('RTA_DST')}/{route['dst_len']}",
                proto=RTPROT_MIP6_RO,
                table=route.get_attr("RTA_TABLE"),
            )
