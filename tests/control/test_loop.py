"""The control loop: adhesion frames start cleanings at once, the refresh tick runs thermal control
and re-sends the outputs, failures degrade into events, the MQTT hook waits for the verdict,
and a clean exit leaves fan and cooler safe. First against fakes on a fake clock, then against
the real bridge and the firmware simulator over a pty: hot ambient, stuck and open sensors,
silence, a wedged event loop (the firmware reverts by itself) and the clean exit."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from firmware_bridge.bridge import McuBridge
from firmware_bridge.sim import FirmwareSimulator
from tests.control.conftest import FAST_BRIDGE, FAST_FIRMWARE, EventRecorder, FakeClock
from vehicle_agent.control.build import open_control
from vehicle_agent.control.cleaning import CleaningStateMachine
from vehicle_agent.control.fan import FanError
from vehicle_agent.control.loop import ControlLoop, McuThermalLink, ThermalLinkError
from vehicle_agent.control.mcu_fan import McuFan
from vehicle_agent.control.settings import (
    CleaningConfig,
    ControlConfig,
    ControlLoopConfig,
    McuConfig,
    McuFanConfig,
    ThermalConfig,
)
from vehicle_agent.control.thermal import ThermalController, ThermalReading
from vehicle_agent.sim.hardware import SimulatedFan

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

CLEANING = CleaningConfig(burst_s=3.0, verify_s=2.0, max_retries=1, min_interval_s=10.0)
THERMAL = ThermalConfig(
    sensor_setpoint_c=30.0,
    sensor_warning_c=60.0,
    sensor_critical_c=70.0,
    hot_target_c=35.0,
    hot_warning_c=45.0,
    hot_critical_c=65.0,
    stale_after_s=0.5,
    frozen_after_s=0.5,
    recover_after_s=0.3,
)
FAST_LOOP = ControlLoopConfig(refresh_interval_s=0.05, max_duration_s=0.5)


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.01)


# -- fakes ----------------------------------------------------------------------------------------


@dataclass
class FakeLink:
    """A thermal link whose readings the test sets; it records the cooler commands."""

    name: str = "fake"
    sample: ThermalReading | None = None
    commands: list[tuple[bool, float, float]] = field(default_factory=list)
    offs: int = 0
    fail: bool = False

    def read(self) -> ThermalReading | None:
        return self.sample

    async def set_cooler(self, enabled: bool, setpoint_c: float, max_duration_s: float) -> None:
        if self.fail:
            raise ThermalLinkError(self.name, "set_cooler", "no reply")
        self.commands.append((enabled, setpoint_c, max_duration_s))

    async def cooler_off(self) -> None:
        self.offs += 1


class BrokenFan(SimulatedFan):
    """A fan whose driver fails while `broken` is set."""

    name = "broken"

    def __init__(self) -> None:
        super().__init__(0.0)
        self.broken = False

    def _apply(self, duty: float) -> None:
        if self.broken:
            raise FanError(self.name, "GPIO gone")
        super()._apply(duty)


_SAMPLES = itertools.count()


def sample(clock: FakeClock, *, sensor: float = 30.0, hot: float = 40.0) -> ThermalReading:
    """A fresh sample with the jitter of a real sensor (never frozen)."""
    wobble = 0.01 * (next(_SAMPLES) % 2)
    return ThermalReading(sensor + wobble, 20.0 + wobble, hot + wobble, 0.0, clock.now)


def make_loop(
    recorder: EventRecorder,
    clock: FakeClock,
    *,
    fan: SimulatedFan | None = None,
    link: FakeLink | None = None,
) -> ControlLoop:
    return ControlLoop(
        fan or SimulatedFan(0.0),
        CleaningStateMachine(CLEANING),
        emit=recorder,
        thermal=ThermalController(THERMAL) if link is not None else None,
        link=link,
        config=FAST_LOOP,
        clock=clock,
    )


# -- against fakes, on a fake clock ---------------------------------------------------------------


async def test_a_video_timed_loop_times_its_cleaning_by_the_frames_not_the_host(
    recorder: EventRecorder,
) -> None:
    clock = FakeClock()  # the host's clock never moves
    loop = ControlLoop(
        SimulatedFan(0.0),
        CleaningStateMachine(CLEANING),
        emit=recorder,
        config=FAST_LOOP,
        clock=clock,
        video_timed=True,
    )
    fan = loop.fan
    assert loop.on_adhesion(0.7, detected=True, t=5.0, frame=50) == 1.0
    clock.advance(60.0)  # an hour of host time would not end the burst either
    await loop.tick()
    assert fan.duty == 1.0
    loop.on_adhesion(0.7, detected=True, t=5.0 + CLEANING.burst_s + 0.1, frame=81)
    assert fan.duty == 0.0
    assert recorder.types()[-1] == "cleaning_verifying"


async def test_soiled_frame_starts_the_fan_at_once_and_time_ends_the_burst(
    recorder: EventRecorder,
) -> None:
    clock = FakeClock()
    fan = SimulatedFan(0.0)
    loop = make_loop(recorder, clock, fan=fan)
    assert loop.on_adhesion(0.05, detected=False, t=1.0, frame=10) == 0.0
    assert loop.on_adhesion(0.7, detected=True, t=1.1, frame=11) == 1.0
    assert fan.history[-1] == 1.0
    assert recorder.types() == ["adhesion_detected", "cleaning_started"]
    assert [(e.t, e.frame) for e in recorder.events] == [(1.1, 11), (1.1, 11)]
    assert loop.snapshot().decided_by == "cleaning"
    clock.advance(3.0)
    await loop.tick()  # no frame needed for the burst to end
    assert fan.duty == 0.0
    assert recorder.types()[-1] == "cleaning_verifying"
    assert recorder.events[-1].frame is None
    clock.advance(0.5)
    loop.on_adhesion(0.1, detected=False, t=4.6, frame=40)
    assert recorder.types()[-2:] == ["cleaning_finished", "adhesion_cleared"]
    assert loop.summary()["cleanings_succeeded"] == 1


async def test_no_adhesion_estimate_is_no_reading(recorder: EventRecorder) -> None:
    loop = make_loop(recorder, FakeClock())
    assert loop.on_adhesion(None, None, t=0.0) == 0.0
    assert recorder.events == []


async def test_thermal_regulates_and_cleaning_only_adds_air(recorder: EventRecorder) -> None:
    clock, link, fan = FakeClock(), FakeLink(), SimulatedFan(0.0)
    loop = make_loop(recorder, clock, fan=fan, link=link)
    link.sample = sample(clock, hot=44.0)
    await loop.tick()
    thermal_duty = fan.duty
    assert 0.4 < thermal_duty < 1.0
    assert link.commands[-1] == (True, 30.0, 0.5)
    loop.on_adhesion(0.7, detected=True)
    assert fan.duty == 1.0
    clock.advance(3.0)
    link.sample = sample(clock, hot=44.0)
    await loop.tick()
    assert 0.4 < fan.duty < 1.0  # back to what thermal wants, not to idle
    assert loop.snapshot().decided_by == "thermal"


async def test_impossible_reading_drives_the_fan_full_and_raises_an_alarm(
    recorder: EventRecorder,
) -> None:
    clock, link, fan = FakeClock(), FakeLink(), SimulatedFan(0.0)
    loop = make_loop(recorder, clock, fan=fan, link=link)
    link.sample = ThermalReading(-300.0, 20.0, 40.0, 0.0, clock.now)
    await loop.tick()
    assert fan.duty == 1.0
    assert link.commands[-1][0] is False  # cooler off
    fault = recorder.of("sensor_fault")
    assert [e.data for e in fault] == [
        {"sensor": "sensor", "reason": "impossible", "value_c": -300.0, "age_s": 0.0}
    ]
    snapshot = loop.snapshot()
    assert snapshot.alarms == ("sensor_fault:sensor:impossible",)
    assert snapshot.decided_by == "sensor_fault"
    assert snapshot.cooler_enabled is False
    assert loop.summary()["alarms"] == 1


async def test_no_telemetry_at_all_is_stale_after_the_grace(recorder: EventRecorder) -> None:
    clock, link, fan = FakeClock(), FakeLink(), SimulatedFan(0.0)
    loop = make_loop(recorder, clock, fan=fan, link=link)
    await loop.tick()
    assert fan.duty == 0.0  # start-up grace
    clock.advance(0.6)
    await loop.tick()
    assert fan.duty == 1.0
    assert recorder.of("sensor_fault")[0].data["sensor"] == "link"


async def test_failing_cooler_and_fan_are_one_event_each_until_they_recover(
    recorder: EventRecorder,
) -> None:
    clock, link, fan = FakeClock(), FakeLink(fail=True), BrokenFan()
    loop = make_loop(recorder, clock, fan=fan, link=link)
    link.sample = sample(clock)
    fan.broken = True
    for _ in range(3):
        clock.advance(0.05)
        link.sample = sample(clock, hot=50.0)
        await loop.tick()
    assert [e.data for e in recorder.of("actuator_fault")] == [
        {"actuator": "fan:broken", "error": "fan broken: GPIO gone"},
        {"actuator": "cooler:fake", "error": "fake: set_cooler: no reply"},
    ]
    assert "actuator_fault:fan:broken" in loop.snapshot().alarms
    fan.broken = link.fail = False
    clock.advance(0.05)
    link.sample = sample(clock, hot=50.0)
    await loop.tick()
    assert [e.data for e in recorder.of("actuator_recovered")] == [
        {"actuator": "fan:broken", "failures": 3},
        {"actuator": "cooler:fake", "failures": 3},
    ]
    assert loop.summary()["actuator_faults"] == 6


async def test_a_failing_event_listener_does_not_stop_control(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def refuse(type_: str, t: float, frame: int | None = None, /, **data: object) -> None:
        raise ValueError(f"event type {type_!r} is not defined")

    fan = SimulatedFan(0.0)
    loop = ControlLoop(fan, CleaningStateMachine(CLEANING), emit=refuse, clock=FakeClock())
    with caplog.at_level(logging.ERROR):
        loop.on_adhesion(0.7, detected=True)
    assert fan.duty == 1.0
    assert "could not emit control event adhesion_detected" in caplog.text


async def test_thermal_needs_both_controller_and_link(recorder: EventRecorder) -> None:
    with pytest.raises(ValueError, match="both"):
        ControlLoop(SimulatedFan(), CleaningStateMachine(CLEANING), emit=recorder, link=FakeLink())


async def test_clean_exit_leaves_fan_and_cooler_safe(recorder: EventRecorder) -> None:
    link, fan = FakeLink(), SimulatedFan(0.2)
    async with make_loop(recorder, FakeClock(), fan=fan, link=link) as loop:
        loop.on_adhesion(0.7, detected=True)
        assert fan.duty == 1.0
    assert fan.duty == 0.2
    assert link.offs == 1
    assert [e.data for e in recorder.of("actuator_safe_state")] == [
        {"actuator": "fan:simulated", "duty": 0.2, "reason": "shutdown"},
        {"actuator": "cooler:fake", "duty": 0.0, "reason": "shutdown"},
    ]


async def test_exit_on_an_error_still_makes_everything_safe(recorder: EventRecorder) -> None:
    link, fan = FakeLink(), SimulatedFan(0.0)

    async def crash() -> None:
        async with make_loop(recorder, FakeClock(), fan=fan, link=link) as loop:
            loop.on_adhesion(0.7, detected=True)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await crash()
    assert fan.duty == 0.0
    assert link.offs == 1
    assert {e.data["reason"] for e in recorder.of("actuator_safe_state")} == {"error"}


async def test_snapshot_for_telemetry(recorder: EventRecorder) -> None:
    clock, link = FakeClock(), FakeLink()
    loop = make_loop(recorder, clock, link=link)
    link.sample = ThermalReading(31.0, 20.0, 30.0, 0.0, clock.now)
    await loop.tick()
    assert loop.snapshot().as_dict() == {
        "fan_driver": "simulated",
        "fan_duty": 0.2,
        "fan_readback": 0.2,
        "tach_rpm": None,
        "decided_by": "thermal",
        "temperatures_c": {"sensor": 31.0, "cold_side": 20.0, "hot_side": 30.0},
        "cooler_enabled": True,
        "cooler_setpoint_c": 30.0,
        "cleaning_state": "idle",
        "thermal_level": "normal",
        "alarms": [],
    }


# -- the MQTT clean_lens hook, on the real clock ---------------------------------------------------


async def test_clean_lens_without_a_detector_blows_for_the_duration(
    recorder: EventRecorder,
) -> None:
    fan = SimulatedFan(0.0)
    loop = ControlLoop(fan, CleaningStateMachine(CLEANING), emit=recorder, config=FAST_LOOP)
    async with loop:
        started = time.monotonic()
        result = await loop.clean_lens(0.3)
        elapsed = time.monotonic() - started
    assert result["started"] is True
    assert result["success"] is None
    assert elapsed >= 0.3  # the burst's length, not a speed
    assert 1.0 in fan.history
    assert recorder.of("cleaning_started")[0].data["reason"] == "command"


async def test_clean_lens_waits_for_the_verdict(recorder: EventRecorder) -> None:
    loop = ControlLoop(
        SimulatedFan(0.0),
        # Not automatic: only the command may start this cleaning.
        CleaningStateMachine(CLEANING.model_copy(update={"verify_s": 0.5, "automatic": False})),
        emit=recorder,
        config=FAST_LOOP,
    )

    async def camera() -> None:
        """Frames every 20 ms: soiled until the fan has blown 0.2 s, then clear."""
        blown = 0.0
        while True:
            loop.on_adhesion(0.1 if blown >= 0.2 else 0.6, detected=blown < 0.2)
            await asyncio.sleep(0.02)
            blown += 0.02 if loop.fan.duty == 1.0 else 0.0

    async with loop:
        frames = asyncio.create_task(camera())
        await asyncio.sleep(0.05)
        result = await loop.clean_lens(0.3)
        frames.cancel()
    assert result["started"] is True
    assert result["success"] is True
    assert result["score_before"] == 0.6
    assert result["score_after"] == 0.1


async def test_clean_lens_gets_an_answer_when_control_stops(recorder: EventRecorder) -> None:
    async with make_loop(recorder, FakeClock()) as loop:
        command = asyncio.create_task(loop.clean_lens(5.0))
        await asyncio.sleep(0.05)
    assert await command == {"started": True, "finished": False, "reason": "shutdown"}


async def test_clean_lens_while_cleaning_is_refused(recorder: EventRecorder) -> None:
    async with make_loop(recorder, FakeClock()) as loop:
        loop.on_adhesion(0.7, detected=True)
        assert await loop.clean_lens(1.0) == {"started": False, "reason": "busy"}


# -- against the firmware simulator over a real pty --------------------------------------------------


def mcu_loop(bridge: McuBridge, recorder: EventRecorder, **thermal: object) -> ControlLoop:
    return ControlLoop(
        McuFan(bridge, safe_duty=FAST_FIRMWARE.fan_safe_duty),
        CleaningStateMachine(CLEANING),
        emit=recorder,
        thermal=ThermalController(THERMAL.model_copy(update=thermal)),
        link=McuThermalLink(bridge),
        config=FAST_LOOP,
    )


async def test_hot_ambient_raises_the_fan_duty_and_warns(
    tmp_path: Path, recorder: EventRecorder
) -> None:
    # 40 model seconds per second: the heat sink's minute-long time constant takes ~1.5 s here.
    with FirmwareSimulator(
        config=FAST_FIRMWARE, ambient_c=25.0, time_scale=40.0, link=tmp_path / "mcu", seed=3
    ) as sim:
        async with McuBridge(sim.port, **FAST_BRIDGE) as bridge:
            await bridge.wait_ready(5.0)
            async with mcu_loop(bridge, recorder) as loop:
                await eventually(lambda: sim.state().cooler_enabled)
                await asyncio.sleep(0.3)
                cool_duty = sim.state().fan_duty
                sim.set_ambient(55.0)
                await eventually(lambda: "thermal_warning" in recorder.types(), 10.0)
                await eventually(lambda: sim.state().fan_duty >= cool_duty + 0.3)
                warning = recorder.of("thermal_warning")[0].data
                assert warning["sensor"] == "hot_side"
                assert warning["threshold_c"] == 45.0
                snapshot = loop.snapshot()
                assert snapshot.thermal_level in {"warning", "critical"}
                assert snapshot.temperatures_c["hot_side"] > 40.0
                assert snapshot.tach_rpm is not None
                assert snapshot.tach_rpm > 0
    assert cool_duty < 0.7
    assert "sensor_fault" not in recorder.types()


async def test_stuck_sensor_drives_the_fan_full_and_raises_an_alarm(
    sim: FirmwareSimulator, bridge: McuBridge, recorder: EventRecorder
) -> None:
    async with mcu_loop(bridge, recorder) as loop:
        await eventually(lambda: sim.state().cooler_enabled)
        sim.faults.stuck_sensor = True
        await eventually(lambda: "sensor_fault" in recorder.types())
        assert recorder.of("sensor_fault")[0].data["reason"] == "frozen"
        assert recorder.of("sensor_fault")[0].data["sensor"] == "sensor"
        await eventually(lambda: sim.state().fan_duty == 1.0 and not sim.state().cooler_enabled)
        assert "sensor_fault:sensor:frozen" in loop.snapshot().alarms
        sim.faults.stuck_sensor = False
        await eventually(lambda: "sensor_recovered" in recorder.types())
        await eventually(lambda: sim.state().cooler_enabled)


async def test_open_sensor_is_a_missing_reading(
    sim: FirmwareSimulator, bridge: McuBridge, recorder: EventRecorder
) -> None:
    async with mcu_loop(bridge, recorder):
        sim.faults.sensor_open = True
        await eventually(lambda: "sensor_fault" in recorder.types())
        assert recorder.of("sensor_fault")[0].data["reason"] == "missing"
        await eventually(lambda: sim.state().fan_duty == 1.0)
        await eventually(lambda: "mcu_fault" in recorder.types())
        assert recorder.of("mcu_fault")[0].data["fault"] == "SENSOR_FAULT"


async def test_silent_module_is_stale_and_the_fan_still_goes_full(
    sim: FirmwareSimulator, bridge: McuBridge, recorder: EventRecorder
) -> None:
    """A dead TX line: no telemetry, no acks, but commands still arrive and are carried out."""
    async with mcu_loop(bridge, recorder) as loop:
        await eventually(lambda: sim.state().cooler_enabled)
        sim.faults.silence = True
        await eventually(lambda: "sensor_fault" in recorder.types())
        assert recorder.of("sensor_fault")[0].data["sensor"] == "link"
        await eventually(lambda: sim.state().fan_duty == 1.0 and not sim.state().cooler_enabled)
        await eventually(lambda: "actuator_fault" in recorder.types())
        assert loop.snapshot().fan_readback is None  # no fresh telemetry to read it from
        sim.faults.silence = False
        await eventually(lambda: "sensor_recovered" in recorder.types())


async def test_a_wedged_event_loop_lets_the_firmware_revert_the_fan(
    sim: FirmwareSimulator, bridge: McuBridge, recorder: EventRecorder
) -> None:
    async with mcu_loop(bridge, recorder) as loop:
        loop.on_adhesion(0.7, detected=True)
        await eventually(lambda: sim.state().fan_duty == 1.0)
        assert sim.state().fan_hold_s <= FAST_LOOP.max_duration_s
        # Block the event loop (a hung driver call, a CPU-bound bug): no refresh goes out.
        time.sleep(FAST_LOOP.max_duration_s + 0.2)  # noqa: ASYNC251 - the point of the test
        state = sim.state()
        assert state.fan_duty == FAST_FIRMWARE.fan_safe_duty
        assert not state.cooler_enabled
        assert state.session  # the host timeout (1 s) has not run out: the hold did this


async def test_clean_exit_puts_the_module_in_its_safe_state(
    sim: FirmwareSimulator, bridge: McuBridge, recorder: EventRecorder
) -> None:
    async with mcu_loop(bridge, recorder) as loop:
        await eventually(lambda: sim.state().cooler_enabled)
        loop.on_adhesion(0.7, detected=True)
        await eventually(lambda: sim.state().fan_duty == 1.0)
    state = sim.state()
    assert state.fan_duty == FAST_FIRMWARE.fan_safe_duty
    assert state.fan_hold_s == 0.0  # the safe duty ends the hold: nothing left to revert
    assert not state.cooler_enabled
    assert [e.data["actuator"] for e in recorder.of("actuator_safe_state")] == [
        "fan:mcu",
        "cooler:mcu",
    ]


async def test_open_control_builds_everything_from_the_config(
    sim: FirmwareSimulator, recorder: EventRecorder
) -> None:
    config = ControlConfig(
        fan=McuFanConfig(),
        safe_duty=FAST_FIRMWARE.fan_safe_duty,
        loop=FAST_LOOP,
        cleaning=CLEANING,
        thermal=THERMAL,
        mcu=McuConfig(port="/dev/nonexistent", request_timeout_s=0.1, poll_interval_s=0.05),
    )
    async with open_control(config, recorder, port=sim.port) as loop:
        assert isinstance(loop.fan, McuFan)
        await eventually(lambda: sim.state().cooler_enabled)
        assert loop.snapshot().temperatures_c
    assert sim.state().fan_hold_s == 0.0
    assert not sim.state().cooler_enabled


async def test_open_control_without_the_module_starts_fail_safe(
    tmp_path: Path, recorder: EventRecorder
) -> None:
    config = ControlConfig(
        fan=McuFanConfig(),
        loop=FAST_LOOP.model_copy(update={"safe_state_timeout_s": 0.2}),
        thermal=THERMAL,
        mcu=McuConfig(
            port=str(tmp_path / "absent"), ready_timeout_s=0.1, request_timeout_s=0.05, retries=0
        ),
    )
    async with open_control(config, recorder) as loop:
        await eventually(lambda: "sensor_fault" in recorder.types())
        assert loop.fan.duty == 1.0
        await eventually(lambda: "actuator_fault" in recorder.types())
