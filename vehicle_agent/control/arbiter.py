"""Act stage: `arbitrate`, one fan duty and one cooler command from the cleaning and thermal wishes (pure).

The rule is "more air wins": the fan runs at the largest duty anybody wants, so thermal
protection can only ever add air to a cleaning burst, and a cleaning can only add air to
thermal regulation, never take it away. A thermal safety override (sensor fault, critical
temperature) is full duty already, so it always wins. The cooler is thermal's alone; without
a thermal opinion it stays off.
"""

from __future__ import annotations

from dataclasses import dataclass

from vehicle_agent.control.fan import check_duty
from vehicle_agent.control.thermal import CoolerCommand, ThermalOutput


@dataclass(frozen=True, slots=True)
class Decision:
    fan_duty: float
    cooler: CoolerCommand | None
    """None: no thermal side on this vehicle (nothing to command)."""
    reason: str
    """Who set the duty: 'idle', 'cleaning', 'thermal', or thermal's override reason
    ('sensor_fault', 'critical')."""


def arbitrate(
    idle_duty: float, cleaning_duty: float | None, thermal: ThermalOutput | None
) -> Decision:
    """The fan duty is the largest wish; ties go to the safety override, then to cleaning."""
    duty, reason = check_duty(idle_duty), "idle"
    if thermal is not None and thermal.fan_duty is not None:
        wish = check_duty(thermal.fan_duty)
        if wish > duty:
            duty, reason = wish, "thermal"
    if cleaning_duty is not None:
        wish = check_duty(cleaning_duty)
        if wish >= duty:
            duty, reason = wish, "cleaning"
    if thermal is not None and thermal.forced:
        duty, reason = max(duty, 1.0), thermal.reason
    return Decision(duty, None if thermal is None else thermal.cooler, reason)
