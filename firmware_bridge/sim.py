"""Firmware bridge: the camera module's firmware, simulated on the far end of a pseudo-terminal.

Three layers, so each is tested on its own:
- `Plant`: the physics the MCU sits in (image sensor, thermoelectric cooler, heat sink, fan),
  a lumped first-order thermal model stepped in model seconds; pure.
- `Firmware`: the MCU's logic as `docs/mcu-protocol.md` requires it (sessions, `max_duration`
  fallbacks, over-temperature protection, periodic reports), bytes in, bytes out, on an
  injected clock; pure, so tests step it without a pty or a thread.
- `FirmwareSimulator`: a `Firmware` on the master side of a real pty pair, run by one thread,
  with unplug/replug. The host opens the slave side (`port`) like any serial port.

The firmware speaks through `protocol.py`, like the host, so both ends share one table.
Fault switches (`FaultSwitches`) are read live, so tests and the `sim` command flip them while
it runs. A thread rather than an asyncio task: the simulator must keep time while the host's
event loop is busy or blocked, as a real MCU does, and it must serve a host in another process.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import math
import os
import queue
import random
import select
import threading
import time
import tty
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from firmware_bridge.compat import Self
from firmware_bridge.messages import (
    ACK,
    ALL_FAULTS,
    BY_ID,
    CLEAR_FAULTS,
    FAN_STALL_DUTY,
    FAN_STALL_RPM,
    FAN_STALL_S,
    GET_TELEMETRY,
    HEARTBEAT,
    HEARTBEAT_REPLY,
    IDENTIFY,
    IDENTIFY_REPLY,
    NAK,
    OVERTEMP_HYSTERESIS_C,
    PROTOCOL_VERSION,
    SET_COOLER,
    SET_FAN,
    TELEMETRY,
    TELEMETRY_REPORT,
    ErrorCode,
    Fault,
    Kind,
    MessageSpec,
    State,
    Value,
)
from firmware_bridge.protocol import Decoder, ErrorReason, Message, encode

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

logger = logging.getLogger(__name__)

KELVIN = 273.15


# -- the physics ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlantParams:
    """Lumped parameters of a small cooled camera module. Defaults give plausible figures: a
    sensor some 10 °C above ambient with everything off, a hot side 15–25 °C above ambient
    with the cooler working and the fan off, a few degrees with the fan at full speed."""

    sensor_power_w: float = 1.5
    """Heat dissipated by the image sensor while it streams."""
    sensor_capacity_j_per_k: float = 4.0
    cold_capacity_j_per_k: float = 8.0
    """Cold plate and the cooler's cold face."""
    hot_capacity_j_per_k: float = 40.0
    """Heat sink and the cooler's hot face."""
    sensor_to_cold_w_per_k: float = 0.8
    sensor_to_ambient_w_per_k: float = 0.04
    cold_to_ambient_w_per_k: float = 0.15
    """Leak through the insulation around the cold plate."""
    hot_to_ambient_w_per_k: float = 0.35
    """Heat sink by natural convection (fan stopped)."""
    fan_w_per_k: float = 1.6
    """Extra heat-sink conductance at the fan's full speed (proportional to speed)."""
    tec_seebeck_v_per_k: float = 0.025
    tec_resistance_ohm: float = 1.2
    tec_conductance_w_per_k: float = 0.12
    """Back-conduction through the cooler from hot to cold face."""
    tec_max_current_a: float = 2.5
    """Current at drive 1.0."""
    fan_max_rpm: float = 6000.0
    fan_start_duty: float = 0.12
    """Below this duty the motor does not turn."""
    fan_spin_up_s: float = 0.7
    """Time constant of the rotor speeding up."""
    fan_spin_down_s: float = 1.5
    overtemp_load_w: float = 30.0
    """Heat on the heat sink while the `overtemp` fault is on (a blocked sink in full sun)."""
    max_step_s: float = 0.2
    """Longest explicit-Euler step (the fastest time constant here is ~4.7 s)."""


