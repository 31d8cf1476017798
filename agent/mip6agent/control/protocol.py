"""Wire format of the control API, shared by the server, the CLIs and the Ansible modules.

One request per line: ``{"command": NAME, "args": {...}}``. One reply per line:
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": MESSAGE}``. The Ansible
collection's module_utils speaks the same format without importing this package.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

MAX_LINE = 1 << 20
# Deepest nesting of arrays and objects a request may have (the request object is level 1).
MAX_DEPTH = 32
DEFAULT_SOCKET = "/run/mip6/agent.sock"

# Every command the server knows, with the mip6config/mip6stat flag it stands for.
COMMANDS = {
    "status": "role, version, data-plane backend, uptime",
    "capabilities": "what this host's kernel supports (signaling, data planes, ESP)",
    "show-config": "the running configuration, keys redacted",
    "set-config": "replace the running configuration (validated first)",
    "reload": "re-read the configuration file (as SIGHUP does)",
    "enable-ha": "mip6config -g [-y preference]",
    "disable": "mip6config -x: stop the home agent or mobile node function",
    "enable": "start the function again after disable (home agent: as enable-ha)",
    "set-home-address": "mip6config -H addr/plen@if%ha",
    "set-home-prefix": "mip6config -P prefix/plen",
    "autoconfigure": "mip6config -a",
    "set-lifetimes": "mip6config -b / -l",
    "add-foreign-address": "mip6config -F",
    "remove-foreign-address": "mip6config -E",
    "debug": "mip6config -d 1|0",
    "route-optimization": "mip6config -r 1|0",
    "binding-refresh": "mip6config -q 1|0 / -w percent",
    "bindings": "mip6stat: binding cache",
    "clear-bindings": "mip6stat -c on the binding cache",
    "bul": "mip6stat: binding update list",
    "correspondents": "mip6stat -u: the binding update list's correspondent entries",
    "clear-bul": "clear the binding update list (deregisters first)",
    "home-agents": "mip6stat: home agents list",
    "clear-home-agents": "clear the home agents list",
    "home-addresses": "mip6stat: home addresses",
    "clear-home-addresses": "mip6stat -M: clear home addresses",
    "counters": "mip6stat: counters",
    "clear-counters": "mip6stat -c: clear counters",
}


_NONE = type(None)
_NUMBER = (int, float)

# The arguments each command takes: name -> (accepted JSON types, required). They mirror the
# parameters of the agent's ``_cmd_*`` methods (a test keeps the two in step), so a request
# with a missing, unknown or mistyped argument is refused before it reaches the agent.
ARGUMENTS: dict[str, dict[str, tuple[type | tuple[type, ...], bool]]] = {
    "status": {},
    "capabilities": {},
    "show-config": {},
    "set-config": {"config": (dict, True), "merge": (bool, False)},
    "reload": {},
    "enable-ha": {"preference": ((int, _NONE), False)},
    "disable": {},
    "enable": {},
    "set-home-address": {
        "address": (str, True),
        "interface": (str, True),
        "home_agent": ((str, _NONE), False),
    },
    "set-home-prefix": {"prefix": (str, True)},
    "autoconfigure": {},
    # mip6config -b, -l and -e; the configuration schema checks the ranges.
    "set-lifetimes": {
        "bu_lifetime": (_NUMBER, False),
        "home_registration_lifetime": (_NUMBER, False),
        "eager_movement_detection": (int, False),
    },
    "add-foreign-address": {"address": (str, True), "interface": (str, True)},
    "remove-foreign-address": {"address": (str, True), "interface": ((str, _NONE), False)},
    "debug": {"on": (bool, True)},
    "route-optimization": {"on": (bool, True)},
    "binding-refresh": {"on": (bool, False), "percent": (int, False)},
    "bindings": {},
    "clear-bindings": {},
    "bul": {},
    "correspondents": {},
    "clear-bul": {},
    "home-agents": {},
    "clear-home-agents": {},
    "home-addresses": {},
    "clear-home-addresses": {},
    "counters": {},
    "clear-counters": {},
}

_TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    dict: "an object",
    list: "an array",
    _NONE: "null",
}


Arguments = dict[str, object]
"""A request's ``args``: a decoded JSON object."""


class ControlError(Exception):
    """A failed request; the message is for the operator."""


def encode_request(command: str, args: Arguments | None = None) -> bytes:
    return json.dumps({"command": command, "args": args or {}}).encode() + b"\n"


def decode_request(line: bytes) -> tuple[str, Arguments]:
    try:
        data = json.loads(line)
    except RecursionError:
        # The C decoder recurses once per level: a deep enough request exhausts the stack.
        raise ControlError(f"request nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise ControlError(f"request is not JSON: {exc}") from None
    if _depth_exceeds(data, MAX_DEPTH):
        raise ControlError(f"request nests deeper than {MAX_DEPTH} levels")
    if not isinstance(data, dict) or not isinstance(data.get("command"), str):
        raise ControlError('request must be an object with a "command" string')
    args = data.get("args", {})
    if not isinstance(args, dict):
        raise ControlError('"args" must be an object')
    return data["command"], args


def _depth_exceeds(data: object, limit: int) -> bool:
    """Whether arrays and objects in ``data`` nest deeper than ``limit`` (no recursion)."""
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children: Iterable[object]
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _accepts(value: object, types: type | tuple[type, ...]) -> bool:
    accepted = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool):  # bool is an int subclass: only a declared bool takes it
        return bool in accepted
    return isinstance(value, accepted)


def _describe_types(types: type | tuple[type, ...]) -> str:
    accepted = types if isinstance(types, tuple) else (types,)
    if int in accepted and float in accepted:
        accepted = tuple(t for t in accepted if t is not int)
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in accepted)


def describe_value(value: object) -> str:
    """The JSON type of ``value`` as a phrase ("a string", "null")."""
    if isinstance(value, bool):
        return "a boolean"
    for kind, name in _TYPE_NAMES.items():
        if isinstance(value, kind):
            return name
    return type(value).__name__


def check_arguments(command: str, args: Arguments) -> None:
    """Refuse ``args`` unless they fit the command's declared :data:`ARGUMENTS`."""
    declared = ARGUMENTS.get(command)
    if declared is None:
        raise ControlError(f"unknown command {command!r}")
    unknown = sorted(name for name in args if name not in declared)
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        plural = "s" if len(unknown) > 1 else ""
        raise ControlError(f"unknown argument{plural} {names} for {command}")
    for name, (types, required) in declared.items():
        if name not in args:
            if required:
                raise ControlError(f"{command}: missing argument {name!r}")
            continue
        value = args[name]
        if not _accepts(value, types):
            raise ControlError(
                f"{command}: argument {name!r} must be {_describe_types(types)}, "
                f"got {describe_value(value)}"
            )


def encode_reply(result: object = None, error: str | None = None) -> bytes:
    if error is not None:
        return json.dumps({"ok": False, "error": error}).encode() + b"\n"
    return json.dumps({"ok": True, "result": result}, default=str).encode() + b"\n"


def decode_reply(line: bytes) -> object:
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise ControlError(f"agent sent something that is not JSON: {exc}") from None
    if not isinstance(data, dict) or "ok" not in data:
        raise ControlError("agent sent a malformed reply")
    if not data["ok"]:
        raise ControlError(str(data.get("error", "unknown error")))
    return data.get("result")
