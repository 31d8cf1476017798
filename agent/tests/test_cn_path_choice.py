"""CorrespondentPath's choice of backend: eBPF, else XFRM ro when the kernel has MIP6,
else none with both reasons. The backends are replaced by fakes: no kernel needed."""

from __future__ import annotations

from ipaddress import IPv6Address

import pytest
from mip6agent.daemon import correspondent_path as cp


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


@pytest.fixture
def no_bpf(monkeypatch):
    monkeypatch.setattr(cp.ro_bpf, "available", lambda: (False, "no clang here"))
    monkeypatch.setattr(cp, "RoXfrm", FakeXfrm)
    FakeXfrm.instances.clear()


def test_xfrm_when_bpf_is_unavailable_and_kernel_has_mip6(no_bpf, monkeypatch):
    monkeypatch.setattr(cp.ro_xfrm, "available", lambda: (True, "ok"))
    path = cp.CorrespondentPath()
    assert path.start() is True
    assert path.active and path.backend == "xfrm-ro" and path.reason is None
    assert len(FakeXfrm.instances) == 1
    ro = FakeXfrm.instances[0]
    assert ro.calls == [("close",)]  # a previous run's states cleared first
    cn, home, coa = (IPv6Address(f"2001:db8::{n}") for n in (1, 2, 3))
    path.install(home, coa, cn)
    path.remove(home, cn)
    assert ro.calls[1:] == [("add", "cn", cn, home, coa), ("remove", "cn", cn, home)]
    assert path.attached == set()  # no interfaces, no programs
    path.stop()
    assert ro.calls[-1] == ("close",) and not path.active and path.backend is None


def test_neither_backend_gives_both_reasons(no_bpf, monkeypatch):
    monkeypatch.setattr(cp.ro_xfrm, "available", lambda: (False, "no CONFIG_IPV6_MIP6"))
    path = cp.CorrespondentPath()
    assert path.start() is False
    assert not path.active and path.backend is None
    assert "no clang here" in path.reason and "no CONFIG_IPV6_MIP6" in path.reason
    assert FakeXfrm.instances == []
    with pytest.raises(cp.CorrespondentPathError):
        path.install(
            IPv6Address("2001:db8::2"), IPv6Address("2001:db8::3"), IPv6Address("2001:db8::1")
        )