class Plant:
    """Sensor, cold plate, heat sink and fan, stepped by `step()` in model seconds.

    Heat flows: the sensor heats itself and leaks to the cold plate and the air; the cooler
    pumps heat from the cold plate to the heat sink (Peltier: Qc = S·I·Tc − I²R/2 − K·ΔT, and
    the hot side receives Qc plus the electrical power); the heat sink loses heat to the air,
    much faster with the fan turning.
    """

    def __init__(self, params: PlantParams | None = None, ambient_c: float = 25.0) -> None:
        self.params = params or PlantParams()
        self.ambient_c = ambient_c
        self.extra_hot_w = 0.0
        self.fan_blocked = False
        self.sensor_c = self.cold_c = self.hot_c = ambient_c
        self.fan_rpm = 0.0
        self.settle()

    def settle(self, cooler_drive: float = 0.0, fan_duty: float = 0.0) -> None:
        """Jump to the steady state for these inputs (so a run does not start with a warm-up)."""
        for _ in range(4000):  # ~30 time constants of the slowest node at 1 s steps
            self._euler(1.0, cooler_drive, fan_duty)
        self.fan_rpm = self._rpm_target(fan_duty)

    def step(self, dt_s: float, cooler_drive: float, fan_duty: float) -> None:
        """Advance by `dt_s` model seconds with these inputs held constant."""
        while dt_s > 0:
            h = min(dt_s, self.params.max_step_s)
            self._euler(h, cooler_drive, fan_duty)
            dt_s -= h

    def tec_heat_w(self, cooler_drive: float) -> tuple[float, float]:
        """(heat pumped from the cold plate, heat delivered to the heat sink) in W, now."""
        p = self.params
        current = max(0.0, min(1.0, cooler_drive)) * p.tec_max_current_a
        delta = self.hot_c - self.cold_c
        joule = current * current * p.tec_resistance_ohm
        peltier = p.tec_seebeck_v_per_k * current * (self.cold_c + KELVIN)
        q_cold = peltier - joule / 2 - p.tec_conductance_w_per_k * delta
        electrical = joule + p.tec_seebeck_v_per_k * current * delta
        return q_cold, q_cold + electrical

    def _rpm_target(self, duty: float) -> float:
        p = self.params
        if self.fan_blocked or duty < p.fan_start_duty:
            return 0.0
        return p.fan_max_rpm * duty

    def _euler(self, h: float, cooler_drive: float, fan_duty: float) -> None:
        p = self.params
        q_cold, q_hot = self.tec_heat_w(cooler_drive)
        sink = p.hot_to_ambient_w_per_k + p.fan_w_per_k * self.fan_rpm / p.fan_max_rpm
        to_cold = p.sensor_to_cold_w_per_k * (self.sensor_c - self.cold_c)
        d_sensor = (
            p.sensor_power_w
            - to_cold
            - p.sensor_to_ambient_w_per_k * (self.sensor_c - self.ambient_c)
        )
        d_cold = to_cold - q_cold - p.cold_to_ambient_w_per_k * (self.cold_c - self.ambient_c)
        d_hot = q_hot + self.extra_hot_w - sink * (self.hot_c - self.ambient_c)
        self.sensor_c += h * d_sensor / p.sensor_capacity_j_per_k
        self.cold_c += h * d_cold / p.cold_capacity_j_per_k
        self.hot_c += h * d_hot / p.hot_capacity_j_per_k
        if self.fan_blocked:
            self.fan_rpm = 0.0  # a jammed rotor stops at once; it does not coast
            return
        target = self._rpm_target(fan_duty)
        tau = p.fan_spin_up_s if target > self.fan_rpm else p.fan_spin_down_s
        self.fan_rpm += (target - self.fan_rpm) * (1.0 - math.exp(-h / tau))


# -- the firmware ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FirmwareConfig:
    """What a real module would have in flash."""

    serial_number: str = "SIM-00000001"
    version: tuple[int, int, int] = (1, 0, 0)
    protocol: int = PROTOCOL_VERSION
    """Set another value to simulate a firmware of another protocol version."""
    telemetry_period_s: float = 0.2
    host_timeout_s: float = 2.0
    fan_safe_duty: float = 0.3
    sensor_limit_c: float = 85.0
    hot_limit_c: float = 70.0
    noise_c: float = 0.02
    """Standard deviation of the temperature readings: real readings are never bit-identical
    for long, which is what lets the host tell a stuck sensor from a steady one."""
    cooler_kp_per_c: float = 0.15
    """Cooler regulation: drive per °C of sensor temperature above the setpoint."""
    cooler_ki_per_c_s: float = 0.01

    def __post_init__(self) -> None:
        # What identify_reply cannot carry is refused here, naming the field, not at the first
        # identify in the simulator thread.
        try:
            IDENTIFY_REPLY.pack(self.identity())
        except ValueError as exc:
            raise ValueError(f"firmware config: {exc}") from None

    def identity(self) -> dict[str, Value]:
        """The `identify_reply` values."""
        major, minor, patch = self.version
        return {
            "protocol": self.protocol,
            "fw_major": major,
            "fw_minor": minor,
            "fw_patch": patch,
            "serial_number": self.serial_number,
            "telemetry_period_ms": round(self.telemetry_period_s * 1000),
            "host_timeout_ms": round(self.host_timeout_s * 1000),
            "fan_safe_duty": self.fan_safe_duty,
            "sensor_limit": self.sensor_limit_c,
            "hot_limit": self.hot_limit_c,
        }


