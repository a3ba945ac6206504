"""Simulated hardware for the bench and tests, swapped in at the composition root."""

from __future__ import annotations

from vehicle_agent.control.fan import Fan


class SimulatedFan(Fan):
    """A fan in memory: remembers every duty applied, so tests and the report can read it back."""

    name = "simulated"

    def __init__(self, safe_duty: float = 0.0) -> None:
        super().__init__(safe_duty)
        self.history: list[float] = []

    def _apply(self, duty: float) -> None:
        self.history.append(duty)
