"""Contract: every `Fan` driver refuses bad duties, applies good ones to its hardware, reads them
back, and ends in its safe duty on `safe_state()` and on close. The hardware side is read
independently (gpiozero's mock pin, the sysfs files, the simulated MCU's state), so a fake that
drifts from the real API fails here."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from firmware_bridge.bridge import McuBridge
from firmware_bridge.sim import FirmwareSimulator
from tests.control.conftest import FAST_BRIDGE, FAST_FIRMWARE, FakePwmKernel
from vehicle_agent.control.fan import Fan
from vehicle_agent.control.gpio_fan import GpioZeroFan
from vehicle_agent.control.mcu_fan import McuFan
from vehicle_agent.control.sysfs_fan import SysfsPwmFan
from vehicle_agent.sim.hardware import SimulatedFan

if TYPE_CHECKING:
    from pathlib import Path


@dataclass
class FanUnderTest:
    fan: Fan
    hardware: Callable[[], float]
    """The duty the hardware outputs, read without the driver."""
    tolerance: float
    """The hardware's duty resolution."""

    async def flush(self) -> None:
        """What the control loop does every refresh (a no-op for drivers applying at once)."""
        await self.fan.refresh(1.0)


DRIVERS = ["simulated", "gpiozero", "sysfs", "mcu"]


@pytest.fixture(params=DRIVERS)
async def driver(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FanUnderTest]:
    name = request.param
    if name == "simulated":
        simulated = SimulatedFan(0.0)
        yield FanUnderTest(simulated, lambda: simulated.history[-1], 0.0)
    elif name == "gpiozero":
        factory = MockFactory(pin_class=MockPWMPin)
        gpio = GpioZeroFan("GPIO18", frequency_hz=100, pin_factory=factory)
        pin = factory.pin(18)
        yield FanUnderTest(gpio, lambda: float(pin.state), 0.0)
        gpio.close()
        factory.close()
    elif name == "sysfs":
        kernel = FakePwmKernel(tmp_path / "pwm")
        sysfs = SysfsPwmFan(0, 1, frequency_hz=25_000, root=kernel.root, attributes=kernel)
        yield FanUnderTest(sysfs, lambda: kernel.duty(0, 1), 1 / 40_000)
        sysfs.close()
    else:
        # The real bridge and the simulated firmware over a real pty; its safe duty is 0.3.
        with FirmwareSimulator(config=FAST_FIRMWARE, link=tmp_path / "mcu", seed=7) as sim:
            async with McuBridge(sim.port, **FAST_BRIDGE) as bridge:
                await bridge.wait_ready(5.0)
                mcu = McuFan(bridge, safe_duty=FAST_FIRMWARE.fan_safe_duty)
                yield FanUnderTest(mcu, lambda: sim.state().fan_duty, 0.001)


async def test_refuses_duties_that_are_not_finite_numbers_in_0_1(driver: FanUnderTest) -> None:
    fan = driver.fan
    fan.set_duty(0.4)
    await driver.flush()
    for bad in (math.nan, math.inf, -math.inf, -0.1, 1.1, 2):
        with pytest.raises(ValueError, match="within"):
            fan.set_duty(bad)
    for wrong in (True, False, "0.5", None, [0.5]):
        with pytest.raises(TypeError, match="number"):
            fan.set_duty(wrong)  # type: ignore[arg-type]
    await driver.flush()
    assert fan.duty == 0.4
    assert driver.hardware() == pytest.approx(0.4, abs=driver.tolerance)


@pytest.mark.parametrize("duty", [0, 0.0, 0.25, 0.5, 1, 1.0])
async def test_applies_and_reads_back_the_duty(driver: FanUnderTest, duty: float) -> None:
    fan = driver.fan
    fan.set_duty(duty)
    await driver.flush()
    assert fan.duty == duty
    assert isinstance(fan.duty, float)
    assert driver.hardware() == pytest.approx(duty, abs=driver.tolerance)
    readback = await _readback(fan)
    assert readback is None or readback == pytest.approx(duty, abs=driver.tolerance)


async def test_safe_state_goes_to_the_safe_duty(driver: FanUnderTest) -> None:
    fan = driver.fan
    fan.set_duty(0.9)
    await driver.flush()
    fan.safe_state()
    await driver.flush()
    assert fan.duty == fan.safe_duty
    assert driver.hardware() == pytest.approx(fan.safe_duty, abs=driver.tolerance)


async def test_close_leaves_the_safe_duty(driver: FanUnderTest) -> None:
    fan = driver.fan
    fan.set_duty(0.8)
    await driver.flush()
    await fan.aclose()
    assert fan.duty == fan.safe_duty
    assert driver.hardware() == pytest.approx(fan.safe_duty, abs=driver.tolerance)


async def test_tach_is_absent_or_a_speed(driver: FanUnderTest) -> None:
    driver.fan.set_duty(1.0)
    await driver.flush()
    rpm = driver.fan.tach_rpm
    assert rpm is None or (math.isfinite(rpm) and rpm >= 0.0)


async def _readback(fan: Fan) -> float | None:
    """The driver's own readback; the MCU's comes with the next telemetry sample."""
    if isinstance(fan, McuFan):
        await fan.bridge.next_telemetry(1.0)
        await asyncio.sleep(0)
    return fan.readback()
