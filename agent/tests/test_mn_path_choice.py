"""MobilePath's choice of backend (eBPF, else kernel MIP6 XFRM ro, else none with both
reasons) and the mobile node's XFRM ro states and policies (RoXfrm role "mn"), with
``ip`` replaced by a recorder: no kernel needed. The kernel side runs in the interop VM
(lab/interop/test_interop.py::test_our_mn_umip_cn_route_optimization)."""

from __future__ import annotations

from ipaddress import IPv6Address

import pytest
from mip6agent.daemon import mobile_path as mp
from mip6agent.io.dataplane import ro_xfrm

CN, HOME, COA = (IPv6Address(a) for a in ("2001:db8:4::9", "2001:db8:1::100", "2001:db8:2::5"))


class FakeXfrm:
    instances: list[FakeXfrm] = []

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        FakeXfrm.instances.append(self)

    def close(self) -> None:
        self.calls.append(("close",))

    def add_binding(self, role, cn, home, coa) -> None:
        self.calls.append(("add", role, cn, home, coa))

    def remove_binding(self, role, cn, home) -> None:
        self.calls.append(("remove", role, cn, home))

    def bindings(self, role="cn"):
        return []

    def counters(self, role="cn"):
        return {"xfrm_bindings": 0, "xfrm_packets": 0}


@pytest.fixture
def no_bpf(monkeypatch):
    monkeypatch.setattr(mp.ro_bpf, "available", lambda: (False, "no clang here"))
    monkeypatch.setattr(mp, "RoXfrm", FakeXfrm)
    FakeXfrm.instances.clear()


def test_xfrm_when_bpf_is_unavailable_and_kernel_has_mip6(no_bpf, monkeypatch):
    monkeypatch.setattr(mp.ro_xfrm, "available", lambda: (True, "ok"))
    path = mp.MobilePath(tunnel_pref=1000)
    assert path.start() is True
    assert path.active and path.backend == "xfrm-ro" and path.reason is None
    ro = FakeXfrm.instances[0]
    assert ro.calls == [("close",)]  # what a previous run left goes first
    path.install(HOME, COA, CN)
    path.remove(HOME, CN)
    assert ro.calls[1:] == [("add", "mn", CN, HOME, COA), ("remove", "mn", CN, HOME)]
    assert path.attached == set()  # no programs, rules or table-190 routes
    assert path.counters() == {"xfrm_bindings": 0, "xfrm_packets": 0}
    path.stop()
    assert ro.calls[-1] == ("close",) and not path.active and path.backend is None


def test_neither_backend_gives_both_reasons(no_bpf, monkeypatch):
    monkeypatch.setattr(mp.ro_xfrm, "available", lambda: (False, "no CONFIG_IPV6_MIP6"))
    path = mp.MobilePath(tunnel_pref=1000)
    assert path.start() is False
    assert not path.active and path.backend is None
    assert "no clang here" in path.reason and "no CONFIG_IPV6_MIP6" in path.reason
    with pytest.raises(mp.MobilePathError):
        path.install(HOME, COA, CN)


class Recorder(ro_xfrm.RoXfrm):
    """RoXfrm whose ``ip`` calls are recorded; ``state list`` answers with ``states``."""

    def __init__(self) -> None:
        super().__init__(netns="mn")
        self.commands: list[tuple[str, ...]] = []
        self.states = ""
        self.lo = f"1: lo    inet6 {HOME}/128 scope global nodad noprefixroute"

    def _ip(self, *args: str) -> str:
        self.commands.append(args)
        if args[:3] == ("-s", "xfrm", "state"):
            return self.states
        if args[:2] == ("-6", "-o"):
            return self.lo
        return ""


