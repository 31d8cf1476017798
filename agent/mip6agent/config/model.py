"""The validated configuration: frozen dataclasses, with secrets that never print.

Defaults live in the schema (:mod:`.schema`), not here, so that there is one source of truth;
build these objects with :func:`~.schema.validate_mapping` or :func:`~.load.load_config`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from functools import cached_property
from ipaddress import IPv4Address, IPv6Address, IPv6Interface, IPv6Network
from pathlib import Path
from typing import Any, Literal

Role = Literal["ha", "mn", "cn"]
HomeAddressMode = Literal["static", "prefix", "autoconfigure"]


class Secret:
    """Key bytes that repr, str, format, logging and ``dataclasses.asdict`` never reveal."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = bytes(value)

    def reveal(self) -> bytes:
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return f"<secret: {len(self._value)} bytes>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash((Secret, len(self._value)))

    # deepcopy (used by dataclasses.asdict) must not fall back to __reduce__ and copy the bytes
    # into a plain, printable object.
    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled")


@dataclass(frozen=True)
class MNKey:
    """A mobile node's RFC 4285 MN-HA security association: SPI and HMAC-SHA1-96 key."""

    spi: int
    key: Secret
    home_addresses: tuple[IPv6Network, ...] | None = None
    max_bindings: int | None = None


@dataclass(frozen=True)
class Keys:
    """The per-mobile-node shared keys from ``keys_file``; repr shows NAIs and SPIs only."""

    source: str
    entries: tuple[tuple[str, MNKey], ...]
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @cached_property
    def _by_nai(self) -> dict[str, MNKey]:
        return dict(self.entries)

    def for_nai(self, nai: str) -> tuple[int, bytes]:
        """``(spi, key bytes)`` for ``nai``; KeyError naming the NAI if it has no entry."""
        try:
            entry = self._by_nai[nai]
        except KeyError:
            raise KeyError(f"no key for NAI {nai!r} in {self.source}") from None
        return entry.spi, entry.key.reveal()

    def entry(self, nai: str) -> MNKey | None:
        return self._by_nai.get(nai)

    def spi_for(self, nai: str) -> int:
        """The SPI alone, for checks that have no business touching the key."""
        return self.for_nai(nai)[0]

    def __contains__(self, nai: object) -> bool:
        return nai in self._by_nai

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def nais(self) -> tuple[str, ...]:
        return tuple(nai for nai, _ in self.entries)

    def to_public_dict(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for nai, e in self.entries:
            shown: dict[str, Any] = {"spi": e.spi, "key": f"<redacted, {len(e.key)} bytes>"}
            if e.home_addresses is not None:
                shown["home_addresses"] = [str(n) for n in e.home_addresses]
            if e.max_bindings is not None:
                shown["max_bindings"] = e.max_bindings
            out[nai] = shown
        return out

    def __repr__(self) -> str:
        count = len(self.entries)
        shown = "".join(f", {nai} spi {e.spi}" for nai, e in self.entries[:5])
        more = f", and {count - 5} more" if count > 5 else ""
        noun = "mobile node" if count == 1 else "mobile nodes"
        return f"Keys({self.source!r}: {count} {noun}{shown}{more})"


@dataclass(frozen=True)
class HomeAgentConfig:
    interfaces: tuple[str, ...]
    address: IPv6Address | None
    home_prefixes: tuple[IPv6Network, ...]
    preference: int
    lifetime: float
    max_binding_lifetime: float
    refresh_advice: float | None
    dad: bool
    sequence_window: int
    replay_window: float
    max_bindings: int
    max_bindings_per_nai: int
    max_pending_dad: int
    max_home_agents: int
    error_rate_per_destination: int
    error_rate_total: int
    unknown_sender_rate: int


@dataclass(frozen=True)
class HomeAddressConfig:
    address: IPv6Interface
    interface: str
    home_agent: IPv6Address | None


@dataclass(frozen=True)
class ForeignAddressConfig:
    address: IPv6Interface
    interface: str


@dataclass(frozen=True)
class MobileNodeConfig:
    home_addresses: tuple[HomeAddressConfig, ...]
    home_prefix: IPv6Network | None
    autoconfigure: bool
    nai: str | None
    spi: int | None
    interfaces: tuple[str, ...]
    home_registration_lifetime: float
    bu_lifetime: float
    route_optimization: bool
    correspondents: tuple[IPv6Address, ...]
    route_optimization_from_traffic: bool
    max_correspondents: int
    no_route_optimization: tuple[IPv6Network, ...]
    foreign_addresses: tuple[ForeignAddressConfig, ...]
    eager_movement_detection: int
    initial_bindack_timeout: float
    max_bindack_timeout: float

    @property
    def home_address_mode(self) -> HomeAddressMode:
        if self.home_addresses:
            return "static"
        return "prefix" if self.home_prefix is not None else "autoconfigure"


@dataclass(frozen=True)
class CorrespondentNodeConfig:
    route_optimization: bool
    binding_refresh_request_before: float | None


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool
    address: IPv4Address | IPv6Address
    port: int
    textfile: Path | None
    interval: float


@dataclass(frozen=True)
class AgentConfig:
    role: Role
    control_socket: Path
    state_dir: Path
    log_level: str
    debug: bool
    authentication: str
    keys_file: Path
    dataplane: str
    home_agent: HomeAgentConfig | None
    mobile_node: MobileNodeConfig | None
    correspondent_node: CorrespondentNodeConfig
    metrics: MetricsConfig
    keys: Keys | None = field(default=None, repr=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)
    source: str | None = field(default=None, compare=False)

    @property
    def effective_log_level(self) -> str:
        return "debug" if self.debug else self.log_level

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain data for "show configuration"; it holds no key material."""
        from .schema import to_dict

        return to_dict(self)
