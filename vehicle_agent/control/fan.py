"""Act stage: the `Fan` interface that every fan driver (GPIO, sysfs PWM, microcontroller) implements."""

from __future__ import annotations

import abc
import math


class FanError(Exception):
    """A fan driver could not apply a duty; `driver` says which."""

    def __init__(self, driver: str, reason: str) -> None:
        self.driver = driver
        self.reason = reason
        super().__init__(f"fan {driver}: {reason}")


def check_duty(duty: float) -> float:
    """Refuse a duty cycle that is not a finite number in [0, 1]."""
    if not isinstance(duty, int | float) or isinstance(duty, bool):
        raise TypeError(f"fan duty must be a number, got {type(duty).__name__}")
    if not math.isfinite(duty) or not 0.0 <= duty <= 1.0:
        raise ValueError(f"fan duty must be finite and within [0, 1], got {duty!r}")
    return float(duty)


class Fan(abc.ABC):
    """The fan that blows air warmed by the refrigeration chip's hot side across the lens."""

    name: str = "fan"

    def __init__(self, safe_duty: float = 0.0) -> None:
        self.safe_duty = check_duty(safe_duty)
        self._duty = self.safe_duty

    @property
    def duty(self) -> float:
        """Duty last applied, 0–1."""
        return self._duty

    @property
    def tach_rpm(self) -> float | None:
        """Measured speed when the driver has a tachometer."""
        return None

    def set_duty(self, duty: float) -> None:
        duty = check_duty(duty)
        self._apply(duty)
        self._duty = duty

    def safe_state(self) -> None:
        """Go to the safe duty (used at start, on shutdown and on faults)."""
        self.set_duty(self.safe_duty)

    @abc.abstractmethod
    def _apply(self, duty: float) -> None:
        """Drive the hardware; raise `FanError` when it cannot."""

    def close(self) -> None:
        """Leave the fan in its safe state and release the hardware."""
        self.safe_state()
