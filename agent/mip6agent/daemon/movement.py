"""Netlink link, carrier and address events for the mobile node's movement detection.

A thread blocks on an rtnetlink socket and hands each change, as the interface's whole
current state, to the asyncio loop. Reading whole state (not deltas) keeps the core
simple and makes a missed event harmless.
"""

from __future__ import annotations

import asyncio
import select
import threading
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv6Interface

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import RTMGRP_IPV6_IFADDR, RTMGRP_LINK

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
IFA_F_TENTATIVE = 0x40
IFA_F_OPTIMISTIC = 0x04
IFA_F_DADFAILED = 0x08
RT_SCOPE_UNIVERSE = 0


@dataclass(frozen=True, slots=True)
class InterfaceState:
    name: str
    up: bool
    addresses: tuple[IPv6Interface, ...]
    carrier_changes: int = 0


def usable(flags: int) -> bool:
    """Tentative addresses are not usable, unless optimistic DAD marked them so (RFC 4429)."""
    if flags & IFA_F_DADFAILED:
        return False
    return not flags & IFA_F_TENTATIVE or bool(flags & IFA_F_OPTIMISTIC)


def read_state(ipr: IPRoute, names: tuple[str, ...]) -> list[InterfaceState]:
    out = []
    for name in names:
        links = ipr.link_lookup(ifname=name)
        if not links:
            out.append(InterfaceState(name, False, (), 0))
            continue
        index = links[0]
        link = ipr.get_links(index)[0]
        flags = link["flags"]
        up = bool(flags & IFF_UP) and bool(flags & IFF_LOWER_UP)
        addresses = []
        for msg in ipr.get_addr(family=10, index=index):
            if msg["scope"] != RT_SCOPE_UNIVERSE:
                continue
            flags = msg.get_attr("IFA_FLAGS") or msg["flags"]
            if usable(flags):
                addresses.append(IPv6Interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}"))
        changes = link.get_attr("IFLA_CARRIER_CHANGES") or 0
        out.append(InterfaceState(name, up, tuple(addresses), changes))
    return out


class MovementWatcher:
    def __init__(
        self,
        names: tuple[str, ...],
        loop: asyncio.AbstractEventLoop,
        callback: Callable[[list[InterfaceState]], None],
    ) -> None:
        self.names = names
        self.loop = loop
        self.callback = callback
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mip6-netlink", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        # pyroute2 0.9's IPRoute refuses to be made or used inside a running asyncio loop,
        # so the sockets live on this thread, and every netlink call happens here.
        events, query = IPRoute(), IPRoute()
        events.bind(groups=RTMGRP_LINK | RTMGRP_IPV6_IFADDR)
        try:
            self._watch(events, query)
        finally:
            events.close()
            query.close()

    def _watch(self, events: IPRoute, query: IPRoute) -> None:
        self.loop.call_soon_threadsafe(self.callback, read_state(query, self.names))
        fd = events.fileno()
        while not self._stop.is_set():
            # Poll with a timeout so that close() is noticed within half a second.
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                messages = events.get()
            except OSError:
                return
            if self._stop.is_set():
                return
            if messages:
                state = read_state(query, self.names)
                self.loop.call_soon_threadsafe(self.callback, state)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
