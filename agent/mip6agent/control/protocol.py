"""Wire format of the control API, shared by the server, the CLIs and the Ansible modules.

One request per line: ``{"command": NAME, "args": {...}}``. One reply per line:
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": MESSAGE}``. The Ansible
collection's module_utils speaks the same format without importing this package.
"""

from __future__ import annotations

import json

MAX_LINE = 1 << 20
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
    "bindings": "mip6stat: binding cache",
    "clear-bindings": "mip6stat -c on the binding cache",
    "bul": "mip6stat: binding update list",
    "clear-bul": "clear the binding update list (deregisters first)",
    "home-agents": "mip6stat: home agents list",
    "clear-home-agents": "clear the home agents list",
    "home-addresses": "mip6stat: home addresses",
    "clear-home-addresses": "mip6stat -M: clear home addresses",
    "counters": "mip6stat: counters",
    "clear-counters": "mip6stat -c: clear counters",
}


class ControlError(Exception):
    """A failed request; the message is for the operator."""


def encode_request(command: str, args: dict | None = None) -> bytes:
    return json.dumps({"command": command, "args": args or {}}).encode() + b"\n"


def decode_request(line: bytes) -> tuple[str, dict]:
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise ControlError(f"request is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("command"), str):
        raise ControlError('request must be an object with a "command" string')
    args = data.get("args", {})
    if not isinstance(args, dict):
        raise ControlError('"args" must be an object')
    return data["command"], args


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
