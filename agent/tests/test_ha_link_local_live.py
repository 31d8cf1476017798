"""The L flag against a running home agent (RFC 6275 10.3.1, 10.4.1): DAD for the mobile
node's link-local address, its defence on the home link while the binding lives, and its
release. The BUs are built by hand (tests/hostile.py), the answers read from the kernel."""

from __future__ import annotations

import json
import os
import socket
from ipaddress import IPv6Address
from pathlib import Path

import pytest
from agents import wait_until
from test_hostile import ACCEPTED, DAD_FAILED, lab

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

BU_A, BU_H, BU_L = 0x8000, 0x4000, 0x2000
L_HOA = IPv6Address("2001:db8:1::201")
L_LL = IPv6Address("fe80::201")  # fe80::/64 + the interface identifier of L_HOA
TAKEN_HOA = IPv6Address("2001:db8:1::202")
TAKEN_LL = IPv6Address("fe80::202")


def proxied(topo, node: str = "ha") -> set[str]:
    entries = json.loads(topo.ip(node, "-j", "-6", "neigh", "show", "proxy") or "[]")
    return {e["dst"] for e in entries}


def resolve_from(topo, node: str, address: IPv6Address) -> str | None:
    """Make ``node`` resolve ``address`` on its eth0; the MAC it learnt, if any."""
    with topo.inside(node):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        index = socket.if_nametoindex("eth0")
    with sock:
        sock.sendto(b"x", (str(address), 9, 0, index))

    def learnt() -> str | None:
        found = json.loads(topo.ip(node, "-j", "-6", "neigh", "show", "dev", "eth0") or "[]")
        entry = {n["dst"]: n for n in found}.get(str(address), {})
        return None if "INCOMPLETE" in entry.get("state", []) else entry.get("lladdr")

    return wait_until(learnt, 5, what=f"{node} resolves {address}")


def test_l_flag_link_local_is_probed_defended_and_released(tmp_path: Path) -> None:
    with lab(tmp_path, dad=True) as the:
        topo = the.topo
        mn = the.new_canary(home=L_HOA)
        first = mn.register(deadline=15, flags=BU_A | BU_H | BU_L)
        assert first.status == ACCEPTED, the.ha.log.read_text()[-2000:]
        assert {str(L_HOA), str(L_LL)} <= proxied(topo)
        # A node on the home link resolves the link-local address to the home agent.
        ha_mac = json.loads(topo.ip("ha", "-j", "link", "show", "eth0"))[0]["address"]
        assert resolve_from(topo, "atkon", L_LL) == ha_mac
        # The saved binding keeps the flag; a restarted agent keeps defending the address.
        saved = the.bindings()[str(L_HOA)]
        assert saved["flags"] & BU_L
        the.ha.stop()
        the.ha.start()
        assert {str(L_HOA), str(L_LL)} <= proxied(topo)
        assert "2 adopted, 0 added" in the.ha.log.read_text()  # the canary and mn

        # A link-local address in use on the home link fails DAD: 134, nothing installed.
        topo.ip("atkon", "addr", "add", f"{TAKEN_LL}/64", "dev", "eth0", "nodad")
        taken = the.new_canary(home=TAKEN_HOA).request(timeout=5, flags=BU_A | BU_H | BU_L)
        assert taken.status == DAD_FAILED, the.ha.log.read_text()[-2000:]
        assert str(TAKEN_HOA) not in the.bindings()
        assert str(TAKEN_LL) not in proxied(topo)
        # Without L the same home address registers (its link-local is not the HA's to check).
        clear = the.new_canary(home=TAKEN_HOA).register(deadline=10)
        assert clear.status == ACCEPTED
        assert str(TAKEN_LL) not in proxied(topo)

        # Deregistration stops the defence of the link-local address with the home address.
        gone = mn.request(timeout=5, lifetime=0, flags=BU_A | BU_H | BU_L)
        assert gone.status == ACCEPTED
        wait_until(lambda: str(L_LL) not in proxied(topo), 5, what="link-local proxy removed")
        assert str(L_HOA) not in proxied(topo)
        assert the.alive()
