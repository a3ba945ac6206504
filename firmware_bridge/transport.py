"""Firmware bridge, the wire: `Transport`, the byte stream `McuBridge` speaks the protocol over.

`McuBridge` knows requests, sessions and telemetry; a transport knows only how to open a port,
hand the bytes that arrive to a callback, write frames without blocking the event loop, and say
once that the port is gone. `SerialTransport` is the real one (pyserial on a tty: a USB CDC
adapter, a UART, or the simulator's pty). Another link (a socket to a test rig, a CAN-to-serial
gateway) implements the same four calls, and `tests/firmware_bridge/test_transport.py` holds the
contract every implementation must pass.

I/O model of `SerialTransport`: pyserial opens and configures the port (raw 8N1, exclusive lock)
and the event loop then watches its non-blocking file descriptor (`add_reader`). Chosen over a
reader thread because there is no thread to stop or leak, and an unplugged port is noticed as
soon as the kernel reports it (EOF or EIO on the fd). Frames are at most 55 bytes, so a write
practically never blocks; a partial one is finished by `add_writer`. POSIX only, like the
vehicle.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TYPE_CHECKING, Protocol

import serial

from firmware_bridge.errors import McuUnavailableError

if TYPE_CHECKING:
    from collections.abc import Callable

READ_BYTES = 4096


class TransportClosedError(Exception):
    """A write on a transport that is not open, or whose port has gone."""


class Transport(Protocol):
    """A byte stream to the microcontroller, driven by the running event loop.

    Contract (checked by the transport contract test):
    - `open()` either raises `McuUnavailableError` naming the port and the reason, or returns
      with the port open; from then on every byte that arrives reaches `on_data`, in order;
    - when the port goes away (EOF, read or write error), `on_lost` is called exactly once with
      a reason, and nothing more reaches `on_data` until the next `open()`;
    - `write()` never blocks: it sends what the port takes now and finishes the rest from the
      loop, in order; on a closed or lost port it raises `TransportClosedError`;
    - `close()` is idempotent, stops both callbacks, and may be called from either callback.
    """

    @property
    def name(self) -> str:
        """The port's name for messages (a device path)."""
        ...

    @property
    def is_open(self) -> bool: ...

    def open(self, on_data: Callable[[bytes], None], on_lost: Callable[[str], None]) -> None: ...

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class SerialTransport:
    """`Transport` over a serial device with pyserial, watched by the event loop."""

    def __init__(self, port: str, baudrate: int = 115_200) -> None:
        self.port = port
        self.baudrate = baudrate
        self._serial: serial.Serial | None = None
        self._fd: int | None = None
        self._buffer = bytearray()
        self._on_data: Callable[[bytes], None] | None = None
        self._on_lost: Callable[[str], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lost = False

    @property
    def name(self) -> str:
        return self.port

    @property
    def is_open(self) -> bool:
        return self._fd is not None and not self._lost

    def open(self, on_data: Callable[[bytes], None], on_lost: Callable[[str], None]) -> None:
        """Open the port (must be called from the running loop); `McuUnavailableError` if not."""
        self.close()
        try:
            port = serial.Serial(
                self.port, self.baudrate, timeout=0, write_timeout=0, exclusive=True
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            code = getattr(exc, "errno", None)
            reason = os.strerror(code) if code else str(exc)
            raise McuUnavailableError(self.port, reason) from exc
        self._serial = port
        self._fd = port.fileno()
        self._buffer.clear()
        self._lost = False
        self._on_data, self._on_lost = on_data, on_lost
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._readable)

    def write(self, data: bytes) -> None:
        if self._fd is None or self._lost:
            raise TransportClosedError(f"{self.port} is not open")
        if self._buffer:
            self._buffer += data
            return
        try:
            written = os.write(self._fd, data)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            self._lose(f"write failed: {exc}")
            raise TransportClosedError(f"{self.port}: write failed: {exc}") from exc
        if written < len(data):
            self._buffer += data[written:]
            assert self._loop is not None  # noqa: S101 - set by open()
            self._loop.add_writer(self._fd, self._writable)

    def close(self) -> None:
        self._unwatch()
        if self._serial is not None:
            with contextlib.suppress(OSError, serial.SerialException):
                self._serial.close()
        self._serial = None
        self._fd = None
        self._buffer.clear()
        self._on_data = self._on_lost = None

    # -- inside

    def _unwatch(self) -> None:
        if self._fd is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)

    def _lose(self, reason: str) -> None:
        if self._lost:
            return
        self._lost = True
        self._unwatch()
        on_lost = self._on_lost
        if on_lost is not None:
            on_lost(reason)

    def _readable(self) -> None:
        if self._fd is None or self._lost:
            return
        try:
            data = os.read(self._fd, READ_BYTES)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lose(f"read failed: {exc}")
            return
        if not data:
            self._lose("port closed (end of file)")
            return
        if self._on_data is not None:
            self._on_data(data)

    def _writable(self) -> None:
        if self._fd is None or self._lost:
            return
        try:
            written = os.write(self._fd, self._buffer)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lose(f"write failed: {exc}")
            return
        del self._buffer[:written]
        if not self._buffer and self._loop is not None:
            self._loop.remove_writer(self._fd)
