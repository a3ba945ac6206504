"""Service: the sd_notify protocol (READY, WATCHDOG, STATUS, STOPPING) over $NOTIFY_SOCKET.

Written against sd_notify(3) rather than with the `sdnotify` package: that package is
unmaintained since 2017 and silently drops every error, while a datagram to a unix socket is a
dozen lines whose failures we want in the log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

logger = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends state lines to the service manager; does nothing when not run by systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if address.startswith("@"):
            self.address = "\0" + address[1:]  # abstract namespace socket
        elif address.startswith("/"):
            self.address = address
        elif address:
            logger.warning("NOTIFY_SOCKET %r is neither a path nor abstract; ignoring it", address)
        self.watchdog_interval_s = _watchdog_interval(env)
        self._socket: socket.socket | None = None
        self.sent = 0
        self.errors = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send `lines` (e.g. "READY=1", "STATUS=…") as one datagram; False if it failed."""
        if self.address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
            self._socket.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                logger.warning(
                    "sd_notify to %s failed (%d times): %s", self.address, self.errors, exc
                )
            return False
        self.sent += 1
        return True

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def stopping(self, status: str = "stopping") -> None:
        self.notify("STOPPING=1", f"STATUS={status}")

    def reloading(self) -> None:
        self.notify("RELOADING=1", "STATUS=reloading configuration")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def watchdog(
        self,
        status: Callable[[], str] | None = None,
        stalled: Callable[[], str | None] | None = None,
    ) -> None:
        """Ping WATCHDOG=1 every half `WatchdogSec` from the event loop itself, while
        `stalled()` says nothing (it returns why frames stopped moving, or None).

        Running on the loop is the point: if a stage blocks the loop, the pings stop and systemd
        restarts the daemon; `stalled` covers a stage stuck off the loop, on its thread. Runs
        until cancelled; returns at once without a watchdog.
        """
        if self.address is None or self.watchdog_interval_s is None:
            return
        while True:
            reason = stalled() if stalled is not None else None
            lines = [] if reason else ["WATCHDOG=1"]
            if reason:
                lines.append(f"STATUS=stalled: {reason}")
            elif status is not None:
                lines.append(f"STATUS={status()}")
            self.notify(*lines)
            await asyncio.sleep(self.watchdog_interval_s)


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of WATCHDOG_USEC, when the watchdog is meant for this process."""
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        logger.warning("WATCHDOG_USEC=%r is not a number; no watchdog pings", usec)
        return None
    return value / 2e6 if value > 0 else None
