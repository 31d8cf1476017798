"""Value kinds for Mobile IPv6 configuration: addresses, prefixes, interface names, NAIs, paths."""

from __future__ import annotations

import ipaddress
from ipaddress import IPv6Address, IPv6Interface
from pathlib import Path
from typing import Any

from ..wire.addresses import anycast_problem as anycast_problem
from ..wire.addresses import unicast_problem
from .walker import INVALID, Ctx, Kind, describe, describe_type, quote

# Linux IFNAMSIZ is 16 including the terminating NUL.
IFNAME_MAX = 15
# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
UNIX_PATH_MAX = 107
# RFC 4283 Mobile Node Identifier option: the 8-bit length also covers the subtype byte.
NAI_MAX_BYTES = 254


def _text(value: Any, what: str, example: str, path: str, line: int | None, ctx: Ctx) -> Any:
    if isinstance(value, str):
        return value.strip()
    ctx.error(path, f"expected {what} as a string like {example}, got {describe(value)}", line)
    return INVALID


def _version_hint(text: str) -> str:
    try:
        if ipaddress.ip_interface(text).version == 4:
            return " (it is IPv4; Mobile IPv6 needs an IPv6 address)"
    except ValueError:
        pass
    return ""


class Address(Kind):
    """A unicast IPv6 address without prefix length."""

    def check(self, value: Any, path: str, line: int | None, ctx: Ctx) -> Any:
        text = _text(value, "an IPv6 address", "2001:db8:1::1", path, line, ctx)
        if text is INVALID:
            return INVALID
        if "/" in text:
            ctx.error(path, f"{quote(text)}: expected an address without a prefix length", line)
            return INVALID
        try:
            addr = IPv6Address(text)
        except ValueError:
            ctx.error(path, f"{quote(text)} is not an IPv6 address{_version_hint(text)}", line)
            return INVALID
        if addr.scope_id:
            ctx.error(path, f"{quote(text)}: a zone index (%...) is not allowed here", line)
            return INVALID
        problem = unicast_problem(addr)
        if problem:
            ctx.error(path, f"{quote(text)} {problem}; a global unicast address is needed", line)
            return INVALID
        return addr

    def dump(self, value: Any) -> Any:
        return str(value)

    def describe(self) -> str:
        return "IPv6 address"


class ListenAddress(Kind):
    """An IP address (IPv6 or IPv4) to bind a listening socket to: loopback, an address of
    this host, or the unspecified address for all of them."""

    def check(self, value: Any, path: str, line: int | None, ctx: Ctx) -> Any:
        text = _text(value, "an IP address", "::1", path, line, ctx)
        if text is INVALID:
            return INVALID
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            ctx.error(path, f"{quote(text)} is not an IP address", line)
            return INVALID
        if addr.is_multicast or (isinstance(addr, IPv6Address) and addr.scope_id):
            ctx.error(path, f"{quote(text)}: a multicast or zoned address cannot be bound", line)
            return INVALID
        return addr

    def dump(self, value: Any) -> Any:
        return str(value)

    def describe(self) -> str:
        return "IP address"


class Prefix(Kind):
    """An IPv6 prefix ``address/length`` with the host bits zero."""

    def __init__(self, max_length: int = 128) -> None:
        self.max_length = max_length

    def check(self, value: Any, path: str, line: int | None, ctx: Ctx) -> Any:
        text = _text(value, "an IPv6 prefix", "2001:db8:1::/64", path, line, ctx)
        if text is INVALID:
            return INVALID
        if "/" not in text:
            ctx.error(path, f"{quote(text)}: expected a prefix with a length, like {text}/64", line)
            return INVALID
        try:
            iface = IPv6Interface(text)
        except ValueError:
            ctx.error(path, f"{quote(text)} is not an IPv6 prefix{_version_hint(text)}", line)
            return INVALID
        net = iface.network
        if iface.ip != net.network_address:
            ctx.error(path, f'{quote(text)} has host bits set (did you mean "{net}"?)', line)
            return INVALID
        if not 1 <= net.prefixlen <= self.max_length:
            ctx.error(
                path,
                f"{quote(text)}: the prefix length must be between 1 and {self.max_length}",
                line,
            )
            return INVALID
        kind = "multicast" if net.is_multicast else "link-local" if net.is_link_local else ""
        if kind:
            ctx.error(path, f"{quote(text)} is a {kind} prefix; a global prefix is needed", line)
            return INVALID
        problem = unicast_problem(net.network_address)
        if problem:
            ctx.error(path, f"{quote(text)}: its network address {problem}", line)
            return INVALID
        return net

    def dump(self, value: Any) -> Any:
        return str(value)

    def describe(self) -> str:
        return f"IPv6 prefix (length 1..{self.max_length})"


