"""Act stage: `SysfsPwmFan`, the lens fan on a hardware PWM channel through Linux sysfs (/sys/class/pwm).

This is the driver for Jetson boards, which have hardware PWM only (on few pins, after pinmux
setup) and which gpiozero's pin factories do not recognise. The kernel interface:
`pwmchipN/export` ← channel number creates `pwmchipN/pwmM/` with `period`, `duty_cycle` (both
in ns), `polarity` and `enable`; `duty_cycle` may never exceed `period`, the polarity can only
change while disabled, and exporting a channel that is already exported (or claimed by a kernel
driver such as pwm-fan) fails with EBUSY. udev may fix the new files' permissions a moment after
the export, so the driver waits for them.

No host-independent fallback: the PWM keeps running at its last duty when the daemon dies (a
systemd ExecStopPost writing the safe duty would cover that). `close()` leaves the channel
exported and enabled at the safe duty, so a restarted daemon adopts it.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path

from vehicle_agent.control.fan import Fan, FanError, FanUnavailableError

logger = logging.getLogger(__name__)

SYSFS_PWM = Path("/sys/class/pwm")
POLARITIES = ("normal", "inversed")


class SysfsPwmError(FanError):
    """A sysfs PWM attribute could not be used; `path` names it, `errno` is the OS error if any."""

    def __init__(self, path: Path, reason: str, error: int | None = None) -> None:
        self.path = path
        self.errno = error
        super().__init__("sysfs", f"{path}: {reason}")


def find_chip(root: Path, controller: str) -> int:
    """The N of the `pwmchipN` that PWM controller `controller` (e.g. '32c0000.pwm') registered.

    Chip numbers follow probe order, so a header pin is mapped to its controller and the chip
    is looked up each start: `pwmchipN` links into `/sys/devices/…/<controller>/pwm/` and its
    `device` link names the controller.
    """
    chips = sorted(root.glob("pwmchip*")) if root.is_dir() else []
    for chip in chips:
        device = chip / "device"
        names = {device.resolve().name} if device.exists() else set()
        if controller in names or controller in chip.resolve().parts:
            with_number = chip.name.removeprefix("pwmchip")
            if with_number.isdigit():
                return int(with_number)
    found = ", ".join(c.name for c in chips) or "none"
    raise FanUnavailableError(
        "sysfs",
        f"no PWM chip of controller {controller} under {root} (chips: {found}); is the pin "
        "muxed to PWM (sudo /opt/nvidia/jetson-io/jetson-io.py) and the board right?",
    )


class SysfsAttributes:
    """Reads and writes sysfs attributes; tests replace it with a fake kernel over tmp_path.

    Each write is one `write()` call, as sysfs attributes require.
    """

    def read(self, path: Path) -> str:
        return path.read_text(encoding="ascii").strip()

    def write(self, path: Path, value: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, value.encode("ascii"))
        finally:
            os.close(fd)

    def writable(self, path: Path) -> bool:
        return os.access(path, os.W_OK)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class SysfsPwmFan(Fan):
    """A fan on channel `channel` of `pwmchip{chip}`, PWM at `frequency_hz`.

    `polarity` 'inversed' suits a driver stage that switches the fan on when the pin is low.
    `tach_path` may name a hwmon `fanN_input` (rpm) for the tach reading.
    """

    name = "sysfs"

    def __init__(
        self,
        chip: int,
        channel: int,
        *,
        frequency_hz: float = 25_000.0,
        polarity: str = "normal",
        safe_duty: float = 0.0,
        root: Path = SYSFS_PWM,
        tach_path: Path | None = None,
        export_timeout_s: float = 2.0,
        attributes: SysfsAttributes | None = None,
    ) -> None:
        super().__init__(safe_duty)
        if polarity not in POLARITIES:
            raise ValueError(f"polarity must be one of {POLARITIES}, got {polarity!r}")
        if not 0 < frequency_hz <= 1e9:
            raise ValueError(f"frequency_hz must be in (0, 1e9], got {frequency_hz!r}")
        self.attrs = attributes or SysfsAttributes()
        self.chip_dir = root / f"pwmchip{chip}"
        self.channel = channel
        self.channel_dir = self.chip_dir / f"pwm{channel}"
        self.period_ns = max(1, round(1e9 / frequency_hz))
        self.tach_path = tach_path
        self.adopted = False
        """True when the channel was already exported (by a previous run of the daemon)."""
        self._check_chip(root)
        self._export(export_timeout_s)
        self._configure(polarity)

    # -- setting up

    def _check_chip(self, root: Path) -> None:
        if not self.chip_dir.is_dir():
            found = sorted(p.name for p in root.glob("pwmchip*")) if root.is_dir() else []
            available = ", ".join(found) or "none"
            raise FanUnavailableError(
                self.name,
                f"{self.chip_dir}: no such PWM chip (available: {available}); "
                "is the pin muxed to PWM (device-tree overlay / jetson-io)?",
            )
        npwm_path = self.chip_dir / "npwm"
        try:
            npwm = int(self._read(npwm_path))
        except ValueError:
            raise SysfsPwmError(npwm_path, "not a channel count") from None
        if not 0 <= self.channel < npwm:
            raise FanUnavailableError(
                self.name,
                f"{self.chip_dir} has {npwm} channel(s); channel {self.channel} is absent",
            )

    def _export(self, timeout_s: float) -> None:
        if self.channel_dir.is_dir():
            self.adopted = True
            logger.info(f"{self.channel_dir} is already exported: adopting it")
        else:
            export = self.chip_dir / "export"
            try:
                self.attrs.write(export, str(self.channel))
            except OSError as exc:
                if exc.errno == errno.EBUSY and self.channel_dir.is_dir():
                    self.adopted = True  # exported by someone else in the meantime
                elif exc.errno == errno.EBUSY:
                    raise SysfsPwmError(
                        export,
                        f"channel {self.channel} is busy: claimed by a kernel driver "
                        "(e.g. pwm-fan in the device tree)",
                        exc.errno,
                    ) from exc
                else:
                    raise SysfsPwmError(
                        export, f"cannot export channel {self.channel}: {exc.strerror}", exc.errno
                    ) from exc
        # udev creates the files' permissions shortly after the export: wait for them.
        period = self.channel_dir / "period"
        deadline = time.monotonic() + timeout_s
        while not (period.exists() and self.attrs.writable(period)):
            if time.monotonic() >= deadline:
                state = "not writable" if period.exists() else "missing"
                raise SysfsPwmError(period, f"{state} {timeout_s:g} s after export", errno.EACCES)
            self.attrs.sleep(0.02)

    def _configure(self, polarity: str) -> None:
        enable = self.channel_dir / "enable"
        current_polarity = self._read(self.channel_dir / "polarity")
        if current_polarity != polarity:
            # The kernel refuses a polarity change on an enabled channel (EBUSY).
            self._write(enable, "0")
            self._write(self.channel_dir / "polarity", polarity)
        # duty_cycle may never exceed period: shrink the duty before shortening the period.
        current_duty = self._read_int(self.channel_dir / "duty_cycle")
        if current_duty > self.period_ns:
            self._write(self.channel_dir / "duty_cycle", "0")
        self._write(self.channel_dir / "period", str(self.period_ns))
        self._apply(self.safe_duty)
        self._write(enable, "1")

    # -- running

    def _apply(self, duty: float) -> None:
        self._write(self.channel_dir / "duty_cycle", str(round(duty * self.period_ns)))

    def readback(self) -> float | None:
        try:
            if self._read(self.channel_dir / "enable") != "1":
                return 0.0
            period = self._read_int(self.channel_dir / "period")
            return self._read_int(self.channel_dir / "duty_cycle") / period if period else None
        except SysfsPwmError:
            return None

    @property
    def tach_rpm(self) -> float | None:
        if self.tach_path is None:
            return None
        try:
            return float(self.attrs.read(self.tach_path))
        except (OSError, ValueError):
            return None

    # -- attributes, with errors that name the path

    def _read(self, path: Path) -> str:
        try:
            return self.attrs.read(path)
        except OSError as exc:
            raise SysfsPwmError(path, f"cannot read: {exc.strerror}", exc.errno) from exc

    def _read_int(self, path: Path) -> int:
        text = self._read(path)
        try:
            return int(text)
        except ValueError:
            raise SysfsPwmError(path, f"expected an integer, read {text!r}") from None

    def _write(self, path: Path, value: str) -> None:
        try:
            self.attrs.write(path, value)
        except OSError as exc:
            raise SysfsPwmError(path, f"cannot write {value!r}: {exc.strerror}", exc.errno) from exc
