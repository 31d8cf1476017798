"""The control-socket client against a real Unix socket server speaking the protocol."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest
from ansible_collections.mobileip.mipv6.plugins.module_utils import mip6_control as mc
from mip6_unit_helpers import FakeAgent


def test_call_returns_the_result(agent: FakeAgent) -> None:
    client = mc.Mip6Control(agent.path, timeout=2)
    status = client.call("status")
    assert status["role"] == "ha" and status["lists"] == ["bindings", "home-agents", "counters"]
    assert agent.requests == [("status", {})]


def test_arguments_travel_as_json(agent: FakeAgent) -> None:
    client = mc.Mip6Control(agent.path)
    config = {"home_agent": {"preference": 20}}
    result = client.call("set-config", {"config": config, "merge": True})
    assert result["home_agent"]["preference"] == 20
    assert agent.requests[-1] == ("set-config", {"config": config, "merge": True})


def test_agent_error_is_returned_verbatim(agent: FakeAgent) -> None:
    client = mc.Mip6Control(agent.path)
    with pytest.raises(mc.Mip6ControlError) as caught:
        client.call("set-config", {"config": {"home_agent": {"preference": 70000}}, "merge": True})
    assert str(caught.value) == (
        "control request: home_agent.preference: 70000 is out of range 0..65535"
    )
    assert caught.value.refused


def test_missing_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "nothing.sock")
    with pytest.raises(mc.Mip6ControlError) as caught:
        mc.Mip6Control(path).call("status")
    assert str(caught.value) == f"no agent listening on {path} (is mip6agent running?)"
    assert not caught.value.refused


def test_stale_socket_refuses(tmp_path: Path) -> None:
    path = str(tmp_path / "stale.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.close()  # the file stays, nobody listens
    with pytest.raises(mc.Mip6ControlError, match=r"connection refused .*is mip6agent running"):
        mc.Mip6Control(path).call("status")


def test_not_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "plain-file"
    path.write_text("")
    with pytest.raises(mc.Mip6ControlError) as caught:
        mc.Mip6Control(str(path)).call("status")
    assert str(path) in str(caught.value)


def test_permission_denied(agent: FakeAgent, monkeypatch: pytest.MonkeyPatch) -> None:
    # root connects to a 0600 socket anyway: simulate the error a normal user gets.
    def connect(self: socket.socket, address: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(socket.socket, "connect", connect)
    with pytest.raises(mc.Mip6ControlError) as caught:
        mc.Mip6Control(agent.path).call("status")
    assert "permission denied on" in str(caught.value) and "become" in str(caught.value)


def _server(path: str, behaviour) -> threading.Thread:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def serve() -> None:
        conn, _peer = listener.accept()
        with conn, listener:
            conn.recv(65536)
            behaviour(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_timeout(tmp_path: Path) -> None:
    path = str(tmp_path / "slow.sock")
    done = threading.Event()
    thread = _server(path, lambda conn: done.wait(5))
    with pytest.raises(mc.Mip6ControlError) as caught:
        mc.Mip6Control(path, timeout=0.2).call("counters")
    done.set()
    thread.join(5)
    assert str(caught.value) == f"{path}: the agent did not answer 'counters' within 0.2 s"


def test_closed_without_reply(tmp_path: Path) -> None:
    path = str(tmp_path / "mute.sock")
    thread = _server(path, lambda conn: None)
    with pytest.raises(mc.Mip6ControlError, match="closed the connection without answering"):
        mc.Mip6Control(path, timeout=2).call("status")
    thread.join(5)


def test_reply_that_is_not_json(tmp_path: Path) -> None:
    path = str(tmp_path / "noise.sock")
    thread = _server(path, lambda conn: conn.sendall(b"hello\n"))
    with pytest.raises(mc.Mip6ControlError, match="not JSON"):
        mc.Mip6Control(path, timeout=2).call("status")
    thread.join(5)


def test_reply_in_pieces(tmp_path: Path) -> None:
    path = str(tmp_path / "pieces.sock")
    reply = json.dumps({"ok": True, "result": {"x": "y" * 200000}}).encode() + b"\n"

    def send(conn: socket.socket) -> None:
        for start in range(0, len(reply), 7000):
            conn.sendall(reply[start : start + 7000])

    thread = _server(path, send)
    assert mc.Mip6Control(path, timeout=2).call("show-config") == {"x": "y" * 200000}
    thread.join(5)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"ok": false, "error": "this host is a mobile node"}', "this host is a mobile node"),
        (b'{"ok": false}', "unknown error"),
        (b"[1, 2]", "malformed reply"),
        (b'{"result": 1}', "malformed reply"),
    ],
)
def test_decode_reply_errors(line: bytes, message: str) -> None:
    with pytest.raises(mc.Mip6ControlError, match=message):
        mc.decode_reply(line)


def test_deep_merge_replaces_lists_and_keeps_inputs() -> None:
    target = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    source = {"a": {"c": [3]}, "e": None}
    assert mc.deep_merge(target, source) == {"a": {"b": 1, "c": [3]}, "d": 1, "e": None}
    assert target == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


def test_same_is_strict_about_booleans() -> None:
    assert mc.same({"a": 600}, {"a": 600.0})
    assert not mc.same({"a": True}, {"a": 1})
    assert not mc.same({"a": "1"}, {"a": 1})
    assert not mc.same([1, 2], [2, 1])
    assert mc.prune({"a": None, "b": [{"c": None, "d": 1}]}) == {"b": [{"d": 1}]}


def test_differences_name_the_keys() -> None:
    before = {"home_agent": {"preference": 1, "dad": True}, "debug": False}
    after = {"home_agent": {"preference": 2, "dad": True}, "debug": False, "x": 1}
    assert mc.differences(before, after) == ["home_agent.preference", "x"]


def test_address_normalisation() -> None:
    assert mc.normal_address("2001:DB8:0:0::0001") == "2001:db8::1"
    assert mc.normal_interface_address("2001:DB8:1::0100/64") == "2001:db8:1::100/64"
    assert mc.normal_prefix("2001:DB8:1:0::/64") == "2001:db8:1::/64"
    assert mc.normal_prefix("2001:db8:1::1/64") == "2001:db8:1::1/64"  # the agent refuses it
    assert mc.normal_address("not-an-address") == "not-an-address"
    assert mc.number(600.0) == 600 and mc.number(1.5) == 1.5


def test_yaml_rendering() -> None:
    text = mc.to_yaml(
        {
            "role": "mn",
            "debug": False,
            "spi": None,
            "mobile_node": {
                "home_addresses": [{"address": "2001:db8:1::100/64", "interface": "eth0"}],
                "foreign_addresses": [],
                "interfaces": ["eth0", "wlan0"],
            },
        }
    )
    assert text == (
        'role: "mn"\n'
        "debug: false\n"
        "spi: null\n"
        "mobile_node:\n"
        "  home_addresses:\n"
        '    - address: "2001:db8:1::100/64"\n'
        '      interface: "eth0"\n'
        "  foreign_addresses: []\n"
        "  interfaces:\n"
        '    - "eth0"\n'
        '    - "wlan0"\n'
    )
    yaml = pytest.importorskip("yaml")
    assert yaml.safe_load(text)["mobile_node"]["home_addresses"][0]["interface"] == "eth0"
