"""The home agent's binding cache: O(1) lookup by home address, lazy expiry heap."""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv6Address
from socket import AF_INET6, inet_pton
from typing import Any, TypeVar

from ..wire.addresses import link_local_of
from ..wire.constants import BU_FLAG_L


@dataclass(slots=True)
class Binding:
    home_address: IPv6Address
    care_of_address: IPv6Address
    home_agent: IPv6Address
    interface: str
    sequence: int
    lifetime: float
    expires: float
    flags: int
    nai: str | None
    registered: float
    # Rebuilt from kernel state after the state file failed to load: sequence and NAI are
    # unknown, so the next authorized Binding Update for this home address is accepted.
    recovered: bool = False

    @property
    def link_local(self) -> IPv6Address | None:
        """The MN's link-local address the home agent defends (L flag), if any."""
        return link_local_of(self.home_address) if self.flags & BU_FLAG_L else None

    def to_dict(self) -> dict[str, object]:
        # A literal, not dataclasses.asdict: that deep-copies every address (4x slower).
        return {
            "home_address": str(self.home_address),
            "care_of_address": str(self.care_of_address),
            "home_agent": str(self.home_agent),
            "interface": self.interface,
            "sequence": self.sequence,
            "lifetime": self.lifetime,
            "expires": self.expires,
            "flags": self.flags,
            "nai": self.nai,
            "registered": self.registered,
            "recovered": self.recovered,
        }

    @classmethod
    def from_dict(cls, data: object) -> Binding:
        """The inverse of :meth:`to_dict`; ValueError names what is wrong with ``data``.

        A Binding is taken as it is: BindingStore.load has checked the rows it gives
        already (as Binding objects), so a restart checks each row once.
        """
        if isinstance(data, cls):
            return data
        if type(data) is dict and (data.keys() == _KEYS or data.keys() == _REQUIRED_KEYS):
            fast = cls._well_formed(data)
            if fast is not None:
                return fast
        if not isinstance(data, dict):
            raise ValueError(f"binding must be an object, got {type(data).__name__}")
        missing = [key for key in _REQUIRED if key not in data]
        if missing:
            raise ValueError(f"binding lacks {', '.join(missing)}")
        unknown = sorted(str(key) for key in data if key not in _REQUIRED and key != "recovered")
        if unknown:
            raise ValueError(f"binding has unknown keys {', '.join(unknown)}")
        addresses = {}
        for key in ("home_address", "care_of_address", "home_agent"):
            value = data[key]
            if not isinstance(value, str):
                raise ValueError(f"binding {key} must be a string, got {type(value).__name__}")
            try:
                addresses[key] = _address(value)
            except ValueError:
                raise ValueError(f"binding {key} {value!r} is not an IPv6 address") from None
        interface, nai, recovered = data["interface"], data["nai"], data.get("recovered", False)
        if not isinstance(interface, str) or not interface:
            raise ValueError("binding interface must be a non-empty string")
        if nai is not None and not isinstance(nai, str):
            raise ValueError(f"binding nai must be a string or null, got {type(nai).__name__}")
        if not isinstance(recovered, bool):
            raise ValueError("binding recovered must be true or false")
        sequence, flags = data["sequence"], data["flags"]
        if not _is_int(sequence) or not 0 <= sequence < 1 << 16:
            raise ValueError(f"binding sequence must be an integer 0..65535, got {sequence!r}")
        if not _is_int(flags) or not 0 <= flags < 1 << 16:
            raise ValueError(f"binding flags must be an integer 0..65535, got {flags!r}")
        times = {}
        for key in ("lifetime", "expires", "registered"):
            value = data[key]
            if not _is_number(value):
                raise ValueError(f"binding {key} must be a number, got {value!r}")
            if value < 0:
                raise ValueError(f"binding {key} must not be negative, got {value!r}")
            times[key] = float(value)
        return cls(
            home_address=addresses["home_address"],
            care_of_address=addresses["care_of_address"],
            home_agent=addresses["home_agent"],
            interface=interface,
            sequence=sequence,
            lifetime=times["lifetime"],
            expires=times["expires"],
            flags=flags,
            nai=nai,
            registered=times["registered"],
            recovered=recovered,
        )

    @classmethod
    def _well_formed(cls, data: dict[str, Any]) -> Binding | None:
        """from_dict for a row that passes every check, in one pass (a restart reads
        100,000 of them); None sends anything unusual to the checks that explain it."""
        # Any: a decoded JSON row whose types are checked below by hand; mypy cannot
        # narrow the times through all().
        home, coa, agent = data["home_address"], data["care_of_address"], data["home_agent"]
        interface, nai = data["interface"], data["nai"]
        sequence, flags = data["sequence"], data["flags"]
        recovered = data.get("recovered", False)
        times = (data["lifetime"], data["expires"], data["registered"])
        if not (
            type(home) is str
            and type(coa) is str
            and type(agent) is str
            and type(interface) is str
            and interface
            and (nai is None or type(nai) is str)
            and type(recovered) is bool
            and type(sequence) is int
            and 0 <= sequence < 1 << 16
            and type(flags) is int
            and 0 <= flags < 1 << 16
            and all(type(t) in (int, float) and 0 <= t < math.inf for t in times)
        ):
            return None
        try:
            addresses = (_packed_address(home), _packed_address(coa), _home_agent(agent))
        except OSError:
            return None  # scope ids, errors: the full checks
        lifetime, expires, registered = times
        return cls(
            addresses[0],
            addresses[1],
            addresses[2],
            interface,
            sequence,
            float(lifetime),
            float(expires),
            flags,
            nai,
            float(registered),
            recovered,
        )