class AddressOrPrefix(Kind):
    """A global address (as a /128) or a prefix, e.g. the home addresses a key may claim."""

    def check(self, value: Any, path: str, line: int | None, ctx: Ctx) -> Any:
        if isinstance(value, str) and "/" in value:
            return Prefix().check(value, path, line, ctx)
        address = Address().check(value, path, line, ctx)
        return INVALID if address is INVALID else ipaddress.IPv6Network(address)

    def dump(self, value: Any) -> Any:
        return str(value.network_address) if value.prefixlen == 128 else str(value)

    def describe(self) -> str:
        return "IPv6 address or prefix"


class HostPrefix(Kind):
    """An address with its prefix length, ``2001:db8:1::100/64`` (mip6config ``addr/plen``)."""

    def check(self, value: Any, path: str, line: int | None, ctx: Ctx) -> Any:
        text = _text(value, "an IPv6 address/prefix", "2001:db8:1::100/64", path, line, ctx)
        if text is INVALID:
            return INVALID
        try:
            iface = IPv6Interface(text)
        except ValueError:
            ctx.error(
                path, f"{quote(text)} is not an IPv6 address/prefix{_version_hint(text)}", line
            )
            return INVALID
        if "/" not in text:
            ctx.error(path, f"{quote(text)}: the prefix length is missing, like {text}/64", line)
            return INVALID
        if not 1 <= iface.network.prefixlen <= 128:
            ctx.error(path, f"{quote(text)}: the prefix length must be between 1 and 128", line)
            return INVALID
        problem = unicast_problem(iface.ip)
        if problem:
            ctx.error(path, f"{quote(text)} {problem}; a global unicast address is needed", line)
            return INVALID
        problem = anycast_problem(iface)
        if problem:
            ctx.error(path, f"{quote(text)} {problem}", line)
            return INVALID
        return iface

    def dump(self, value: Any) -> Any:
        return str(value)

    def describe(self) -> str:
        return "IPv6 address/prefix length"


class IfName(Kind):
    """A Linux interface name, by the kernel's own rules (dev_valid_name)."""

    def check(self, value: Any, path: str, line: int | None, ctx: Ctx) -> Any:
        if not isinstance(value, str):
            ctx.error(path, f"expected an interface name, got {describe(value)}", line)
            return INVALID
        size = len(value.encode())
        if not value or size > IFNAME_MAX:
            ctx.error(
                path,
                f"{quote(value)} is not a valid interface name "
                f"(1 to {IFNAME_MAX} bytes, got {size})",
                line,
            )
            return INVALID
        if value in (".", "..") or any(c in value for c in "/:") or any(c.isspace() for c in value):
            ctx.error(
                path,
                f"{quote(value)} is not a valid interface name (no '/', ':' or spaces)",
                line,
            )
            return INVALID
        return value

    def describe(self) -> str:
        return "interface name"


class Nai(Kind):
    """An RFC 4282 Network Access Identifier as carried by the RFC 4283 MN-ID option."""

    def __init__(self, *, secret: bool = False) -> None:
        self.secret = secret

    def check(self, value: Any, path: str, line: int | None, ctx: Ctx) -> Any:
        if not isinstance(value, str):
            shown = describe_type(value) if self.secret else describe(value)
            ctx.error(path, f"expected a NAI like mn1@example.net, got {shown}", line)
            return INVALID
        size = len(value.encode())
        if not value or size > NAI_MAX_BYTES:
            ctx.error(path, f"a NAI must be 1 to {NAI_MAX_BYTES} bytes, got {size}", line)
            return INVALID
        if any(c.isspace() or not c.isprintable() for c in value):
            ctx.error(path, f"{quote(value)}: a NAI has no spaces or control characters", line)
            return INVALID
        user, at, realm = value.rpartition("@")
        if not (user and at and realm):
            shown = "it" if self.secret else quote(value)
            ctx.error(
                path,
                f"expected a NAI in the form user@realm, like mn1@example.net; {shown} is not",
                line,
            )
            return INVALID
        return value

    def describe(self) -> str:
        return "NAI user@realm (RFC 4282)"


class AbsPath(Kind):
    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes

    def check(self, value: Any, path: str, line: int | None, ctx: Ctx) -> Any:
        if not isinstance(value, str):
            ctx.error(path, f"expected an absolute path, got {describe(value)}", line)
            return INVALID
        if not value.startswith("/") or "\0" in value:
            ctx.error(path, f"{quote(value)} is not an absolute path", line)
            return INVALID
        if self.max_bytes is not None and len(value.encode()) > self.max_bytes:
            ctx.error(
                path,
                f"{quote(value)} is longer than the {self.max_bytes} bytes a Unix socket "
                "path can have",
                line,
            )
            return INVALID
        return Path(value)

    def dump(self, value: Any) -> Any:
        return str(value)

    def describe(self) -> str:
        if self.max_bytes:
            return f"absolute path (at most {self.max_bytes} bytes)"
        return "absolute path"
