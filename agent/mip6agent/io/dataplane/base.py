"""What every data-plane backend offers, its settings, its report and its one error type."""

from __future__ import annotations

import errno as errno_module
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from typing import Protocol, runtime_checkable

# Routing protocol number on every route, rule, proxy entry and address the agent installs:
# reconciliation finds its own objects by it. Unassigned in /etc/iproute2/rt_protos.
RTPROT_MIP6 = 86

# Kernel table ids a backend must never take over.
_RESERVED_TABLES = frozenset({0, 252, 253, 254, 255})
# Protocol numbers the kernel itself uses (unspec, redirect, kernel, boot, static).
_RESERVED_PROTOS = frozenset({0, 1, 2, 3, 4})
_MAIN_RULE_PREF = 32766
# errno.errorcode picks ENOTSUP for 95; netlink users know it as EOPNOTSUPP.
_ERRNO_NAMES = {errno_module.EOPNOTSUPP: "EOPNOTSUPP"}


class DataPlaneError(RuntimeError):
    """A kernel change or read failed: which operation, on what, and the kernel's reason.

    ``errno`` is the kernel's error number when there was one; ``reason`` its text (the
    netlink extended-ack message when the kernel sent one).
    """

    def __init__(self, operation: str, subject: str, reason: str, errno: int | None = None):
        name = _ERRNO_NAMES.get(errno or 0) or errno_module.errorcode.get(errno or 0, "")
        self.detail = f"{reason} ({name})" if name else reason
        super().__init__(f"{operation} {subject}".strip() + f": {self.detail}")
        self.operation = operation
        self.subject = subject
        self.reason = reason
        self.errno = errno


class BackendUnavailableError(DataPlaneError):
    """No backend (or not the requested one) works on the running kernel."""

    def __init__(self, message: str) -> None:
        RuntimeError.__init__(self, message)
        self.operation = "select data plane"
        self.subject = ""
        self.reason = self.detail = message
        self.errno = None


@dataclass(frozen=True, slots=True)
class DataPlaneConfig:
    """Numbers that mark the agent's kernel objects; the defaults follow KERNEL.md.

    Policy-rule order (lower runs first): HA decapsulation, MN decapsulation, the moved
    ``local`` table rule, the MN's ``from <HoA>`` rules, then the kernel's ``main`` rule.
    Each home address on a mobile node gets its own table, from ``mn_table`` upwards.
    """

    proto: int = RTPROT_MIP6
    decap_table: int = 100
    mn_table: int = 200
    mn_table_count: int = 16
    ha_decap_pref: int = 10
    mn_decap_pref: int = 11
    local_pref: int = 1000
    mn_pref: int = 1100
    metric: int = 1024
    # Decapsulate only from the registered peer (source-specific routes, IPV6_SUBTREES).
    strict_decap: bool = True
    # ip6tnl device names: <prefix>h<n> on a home agent, <prefix>m<n> on a mobile node.
    tunnel_prefix: str = "mip6"

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.proto < 256 or self.proto in _RESERVED_PROTOS:
            problems.append(f"proto must be 5..255, got {self.proto}")
        mn_tables = range(self.mn_table, self.mn_table + self.mn_table_count)
        if self.mn_table_count < 1:
            problems.append("mn_table_count must be at least 1")
        for name, table in (("decap_table", self.decap_table), ("mn_table", self.mn_table)):
            if table in _RESERVED_TABLES or not 0 < table < 2**32:
                problems.append(f"{name} {table} is reserved or out of range")
        if self.decap_table in mn_tables:
            problems.append(f"decap_table {self.decap_table} overlaps the mobile node tables")
        if any(t in _RESERVED_TABLES for t in mn_tables):
            problems.append("the mobile node tables overlap a reserved table")
        prefs = (self.ha_decap_pref, self.mn_decap_pref, self.local_pref, self.mn_pref)
        if not (0 < prefs[0] < prefs[1] < prefs[2] < prefs[3] < _MAIN_RULE_PREF):
            problems.append(
                "rule priorities must satisfy 0 < ha_decap_pref < mn_decap_pref < local_pref"
                f" < mn_pref < {_MAIN_RULE_PREF}, got {prefs}"
            )
        if not 1 <= len(self.tunnel_prefix) <= 8 or not self.tunnel_prefix.isalnum():
            problems.append("tunnel_prefix must be 1-8 letters or digits")
        if problems:
            raise ValueError("invalid data-plane config: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """What reconciliation did, one home address per entry.

    ``adopted``: kernel state already matched and was kept; ``added``: nothing was there;
    ``updated``: something was there but wrong (another CoA, a missing piece) and was
    rewritten; ``removed``: state the caller no longer wants.
    """

    adopted: tuple[IPv6Address, ...] = ()
    added: tuple[IPv6Address, ...] = ()
    updated: tuple[IPv6Address, ...] = ()
    removed: tuple[IPv6Address, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)


@runtime_checkable
class DataPlane(Protocol):
    """A way to carry RFC 2473 IPv6-in-IPv6 between home agent and mobile node.

    Every method acts on the network namespace the backend was created in, is idempotent,
    and raises :class:`DataPlaneError` (nothing else) when the kernel refuses.
    """

    name: str
    config: DataPlaneConfig

    # Home agent side.
    def ha_setup(self, home_ifname: str, ha_addr: IPv6Address) -> None: ...
    def ha_bind(
        self, hoa: IPv6Address, coa: IPv6Address, ha_addr: IPv6Address, home_ifname: str
    ) -> None: ...
    def ha_unbind(self, hoa: IPv6Address) -> None: ...
    def ha_proxy(self, address: IPv6Address, home_ifname: str) -> None: ...
    def ha_unproxy(self, address: IPv6Address, home_ifname: str) -> None: ...
    def ha_bindings(self) -> dict[IPv6Address, IPv6Address]: ...
    def ha_reconcile(
        self,
        wanted: Mapping[IPv6Address, IPv6Address],
        ha_addr: IPv6Address,
        home_ifname: str,
        remove_stale: bool = True,
        link_locals: Collection[IPv6Address] = (),
    ) -> ReconcileReport: ...

    # Mobile node side.
    def mn_attach(
        self, hoa: IPv6Address, coa: IPv6Address, ha_addr: IPv6Address, ifname: str
    ) -> None: ...
    def mn_prepare(self, coa: IPv6Address, ha_addr: IPv6Address, ifname: str) -> None: ...
    def mn_detach(self, hoa: IPv6Address) -> None: ...
    def mn_state(self) -> dict[IPv6Address, tuple[IPv6Address, IPv6Address]]: ...
    def mn_reconcile(
        self, wanted: Mapping[IPv6Address, tuple[IPv6Address, IPv6Address]], ifname: str
    ) -> ReconcileReport: ...

    def counters(self) -> dict[str, int]: ...
    def cleanup(self) -> None: ...
    def close(self) -> None: ...


@dataclass(slots=True)
class _ReportBuilder:
    adopted: list[IPv6Address] = field(default_factory=list)
    added: list[IPv6Address] = field(default_factory=list)
    updated: list[IPv6Address] = field(default_factory=list)
    removed: list[IPv6Address] = field(default_factory=list)

    def build(self) -> ReconcileReport:
        return ReconcileReport(
            tuple(sorted(self.adopted)),
            tuple(sorted(self.added)),
            tuple(sorted(self.updated)),
            tuple(sorted(self.removed)),
        )
