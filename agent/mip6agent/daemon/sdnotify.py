"""systemd's service notification protocol (sd_notify(3)), for ``Type=notify`` units.

The protocol is one datagram of ``KEY=value`` lines to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a path, or an abstract name starting with ``@``). No library: the
protocol is a sendto, and systemd documents it as stable.

- ``READY=1`` once the agent serves (kernel reconciled, sockets open, control socket up);
- ``WATCHDOG=1`` from the event loop, every half of ``$WATCHDOG_USEC`` (systemd sets it
  from ``WatchdogSec=``, with ``$WATCHDOG_PID`` naming the process it is meant for): a loop
  that stalls stops sending, and systemd restarts the service;
- ``STATUS=...`` a line for ``systemctl status`` (role, binding count);
- ``STOPPING=1`` when a stop begins.

Without ``$NOTIFY_SOCKET`` (not started by systemd, or ``Type=exec``) every call is a
no-op. A send that fails is logged once and then ignored: supervision must never stop the
agent.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        name = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if name.startswith("@"):
            self.address = b"\0" + name[1:].encode()
        elif name.startswith("/"):
            self.address = name
        self.watchdog_interval = _watchdog_interval(env)
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines (keyword names upper-cased); True when sent."""
        if self.address is None:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), self.address)
        except OSError as exc:
            if not self._warned:
                log.warning("systemd notification to %s failed: %s", self.address, exc)
                self._warned = True
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between keep-alives (half the watchdog timeout), or None without one."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid is not None and pid != str(os.getpid())):
        return None
    return usec / 2e6
