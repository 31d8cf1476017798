"""State files: the SQLite binding store, the JSON state store, damaged files of every kind,
and a home agent restarted after kill -9 with its state file destroyed."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mip6agent.core.binding_cache import Binding
from mip6agent.daemon.persistence import (
    BINDINGS_FILE,
    FORMAT_VERSION,
    BindingStore,
    StateStore,
    canonical_json,
    checksum,
)

AGENT_DIR = Path(__file__).resolve().parents[1]


def binding(n: int, **changes: object) -> dict:
    row = {
        "home_address": f"2001:db8:1::{n:x}",
        "care_of_address": f"2001:db8:2::{n:x}",
        "home_agent": "2001:db8:1::1",
        "interface": "eth0",
        "sequence": n,
        "lifetime": 300.0,
        "expires": 2e9,
        "flags": 0xC000,
        "nai": f"mn{n}@example.net",
        "registered": 1.7e9,
        "recovered": False,
    }
    row.update(changes)
    return row


def filled(directory: Path, count: int = 3) -> BindingStore:
    store = BindingStore(directory)
    assert store.load().status == "missing"
    store.write([binding(n) for n in range(1, count + 1)], [], {"mn1@example.net": 2**63 + 5})
    store.close()
    return store


# --- Binding.from_dict -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"home_address": "nowhere"}, "home_address 'nowhere' is not an IPv6 address"),
        ({"care_of_address": 5}, "care_of_address must be a string"),
        ({"sequence": "1"}, "sequence must be an integer"),
        ({"sequence": True}, "sequence must be an integer"),
        ({"lifetime": -1}, "lifetime must not be negative"),
        ({"expires": None}, "expires must be a number"),
        ({"nai": 7}, "nai must be a string or null"),
        ({"interface": ""}, "interface must be a non-empty string"),
        ({"extra": 1}, "unknown keys extra"),
        ({"recovered": "yes"}, "recovered must be true or false"),
    ],
)
def test_from_dict_names_what_is_wrong(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Binding.from_dict(binding(1, **change))


def test_from_dict_missing_key_and_not_an_object() -> None:
    row = binding(1)
    del row["expires"]
    with pytest.raises(ValueError, match="lacks expires"):
        Binding.from_dict(row)
    with pytest.raises(ValueError, match="must be an object"):
        Binding.from_dict(["2001:db8:1::1"])  # type: ignore[arg-type]
    old = binding(1)
    del old["recovered"]  # rows of earlier versions
    assert Binding.from_dict(old).recovered is False
    assert Binding.from_dict(binding(1)).to_dict() == binding(1)


# --- BindingStore ------------------------------------------------------------------------


def test_write_load_update_remove(tmp_path: Path) -> None:
    filled(tmp_path)
    store = BindingStore(tmp_path)
    result = store.load()
    assert result.status == "ok" and result.problems == []
    assert sorted(b["sequence"] for b in result.bindings) == [1, 2, 3]
    assert result.timestamps == {"mn1@example.net": 2**63 + 5}  # 64-bit NTP survives
    store.write([binding(2, sequence=9)], ["2001:db8:1::3"], {"mn2@example.net": 7})
    store.close()
    again = BindingStore(tmp_path).load()
    assert {b["home_address"]: b["sequence"] for b in again.bindings} == {
        "2001:db8:1::1": 1,
        "2001:db8:1::2": 9,
    }
    assert again.timestamps == {"mn1@example.net": 2**63 + 5, "mn2@example.net": 7}


def test_a_write_survives_kill_9(tmp_path: Path) -> None:
    """Commit, then die without closing: a fresh connection reads every row back."""
    code = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(AGENT_DIR)!r})
        from mip6agent.daemon.persistence import BindingStore
        store = BindingStore({str(tmp_path)!r})
        store.load()
        rows = [{{**{binding(0)!r}, "home_address": f"2001:db8:1::{{n:x}}"}} for n in range(1, 501)]
        for n in range(0, 500, 50):
            store.write(rows[n : n + 50], [], {{}})
        os.kill(os.getpid(), 9)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == -9, done.stderr
    assert (tmp_path / f"{BINDINGS_FILE}-wal").exists()  # not checkpointed: still in the WAL
    result = BindingStore(tmp_path).load()
    assert (result.status, len(result.bindings)) == ("ok", 500)


def test_missing_file(tmp_path: Path) -> None:
    result = BindingStore(tmp_path / "nothing").load()
    assert (result.status, result.bindings, result.problems) == ("missing", [], [])


@pytest.mark.parametrize("size", [0, 100, 5000])
def test_truncated_file_is_damaged(tmp_path: Path, size: int) -> None:
    filled(tmp_path, 200)  # closed: checkpointed into the main file, no WAL left
    path = tmp_path / BINDINGS_FILE
    assert not (tmp_path / f"{BINDINGS_FILE}-wal").exists()
    with path.open("r+b") as handle:
        handle.truncate(size)
    store = BindingStore(tmp_path)
    result = store.load()
    assert result.status == "damaged", result
    assert result.problems and str(path) in result.problems[0]
    # The next write starts a new file and keeps the damaged one aside.
    store.replace_all([binding(1)], {})
    assert list(tmp_path.glob(f"{BINDINGS_FILE}.damaged-*"))
    assert BindingStore(tmp_path).load().status == "ok"


def test_garbage_bytes(tmp_path: Path) -> None:
    (tmp_path / BINDINGS_FILE).write_bytes(os.urandom(8192))
    result = BindingStore(tmp_path).load()
    assert result.status == "damaged"
    assert "file is not a database" in result.problems[0]
    assert "truncated or overwritten" in result.problems[0]


def test_wrong_format_version(tmp_path: Path) -> None:
    filled(tmp_path)
    with sqlite3.connect(tmp_path / BINDINGS_FILE) as conn:
        conn.execute("UPDATE meta SET value = '7' WHERE key = 'format_version'")
    result = BindingStore(tmp_path).load()
    assert result.status == "damaged" and result.bindings == []
    assert result.problems == [
        f"{tmp_path / BINDINGS_FILE}: format version 7, expected {FORMAT_VERSION}"
    ]


def test_not_our_database(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / BINDINGS_FILE) as conn:
        conn.execute("CREATE TABLE other (x)")
    result = BindingStore(tmp_path).load()
    assert result.status == "damaged" and "not a binding cache" in result.problems[0]


def test_row_with_wrong_checksum_and_row_of_wrong_shape(tmp_path: Path) -> None:
    filled(tmp_path)
    bad_shape = json.dumps({**binding(2), "lifetime": -5}, sort_keys=True)
    with sqlite3.connect(tmp_path / BINDINGS_FILE) as conn:
        conn.execute(
            "UPDATE bindings SET data = replace(data, '2001:db8:2::1', '2001:db8:2::99') "
            "WHERE home_address = '2001:db8:1::1'"
        )
        conn.execute(
            "UPDATE bindings SET data = ?, checksum = ? WHERE home_address = '2001:db8:1::2'",
            (bad_shape, checksum(bad_shape)),
        )
    result = BindingStore(tmp_path).load()
    assert result.status == "damaged"
    assert [b["home_address"] for b in result.bindings] == ["2001:db8:1::3"]
    assert sorted(result.problems) == [
        "row 2001:db8:1::1: checksum mismatch",
        "row 2001:db8:1::2: binding lifetime must not be negative, got -5",
    ]
    assert sorted(result.damaged_keys) == ["2001:db8:1::1", "2001:db8:1::2"]


def test_migrates_the_json_file_of_earlier_versions_once(tmp_path: Path) -> None:
    legacy = tmp_path / "binding_cache.json"
    legacy.write_text(json.dumps({"bindings": [binding(1)], "timestamps": {"a@b": 3}}))
    result = BindingStore(tmp_path).load()
    assert (result.status, len(result.bindings), result.timestamps) == ("ok", 1, {"a@b": 3})
    assert not legacy.exists() and (tmp_path / "binding_cache.json.migrated").exists()
    assert len(BindingStore(tmp_path).load().bindings) == 1


def test_a_damaged_json_file_is_not_migrated(tmp_path: Path) -> None:
    legacy = tmp_path / "binding_cache.json"
    legacy.write_text('{"bindings": [')
    result = BindingStore(tmp_path).load()
    assert result.status == "damaged" and "not JSON" in result.problems[0]
    assert legacy.exists() and not (tmp_path / BINDINGS_FILE).exists()


# --- StateStore (JSON) ---------------------------------------------------------------------


def test_json_store_round_trip_and_envelope(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    state = {"entries": [{"home_address": "2001:db8:1::5", "sequence": 3}]}
    store.save("binding_update_list", state)
    raw = json.loads((tmp_path / "binding_update_list.json").read_text())
    assert raw == {"version": 1, "checksum": checksum(canonical_json(state)), "state": state}
    found = store.load_checked("binding_update_list")
    assert (found.status, found.state) == ("ok", state)
    assert store.load("binding_update_list") == state
    assert list(tmp_path.iterdir()) == [tmp_path / "binding_update_list.json"]  # no tmp left


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"version": 1, "checksum": "', "not JSON (truncated?)"),
        (b"\xff\xfe\x00garbage", "invalid start byte"),
        ("[1, 2, 3]", "holds a JSON list, expected an object"),
        ('"text"', "holds a JSON str, expected an object"),
        ('{"version": 7, "checksum": "x", "state": {}}', "format version 7, expected 1"),
        ('{"version": 1, "checksum": "x", "state": []}', "state is a JSON list"),
        ('{"version": 1, "checksum": "00", "state": {"a": 1}}', "checksum mismatch"),
    ],
)
def test_json_store_damaged(tmp_path: Path, content: str | bytes, reason: str) -> None:
    path = tmp_path / "binding_update_list.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    found = StateStore(tmp_path).load_checked("binding_update_list")
    assert found.status == "damaged" and found.state is None
    assert reason in found.problems[0] and str(path) in found.problems[0]
    assert StateStore(tmp_path).load("binding_update_list") is None


def test_json_store_missing_and_earlier_unenveloped_files(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    assert store.load_checked("binding_update_list").status == "missing"
    (tmp_path / "binding_update_list.json").write_text('{"entries": []}')
    found = store.load_checked("binding_update_list")
    assert (found.status, found.state) == ("ok", {"entries": []})


# --- a home agent killed, its state file destroyed, restarted ------------------------------


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


@needs_root
@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_home_agent_restart_with_a_destroyed_state_file_keeps_forwarding(
    tmp_path: Path, damage: str
) -> None:
    from agents import AgentProcess, wait_until
    from test_agent_integration import HOA, binding_coa, bul_state, ha_config, mn_config
    from topology import HA_ADDRESS, Topology

    def kernel_routes(topo: Topology) -> list[str]:
        out = topo.ip("ha", "-6", "route", "show", "table", "all", "proto", "86")
        return sorted(line for line in out.splitlines() if str(HOA) in line)

    def proxies(topo: Topology) -> str:
        return topo.ip("ha", "-6", "neigh", "show", "proxy")

    with (
        Topology(mn_link="foreign1", radvd=True) as topo,
        AgentProcess(topo.ns["ha"], tmp_path / "ha", ha_config(tmp_path / "ha")) as ha,
        AgentProcess(
            topo.ns["mn"],
            tmp_path / "mn",
            # Short lifetimes: the MN refreshes within the test.
            mn_config(tmp_path / "mn", home_registration_lifetime=8),
        ) as mn,
    ):
        coa = str(topo.coa)
        wait_until(lambda: binding_coa(ha) == coa, what="binding at foreign1")
        wait_until(lambda: bul_state(mn) == "registered", what="MN registered")
        assert topo.ping("cn", HOA, deadline=10)
        routes_before = kernel_routes(topo)
        assert routes_before and str(HOA) in proxies(topo)

        ha.kill9()
        state = tmp_path / "ha" / "state"
        database = state / BINDINGS_FILE
        assert database.exists()
        for extra in state.glob(f"{BINDINGS_FILE}-*"):
            extra.unlink()  # the WAL would otherwise still hold every row
        if damage == "truncate":
            with database.open("r+b") as handle:
                handle.truncate(0)
        else:
            database.write_bytes(b"not a database, " * 512)
        ha.start()

        # The kernel state was not touched, and the binding is back, marked recovered.
        assert kernel_routes(topo) == routes_before
        assert str(HOA) in proxies(topo)
        (restored,) = [b for b in ha.call("bindings") if b["home_address"] == str(HOA)]
        assert restored["care_of_address"] == coa
        assert restored["recovered"] is True and restored["nai"] is None
        assert restored["home_agent"] == str(HA_ADDRESS)
        log = ha.log.read_text()
        assert "ERROR" in log and str(database) in log and "damaged" in log
        assert list(state.glob(f"{BINDINGS_FILE}.damaged-*")), "damaged file kept aside"
        assert topo.ping("cn", HOA, deadline=10), "CN -> HoA after the restart"

        # The MN's next refresh is accepted: the binding is no longer recovered (this needs
        # the core's acceptance of any sequence number and authorized NAI for a recovered
        # binding).
        before = ha.call("counters").get("ba_out.0_accepted", 0)
        wait_until(
            lambda: ha.call("counters").get("ba_out.0_accepted", 0) > before,
            deadline=20,
            what="a refresh accepted",
        )
        (refreshed,) = [b for b in ha.call("bindings") if b["home_address"] == str(HOA)]
        assert refreshed["recovered"] is False and refreshed["nai"] is not None
        assert topo.ping("cn", HOA, deadline=10)

        # And the new state file has it, with the NAI (a refresh may wait SAVE_DELAY).
        def saved_nais() -> list:
            reader = BindingStore(state)
            try:
                result = reader.load()
                return [b["nai"] for b in result.bindings] if result.status == "ok" else []
            finally:
                reader.close()

        wait_until(lambda: saved_nais() == [refreshed["nai"]], deadline=5, what="row saved")
        ha.kill9()
        ha.start()
        assert binding_coa(ha) == coa
