"""Blocking control API client used by mip6config and mip6stat."""

from __future__ import annotations

import socket

from .protocol import MAX_LINE, Arguments, ControlError, decode_reply, encode_request


def call(path: str, command: str, args: Arguments | None = None, timeout: float = 10.0) -> object:
    """Send one request and return its result, or raise ControlError with a clear message."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(encode_request(command, args))
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if len(data) > MAX_LINE:
                    raise ControlError("reply from the agent is too long")
    except FileNotFoundError:
        raise ControlError(f"no agent listening on {path} (is mip6agent running?)") from None
    except PermissionError:
        raise ControlError(f"{path}: permission denied (the control socket is root only)") from None
    except ConnectionRefusedError:
        raise ControlError(
            f"{path}: connection refused (stale socket? restart mip6agent)"
        ) from None
    except TimeoutError:
        raise ControlError(f"{path}: the agent did not answer within {timeout:g}s") from None
    except OSError as exc:
        raise ControlError(f"{path}: {exc.strerror or exc}") from None
    if not data:
        raise ControlError("the agent closed the connection without a reply")
    return decode_reply(data)