def test_mn_binding_states_policies_and_home_flag():
    ro = Recorder()
    ro.add_binding("mn", CN, HOME, COA)
    c, h, a = str(CN), str(HOME), str(COA)
    reqid = str(ro_xfrm.MN_REQID)
    changes = [cmd for cmd in ro.commands if cmd[:2] != ("-s", "xfrm")]
    assert changes[1] == (
        "-6", "address", "replace", f"{h}/128", "dev", "lo", "nodad", "noprefixroute",
        "home", "preferred_lft", "0",
    )  # fmt: skip
    state = ("xfrm", "state", "add", "src", h, "dst", c, "proto", "hao", "reqid", reqid,
             "mode", "ro", "coa", a, "sel", "src", f"{h}/128", "dst", f"{c}/128")  # fmt: skip
    assert state in changes
    state = ("xfrm", "state", "add", "src", c, "dst", h, "proto", "route2", "reqid", reqid,
             "mode", "ro", "coa", a, "sel", "src", f"{c}/128", "dst", f"{h}/128")  # fmt: skip
    assert state in changes
    bypass = str(ro_xfrm.MN_BYPASS_PRIORITY)
    for protocol in ("135", "255"):  # the HoTI (raw, header included) keeps the tunnel
        assert ("xfrm", "policy", "update", "src", f"{h}/128", "dst", f"{c}/128",
                "proto", protocol, "dir", "out", "priority", bypass) in changes  # fmt: skip
    out = next(cmd for cmd in changes if "out" in cmd and "tmpl" in cmd)
    assert out[out.index("tmpl") :] == (
        "tmpl", "src", h, "dst", c, "proto", "hao", "reqid", reqid, "mode", "ro", "level", "use"
    )  # fmt: skip
    assert int(bypass) < int(out[out.index("priority") + 1])  # the bypass is looked at first
    inbound = next(cmd for cmd in changes if "in" in cmd and "tmpl" in cmd)
    assert inbound[inbound.index("tmpl") :] == (
        "tmpl", "src", c, "dst", h, "proto", "route2", "reqid", reqid, "mode", "ro", "level",
        "use",
    )  # fmt: skip


STATES = f"""src {HOME} dst {CN}
\tproto hao reqid {ro_xfrm.MN_REQID} mode ro
\treplay-window 0 flag af-unspec
\tsel src {HOME}/128 dst {CN}/128
\tcoa {COA}
\tlifetime current:
\t  120(bytes), 2(packets)
src {CN} dst {HOME}
\tproto route2 reqid {ro_xfrm.MN_REQID} mode ro
\treplay-window 0 flag af-unspec
\tsel src {CN}/128 dst {HOME}/128
\tcoa {COA}
\tlifetime current:
\t  180(bytes), 3(packets)
src {CN} dst {HOME}
\tproto route2 reqid {ro_xfrm.REQID} mode ro
\tcoa {COA}
"""


def test_mn_bindings_read_back_and_removal_clears_the_flag():
    ro = Recorder()
    ro.states = STATES
    [binding] = ro.bindings("mn")
    assert (binding.role, binding.cn, binding.home, binding.coa) == ("mn", CN, HOME, COA)
    assert binding.packets == 5  # both directions
    # The correspondent's reqid is read apart: only its own route2 state, nothing counted.
    assert [(b.role, b.packets) for b in ro.bindings("cn")] == [("cn", 0)]
    assert ro.counters("mn") == {"xfrm_bindings": 1, "xfrm_packets": 5}
    ro.states = ""  # gone after the deletes
    ro.commands.clear()
    ro.remove_binding("mn", CN, HOME)
    deletes = [cmd for cmd in ro.commands if "delete" in cmd]
    assert ("xfrm", "state", "delete", "src", str(HOME), "dst", str(CN), "proto", "hao") in deletes
    assert len([cmd for cmd in deletes if cmd[1] == "policy"]) == 4
    assert ro.commands[-1] == (
        "-6", "address", "replace", f"{HOME}/128", "dev", "lo", "nodad", "noprefixroute",
    )  # fmt: skip


def test_home_flag_is_left_alone_when_lo_does_not_hold_the_address():
    ro = Recorder()
    ro.lo = ""  # at home: the home address is on the home interface
    assert ro.mark_home_address(HOME, True) is False
    assert not [cmd for cmd in ro.commands if "replace" in cmd]
