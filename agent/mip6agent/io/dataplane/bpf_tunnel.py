"""RFC 2473 IPv6-in-IPv6 from eBPF, for kernels with neither seg6 lightweight tunnels nor
ip6tnl (CONFIG_LWTUNNEL_BPF and cls_bpf are enough; ``bpf/tunnel.bpf.c``).

The seg6 backend's logic is kept whole: the same routes, rules and proxy entries, the
same reconciliation. Only the two kernel mechanisms seg6 lacks here are replaced, below
the backend, by :class:`_BpfNetlink`:

- a tunnel route (``encap seg6 ... segs <peer>``) becomes ``encap bpf xmit`` running the
  ``encap`` program, whose outer destination is the route's peer, written to a map
  keyed by the home address (the inner destination on a home agent, the inner source on
  a mobile node); the route's program name, ``mip6:<program id>:<peer>``, carries the
  peer back in a dump. The outer source is the one entry of the ``tunsrc`` map (seg6's
  per-namespace tunnel source);
- a decapsulation route (``seg6local End.DX6/End.DT6`` in ``decap_table``) becomes an
  entry of the ``decap`` map read by the ``decap_ingress`` clsact program on every
  interface: IPv6-in-IPv6 to ``own`` from ``peer`` (or from anyone) loses its outer
  header and goes on as the inner packet. Dumps list the entries as the routes they
  stand for, so that reconciliation sees what seg6 would.

A route of an older program (another agent run whose pins are gone) reads back with a
peer but not as ours, so reconciliation rewrites it and refills the maps.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from dataclasses import replace
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from . import bpf_objects
from .base import DataPlaneConfig, DataPlaneError
from .netlink import (
    RT_TABLE_LOCAL,
    RT_TABLE_MAIN,
    SEG6_LOCAL_ACTION_END_DX6,
    BpfEncap,
    Netlink,
    Route,
    Seg6Encap,
    Seg6LocalEncap,
    host,
)
from .seg6 import Seg6DataPlane

SOURCE = Path(__file__).with_name("bpf") / "tunnel.bpf.c"
PROGRAMS = ("encap", "decap_ingress")
MAPS = ("by_dst", "by_src", "tunsrc", "decap", "counters")
COUNTERS = ("encapsulated", "no_peer", "push_failed", "decapsulated", "decap_failed")
TUNNEL_OVERHEAD = 40  # the outer IPv6 header
_FILTER_PRIO = 0x6D35  # before the route-optimisation programs
_FILTER_NAME = "mip6-tunnel-decap"
_NAME_PREFIX = "mip6:"
_DECAP_KEY = struct.Struct("16s16s")
_DECAP_VALUE = struct.Struct("=QIIII")  # packets, ifindex, action, metric, table
_UNSPECIFIED = IPv6Address("::")


class TunnelBpfError(DataPlaneError):
    def __init__(self, reason: str) -> None:
        super().__init__("eBPF tunnel", "", reason)


def pin_root() -> Path:
    """Where the pins go: ``MIP6AGENT_BPF_PINS`` (a bpffs mount the caller made, e.g. one
    that ``ip netns exec`` keeps visible, as /sys is not), else /sys/fs/bpf/mip6agent."""
    env = os.environ.get("MIP6AGENT_BPF_PINS")
    return Path(env) if env else bpf_objects.PIN_ROOT


_SO_NETNS_COOKIE = 71  # Linux 5.14+: a 64-bit id never reused, unlike the netns inode


def _netns_id() -> str:
    """This network namespace, for the pin directory: its cookie, else its inode (which a
    new namespace may get again once this one is gone)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            cookie = sock.getsockopt(socket.SOL_SOCKET, _SO_NETNS_COOKIE, 8)
        return f"c{struct.unpack('=Q', cookie)[0]}"
    except OSError:
        return f"i{os.stat('/proc/thread-self/ns/net').st_ino}"


def build(cache_dir: Path | None = None) -> Path:
    """The compiled object, from the cache when the source and flags are unchanged."""
    try:
        return bpf_objects.compile_object(SOURCE, "tunnel", [], cache_dir)
    except bpf_objects.BpfError as exc:
        raise TunnelBpfError(str(exc)) from None


