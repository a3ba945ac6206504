"""Act stage: `McuFan`, the lens fan driven by the camera module's microcontroller through `firmware_bridge`.

`Fan.set_duty` is synchronous while the bridge is asyncio, and that split is the point: set_duty
only records the wanted duty, and `refresh()` (awaited by the control loop every refresh
interval) sends it with `max_duration`. The firmware holds a duty other than its safe one only
that long, so the fan keeps its duty exactly as long as the control loop keeps running; a
crashed daemon or a wedged event loop stops the refreshes and the firmware falls back to its
safe duty by itself. Nothing else ever sends `set_fan` behind the loop's back.
"""

from __future__ import annotations

import logging

from firmware_bridge import McuBridge, McuError
from vehicle_agent.control.fan import Fan, FanError

logger = logging.getLogger(__name__)

SAFE_TOLERANCE = 0.0005
"""The wire carries duty in thousandths: closer than this is the same duty."""


class McuFan(Fan):
    """The fan the MCU drives. `safe_duty` should be the firmware's own (`fan_safe_duty` from
    identify): setting exactly that ends the firmware's hold, any other duty is held for
    `max_duration` only (a mismatch is logged once the module has identified itself)."""

    name = "mcu"
    has_fallback = True

    def __init__(self, bridge: McuBridge, safe_duty: float = 0.0) -> None:
        super().__init__(safe_duty)
        self.bridge = bridge
        self.sent: float | None = None
        """Duty of the last `set_fan` the MCU acknowledged."""
        self._warned_safe = False

    def _apply(self, duty: float) -> None:
        del duty  # sent by refresh(); see the module docstring

    async def refresh(self, max_duration_s: float) -> None:
        duty = self.duty
        self._check_safe_duty()
        try:
            await self.bridge.set_fan(duty, max_duration_s)
        except McuError as exc:
            raise FanError(self.name, f"set_fan {duty:.3f} not acknowledged: {exc}") from exc
        self.sent = duty

    @property
    def tach_rpm(self) -> float | None:
        snapshot = self.bridge.latest()
        if snapshot is None or snapshot.stale:
            return None
        return float(snapshot.telemetry.fan_rpm)

    def readback(self) -> float | None:
        """The duty the MCU reports applying (1.0 while its own over-temperature protection
        runs, the safe duty after a fallback), from fresh telemetry only."""
        snapshot = self.bridge.latest()
        if snapshot is None or snapshot.stale:
            return None
        return snapshot.telemetry.fan_duty

    async def aclose(self) -> None:
        """Safe duty, sent now (a short hold if it differs from the firmware's safe duty)."""
        self.close()
        await self.refresh(1.0)

    def _check_safe_duty(self) -> None:
        identity = self.bridge.identity
        if self._warned_safe or identity is None:
            return
        if abs(identity.fan_safe_duty - self.safe_duty) > SAFE_TOLERANCE:
            logger.warning(
                f"fan safe duty {self.safe_duty:g} differs from the firmware's "
                f"{identity.fan_safe_duty:g}: the safe duty will be held only for max_duration"
            )
        self._warned_safe = True
