"""Firmware bridge, the data: what the host knows of the MCU (`Identity`, `Telemetry`, the
`Snapshot` of the latest sample with its age) and the link's `BridgeCounters`, in physical units.

Pure dataclasses built from decoded `protocol.Message`s, so the CLI, the daemon and tests read
them without a port.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from firmware_bridge.messages import TELEMETRY, Fault, State, Value

if TYPE_CHECKING:
    from firmware_bridge.protocol import Message


def number(value: Value) -> float:
    """A decoded numeric field (TypeError if the table gave it another type)."""
    if not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return value


def temperature(value: Value) -> float | None:
    return None if value is None else float(number(value))


@dataclass(frozen=True, slots=True)
class Identity:
    """Who answered `identify`."""

    protocol: int
    firmware_version: str
    serial_number: str
    telemetry_period_s: float
    host_timeout_s: float
    fan_safe_duty: float
    sensor_limit_c: float | None
    hot_limit_c: float | None

    @classmethod
    def from_message(cls, message: Message) -> Identity:
        v = message.values
        return cls(
            protocol=int(number(v["protocol"])),
            firmware_version=f"{v['fw_major']}.{v['fw_minor']}.{v['fw_patch']}",
            serial_number=str(v["serial_number"]),
            telemetry_period_s=number(v["telemetry_period_ms"]) / 1000,
            host_timeout_s=number(v["host_timeout_ms"]) / 1000,
            fan_safe_duty=float(number(v["fan_safe_duty"])),
            sensor_limit_c=temperature(v["sensor_limit"]),
            hot_limit_c=temperature(v["hot_limit"]),
        )


@dataclass(frozen=True, slots=True)
class Telemetry:
    """One sample from the MCU, in physical units (temperatures None when the MCU has no reading)."""

    uptime_s: float
    sensor_c: float | None
    cold_side_c: float | None
    hot_side_c: float | None
    cooler_setpoint_c: float
    cooler_drive: float
    """0–1."""
    fan_duty: float
    """Applied duty, 0–1."""
    fan_rpm: int
    fan_hold_s: float
    """Time before the fan reverts to its safe duty (0: not held)."""
    cooler_hold_s: float
    state: State
    faults: Fault
    mcu_rx_errors: int
    """Frames from the host the MCU dropped (wraps at 65536)."""
    source: str
    """"report" (periodic) or "reply" (to `get_telemetry`)."""
    seq: int

    @classmethod
    def from_message(cls, message: Message) -> Telemetry:
        v = message.values
        return cls(
            uptime_s=number(v["uptime_ms"]) / 1000,
            sensor_c=temperature(v["sensor_temp"]),
            cold_side_c=temperature(v["cold_side_temp"]),
            hot_side_c=temperature(v["hot_side_temp"]),
            cooler_setpoint_c=float(number(v["cooler_setpoint"])),
            cooler_drive=float(number(v["cooler_drive"])),
            fan_duty=float(number(v["fan_duty"])),
            fan_rpm=int(number(v["fan_rpm"])),
            fan_hold_s=number(v["fan_hold_ms"]) / 1000,
            cooler_hold_s=number(v["cooler_hold_ms"]) / 1000,
            state=State(int(number(v["state"]))),
            faults=Fault(int(number(v["faults"]))),
            mcu_rx_errors=int(number(v["rx_errors"])),
            source="reply" if message.spec is TELEMETRY else "report",
            seq=message.seq,
        )

    @property
    def cooler_on(self) -> bool:
        return State.COOLER_ON in self.state

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: flags as lists of names."""
        out = asdict(self)
        out["state"] = [flag.name for flag in State if flag in self.state]
        out["faults"] = [flag.name for flag in Fault if flag in self.faults]
        return out


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The latest telemetry with its age: `stale` once it is older than `stale_after_polls`."""

    telemetry: Telemetry
    received_at: float
    """Bridge clock (monotonic seconds) when it arrived."""
    poll: int
    """The poll period it arrived in."""
    age_polls: int
    age_s: float
    stale: bool


@dataclass(slots=True)
class BridgeCounters:
    """What went wrong on the link since the bridge started; all only ever rise."""

    frames_in: int = 0
    frames_out: int = 0
    crc_errors: int = 0
    framing_errors: int = 0
    """Bad COBS, truncated or over-long frames: garbage and cut frames."""
    bad_messages: int = 0
    """Intact frames with an unknown id, a wrong kind or a wrong length."""
    bytes_discarded: int = 0
    timeouts: int = 0
    """Attempts that got no reply in time."""
    retries: int = 0
    reconnects: int = 0
    """Links re-established after a loss (the first connection is not counted)."""
    naks: int = 0
    late_replies: int = 0
    """Replies to no pending request (late after a retry, or mismatched)."""
    reports_missed: int = 0
    """Gaps in the sequence of periodic reports."""
    mcu_resets: int = 0
    """Times the MCU uptime went backwards (it rebooted)."""

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