class TunnelBpf:
    """The programs and maps of one network namespace, pinned under
    ``/sys/fs/bpf/mip6agent/tunnel-c<netns cookie>``."""

    def __init__(self, root: Path | None = None, cache_dir: Path | None = None) -> None:
        self.pin_dir = (root or pin_root()) / f"tunnel-{_netns_id()}"
        self.cache_dir = cache_dir
        self._objects = bpf_objects.PinnedObjects(self.pin_dir, PROGRAMS, MAPS, TunnelBpfError)
        self.prog_id = 0

    @property
    def progs(self) -> dict[str, int]:
        """Program name -> file descriptor, empty until loaded."""
        return self._objects.progs

    def load(self) -> bool:
        """Load the programs and maps, or reopen the pinned ones; True if loaded anew."""
        if self._objects.loaded:
            return False
        build_id = "tunnel-" + bpf_objects.digest(SOURCE, [])
        fresh = self._objects.load(lambda: build(self.cache_dir), build_id)
        self.prog_id = self._objects.prog_id("encap")
        return fresh

    def close(self) -> None:
        self._objects.close()

    def unpin(self) -> None:
        self._objects.unpin()

    # maps

    def _update(self, name: str, key: bytes, value: bytes) -> None:
        self.load()  # after cleanup(), a new binding loads the programs again
        self._objects.update(name, key, value)

    def _delete(self, name: str, key: bytes) -> bool:
        return self._objects.loaded and self._objects.delete(name, key)

    def _lookup(self, name: str, key: bytes, size: int) -> bytes | None:
        return self._objects.lookup(name, key, size) if self._objects.loaded else None

    def set_peer(self, map_name: str, home: IPv6Address, peer: IPv6Address) -> None:
        self._update(map_name, home.packed, peer.packed)

    def drop_peer(self, map_name: str, home: IPv6Address) -> None:
        self._delete(map_name, home.packed)

    def tunsrc(self) -> IPv6Address:
        raw = self._lookup("tunsrc", struct.pack("=I", 0), 16)
        return IPv6Address(raw[:16]) if raw else _UNSPECIFIED

    def set_tunsrc(self, address: IPv6Address) -> None:
        self._update("tunsrc", struct.pack("=I", 0), address.packed)

    def put_decap(self, own: IPv6Address, peer: IPv6Address | None, route: Route) -> None:
        key = _DECAP_KEY.pack(own.packed, (peer or _UNSPECIFIED).packed)
        old = self._lookup("decap", key, _DECAP_VALUE.size)
        packets = _DECAP_VALUE.unpack(old)[0] if old else 0
        assert isinstance(route.encap, Seg6LocalEncap)
        table = route.encap.table or 0
        value = _DECAP_VALUE.pack(packets, route.oif, route.encap.action, route.metric, table)
        self._update("decap", key, value)

    def drop_decap(self, own: IPv6Address, peer: IPv6Address | None) -> bool:
        return self._delete("decap", _DECAP_KEY.pack(own.packed, (peer or _UNSPECIFIED).packed))

    def decaps(self) -> list[tuple[IPv6Address, IPv6Address | None, tuple[int, ...]]]:
        """(own, peer or None for any, (packets, ifindex, action, metric, table))."""
        if not self._objects.loaded:
            return []
        found = []
        for key, raw in self._objects.items("decap", _DECAP_KEY.size, _DECAP_VALUE.size):
            own, peer = (IPv6Address(k) for k in _DECAP_KEY.unpack(key))
            found.append((own, None if peer == _UNSPECIFIED else peer, _DECAP_VALUE.unpack(raw)))
        return found

    def counters(self) -> dict[str, int]:
        if not self._objects.loaded:
            return dict.fromkeys(COUNTERS, 0)
        return dict(zip(COUNTERS, self._objects.per_cpu_sums("counters", len(COUNTERS)),
                        strict=True))  # fmt: skip

    # the decapsulation filter

    def attach(self, index: int) -> None:
        self.load()
        with IPRoute() as ipr:
            try:
                ipr.tc("add", "clsact", index)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise TunnelBpfError(f"clsact on interface {index}: {exc}") from None
            try:
                ipr.tc("replace-filter", "bpf", index, 1, fd=self.progs["decap_ingress"],
                       name=_FILTER_NAME, parent=0xFFFFFFF2, prio=_FILTER_PRIO,
                       protocol=0x86DD, direct_action=True)  # fmt: skip
            except NetlinkError as exc:
                raise TunnelBpfError(f"decapsulation filter on interface {index}: {exc}") from None

    def detach_all(self) -> None:
        with IPRoute() as ipr:
            for link in ipr.get_links():
                with contextlib.suppress(NetlinkError):
                    ipr.tc("del-filter", "bpf", link["index"], 1, parent=0xFFFFFFF2,
                           prio=_FILTER_PRIO, protocol=0x86DD)  # fmt: skip


