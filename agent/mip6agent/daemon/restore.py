"""Start-up of a home agent from its saved binding cache and the kernel's state.

The rule: kernel state is only ever removed on the word of a state file that loaded
cleanly (or is missing: a first start). When the file is damaged, the rows that passed
their checks are loaded, every binding the kernel still forwards for is rebuilt from the
kernel (marked ``recovered``: its sequence number and NAI are unknown, so the next
authorized Binding Update for it is accepted), and reconciliation adds what is missing
but removes nothing.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from ipaddress import IPv6Address
from operator import attrgetter
from typing import Any

from ..core.actions import Log
from ..core.binding_cache import Binding
from ..core.home_agent import HomeAgent, HomeLink
from ..io.dataplane import DataPlane, ReconcileReport
from ..wire.constants import BU_FLAG_A, BU_FLAG_H
from .persistence import BindingStore, LoadResult

# A recovered binding lives at most this long (seconds) unless refreshed: long enough for
# every mobile node to refresh (RFC 6275 lifetimes are minutes), short enough that a
# binding nobody owns any more goes away on its own.
RECOVERED_LIFETIME = 420.0
MAX_PROBLEMS_LOGGED = 20

RunInKernel = Callable[..., Awaitable[Any]]


async def restore_home_agent(
    core: HomeAgent,
    store: BindingStore,
    dataplane: DataPlane | None,
    run_in_kernel: RunInKernel,
    now: float,
    log: logging.Logger,
) -> dict[str, Any]:
    """Load ``store`` into ``core``; returns a summary. The kernel is made to match later,
    by :func:`reconcile_home_agent` (the agent serves meanwhile: the routes a previous run
    left keep forwarding, and a refresh needs no kernel change)."""
    result: LoadResult = await run_in_kernel(store.load)
    damaged = result.status == "damaged"
    if damaged:
        shown = result.problems[:MAX_PROBLEMS_LOGGED]
        more = len(result.problems) - len(shown)
        log.error(
            "state file %s is damaged, %d good binding(s) loaded, the rest is rebuilt from "
            "the kernel and nothing is removed: %s%s",
            result.path,
            len(result.bindings),
            "; ".join(shown),
            f"; and {more} more" if more > 0 else "",
        )
    # The rows as the store's checks built them (Binding.from_dict takes those as they are).
    rows = result.objects if result.objects is not None else result.bindings
    for action in core.restore({"bindings": rows, "timestamps": result.timestamps}, now):
        if isinstance(action, Log):  # the text, with its %-arguments applied
            log.log(logging.getLevelName(action.level.upper()), "%s", action.text)
    loaded = len(core.cache)
    expired = len(result.bindings) - loaded
    recovered = 0
    if damaged and dataplane is not None:
        recovered = await _recover_from_kernel(core, dataplane, run_in_kernel, now, log)
    if damaged:
        # A fresh file with exactly what is known now; the damaged one is kept aside.
        fresh = [b.to_dict() for b in core.cache]
        await run_in_kernel(store.replace_all, fresh, core.replay.snapshot())
    elif expired:
        gone = [str(b["home_address"]) for b in result.bindings]
        gone = [h for h in gone if IPv6Address(h) not in core.cache]
        await run_in_kernel(store.write, [], gone, {})
    return {
        "status": result.status,
        "file": str(result.path) if result.path is not None else None,
        "loaded": loaded,
        "expired": expired,
        "recovered": recovered,
        "damaged_rows": len(result.damaged_keys),
        "problems": result.problems[:MAX_PROBLEMS_LOGGED],
        "reconciled": dataplane is None,
        "removed": 0,
    }


@dataclass(frozen=True, slots=True)
class LinkPlan:
    """What one home link's reconciliation wants, taken from the cache at restore time."""

    interface: str
    address: IPv6Address
    wanted: dict[IPv6Address, IPv6Address]
    link_locals: frozenset[IPv6Address]


def reconcile_plan(core: HomeAgent) -> list[LinkPlan]:
    per_link: dict[str, dict[IPv6Address, IPv6Address]] = {
        link.interface: {} for link in core.settings.links
    }
    for binding in core.cache:
        wanted = per_link.get(binding.interface)
        if wanted is not None:
            wanted[binding.home_address] = binding.care_of_address
    return [
        LinkPlan(
            link.interface,
            link.address,
            per_link[link.interface],
            frozenset(core.cache.link_locals(link.interface)),
        )
        for link in core.settings.links
    ]


def reconcile_home_agent(
    dataplane: DataPlane, plans: list[LinkPlan], remove_stale: bool
) -> dict[str, ReconcileReport]:
    """Every home link's reconciliation in one call on the kernel thread: queued before any
    action, so every change the core asks for afterwards applies on top of it."""
    return {
        plan.interface: dataplane.ha_reconcile(
            plan.wanted, plan.address, plan.interface, remove_stale, plan.link_locals
        )
        for plan in plans
    }