@dataclass(slots=True)
class FaultSwitches:
    """Faults to inject, read live by the simulator (flip them while it runs)."""

    garbage: float = 0.0
    """Probability that random bytes are sent before a frame (as line noise would)."""
    corrupt: float = 0.0
    """Probability that one byte of a frame is flipped on the way out (a CRC or framing error)."""
    drop: float = 0.0
    """Probability that a reply is not sent (the request is still carried out)."""
    silence: bool = False
    """Nothing is transmitted (a dead TX line); requests still arrive and are carried out."""
    stuck_sensor: bool = False
    """The image-sensor reading freezes at its current value."""
    overtemp: bool = False
    """`PlantParams.overtemp_load_w` of extra heat on the heat sink."""
    sensor_open: bool = False
    """The image-sensor thermistor reads open: no valid reading (SENSOR_FAULT)."""
    fan_stall: bool = False
    """The fan's rotor is blocked: the tach reads 0 whatever the duty."""

    NAMES = (
        "garbage",
        "corrupt",
        "drop",
        "silence",
        "stuck-sensor",
        "overtemp",
        "sensor-open",
        "fan-stall",
    )

    def set(self, name: str, value: str | None = None) -> None:
        """Set a fault by its command-line name; rates take a probability, the others on/off."""
        attr = name.replace("-", "_")
        if name not in self.NAMES:
            raise ValueError(f"unknown fault {name!r} (known: {', '.join(self.NAMES)})")
        if isinstance(getattr(self, attr), float):
            rate = 0.1 if value is None else float(value)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault {name}: rate {value} is not within [0, 1]")
            setattr(self, attr, rate)
        else:
            if value not in {None, "on", "off", "1", "0", "true", "false"}:
                raise ValueError(f"fault {name}: {value!r} is not on/off")
            setattr(self, attr, value in {None, "on", "1", "true"})

    def clear(self, name: str) -> None:
        attr = name.replace("-", "_")
        if name not in self.NAMES:
            raise ValueError(f"unknown fault {name!r} (known: {', '.join(self.NAMES)})")
        setattr(self, attr, 0.0 if isinstance(getattr(self, attr), float) else False)

    def active(self) -> list[str]:
        return [n for n in self.NAMES if getattr(self, n.replace("-", "_"))]


@dataclass(frozen=True, slots=True)
class FirmwareState:
    """A consistent look inside the simulated module, for tests and the bench."""

    powered: bool
    session: bool
    uptime_s: float
    fan_duty: float
    """Applied (after safe-state and protective overrides)."""
    fan_rpm: float
    fan_hold_s: float
    cooler_enabled: bool
    cooler_setpoint_c: float
    cooler_drive: float
    sensor_c: float
    cold_c: float
    hot_c: float
    ambient_c: float
    faults: Fault
    protecting: bool
    rx_errors: int
    requests: int
    request_counts: dict[str, int]
    """Valid requests received, by message name."""
    replies_dropped: int
    frames_sent: int
    frames_corrupted: int
    garbage_bytes: int


