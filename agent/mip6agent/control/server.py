"""asyncio control server: a root-only Unix socket dispatching to a handler object."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from .protocol import (
    COMMANDS,
    MAX_LINE,
    Arguments,
    ControlError,
    check_arguments,
    decode_request,
    encode_reply,
)

log = logging.getLogger("mip6agent.control")
Handler = Callable[[str, Arguments], Awaitable[object]]

MAX_CONNECTIONS = 32
IDLE_TIMEOUT = 30.0


class ControlServer:
    """Serve the control API on ``path``.

    At most ``max_connections`` clients are served at once; one more gets a single error
    line and is closed. A client that sends no complete request line for ``idle_timeout``
    seconds (or does not read its reply for as long) is disconnected.
    """

    def __init__(
        self,
        path: str,
        handler: Handler,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.path = path
        self.handler = handler
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

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
            # Python 3.12's wait_closed waits for every connection: end the idle ones now.
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    @property
    def connections(self) -> int:
        """How many clients are connected now."""
        return len(self._writers)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= self.max_connections:
            log.debug("control connection refused: %d already open", len(self._writers))
            await self._refuse(writer)
            return
        self._writers.add(writer)
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), self.idle_timeout)
                except TimeoutError:
                    log.debug("control connection idle for %g s: closed", self.idle_timeout)
                    break
                if not line:
                    break
                writer.write(await self._answer(line))
                await asyncio.wait_for(writer.drain(), self.idle_timeout)
        except (ConnectionError, TimeoutError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _refuse(self, writer: asyncio.StreamWriter) -> None:
        error = f"too many control connections ({self.max_connections})"
        try:
            writer.write(encode_reply(error=error))
            await asyncio.wait_for(writer.drain(), self.idle_timeout)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> bytes:
        command = None
        try:
            command, args = decode_request(line)
            if command not in COMMANDS:
                raise ControlError(f"unknown command {command!r}")
            check_arguments(command, args)
            return encode_reply(await self.handler(command, args))
        except ControlError as exc:
            return encode_reply(error=str(exc))
        except Exception as exc:
            # Debug level only: a client repeating a bad request must not flood the log.
            log.debug("control request %r failed", command, exc_info=True)
            return encode_reply(error=f"internal error: {type(exc).__name__}: {exc}")
