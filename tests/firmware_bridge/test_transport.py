"""The transport contract (`firmware_bridge.transport.Transport`) checked on `SerialTransport`
over a real pty: bytes both ways and in order, writes larger than the port takes, the port
going away (`on_lost` exactly once), a port that cannot be opened, writes after close, and a
bridge that speaks through an injected transport."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import tty
from typing import TYPE_CHECKING

import pytest

from firmware_bridge.bridge import McuBridge
from firmware_bridge.errors import McuUnavailableError
from firmware_bridge.transport import SerialTransport, TransportClosedError
from tests.firmware_bridge.conftest import FAST_BRIDGE

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from firmware_bridge.sim import FirmwareSimulator


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.005)


class Recorder:
    """The two callbacks a transport is opened with, recording what they were given."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.lost: list[str] = []

    def on_data(self, data: bytes) -> None:
        self.data += data

    def on_lost(self, reason: str) -> None:
        self.lost.append(reason)


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    """A raw pty: the master fd (the 'device' side, non-blocking) and the slave's path."""
    master, slave = os.openpty()
    tty.setraw(master)
    os.set_blocking(master, False)
    path = os.ttyname(slave)
    os.close(slave)  # the transport opens it by path, as it would a real device
    yield master, path
    with contextlib.suppress(OSError):  # a test may have closed it to unplug the device
        os.close(master)


def drain(master: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except (BlockingIOError, OSError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


async def read_from(master: int, count: int, timeout_s: float = 5.0) -> bytes:
    """What the device side receives, once at least `count` bytes came."""
    received = bytearray()

    def arrived() -> bool:
        received.extend(drain(master))
        return len(received) >= count

    await eventually(arrived, timeout_s)
    return bytes(received)


async def test_bytes_flow_both_ways_in_order(pty_pair: tuple[int, str]) -> None:
    master, path = pty_pair
    transport, seen = SerialTransport(path), Recorder()
    transport.open(seen.on_data, seen.on_lost)
    try:
        assert transport.is_open
        assert transport.name == path
        sent = bytes(range(256)) * 4
        for i in range(0, len(sent), 100):
            os.write(master, sent[i : i + 100])
        await eventually(lambda: len(seen.data) >= len(sent))
        assert bytes(seen.data) == sent

        transport.write(b"\x00hello\x00")
        transport.write(b"\x00world\x00")
        assert await read_from(master, 14) == b"\x00hello\x00\x00world\x00"
        assert seen.lost == []
    finally:
        transport.close()


async def test_a_write_larger_than_the_port_takes_is_finished_from_the_loop_in_order(
    pty_pair: tuple[int, str],
) -> None:
    master, path = pty_pair
    transport, seen = SerialTransport(path), Recorder()
    transport.open(seen.on_data, seen.on_lost)
    try:
        big = os.urandom(1 << 20)  # far more than a pty's kernel buffer holds
        # nobody reads yet: a blocking write would hang here; the rest waits in the transport
        transport.write(big)
        transport.write(b"tail")
        assert await read_from(master, len(big) + 4, timeout_s=20.0) == big + b"tail"
        assert seen.lost == []
    finally:
        transport.close()


async def test_a_vanishing_device_is_reported_once_and_then_writes_refuse(
    pty_pair: tuple[int, str],
) -> None:
    master, path = pty_pair
    transport, seen = SerialTransport(path), Recorder()
    transport.open(seen.on_data, seen.on_lost)
    try:
        os.close(master)  # the device side hangs up: the slave reads EIO or EOF
        await eventually(lambda: bool(seen.lost))
        await asyncio.sleep(0.05)
        assert len(seen.lost) == 1
        assert not transport.is_open
        with pytest.raises(TransportClosedError, match=path):
            transport.write(b"late")
        assert len(seen.lost) == 1
    finally:
        transport.close()


async def test_the_simulators_unplug_is_reported_once(sim: FirmwareSimulator) -> None:
    transport, seen = SerialTransport(sim.port), Recorder()
    transport.open(seen.on_data, seen.on_lost)
    try:
        await asyncio.sleep(0.05)
        sim.unplug()
        await eventually(lambda: bool(seen.lost))
        await asyncio.sleep(0.05)
        assert len(seen.lost) == 1, seen.lost
        assert not transport.is_open
    finally:
        transport.close()
        sim.replug()


async def test_opening_a_missing_port_names_it(tmp_path: Path) -> None:
    path = str(tmp_path / "no-such-tty")
    transport, seen = SerialTransport(path), Recorder()
    with pytest.raises(McuUnavailableError) as caught:
        transport.open(seen.on_data, seen.on_lost)
    assert caught.value.port == path
    assert path in str(caught.value)
    assert caught.value.reason
    assert not transport.is_open
    with pytest.raises(TransportClosedError):
        transport.write(b"x")


async def test_close_is_idempotent_stops_callbacks_and_may_run_inside_one(
    pty_pair: tuple[int, str],
) -> None:
    master, path = pty_pair
    transport = SerialTransport(path)
    calls: list[bytes] = []

    def close_on_first_byte(data: bytes) -> None:
        calls.append(data)
        transport.close()  # from inside the reader callback

    transport.open(close_on_first_byte, lambda reason: calls.append(reason.encode()))
    os.write(master, b"a")
    await eventually(lambda: bool(calls))
    os.write(master, b"more bytes")
    await asyncio.sleep(0.1)
    assert calls == [b"a"]
    assert not transport.is_open
    transport.close()
    transport.close()
    with pytest.raises(TransportClosedError):
        transport.write(b"x")


async def test_a_transport_can_be_opened_again_after_close(pty_pair: tuple[int, str]) -> None:
    master, path = pty_pair
    transport, first, second = SerialTransport(path), Recorder(), Recorder()
    transport.open(first.on_data, first.on_lost)
    transport.close()
    transport.open(second.on_data, second.on_lost)
    try:
        os.write(master, b"again")
        await eventually(lambda: bytes(second.data) == b"again")
        assert first.data == b""
    finally:
        transport.close()


class CountingTransport(SerialTransport):
    """A transport the bridge is handed: counts what passes through it."""

    def __init__(self, port: str) -> None:
        super().__init__(port)
        self.opened = 0
        self.written = 0
        self.read = 0

    def open(self, on_data: Callable[[bytes], None], on_lost: Callable[[str], None]) -> None:
        def counted(data: bytes) -> None:
            self.read += len(data)
            on_data(data)

        super().open(counted, on_lost)
        self.opened += 1

    def write(self, data: bytes) -> None:
        super().write(data)
        self.written += len(data)


async def test_the_bridge_speaks_through_an_injected_transport(sim: FirmwareSimulator) -> None:
    transport = CountingTransport(sim.port)
    async with McuBridge(sim.port, transport=transport, **FAST_BRIDGE) as bridge:
        await bridge.wait_ready(5.0)
        telemetry = await bridge.get_telemetry()
        assert telemetry.sensor_c is not None
        assert transport.opened == 1
        assert transport.written > 0
        assert transport.read > 0
        sim.unplug()
        await eventually(lambda: not transport.is_open)
        sim.replug()
        await bridge.wait_ready(5.0)
        assert transport.opened >= 2
