"""Thermal control on explicit times: PI fan duty on the hot side, cooler at the setpoint, the
warning and critical levels with hysteresis, and every sensor fault (stale, frozen, impossible,
missing) with its recovery; the checks themselves as small objects."""

from __future__ import annotations

import math

import pytest

from tests.control.conftest import types
from vehicle_agent.control.settings import ThermalConfig
from vehicle_agent.control.thermal import (
    CoolerCommand,
    FrozenCheck,
    Level,
    RangeCheck,
    SensorFault,
    StaleCheck,
    ThermalController,
    ThermalOutput,
    ThermalReading,
)

CONFIG = ThermalConfig(
    sensor_setpoint_c=30.0,
    sensor_warning_c=70.0,
    sensor_critical_c=80.0,
    hot_warning_c=60.0,
    hot_critical_c=68.0,
    hysteresis_c=3.0,
    hot_target_c=45.0,
    fan_kp_per_c=0.05,
    fan_ki_per_c_s=0.005,
    fan_min_duty_cooling=0.2,
    stale_after_s=2.0,
    frozen_after_s=5.0,
    recover_after_s=3.0,
)
ON = CoolerCommand(enabled=True, setpoint_c=30.0)
OFF = CoolerCommand(enabled=False, setpoint_c=30.0)


NOISY = object()
"""Default of a reading: a plausible value with the jitter every real reading has."""


def jitter(now: float) -> float:
    return 0.01 * (round(now * 2) % 3)


def reading(
    now: float,
    *,
    sensor: float | object | None = NOISY,
    cold: float | object | None = NOISY,
    hot: float | object | None = NOISY,
    age: float = 0.0,
    sample: float | None = None,
    stale: bool = False,
    faults: frozenset[str] = frozenset(),
) -> ThermalReading:
    def value(given: float | object | None, base: float) -> float | None:
        if given is NOISY:
            return base + jitter(now)
        assert given is None or isinstance(given, float)
        return given

    return ThermalReading(
        sensor_c=value(sensor, 30.0),
        cold_side_c=value(cold, 20.0),
        hot_side_c=value(hot, 40.0),
        age_s=age,
        sample_id=now - age if sample is None else sample,
        stale=stale,
        mcu_faults=faults,
    )


def controller(**changes: object) -> ThermalController:
    return ThermalController(CONFIG.model_copy(update=changes))


def one(out: ThermalOutput, type_: str) -> dict[str, object]:
    found = [dict[str, object](e.data) for e in out.events if e.type == type_]
    assert len(found) == 1, f"expected one {type_} in {types(out.events)}"
    return found[0]


def run(
    c: ThermalController, start: float, end: float, step: float = 0.5, **values: float
) -> ThermalOutput:
    """Fresh samples every `step` seconds with slightly noisy values, like a real sensor."""
    t, out = start, None
    while t <= end + 1e-9:
        kw = {k: v + jitter(t) for k, v in values.items()}
        out = c.update(t, reading(t, **kw))  # type: ignore[arg-type]
        t += step
    assert out is not None
    return out


# -- normal regulation ------------------------------------------------------------------------


def test_no_telemetry_yet_has_no_opinion_and_no_cooler() -> None:
    c = controller()
    out = c.update(0.0, None)
    assert out == ThermalOutput(
        fan_duty=None, forced=False, cooler=OFF, level=Level.NORMAL, faults=(), reason="waiting"
    )
    assert c.update(1.9, None).fan_duty is None


def test_cool_hot_side_runs_the_fan_at_the_cooling_minimum_with_the_cooler_on() -> None:
    out = run(controller(), 0.0, 10.0, hot=35.0)
    assert out.cooler == ON
    assert out.fan_duty == pytest.approx(0.2)
    assert out.reason == "regulating"
    assert not out.forced


def test_without_the_cooler_a_cool_hot_side_needs_no_fan() -> None:
    out = run(controller(cooler_enabled=False), 0.0, 10.0, hot=35.0)
    assert out.cooler == OFF
    assert out.fan_duty == 0.0


