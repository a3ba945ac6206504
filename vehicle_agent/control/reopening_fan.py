"""Act stage: `ReopeningFan`, a host-driven fan driver (GPIO, sysfs PWM) that may be absent or drop out.

A fan that cannot be opened at start (no PWM chip yet, pin not muxed, udev not done) or whose
driver starts failing (channel unexported, device gone) must not take the camera, enhancement
and uplink down with it. This wrapper opens the driver when it can and otherwise raises
`FanError` from `set_duty`/`refresh`, which the control loop turns into one `actuator_fault`
event and an alarm (and `actuator_recovered` once it works again). While closed it retries
the open with jittered exponential backoff from the control loop's refresh (no task of its
own); a driver that fails a command is closed and reopened the same way. Once open it applies
the duty the control wants now, so a reopened fan picks up where control is.

The MCU's fan needs no wrapper: `McuFan` cannot fail to open, and its bridge reconnects by itself.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from vehicle_agent.backoff import Backoff
from vehicle_agent.control.fan import Fan, FanError

logger = logging.getLogger(__name__)

REOPEN_INITIAL_S = 1.0
REOPEN_MAX_S = 60.0


class ReopeningFan(Fan):
    """Opens `open_fan()` now or later; `name` is the driver's (`sysfs`, `gpiozero`)."""

    def __init__(
        self,
        name: str,
        open_fan: Callable[[], Fan],
        safe_duty: float = 0.0,
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(safe_duty)
        self.name = name
        self._open_fan = open_fan
        self._backoff = backoff or Backoff(REOPEN_INITIAL_S, REOPEN_MAX_S)
        self._clock = clock
        self._inner: Fan | None = None
        self._retry_at = -math.inf
        self.last_error: FanError | None = None
        self.opens = 0
        """Successful opens (1 after a clean start; more after drop-outs)."""
        self._try_open()

    @property
    def is_open(self) -> bool:
        return self._inner is not None

    @property
    def driver(self) -> Fan | None:
        """The open driver, or None while it is not."""
        return self._inner

    def _try_open(self) -> Fan | None:
        if self._inner is not None:
            return self._inner
        now = self._clock()
        if now < self._retry_at:
            return None
        try:
            inner = self._open_fan()
        except FanError as exc:
            self.last_error = exc
            delay = self._backoff.next_delay()
            self._retry_at = now + delay
            logger.warning(f"fan {self.name} not open ({exc}); next try in {delay:.1f} s")
            return None
        self._backoff.reset()
        self._inner = inner
        self.opens += 1
        if self.opens > 1 or self.last_error is not None:
            logger.info(f"fan {self.name} open again")
        return inner

    def _drop(self, exc: FanError) -> None:
        """The open driver failed: release it and reopen after the backoff."""
        inner, self._inner = self._inner, None
        self.last_error = exc
        self._retry_at = self._clock() + self._backoff.next_delay()
        if inner is not None:
            try:
                inner.close()
            except Exception as close_exc:  # a failing driver may fail its close too
                logger.debug(f"closing the failed fan {self.name}: {close_exc}")

    def _not_open(self) -> FanError:
        wait = max(0.0, self._retry_at - self._clock())
        return FanError(self.name, f"not open ({self.last_error}); next try in {wait:.1f} s")

    def _apply(self, duty: float) -> None:
        inner = self._try_open()
        if inner is None:
            raise self._not_open()
        try:
            inner.set_duty(duty)
        except FanError as exc:
            self._drop(exc)
            raise

    async def refresh(self, max_duration_s: float) -> None:
        inner = self._try_open()
        if inner is None:
            raise self._not_open()
        try:
            if inner.duty != self.duty:
                inner.set_duty(self.duty)  # just (re)opened: catch up with control
            await inner.refresh(max_duration_s)
        except FanError as exc:
            self._drop(exc)
            raise

    @property
    def tach_rpm(self) -> float | None:
        return None if self._inner is None else self._inner.tach_rpm

    def readback(self) -> float | None:
        return None if self._inner is None else self._inner.readback()

    def close(self) -> None:
        self._duty = self.safe_duty
        inner, self._inner = self._inner, None
        if inner is not None:
            inner.close()

    async def aclose(self) -> None:
        self._duty = self.safe_duty
        inner, self._inner = self._inner, None
        if inner is not None:
            await inner.aclose()
