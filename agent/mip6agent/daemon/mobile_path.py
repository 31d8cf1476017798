"""The mobile node's route-optimisation data path: the ``mn`` TC eBPF programs of
:mod:`mip6agent.io.dataplane.ro_bpf`, plus the routes that keep a route-optimised
correspondent's traffic off the reverse tunnel (RFC 6275 11.3.1).

Every method blocks (netlink, bpf(2), bpftool): the agent calls them on its kernel thread.

For a binding (home address H at care-of address C with correspondent N), :meth:`install`
adds, all with protocol :data:`RTPROT_MIP6_RO`:

- rule ``from H to N ipproto mobility-header goto <mn_pref>``: the Mobility Header (HoTI,
  and a deregistration's BU from H) still takes the reverse tunnel, as 11.6.1 asks;
- rule ``from H to N lookup`` :data:`RO_TABLE`, just before the home address's tunnel rule;
- in that table, ``N/128`` by the foreign link's default router on C's interface, with
  ``mtu lock`` 24 octets below the interface's MTU (the Home Address option the egress
  program adds: TCP sizes its segments to fit);
- the map entry (N, H) -> C, and the ``mn`` programs on C's interface: egress rewrites
  ``src H`` to ``src C`` with a Home Address option, ingress takes a Type 2 Routing Header
  from N to C that names H back to ``dst H``.

:meth:`remove` undoes one binding; :meth:`stop` removes everything, programs included.

When the eBPF programs cannot run and the kernel has ``CONFIG_IPV6_MIP6`` (the probe's
``mip6``), the kernel's XFRM ro states of :mod:`mip6agent.io.dataplane.ro_xfrm` carry the
binding instead (role ``mn``: a ``hao`` state out, a ``route2`` state in, the home address
flagged ``IFA_F_HOMEADDRESS``). No rules, table-190 route or programs then: the XFRM
bundle is routed from the care-of address and takes the option's 24 octets off the path
MTU itself. ``backend`` names the one running.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from ipaddress import IPv6Address

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..io.dataplane import ro_bpf, ro_xfrm
from ..io.dataplane.ro_bpf import RoBpf, RoBpfError
from ..io.dataplane.ro_xfrm import RoXfrm, RoXfrmError

log = logging.getLogger("mip6agent")
RTPROT_MIP6_RO = 87
RO_TABLE = 190  # the direct routes to route-optimised correspondents
IPPROTO_MH = 135
BACKEND = "tc-ebpf"
BACKEND_XFRM = "xfrm-ro"
_RTAX_MTU = 2


class MobilePathError(Exception):
    """The data path could not be started or changed; the message says why."""


class MobilePath:
    def __init__(self, tunnel_pref: int, instance: str = "mn") -> None:
        self.tunnel_pref = tunnel_pref  # the home addresses' reverse-tunnel rules
        self.instance = instance
        self.ro: RoBpf | None = None
        self.xfrm: RoXfrm | None = None  # the kernel MIP6 backend, when eBPF cannot run
        self.backend: str | None = None
        self.reason: str | None = None
        # (name, index): an interface that comes back under the same name (a move that
        # takes eth0 away and brings a new one) is a new interface, without our filters.
        self.attached: set[tuple[str, int]] = set()

    @property
    def active(self) -> bool:
        return self.ro is not None or self.xfrm is not None

    def start(self) -> bool:
        """eBPF if it starts, else XFRM ro if the kernel has MIP6; False (with ``reason``)."""
        if self.active:
            return True
        if self._start_bpf():
            self.backend = BACKEND
            return True
        bpf_reason = self.reason
        try:
            ok, reason = ro_xfrm.available()
        except (OSError, NetlinkError) as exc:
            ok, reason = False, f"probe failed: {exc}"
        if ok:
            xfrm = RoXfrm()
            try:
                xfrm.close()  # what a previous run left
            except (RoXfrmError, OSError) as exc:
                ok, reason = False, f"failed to start: {exc}"
            else:
                self.xfrm, self.backend, self.reason = xfrm, BACKEND_XFRM, None
                log.info("route optimisation with kernel MIP6 XFRM ro states: %s", bpf_reason)
                return True
        self.reason = f"{bpf_reason}; XFRM ro data path unavailable: {reason}"
        return False

    def _start_bpf(self) -> bool:
        ok, reason = ro_bpf.available()
        if not ok:
            self.reason = f"TC eBPF data path unavailable: {reason}"
            return False
        ro = RoBpf(self.instance)
        try:
            ro.load()
            for stale in ro.bindings("mn"):
                ro.remove_binding("mn", stale.cn, stale.home)
            with IPRoute() as ipr:
                _flush(ipr)
        except (RoBpfError, OSError, NetlinkError) as exc:
            with contextlib.suppress(RoBpfError, OSError, NetlinkError):
                ro.detach()
            self.reason = f"TC eBPF data path failed to start: {exc}"
            return False
        self.ro, self.reason = ro, None
        return True

    def stop(self) -> None:
        ro, self.ro = self.ro, None
        xfrm, self.xfrm = self.xfrm, None
        self.backend = None
        self.attached.clear()
        if xfrm is not None:
            xfrm.close()
            return
        with IPRoute() as ipr:
            _flush(ipr)
        if ro is not None:
            ro.detach()

    def install(
        self, home_address: IPv6Address, care_of_address: IPv6Address, correspondent: IPv6Address
    ) -> None:
        if self.xfrm is not None:
            try:
                self.xfrm.add_binding("mn", correspondent, home_address, care_of_address)
            except (RoXfrmError, OSError) as exc:
                raise MobilePathError(str(exc)) from exc
            return
        ro = self.ro
        if ro is None:
            raise MobilePathError(self.reason or "the route-optimisation data path is off")
        with IPRoute() as ipr:
            index, gateway, mtu = _path_of(ipr, care_of_address, correspondent)
            ifname = ipr.get_links(index)[0].get_attr("IFLA_IFNAME")
            if (ifname, index) not in self.attached:
                ro.attach(ifname, "mn")
                self.attached.add((ifname, index))
                log.info("route optimisation: mobile node programs attached to %s", ifname)
            ro.add_binding("mn", correspondent, home_address, care_of_address)
            route = {"gateway": gateway} if gateway else {}
            ipr.route(
                "replace",
                dst=f"{correspondent}/128",
                oif=index,
                table=RO_TABLE,
                proto=RTPROT_MIP6_RO,
                metrics={"mtu": mtu - ro_bpf.RO_OVERHEAD, "lock": 1 << _RTAX_MTU},
                **route,
            )
            for rule in _rules(home_address, correspondent, self.tunnel_pref):
                with contextlib.suppress(NetlinkError):  # EEXIST: kept from before
                    ipr.rule("add", **rule)

    def reinstall(self) -> int:
        """Every binding of the maps installed again (programs on the interface the route
        now uses, routes): after an interface was replaced. XFRM states are not tied to
        an interface. The count of bindings."""
        if self.ro is None:
            return 0
        found = self.ro.bindings("mn")
        for binding in found:
            self.install(binding.home, binding.coa, binding.cn)
        return len(found)

    def remove(self, home_address: IPv6Address, correspondent: IPv6Address) -> None:
        if self.xfrm is not None:
            self.xfrm.remove_binding("mn", correspondent, home_address)
            return
        with IPRoute() as ipr:
            for rule in _rules(home_address, correspondent, self.tunnel_pref):
                with contextlib.suppress(NetlinkError):
                    ipr.rule("del", **rule)
            if self.ro is not None:
                self.ro.remove_binding("mn", correspondent, home_address)
                others = [b for b in self.ro.bindings("mn") if b.cn == correspondent]
            else:
                others = []
            if not others:
                with contextlib.suppress(NetlinkError):
                    ipr.route(
                        "del", dst=f"{correspondent}/128", table=RO_TABLE, proto=RTPROT_MIP6_RO
                    )

    def bindings(self) -> dict[tuple[IPv6Address, IPv6Address], ro_bpf.RoBinding]:
        """(home address, correspondent) -> map entry (XFRM: hao state)."""
        if self.xfrm is not None:
            return {(b.home, b.cn): b for b in self.xfrm.bindings("mn")}
        if self.ro is None:
            return {}
        return {(b.home, b.cn): b for b in self.ro.bindings("mn")}

    def counters(self) -> dict[str, int]:
        if self.xfrm is not None:
            return self.xfrm.counters("mn")
        return self.ro.counters() if self.ro is not None else {}


def _path_of(
    ipr: IPRoute, care_of: IPv6Address, correspondent: IPv6Address
) -> tuple[int, str | None, int]:
    """(interface index, gateway, MTU) of the direct route from ``care_of`` to the peer."""
    try:
        routes = ipr.route("get", dst=str(correspondent), src=str(care_of))
    except NetlinkError as exc:
        raise MobilePathError(f"no route to {correspondent} from {care_of}: {exc}") from exc
    if not routes or routes[0].get_attr("RTA_OIF") is None:
        raise MobilePathError(f"no route to {correspondent} from {care_of}")
    route = routes[0]
    index = route.get_attr("RTA_OIF")
    links = ipr.get_links(index)
    mtu = links[0].get_attr("IFLA_MTU") if links else 1500
    return index, route.get_attr("RTA_GATEWAY"), mtu


def _rules(home: IPv6Address, correspondent: IPv6Address, tunnel_pref: int) -> list[dict]:
    common = {
        "family": socket.AF_INET6,
        "src": str(home),
        "src_len": 128,
        "dst": str(correspondent),
        "dst_len": 128,
        "proto": RTPROT_MIP6_RO,
    }
    return [
        {**common, "priority": tunnel_pref - 2, "ip_proto": IPPROTO_MH,
         "action": "FR_ACT_GOTO", "goto": tunnel_pref},
        {**common, "priority": tunnel_pref - 1, "table": RO_TABLE},
    ]  # fmt: skip


def _flush(ipr: IPRoute) -> None:
    for rule in ipr.get_rules(family=socket.AF_INET6):
        if rule.get_attr("FRA_PROTOCOL") == RTPROT_MIP6_RO:
            with contextlib.suppress(NetlinkError):
                ipr.rule(
                    "del",
                    family=socket.AF_INET6,
                    priority=rule.get_attr("FRA_PRIORITY"),
                    src=rule.get_attr("FRA_SRC"),
                    src_len=rule["src_len"],
                    dst=rule.get_attr("FRA_DST"),
                    dst_len=rule["dst_len"],
                )
    for route in ipr.get_routes(family=socket.AF_INET6, table=RO_TABLE):
        with contextlib.suppress(NetlinkError):
            ipr.route(
                "del",
                dst=f"{route.get_attr('RTA_DST')}/{route['dst_len']}",
                table=RO_TABLE,
            )