class Firmware:
    """The MCU's logic: `receive()` host bytes, `tick()` on its clock, `take_output()` bytes.

    Everything `docs/mcu-protocol.md` asks of a firmware is here: one reply per valid request,
    sessions opened by `identify` and closed by host silence, fan and cooler `max_duration`
    fallbacks, over-temperature protection with hysteresis, latched faults, periodic reports.
    """

    def __init__(
        self,
        plant: Plant,
        config: FirmwareConfig | None = None,
        faults: FaultSwitches | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        time_scale: float = 1.0,
    ) -> None:
        self.plant = plant
        self.config = config or FirmwareConfig()
        self.faults = faults or FaultSwitches()
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - noise and fault dice, not secrets
        self.time_scale = time_scale
        """Model seconds per clock second for the plant (the protocol keeps real time)."""
        self.powered = True
        self.rx_errors = 0
        self.requests = 0
        self.request_counts: Counter[str] = Counter()
        self.replies_dropped = 0
        self.frames_sent = 0
        """Frames put on the line, damaged ones included."""
        self.frames_corrupted = 0
        self.garbage_bytes = 0
        self._last_tick = clock()
        self._output = bytearray()
        self.boot()

    # -- lifecycle

    def boot(self) -> None:
        """Power-on reset: no session, outputs safe, faults clear, uptime 0."""
        now = self.clock()
        self.powered = True
        self._boot_time = now
        self._decoder = Decoder(accept=(Kind.REQUEST,))
        self._session = False
        self._last_rx = now
        self._fan_duty = self.config.fan_safe_duty
        self._fan_until: float | None = None
        self._cooler_enabled = False
        self._cooler_setpoint = 20.0
        self._cooler_until: float | None = None
        self._cooler_integral = 0.0
        self._cooler_drive = 0.0
        self._faults = Fault(0)
        self._protect_sensor = False
        self._protect_hot = False
        self._stall_since: float | None = None
        self._report_seq = 0
        self._next_report = now
        self._stuck_reading: float | None = None
        self._sensor_reading: float | None = None
        self._cold_reading = self._hot_reading = self.plant.ambient_c
        self._rpm_reading = 0
        self._read_sensors()

    def power_off(self) -> None:
        """Unplugged: the MCU stops, its outputs go dead (fan and cooler unpowered)."""
        self.tick()
        self.powered = False
        self._output.clear()

    # -- bytes in, bytes out

    def receive(self, data: bytes) -> None:
        self.tick()
        if not self.powered:
            return
        feed = self._decoder.feed(data)
        for error in feed.errors:
            self._on_bad_frame(error.reason, error.msg_id, error.seq)
        for message in feed.messages:
            self._last_rx = self.clock()
            self.requests += 1
            self.request_counts[message.name] += 1
            self._handle(message)

    def take_output(self) -> bytes:
        out = bytes(self._output)
        self._output.clear()
        return out

    def next_deadline(self) -> float:
        """The clock time by which `tick()` must run again (timers, reports)."""
        times = [self._last_tick + 0.05]
        if self._session:
            times += [self._next_report, self._last_rx + self.config.host_timeout_s]
        times += [t for t in (self._fan_until, self._cooler_until) if t is not None]
        return min(times)

    # -- time

    def tick(self) -> None:
        now = self.clock()
        dt = max(0.0, now - self._last_tick)
        self._last_tick = now
        self.plant.extra_hot_w = self.plant.params.overtemp_load_w if self.faults.overtemp else 0.0
        self.plant.fan_blocked = self.faults.fan_stall
        if not self.powered:
            self.plant.step(dt * self.time_scale, 0.0, 0.0)
            return
        self.plant.step(dt * self.time_scale, self._cooler_drive, self.fan_applied)
        before = self._faults
        self._expire(now)
        self._read_sensors()
        self._protect()
        self._regulate(dt * self.time_scale)
        self._watch_fan(now)
        if self._session and (now >= self._next_report or self._faults & ~before):
            self._report(now)

    @property
    def fan_applied(self) -> float:
        return 1.0 if (self._protect_sensor or self._protect_hot) else self._fan_duty

    def _expire(self, now: float) -> None:
        if self._fan_until is not None and now >= self._fan_until:
            self._fan_duty = self.config.fan_safe_duty
            self._fan_until = None
            self._faults |= Fault.FAN_TIMEOUT
        if self._cooler_until is not None and now >= self._cooler_until:
            self._cooler_off()
            self._faults |= Fault.COOLER_TIMEOUT
        if self._session and now - self._last_rx >= self.config.host_timeout_s:
            # The host is gone: make everything safe and require a new identify.
            self._session = False
            self._fan_duty = self.config.fan_safe_duty
            self._fan_until = None
            self._cooler_off()
            self._faults |= Fault.HOST_TIMEOUT

    def _cooler_off(self) -> None:
        self._cooler_enabled = False
        self._cooler_until = None
        self._cooler_integral = 0.0
        self._cooler_drive = 0.0

    def _read(self, true_c: float) -> float:
        return round(true_c + self.rng.gauss(0.0, self.config.noise_c), 2)

    def _read_sensors(self) -> None:
        sensor: float | None = self._read(self.plant.sensor_c)
        if self.faults.stuck_sensor:
            if self._stuck_reading is None:
                self._stuck_reading = self._sensor_reading
            sensor = self._stuck_reading
        else:
            self._stuck_reading = None
        if self.faults.sensor_open:
            sensor = None
        self._sensor_reading = sensor
        self._cold_reading = self._read(self.plant.cold_c)
        self._hot_reading = self._read(self.plant.hot_c)
        self._rpm_reading = (
            round(max(0.0, self.plant.fan_rpm * self.rng.gauss(1.0, 0.005)) / 10) * 10
        )

    def _protect(self) -> None:
        limit_s, limit_h = self.config.sensor_limit_c, self.config.hot_limit_c
        sensor, hot = self._sensor_reading, self._hot_reading
        if sensor is None:
            self._faults |= Fault.SENSOR_FAULT
            self._cooler_off()  # cannot regulate on a reading it does not have
        elif sensor >= limit_s:
            self._protect_sensor = True
            self._faults |= Fault.SENSOR_OVERTEMP
        elif sensor < limit_s - OVERTEMP_HYSTERESIS_C:
            self._protect_sensor = False
        if hot >= limit_h:
            self._protect_hot = True
            self._faults |= Fault.HOT_OVERTEMP
            self._cooler_off()  # its waste heat is what the hot side cannot shed
        elif hot < limit_h - OVERTEMP_HYSTERESIS_C:
            self._protect_hot = False

    def _regulate(self, dt_model: float) -> None:
        if not self._cooler_enabled or self._sensor_reading is None:
            self._cooler_drive = 0.0
            return
        error = self._sensor_reading - self._cooler_setpoint
        proportional = self.config.cooler_kp_per_c * error
        drive = proportional + self._cooler_integral
        # Anti-windup: integrate only while the output is not pinned in the error's direction.
        if not ((drive >= 1.0 and error > 0) or (drive <= 0.0 and error < 0)):
            self._cooler_integral += self.config.cooler_ki_per_c_s * error * dt_model
            self._cooler_integral = max(0.0, min(1.0, self._cooler_integral))
        self._cooler_drive = max(0.0, min(1.0, proportional + self._cooler_integral))

    def _watch_fan(self, now: float) -> None:
        if self.fan_applied >= FAN_STALL_DUTY and self._rpm_reading < FAN_STALL_RPM:
            if self._stall_since is None:
                self._stall_since = now
            elif now - self._stall_since >= FAN_STALL_S:
                self._faults |= Fault.FAN_STALL
        else:
            self._stall_since = None

    def _conditions(self) -> Fault:
        """Faults whose condition is present now (these cannot be cleared)."""
        present = Fault(0)
        if self._protect_sensor:
            present |= Fault.SENSOR_OVERTEMP
        if self._protect_hot:
            present |= Fault.HOT_OVERTEMP
        if self._sensor_reading is None:
            present |= Fault.SENSOR_FAULT
        if self._stall_since is not None and self.clock() - self._stall_since >= FAN_STALL_S:
            present |= Fault.FAN_STALL
        return present

    # -- requests

    def _on_bad_frame(self, reason: ErrorReason, msg_id: int | None, seq: int | None) -> None:
        self.rx_errors = (self.rx_errors + 1) & 0xFFFF
        if msg_id is None or seq is None:
            return  # damaged frame: nothing trustworthy to reply to; the host times out
        self._last_rx = self.clock()  # intact, so the host is alive even if it asks nonsense
        if reason is ErrorReason.UNKNOWN_MESSAGE:
            self._nak(msg_id, seq, ErrorCode.UNKNOWN_MESSAGE)
        elif reason is ErrorReason.BAD_LENGTH:
            self._nak(msg_id, seq, ErrorCode.BAD_LENGTH, BY_ID[msg_id].size)

    def _handle(self, message: Message) -> None:
        spec, seq, values = message.spec, message.seq, message.values
        bad = spec.first_out_of_range(values)
        if spec is IDENTIFY:
            if values["host_protocol"] != self.config.protocol:
                self._nak(spec.msg_id, seq, ErrorCode.VERSION_MISMATCH, self.config.protocol)
                return
            self._session = True
            self._next_report = self.clock() + self.config.telemetry_period_s
            self._reply(IDENTIFY_REPLY, seq, self.config.identity())
            return
        if not self._session:
            self._nak(spec.msg_id, seq, ErrorCode.NOT_IDENTIFIED)
            return
        if bad is not None:
            self._nak(spec.msg_id, seq, ErrorCode.BAD_VALUE, bad)
            return
        now = self.clock()
        if spec is GET_TELEMETRY:
            self._reply(TELEMETRY, seq, self._telemetry(now))
        elif spec is HEARTBEAT:
            self._reply(
                HEARTBEAT_REPLY,
                seq,
                {"uptime_ms": self._uptime_ms(now), "faults": int(self._faults)},
            )
        elif spec is SET_FAN:
            duty = float(_number(values["duty"]))
            self._fan_duty = duty
            safe = abs(duty - self.config.fan_safe_duty) < 0.0005
            self._fan_until = None if safe else now + _number(values["max_duration_ms"]) / 1000
            self._ack(spec, seq)
        elif spec is SET_COOLER:
            if not values["enable"]:
                self._cooler_off()
                self._ack(spec, seq)
                return
            blocking = self._conditions() & (Fault.HOT_OVERTEMP | Fault.SENSOR_FAULT)
            if blocking:
                self._nak(spec.msg_id, seq, ErrorCode.FAULT_ACTIVE, int(blocking) & 0xFF)
                return
            self._cooler_enabled = True
            self._cooler_setpoint = float(_number(values["setpoint"]))
            self._cooler_until = now + _number(values["max_duration_ms"]) / 1000
            self._ack(spec, seq)
        elif spec is CLEAR_FAULTS:
            mask = Fault(int(_number(values["mask"]))) & ALL_FAULTS
            self._faults &= ~(mask & ~self._conditions())
            self._ack(spec, seq)

    def _uptime_ms(self, now: float) -> int:
        return round((now - self._boot_time) * 1000) & 0xFFFF_FFFF

    def _hold_ms(self, until: float | None, now: float) -> int:
        if until is None:
            return 0
        # Rounded before ceil: 0.3 s left must read 300 ms, not 301 from binary noise.
        return min(0xFFFF, max(0, math.ceil(round((until - now) * 1000, 6))))

    def _telemetry(self, now: float) -> dict[str, Value]:
        state = State(0)
        if self._cooler_enabled:
            state |= State.COOLER_ON
        if self._fan_until is not None:
            state |= State.FAN_HELD
        if self._protect_sensor or self._protect_hot:
            state |= State.PROTECTING
        if self._session:
            state |= State.SESSION
        return {
            "uptime_ms": self._uptime_ms(now),
            "sensor_temp": self._sensor_reading,
            "cold_side_temp": self._cold_reading,
            "hot_side_temp": self._hot_reading,
            "cooler_setpoint": self._cooler_setpoint,
            "cooler_drive": round(self._cooler_drive, 3),
            "fan_duty": round(self.fan_applied, 3),
            "fan_rpm": min(30_000, self._rpm_reading),
            "fan_hold_ms": self._hold_ms(self._fan_until, now),
            "cooler_hold_ms": self._hold_ms(self._cooler_until, now),
            "state": int(state),
            "faults": int(self._faults),
            "rx_errors": self.rx_errors,
        }

    def _report(self, now: float) -> None:
        self._send(TELEMETRY_REPORT, self._report_seq, self._telemetry(now), reply=False)
        self._report_seq = (self._report_seq + 1) & 0xFF
        period = self.config.telemetry_period_s
        self._next_report += period
        if self._next_report <= now:  # fell behind (a stalled thread): no burst of catch-up reports
            self._next_report = now + period

    def _ack(self, spec: MessageSpec, seq: int) -> None:
        self._reply(ACK, seq, {"request_id": spec.msg_id})

    def _nak(self, msg_id: int, seq: int, code: ErrorCode, detail: int = 0) -> None:
        self._reply(NAK, seq, {"request_id": msg_id, "code": int(code), "detail": detail & 0xFF})

    def _reply(self, spec: MessageSpec, seq: int, values: Mapping[str, Value]) -> None:
        self._send(spec, seq, values, reply=True)

    def _send(self, spec: MessageSpec, seq: int, values: Mapping[str, Value], reply: bool) -> None:
        faults, rng = self.faults, self.rng
        if faults.silence:
            return
        if reply and faults.drop and rng.random() < faults.drop:
            self.replies_dropped += 1
            return
        frame = bytearray(encode(spec, seq, values))
        if faults.corrupt and rng.random() < faults.corrupt:
            # Flip bits of one byte inside the frame, never the delimiters.
            frame[rng.randrange(1, len(frame) - 1)] ^= rng.randrange(1, 256)
            self.frames_corrupted += 1
        if faults.garbage and rng.random() < faults.garbage:
            garbage = rng.randbytes(rng.randrange(1, 24))
            self.garbage_bytes += len(garbage)
            self._output += garbage
        self._output += frame
        self.frames_sent += 1

    def state(self) -> FirmwareState:
        now = self.clock()
        return FirmwareState(
            powered=self.powered,
            session=self._session,
            uptime_s=now - self._boot_time,
            fan_duty=self.fan_applied if self.powered else 0.0,
            fan_rpm=self.plant.fan_rpm,
            fan_hold_s=self._hold_ms(self._fan_until, now) / 1000,
            cooler_enabled=self._cooler_enabled,
            cooler_setpoint_c=self._cooler_setpoint,
            cooler_drive=self._cooler_drive if self.powered else 0.0,
            sensor_c=self.plant.sensor_c,
            cold_c=self.plant.cold_c,
            hot_c=self.plant.hot_c,
            ambient_c=self.plant.ambient_c,
            faults=self._faults,
            protecting=self._protect_sensor or self._protect_hot,
            rx_errors=self.rx_errors,
            requests=self.requests,
            request_counts=dict(self.request_counts),
            replies_dropped=self.replies_dropped,
            frames_sent=self.frames_sent,
            frames_corrupted=self.frames_corrupted,
            garbage_bytes=self.garbage_bytes,
        )