_REQUIRED = (
    "home_address",
    "care_of_address",
    "home_agent",
    "interface",
    "sequence",
    "lifetime",
    "expires",
    "flags",
    "nai",
    "registered",
)


_REQUIRED_KEYS = frozenset(_REQUIRED)
_KEYS = _REQUIRED_KEYS | {"recovered"}


def _packed_address(text: str) -> IPv6Address:
    return IPv6Address(int.from_bytes(inet_pton(AF_INET6, text), "big"))


@functools.lru_cache(maxsize=64)
def _home_agent(text: str) -> IPv6Address:
    """A home agent has few addresses: every row names one of them."""
    return _packed_address(text)


def _address(text: str) -> IPv6Address:
    """IPv6Address(text), through inet_pton where it can (six times faster: a restart
    reads three addresses per saved binding); the rest (scope ids, errors) as before."""
    try:
        return IPv6Address(int.from_bytes(inet_pton(AF_INET6, text), "big"))
    except (OSError, ValueError):
        return IPv6Address(text)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


class BindingCache:
    def __init__(self) -> None:
        self._entries: dict[IPv6Address, Binding] = {}
        self._expiry: list[tuple[float, IPv6Address]] = []
        self._per_nai: dict[str, int] = {}  # bindings per MN identifier, for the per-key cap
        # Bindings per care-of address, and the CoAs whose count went to or from zero since
        # take_care_of_changes(): the I/O layer keeps a kernel set of them up to date.
        self._per_coa: dict[IPv6Address, int] = {}
        self._coa_changes: set[IPv6Address] = set()
        # Link-local address -> home address, for bindings with the L flag.
        self._link_locals: dict[IPv6Address, IPv6Address] = {}

    def link_local_holder(self, address: IPv6Address) -> IPv6Address | None:
        """The home address whose binding defends link-local ``address``, if one does."""
        return self._link_locals.get(address)

    def link_locals(self, interface: str) -> set[IPv6Address]:
        """The link-local addresses defended on ``interface``."""
        return {
            ll
            for ll, home in self._link_locals.items()
            if self._entries[home].interface == interface
        }

    def count_for(self, nai: str | None) -> int:
        return self._per_nai.get(nai, 0) if nai is not None else 0

    def has_care_of(self, address: IPv6Address) -> bool:
        return address in self._per_coa

    def care_of_addresses(self) -> set[IPv6Address]:
        return set(self._per_coa)

    def mark_care_of_changed(self, addresses: Iterable[IPv6Address]) -> None:
        """Report ``addresses`` again (the kernel's copy of the set is to be rebuilt)."""
        self._coa_changes.update(addresses)

    def take_care_of_changes(self) -> set[IPv6Address]:
        changes, self._coa_changes = self._coa_changes, set()
        return changes

    def _count(self, binding: Binding, delta: int) -> None:
        if binding.nai is not None:
            _add(self._per_nai, binding.nai, delta)
        if _add(self._per_coa, binding.care_of_address, delta):
            self._coa_changes.add(binding.care_of_address)
        if binding.flags & BU_FLAG_L:
            ll = link_local_of(binding.home_address)
            if delta > 0:
                self._link_locals[ll] = binding.home_address
            elif self._link_locals.get(ll) == binding.home_address:
                del self._link_locals[ll]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Binding]:
        return iter(list(self._entries.values()))

    def __contains__(self, home_address: IPv6Address) -> bool:
        return home_address in self._entries

    def get(self, home_address: IPv6Address) -> Binding | None:
        return self._entries.get(home_address)

    def put(self, binding: Binding) -> None:
        old = self._entries.get(binding.home_address)
        if old is not None:
            self._count(old, -1)
        self._count(binding, 1)
        self._entries[binding.home_address] = binding
        heapq.heappush(self._expiry, (binding.expires, binding.home_address))

    def remove(self, home_address: IPv6Address) -> Binding | None:
        # The heap entry stays behind; pop_expired skips entries that no longer match.
        gone = self._entries.pop(home_address, None)
        if gone is not None:
            self._count(gone, -1)
        return gone

    def next_expiry(self) -> float | None:
        while self._expiry:
            expires, home = self._expiry[0]
            entry = self._entries.get(home)
            if entry is not None and entry.expires == expires:
                return expires
            heapq.heappop(self._expiry)
        return None

    def pop_expired(self, now: float) -> list[Binding]:
        gone = []
        while self._expiry and self._expiry[0][0] <= now:
            expires, home = heapq.heappop(self._expiry)
            entry = self._entries.get(home)
            if entry is not None and entry.expires == expires:
                del self._entries[home]
                self._count(entry, -1)
                gone.append(entry)
        return gone

    def clear(self) -> list[Binding]:
        gone = list(self._entries.values())
        self._entries.clear()
        self._expiry.clear()
        self._per_nai.clear()
        self._link_locals.clear()
        self._coa_changes.update(self._per_coa)
        self._per_coa.clear()
        return gone


_K = TypeVar("_K")


def _add(counts: dict[_K, int], key: _K, delta: int) -> bool:
    """Change ``counts[key]`` by ``delta`` (gone at zero); True if it came or went."""
    before = counts.get(key, 0)
    after = before + delta
    if after > 0:
        counts[key] = after
    else:
        counts.pop(key, None)
    return (before > 0) != (after > 0)
