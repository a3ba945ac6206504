"""The simulated camera-module microcontroller for tests: fast settings and the fixtures that
start it on a real pty (used by tests/firmware_bridge and tests/control through their conftests)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pytest

from firmware_bridge.bridge import McuBridge
from firmware_bridge.sim import FirmwareConfig, FirmwareSimulator

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

FAST_FIRMWARE = FirmwareConfig(telemetry_period_s=0.05, host_timeout_s=1.0, fan_safe_duty=0.3)
"""Reports every 50 ms (many frames in little time); the host session ends after 1 s of
silence; safe fan duty 0.3."""
FAST_BRIDGE: dict[str, Any] = {
    "request_timeout_s": 0.1,
    "retries": 2,
    "retry_backoff_s": 0.02,
    "reconnect_initial_s": 0.05,
    "reconnect_max_s": 0.2,
    "poll_interval_s": 0.05,
    "stale_after_polls": 3,
}
"""3 attempts of 0.1 s with 0.02 s and 0.04 s between them: a request to a silent MCU gives up
after ~0.36 s; telemetry is stale after ~0.2 s."""


@pytest.fixture(autouse=True)
def no_simulator_left_running() -> Iterator[None]:
    """Every test stops the simulators it started (their threads are joined by close())."""
    yield
    leftover = [t.name for t in threading.enumerate() if t.name == "firmware-sim"]
    assert not leftover, f"simulator thread(s) left running: {leftover}"


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[FirmwareSimulator]:
    """A simulated module behind a symlink that survives unplug/replug."""
    with FirmwareSimulator(config=FAST_FIRMWARE, link=tmp_path / "mcu", seed=7) as simulator:
        yield simulator


@pytest.fixture
async def mcu(sim: FirmwareSimulator) -> AsyncIterator[McuBridge]:
    """A bridge connected to `sim` (session open)."""
    async with McuBridge(sim.port, **FAST_BRIDGE) as bridge:
        await bridge.wait_ready(5.0)
        yield bridge
