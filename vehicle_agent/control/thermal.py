"""Act stage: `ThermalController`, cooler and fan wishes from the module temperatures (pure: explicit `now`).

Each update takes the latest telemetry (image sensor, cooler cold side, cooler hot side) and
returns what the thermal side wants: the cooler on at the sensor setpoint (the MCU regulates
the drive itself), a fan duty that follows the hot side through a PI controller, and events.

Fail-safe rules, in order:
1. A reading the controller cannot trust (the link is stale, a value is missing, impossible or
   frozen) is a sensor fault: fan at full duty, cooler off, `sensor_fault` raised. The checks
   are small objects of their own (`StaleCheck`, `RangeCheck`, `FrozenCheck`), as in Klipper's
   verify_heater, and a fault clears only after `recover_after_s` of sound readings.
2. At a critical temperature (sensor or hot side): cooler off (its waste heat is what the hot
   side cannot shed) and fan full.
3. Otherwise the PI duty, never below `fan_min_duty_cooling` while the cooler runs.

Why PI rather than hysteresis on the fan: the duty moves smoothly with the load (less noise,
less wear, no limit cycle on the hot side); the bang-bang part is the critical override.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from vehicle_agent.compat import StrEnum
from vehicle_agent.control.events import ControlEvent
from vehicle_agent.control.settings import ThermalConfig
from vehicle_agent.records import JsonValue

CHANNELS = ("sensor", "cold_side", "hot_side")
"""The temperatures the module reports, by the name used in events and telemetry."""
LINK = "link"
"""The `sensor` of a fault that concerns the whole sample (stale telemetry)."""
MAX_PI_STEP_S = 5.0
"""Longest time step the PI integrates at once (after a pause, not a jump of the integral)."""


class Level(StrEnum):
    NORMAL = "normal"
    WARNING = "warning"
    CRITICAL = "critical"


_RANK = {Level.NORMAL: 0, Level.WARNING: 1, Level.CRITICAL: 2}


@dataclass(frozen=True, slots=True)
class ThermalReading:
    """One telemetry sample as the controller sees it (°C; None: no valid reading)."""

    sensor_c: float | None
    cold_side_c: float | None
    hot_side_c: float | None
    age_s: float
    """How old the sample is now, seconds."""
    sample_id: float
    """Changes with every new sample (e.g. its arrival time): repeats are not new evidence."""
    stale: bool = False
    """The link itself calls the sample stale (reports and polls stopped)."""
    mcu_faults: frozenset[str] = frozenset()
    """Fault flags the MCU has latched, by name."""

    def value(self, channel: str) -> float | None:
        return {
            "sensor": self.sensor_c,
            "cold_side": self.cold_side_c,
            "hot_side": self.hot_side_c,
        }[channel]


@dataclass(frozen=True, slots=True)
class CoolerCommand:
    enabled: bool
    setpoint_c: float


@dataclass(frozen=True, slots=True)
class SensorFault:
    sensor: str
    """'sensor', 'cold_side', 'hot_side' or 'link'."""
    reason: str
    """'stale', 'frozen', 'impossible' or 'missing'."""


@dataclass(frozen=True, slots=True)
class ThermalOutput:
    """What the thermal side wants after an update."""

    fan_duty: float | None
    """None: no opinion (no telemetry yet)."""
    forced: bool
    """True when the duty is a safety override (sensor fault or critical), not regulation."""
    cooler: CoolerCommand
    level: Level
    faults: tuple[SensorFault, ...]
    reason: str
    """Why this duty: 'waiting', 'regulating', 'sensor_fault' or 'critical'."""
    events: tuple[ControlEvent, ...] = ()


# -- the checks, one small object each ------------------------------------------------------


class StaleCheck:
    """Telemetry too old to act on (or none at all once the start-up grace has passed)."""

    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self._started: float | None = None

    def check(self, now: float, reading: ThermalReading | None) -> bool:
        if self._started is None:
            self._started = now
        if reading is None:
            return now - self._started >= self.max_age_s
        return reading.stale or reading.age_s > self.max_age_s


class RangeCheck:
    """A value that no working thermistor gives: 'missing' (the MCU marks it invalid) or
    'impossible' (not finite, or outside [min_c, max_c], e.g. −300 °C or a railed ADC)."""

    def __init__(self, min_c: float, max_c: float) -> None:
        self.min_c = min_c
        self.max_c = max_c

    def check(self, value: float | None) -> str | None:
        if value is None:
            return "missing"
        if not math.isfinite(value) or not self.min_c <= value <= self.max_c:
            return "impossible"
        return None


class FrozenCheck:
    """A reading that has not moved by more than `min_change_c` for `after_s` of new samples:
    real readings always carry some noise, a stuck ADC or a disconnected mux does not."""

    def __init__(self, after_s: float, min_change_c: float) -> None:
        self.after_s = after_s
        self.min_change_c = min_change_c
        self._reference: float | None = None
        self._since = 0.0

    def check(self, value: float, sample_time: float) -> bool:
        if self._reference is None or abs(value - self._reference) > self.min_change_c:
            self._reference = value
            self._since = sample_time
            return False
        return sample_time - self._since >= self.after_s

    def reset(self) -> None:
        self._reference = None


@dataclass(slots=True)
class _Latched:
    since: float
    value: float | None
    ok_since: float | None = None


@dataclass(slots=True)
class _Channel:
    range: RangeCheck
    frozen: FrozenCheck
    level: Level = Level.NORMAL
    frozen_now: bool = False


@dataclass(slots=True)
class _Pi:
    kp: float
    ki: float
    target_c: float
    integral: float = 0.0

    def step(self, value: float, dt: float) -> float:
        error = value - self.target_c
        proportional = self.kp * error
        candidate = min(1.0, max(0.0, self.integral + self.ki * error * dt))
        out = proportional + candidate
        # Anti-windup: stop integrating while the output is pinned in the error's direction.
        if not ((out > 1.0 and error > 0) or (out < 0.0 and error < 0)):
            self.integral = candidate
        return min(1.0, max(0.0, proportional + self.integral))


@dataclass(slots=True)
class _Thresholds:
    warning: float
    critical: float


# -- the controller -------------------------------------------------------------------------


@dataclass(slots=True)
class ThermalStats:
    warnings: int = 0
    criticals: int = 0
    sensor_faults: int = 0
    mcu_faults: int = 0
    max_c: dict[str, float] = field(default_factory=dict)


class ThermalController:
    """Decides the cooler command and the thermal fan duty; see the module docstring."""

    def __init__(self, config: ThermalConfig) -> None:
        self.config = config
        self.stale = StaleCheck(config.stale_after_s)
        self.channels = {
            name: _Channel(
                RangeCheck(config.valid_min_c, config.valid_max_c),
                FrozenCheck(config.frozen_after_s, config.frozen_min_change_c),
            )
            for name in CHANNELS
        }
        self.thresholds = {
            "sensor": _Thresholds(config.sensor_warning_c, config.sensor_critical_c),
            "hot_side": _Thresholds(config.hot_warning_c, config.hot_critical_c),
        }
        self.pi = _Pi(config.fan_kp_per_c, config.fan_ki_per_c_s, config.hot_target_c)
        self.level = Level.NORMAL
        self.faults: dict[tuple[str, str], _Latched] = {}
        self.stats = ThermalStats()
        self.last_reading: ThermalReading | None = None
        self.last_output: ThermalOutput | None = None
        self._last_now: float | None = None
        self._last_sample: float | None = None
        self._mcu_faults: frozenset[str] = frozenset()

    @property
    def alarms(self) -> tuple[str, ...]:
        """What is wrong now: 'thermal_warning', 'thermal_critical', 'sensor_fault:<sensor>:
        <reason>', 'mcu_fault:<flag>'."""
        alarms: list[str] = []
        if self.level is not Level.NORMAL:
            alarms.append(f"thermal_{self.level}")
        alarms += [f"sensor_fault:{s}:{r}" for s, r in sorted(self.faults)]
        alarms += [f"mcu_fault:{f}" for f in sorted(self._mcu_faults)]
        return tuple(alarms)

    def temperatures(self) -> dict[str, float]:
        """The latest valid readings, °C, by channel (for telemetry)."""
        reading = self.last_reading
        if reading is None:
            return {}
        out: dict[str, float] = {}
        for name in CHANNELS:
            value = reading.value(name)
            if value is not None and math.isfinite(value):
                out[name] = value
        return out

    def update(self, now: float, reading: ThermalReading | None) -> ThermalOutput:
        """The latest telemetry (None: none yet) at time `now` (seconds, any monotonic clock)."""
        events: list[ControlEvent] = []
        dt = 0.0 if self._last_now is None else min(MAX_PI_STEP_S, max(0.0, now - self._last_now))
        self._last_now = now
        self.last_reading = reading
        stale = self.stale.check(now, reading)
        present: dict[tuple[str, str], float | None] = {}
        if stale:
            present[(LINK, "stale")] = None
            for channel in self.channels.values():
                channel.frozen.reset()  # a gap in the samples is not evidence of a frozen sensor
        if reading is not None and not stale:
            self._check_channels(now, reading, present)
            self._mcu_fault_events(reading, events)
        self._latch(now, present, events, evaluated=not stale)
        if reading is not None and not stale:
            self._levels(reading, events)
        output = self._decide(reading, stale, dt, events)
        self.last_output = output
        return output

    # -- checks and faults

    def _check_channels(
        self, now: float, reading: ThermalReading, present: dict[tuple[str, str], float | None]
    ) -> None:
        new_sample = reading.sample_id != self._last_sample
        self._last_sample = reading.sample_id
        sample_time = now - reading.age_s
        for name, channel in self.channels.items():
            value = reading.value(name)
            problem = channel.range.check(value)
            if problem is not None or value is None:
                channel.frozen.reset()
                present[(name, problem or "missing")] = value
                continue
            self.stats.max_c[name] = max(self.stats.max_c.get(name, -math.inf), value)
            if new_sample:
                channel.frozen_now = channel.frozen.check(value, sample_time)
            if channel.frozen_now:
                present[(name, "frozen")] = value

    def _latch(
        self,
        now: float,
        present: Mapping[tuple[str, str], float | None],
        events: list[ControlEvent],
        *,
        evaluated: bool,
    ) -> None:
        for key, value in present.items():
            latched = self.faults.get(key)
            if latched is None:
                self.faults[key] = _Latched(since=now, value=value)
                self.stats.sensor_faults += 1
                sensor, reason = key
                age = self.last_reading.age_s if self.last_reading is not None else None
                events.append(
                    ControlEvent(
                        "sensor_fault",
                        {
                            "sensor": sensor,
                            "reason": reason,
                            "value_c": _json_temperature(value),
                            "age_s": None if age is None else round(age, 3),
                        },
                    )
                )
            else:
                latched.ok_since = None
        for key, latched in list(self.faults.items()):
            if key in present:
                continue
            if key[0] != LINK and not evaluated:
                latched.ok_since = None  # cannot judge a channel without fresh telemetry
                continue
            if latched.ok_since is None:
                latched.ok_since = now
            if now - latched.ok_since >= self.config.recover_after_s:
                del self.faults[key]
                events.append(
                    ControlEvent(
                        "sensor_recovered",
                        {
                            "sensor": key[0],
                            "reason": key[1],
                            "duration_s": round(now - latched.since, 3),
                        },
                    )
                )

    def _mcu_fault_events(self, reading: ThermalReading, events: list[ControlEvent]) -> None:
        for name in sorted(reading.mcu_faults - self._mcu_faults):
            self.stats.mcu_faults += 1
            events.append(
                ControlEvent(
                    "mcu_fault", {"fault": name, "active": ",".join(sorted(reading.mcu_faults))}
                )
            )
        self._mcu_faults = reading.mcu_faults

    # -- levels

    def _levels(self, reading: ThermalReading, events: list[ControlEvent]) -> None:
        hysteresis = self.config.hysteresis_c
        faulted = {sensor for sensor, _ in self.faults}
        for name, limits in self.thresholds.items():
            value = reading.value(name)
            if value is None or name in faulted:
                continue  # a reading we do not trust holds its channel's level
            channel = self.channels[name]
            up = _level_of(value, limits.warning, limits.critical)
            if _RANK[up] >= _RANK[channel.level]:
                channel.level = up
            else:
                channel.level = _level_of(
                    value, limits.warning - hysteresis, limits.critical - hysteresis
                )
        previous = self.level
        worst = max(self.thresholds, key=lambda n: (_RANK[self.channels[n].level], n == "hot_side"))
        level = self.channels[worst].level
        if level is previous:
            return
        self.level = level
        value = reading.value(worst)
        limits = self.thresholds[worst]
        if level is Level.CRITICAL:
            self.stats.criticals += 1
            events.append(
                ControlEvent(
                    "thermal_critical",
                    {
                        "sensor": worst,
                        "temperature_c": _json_temperature(value),
                        "threshold_c": limits.critical,
                    },
                )
            )
        elif level is Level.WARNING:
            self.stats.warnings += 1
            events.append(
                ControlEvent(
                    "thermal_warning",
                    {
                        "sensor": worst,
                        "temperature_c": _json_temperature(value),
                        "threshold_c": limits.warning,
                        "previous": str(previous),
                    },
                )
            )
        else:
            events.append(
                ControlEvent(
                    "thermal_normal",
                    {
                        "sensor_c": _json_temperature(reading.sensor_c),
                        "hot_side_c": _json_temperature(reading.hot_side_c),
                        "previous": str(previous),
                    },
                )
            )

    # -- the decision

    def _decide(
        self, reading: ThermalReading | None, stale: bool, dt: float, events: list[ControlEvent]
    ) -> ThermalOutput:
        config = self.config
        off = CoolerCommand(enabled=False, setpoint_c=config.sensor_setpoint_c)
        faults = tuple(SensorFault(s, r) for s, r in sorted(self.faults))

        def output(duty: float | None, cooler: CoolerCommand, reason: str) -> ThermalOutput:
            return ThermalOutput(
                fan_duty=duty,
                forced=reason in {"sensor_fault", "critical"},
                cooler=cooler,
                level=self.level,
                faults=faults,
                reason=reason,
                events=tuple(events),
            )

        if faults:
            return output(1.0, off, "sensor_fault")
        if self.level is Level.CRITICAL:
            return output(1.0, off, "critical")
        if reading is None or stale or reading.hot_side_c is None:
            # Start-up grace: no telemetry yet, so no opinion on the fan and nothing to regulate.
            return output(None, off, "waiting")
        duty = self.pi.step(reading.hot_side_c, dt)
        cooler = CoolerCommand(enabled=config.cooler_enabled, setpoint_c=config.sensor_setpoint_c)
        if cooler.enabled:
            duty = max(duty, config.fan_min_duty_cooling)
        return output(duty, cooler, "regulating")


def _level_of(value: float, warning: float, critical: float) -> Level:
    if value >= critical:
        return Level.CRITICAL
    if value >= warning:
        return Level.WARNING
    return Level.NORMAL


def _json_temperature(value: float | None) -> JsonValue:
    if value is None or not math.isfinite(value):
        return None
    return round(value, 2)
