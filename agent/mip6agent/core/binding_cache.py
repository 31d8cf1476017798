"""The home agent's binding cache: O(1) lookup by home address, lazy expiry heap."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv6Address


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
    def from_dict(cls, data: dict[str, object]) -> Binding:
        values = dict(data)
        for key in ("home_address", "care_of_address", "home_agent"):
            values[key] = IPv6Address(str(values[key]))
        return cls(**values)  # type: ignore[arg-type]


class BindingCache:
    def __init__(self) -> None:
        self._entries: dict[IPv6Address, Binding] = {}
        self._expiry: list[tuple[float, IPv6Address]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Binding]:
        return iter(list(self._entries.values()))

    def __contains__(self, home_address: IPv6Address) -> bool:
        return home_address in self._entries

    def get(self, home_address: IPv6Address) -> Binding | None:
        return self._entries.get(home_address)

    def put(self, binding: Binding) -> None:
        self._entries[binding.home_address] = binding
        heapq.heappush(self._expiry, (binding.expires, binding.home_address))

    def remove(self, home_address: IPv6Address) -> Binding | None:
        # The heap entry stays behind; pop_expired skips entries that no longer match.
        return self._entries.pop(home_address, None)

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
                gone.append(entry)
        return gone

    def clear(self) -> list[Binding]:
        gone = list(self._entries.values())
        self._entries.clear()
        self._expiry.clear()
        return gone
