"""Firmware bridge: the one table of every message between the host and the camera module's MCU.

Each message is declared once here, with the wire layout of its payload (little-endian `struct`
codes), the unit, resolution and range of every field. `protocol.py` encodes and decodes from
this table, `sim.py` implements the firmware from it, and `docs/mcu-protocol.md` is generated
from it (`python -m firmware_bridge.gen_docs`).

A field's physical value is its wire integer times `scale`: a temperature travels as a signed
16-bit count of 0.01 °C, a duty as an unsigned 16-bit count of 0.001 (1 = full on).
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Mapping

PROTOCOL_VERSION = 1
"""Bumped on any change to the frame format or to a message's layout or meaning."""
MAX_PAYLOAD = 48
"""Longest payload in bytes. A frame announcing more is corruption, whatever its CRC."""
MAX_DURATION_MS = 60_000
"""Longest `max_duration_ms` a host may ask for: a host that dies leaves an output on at most a minute."""

Value: TypeAlias = int | float | str | None
"""A field's physical value: int for unscaled integers, float for scaled ones, str for text,
None for a reading the firmware marks invalid."""

_WIRE_TYPES: dict[str, tuple[str, int, int]] = {
    # struct code: (name in the document, smallest, largest)
    "B": ("u8", 0, 0xFF),
    "H": ("u16", 0, 0xFFFF),
    "h": ("i16", -0x8000, 0x7FFF),
    "I": ("u32", 0, 0xFFFF_FFFF),
}
TEXT_BYTES = 16
"""Text fields are fixed 16-byte ASCII, padded with NUL bytes."""
INVALID_I16 = -0x8000
"""A temperature of 0x8000 on the wire means "no valid reading" (open or shorted thermistor)."""


class Kind(enum.Enum):
    """Who sends a message and why."""

    REQUEST = "request"
    """Host → MCU. The MCU answers every valid request with exactly one reply with the same seq."""
    REPLY = "reply"
    """MCU → host, echoing the seq of the request it answers."""
    REPORT = "report"
    """MCU → host, unsolicited; seq is the MCU's own report counter (gaps = lost reports)."""


class ErrorCode(enum.IntEnum):
    """Why the MCU refused a request (`nak.code`); `nak.detail` narrows it down."""

    UNKNOWN_MESSAGE = 1
    BAD_LENGTH = 2
    BAD_VALUE = 3
    VERSION_MISMATCH = 4
    NOT_IDENTIFIED = 5
    FAULT_ACTIVE = 6


class Fault(enum.IntFlag):
    """Latched fault flags (`faults`). Set when the condition occurs; cleared only by
    `clear_faults` once the condition is gone, so the host never misses a short event."""

    SENSOR_OVERTEMP = 0x0001
    HOT_OVERTEMP = 0x0002
    SENSOR_FAULT = 0x0004
    FAN_STALL = 0x0008
    FAN_TIMEOUT = 0x0010
    COOLER_TIMEOUT = 0x0020
    HOST_TIMEOUT = 0x0040


ALL_FAULTS = Fault(sum(Fault))
"""Every fault flag (not `~Fault(0)`: on Python 3.10 that is -1, which no u16 field carries)."""


class State(enum.IntFlag):
    """Live state flags (`state`), true at the time of the sample."""

    COOLER_ON = 0x01
    FAN_HELD = 0x02
    PROTECTING = 0x04
    SESSION = 0x08


