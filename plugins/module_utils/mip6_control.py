# Copyright: (c) 2025, Mobile IPv6 fleet suite maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client of the mip6agent control API, and helpers shared by the collection's modules.

The agent listens on a Unix socket (mode 0600). One request per line,
``{"command": NAME, "args": {...}}``; one reply per line, ``{"ok": true, "result": ...}``
or ``{"ok": false, "error": MESSAGE}`` (agent/mip6agent/control/protocol.py). This file
is self-contained (Python 3 standard library only): modules never import ``mip6agent``,
which need not be installed where the module runs, and never run the agent's CLIs.
"""

from __future__ import annotations

import copy
import errno
import ipaddress
import json
import socket

DEFAULT_SOCKET = "/run/mip6/agent.sock"
DEFAULT_TIMEOUT = 10.0
MAX_LINE = 1 << 20

# Module list names (facts keys, with underscores) -> the control API's commands.
LIST_COMMANDS = {
    "bindings": "bindings",
    "bul": "bul",
    "home_agents": "home-agents",
    "home_addresses": "home-addresses",
    "counters": "counters",
}
ROLE_NAMES = {"ha": "home agent", "mn": "mobile node", "cn": "correspondent node"}

# clear-counters resets the protocol counters; the signalling transport's counters and
# the nftables and eBPF counters (packets the kernel counted) keep running.
UNCLEARED_COUNTERS = ("transport.", "tunnelled_in", "param_problem_dropped.", "ro.")


class Mip6ControlError(Exception):
    """A failed request. ``refused`` is True when the agent answered with an error.

    The message is for the operator: it names the socket and the likely fix, or is the
    agent's own error text, verbatim, when the agent refused the request.
    """

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class Mip6Control:
    """Blocking client: one connection per request, a timeout on every step."""

    def __init__(self, path: str = DEFAULT_SOCKET, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout

    def call(self, command: str, args: dict | None = None) -> object:
        """Send one request; return its result or raise :class:`Mip6ControlError`."""
        request = json.dumps({"command": command, "args": args or {}}).encode() + b"\n"
        data = b""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.path)
            sock.sendall(request)
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if len(data) > MAX_LINE:
                    raise Mip6ControlError(f"{self.path}: the agent's reply is too long")
        except FileNotFoundError:
            raise Mip6ControlError(
                f"no agent listening on {self.path} (is mip6agent running?)"
            ) from None
        except PermissionError:
            raise Mip6ControlError(
                f"permission denied on {self.path}: the control socket is mode 0600 and "
                "belongs to the agent's user (run the task as root: become: true)"
            ) from None
        except ConnectionRefusedError:
            raise Mip6ControlError(
                f"no agent listening on {self.path}: connection refused "
                "(a stale socket? is mip6agent running?)"
            ) from None
        except (TimeoutError, socket.timeout):  # noqa: UP041 - socket.timeout on Python < 3.10
            raise Mip6ControlError(
                f"{self.path}: the agent did not answer {command!r} within {self.timeout:g} s"
            ) from None
        except OSError as exc:
            if exc.errno == errno.ENOTSOCK:
                raise Mip6ControlError(f"{self.path} is not a socket") from None
            reason = exc.strerror or str(exc)
            raise Mip6ControlError(f"{self.path}: {reason}") from None
        finally:
            sock.close()
        if not data:
            raise Mip6ControlError(
                f"{self.path}: the agent closed the connection without answering {command!r}"
            )
        return decode_reply(data)


def decode_reply(line: bytes) -> object:
    """The result of one reply line, or :class:`Mip6ControlError` with the agent's text."""
    try:
        reply = json.loads(line)
    except ValueError as exc:
        raise Mip6ControlError(f"the agent sent something that is not JSON: {exc}") from None
    if not isinstance(reply, dict) or "ok" not in reply:
        raise Mip6ControlError("the agent sent a malformed reply (no 'ok' field)")
    if not reply["ok"]:
        raise Mip6ControlError(str(reply.get("error", "unknown error")), refused=True)
    return reply.get("result")


# --- configuration documents ---------------------------------------------------------------


def deep_merge(target: dict, source: dict) -> dict:
    """``target`` with ``source`` merged in, as the agent's ``set-config`` with ``merge``.

    Mappings merge key by key; anything else (lists included) replaces. Returns a new
    document; neither argument is modified.
    """
    merged = copy.deepcopy(target)
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def prune(value: object) -> object:
    """Drop null mapping values, recursively: the schema reads null and absent alike."""
    if isinstance(value, dict):
        return {k: prune(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [prune(v) for v in value]
    return value


def same(a: object, b: object) -> bool:
    """Equality as the agent's strict schema sees it: ``true`` is not ``1``, 600 is 600.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))  # noqa: B905 (Python 3.8)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def differences(a: object, b: object, path: str = "") -> list[str]:
    """Dotted paths where two (pruned) documents differ, for messages."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in list(a) + [k for k in b if k not in a]:
            sub = f"{path}.{key}" if path else str(key)
            out += differences(a.get(key), b.get(key), sub)
        return out
    return [] if same(a, b) else [path or "(document)"]


def number(value: float | int | None) -> float | int | None:
    """600.0 -> 600: Ansible's float options arrive as floats, the agent shows integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def normal_address(value: str | None) -> str | None:
    """An IPv6 address in the agent's (compressed) form; anything else unchanged."""
    if value is None:
        return None
    try:
        return str(ipaddress.IPv6Address(value))
    except ValueError:
        return value


def normal_interface_address(value: str | None) -> str | None:
    """``addr/plen`` in the agent's form (``2001:DB8::0100/64`` -> ``2001:db8::100/64``)."""
    if value is None or "/" not in value:
        return value
    try:
        return str(ipaddress.IPv6Interface(value))
    except ValueError:
        return value


def normal_prefix(value: str | None) -> str | None:
    """A prefix in the agent's form; host bits left for the agent to refuse."""
    if value is None:
        return None
    try:
        return str(ipaddress.IPv6Network(value))
    except ValueError:
        return normal_interface_address(value)


def to_yaml(value: object, indent: int = 0) -> str:
    """A small, deterministic YAML rendering of JSON data, for readable diffs.

    Strings are double-quoted (JSON escapes are valid YAML), so addresses and names can
    never be read as another type.
    """
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return pad + "{}\n"
        out = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                out.append(f"{pad}{key}:\n{to_yaml(item, indent + 2)}")
            else:
                out.append(f"{pad}{key}: {_scalar(item)}\n")
        return "".join(out)
    if isinstance(value, list):
        if not value:
            return pad + "[]\n"
        out = []
        for item in value:
            if isinstance(item, dict) and item:
                body = to_yaml(item, indent + 2)
                out.append(f"{pad}- {body[indent + 2 :]}")
            elif isinstance(item, list) and item:
                out.append(f"{pad}-\n{to_yaml(item, indent + 2)}")
            else:
                out.append(f"{pad}- {_scalar(item)}\n")
        return "".join(out)
    return pad + _scalar(value) + "\n"


def _scalar(value: object) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return json.dumps(value)


def list_name(command: str) -> str:
    """The control API's list name (``home-agents``) as a facts key (``home_agents``)."""
    return command.replace("-", "_")
