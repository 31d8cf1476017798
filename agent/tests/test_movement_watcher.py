"""The mobile node's link watcher outlives an interface that vanishes under it (a port
re-created, as a Podman network reconnect does): found in Molecule's handover scenario,
where the watcher thread died on ENODEV and the node never registered again."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import time
from ipaddress import IPv6Interface
from typing import Any

import pytest
from mip6agent.daemon.movement import InterfaceState, MovementWatcher, read_state
from netns import inside
from pyroute2.netlink.exceptions import NetlinkError


class VanishingLinks:
    """An IPRoute stand-in whose interface disappears between lookup and read."""

    def link_lookup(self, ifname: str) -> list[int]:
        return [7]

    def get_links(self, index: int) -> Any:
        raise NetlinkError(errno.ENODEV, "No such device")


def test_an_interface_gone_between_lookup_and_read_reads_as_down() -> None:
    assert read_state(VanishingLinks(), ("eth0",)) == [InterfaceState("eth0", False, (), 0)]


def test_other_netlink_errors_are_not_taken_for_a_missing_interface() -> None:
    class Refusing(VanishingLinks):
        def get_links(self, index: int) -> Any:
            raise NetlinkError(errno.EPERM, "Operation not permitted")

    with pytest.raises(NetlinkError):
        read_state(Refusing(), ("eth0",))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
def test_the_watcher_follows_an_interface_deleted_and_made_again() -> None:
    name = f"mip6-mw-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        # The watcher thread and the ip commands inherit this thread's namespace.
        with inside(name):
            states: list[list[InterfaceState]] = []

            async def scenario() -> None:
                watcher = MovementWatcher(("wl0",), asyncio.get_running_loop(), states.append)
                watcher.start()
                try:
                    for round_ in range(5):
                        address = f"2001:db8:7::{round_ + 1}/64"
                        for argv in (
                            ["link", "add", "wl0", "type", "veth", "peer", "name", "wl0p"],
                            ["link", "set", "wl0p", "up"],
                            ["link", "set", "wl0", "up"],
                            ["addr", "add", address, "dev", "wl0", "nodad"],
                        ):
                            subprocess.run(["ip", *argv], check=True)
                        want = IPv6Interface(address)
                        end = time.monotonic() + 5
                        while time.monotonic() < end:
                            if states and any(s.up and want in s.addresses for s in states[-1]):
                                break
                            await asyncio.sleep(0.02)
                        else:
                            raise AssertionError(f"round {round_}: {states[-3:]}")
                        subprocess.run(["ip", "link", "del", "wl0"], check=True)
                    assert watcher._thread.is_alive(), "the watcher thread ended"
                finally:
                    await asyncio.get_running_loop().run_in_executor(None, watcher.close)

            asyncio.run(scenario())
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