MEANINGS: Mapping[type[enum.Enum], Mapping[enum.Enum, str]] = MappingProxyType(
    {
        # One table per enum: IntEnum and IntFlag members hash as their integer values.
        ErrorCode: {
            ErrorCode.UNKNOWN_MESSAGE: "The message id is not a request this firmware knows. detail: 0.",
            ErrorCode.BAD_LENGTH: "The payload length is wrong for this request. "
            "detail: the expected length.",
            ErrorCode.BAD_VALUE: "A field is out of its range. "
            "detail: the field's index in the payload (0 = first).",
            ErrorCode.VERSION_MISMATCH: "`identify` carried another protocol version. "
            "detail: the firmware's protocol version.",
            ErrorCode.NOT_IDENTIFIED: "No session: send `identify` first (after boot, or after the "
            "host timeout). detail: 0.",
            ErrorCode.FAULT_ACTIVE: "A protective state forbids it (enabling the cooler during "
            "HOT_OVERTEMP protection or SENSOR_FAULT). detail: the low byte of the fault flags "
            "concerned.",
        },
        Fault: {
            Fault.SENSOR_OVERTEMP: "Image sensor at or above `sensor_limit`: fan forced to full, "
            "cooler kept as commanded (it helps).",
            Fault.HOT_OVERTEMP: "Cooler hot side at or above `hot_limit`: cooler switched off, fan "
            "forced to full.",
            Fault.SENSOR_FAULT: "The image sensor's thermistor reads open or short (reported as "
            "0x8000): cooler switched off, since it cannot regulate blind.",
            Fault.FAN_STALL: "The fan was driven at `FAN_STALL_DUTY` or more but its tach stayed "
            "below `FAN_STALL_RPM` for `FAN_STALL_S`.",
            Fault.FAN_TIMEOUT: "`set_fan`'s `max_duration_ms` ran out without a refresh: the fan "
            "went to its safe duty.",
            Fault.COOLER_TIMEOUT: "`set_cooler`'s `max_duration_ms` ran out without a refresh: the "
            "cooler switched off.",
            Fault.HOST_TIMEOUT: "No valid frame from the host for `host_timeout_ms`: the session "
            "ended, cooler off, fan at its safe duty.",
        },
        State: {
            State.COOLER_ON: "The cooler regulation is enabled.",
            State.FAN_HELD: "The fan runs at a host duty that reverts when `fan_hold_ms` reaches 0.",
            State.PROTECTING: "An over-temperature override is active (fan full, maybe cooler off).",
            State.SESSION: "A host session is open (`identify` succeeded, the host has not timed out).",
        },
    }
)
"""What each error code and flag means, for the document and for messages to people."""


FAN_STALL_DUTY = 0.3
"""Firmware behaviour: a duty at or above this must make the fan turn."""
FAN_STALL_RPM = 300
"""Firmware behaviour: below this tach speed for `FAN_STALL_S` at `FAN_STALL_DUTY` or more → FAN_STALL."""
FAN_STALL_S = 2.0
OVERTEMP_HYSTERESIS_C = 5.0
"""Firmware behaviour: an over-temperature override ends when every reading is this far below its limit."""


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a payload. Physical value = wire integer × `scale`."""

    name: str
    code: str
    """struct code: B (u8), H (u16), h (i16), I (u32) or s (16-byte ASCII text)."""
    unit: str
    description: str
    scale: float = 1.0
    minimum: float | None = None
    """Smallest valid physical value (inclusive); None = the wire type's."""
    maximum: float | None = None
    flags: type[enum.IntFlag | enum.IntEnum] | None = None
    """The flag or code set the value belongs to, for the document."""
    invalid: int | None = None
    """A wire value meaning "no reading", decoded as None."""

    @property
    def struct_code(self) -> str:
        return f"{TEXT_BYTES}s" if self.code == "s" else self.code

    @property
    def size(self) -> int:
        return struct.calcsize("<" + self.struct_code)

    @property
    def wire_type(self) -> str:
        return f"char[{TEXT_BYTES}]" if self.code == "s" else _WIRE_TYPES[self.code][0]

    @property
    def is_integer(self) -> bool:
        """Decoded as int (no scale) rather than float."""
        return self.code != "s" and self.scale == 1.0

    def bounds(self) -> tuple[float, float]:
        """The valid physical range: declared, or else what the wire type can carry."""
        _, low, high = _WIRE_TYPES[self.code]
        low_value = low * self.scale if self.minimum is None else self.minimum
        high_value = high * self.scale if self.maximum is None else self.maximum
        return low_value, high_value

    def to_wire(self, value: Value) -> int | bytes:
        """The wire value of a physical value; ValueError names the field when it does not fit."""
        if self.code == "s":
            if not isinstance(value, str):
                raise ValueError(f"{self.name}: expected text, got {value!r}")
            raw = value.encode("ascii", "strict")
            if len(raw) > TEXT_BYTES or b"\x00" in raw:
                raise ValueError(
                    f"{self.name}: {value!r} is not ASCII text of ≤ {TEXT_BYTES} bytes"
                )
            return raw
        if value is None:
            if self.invalid is None:
                raise ValueError(f"{self.name}: has no 'invalid' value, None is not allowed")
            return self.invalid
        if isinstance(value, str) or not math.isfinite(value):
            raise ValueError(f"{self.name}: expected a finite number, got {value!r}")
        low, high = self.bounds()
        # A tolerance of half a step: 0.3 stored at 0.001 resolution must not be refused.
        slack = self.scale / 2
        if not low - slack <= value <= high + slack:
            raise ValueError(
                f"{self.name}: {value!r} {self.unit} is outside [{_fmt(low)}, {_fmt(high)}]"
            )
        if self.is_integer and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{self.name}: expected a whole number, got {value!r}")
        return round(value / self.scale)

    def from_wire(self, raw: int | bytes) -> Value:
        if isinstance(raw, bytes):
            return raw.rstrip(b"\x00").decode("ascii", "replace")
        if self.invalid is not None and raw == self.invalid:
            return None
        if self.is_integer:
            return raw
        # round() removes binary noise: 2150 × 0.01 gives 21.5, not 21.500000000000004.
        return round(raw * self.scale, 6)

    def in_range(self, value: Value) -> bool:
        """Whether a decoded value is valid for this field (what the firmware checks)."""
        if self.code == "s" or value is None:
            return self.code == "s" or self.invalid is not None
        if isinstance(value, str):
            return False
        low, high = self.bounds()
        return low - self.scale / 2 <= value <= high + self.scale / 2


