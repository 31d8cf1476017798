"""The control server under hostile or broken clients: connection cap, idle timeout, deep
nesting, wrong argument types; and the declared arguments match the agent's commands."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from mip6agent.cli import mip6config
from mip6agent.control import protocol
from mip6agent.control.protocol import ARGUMENTS, COMMANDS, MAX_DEPTH, ControlError
from mip6agent.control.server import ControlServer
from mip6agent.daemon.agent import Agent

# One value of every JSON type; the bool comes first so it is tried against int arguments.
SAMPLES: dict[str, object] = {
    "boolean": True,
    "integer": 7,
    "number": 1.5,
    "string": "x",
    "null": None,
    "array": [1, 2],
    "object": {"a": 1},
}


class FakeHandler:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.fail: Exception | None = None

    async def __call__(self, command: str, args: dict) -> object:
        self.calls.append((command, args))
        if self.fail is not None:
            raise self.fail
        return {"command": command, "args": args}


@contextlib.asynccontextmanager
async def serving(**options: object) -> AsyncIterator[tuple[ControlServer, FakeHandler]]:
    # A short directory of its own: Unix socket paths are limited to 107 bytes.
    directory = tempfile.mkdtemp(prefix="mip6ctl")
    handler = FakeHandler()
    server = ControlServer(str(Path(directory) / "agent.sock"), handler, **options)
    await server.start()
    try:
        yield server, handler
    finally:
        await asyncio.wait_for(server.close(), 5)
        shutil.rmtree(directory, ignore_errors=True)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, server: ControlServer) -> Client:
        reader, writer = await asyncio.open_unix_connection(server.path, limit=1 << 22)
        return cls(reader, writer)

    async def send_line(self, line: bytes) -> dict:
        self.writer.write(line)
        await self.writer.drain()
        return await self.reply()

    async def call(self, command: str, args: dict | None = None) -> dict:
        return await self.send_line(protocol.encode_request(command, args))

    async def reply(self) -> dict:
        line = await asyncio.wait_for(self.reader.readline(), 5)
        assert line.endswith(b"\n"), f"connection closed, got {line!r}"
        return json.loads(line)

    async def closed(self, within: float = 5) -> bool:
        """Whether the server ends the connection (EOF) within ``within`` seconds."""
        try:
            return await asyncio.wait_for(self.reader.read(), within) == b""
        except TimeoutError:
            return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def valid_value(types: type | tuple[type, ...]) -> object:
    return next(v for v in SAMPLES.values() if protocol._accepts(v, types))


def valid_args(command: str) -> dict:
    return {
        name: valid_value(types)
        for name, (types, required) in ARGUMENTS[command].items()
        if required
    }


# --- connection cap -------------------------------------------------------------------------


def test_defaults() -> None:
    server = ControlServer("/nonexistent/agent.sock", FakeHandler())
    assert server.max_connections == 32
    assert server.idle_timeout == 30.0


def test_connection_cap_default_32() -> None:
    async def test() -> None:
        async with serving() as (server, _):
            clients = [await Client.connect(server) for _ in range(32)]
            for client in clients:  # each one is being served
                assert (await client.call("status"))["ok"]
            assert server.connections == 32
            extra = await Client.connect(server)
            line = await asyncio.wait_for(extra.reader.readline(), 5)
            assert line == b'{"ok": false, "error": "too many control connections (32)"}\n'
            assert await extra.closed()
            await extra.close()
            # The ones already connected are unaffected.
            assert (await clients[0].call("status"))["ok"]
            for client in clients:
                await client.close()

    run(test)


def test_connection_cap_frees_slots() -> None:
    async def test() -> None:
        async with serving(max_connections=2) as (server, _):
            first, second = await Client.connect(server), await Client.connect(server)
            assert (await first.call("status"))["ok"]
            assert (await second.call("status"))["ok"]
            third = await Client.connect(server)
            assert (await third.reply())["error"] == "too many control connections (2)"
            await third.close()
            await first.close()
            deadline = time.monotonic() + 5
            while server.connections > 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            again = await Client.connect(server)
            assert (await again.call("status"))["ok"]
            await again.close()
            await second.close()

    run(test)


# --- idle timeout ---------------------------------------------------------------------------


def test_idle_connection_is_closed() -> None:
    async def test() -> None:
        async with serving(idle_timeout=0.2) as (server, _):
            client = await Client.connect(server)
            started = time.monotonic()
            assert await client.closed(within=5)
            assert 0.15 <= time.monotonic() - started < 4
            await client.close()
            assert server.connections == 0

    run(test)


def test_partial_line_does_not_keep_a_connection() -> None:
    async def test() -> None:
        async with serving(idle_timeout=0.3) as (server, _):
            client = await Client.connect(server)
            # Trickle a request a byte at a time, never finishing the line.
            for byte in b'{"command": "sta':
                client.writer.write(bytes([byte]))
                await client.writer.drain()
                await asyncio.sleep(0.03)
                if client.reader.at_eof():
                    break
            assert await client.closed(within=5)
            await client.close()

    run(test)


def test_busy_connection_outlives_the_timeout() -> None:
    async def test() -> None:
        async with serving(idle_timeout=0.3) as (server, _):
            client = await Client.connect(server)
            started = time.monotonic()
            while time.monotonic() - started < 1.0:
                assert (await client.call("status"))["ok"]
                await asyncio.sleep(0.1)
            await client.close()

    run(test)


def test_close_ends_open_connections() -> None:
    async def test() -> None:
        async with serving() as (server, _):
            clients = [await Client.connect(server) for _ in range(3)]
            assert (await clients[0].call("status"))["ok"]
            started = time.monotonic()
            await asyncio.wait_for(server.close(), 5)
            assert time.monotonic() - started < 5
            for client in clients:
                assert await client.closed()
                await client.close()

    run(test)


# --- deep nesting ---------------------------------------------------------------------------


def nested_config(levels: int) -> dict:
    config: dict = {}
    for _ in range(levels - 1):
        config = {"a": config}
    return config


def test_decode_refuses_deep_nesting() -> None:
    deep = b'{"command": "status", "args": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    with pytest.raises(ControlError, match="request nests deeper than 32 levels"):
        protocol.decode_request(deep)
    bare = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ControlError, match="nests deeper than 32 levels"):
        protocol.decode_request(bare)


def test_decode_nesting_limit_is_exact() -> None:
    # The request object is level 1, "args" level 2, "config" level 3.
    ok = protocol.encode_request("set-config", {"config": nested_config(MAX_DEPTH - 2)})
    assert protocol.decode_request(ok)[0] == "set-config"
    too_deep = protocol.encode_request("set-config", {"config": nested_config(MAX_DEPTH - 1)})
    with pytest.raises(ControlError, match="deeper than 32"):
        protocol.decode_request(too_deep)
    arrays = b'{"command": "status", "args": {"x": ' + b"[" * 31 + b"]" * 31 + b"}}"
    with pytest.raises(ControlError, match="deeper than 32"):
        protocol.decode_request(arrays)


def test_server_refuses_deep_nesting_and_keeps_serving(caplog: pytest.LogCaptureFixture) -> None:
    async def test() -> None:
        async with serving() as (server, handler):
            client = await Client.connect(server)
            for depth in (100_000, 33):
                line = (
                    b'{"command": "set-config", "args": {"config": '
                    + b"[" * depth
                    + b"]" * depth
                    + b"}}\n"
                )
                reply = await client.send_line(line)
                assert reply == {"ok": False, "error": "request nests deeper than 32 levels"}
                assert (await client.call("status"))["ok"]
            assert [c for c, _ in handler.calls] == ["status", "status"]
            await client.close()

    with caplog.at_level(logging.DEBUG, logger="mip6agent.control"):
        run(test)
    assert not any("Traceback" in r.getMessage() or r.exc_info for r in caplog.records)


# --- arguments ------------------------------------------------------------------------------


def test_arguments_cover_every_command() -> None:
    assert set(ARGUMENTS) == set(COMMANDS)


def wrong_type_cases() -> list[tuple[str, str, str, object]]:
    cases = []
    for command, declared in ARGUMENTS.items():
        for name, (types, _) in declared.items():
            for kind, value in SAMPLES.items():
                if not protocol._accepts(value, types):
                    cases.append((command, name, kind, value))
    return cases


@pytest.mark.parametrize(("command", "name", "kind", "value"), wrong_type_cases())
def test_check_arguments_refuses_wrong_types(
    command: str, name: str, kind: str, value: object
) -> None:
    args = {**valid_args(command), name: value}
    article = "an" if kind[0] in "aeiou" else "a"
    got = "null" if kind == "null" else f"{article} {kind}"
    with pytest.raises(
        ControlError, match=rf"^{command}: argument '{name}' must be .*, got {got}$"
    ):
        protocol.check_arguments(command, args)


def test_check_argument_messages() -> None:
    with pytest.raises(ControlError) as exc:
        protocol.check_arguments("debug", {"on": "false"})
    assert str(exc.value) == "debug: argument 'on' must be a boolean, got a string"
    with pytest.raises(ControlError) as exc:
        protocol.check_arguments("status", {"x": 1})
    assert str(exc.value) == "unknown argument 'x' for status"
    with pytest.raises(ControlError) as exc:
        protocol.check_arguments("set-home-address", {"interface": "eth0"})
    assert str(exc.value) == "set-home-address: missing argument 'address'"
    with pytest.raises(ControlError) as exc:
        protocol.check_arguments("enable-ha", {"preference": True})
    assert (
        str(exc.value)
        == "enable-ha: argument 'preference' must be an integer or null, got a boolean"
    )
    with pytest.raises(ControlError) as exc:
        protocol.check_arguments("set-lifetimes", {"bu_lifetime": "100"})
    assert str(exc.value) == "set-lifetimes: argument 'bu_lifetime' must be a number, got a string"
    with pytest.raises(ControlError, match="unknown command"):
        protocol.check_arguments("no-such-command", {})


def test_check_arguments_accepts_valid_requests() -> None:
    protocol.check_arguments("status", {})
    protocol.check_arguments("set-config", {"config": {"debug": True}, "merge": True})
    protocol.check_arguments("set-config", {"config": {}})
    protocol.check_arguments("debug", {"on": False})
    protocol.check_arguments("enable-ha", {"preference": 7})
    protocol.check_arguments("enable-ha", {"preference": None})
    protocol.check_arguments(
        "set-home-address", {"address": "2001:db8::1/64", "interface": "eth0", "home_agent": None}
    )
    protocol.check_arguments(
        "set-lifetimes",
        {"bu_lifetime": 200, "home_registration_lifetime": 600.0, "eager_movement_detection": 1},
    )
    protocol.check_arguments("remove-foreign-address", {"address": "2001:db8:1::1/64"})


@pytest.mark.parametrize(
    "argv",
    [
        ("-g", "-y", "7"),
        ("-g",),
        ("-d", "0"),
        ("-d", "1"),
        ("-H", "2001:db8::1/64@eth0%2001:db8::ff"),
        ("-H", "2001:db8::1/64@eth0"),
        ("-P", "2001:db8::/64"),
        ("-a",),
        ("-b", "200", "-l", "600", "-e", "2"),
        ("-F", "2001:db8:1::1/64@eth1"),
        ("-E", "2001:db8:1::1/64@eth1"),
        ("-x",),
        ("-n",),
        ("-r", "1"),
        ("-q", "1", "-w", "60"),
        ("-q", "0"),
    ],
)
def test_mip6config_requests_pass_the_check(argv: tuple[str, ...]) -> None:
    args, unknown = mip6config.build_parser().parse_known_args(list(argv))
    todo = mip6config.requests(args, unknown)
    assert todo
    for command, request_args in todo:
        protocol.check_arguments(command, request_args)


def test_server_refuses_bad_arguments_and_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def test() -> None:
        async with serving() as (server, handler):
            client = await Client.connect(server)
            for command, name, _, value in wrong_type_cases():
                reply = await client.call(command, {**valid_args(command), name: value})
                assert not reply["ok"]
                assert reply["error"].startswith(f"{command}: argument '{name}' must be ")
                assert (await client.call("status"))["ok"]
            for command in ARGUMENTS:
                reply = await client.call(command, {**valid_args(command), "x": 1})
                assert reply == {"ok": False, "error": f"unknown argument 'x' for {command}"}
                assert (await client.call("status"))["ok"]
            for command, declared in ARGUMENTS.items():
                for name, (_, required) in declared.items():
                    if required:
                        args = valid_args(command)
                        del args[name]
                        reply = await client.call(command, args)
                        assert reply["error"] == f"{command}: missing argument {name!r}"
            # The named examples from the brief.
            reply = await client.call("set-config", {"config": [1, 2]})
            assert reply["error"] == "set-config: argument 'config' must be an object, got an array"
            reply = await client.call("set-config", {"config": "x"})
            assert reply["error"] == "set-config: argument 'config' must be an object, got a string"
            reply = await client.call("debug", {"on": "false"})
            assert reply["error"] == "debug: argument 'on' must be a boolean, got a string"
            assert {c for c, _ in handler.calls} == {"status"}
            await client.close()

    with caplog.at_level(logging.DEBUG, logger="mip6agent.control"):
        run(test)
    assert not caplog.records


def test_valid_requests_reach_the_handler() -> None:
    async def test() -> None:
        async with serving() as (server, handler):
            client = await Client.connect(server)
            for command in ARGUMENTS:
                reply = await client.call(command, valid_args(command))
                assert reply == {
                    "ok": True,
                    "result": {"command": command, "args": valid_args(command)},
                }
            args = {"config": {"home_agent": {"preference": 3}}, "merge": True}
            assert (await client.call("set-config", args))["result"]["args"] == args
            assert [c for c, _ in handler.calls] == [*ARGUMENTS, "set-config"]
            await client.close()

    run(test)


def test_other_malformed_requests_keep_the_connection() -> None:
    async def test() -> None:
        async with serving() as (server, _):
            client = await Client.connect(server)
            for line, error in [
                (b"not json\n", "request is not JSON"),
                (b"[1, 2]\n", 'request must be an object with a "command" string'),
                (b'{"command": "status", "args": []}\n', '"args" must be an object'),
                (b'{"command": "nope"}\n', "unknown command 'nope'"),
                (b"\xff\xfe\n", "request is not JSON"),
            ]:
                reply = await client.send_line(line)
                assert not reply["ok"] and reply["error"].startswith(error), reply
                assert (await client.call("status"))["ok"]
            await client.close()

    run(test)


def test_internal_error_is_short_and_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    async def test() -> None:
        async with serving() as (server, handler):
            handler.fail = KeyError("mobile_node")
            client = await Client.connect(server)
            for _ in range(20):
                reply = await client.call("status")
                assert reply == {"ok": False, "error": "internal error: KeyError: 'mobile_node'"}
            handler.fail = None
            assert (await client.call("status"))["ok"]
            await client.close()

    with caplog.at_level(logging.DEBUG, logger="mip6agent.control"):
        run(test)
    failures = [r for r in caplog.records if r.exc_info]
    assert len(failures) == 20
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


# --- ARGUMENTS and the agent's commands -----------------------------------------------------


def command_methods() -> dict[str, Callable[..., object]]:
    return {
        name.removeprefix("_cmd_").replace("_", "-"): method
        for name, method in inspect.getmembers(Agent, inspect.iscoroutinefunction)
        if name.startswith("_cmd_")
    }


def test_every_agent_command_is_declared() -> None:
    methods = command_methods()
    assert set(methods) == set(ARGUMENTS)


@pytest.mark.parametrize("command", sorted(ARGUMENTS))
def test_declared_arguments_match_the_method(command: str) -> None:
    signature = inspect.signature(command_methods()[command])
    params = [p for p in signature.parameters.values() if p.name != "self"]
    declared = ARGUMENTS[command]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        # set-lifetimes takes **values: the names it accepts are the declared ones, which
        # must be what mip6config sends (and mobile_node keys, as it updates that section).
        assert all(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        args, unknown = mip6config.build_parser().parse_known_args(
            ["-b", "200", "-l", "600", "-e", "1"]
        )
        sent = dict(mip6config.requests(args, unknown))[command]
        assert set(sent) == set(declared)
        return
    assert [p.name for p in params] == list(declared)
    for p in params:
        assert p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        _, required = declared[p.name]
        assert required == (p.default is inspect.Parameter.empty), p.name