def test_fan_duty_rises_with_the_hot_side_and_keeps_rising_while_above_target() -> None:
    c = controller()
    d1 = run(c, 0.0, 1.0, hot=50.0).fan_duty
    d2 = run(c, 1.5, 20.0, hot=50.0).fan_duty
    assert d1 is not None
    assert d2 is not None
    assert 0.25 <= d1 < d2 < 1.0  # P (5 °C × 0.05) plus a growing integral
    d3 = run(c, 20.5, 21.0, hot=55.0).fan_duty
    assert d3 is not None
    assert d3 > d2


def test_integral_does_not_wind_up_while_the_duty_is_pinned() -> None:
    c = controller()
    assert run(c, 0.0, 600.0, step=1.0, hot=70.0 - 3.5).fan_duty == 1.0  # warning, not critical
    assert c.pi.integral <= 1.0
    out = run(c, 601.0, 610.0, step=1.0, hot=40.0)  # back below target
    assert out.fan_duty is not None
    assert out.fan_duty < 1.0


# -- levels -------------------------------------------------------------------------------------


def test_warning_then_back_to_normal_with_hysteresis() -> None:
    c = controller()
    run(c, 0.0, 2.0, hot=50.0)
    out = c.update(3.0, reading(3.0, hot=61.0))
    assert types(out.events) == ["thermal_warning"]
    assert one(out, "thermal_warning") == {
        "sensor": "hot_side",
        "temperature_c": 61.0,
        "threshold_c": 60.0,
        "previous": "normal",
    }
    assert out.level is Level.WARNING
    assert out.cooler == ON  # a warning only warns (and the PI adds air)
    assert c.alarms == ("thermal_warning",)
    assert c.update(4.0, reading(4.0, hot=57.5)).events == ()  # inside the hysteresis
    out = c.update(5.0, reading(5.0, sensor=30.0, hot=56.9))
    assert types(out.events) == ["thermal_normal"]
    assert one(out, "thermal_normal") == {
        "sensor_c": 30.0,
        "hot_side_c": 56.9,
        "previous": "warning",
    }
    assert not c.alarms


def test_critical_turns_the_cooler_off_and_the_fan_full_until_it_cools() -> None:
    c = controller()
    run(c, 0.0, 2.0, hot=50.0)
    out = c.update(3.0, reading(3.0, hot=69.0))
    assert types(out.events) == ["thermal_critical"]
    assert one(out, "thermal_critical") == {
        "sensor": "hot_side",
        "temperature_c": 69.0,
        "threshold_c": 68.0,
    }
    assert (out.fan_duty, out.forced, out.cooler, out.reason) == (1.0, True, OFF, "critical")
    out = c.update(4.0, reading(4.0, hot=66.0))
    assert out.events == ()
    assert out.reason == "critical"
    out = c.update(5.0, reading(5.0, hot=64.9))
    assert types(out.events) == ["thermal_warning"]
    assert one(out, "thermal_warning")["previous"] == "critical"
    assert out.cooler == ON
    assert not out.forced


def test_image_sensor_critical_also_stops_the_cooler() -> None:
    c = controller()
    out = c.update(0.0, reading(0.0, sensor=80.5, hot=50.0))
    assert types(out.events) == ["thermal_critical"]
    assert one(out, "thermal_critical")["sensor"] == "sensor"
    assert out.cooler == OFF
    assert out.fan_duty == 1.0


def test_hot_side_named_when_both_reach_the_same_level() -> None:
    out = controller().update(0.0, reading(0.0, sensor=71.0, hot=61.0))
    assert one(out, "thermal_warning")["sensor"] == "hot_side"


# -- sensor faults ----------------------------------------------------------------------------