def _fmt(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True, slots=True, repr=False)
class MessageSpec:
    """One message: its id, who sends it, and its payload's fields in wire order."""

    msg_id: int
    name: str
    kind: Kind
    description: str
    fields: tuple[Field, ...] = ()
    reply: str | None = None
    """For a request: the name of the reply it expects besides `nak`."""
    _struct: struct.Struct = field(init=False, repr=False, compare=False)

    def __repr__(self) -> str:
        return f"MessageSpec({self.name}, {self.msg_id:#04x})"

    def __post_init__(self) -> None:
        fmt = "<" + "".join(f.struct_code for f in self.fields)
        object.__setattr__(self, "_struct", struct.Struct(fmt))

    @property
    def size(self) -> int:
        """Payload length in bytes (every message has a fixed length)."""
        return self._struct.size

    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def pack(self, values: Mapping[str, Value]) -> bytes:
        """The payload for these physical values; ValueError names a missing, extra or bad field."""
        names = set(self.field_names())
        missing = names - values.keys()
        extra = values.keys() - names
        if missing or extra:
            raise ValueError(
                f"{self.name}: missing {sorted(missing)}, unexpected {sorted(extra)}"
                if missing and extra
                else f"{self.name}: missing field(s) {sorted(missing)}"
                if missing
                else f"{self.name}: unexpected field(s) {sorted(extra)}"
            )
        wire = [f.to_wire(values[f.name]) for f in self.fields]
        return self._struct.pack(*wire)

    def unpack(self, payload: bytes) -> Mapping[str, Value]:
        """Physical values of a payload of exactly `size` bytes (no range check)."""
        raw = self._struct.unpack(payload)
        return MappingProxyType(
            {f.name: f.from_wire(r) for f, r in zip(self.fields, raw, strict=True)}
        )

    def first_out_of_range(self, values: Mapping[str, Value]) -> int | None:
        """Index of the first field whose value is out of range, or None."""
        for index, f in enumerate(self.fields):
            if not f.in_range(values[f.name]):
                return index
        return None


# -- fields shared by several messages -------------------------------------------------------


def _temperature(name: str, description: str, low: float = -40.0, high: float = 150.0) -> Field:
    return Field(
        name,
        "h",
        "°C",
        description,
        scale=0.01,
        minimum=low,
        maximum=high,
        invalid=INVALID_I16,
    )


def _duty(name: str, description: str) -> Field:
    return Field(name, "H", "fraction", description, scale=0.001, minimum=0.0, maximum=1.0)


def _max_duration(what: str) -> Field:
    return Field(
        "max_duration_ms",
        "H",
        "ms",
        f"{what} reverts to its safe state if no new command for it arrives within this time",
        minimum=1,
        maximum=MAX_DURATION_MS,
    )


