"""Journal entries with MIP6_* fields: the native protocol's encoding written out by hand,
a handler sending to a socket of the test's own, and the stderr check (JOURNAL_STREAM)."""

from __future__ import annotations

import logging
import os
import socket
import struct
from ipaddress import IPv6Address
from pathlib import Path

from mip6agent.core import actions as act
from mip6agent.daemon import journal


def test_encoding_follows_the_native_protocol() -> None:
    assert journal.encode({"MESSAGE": "hi", "MIP6_HOA": "2001:db8:1::100"}) == (
        b"MESSAGE=hi\nMIP6_HOA=2001:db8:1::100\n"
    )
    # a value with a newline: name, newline, 64-bit little-endian length, value, newline
    assert journal.encode({"MESSAGE": "a\nb"}) == b"MESSAGE\n" + struct.pack("<Q", 3) + b"a\nb\n"


def _record(level: int = logging.WARNING, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("mip6agent.daemon.agent", level, __file__, 1, "BU refused", (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_record_fields_carry_priority_kind_and_mip6_fields() -> None:
    fields = journal.record_fields(
        _record(
            mip6_kind="bu_auth",
            mip6_fields=(("hoa", IPv6Address("2001:db8:1::100")), ("status", 133)),
        ),
        "BU refused",
    )
    assert fields == {
        "MESSAGE": "BU refused",
        "PRIORITY": "4",
        "SYSLOG_IDENTIFIER": "mip6agent",
        "LOGGER": "mip6agent.daemon.agent",
        "MIP6_KIND": "bu_auth",
        "MIP6_HOA": "2001:db8:1::100",
        "MIP6_STATUS": "133",
    }
    assert journal.record_fields(_record(logging.ERROR), "x")["PRIORITY"] == "3"


def test_handler_sends_one_datagram_per_record(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    handler = journal.JournalHandler(str(path))
    try:
        handler.emit(_record(mip6_fields=(("coa", "2001:db8:2::100"),)))
        data = server.recv(65536)
    finally:
        handler.close()
        server.close()
    lines = dict(line.split("=", 1) for line in data.decode().splitlines())
    assert lines["MESSAGE"] == "BU refused" and lines["MIP6_COA"] == "2001:db8:2::100"


def test_handler_falls_back_to_stderr_without_a_journal(tmp_path: Path, capsys) -> None:
    handler = journal.JournalHandler(str(tmp_path / "none"))
    try:
        handler.emit(_record())
    finally:
        handler.close()
    assert "WARNING mip6agent.daemon.agent: BU refused" in capsys.readouterr().err


def test_wanted_only_when_stderr_is_the_named_stream(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with log.open("w") as stream:
        st = os.fstat(stream.fileno())
        assert journal.wanted({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, stream)
        assert not journal.wanted({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, stream)
        assert not journal.wanted({}, stream)
        assert not journal.wanted({"JOURNAL_STREAM": "x:y"}, stream)


def test_log_action_fields_default_empty() -> None:
    assert act.Log("info", "x").fields == ()
