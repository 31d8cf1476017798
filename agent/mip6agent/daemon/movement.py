"""Netlink link, carrier and address events for the mobile node's movement detection.

A thread blocks on an rtnetlink socket and hands each change, as the interface's whole
current state, to the asyncio loop. Reading whole state (not deltas) keeps the core
simple and makes a missed event harmless.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import select
import threading
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv6Interface

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTMGRP_IPV6_IFADDR, RTMGRP_LINK

log = logging.getLogger("mip6agent")
RETRY_DELAY = 0.2  # seconds before reading the state again after a failed read

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
    index: int = 0  # a new index under the same name: the interface was replaced


def usable(flags: int) -> bool:
    """Tentative addresses are not usable, unless optimistic DAD marked them so (RFC 4429)."""
    if flags & IFA_F_DADFAILED:
        return False
    return not flags & IFA_F_TENTATIVE or bool(flags & IFA_F_OPTIMISTIC)


def read_state(ipr: IPRoute, names: tuple[str, ...]) -> list[InterfaceState]:
    out = []
    for name in names:
        try:
            out.append(_read_one(ipr, name))
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise
            # Gone between the lookup and the read (a port re-created): down for now; its
            # return is another link event.
            out.append(InterfaceState(name, False, (), 0))
    return out


def _read_one(ipr: IPRoute, name: str) -> InterfaceState:
    links = ipr.link_lookup(ifname=name)
    if not links:
        return InterfaceState(name, False, (), 0)
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
    return InterfaceState(name, up, tuple(addresses), changes, index)


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
        fd = events.fileno()
        stale = True  # read the state now, and again after any read that failed
        while not self._stop.is_set():
            if stale:
                stale = not self._report(query)
            # Poll with a timeout so that close() is noticed within half a second.
            ready, _, _ = select.select([fd], [], [], RETRY_DELAY if stale else 0.5)
            if not ready:
                continue
            try:
                messages = events.get()
            except OSError as exc:
                log.error("link events no longer readable, movement detection stops: %s", exc)
                return
            if self._stop.is_set():
                return
            if messages:
                stale = True

    def _report(self, query: IPRoute) -> bool:
        """Hand the current state to the loop; False when it could not be read (the
        thread must outlive any netlink error: without it the node stops moving)."""
        try:
            state = read_state(query, self.names)
        except Exception as exc:  # logged, read again shortly
            log.warning("reading the interfaces failed, reading again: %s", exc)
            return False
        self.loop.call_soon_threadsafe(self.callback, state)
        return True

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