def test_stale_telemetry_is_a_fault_fan_full_cooler_off_then_recovers() -> None:
    c = controller()
    run(c, 0.0, 2.0)
    out = c.update(5.0, reading(5.0, age=2.5))
    assert types(out.events) == ["sensor_fault"]
    assert one(out, "sensor_fault") == {
        "sensor": "link",
        "reason": "stale",
        "value_c": None,
        "age_s": 2.5,
    }
    assert (out.fan_duty, out.forced, out.cooler, out.reason) == (1.0, True, OFF, "sensor_fault")
    assert out.faults == (SensorFault("link", "stale"),)
    assert c.alarms == ("sensor_fault:link:stale",)
    assert c.update(6.0, reading(6.0, age=3.5)).events == ()  # raised once
    assert c.update(7.0, reading(7.0)).events == ()  # fresh again: recovery takes 3 s
    assert c.update(9.0, reading(9.0)).fan_duty == 1.0
    out = c.update(10.0, reading(10.0))
    assert types(out.events) == ["sensor_recovered"]
    assert one(out, "sensor_recovered") == {"sensor": "link", "reason": "stale", "duration_s": 5.0}
    assert not out.forced


def test_the_link_calling_its_sample_stale_is_a_fault() -> None:
    out = controller().update(0.0, reading(0.0, stale=True))
    assert one(out, "sensor_fault")["reason"] == "stale"
    assert out.fan_duty == 1.0


def test_no_telemetry_at_all_is_stale_after_the_grace() -> None:
    c = controller()
    c.update(0.0, None)
    out = c.update(2.0, None)
    assert one(out, "sensor_fault") == {
        "sensor": "link",
        "reason": "stale",
        "value_c": None,
        "age_s": None,
    }
    assert out.fan_duty == 1.0


def test_frozen_sensor_is_a_fault_and_recovers_when_it_moves_again() -> None:
    c = controller()
    run(c, 0.0, 2.0)
    out = None
    t = 2.5
    while t < 7.5:
        out = c.update(t, reading(t, sensor=31.25))
        assert out.events == (), t
        t += 0.5
    out = c.update(7.5, reading(7.5, sensor=31.25))  # 5 s of identical new samples
    assert types(out.events) == ["sensor_fault"]
    assert one(out, "sensor_fault") == {
        "sensor": "sensor",
        "reason": "frozen",
        "value_c": 31.25,
        "age_s": 0.0,
    }
    assert out.fan_duty == 1.0
    assert out.cooler == OFF
    run(c, 8.0, 10.5, sensor=31.0)
    out = c.update(11.0, reading(11.0, sensor=31.1))
    assert types(out.events) == ["sensor_recovered"]


def test_repeats_of_one_sample_are_not_evidence_of_a_frozen_sensor() -> None:
    """The link handing back the same sample is stale (by its age), not frozen."""
    c = controller(stale_after_s=600.0)
    for t in range(20):
        out = c.update(float(t), reading(float(t), sensor=31.25, sample=1.0, age=float(t)))
        assert out.events == ()


def test_frozen_check_does_not_carry_over_a_gap_in_the_samples() -> None:
    c = controller()
    c.update(0.0, reading(0.0, sensor=31.25))
    c.update(1.0, reading(1.0, age=3.0))  # stale: the frozen timers restart
    out = c.update(10.0, reading(10.0, sensor=31.25))
    assert SensorFault("sensor", "frozen") not in out.faults


@pytest.mark.parametrize(
    ("channel", "value", "reason", "shown"),
    [
        ("sensor", -300.0, "impossible", -300.0),
        ("sensor", math.nan, "impossible", None),
        ("hot_side", 150.0, "impossible", 150.0),
        ("hot_side", -40.0, "impossible", -40.0),  # the wire's floor: a railed ADC
        ("cold_side", math.inf, "impossible", None),
        ("sensor", None, "missing", None),
        ("hot_side", None, "missing", None),
    ],
)
def test_impossible_and_missing_readings_are_faults(
    channel: str, value: float | None, reason: str, shown: float | None
) -> None:
    c = controller()
    run(c, 0.0, 1.0)
    kw = {"sensor": 30.0, "cold": 20.0, "hot": 40.0}
    kw[{"sensor": "sensor", "cold_side": "cold", "hot_side": "hot"}[channel]] = value  # type: ignore[assignment]
    out = c.update(2.0, reading(2.0, **kw))  # type: ignore[arg-type]
    assert one(out, "sensor_fault") == {
        "sensor": channel,
        "reason": reason,
        "value_c": shown,
        "age_s": 0.0,
    }
    assert (out.fan_duty, out.forced, out.cooler) == (1.0, True, OFF)
    assert c.alarms == (f"sensor_fault:{channel}:{reason}",)


