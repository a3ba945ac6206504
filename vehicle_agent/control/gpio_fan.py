"""Act stage: `GpioZeroFan`, the lens fan on a GPIO pin driven by gpiozero's `PWMOutputDevice`.

gpiozero is imported here only, and lazily: a vehicle without it (or without a board gpiozero
recognises: its real pin factories all look for a Raspberry Pi revision) gets a
`FanUnavailableError` naming the reason, not an import error elsewhere. Jetson boards use
`SysfsPwmFan` instead. Tests inject `MockFactory(pin_class=MockPWMPin)` and read `pin.state`.

No tachometer and no host-independent fallback: when the daemon dies the pin keeps its last
duty until the process exits and gpiozero releases it; a released pin is whatever the
circuit's pull resistor makes it, so `safe_duty` should match that default (0 with a pull-down).
"""

from __future__ import annotations

import warnings
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from vehicle_agent.control.fan import Fan, FanError, FanUnavailableError

DEFAULT_FREQUENCY_HZ = 100.0


def _load_gpiozero() -> Any:
    try:
        return import_module("gpiozero")
    except ImportError as exc:
        raise FanUnavailableError("gpiozero", f"cannot import gpiozero: {exc}") from exc


def _named_factory(name: str) -> Any:
    """gpiozero's pin factory registered under `name` ('lgpio', 'rpigpio', 'pigpio', 'native',
    'mock'), built the way gpiozero builds the one GPIOZERO_PIN_FACTORY names."""
    for ep in entry_points(group="gpiozero_pin_factories"):
        if ep.name == name:
            try:
                return ep.load()()
            except Exception as exc:  # any failure of a third-party factory: unavailable
                raise FanUnavailableError(
                    "gpiozero", f"pin factory {name!r} does not work here: {exc}"
                ) from exc
    raise FanUnavailableError("gpiozero", f"no gpiozero pin factory named {name!r}")


class GpioZeroFan(Fan):
    """A fan switched by a transistor on GPIO `pin`, PWM at `frequency_hz`.

    `pin_factory`: a gpiozero pin factory object, a registered factory name, or None for
    gpiozero's default (which tries lgpio, RPi.GPIO, pigpio and its native driver in turn).
    """

    name = "gpiozero"

    def __init__(
        self,
        pin: int | str,
        *,
        frequency_hz: float = DEFAULT_FREQUENCY_HZ,
        active_high: bool = True,
        pin_factory: object | str | None = None,
        safe_duty: float = 0.0,
    ) -> None:
        super().__init__(safe_duty)
        gpiozero = _load_gpiozero()
        factory = _named_factory(pin_factory) if isinstance(pin_factory, str) else pin_factory
        self.pin = pin
        self.frequency_hz = frequency_hz
        with warnings.catch_warnings(record=True) as fallbacks:
            # gpiozero warns once per default factory it cannot load; under pytest's
            # filterwarnings=error that would hide the real reason. Collect them for the message.
            warnings.simplefilter("always")
            try:
                self._device = gpiozero.PWMOutputDevice(
                    pin,
                    active_high=active_high,
                    initial_value=self.safe_duty,
                    frequency=frequency_hz,
                    pin_factory=factory,
                )
            except gpiozero.BadPinFactory as exc:
                tried = "; ".join(str(w.message) for w in fallbacks)
                reason = f"{exc} ({tried})" if tried else str(exc)
                raise FanUnavailableError(self.name, reason) from exc
            except gpiozero.GPIOZeroError as exc:
                raise FanError(self.name, f"cannot drive GPIO {pin}: {exc}") from exc

    def _apply(self, duty: float) -> None:
        try:
            self._device.value = duty
        except Exception as exc:  # gpiozero raises its own and the pin library's errors
            raise FanError(self.name, f"GPIO {self.pin}: cannot set duty {duty}: {exc}") from exc

    def readback(self) -> float | None:
        if self._device.closed:
            return None
        return float(self._device.value)

    def close(self) -> None:
        if self._device.closed:
            return
        try:
            self.safe_state()
        finally:
            self._device.close()