_TELEMETRY_FIELDS = (
    Field("uptime_ms", "I", "ms", "MCU time of the sample since boot (wraps after 49.7 days)"),
    _temperature("sensor_temp", "image sensor temperature"),
    _temperature("cold_side_temp", "cooler cold side (the sensor's cold plate)"),
    _temperature("hot_side_temp", "cooler hot side (heat sink)"),
    Field(
        "cooler_setpoint", "h", "°C", "sensor temperature the cooler regulates to", 0.01, -20, 60
    ),
    _duty("cooler_drive", "cooler drive applied (PWM duty of the TEC current)"),
    _duty("fan_duty", "fan duty applied (after any safe-state or protective override)"),
    Field("fan_rpm", "H", "rpm", "fan speed from the tach", maximum=30_000),
    Field(
        "fan_hold_ms", "H", "ms", "time left before the fan reverts to its safe duty (0: not held)"
    ),
    Field("cooler_hold_ms", "H", "ms", "time left before the cooler switches off (0: off)"),
    Field("state", "B", "flags", "live state", flags=State),
    Field("faults", "H", "flags", "latched faults", flags=Fault),
    Field(
        "rx_errors", "H", "count", "frames the MCU dropped (bad COBS/CRC/length), wraps at 65536"
    ),
)

# -- the table -----------------------------------------------------------------------------------

IDENTIFY = MessageSpec(
    0x01,
    "identify",
    Kind.REQUEST,
    "Open a session. The first request after boot, after a host timeout, or after NOT_IDENTIFIED. "
    "This payload and the `nak` layout never change between protocol versions, so any host and "
    "any firmware can tell each other which version they speak.",
    (Field("host_protocol", "B", "", "protocol version the host speaks", minimum=1),),
    reply="identify_reply",
)
GET_TELEMETRY = MessageSpec(
    0x02,
    "get_telemetry",
    Kind.REQUEST,
    "Ask for a telemetry sample now (the host polls when periodic reports go missing).",
    reply="telemetry",
)
SET_FAN = MessageSpec(
    0x03,
    "set_fan",
    Kind.REQUEST,
    "Drive the fan. Any duty other than the safe duty holds for `max_duration_ms` only: the host "
    "must refresh it, or the firmware reverts to the safe duty and latches FAN_TIMEOUT. Setting "
    "the safe duty ends the hold.",
    (
        _duty("duty", "fan duty to apply"),
        _max_duration("the fan"),
    ),
    reply="ack",
)
SET_COOLER = MessageSpec(
    0x04,
    "set_cooler",
    Kind.REQUEST,
    "Enable the cooler regulating the image sensor to `setpoint`, or disable it (enable = 0; "
    "setpoint and max_duration_ms are then still range-checked and ignored). Enabled, it holds "
    "for `max_duration_ms` only, then switches off and latches COOLER_TIMEOUT. Refused with "
    "FAULT_ACTIVE while HOT_OVERTEMP protection or SENSOR_FAULT is active.",
    (
        Field("enable", "B", "bool", "1: regulate, 0: off", maximum=1),
        Field("setpoint", "h", "°C", "sensor temperature to hold", 0.01, -20.0, 60.0),
        _max_duration("the cooler"),
    ),
    reply="ack",
)
HEARTBEAT = MessageSpec(
    0x05,
    "heartbeat",
    Kind.REQUEST,
    "Keep the session open when there is nothing else to send; the reply gives the MCU uptime "
    "(a smaller uptime than before means the MCU rebooted).",
    reply="heartbeat_reply",
)
CLEAR_FAULTS = MessageSpec(
    0x06,
    "clear_faults",
    Kind.REQUEST,
    "Clear the latched faults in `mask` whose condition is gone; the flags of conditions still "
    "present stay set (telemetry shows them). Always acknowledged.",
    (Field("mask", "H", "flags", "faults to clear", flags=Fault),),
    reply="ack",
)

