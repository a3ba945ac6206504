"""Service: `vehicle-agent safe-state` — the unit's ExecStopPost=: fan and cooler to their safe state.

After a crash, a watchdog kill or SIGKILL, nothing ran the control loop's own safe state. The
MCU reverts by itself after `max_duration`, but a sysfs PWM channel or a GPIO pin keeps its last
duty. This opens the configured fan (and the MCU link) once, sets the safe duty (the cooler
off), and exits: 0 when every configured actuator is safe, 1 when one could not be reached.
"""

from __future__ import annotations

import asyncio
import logging

from firmware_bridge import McuError
from vehicle_agent.control.build import create_fan, open_bridge
from vehicle_agent.control.fan import FanError
from vehicle_agent.control.mcu_fan import McuFan
from vehicle_agent.control.settings import (
    ControlConfig,
    McuFanConfig,
    NoFanConfig,
    SimulatedFanConfig,
)

logger = logging.getLogger(__name__)

MCU_READY_S = 3.0
"""Longest wait for the module; systemd's TimeoutStopSec bounds ExecStopPost= too."""


async def make_safe(config: ControlConfig) -> list[str]:
    """Put the configured fan (and the MCU's cooler) in the safe state; returns what failed."""
    failed: list[str] = []
    if isinstance(config.fan, NoFanConfig | SimulatedFanConfig) and config.mcu is None:
        logger.info(f"safe-state: fan driver '{config.fan.driver}' drives nothing")
        return failed
    if config.mcu is not None:
        failed += await _mcu_safe(config)
    if not isinstance(config.fan, McuFanConfig | NoFanConfig | SimulatedFanConfig):
        try:
            fan = await asyncio.to_thread(create_fan, config.fan, config.safe_duty)
            await asyncio.to_thread(fan.close)
        except FanError as exc:
            failed.append(f"fan {config.fan.driver}: {exc}")
        else:
            logger.info(f"safe-state: fan {fan.name} at duty {config.safe_duty:g}")
    return failed


async def _mcu_safe(config: ControlConfig) -> list[str]:
    assert config.mcu is not None  # noqa: S101 - checked by the caller
    failed: list[str] = []
    async with open_bridge(config.mcu) as bridge:
        try:
            await bridge.wait_ready(min(config.mcu.ready_timeout_s, MCU_READY_S) or MCU_READY_S)
        except McuError as exc:
            return [f"camera module not reachable (its firmware reverts by itself): {exc}"]
        if isinstance(config.fan, McuFanConfig):
            try:
                await McuFan(bridge, config.safe_duty).aclose()
            except FanError as exc:
                failed.append(str(exc))
            else:
                logger.info(f"safe-state: fan mcu at duty {config.safe_duty:g}")
        try:
            await bridge.set_cooler(enabled=False)
        except McuError as exc:
            failed.append(f"cooler: {exc}")
        else:
            logger.info("safe-state: cooler off")
    return failed