async def _recover_from_kernel(
    core: HomeAgent,
    dataplane: DataPlane,
    run_in_kernel: RunInKernel,
    now: float,
    log: logging.Logger,
) -> int:
    """A ``recovered`` binding for every HoA the kernel tunnels and no good row named."""
    found = await _kernel_bindings(dataplane, run_in_kernel)
    links = core.settings.links
    indexes: dict[int, HomeLink] = {}
    for link in links:
        try:
            indexes[await run_in_kernel(socket.if_nametoindex, link.interface)] = link
        except OSError:
            continue
    lifetime = float(min(core.settings.max_binding_lifetime, RECOVERED_LIFETIME))
    count = 0
    for hoa, (coa, index) in sorted(found.items()):
        if hoa in core.cache:
            continue
        link = indexes.get(index) or _link_for(hoa, links)
        if link is None:
            log.warning("kernel binding %s -> %s: no home link of ours, not recovered", hoa, coa)
            continue
        core.cache.put(
            Binding(
                home_address=hoa,
                care_of_address=coa,
                home_agent=link.address,
                interface=link.interface,
                sequence=0,
                lifetime=lifetime,
                expires=now + lifetime,
                flags=BU_FLAG_H | BU_FLAG_A,
                nai=None,
                registered=now,
                recovered=True,
            )
        )
        count += 1
    if count:
        log.warning(
            "%d binding(s) rebuilt from the kernel (recovered, %d s to live unless refreshed)",
            count,
            int(lifetime),
        )
    return count


async def _kernel_bindings(
    dataplane: DataPlane, run_in_kernel: RunInKernel
) -> dict[IPv6Address, tuple[IPv6Address, int]]:
    """HoA -> (CoA, home interface index or 0), from one read where the backend can."""
    detail = getattr(dataplane, "ha_binding_links", None)
    if detail is not None:
        return dict(await run_in_kernel(detail))
    bindings = await run_in_kernel(dataplane.ha_bindings)
    return {hoa: (coa, 0) for hoa, coa in bindings.items()}


def _link_for(hoa: IPv6Address, links: tuple[HomeLink, ...]) -> HomeLink | None:
    if len(links) == 1:
        return links[0]
    return next((link for link in links if any(hoa in p for p in link.prefixes)), None)


_FIELDS = tuple(f.name for f in fields(Binding) if f.name != "home_address")
_NAI = _FIELDS.index("nai")


# A tuple of each binding's fields but its home address (attrgetter: one C call).
_identity: Callable[[Binding], tuple] = attrgetter(*_FIELDS)


class BindingJournal:
    """Which rows of the binding store are out of date, and what to write for them.

    ``touch(key)`` after a StateChanged for one home address (None: anything may have
    changed); ``changes(core)`` then gives ``BindingStore.write``'s arguments. What was
    last written is remembered as a tuple of each binding's fields (the objects are the
    binding's own), so "everything" writes only the rows that differ.
    """

    def __init__(self) -> None:
        self._dirty: set[IPv6Address] = set()
        self._everything = False
        self._saved: dict[IPv6Address, tuple] = {}
        self._rewrite = False

    def __bool__(self) -> bool:
        return self._everything or bool(self._dirty) or self._rewrite

    def failed(self) -> None:
        """A write did not happen: what the store holds is unknown, rewrite it whole."""
        self._rewrite = True

    def pending(self, core: HomeAgent) -> tuple[str, tuple]:
        """``("write", (changed, removed, stamps))`` or, after a failure,
        ``("replace_all", (rows, stamps))``: the BindingStore call to make."""
        if self._rewrite:
            self._rewrite, self._everything, self._dirty = False, False, set()
            self.saved(core)
            return "replace_all", ([b.to_dict() for b in core.cache], core.replay.snapshot())
        return "write", self.changes(core)

    def saved(self, core: HomeAgent) -> None:
        """The store now holds exactly ``core``'s cache (after a restore)."""
        self._saved = {b.home_address: _identity(b) for b in core.cache}

    def touch(self, key: IPv6Address | None) -> None:
        if key is None:
            self._everything = True
        else:
            self._dirty.add(key)

    def changes(self, core: HomeAgent) -> tuple[list[dict], list[str], dict[str, int]]:
        homes, everything = self._dirty, self._everything
        self._dirty, self._everything = set(), False
        if everything:
            homes = set(self._saved) | {b.home_address for b in core.cache}
        last = getattr(core.replay, "_last", None)
        if not isinstance(last, dict):
            last = core.replay.snapshot()
        changed: list[dict] = []
        removed: list[str] = []
        stamps: dict[str, int] = {}
        for hoa in homes:
            binding = core.cache.get(hoa)
            if binding is None:
                old = self._saved.pop(hoa, None)
                if old is None and everything:
                    continue
                removed.append(str(hoa))
                nai = old[_NAI] if old is not None else None
            else:
                identity = _identity(binding)
                if everything and self._saved.get(hoa) == identity:
                    continue
                self._saved[hoa] = identity
                changed.append(binding.to_dict())
                nai = binding.nai
            if nai is not None and nai in last:
                stamps[nai] = last[nai]
        if everything:
            stamps.update(last)
        return changed, removed, stamps
