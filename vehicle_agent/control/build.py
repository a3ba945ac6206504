"""Act stage: builds the fan driver and the `ControlLoop` that `[control]` names, for the composition root.

`create_fan` is the driver registry keyed by `driver`: each driver module (and its
third-party library) is imported only when chosen, so a missing gpiozero never breaks a
sysfs vehicle. `open_control` opens the microcontroller link when one is configured and runs
the `ControlLoop` inside it; the simulator passes its own fan or its pty's port instead.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from firmware_bridge import McuBridge, McuError
from vehicle_agent.control.cleaning import CleaningStateMachine
from vehicle_agent.control.fan import Fan, FanError, FanUnavailableError
from vehicle_agent.control.loop import ControlLoop, McuThermalLink
from vehicle_agent.control.settings import (
    ControlConfig,
    FanDriverConfig,
    GpioZeroFanConfig,
    McuConfig,
    McuFanConfig,
    SysfsPwmFanConfig,
)
from vehicle_agent.control.thermal import ThermalController

if TYPE_CHECKING:
    from vehicle_agent.control.events import Emit

logger = logging.getLogger(__name__)


def create_fan(config: FanDriverConfig, safe_duty: float, bridge: McuBridge | None = None) -> Fan:
    """The fan driver `config` names; raises `FanUnavailableError` (or `FanError`) when its
    backend cannot be used here, and ValueError for 'mcu' without a bridge."""
    if isinstance(config, GpioZeroFanConfig):
        from vehicle_agent.control.gpio_fan import GpioZeroFan  # noqa: PLC0415 - only when chosen

        factory = None if config.pin_factory == "default" else config.pin_factory
        return GpioZeroFan(
            config.pin,
            frequency_hz=config.frequency_hz,
            active_high=config.active_high,
            pin_factory=factory,
            safe_duty=safe_duty,
        )
    if isinstance(config, SysfsPwmFanConfig):
        from vehicle_agent.control.sysfs_fan import SysfsPwmFan  # noqa: PLC0415 - idem

        return SysfsPwmFan(
            config.chip,
            config.channel,
            frequency_hz=config.frequency_hz,
            polarity=config.polarity,
            safe_duty=safe_duty,
            root=config.root,
            tach_path=config.tach_path,
            export_timeout_s=config.export_timeout_s,
        )
    if isinstance(config, McuFanConfig):
        if bridge is None:
            raise FanUnavailableError("mcu", "no microcontroller link ([control.mcu]) is open")
        from vehicle_agent.control.mcu_fan import McuFan  # noqa: PLC0415 - idem

        return McuFan(bridge, safe_duty)
    from vehicle_agent.sim.hardware import SimulatedFan  # noqa: PLC0415 - idem

    return SimulatedFan(safe_duty)


def open_bridge(config: McuConfig, port: str | None = None) -> McuBridge:
    """An `McuBridge` with the `[control.mcu]` settings (`port` overrides the configured one:
    the simulator's pty)."""
    return McuBridge(
        port or config.port,
        baudrate=config.baudrate,
        request_timeout_s=config.request_timeout_s,
        retries=config.retries,
        poll_interval_s=config.poll_interval_s,
        stale_after_polls=config.stale_after_polls,
    )


@contextlib.asynccontextmanager
async def open_control(
    config: ControlConfig,
    emit: Emit,
    *,
    fan: Fan | None = None,
    port: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    cleaning_clock: Callable[[], float] | None = None,
) -> AsyncIterator[ControlLoop]:
    """Open the MCU link (if `[control.mcu]`), build the fan (unless given: then the caller
    owns it) and run a `ControlLoop` until the block ends; fan and cooler end safe.

    The module not answering at start is not fatal: control runs fail-safe (stale telemetry →
    fan full, alarm) and the bridge keeps reconnecting.
    """
    async with contextlib.AsyncExitStack() as stack:
        bridge: McuBridge | None = None
        if config.mcu is not None:
            bridge = await stack.enter_async_context(open_bridge(config.mcu, port))
            try:
                await bridge.wait_ready(config.mcu.ready_timeout_s)
            except McuError as exc:
                logger.warning(f"camera module not ready, control starts fail-safe: {exc}")
        if fan is None:
            fan = create_fan(config.fan, config.safe_duty, bridge)
            stack.push_async_callback(_close_fan, fan)
        thermal = link = None
        if bridge is not None and config.thermal.enabled:
            thermal, link = ThermalController(config.thermal), McuThermalLink(bridge)
        loop = ControlLoop(
            fan,
            CleaningStateMachine(config.cleaning),
            emit=emit,
            thermal=thermal,
            link=link,
            config=config.loop,
            clock=clock,
            cleaning_clock=cleaning_clock,
        )
        async with loop:
            yield loop


async def _close_fan(fan: Fan) -> None:
    try:
        await fan.aclose()
    except FanError as exc:
        fallback = " (its firmware reverts by itself)" if fan.has_fallback else ""
        logger.warning(f"could not close the fan in its safe state{fallback}: {exc}")
