"""Firmware simulator, the logic: `Firmware`, the MCU as `docs/mcu-protocol.md` requires it
(sessions, `max_duration` fallbacks, over-temperature protection, periodic reports).

Bytes in, bytes out, on an injected clock, through `protocol.py` like the host; pure, so
tests step it without a pty or a thread. `FaultSwitches` are read live.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
from firmware_bridge.sim.plant import Plant

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


logger = logging.getLogger(__name__)


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
