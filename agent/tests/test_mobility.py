"""The walks users take with a mobile node (RFC 6275 11.5), on namespaces with real radvd.

Every move kind: with a carrier change (the port flaps), and without one (the port moves
between bridges with its carrier up, as Wi-Fi roaming or a VLAN change look to the host).
Every transition: foreign to foreign, foreign to home, home to foreign again.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from agents import AgentProcess, wait_until
from test_agent_integration import HOA, binding_coa, ha_config, mn_config
from topology import Topology

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


def _registered_at(ha: AgentProcess, topo: Topology, link: str) -> bool:
    if link == "home":
        return binding_coa(ha) is None
    return binding_coa(ha) == str(topo.coa)


@pytest.mark.parametrize("flap", [True, False], ids=["carrier", "no-carrier-change"])
def test_leave_home_again_and_move_between_foreign_links(tmp_path: Path, flap: bool) -> None:
    with (
        Topology(mn_link="foreign1", addressing="slaac", radvd=True, mn_dad=True) as topo,
        AgentProcess(topo.ns["ha"], tmp_path / "ha", ha_config(tmp_path / "ha", dad=False)) as ha,
        AgentProcess(topo.ns["mn"], tmp_path / "mn", mn_config(tmp_path / "mn")) as mn,
    ):
        wait_until(lambda: _registered_at(ha, topo, "foreign1"), what="first registration")
        for link in ("home", "foreign2", "foreign1", "home", "foreign1", "foreign2"):
            topo.move("mn", link, flap=flap)
            wait_until(
                lambda link=link: _registered_at(ha, topo, link),
                deadline=10,
                what=f"the home agent's binding after the move to {link} ({mn.call('bul')})",
            )
            assert topo.ping("cn", HOA, deadline=5), f"CN -> HoA on {link}"
