"""Home agents list (RFC 6275 10.1), built from Router Advertisements with the H flag."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

from ..wire import HomeAgentInformation, PrefixInformation, RouterAdvertisement


@dataclass(slots=True)
class HomeAgentEntry:
    link_local: IPv6Address
    addresses: list[IPv6Address]
    preference: int
    lifetime: float
    expires: float
    interface: str

    def to_dict(self) -> dict[str, object]:
        return {
            "link_local": str(self.link_local),
            "addresses": [str(a) for a in self.addresses],
            "preference": self.preference,
            "lifetime": self.lifetime,
            "expires": self.expires,
            "interface": self.interface,
        }


MAX_ADDRESSES_PER_ENTRY = 16


class HomeAgentList:
    """``max_entries`` bounds the list: a flood of forged RAs must not grow it (and DHAAD
    replies) without limit; RAs from further routers are refused until an entry expires."""

    def __init__(self, max_entries: int | None = None) -> None:
        self._entries: dict[tuple[str, IPv6Address], HomeAgentEntry] = {}
        self.max_entries = max_entries
        self.refused = 0

    def update_from_ra(
        self, ra: RouterAdvertisement, source: IPv6Address, interface: str, now: float
    ) -> HomeAgentEntry | None:
        """Apply RFC 6275 10.1: an RA with H set adds or refreshes; lifetime 0 removes."""
        key = (interface, source)
        if not ra.home_agent:
            self._entries.pop(key, None)
            return None
        info = ra.option(HomeAgentInformation)
        preference = info.preference if isinstance(info, HomeAgentInformation) else 0
        lifetime = info.lifetime if isinstance(info, HomeAgentInformation) else ra.router_lifetime
        if lifetime == 0:
            self._entries.pop(key, None)
            return None
        addresses = [
            o.prefix
            for o in ra.options
            if isinstance(o, PrefixInformation) and o.router_address and not o.prefix.is_link_local
        ][:MAX_ADDRESSES_PER_ENTRY]
        entry = self._entries.get(key)
        if entry is None and self.max_entries is not None and len(self) >= self.max_entries:
            self.refused += 1
            return None
        if entry is None:
            entry = HomeAgentEntry(
                source, addresses, preference, lifetime, now + lifetime, interface
            )
            self._entries[key] = entry
        else:
            entry.addresses = addresses or entry.addresses
            entry.preference, entry.lifetime, entry.expires = preference, lifetime, now + lifetime
        return entry

    def expire(self, now: float) -> None:
        for key in [k for k, e in self._entries.items() if e.expires <= now]:
            del self._entries[key]

    def next_expiry(self) -> float | None:
        return min((e.expires for e in self._entries.values()), default=None)

    def preferred(self, prefix: IPv6Network | None = None) -> list[IPv6Address]:
        """Global addresses, most preferred first, optionally only those inside ``prefix``."""
        ranked = sorted(self._entries.values(), key=lambda e: -e.preference)
        out = []
        for entry in ranked:
            for address in entry.addresses:
                if (prefix is None or address in prefix) and address not in out:
                    out.append(address)
        return out

    def entries(self) -> list[HomeAgentEntry]:
        return sorted(self._entries.values(), key=lambda e: (-e.preference, str(e.link_local)))

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
