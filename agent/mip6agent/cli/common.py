"""Shared bits of the operator CLIs."""

from __future__ import annotations

import os

from ..control.protocol import DEFAULT_SOCKET

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def default_socket() -> str:
    return os.environ.get("MIP6_CONTROL_SOCKET", DEFAULT_SOCKET)
