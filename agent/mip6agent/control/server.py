"""asyncio control server: a root-only Unix socket dispatching to a handler object."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from .protocol import COMMANDS, MAX_LINE, ControlError, decode_request, encode_reply

log = logging.getLogger("mip6agent.control")
Handler = Callable[[str, dict], Awaitable[object]]


class ControlServer:
    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        # Create the socket with no group/other access from the first moment.
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, self.path, limit=MAX_LINE)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(await self._answer(line))
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> bytes:
        try:
            command, args = decode_request(line)
            if command not in COMMANDS:
                raise ControlError(f"unknown command {command!r}")
            return encode_reply(await self.handler(command, args))
        except ControlError as exc:
            return encode_reply(error=str(exc))
        except Exception as exc:
            log.exception("control request failed")
            return encode_reply(error=f"internal error: {exc}")
