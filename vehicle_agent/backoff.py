"""Exponential backoff, shared by everything that retries (cameras, the fleet link, enhancer checks)."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, initial_s: float, max_s: float, multiplier: float = 2.0) -> float:
    """The un-jittered wait before retry `attempt` (0 first): `initial_s` × `multiplier`^attempt,
    capped at `max_s` (never below `initial_s`)."""
    if initial_s <= 0:
        return 0.0
    cap = max(initial_s, max_s)
    delay = initial_s
    for _ in range(attempt):  # a loop, not a power: attempt 5000 must not overflow a float
        delay *= multiplier
        if delay >= cap:
            return cap
    return delay


class Backoff:
    """Waits that grow by `multiplier` from `initial_s` up to `max_s`, each jittered by ±`jitter`.

    Jitter keeps a fleet of vehicles that lost the same backend from retrying in lockstep.
    """

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        multiplier: float = 2.0,
        jitter: float = 0.3,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError(f"backoff needs 0 < initial_s <= max_s, got {initial_s}, {max_s}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.multiplier = multiplier
        self.jitter = jitter
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.attempt = 0

    def next_delay(self) -> float:
        base = backoff_delay(self.attempt, self.initial_s, self.max_s, self.multiplier)
        self.attempt += 1
        spread = base * self.jitter
        return max(0.0, min(self.max_s, base + self._rng.uniform(-spread, spread)))

    def reset(self) -> None:
        self.attempt = 0
