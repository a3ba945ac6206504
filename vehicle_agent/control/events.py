"""Act stage: `ControlEvent`, what the pure control machines report; the control loop emits them by name."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from vehicle_agent.records import JsonValue


@dataclass(frozen=True, slots=True)
class ControlEvent:
    """One transition or alarm: `type` is a name of `CONTROL_EVENTS`, `data` its fields."""

    type: str
    data: Mapping[str, JsonValue] = field(default_factory=dict)


class Emit(Protocol):
    """Where the control loop delivers events, on the event loop: `EventBus.emit` fits as is.

    `t` is seconds of video time (the latest frame the loop saw), `frame` the frame concerned.
    """

    def __call__(
        self, type_: str, t: float, frame: int | None = None, /, **data: JsonValue
    ) -> object: ...


_CYCLE = "cleaning number since start, 1, 2, …"

CONTROL_EVENTS: Mapping[str, tuple[str, Mapping[str, str], int]] = {
    # name: (description, {field: meaning with unit}, log level); `vehicle_agent.events`
    # turns each into an `EventSpec`. `actuator_safe_state` is emitted too (already defined).
    "adhesion_detected": (
        (
            "The cleaning policy sees soiling on the lens (the detector's flag rose, outside a "
            "cleaning)."
        ),
        {
            "score": "adhesion score 0–1, or null",
            "covered_fraction": "share of the frame the detector sees covered, 0–1, or null",
        },
        logging.INFO,
    ),
    "adhesion_cleared": (
        (
            "The cleaning policy sees the lens clear again (reported after the cleaning that "
            "cleared it, or when soiling went away by itself)."
        ),
        {
            "score": "adhesion score 0–1, or null",
            "covered_fraction": "share of the frame the detector sees covered, 0–1, or null",
        },
        logging.INFO,
    ),
    "cleaning_started": (
        "The fan blows the lens at full duty.",
        {
            "cycle": _CYCLE,
            "reason": "'adhesion' (automatic), 'command' (MQTT) or another manual trigger",
            "manual": "true when triggered by hand or command",
            "burst_s": "burst length, seconds",
            "score": "adhesion score 0–1 at the start, or null",
        },
        logging.INFO,
    ),
    "cleaning_verifying": (
        "A burst ended; the adhesion score is watched for the verify window.",
        {"cycle": _CYCLE, "attempt": "attempt 1, 2, …", "verify_s": "verify window, seconds"},
        logging.INFO,
    ),
    "cleaning_finished": (
        "One attempt was judged (success false is followed by cleaning_retry or cleaning_failed).",
        {
            "cycle": _CYCLE,
            "success": "true: the score fell; false: it did not; null: nothing to judge by",
            "score_before": "adhesion score 0–1 at the start, or null",
            "score_after": "adhesion score 0–1 at the verdict, or null",
            "attempt": "attempt 1, 2, …",
            "duration_s": "since the cleaning started, seconds",
        },
        logging.INFO,
    ),
    "cleaning_retry": (
        "The score did not fall: another burst.",
        {"cycle": _CYCLE, "attempt": "the attempt now starting", "score": "adhesion score 0–1"},
        logging.INFO,
    ),
    "cleaning_failed": (
        "All attempts failed: no automatic cleaning during the back-off.",
        {
            "cycle": _CYCLE,
            "attempts": "bursts blown",
            "score_before": "adhesion score 0–1 at the start, or null",
            "score_after": "adhesion score 0–1 at the end, or null",
            "backoff_s": "seconds without automatic cleaning",
        },
        logging.WARNING,
    ),
    "lens_service_required": (
        (
            "An automatic cleaning spent all its retries: the lens needs service. Latched "
            "(telemetry `lens_service_required`, metric `vehicle_agent_lens_service_required`) "
            "until a cleaning succeeds or the `clear_lens_service` command."
        ),
        {
            "cycle": _CYCLE,
            "attempts": "bursts blown in the failed cleaning",
            "score": "adhesion score 0–1 at the end, or null",
        },
        logging.ERROR,
    ),
    "lens_service_cleared": (
        "The lens_service_required latch was released.",
        {"reason": "'cleaning_succeeded' or 'command'"},
        logging.INFO,
    ),
    "cleaning_skipped": (
        "A cleaning was wanted but not started.",
        {
            "reason": "'min_interval', 'backoff', 'automatic_off' or 'busy'",
            "trigger": "'adhesion' or the manual trigger's reason",
            "retry_in_s": "seconds until automatic cleaning is allowed again, or null",
        },
        logging.INFO,
    ),
    "cleaning_backoff_ended": ("Automatic cleaning is allowed again.", {}, logging.INFO),
    "thermal_warning": (
        "A temperature reached its warning threshold (or fell back from critical to warning).",
        {
            "sensor": "'sensor' (image sensor) or 'hot_side' (cooler hot side)",
            "temperature_c": "°C",
            "threshold_c": "warning threshold, °C",
            "previous": "level before: 'normal' or 'critical'",
        },
        logging.WARNING,
    ),
    "thermal_critical": (
        "A temperature reached its critical threshold: cooler off, fan full.",
        {
            "sensor": "'sensor' or 'hot_side'",
            "temperature_c": "°C",
            "threshold_c": "critical threshold, °C",
        },
        logging.ERROR,
    ),
    "thermal_normal": (
        "All temperatures are below their warning thresholds (less the hysteresis) again.",
        {
            "sensor_c": "image sensor, °C, or null",
            "hot_side_c": "cooler hot side, °C, or null",
            "previous": "level before: 'warning' or 'critical'",
        },
        logging.INFO,
    ),
    "sensor_fault": (
        "A temperature cannot be trusted: fan full, cooler off, until it recovers.",
        {
            "sensor": "'sensor', 'cold_side', 'hot_side', or 'link' (the whole telemetry)",
            "reason": "'stale', 'frozen', 'impossible' or 'missing'",
            "value_c": "the reading, °C, or null",
            "age_s": "age of the latest telemetry, seconds, or null when there is none",
        },
        logging.ERROR,
    ),
    "sensor_recovered": (
        "A sensor fault cleared (sound readings for the recovery time).",
        {
            "sensor": "as in sensor_fault",
            "reason": "as in sensor_fault",
            "duration_s": "how long the fault lasted, seconds",
        },
        logging.INFO,
    ),
    "mcu_fault": (
        "The camera module's microcontroller latched a fault flag.",
        {
            "fault": "the new flag, e.g. 'FAN_STALL', 'HOT_OVERTEMP', 'FAN_TIMEOUT'",
            "active": "all latched flags, comma-separated",
        },
        logging.WARNING,
    ),
    "actuator_fault": (
        "The fan or the cooler could not be commanded (repeats are counted, not emitted).",
        {"actuator": "'fan:<driver>' or 'cooler:<link>'", "error": "what failed"},
        logging.ERROR,
    ),
    "no_real_fan": (
        (
            'Control started with `[control.fan] driver = "none"`: cleaning and thermal '
            "control drive no fan (alarm `no_real_fan` in telemetry and status)."
        ),
        {"message": "what to configure"},
        logging.WARNING,
    ),
    "actuator_recovered": (
        "A failing actuator took a command again.",
        {"actuator": "as in actuator_fault", "failures": "commands that failed meanwhile"},
        logging.INFO,
    ),
}
"""Every event the control emits, with its fields and units (besides `actuator_safe_state`)."""
