"""Degrade, don't die (issue 22): a fan that fails to open or drops out is an event and an alarm,
retried with backoff; an MCU that goes away comes back; spent cleaning retries latch
`lens_service_required` until a cleaning succeeds or the command clears it; a config without a
real fan is warned about."""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from tests.control.conftest import FakeClock, FakePwmKernel
from tests.control.test_loop import CLEANING, FAST_LOOP, THERMAL, eventually
from tests.mcu import FAST_FIRMWARE
from vehicle_agent.backoff import Backoff
from vehicle_agent.control.build import open_control
from vehicle_agent.control.cleaning import CleaningStateMachine
from vehicle_agent.control.fan import Fan, FanError, FanUnavailableError
from vehicle_agent.control.gpio_fan import GpioZeroFan
from vehicle_agent.control.loop import ControlLoop
from vehicle_agent.control.reopening_fan import ReopeningFan
from vehicle_agent.control.settings import (
    CleaningConfig,
    ControlConfig,
    McuConfig,
    McuFanConfig,
    SysfsPwmFanConfig,
)
from vehicle_agent.sim.hardware import SimulatedFan

if TYPE_CHECKING:
    from pathlib import Path

    from firmware_bridge.sim import FirmwareSimulator
    from tests.control.conftest import EventRecorder


def opened(fan: ReopeningFan) -> bool:
    """Read through a call: mypy would otherwise keep a property narrowed across steps."""
    return fan.is_open


def latched(loop: ControlLoop) -> bool:
    return loop.lens_service_required


def no_jitter() -> Backoff:
    return Backoff(1.0, 8.0, jitter=0.0, rng=random.Random(0))


# -- ReopeningFan, on a fake clock, with gpiozero's mock pins -------------------------------------


class FlakyOpener:
    """Opens a gpiozero fan on a mock PWM pin once `available`; counts the attempts."""

    def __init__(self) -> None:
        self.available = False
        self.attempts = 0
        self.factory = MockFactory(pin_class=MockPWMPin)
        self.fan: GpioZeroFan | None = None

    def __call__(self) -> Fan:
        self.attempts += 1
        if not self.available:
            raise FanUnavailableError("gpiozero", "pin factory 'lgpio' does not work here")
        self.fan = GpioZeroFan(18, pin_factory=self.factory)
        return self.fan

    def pin_duty(self) -> float:
        return float(self.factory.pin(18).state)


def test_a_fan_that_fails_to_open_is_retried_with_backoff_then_driven() -> None:
    clock, opener = FakeClock(), FlakyOpener()
    fan = ReopeningFan("gpiozero", opener, 0.0, backoff=no_jitter(), clock=clock)
    assert not opened(fan)
    assert opener.attempts == 1
    with pytest.raises(FanError, match=r"not open .*lgpio.*next try in 1\.0 s"):
        fan.set_duty(0.6)
    assert opener.attempts == 1  # inside the backoff: no new attempt
    clock.advance(1.0)
    with pytest.raises(FanError):
        fan.set_duty(0.6)  # second failure: the wait doubles
    assert opener.attempts == 2
    clock.advance(1.5)
    opener.available = True
    with pytest.raises(FanError):
        fan.set_duty(0.6)
    assert opener.attempts == 2
    clock.advance(0.5)
    fan.set_duty(0.6)
    assert opened(fan)
    assert opener.pin_duty() == pytest.approx(0.6)
    assert fan.readback() == pytest.approx(0.6)
    fan.close()
    assert opener.pin_duty() == 0.0


async def test_a_fan_that_drops_out_is_closed_and_reopened_at_the_wanted_duty() -> None:
    clock, opener = FakeClock(), FlakyOpener()
    opener.available = True
    fan = ReopeningFan("gpiozero", opener, 0.0, backoff=no_jitter(), clock=clock)
    fan.set_duty(1.0)
    first = opener.fan
    assert first is not None
    first.close()  # the pin went away under the driver
    opener.available = False
    with pytest.raises(FanError):
        fan.set_duty(0.5)
    assert not opened(fan)
    assert fan.readback() is None
    clock.advance(1.0)
    opener.available = True
    await fan.refresh(1.0)  # the control loop's tick reopens it and catches up
    assert opened(fan)
    assert opener.fan is not first
    assert opener.pin_duty() == pytest.approx(1.0)  # the duty control last applied
    assert fan.opens == 2


# -- open_control: the loop runs whatever the fan does --------------------------------------------


