"""Arbitration: the fan runs at the largest wish, so thermal protection only ever adds air to a
cleaning and a cleaning never takes air from thermal; a safety override is full duty; the
cooler is thermal's alone."""

from __future__ import annotations

import pytest

from vehicle_agent.control.arbiter import Decision, arbitrate
from vehicle_agent.control.thermal import CoolerCommand, Level, SensorFault, ThermalOutput

ON = CoolerCommand(enabled=True, setpoint_c=30.0)
OFF = CoolerCommand(enabled=False, setpoint_c=30.0)


def thermal(
    duty: float | None, *, forced: bool = False, reason: str = "regulating"
) -> ThermalOutput:
    cooler = OFF if forced else ON
    faults = (SensorFault("sensor", "frozen"),) if reason == "sensor_fault" else ()
    level = Level.CRITICAL if reason == "critical" else Level.NORMAL
    return ThermalOutput(duty, forced, cooler, level, faults, reason)


def test_nobody_wants_anything_idle_duty() -> None:
    assert arbitrate(0.3, None, None) == Decision(0.3, None, "idle")


def test_cleaning_alone_blows_full() -> None:
    assert arbitrate(0.0, 1.0, None) == Decision(1.0, None, "cleaning")


def test_thermal_above_idle() -> None:
    assert arbitrate(0.0, None, thermal(0.45)) == Decision(0.45, ON, "thermal")


def test_thermal_below_idle_keeps_idle() -> None:
    assert arbitrate(0.3, None, thermal(0.2)) == Decision(0.3, ON, "idle")


def test_thermal_without_opinion_yet() -> None:
    assert arbitrate(0.0, None, thermal(None)) == Decision(0.0, ON, "idle")


@pytest.mark.parametrize("thermal_duty", [0.0, 0.5, 0.99])
def test_thermal_never_lowers_a_cleaning_burst(thermal_duty: float) -> None:
    decision = arbitrate(0.0, 1.0, thermal(thermal_duty))
    assert decision.fan_duty == 1.0
    assert decision.reason == "cleaning"
    assert decision.cooler == ON  # cleaning does not touch the cooler


def test_a_partial_cleaning_wish_does_not_lower_thermal() -> None:
    assert arbitrate(0.0, 0.4, thermal(0.7)) == Decision(0.7, ON, "thermal")


@pytest.mark.parametrize("reason", ["sensor_fault", "critical"])
def test_safety_override_is_full_duty_with_the_cooler_off(reason: str) -> None:
    for cleaning in (None, 1.0):
        decision = arbitrate(0.0, cleaning, thermal(1.0, forced=True, reason=reason))
        assert decision == Decision(1.0, OFF, reason)


def test_wishes_are_validated_duties() -> None:
    with pytest.raises(ValueError, match="within"):
        arbitrate(0.0, 1.5, None)
    with pytest.raises(ValueError, match="within"):
        arbitrate(0.0, None, thermal(float("nan")))
