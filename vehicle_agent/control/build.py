"""Act stage: builds the fan driver and the `ControlLoop` that `[control]` names, for the composition root.

`create_fan` is the driver registry keyed by `driver`: each driver module (and its
third-party library) is imported only when chosen, so a missing gpiozero never breaks a
sysfs vehicle. It fails closed: the simulated fan is never built here (only `simulate` and
tests hand one in), and a driver config it does not know is an error, not a fallback.
`open_control` opens the microcontroller link when one is configured and runs the
`ControlLoop` inside it; the simulator passes its own fan or its pty's port instead. Host-driven
drivers (GPIO, sysfs) are wrapped in `ReopeningFan`, so a fan that fails to open or drops out
is an `actuator_fault` retried with backoff, never the end of the daemon.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from firmware_bridge import McuBridge, McuError
from vehicle_agent.control.cleaning import CleaningStateMachine
from vehicle_agent.control.fan import Fan, FanError, FanUnavailableError, NoFan
from vehicle_agent.control.jetson_pins import JETSON_PWM_PINS
from vehicle_agent.control.loop import ControlLoop, McuThermalLink
from vehicle_agent.control.reopening_fan import ReopeningFan
from vehicle_agent.control.settings import (
    ControlConfig,
    FanDriverConfig,
    GpioZeroFanConfig,
    McuConfig,
    McuFanConfig,
    NoFanConfig,
    SimulatedFanConfig,
    SysfsPwmFanConfig,
)
from vehicle_agent.control.thermal import ThermalController

if TYPE_CHECKING:
    from vehicle_agent.control.events import Emit

logger = logging.getLogger(__name__)


def create_fan(config: FanDriverConfig, safe_duty: float, bridge: McuBridge | None = None) -> Fan:
    """The fan driver `config` names; raises `FanUnavailableError` (or `FanError`) when its
    backend cannot be used here, for 'mcu' without a bridge, for 'simulated' (never built
    here) and for a driver config it does not know."""
    if isinstance(config, NoFanConfig):
        return NoFan(safe_duty)
    if isinstance(config, SimulatedFanConfig):
        raise FanUnavailableError("simulated", SIMULATED_REFUSED)
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
        from vehicle_agent.control.sysfs_fan import SysfsPwmFan, find_chip  # noqa: PLC0415 - idem

        chip, channel = config.chip, config.channel
        if config.board is not None and config.pin is not None:
            controller, channel = JETSON_PWM_PINS[config.board][config.pin]
            chip = find_chip(config.root, controller)
        return SysfsPwmFan(
            chip,
            channel,
            frequency_hz=config.frequency_hz,
            polarity=config.polarity,
            safe_duty=safe_duty,
            root=config.root,
            tach_path=config.tach_path,
            export_timeout_s=config.export_timeout_s,
        )
    if not isinstance(config, McuFanConfig):
        # Fail closed: a driver config added to the union but not here is an error, never
        # a silent fallback to some other fan.
        driver = getattr(config, "driver", type(config).__name__)  # type: ignore[unreachable]
        raise FanUnavailableError(str(driver), "no such fan driver in this build")
    if bridge is None:
        raise FanUnavailableError("mcu", "no microcontroller link ([control.mcu]) is open")
    from vehicle_agent.control.mcu_fan import McuFan  # noqa: PLC0415 - idem

    return McuFan(bridge, safe_duty)


SIMULATED_REFUSED = (
    "the simulated fan exists only in `vehicle-agent simulate` and tests; a vehicle names a "
    "real driver ('mcu', 'sysfs', 'gpiozero') or 'none'"
)
NO_REAL_FAN = (
    "[control.fan] names no real fan (driver 'none'): lens cleaning and thermal control drive "
    "nothing on this vehicle; set driver = 'mcu' (see docs/service.md)"
)


def fan_problem(config: ControlConfig) -> str | None:
    """Why `[control.fan]` drives no real fan on a vehicle (`run`), or None when it does."""
    if isinstance(config.fan, SimulatedFanConfig):
        return SIMULATED_REFUSED
    if isinstance(config.fan, NoFanConfig):
        return NO_REAL_FAN
    return None


def build_fan(config: ControlConfig, bridge: McuBridge | None = None) -> Fan:
    """The fan `open_control` runs: host-driven drivers behind `ReopeningFan` (an open that
    fails is retried with backoff), the others as `create_fan` makes them."""
    fan_config = config.fan
    if isinstance(fan_config, GpioZeroFanConfig | SysfsPwmFanConfig):
        return ReopeningFan(
            fan_config.driver,
            lambda: create_fan(fan_config, config.safe_duty, bridge),
            config.safe_duty,
        )
    return create_fan(fan_config, config.safe_duty, bridge)


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
    video_timed: bool = False,
) -> AsyncIterator[ControlLoop]:
    """Open the MCU link (if `[control.mcu]`), build the fan (unless given: then the caller
    owns it) and run a `ControlLoop` until the block ends; fan and cooler end safe. Nothing
    opens until the block is entered: the composition root builds it, the pipeline enters it.
    `video_timed`: cleanings are timed by the frames' video time (a replay; `ControlLoop`).

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
            fan = build_fan(config, bridge)
            stack.push_async_callback(_close_fan, fan)
            if isinstance(fan, NoFan):
                logger.warning(NO_REAL_FAN)
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
            video_timed=video_timed,
        )
        async with loop:
            yield loop


async def _close_fan(fan: Fan) -> None:
    try:
        await fan.aclose()
    except FanError as exc:
        fallback = " (its firmware reverts by itself)" if fan.has_fallback else ""
        logger.warning(f"could not close the fan in its safe state{fallback}: {exc}")
