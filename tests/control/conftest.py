"""Control fixtures: a fake clock, an event recorder that checks names and fields against the
table, a fake kernel for sysfs PWM, and the firmware simulator on a real pty."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from firmware_bridge.bridge import McuBridge
from tests.mcu import FAST_BRIDGE, FAST_FIRMWARE, mcu, no_simulator_left_running, sim
from vehicle_agent.control.events import CONTROL_EVENTS, ControlEvent
from vehicle_agent.control.sysfs_fan import SysfsAttributes

if TYPE_CHECKING:
    from pathlib import Path

    from vehicle_agent.records import JsonValue

__all__ = [
    "FAST_BRIDGE",
    "FAST_FIRMWARE",
    "bridge",
    "mcu",
    "no_simulator_left_running",
    "sim",
]
"""Re-exported: the firmware simulator's fixtures and settings, shared with tests/firmware_bridge."""

KNOWN_ELSEWHERE = {"actuator_safe_state": {"actuator", "duty", "reason"}}


class FakeClock:
    """Seconds that move only when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def check_event(type_: str, data: dict[str, Any]) -> None:
    """Fail on an event name or field that the table does not define."""
    if type_ in KNOWN_ELSEWHERE:
        fields = KNOWN_ELSEWHERE[type_]
    else:
        assert type_ in CONTROL_EVENTS, f"event {type_!r} is not in CONTROL_EVENTS"
        fields = set(CONTROL_EVENTS[type_][1])
    unknown = set(data) - fields
    assert not unknown, f"event {type_!r} has fields {sorted(unknown)} not in the table"


def types(events: tuple[ControlEvent, ...] | list[ControlEvent]) -> list[str]:
    for event in events:
        check_event(event.type, dict(event.data))
    return [e.type for e in events]


@dataclass
class Recorded:
    type: str
    t: float
    frame: int | None
    data: dict[str, Any]


@dataclass
class EventRecorder:
    """An `Emit` that keeps every event and checks it against the table."""

    events: list[Recorded] = field(default_factory=list)

    def __call__(
        self, type_: str, t: float, frame: int | None = None, /, **data: JsonValue
    ) -> None:
        check_event(type_, data)
        self.events.append(Recorded(type_, t, frame, data))

    def types(self) -> list[str]:
        return [e.type for e in self.events]

    def of(self, type_: str) -> list[Recorded]:
        return [e for e in self.events if e.type == type_]


@pytest.fixture
def recorder() -> EventRecorder:
    return EventRecorder()


# -- sysfs PWM: what the kernel does behind the files -----------------------------------------


def _error(code: int, path: Path) -> OSError:
    return OSError(code, os.strerror(code), str(path))


class FakePwmKernel(SysfsAttributes):
    """The kernel side of /sys/class/pwm over a tmp_path tree: `export` creates the channel's
    files, and writes are refused where the kernel refuses them (EBUSY on a claimed or
    exported channel and on a polarity change while enabled, EINVAL on duty_cycle > period).
    With `udev_delay`, a new channel's files become writable only after the driver waited."""

    def __init__(
        self,
        root: Path,
        chips: dict[int, int] | None = None,
        *,
        claimed: set[tuple[int, int]] | None = None,
        udev_delay: bool = False,
    ) -> None:
        self.root = root
        self.claimed = claimed or set()
        self.udev_delay = udev_delay
        self.pending: set[Path] = set()
        self.writes: list[tuple[str, str]] = []
        self.sleeps = 0
        root.mkdir(parents=True, exist_ok=True)
        for chip, npwm in (chips if chips is not None else {0: 4}).items():
            chip_dir = root / f"pwmchip{chip}"
            chip_dir.mkdir()
            (chip_dir / "npwm").write_text(f"{npwm}\n")
            (chip_dir / "export").write_text("")
            (chip_dir / "unexport").write_text("")

    def export(self, chip: int, channel: int) -> Path:
        """Create a channel as the kernel does on export (also: 'exported by a previous run')."""
        channel_dir = self.root / f"pwmchip{chip}" / f"pwm{channel}"
        channel_dir.mkdir()
        for name, value in (
            ("period", "0"),
            ("duty_cycle", "0"),
            ("enable", "0"),
            ("polarity", "normal"),
        ):
            (channel_dir / name).write_text(value + "\n")
            if self.udev_delay:
                self.pending.add(channel_dir / name)
        return channel_dir

    def writable(self, path: Path) -> bool:
        return path not in self.pending and super().writable(path)

    def sleep(self, seconds: float) -> None:
        del seconds
        self.sleeps += 1
        self.pending.clear()  # udev has run

    def write(self, path: Path, value: str) -> None:
        if path in self.pending:
            raise _error(errno.EACCES, path)
        name, parent = path.name, path.parent
        if name == "export":
            chip = int(parent.name.removeprefix("pwmchip"))
            channel = int(value)
            npwm = int((parent / "npwm").read_text())
            if not 0 <= channel < npwm:
                raise _error(errno.EINVAL, path)
            if (chip, channel) in self.claimed or (parent / f"pwm{channel}").exists():
                raise _error(errno.EBUSY, path)
            self.export(chip, channel)
        elif name in {"period", "duty_cycle", "enable", "polarity"}:
            self._check_channel_write(path, value)
            super().write(path, value)
        else:
            super().write(path, value)
        self.writes.append((str(path.relative_to(self.root)), value))

    def _check_channel_write(self, path: Path, value: str) -> None:
        channel_dir = path.parent
        period = int((channel_dir / "period").read_text())
        duty = int((channel_dir / "duty_cycle").read_text())
        enabled = (channel_dir / "enable").read_text().strip() == "1"
        if path.name == "period" and (int(value) <= 0 or int(value) < duty):
            raise _error(errno.EINVAL, path)
        if path.name == "duty_cycle" and not 0 <= int(value) <= period:
            raise _error(errno.EINVAL, path)
        if path.name == "polarity":
            if value not in {"normal", "inversed"}:
                raise _error(errno.EINVAL, path)
            if enabled:
                raise _error(errno.EBUSY, path)
        if path.name == "enable" and value == "1" and period == 0:
            raise _error(errno.EINVAL, path)

    def duty(self, chip: int, channel: int) -> float:
        """What the pin outputs: duty_cycle / period while enabled, else 0."""
        channel_dir = self.root / f"pwmchip{chip}" / f"pwm{channel}"
        if (channel_dir / "enable").read_text().strip() != "1":
            return 0.0
        return int((channel_dir / "duty_cycle").read_text()) / int(
            (channel_dir / "period").read_text()
        )


@pytest.fixture
def kernel(tmp_path: Path) -> FakePwmKernel:
    return FakePwmKernel(tmp_path / "sys" / "class" / "pwm")


# -- the firmware simulator --------------------------------------------------------------------


@pytest.fixture
def bridge(mcu: McuBridge) -> McuBridge:
    """The control tests' name for a bridge connected to the simulated module."""
    return mcu