class _BpfNetlink:
    """The backend's Netlink, with seg6 tunnel and decapsulation routes carried by eBPF."""

    def __init__(self, nl: Netlink, bpf: TunnelBpf, config: DataPlaneConfig) -> None:
        self._nl, self._bpf, self._config = nl, bpf, config
        self._attached: set[int] = set()
        self.table_home: dict[int, IPv6Address] = {}  # mobile node: table -> home address

    def __getattr__(self, name: str) -> Any:
        return getattr(self._nl, name)

    # routes

    def _is_decap(self, route: Route) -> bool:
        return route.table == self._config.decap_table and isinstance(route.encap, Seg6LocalEncap)

    def _home_of(self, route: Route) -> tuple[str, IPv6Address] | None:
        """The map and key a tunnel route's peer goes in."""
        if route.table == RT_TABLE_MAIN and route.dst.prefixlen == 128:
            return "by_dst", route.dst.network_address
        if route.table in self.table_home:
            return "by_src", self.table_home[route.table]
        for rule in self._nl.rules():
            if rule.table == route.table and rule.src is not None and rule.src.prefixlen == 128:
                return "by_src", rule.src.network_address
        return None

    def routes(self, proto: int | None = None) -> list[Route]:
        found = [self._read(r) for r in self._nl.routes(proto)]
        cfg = self._config
        if proto is None or proto == cfg.proto:
            for own, peer, (_packets, ifindex, action, metric, table) in self._bpf.decaps():
                if action == SEG6_LOCAL_ACTION_END_DX6:
                    encap = Seg6LocalEncap(action, nh6=_UNSPECIFIED)
                else:
                    encap = Seg6LocalEncap(action, table=table or RT_TABLE_LOCAL)
                src = host(peer) if peer is not None else None
                found.append(Route(host(own), cfg.decap_table, ifindex, cfg.proto, src, metric,
                                   encap))  # fmt: skip
        return found

    def _read(self, route: Route) -> Route:
        if not isinstance(route.encap, BpfEncap) or not route.encap.name.startswith(_NAME_PREFIX):
            return route
        prog, _, peer = route.encap.name[len(_NAME_PREFIX) :].partition(":")
        try:
            address = IPv6Address(peer)
        except ValueError:
            return route
        # Another program's route: same peer, but not equal to what the backend builds.
        mode = Seg6Encap((address,)).mode if prog == str(self._bpf.prog_id) else -1
        return replace(route, encap=Seg6Encap((address,), mode))

    def replace_route(self, route: Route, what: str) -> None:
        if self._is_decap(route):
            self._put_decap(route)
        elif isinstance(route.encap, Seg6Encap):
            self._put_tunnel(route, what, create=False)
        else:
            self._nl.replace_route(route, what)

    def create_route(self, route: Route, what: str) -> None:
        if isinstance(route.encap, Seg6Encap) and not self._is_decap(route):
            self._put_tunnel(route, what, create=True)
        else:
            self.replace_route(route, what)

    def delete_route(self, route: Route, what: str) -> bool:
        if self._is_decap(route):
            own = route.dst.network_address
            return self._bpf.drop_decap(own, route.src.network_address if route.src else None)
        if isinstance(route.encap, Seg6Encap):
            target = self._home_of(route)
            gone = self._nl.delete_route(replace(route, encap=None), what)
            if target is not None:
                self._bpf.drop_peer(*target)
            return gone
        if isinstance(route.encap, BpfEncap):  # not ours (another name): by its key
            return self._nl.delete_route(replace(route, encap=None), what)
        return self._nl.delete_route(route, what)

    def _put_tunnel(self, route: Route, what: str, create: bool) -> None:
        assert isinstance(route.encap, Seg6Encap)
        self._bpf.load()
        target = self._home_of(route)
        if target is None:
            raise DataPlaneError("install", what, "no home address uses this table")
        peer = route.encap.segments[0]
        self._bpf.set_peer(*target, peer)
        name = f"{_NAME_PREFIX}{self._bpf.prog_id}:{peer}"
        real = replace(route, encap=BpfEncap(name, self._bpf.progs["encap"], TUNNEL_OVERHEAD))
        if create:
            self._nl.create_route(real, what)
        else:
            self._nl.replace_route(real, what)

    def _put_decap(self, route: Route) -> None:
        if route.oif not in self._attached:
            for name, index in self._nl.link_indexes().items():
                if name != "lo" and index not in self._attached:
                    self._bpf.attach(index)
                    self._attached.add(index)
        self._bpf.put_decap(
            route.dst.network_address, route.src.network_address if route.src else None, route
        )

    # the tunnel source

    def tunsrc(self) -> IPv6Address | None:
        return self._bpf.tunsrc()

    def set_tunsrc(self, address: IPv6Address) -> bool:
        self._bpf.set_tunsrc(address)
        return True

    @property
    def tunsrc_unavailable(self) -> str | None:
        return None


class BpfTunnelDataPlane(Seg6DataPlane):
    """The seg6 backend's objects, with eBPF doing the encapsulation (see module doc)."""

    name = "bpf"

    def __init__(self, config: DataPlaneConfig | None = None, netlink: Netlink | None = None):
        super().__init__(config, netlink)
        self._bpf = TunnelBpf()
        self._bpf.load()
        self._real_nl = self._nl
        self._nl = _BpfNetlink(self._real_nl, self._bpf, self.config)  # type: ignore[assignment]

    def counters(self) -> dict[str, int]:
        return self._bpf.counters()

    def _mn_install(
        self, hoa: IPv6Address, coa: IPv6Address, ha_addr: IPv6Address, index: int, table: int
    ) -> None:
        # The reverse route's peer is keyed by the home address, which the table's rule
        # names; the rule comes after the route, so write the peer first.
        assert isinstance(self._nl, _BpfNetlink)
        self._nl.table_home[table] = hoa
        super()._mn_install(hoa, coa, ha_addr, index, table)

    def cleanup(self) -> None:
        super().cleanup()
        self._bpf.detach_all()
        self._bpf.close()
        self._bpf.unpin()
        self._nl._attached.clear()  # type: ignore[union-attr]

    def close(self) -> None:
        self._bpf.close()
        self._real_nl.close()
