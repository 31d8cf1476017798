"""The seed's ``mip6config -f`` file (KAME ``mip6.conf``), converted to agent configuration.

One setting per line, ``keyword [argument]``; ``#`` starts a comment. The delivery notes name
four lines::

    enable_ha                                   role: ha
    autoconfig                                  role: mn, mobile_node.autoconfigure: true
    homeaddr <addr>/<plen>@<if>[%<ha addr>]     role: mn, one mobile_node.home_addresses entry
    homepref <prefix>/<plen>                    role: mn, mobile_node.home_prefix

KAME's mip6config also read value lines; those with an equivalent are converted too
(``ha_pref``, ``hr_lifetime``, ``bu_lifetime``, ``coaddr``, ``bu_to_cn``, ``eager_md``,
``debug``) and the rest are refused with the reason. The result is a partial mapping for
:func:`~.schema.validate_mapping`: the seed had no interface lists, keys or NAIs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .kinds import Address, HostPrefix, IfName
from .schema import lookup
from .walker import INVALID, Ctx, quote, suggest

_HOMEADDR_FORM = "<address>/<plen>@<interface>[%<home agent address>]"
_COADDR_FORM = "<address>/<plen>@<interface>"


@dataclass(frozen=True)
class _Keyword:
    section: str | None  # the section its setting lives in, which decides HA against MN
    target: str | None  # key set inside that section (or at the top level)
    argument: str  # "none", "spec", "prefix", "number", "flag" (0|1, default 1), "level"
    sets_role: bool = False


_KEYWORDS = {
    "enable_ha": _Keyword("home_agent", None, "none", sets_role=True),
    "autoconfig": _Keyword("mobile_node", "autoconfigure", "none", sets_role=True),
    "homeaddr": _Keyword("mobile_node", "home_addresses", "spec", sets_role=True),
    "homepref": _Keyword("mobile_node", "home_prefix", "prefix", sets_role=True),
    "ha_pref": _Keyword("home_agent", "preference", "number"),
    "hr_lifetime": _Keyword("mobile_node", "home_registration_lifetime", "number"),
    "bu_lifetime": _Keyword("mobile_node", "bu_lifetime", "number"),
    "coaddr": _Keyword("mobile_node", "foreign_addresses", "spec"),
    "bu_to_cn": _Keyword("mobile_node", "route_optimization", "flag"),
    "eager_md": _Keyword("mobile_node", "eager_movement_detection", "level"),
    "debug": _Keyword(None, "debug", "flag"),
}

_UNSUPPORTED = {
    "fwd_sl_unicast": "site-local addresses are deprecated (RFC 3879)",
    "fwd_sl_multicast": "site-local addresses are deprecated (RFC 3879)",
    "prom_mode": "movement detection uses netlink events, not promiscuous mode",
    "rev_tunnel": "without route optimisation (mobile_node.route_optimization: false) all "
    "traffic already goes through the home agent",
    "br_update": "KAME gave a percentage of the lifetime; set "
    "correspondent_node.binding_refresh_request_before in seconds",
    "enable_br": "set correspondent_node.binding_refresh_request_before instead",
}

_HOME_MODES = ("autoconfig", "homeaddr", "homepref")
_SECTION_NAMES = {"home_agent": "Home Agent", "mobile_node": "Mobile Node"}
_NUMBER = re.compile(r"[-+]?[0-9]+")


def _spec(
    spec: str, form: str, with_home_agent: bool, path: str, line: int | None, ctx: Ctx
) -> dict[str, Any] | None:
    address, at, rest = spec.partition("@")
    interface, percent, home_agent = rest.partition("%")
    if not at or "/" not in address or (percent and not with_home_agent):
        ctx.error(path, f"expected {form}, got {quote(spec)}", line)
        return None
    before = len(ctx.problems)
    HostPrefix().check(address, path, line, ctx)
    IfName().check(interface, path, line, ctx)
    if home_agent.strip():
        Address().check(home_agent, path, line, ctx)
    if len(ctx.problems) > before:
        return None
    out = {"address": address, "interface": interface}
    if home_agent.strip():
        out["home_agent"] = home_agent.strip()
    return out


def parse_homeaddr_spec(spec: str) -> dict[str, Any]:
    """``addr/plen@if[%ha]`` (mip6config ``-H``) as a ``home_addresses`` entry."""
    ctx = Ctx()
    out = _spec(spec.strip(), _HOMEADDR_FORM, True, "-H", None, ctx)
    if out is None:
        raise ConfigError(ctx.problems)
    return out


def parse_coaddr_spec(spec: str) -> dict[str, Any]:
    """``addr/plen@if`` (mip6config ``-F``) as a ``foreign_addresses`` entry."""
    ctx = Ctx()
    out = _spec(spec.strip(), _COADDR_FORM, False, "-F", None, ctx)
    if out is None:
        raise ConfigError(ctx.problems)
    return out


def _value(kw: _Keyword, name: str, arg: str | None, line: int, ctx: Ctx) -> Any:
    """The converted argument of one line, or INVALID after reporting why."""
    if kw.argument == "none":
        if arg is not None:
            ctx.error(name, f"takes no argument, got {quote(arg)}", line)
            return INVALID
        return True
    if kw.argument in ("flag", "level"):
        allowed = ("0", "1") if kw.argument == "flag" else ("0", "1", "2")
        if arg is None:
            arg = "1"  # as KAME's set_enable(): a bare flag line switches it on
        if arg not in allowed:
            ctx.error(name, f"expected {' or '.join(allowed)}, got {quote(arg)}", line)
            return INVALID
        return arg == "1" if kw.argument == "flag" else int(arg)
    if arg is None:
        forms = {"spec": _HOMEADDR_FORM if name == "homeaddr" else _COADDR_FORM}
        shown = forms.get(kw.argument, "<prefix>/<plen>" if kw.argument == "prefix" else "N")
        ctx.error(name, f"needs an argument: {name} {shown}", line)
        return INVALID
    if kw.argument == "spec":
        homeaddr = name == "homeaddr"
        form = _HOMEADDR_FORM if homeaddr else _COADDR_FORM
        out = _spec(arg, form, homeaddr, name, line, ctx)
        return INVALID if out is None else out
    field = lookup(f"{kw.section}.{kw.target}")
    if kw.argument == "prefix":
        return arg if field.kind.check(arg, name, line, ctx) is not INVALID else INVALID
    if not _NUMBER.fullmatch(arg):
        ctx.error(name, f"expected a whole number, got {quote(arg)}", line)
        return INVALID
    number = int(arg)
    return number if field.kind.check(number, name, line, ctx) is not INVALID else INVALID


def parse_seed_file(text: str, source: str = "mip6.conf") -> dict[str, Any]:
    """Convert ``mip6config -f`` file text to a partial agent configuration mapping.

    Raises :class:`ConfigError` with every bad line as ``source:line: keyword: message``.
    """
    ctx = Ctx(source)
    lines: list[tuple[int, str, str | None]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        words = raw.split("#", 1)[0].split(None, 1)
        if not words:
            continue
        name, arg = words[0], (words[1].strip() if len(words) > 1 else None)
        if name in _UNSUPPORTED:
            ctx.error(name, f"has no equivalent in mip6agent: {_UNSUPPORTED[name]}", number)
        elif name not in _KEYWORDS:
            hint = suggest(name, [*_KEYWORDS, *_UNSUPPORTED])
            ctx.error("", f"unknown line {quote(name)}{hint}", number)
        else:
            lines.append((number, name, arg))

    result: dict[str, Any] = {}
    first_section: tuple[str, int, str] | None = None  # section, line, keyword
    home_mode: tuple[str, int] | None = None
    seen: dict[str, int] = {}
    for number, name, arg in lines:
        kw = _KEYWORDS[name]
        value = _value(kw, name, arg, number, ctx)
        if kw.section is not None:
            if first_section is None:
                first_section = (kw.section, number, name)
            elif first_section[0] != kw.section:
                other = _SECTION_NAMES[first_section[0]]
                ctx.error(
                    name,
                    f"is a {_SECTION_NAMES[kw.section]} setting, but {first_section[2]!r} on "
                    f"line {first_section[1]} is a {other} one: the Home Agent and Mobile Node "
                    "functions cannot be active on one host",
                    number,
                )
                continue
        if name in _HOME_MODES:
            if home_mode is not None and home_mode[0] != name:
                ctx.error(
                    name,
                    f"conflicts with {home_mode[0]!r} on line {home_mode[1]}: a mobile node gets "
                    "its home addresses one way (homeaddr, homepref or autoconfig)",
                    number,
                )
                continue
            home_mode = home_mode or (name, number)
        if name not in ("homeaddr", "coaddr"):
            if name in seen:
                ctx.error(name, f"repeats line {seen[name]}", number)
                continue
            seen[name] = number
        if value is INVALID:
            continue
        if kw.sets_role:
            result["role"] = "ha" if kw.section == "home_agent" else "mn"
        target = result.setdefault(kw.section, {}) if kw.section else result
        if kw.target is None:
            continue
        if kw.argument == "spec":
            target.setdefault(kw.target, []).append(value)
        else:
            target[kw.target] = value
    if ctx.problems:
        raise ConfigError(sorted(ctx.problems, key=lambda p: p.line or 0))
    return result