async def test_open_control_survives_a_missing_pwm_chip_and_picks_it_up_later(
    tmp_path: Path, recorder: EventRecorder
) -> None:
    root = tmp_path / "sys" / "class" / "pwm"
    config = ControlConfig(
        fan=SysfsPwmFanConfig(chip=0, channel=0, root=root),
        loop=FAST_LOOP,
        cleaning=CLEANING,
    )
    async with open_control(config, recorder) as loop:  # no pwmchip0 yet: no exception
        assert isinstance(loop.fan, ReopeningFan)
        loop.trigger_cleaning("manual")
        await eventually(lambda: "actuator_fault" in recorder.types())
        (fault,) = recorder.of("actuator_fault")
        assert fault.data["actuator"] == "fan:sysfs"
        assert "no such PWM chip" in str(fault.data["error"])
        assert "actuator_fault:fan:sysfs" in loop.snapshot().alarms
        kernel = FakePwmKernel(root, {0: 1})  # the overlay loaded, udev done
        kernel.export(0, 0)
        await eventually(lambda: "actuator_recovered" in recorder.types(), timeout_s=5.0)
        assert kernel.duty(0, 0) == pytest.approx(1.0)  # the cleaning burst, applied late
        assert not any(a.startswith("actuator_fault") for a in loop.snapshot().alarms)
    assert kernel.duty(0, 0) == 0.0


async def test_the_mcu_dropping_out_is_a_fault_and_its_return_a_recovery(
    sim: FirmwareSimulator, recorder: EventRecorder
) -> None:
    config = ControlConfig(
        fan=McuFanConfig(),
        safe_duty=FAST_FIRMWARE.fan_safe_duty,
        loop=FAST_LOOP,
        thermal=THERMAL,
        mcu=McuConfig(port=str(sim.link), request_timeout_s=0.05, retries=0, poll_interval_s=0.05),
    )
    async with open_control(config, recorder) as loop:
        await eventually(lambda: sim.state().cooler_enabled)
        sim.unplug()
        await eventually(lambda: "actuator_fault" in recorder.types())
        assert any(a.startswith("actuator_fault:fan:mcu") for a in loop.snapshot().alarms)
        sim.replug()
        await eventually(lambda: "actuator_recovered" in recorder.types(), timeout_s=10.0)


async def test_a_config_without_a_real_fan_is_warned_about_at_start_and_in_alarms(
    recorder: EventRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_control(ControlConfig(loop=FAST_LOOP), recorder) as loop:
        assert loop.fan.name == "none"
        assert "no_real_fan" in loop.alarms
        assert "no_real_fan" in loop.snapshot().alarms
    assert recorder.types()[0] == "no_real_fan"
    assert "names no real fan" in caplog.text


# -- lens_service_required ------------------------------------------------------------------------

NO_RETRY = CleaningConfig(
    burst_s=1.0, verify_s=1.0, max_retries=1, backoff_s=5.0, min_interval_s=0.0
)


def fail_cleaning(m: CleaningStateMachine, clock: FakeClock) -> list[str]:
    """An automatic cleaning whose score never falls, through all its attempts."""
    seen = [e.type for e in m.update(clock(), 0.8, detected=True).events]
    for _ in range(1 + m.config.max_retries):
        for step in (1.0, 1.0):
            seen += [e.type for e in m.update(clock.advance(step), 0.8, detected=True).events]
    return seen


def test_spent_retries_latch_service_until_a_cleaning_succeeds() -> None:
    clock = FakeClock()
    m = CleaningStateMachine(NO_RETRY)
    seen = fail_cleaning(m, clock)
    assert seen[-2:] == ["cleaning_failed", "lens_service_required"]
    assert m.service_required
    # The back-off ends and the next automatic cleaning fails too: still latched, once.
    clock.advance(5.0)
    again = fail_cleaning(m, clock)
    assert "cleaning_failed" in again
    assert "lens_service_required" not in again
    assert m.service_required
    assert m.service_requests == 1
    # After the back-off, a cleaning that works releases it.
    clock.advance(5.0)
    out = m.update(clock(), 0.8, detected=True)
    assert "cleaning_started" in [e.type for e in out.events]
    events = m.update(clock.advance(1.0), 0.8, detected=True).events
    events += m.update(clock.advance(0.2), 0.1, detected=False).events
    cleared = [e for e in events if e.type == "lens_service_cleared"]
    assert [e.data for e in cleared] == [{"reason": "cleaning_succeeded"}]
    assert not m.service_required


async def test_the_clear_command_releases_the_latch_and_the_loop_reports_it(
    recorder: EventRecorder,
) -> None:
    clock = FakeClock()
    loop = ControlLoop(
        SimulatedFan(0.0), CleaningStateMachine(NO_RETRY), emit=recorder, clock=clock
    )
    assert loop.clear_lens_service() == {"cleared": False, "lens_service_required": False}
    loop.on_adhesion(0.8, detected=True)
    for _ in range(4):
        clock.advance(1.0)
        loop.on_adhesion(0.8, detected=True)
    assert latched(loop)
    assert "lens_service_required" in loop.snapshot().alarms
    assert recorder.of("lens_service_required")[0].data["attempts"] == 2
    assert loop.summary()["lens_service_requests"] == 1
    assert loop.clear_lens_service() == {"cleared": True, "lens_service_required": False}
    assert recorder.of("lens_service_cleared")[0].data == {"reason": "command"}
    assert not latched(loop)
    assert "lens_service_required" not in loop.alarms
    await asyncio.sleep(0)
