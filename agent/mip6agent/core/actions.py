"""What the core asks the I/O layer to do. Plain values; the I/O layer executes them."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network


@dataclass(frozen=True, slots=True)
class SendPacket:
    """A whole IPv6 packet from :func:`mip6agent.wire.build_packet`."""

    data: bytes
    destination: IPv6Address
    interface: str | None = None


@dataclass(frozen=True, slots=True)
class InstallBinding:
    """HA: route the home address to the care-of address and proxy for it on the home link."""

    home_address: IPv6Address
    care_of_address: IPv6Address
    home_agent: IPv6Address
    interface: str


@dataclass(frozen=True, slots=True)
class RemoveBinding:
    home_address: IPv6Address


@dataclass(frozen=True, slots=True)
class AnnounceHomeAddress:
    """Send an unsolicited NA (override) for ``address`` on ``interface``."""

    address: IPv6Address
    interface: str


@dataclass(frozen=True, slots=True)
class ProxyAddress:
    """HA: answer and defend ND for ``address`` on ``interface`` (a mobile node's link-local
    address while its binding has the L flag, RFC 6275 10.4.1); nothing is tunnelled to it."""

    address: IPv6Address
    interface: str


@dataclass(frozen=True, slots=True)
class UnproxyAddress:
    address: IPv6Address
    interface: str


@dataclass(frozen=True, slots=True)
class StartDAD:
    """HA: probe the home link for ``address``; report NAs/NSs for it as conflicts."""

    address: IPv6Address
    interface: str


@dataclass(frozen=True, slots=True)
class StopDAD:
    address: IPv6Address
    interface: str


@dataclass(frozen=True, slots=True)
class AttachTunnel:
    """MN: home address on lo, reverse tunnel to the HA, decapsulation at the CoA."""

    home_address: IPv6Address
    care_of_address: IPv6Address
    home_agent: IPv6Address
    interface: str


@dataclass(frozen=True, slots=True)
class PrepareCareOf:
    """MN about to register ``care_of_address``: accept tunnelled packets there already."""

    care_of_address: IPv6Address
    home_agent: IPv6Address
    interface: str


@dataclass(frozen=True, slots=True)
class LeaveHomeLink:
    """MN about to register from a foreign link: take the home address off the physical
    interfaces first. Left there after a visit home, its on-link prefix route would send
    the Binding Update to the home agent out of the foreign link, where nobody answers."""

    home_address: IPv6Address


@dataclass(frozen=True, slots=True)
class DetachTunnel:
    """MN: remove the tunnel; back home, also put the home address on the home link."""

    home_address: IPv6Address
    prefix: IPv6Network
    interface: str
    at_home: bool = True


@dataclass(frozen=True, slots=True)
class LeaveOldLinks:
    """MN on a new link: drop addresses outside ``prefixes`` that SLAAC gave us elsewhere,
    and default routes through routers other than ``router``.

    The kernel keeps both for their lifetimes, so without this the old care-of address and
    the old, unreachable default router would stay in use after a move.
    """

    interface: str
    router: IPv6Address | None
    prefixes: tuple[IPv6Network, ...]


@dataclass(frozen=True, slots=True)
class SendRouterSolicitation:
    interface: str


@dataclass(frozen=True, slots=True)
class StateChanged:
    """Persist the named table (binding cache or binding update list).

    ``urgent`` changes (a binding created, moved or removed) are written at once; others
    (a refresh that only extends a lifetime) may be batched, since losing one only makes
    a restored binding expire early, and the mobile node refreshes it again.
    """

    table: str
    urgent: bool = True
    # The binding that changed (home agent); None: anything in the table may have changed.
    key: IPv6Address | None = None


@dataclass(frozen=True, slots=True)
class Log:
    """``kind`` groups repeated lines so a flood of one kind can be rate-limited.

    With ``args``, ``message`` is a %-format applied only if the line is written: a
    flood of rejected packets then costs no string formatting for suppressed lines.
    """

    level: str
    message: str
    kind: str | None = None
    args: tuple[object, ...] = ()
    # Structured fields for the journal (MIP6_HOA=..., docs/operations.md): ("hoa", addr).
    fields: tuple[tuple[str, object], ...] = ()

    @property
    def text(self) -> str:
        return self.message % self.args if self.args else self.message


@dataclass(frozen=True, slots=True)
class InstallCorrespondentBinding:
    """Route optimisation between ``home_address`` (at ``care_of_address``) and
    ``correspondent`` (RFC 6275 9.3, 11.3.1).

    On a correspondent node: packets to the home address go to the care-of address with a
    Type 2 Routing Header, and packets from the care-of address with a Home Address option
    naming the home address are accepted. On a mobile node: packets from the home address
    to the correspondent leave from the care-of address with a Home Address option, and
    its packets with a Type 2 Routing Header are accepted. Installing again replaces the
    care-of address.
    """

    home_address: IPv6Address
    care_of_address: IPv6Address
    correspondent: IPv6Address


@dataclass(frozen=True, slots=True)
class RemoveCorrespondentBinding:
    """Undo :class:`InstallCorrespondentBinding`: traffic goes through the home agent again."""

    home_address: IPv6Address
    correspondent: IPv6Address


Action = (
    SendPacket
    | InstallBinding
    | RemoveBinding
    | AnnounceHomeAddress
    | ProxyAddress
    | UnproxyAddress
    | StartDAD
    | StopDAD
    | AttachTunnel
    | PrepareCareOf
    | LeaveHomeLink
    | DetachTunnel
    | SendRouterSolicitation
    | LeaveOldLinks
    | StateChanged
    | Log
    | InstallCorrespondentBinding
    | RemoveCorrespondentBinding
)
