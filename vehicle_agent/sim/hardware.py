"""Simulated hardware for the bench and tests, swapped in at the composition root."""

from __future__ import annotations

from collections import deque

from vehicle_agent.control.fan import Fan

HISTORY = 10_000
"""Duties kept: the control loop changes the duty a few times a second over long runs."""


class SimulatedFan(Fan):
    """A fan in memory: remembers the duties applied, so tests and the report can read them back."""

    name = "simulated"

    def __init__(self, safe_duty: float = 0.0) -> None:
        super().__init__(safe_duty)
        self.history: deque[float] = deque(maxlen=HISTORY)
        self.max_duty = self.safe_duty
        """Highest duty ever applied (the bench report's figure)."""

    def _apply(self, duty: float) -> None:
        self.history.append(duty)
        self.max_duty = max(self.max_duty, duty)

    def readback(self) -> float | None:
        return self.history[-1] if self.history else self.duty
