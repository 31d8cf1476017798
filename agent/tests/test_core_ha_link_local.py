"""The L flag at the home agent core: DAD for, and defence of, the MN's link-local address
(RFC 6275 10.3.1, 10.4.1, 10.4.2)."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

from mip6agent import wire
from mip6agent.core import actions as act
from mip6agent.core.home_agent import HomeAgent, HomeAgentSettings, HomeLink
from mip6agent.wire.constants import BU_FLAG_A, BU_FLAG_H, BU_FLAG_L, BAStatus
from test_core_home_agent import (
    COA2,
    HA,
    HOA,
    KEY,
    NAI,
    PREFIX,
    T0,
    agent,
    bu_packet,
    the_ba,
)

# Written out by hand: fe80::/64 plus the home address's interface identifier (::100).
HOA_LL = IPv6Address("fe80::100")
L = BU_FLAG_A | BU_FLAG_H | BU_FLAG_L
OTHER_HOA = IPv6Address("2001:db8:1:0:1::100")  # another home address, not the same IID
PREFIX2 = IPv6Network("2001:db8:5::/64")
HOA2 = IPv6Address("2001:db8:5::100")


def defended_na(target: IPv6Address) -> wire.Packet:
    data = wire.build_packet(
        IPv6Address("fe80::99"),
        IPv6Address("ff02::1"),
        wire.NeighborAdvertisement(target, 0x20),
        hop_limit=255,
    )
    return wire.parse_packet(data)


def dad_ns(target: IPv6Address) -> wire.Packet:
    data = wire.build_packet(
        IPv6Address("::"),
        IPv6Address("ff02::1:ff00:100"),
        wire.NeighborSolicitation(target),
        hop_limit=255,
    )
    return wire.parse_packet(data)


def test_l_flag_runs_dad_for_both_addresses_then_defends_the_link_local() -> None:
    ha = agent(dad=True)
    out = ha.receive(bu_packet(1, flags=L), T0)
    assert out == [act.StartDAD(HOA, "home0"), act.StartDAD(HOA_LL, "home0")]
    done = ha.handle_timer(T0 + 1.0)
    assert act.StopDAD(HOA, "home0") in done and act.StopDAD(HOA_LL, "home0") in done
    assert act.ProxyAddress(HOA_LL, "home0") in done
    assert act.AnnounceHomeAddress(HOA_LL, "home0") in done
    assert act.AnnounceHomeAddress(HOA, "home0") in done
    assert the_ba(done).status == BAStatus.ACCEPTED
    # the proxy entry is there before the BA leaves
    kinds = [type(a) for a in done]
    assert kinds.index(act.ProxyAddress) < kinds.index(act.SendPacket)


def test_without_l_flag_the_link_local_is_left_alone() -> None:
    ha = agent(dad=True)
    assert ha.receive(bu_packet(1), T0) == [act.StartDAD(HOA, "home0")]
    done = ha.handle_timer(T0 + 1.0)
    assert not any(isinstance(a, act.ProxyAddress) for a in done)
    assert act.AnnounceHomeAddress(HOA_LL, "home0") not in done


def test_link_local_in_use_fails_dad_with_134() -> None:
    for conflict in (defended_na(HOA_LL), dad_ns(HOA_LL)):
        ha = agent(dad=True)
        ha.receive(bu_packet(1, flags=L), T0)
        assert ha.receive(conflict, T0 + 0.3, interface="home0") == []
        done = ha.handle_timer(T0 + 1.0)
        assert the_ba(done).status == BAStatus.DAD_FAILED
        assert len(ha.cache) == 0
        assert not any(isinstance(a, (act.ProxyAddress, act.InstallBinding)) for a in done)
        assert ha.get_timer() is None


def test_link_local_nd_without_l_flag_is_no_conflict() -> None:
    ha = agent(dad=True)
    ha.receive(bu_packet(1), T0)
    ha.receive(defended_na(HOA_LL), T0 + 0.3, interface="home0")
    assert the_ba(ha.handle_timer(T0 + 1.0)).status == BAStatus.ACCEPTED


def test_deregistration_and_expiry_stop_defending() -> None:
    ha = agent()
    out = ha.receive(bu_packet(1, flags=L), T0)
    assert act.ProxyAddress(HOA_LL, "home0") in out
    gone = ha.receive(bu_packet(2, 0, flags=L, now=T0 + 5), T0 + 5)
    assert act.RemoveBinding(HOA) in gone and act.UnproxyAddress(HOA_LL, "home0") in gone
    assert the_ba(gone).status == BAStatus.ACCEPTED

    ha.receive(bu_packet(3, 40, flags=L, now=T0 + 10), T0 + 10)
    expired = ha.handle_timer(T0 + 60)
    assert act.UnproxyAddress(HOA_LL, "home0") in expired


def test_refresh_that_sets_or_clears_l_changes_only_the_proxy() -> None:
    ha = agent()
    ha.receive(bu_packet(1), T0)
    on = ha.receive(bu_packet(2, flags=L, now=T0 + 1), T0 + 1)
    assert act.ProxyAddress(HOA_LL, "home0") in on
    assert not any(isinstance(a, act.InstallBinding) for a in on)
    again = ha.receive(bu_packet(3, flags=L, now=T0 + 2), T0 + 2)
    assert not any(isinstance(a, (act.ProxyAddress, act.UnproxyAddress)) for a in again)
    off = ha.receive(bu_packet(4, now=T0 + 3), T0 + 3)
    assert act.UnproxyAddress(HOA_LL, "home0") in off
    assert the_ba(off).status == BAStatus.ACCEPTED


def test_handover_keeps_the_link_local_defended() -> None:
    ha = agent()
    ha.receive(bu_packet(1, flags=L), T0)
    moved = ha.receive(bu_packet(2, flags=L, coa=COA2, now=T0 + 1), T0 + 1)
    assert act.InstallBinding(HOA, COA2, HA, "home0") in moved
    assert not any(isinstance(a, (act.ProxyAddress, act.UnproxyAddress)) for a in moved)


def test_clear_and_key_revocation_stop_defending() -> None:
    ha = agent()
    ha.receive(bu_packet(1, flags=L), T0)
    assert act.UnproxyAddress(HOA_LL, "home0") in ha.clear_bindings()
    ha.receive(bu_packet(2, flags=L, now=T0 + 1), T0 + 1)
    revoked = ha.set_keys(lambda nai: None)
    assert act.UnproxyAddress(HOA_LL, "home0") in revoked


def test_two_home_addresses_cannot_claim_one_link_local() -> None:
    # The same interface identifier in two home prefixes of one link: one link-local.
    settings = HomeAgentSettings(links=(HomeLink("home0", HA, (PREFIX, PREFIX2)),), dad=False)
    ha = HomeAgent(settings, keys={NAI: KEY}.get)
    assert the_ba(ha.receive(bu_packet(1, flags=L), T0)).status == BAStatus.ACCEPTED
    out = ha.receive(bu_packet(1, flags=L, hoa=HOA2, now=T0 + 1), T0 + 1)
    assert the_ba(out).status == BAStatus.DAD_FAILED
    assert HOA2 not in ha.cache
    # without L the second home address registers, and the link-local stays the first's
    assert the_ba(ha.receive(bu_packet(2, hoa=HOA2, now=T0 + 2), T0 + 2)).status == 0
    assert ha.cache.link_local_holder(HOA_LL) == HOA


def test_restored_l_binding_is_listed_for_reconciliation() -> None:
    ha = agent()
    ha.receive(bu_packet(1, flags=L), T0)
    ha.receive(bu_packet(1, hoa=OTHER_HOA), T0)
    fresh = agent()
    fresh.restore(ha.snapshot(), T0 + 1)
    assert fresh.cache.link_locals("home0") == {HOA_LL}
    assert fresh.cache.link_locals("other0") == set()
