"""Test doubles: a fake agent on a real Unix socket, and the AnsibleModule harness."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import socket
import threading
from typing import Any

HA_CONFIG: dict[str, Any] = {
    "role": "ha",
    "control_socket": "/run/mip6/agent.sock",
    "state_dir": "/var/lib/mip6",
    "log_level": "info",
    "debug": False,
    "authentication": "required",
    "keys_file": "/etc/mip6/keys.yml",
    "dataplane": "auto",
    "home_agent": {
        "interfaces": ["eth0"],
        "address": "2001:db8:1::1",
        "home_prefixes": ["2001:db8:1::/64"],
        "preference": 10,
        "lifetime": 1800,
        "max_binding_lifetime": 262140,
        "refresh_advice": None,
        "dad": True,
        "sequence_window": 32768,
        "replay_window": 7,
    },
    "correspondent_node": {"route_optimization": False, "binding_refresh_request_before": None},
}

MN_CONFIG: dict[str, Any] = {
    "role": "mn",
    "control_socket": "/run/mip6/agent.sock",
    "state_dir": "/var/lib/mip6",
    "log_level": "info",
    "debug": False,
    "authentication": "required",
    "keys_file": "/etc/mip6/keys.yml",
    "dataplane": "auto",
    "mobile_node": {
        "home_addresses": [
            {"address": "2001:db8:1::100/64", "interface": "eth0", "home_agent": "2001:db8:1::1"}
        ],
        "nai": "mn1@example.net",
        "spi": None,
        "interfaces": ["eth0"],
        "home_registration_lifetime": 3600,
        "bu_lifetime": 420,
        "route_optimization": False,
        "foreign_addresses": [],
        "eager_movement_detection": 0,
        "initial_bindack_timeout": 1.5,
        "max_bindack_timeout": 32,
    },
    "correspondent_node": {"route_optimization": False, "binding_refresh_request_before": None},
}

CN_CONFIG: dict[str, Any] = {
    key: value for key, value in HA_CONFIG.items() if key != "home_agent"
} | {"role": "cn"}

CHANGING = {
    "set-config",
    "reload",
    "enable-ha",
    "enable",
    "disable",
    "set-home-address",
    "set-home-prefix",
    "autoconfigure",
    "set-lifetimes",
    "add-foreign-address",
    "remove-foreign-address",
    "debug",
    "clear-bindings",
    "clear-bul",
    "clear-home-agents",
    "clear-home-addresses",
    "clear-counters",
}
LISTS = {
    "ha": ["bindings", "home-agents", "counters"],
    "mn": ["bul", "home-addresses", "home-agents", "counters"],
    "cn": ["counters"],
}


class AgentRefusedError(Exception):
    pass


def _merge(target: dict, source: dict) -> None:
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class FakeAgent:
    """Speaks the control protocol on a Unix socket; records every request.

    Its ``set-config`` does a few of the agent's checks (range of the preference, the three
    ways of getting a home address, a role change) so that error paths can be tested.
    """

    def __init__(self, path: str, role: str = "ha") -> None:
        self.path = path
        self.requests: list[tuple[str, dict]] = []
        self.set_role(role)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.reply_override: bytes | None = None

    def set_role(self, role: str) -> None:
        self.role = role
        self.config = copy.deepcopy({"ha": HA_CONFIG, "mn": MN_CONFIG, "cn": CN_CONFIG}[role])
        self.enabled = True
        self.bindings: list[dict] = []
        self.bul: list[dict] = []
        self.home_agents: list[dict] = []
        self.counters: dict[str, int] = {}
        self.correspondents: list[dict] | None = None  # a list: route optimisation is on
        if role == "mn":
            self.bul = [
                {
                    "home_address": "2001:db8:1::100",
                    "state": "registered",
                    "care_of_address": "2001:db8:2::100",
                }
            ]

    # --- server -------------------------------------------------------------------------

    def start(self) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        os.chmod(self.path, 0o600)
        self._sock.listen(16)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _serve(self) -> None:
        assert self._sock is not None
        while True:
            try:
                conn, _peer = self._sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if not data:
                    continue
                conn.sendall(self._answer(data))

    def _answer(self, line: bytes) -> bytes:
        if self.reply_override is not None:
            return self.reply_override
        request = json.loads(line)
        command, args = request["command"], request.get("args", {})
        self.requests.append((command, args))
        try:
            result = self.handle(command, args)
        except AgentRefusedError as exc:
            return json.dumps({"ok": False, "error": str(exc)}).encode() + b"\n"
        return json.dumps({"ok": True, "result": result}).encode() + b"\n"

    @property
    def commands(self) -> list[str]:
        return [command for command, _args in self.requests]

    @property
    def changing(self) -> list[str]:
        return [command for command in self.commands if command in CHANGING]

    # --- the agent's behaviour, in small -----------------------------------------------------

    def handle(self, command: str, args: dict) -> Any:
        if command == "status":
            return {
                "role": self.role,
                "version": "0.1.0",
                "pid": 4242,
                "uptime": 12.5,
                "dataplane": "seg6" if self.role != "cn" else None,
                "enabled": self.enabled if self.role in ("ha", "mn") else True,
                "debug": self.config["debug"],
                "lists": self._lists(),
            }
        if command == "show-config":
            return copy.deepcopy(self.config)
        if command == "set-config":
            return self._set_config(args["config"], args.get("merge", False))
        if command == "enable-ha":
            if self.role != "ha":
                raise AgentRefusedError("this host is a mobile node: ...")
            self.enabled = True
            return copy.deepcopy(self.config)
        if command == "disable":
            if self.role == "ha":
                self.enabled = False
                self.bindings = []
            elif self.role == "mn":
                self.enabled = False
                for entry in self.bul:
                    entry.update(state="idle", care_of_address=None)
            return self.handle("status", {})
        if command == "enable":
            self.enabled = True
            return self.handle("status", {})
        plain = {
            "bindings": "bindings",
            "bul": "bul",
            "home-agents": "home_agents",
            "counters": "counters",
        }
        if command in plain:
            return copy.deepcopy(getattr(self, plain[command]))
        if command == "home-addresses":
            return [{"home_address": e["home_address"]} for e in self.bul]
        if command == "correspondents":
            return copy.deepcopy(self.correspondents or [])
        if command == "clear-bindings":
            self.bindings = []
            return {"cleared": "bindings"}
        if command == "clear-bul":
            for entry in self.bul:
                entry.update(state="idle", care_of_address=None)
            return {"cleared": "bul"}
        if command == "clear-home-agents":
            self.home_agents = []
            return {"cleared": "home-agents"}
        if command == "clear-counters":
            self.counters = {k: v for k, v in self.counters.items() if k.startswith("transport.")}
            return {"cleared": "counters"}
        raise AgentRefusedError(f"unknown command {command!r}")

    def _lists(self) -> list[str]:
        """As the agent: ``correspondents`` after ``bul`` while route optimisation is on."""
        lists = list(LISTS[self.role])
        if self.role == "mn" and self.correspondents is not None:
            lists.insert(lists.index("bul") + 1, "correspondents")
        return lists

    def _set_config(self, config: dict, merge: bool) -> dict:
        data = copy.deepcopy(self.config) if merge else {}
        _merge(data, config)
        if data.get("role") != self.role:
            raise AgentRefusedError(
                f"the role changes from {self.role} to {data.get('role')}: restart the agent"
            )
        preference = (data.get("home_agent") or {}).get("preference", 0)
        if not 0 <= preference <= 65535:
            raise AgentRefusedError(
                f"control request: home_agent.preference: {preference} is out of range 0..65535"
            )
        mn = data.get("mobile_node")
        if mn is not None:
            ways = [k for k in ("home_addresses", "home_prefix", "autoconfigure") if mn.get(k)]
            if mn.get("home_addresses") == []:
                raise AgentRefusedError(
                    "control request: mobile_node.home_addresses: needs at least 1 entry"
                )
            if len(ways) != 1:
                raise AgentRefusedError(
                    "control request: mobile_node: exactly one of home_addresses, home_prefix "
                    f"or autoconfigure, got {ways}"
                )
            # show-config leaves out the home address settings that are not used
            for key in ("home_addresses", "home_prefix"):
                if mn.get(key) is None:
                    mn.pop(key, None)
            if not mn.get("autoconfigure"):
                mn.pop("autoconfigure", None)
        self.config = data
        return copy.deepcopy(data)


# --- AnsibleModule harness -------------------------------------------------------------------


class AnsibleExitJson(Exception):  # noqa: N818 - the usual name in module tests
    """exit_json was called; ``result`` is what the module returned."""

    def __init__(self, result: dict) -> None:
        super().__init__(result)
        self.result = result


class AnsibleFailJson(Exception):  # noqa: N818 - the usual name in module tests
    """fail_json was called."""

    def __init__(self, result: dict) -> None:
        super().__init__(result.get("msg"))
        self.result = result


WARNINGS: list[str] = []


def warn(self: Any, warning: str, **kwargs: Any) -> None:
    WARNINGS.append(warning)


def exit_json(self: Any, **kwargs: Any) -> None:
    kwargs.setdefault("changed", False)
    if WARNINGS:
        kwargs["warnings"] = list(WARNINGS)
    raise AnsibleExitJson(kwargs)


def fail_json(self: Any, **kwargs: Any) -> None:
    kwargs["failed"] = True
    if WARNINGS:
        kwargs["warnings"] = list(WARNINGS)
    raise AnsibleFailJson(kwargs)


@contextlib.contextmanager
def module_args(args: dict[str, Any]):
    """Give ``args`` to the next AnsibleModule (ansible-core 2.19's helper when present)."""
    try:
        from ansible.module_utils.testing import patch_module_args
    except ImportError:  # ansible-core before 2.19
        from ansible.module_utils import basic
        from ansible.module_utils.common.text.converters import to_bytes

        old = basic._ANSIBLE_ARGS
        basic._ANSIBLE_ARGS = to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
        try:
            yield
        finally:
            basic._ANSIBLE_ARGS = old
    else:
        with patch_module_args(args):
            yield


def run_module(main: Any, args: dict[str, Any]) -> dict:
    """Run a module's ``main()``; return its result, failed ones included (``failed``)."""
    WARNINGS.clear()
    with module_args(args):
        try:
            main()
        except AnsibleExitJson as exc:
            return exc.result
        except AnsibleFailJson as exc:
            return exc.result
    raise AssertionError("the module returned without exit_json or fail_json")
