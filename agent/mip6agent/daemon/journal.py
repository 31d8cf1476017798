"""Log records to systemd's journal with structured fields (the journal's native protocol).

Operators search the journal by field: ``journalctl -u mip6agent MIP6_HOA=2001:db8:1::100``
or ``MIP6_STATUS=129``. Lines the core marks with fields (``Log.fields``: ``hoa``, ``coa``,
``status``, ...) carry them as ``MIP6_HOA``, ``MIP6_COA``, ``MIP6_STATUS``; every line
carries ``MIP6_KIND`` when it has a kind (the rate limiter's grouping), ``PRIORITY``,
``SYSLOG_IDENTIFIER=mip6agent`` and ``LOGGER``.

The protocol (systemd's "Native Journal Protocol", stable and documented) is one datagram
per entry to ``/run/systemd/journal/socket``: ``FIELD=value`` lines, or for a value holding
a newline ``FIELD\\n``, its length as 64-bit little endian, the value and ``\\n``. No
library is needed for that.

:func:`wanted` says whether stderr is the journal (systemd sets ``$JOURNAL_STREAM`` to the
device and inode of the stream it connected); only then does the agent switch handlers, so
that a run by hand keeps plain stderr lines.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
from collections.abc import Mapping

SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "mip6agent"
# logging level -> syslog priority
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def wanted(environ: Mapping[str, str] | None = None, stream: object = None) -> bool:
    """True when ``stream`` (stderr) is the journal stream systemd named."""
    env = os.environ if environ is None else environ
    named = env.get("JOURNAL_STREAM", "")
    device, _, inode = named.partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        fileno = (stream or sys.stderr).fileno()  # type: ignore[attr-defined]
        st = os.fstat(fileno)
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def encode(fields: Mapping[str, str]) -> bytes:
    out = bytearray()
    for name, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode() + b"=" + data + b"\n"
    return bytes(out)


def record_fields(record: logging.LogRecord, message: str) -> dict[str, str]:
    fields = {
        "MESSAGE": message,
        "PRIORITY": str(_PRIORITY.get(record.levelno, 6)),
        "SYSLOG_IDENTIFIER": IDENTIFIER,
        "LOGGER": record.name,
    }
    kind = getattr(record, "mip6_kind", None)
    if kind:
        fields["MIP6_KIND"] = str(kind)
    for name, value in getattr(record, "mip6_fields", None) or ():
        fields[f"MIP6_{name.upper()}"] = str(value)
    return fields


class JournalHandler(logging.Handler):
    """One journal entry per record; a record the journal refuses goes to stderr."""

    def __init__(self, path: str = SOCKET) -> None:
        super().__init__()
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            self._sock.sendto(encode(record_fields(record, message)), self.path)
        except OSError:
            # The journal is gone or the entry too big: the line must not be lost.
            sys.stderr.write(f"{record.levelname} {record.name}: {record.getMessage()}\n")
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self._sock.close()
        super().close()
