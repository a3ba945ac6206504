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


class FanUnavailableError(FanError):
    """The driver's backend cannot be used here (library missing, no such board or chip).

    Raised when the driver is built, so a vehicle with a misconfigured fan fails at start with
    "backend unavailable: <reason>" instead of at the first cleaning.
    """

    def __init__(self, driver: str, reason: str) -> None:
        super().__init__(driver, f"backend unavailable: {reason}")
        self.reason = reason


def check_duty(duty: float) -> float:
    """Refuse a duty cycle that is not a finite number in [0, 1]."""
    if not isinstance(duty, int | float) or isinstance(duty, bool):
        raise TypeError(f"fan duty must be a number, got {type(duty).__name__}")
    if not math.isfinite(duty) or not 0.0 <= duty <= 1.0:
        raise ValueError(f"fan duty must be finite and within [0, 1], got {duty!r}")
    return float(duty)


class Fan(abc.ABC):
    """The fan that blows air warmed by the refrigeration chip's hot side across the lens.

    `set_duty` is synchronous and cheap so the control logic can call it from anywhere on the
    event loop. Hardware reached over a link (the microcontroller) applies the duty in
    `refresh()`, which the control loop awaits every refresh interval.
    """

    name: str = "fan"
    real: bool = True
    """False for `NoFan`: nothing physical is driven (the loop raises the `no_real_fan` alarm)."""
    has_fallback: bool = False
    """True when the hardware reverts to a safe duty by itself once `refresh()` stops (the
    microcontroller's `max_duration`). Without it, a dead daemon leaves the last duty applied
    (GPIO, sysfs PWM) until the circuit's own default takes over at release."""

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

    def readback(self) -> float | None:
        """The duty the hardware reports applying, when it can say (None: it cannot)."""
        return None

    def set_duty(self, duty: float) -> None:
        duty = check_duty(duty)
        self._apply(duty)
        self._duty = duty

    def safe_state(self) -> None:
        """Go to the safe duty (used at start, on shutdown and on faults)."""
        self.set_duty(self.safe_duty)

    async def refresh(self, max_duration_s: float) -> None:
        """Re-assert the current duty for at most `max_duration_s` on hardware that reverts by
        itself; raise `FanError` when it cannot. Called only by the control loop, so a wedged
        loop lets such hardware fall back. Drivers that apply in `set_duty` have nothing to do."""
        del max_duration_s

    @abc.abstractmethod
    def _apply(self, duty: float) -> None:
        """Drive the hardware; raise `FanError` when it cannot."""

    def close(self) -> None:
        """Leave the fan in its safe state and release the hardware."""
        self.safe_state()

    async def aclose(self) -> None:
        """Like `close`, but also brings hardware reached over a link to its safe duty now."""
        self.close()


class NoFan(Fan):
    """No fan wired (`driver = "none"`): duties are recorded and drive nothing.

    Control keeps running (cleaning wishes, thermal alarms are still reported), and the loop
    raises the `no_real_fan` alarm so the vehicle's telemetry and status say so.
    """

    name = "none"
    real = False

    def _apply(self, duty: float) -> None:
        del duty