def _number(value: Value) -> float:
    if not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return value


# -- on a pseudo-terminal --------------------------------------------------------------------

READ_BYTES = 4096
MAX_WAIT_S = 0.05
"""Longest the thread sleeps: also how late a flipped fault switch or a command takes effect."""


class FirmwareSimulator:
    """A `Firmware` on the master side of a real pty pair, served by one thread.

    The host opens `port` with pyserial like a real serial port. With `link`, `port` is a
    symlink that follows the pty across `unplug()`/`replug()`, as a udev by-id link follows a
    USB adapter; without it, a replugged module appears under a new /dev/pts name (`port`
    changes). Use as a context manager, or `start()` and `close()`; `close()` joins the thread.
    """

    def __init__(
        self,
        *,
        ambient_c: float = 25.0,
        config: FirmwareConfig | None = None,
        faults: FaultSwitches | None = None,
        plant_params: PlantParams | None = None,
        link: str | os.PathLike[str] | None = None,
        time_scale: float = 1.0,
        seed: int | None = None,
        unplug_cycle: tuple[float, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.faults = faults or FaultSwitches()
        self.plant = Plant(plant_params, ambient_c)
        rng = random.Random(seed)  # noqa: S311 - noise and fault dice
        self.firmware = Firmware(
            self.plant, config, self.faults, clock=clock, rng=rng, time_scale=time_scale
        )
        self.plant.settle(0.0, self.firmware.fan_applied)
        self.link = Path(link) if link is not None else None
        self.unplug_cycle = unplug_cycle
        """(every_s, for_s): unplug every `every_s` seconds for `for_s` seconds."""
        self.tx_overflows = 0
        """Writes dropped because nobody read the port (a UART does not wait either)."""
        self._clock = clock
        self._lock = threading.RLock()
        self._commands: queue.SimpleQueue[tuple[str, threading.Event]] = queue.SimpleQueue()
        self._master: int | None = None
        self._slave: int | None = None
        self._pts: str | None = None
        self._wake: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cycle_at = 0.0

    # -- lifecycle

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        self._plug()
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)
        self._wake = (read_end, write_end)
        if self.unplug_cycle is not None:
            self._cycle_at = self._clock() + self.unplug_cycle[0]
        self._thread = threading.Thread(target=self._run, name="firmware-sim", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread, close the pty, remove the link. Idempotent."""
        self._stop.set()
        self._poke()
        if self._thread is not None:
            self._thread.join(timeout=5)
            if self._thread.is_alive():
                logger.error("firmware simulator thread did not stop within 5 s")
            self._thread = None
        with self._lock:
            self._close_pty()
        if self._wake is not None:
            for fd in self._wake:
                os.close(fd)
            self._wake = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- what the bench and the tests use

    @property
    def port(self) -> str:
        """The path a host opens: the link if there is one, else the current pty."""
        if self.link is not None:
            return str(self.link)
        if self._pts is None:
            raise RuntimeError("simulator is not plugged in")
        return self._pts

    @property
    def pts(self) -> str | None:
        """The current /dev/pts/N, None while unplugged."""
        return self._pts

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def unplug(self) -> None:
        """Pull the cable: the port vanishes and the MCU loses power (outputs dead)."""
        self._command("unplug")

    def replug(self) -> None:
        """Plug it back: a new pty, and the MCU boots (no session, outputs safe)."""
        self._command("replug")

    def reset(self) -> None:
        """A watchdog reset: the MCU reboots (no session, outputs safe), the port stays."""
        with self._lock:
            self.firmware.boot()

    def set_ambient(self, ambient_c: float) -> None:
        with self._lock:
            self.plant.ambient_c = ambient_c

    def state(self) -> FirmwareState:
        with self._lock:
            return self.firmware.state()

    # -- inside

    def _command(self, name: str) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                self._execute(name)
            return
        done = threading.Event()
        self._commands.put((name, done))
        self._poke()
        if not done.wait(timeout=5):
            raise RuntimeError(f"simulator thread did not carry out {name!r}")

    def _execute(self, name: str) -> None:
        if name == "unplug" and self._master is not None:
            self.firmware.power_off()
            self._close_pty()
            logger.info("simulated module unplugged")
        elif name == "replug" and self._master is None:
            self._plug()
            self.firmware.boot()

    def _poke(self) -> None:
        if self._wake is not None:
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake[1], b"\x01")

    def _plug(self) -> None:
        master, slave = os.openpty()
        # Raw: no echo (the firmware would read its own frames back) and no CR/LF translation.
        tty.setraw(slave)
        os.set_blocking(master, False)
        fcntl.fcntl(master, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
        # The simulator keeps the slave open too: without it, the master reads EIO in a busy
        # loop whenever no host has the port open.
        self._master, self._slave = master, slave
        self._pts = os.ttyname(slave)
        if self.link is not None:
            temporary = self.link.with_name(f".{self.link.name}.{os.getpid()}.tmp")
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(self._pts)
            temporary.replace(self.link)  # atomic: a host never sees a half-made link
        via = f" ({self.link})" if self.link else ""
        logger.info(f"simulated module on {self._pts}{via}")

    def _close_pty(self) -> None:
        if self.link is not None and self.link.is_symlink():
            self.link.unlink(missing_ok=True)
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = self._pts = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._serve_once()
        except Exception:
            logger.exception("firmware simulator thread failed")
            raise

    def _serve_once(self) -> None:
        assert self._wake is not None  # noqa: S101 - set by start() before the thread runs
        with self._lock:
            master = self._master
            wait = self.firmware.next_deadline() - self._clock()
        watched = [self._wake[0]] if master is None else [self._wake[0], master]
        readable, _, _ = select.select(watched, [], [], max(0.0, min(MAX_WAIT_S, wait)))
        if self._wake[0] in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake[0], 64)
        with self._lock:
            while not self._commands.empty():
                name, done = self._commands.get()
                self._execute(name)
                done.set()
            if master is not None and master in readable and master == self._master:
                try:
                    data = os.read(master, READ_BYTES)
                except BlockingIOError:
                    data = b""
                except OSError as exc:
                    if exc.errno != errno.EIO:
                        raise
                    data = b""  # no host has the port open
                self.firmware.receive(data)
            self.firmware.tick()
            self._transmit()
            self._cycle_plug()

    def _transmit(self) -> None:
        out = self.firmware.take_output()
        if not out or self._master is None:
            return
        try:
            written = os.write(self._master, out)
        except (BlockingIOError, OSError):
            written = 0
        if written < len(out):
            self.tx_overflows += 1

    def _cycle_plug(self) -> None:
        if self.unplug_cycle is None:
            return
        now = self._clock()
        if now < self._cycle_at:
            return
        every_s, for_s = self.unplug_cycle
        if self._master is not None:
            self._execute("unplug")
            self._cycle_at = now + for_s
        else:
            self._execute("replug")
            self._cycle_at = now + every_s