ACK = MessageSpec(
    0x40,
    "ack",
    Kind.REPLY,
    "The request was carried out.",
    (Field("request_id", "B", "", "message id of the request acknowledged"),),
)
NAK = MessageSpec(
    0x41,
    "nak",
    Kind.REPLY,
    "The request was refused and had no effect. Layout frozen across protocol versions.",
    (
        Field("request_id", "B", "", "message id of the request refused"),
        Field("code", "B", "", "why", flags=ErrorCode),
        Field("detail", "B", "", "depends on the code (see the error codes)"),
    ),
)
IDENTIFY_REPLY = MessageSpec(
    0x42,
    "identify_reply",
    Kind.REPLY,
    "The session is open. Byte 0 (the protocol version) is frozen across versions: a host "
    "that cannot decode the rest still reads it and refuses the firmware by name.",
    (
        Field("protocol", "B", "", "protocol version the firmware speaks"),
        Field("fw_major", "B", "", "firmware version, major"),
        Field("fw_minor", "B", "", "firmware version, minor"),
        Field("fw_patch", "B", "", "firmware version, patch"),
        Field("serial_number", "s", "ASCII", "the module's serial number"),
        Field("telemetry_period_ms", "H", "ms", "period of `telemetry_report`", minimum=10),
        Field("host_timeout_ms", "H", "ms", "host silence that ends the session", minimum=100),
        _duty("fan_safe_duty", "duty the fan reverts to"),
        _temperature("sensor_limit", "image sensor over-temperature limit"),
        _temperature("hot_limit", "hot side over-temperature limit"),
    ),
)
TELEMETRY = MessageSpec(
    0x43,
    "telemetry",
    Kind.REPLY,
    "Reply to `get_telemetry`: a sample taken when the request arrived.",
    _TELEMETRY_FIELDS,
)
HEARTBEAT_REPLY = MessageSpec(
    0x44,
    "heartbeat_reply",
    Kind.REPLY,
    "Reply to `heartbeat`.",
    (
        Field("uptime_ms", "I", "ms", "MCU time since boot"),
        Field("faults", "H", "flags", "latched faults", flags=Fault),
    ),
)
TELEMETRY_REPORT = MessageSpec(
    0x80,
    "telemetry_report",
    Kind.REPORT,
    "Sent every `telemetry_period_ms` while a session is open, and at once when a fault flag "
    "is raised. Same layout as `telemetry`.",
    _TELEMETRY_FIELDS,
)

MESSAGES: tuple[MessageSpec, ...] = (
    IDENTIFY,
    GET_TELEMETRY,
    SET_FAN,
    SET_COOLER,
    HEARTBEAT,
    CLEAR_FAULTS,
    ACK,
    NAK,
    IDENTIFY_REPLY,
    TELEMETRY,
    HEARTBEAT_REPLY,
    TELEMETRY_REPORT,
)
BY_ID: Mapping[int, MessageSpec] = MappingProxyType({m.msg_id: m for m in MESSAGES})
BY_NAME: Mapping[str, MessageSpec] = MappingProxyType({m.name: m for m in MESSAGES})

ID_RANGES: Mapping[Kind, range] = MappingProxyType(
    {Kind.REQUEST: range(0x01, 0x40), Kind.REPLY: range(0x40, 0x80), Kind.REPORT: range(0x80, 0xC0)}
)
"""Ids by kind, so a receiver can tell a message's kind from its id alone."""


def _check_table() -> None:
    """The table's own invariants, checked at import so a bad edit fails every test at once."""
    if len(BY_ID) != len(MESSAGES) or len(BY_NAME) != len(MESSAGES):
        raise AssertionError("message ids and names must be unique")
    for spec in MESSAGES:
        if spec.msg_id not in ID_RANGES[spec.kind]:
            raise AssertionError(f"{spec.name}: id {spec.msg_id:#04x} outside its kind's range")
        if spec.size > MAX_PAYLOAD:
            raise AssertionError(f"{spec.name}: {spec.size} bytes > MAX_PAYLOAD")
        if spec.kind is Kind.REQUEST and (spec.reply not in BY_NAME):
            raise AssertionError(f"{spec.name}: reply {spec.reply!r} is not a message")
        if len(set(spec.field_names())) != len(spec.fields):
            raise AssertionError(f"{spec.name}: duplicate field names")
    for kind in (ErrorCode, Fault, State):
        for member in kind:
            if member not in MEANINGS[kind]:
                raise AssertionError(f"{kind.__name__}.{member.name} has no entry in MEANINGS")


_check_table()