def test_a_faulted_reading_holds_its_level_instead_of_calling_it_normal() -> None:
    c = controller()
    c.update(0.0, reading(0.0, hot=61.0))
    out = c.update(1.0, reading(1.0, hot=-300.0))
    assert types(out.events) == ["sensor_fault"]
    assert c.level is Level.WARNING


def test_channel_recovery_waits_for_fresh_telemetry() -> None:
    c = controller()
    c.update(0.0, reading(0.0, sensor=None))
    c.update(1.0, reading(1.0, age=2.5))  # stale: cannot judge the sensor
    c.update(5.0, reading(5.0, age=6.5))
    out = c.update(6.0, reading(6.0))  # 6 s after the bad reading, but unseen for 5 of them
    assert "sensor_recovered" not in types(out.events)
    assert SensorFault("sensor", "missing") in out.faults
    out = c.update(9.0, reading(9.0))
    assert sorted(str(e.data["sensor"]) for e in out.events) == ["link", "sensor"]
    assert out.faults == ()


def test_mcu_faults_are_raised_when_they_appear() -> None:
    c = controller()
    out = c.update(0.0, reading(0.0, faults=frozenset({"FAN_TIMEOUT"})))
    assert one(out, "mcu_fault") == {"fault": "FAN_TIMEOUT", "active": "FAN_TIMEOUT"}
    assert c.update(1.0, reading(1.0, faults=frozenset({"FAN_TIMEOUT"}))).events == ()
    out = c.update(2.0, reading(2.0, faults=frozenset({"FAN_TIMEOUT", "FAN_STALL"})))
    assert one(out, "mcu_fault") == {"fault": "FAN_STALL", "active": "FAN_STALL,FAN_TIMEOUT"}
    assert c.alarms == ("mcu_fault:FAN_STALL", "mcu_fault:FAN_TIMEOUT")


def test_temperatures_and_extremes_for_telemetry() -> None:
    c = controller()
    c.update(0.0, reading(0.0, sensor=31.0, cold=18.0, hot=44.0))
    c.update(1.0, reading(1.0, sensor=32.0, cold=-300.0, hot=43.0))
    assert c.temperatures() == {"sensor": 32.0, "cold_side": -300.0, "hot_side": 43.0}
    assert c.stats.max_c == {"sensor": 32.0, "cold_side": 18.0, "hot_side": 44.0}
    assert c.stats.sensor_faults == 1


# -- the checks on their own ---------------------------------------------------------------------


def test_range_check() -> None:
    check = RangeCheck(-35.0, 130.0)
    assert check.check(25.0) is None
    assert check.check(-35.0) is None
    assert check.check(130.01) == "impossible"
    assert check.check(None) == "missing"


def test_frozen_check_with_a_minimum_change() -> None:
    check = FrozenCheck(after_s=2.0, min_change_c=0.1)
    assert not check.check(30.0, 0.0)
    assert not check.check(30.05, 1.0)  # within the dead band
    assert check.check(30.05, 2.0)
    assert not check.check(30.2, 2.5)  # moved: a new reference
    check.reset()
    assert not check.check(30.2, 100.0)


def test_stale_check_grace_and_age() -> None:
    check = StaleCheck(1.0)
    assert not check.check(10.0, None)
    assert check.check(11.0, None)
    assert not check.check(11.0, reading(11.0, age=1.0))
    assert check.check(11.0, reading(11.0, age=1.01))
