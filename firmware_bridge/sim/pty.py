"""Firmware simulator, the wire: `FirmwareSimulator` serves a `Firmware` on the master side of a
real pseudo-terminal pair from one thread, with unplug/replug (and an unplug cycle).

A thread rather than an asyncio task: the simulator must keep time while the host's event
loop is busy or blocked, as a real MCU does, and it must serve a host in another process.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import queue
import random
import select
import threading
import time
import tty
from pathlib import Path
from typing import TYPE_CHECKING

from firmware_bridge.compat import Self
from firmware_bridge.sim.firmware import FaultSwitches, Firmware, FirmwareConfig, FirmwareState
from firmware_bridge.sim.plant import Plant, PlantParams

if TYPE_CHECKING:
    from collections.abc import Callable


logger = logging.getLogger(__name__)


READ_BYTES = 4096
MAX_WAIT_S = 0.05
"""Longest the thread sleeps: also how late a flipped fault switch or a command takes effect."""


class FirmwareSimulator:
    """A `Firmware` on the master side of a real pty pair, served by one thread.

    The host opens `port` with pyserial like a real serial port. With `link`, `port` is a
    symlink that follows the pty across `unplug()`/`replug()`, as a udev by-id link follows a
    USB adapter; without it, a replugged module appears under a new /dev/pts name (`port`
    changes). Use as a context manager, or `start()` and `close()`; `close()` joins the thread.
    """

    def __init__(
        self,
        *,
        ambient_c: float = 25.0,
        config: FirmwareConfig | None = None,
        faults: FaultSwitches | None = None,
        plant_params: PlantParams | None = None,
        link: str | os.PathLike[str] | None = None,
        time_scale: float = 1.0,
        seed: int | None = None,
        unplug_cycle: tuple[float, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.faults = faults or FaultSwitches()
        self.plant = Plant(plant_params, ambient_c)
        rng = random.Random(seed)  # noqa: S311 - noise and fault dice
        self.firmware = Firmware(
            self.plant, config, self.faults, clock=clock, rng=rng, time_scale=time_scale
        )
        self.plant.settle(0.0, self.firmware.fan_applied)
        self.link = Path(link) if link is not None else None
        self.unplug_cycle = unplug_cycle
        """(every_s, for_s): unplug every `every_s` seconds for `for_s` seconds."""
        self.tx_overflows = 0
        """Writes dropped because nobody read the port (a UART does not wait either)."""
        self._clock = clock
        self._lock = threading.RLock()
        self._commands: queue.SimpleQueue[tuple[str, threading.Event]] = queue.SimpleQueue()
        self._master: int | None = None
        self._slave: int | None = None
        self._pts: str | None = None
        self._wake: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cycle_at = 0.0

    # -- lifecycle

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        self._plug()
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)
        self._wake = (read_end, write_end)
        if self.unplug_cycle is not None:
            self._cycle_at = self._clock() + self.unplug_cycle[0]
        self._thread = threading.Thread(target=self._run, name="firmware-sim", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread, close the pty, remove the link. Idempotent."""
        self._stop.set()
        self._poke()
        if self._thread is not None:
            self._thread.join(timeout=5)
            if self._thread.is_alive():
                logger.error("firmware simulator thread did not stop within 5 s")
            self._thread = None
        with self._lock:
            self._close_pty()
        if self._wake is not None:
            for fd in self._wake:
                os.close(fd)
            self._wake = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- what the bench and the tests use

    @property
    def port(self) -> str:
        """The path a host opens: the link if there is one, else the current pty."""
        if self.link is not None:
            return str(self.link)
        if self._pts is None:
            raise RuntimeError("simulator is not plugged in")
        return self._pts

    @property
    def pts(self) -> str | None:
        """The current /dev/pts/N, None while unplugged."""
        return self._pts

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def unplug(self) -> None:
        """Pull the cable: the port vanishes and the MCU loses power (outputs dead)."""
        self._command("unplug")

    def replug(self) -> None:
        """Plug it back: a new pty, and the MCU boots (no session, outputs safe)."""
        self._command("replug")

    def reset(self) -> None:
        """A watchdog reset: the MCU reboots (no session, outputs safe), the port stays."""
        with self._lock:
            self.firmware.boot()

    def set_ambient(self, ambient_c: float) -> None:
        with self._lock:
            self.plant.ambient_c = ambient_c

    def state(self) -> FirmwareState:
        with self._lock:
            return self.firmware.state()

    # -- inside

    def _command(self, name: str) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                self._execute(name)
            return
        done = threading.Event()
        self._commands.put((name, done))
        self._poke()
        if not done.wait(timeout=5):
            raise RuntimeError(f"simulator thread did not carry out {name!r}")

    def _execute(self, name: str) -> None:
        if name == "unplug" and self._master is not None:
            self.firmware.power_off()
            self._close_pty()
            logger.info("simulated module unplugged")
        elif name == "replug" and self._master is None:
            self._plug()
            self.firmware.boot()

    def _poke(self) -> None:
        if self._wake is not None:
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake[1], b"\x01")

    def _plug(self) -> None:
        master, slave = os.openpty()
        # Raw: no echo (the firmware would read its own frames back) and no CR/LF translation.
        tty.setraw(slave)
        os.set_blocking(master, False)
        fcntl.fcntl(master, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
        # The simulator keeps the slave open too: without it, the master reads EIO in a busy
        # loop whenever no host has the port open.
        self._master, self._slave = master, slave
        self._pts = os.ttyname(slave)
        if self.link is not None:
            temporary = self.link.with_name(f".{self.link.name}.{os.getpid()}.tmp")
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(self._pts)
            temporary.replace(self.link)  # atomic: a host never sees a half-made link
        via = f" ({self.link})" if self.link else ""
        logger.info(f"simulated module on {self._pts}{via}")

    def _close_pty(self) -> None:
        if self.link is not None and self.link.is_symlink():
            self.link.unlink(missing_ok=True)
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = self._pts = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._serve_once()
        except Exception:
            logger.exception("firmware simulator thread failed")
            raise

    def _serve_once(self) -> None:
        assert self._wake is not None  # noqa: S101 - set by start() before the thread runs
        with self._lock:
            master = self._master
            wait = self.firmware.next_deadline() - self._clock()
        watched = [self._wake[0]] if master is None else [self._wake[0], master]
        readable, _, _ = select.select(watched, [], [], max(0.0, min(MAX_WAIT_S, wait)))
        if self._wake[0] in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake[0], 64)
        with self._lock:
            while not self._commands.empty():
                name, done = self._commands.get()
                self._execute(name)
                done.set()
            if master is not None and master in readable and master == self._master:
                try:
                    data = os.read(master, READ_BYTES)
                except BlockingIOError:
                    data = b""
                except OSError as exc:
                    if exc.errno != errno.EIO:
                        raise
                    data = b""  # no host has the port open
                self.firmware.receive(data)
            self.firmware.tick()
            self._transmit()
            self._cycle_plug()

    def _transmit(self) -> None:
        out = self.firmware.take_output()
        if not out or self._master is None:
            return
        try:
            written = os.write(self._master, out)
        except (BlockingIOError, OSError):
            written = 0
        if written < len(out):
            self.tx_overflows += 1

    def _cycle_plug(self) -> None:
        if self.unplug_cycle is None:
            return
        now = self._clock()
        if now < self._cycle_at:
            return
        every_s, for_s = self.unplug_cycle
        if self._master is not None:
            self._execute("unplug")
            self._cycle_at = now + for_s
        else:
            self._execute("replug")
            self._cycle_at = now + every_s
