"""Act stage: `CleaningStateMachine`, when the fan blows the lens clean (pure: explicit `now`, no I/O).

    idle ──detected──▶ cleaning ──burst over──▶ verifying ──score fell──▶ idle
      ▲                    ▲                        │
      │                    └──── retry (≤ N) ◀──────┤ score did not fall
      └──── back-off over ◀── backoff ◀── failed ◀──┘ (after N retries)

Inputs: `update(now, score, detected)` with each adhesion estimate (or with no reading, just
to let time pass) and `trigger(now, reason)` for a manual cleaning. Output: the fan duty the
cleaning wants (1.0 during a burst, None otherwise: no opinion) and the transition events.

Decisions:
- Only the detector's `detected` flag starts a cleaning (its own hysteresis decides), and the
  score judges it: an attempt succeeds as soon as the detector reports the lens clear with the
  score lower than before, or at the end of the verify window if the score fell by at least
  `min_score_drop` (a partial clean: soiling still detected starts another cleaning after the
  minimum interval). Without any score (no detector) the burst alone is the cleaning.
- A manual trigger is honoured during the minimum interval and during back-off: those protect
  against the automatic loop oscillating or hammering a lens it cannot clean, not against an
  operator who asked. It runs one attempt (no retries, no back-off: the operator sees the
  result) and is refused only while a cleaning is already running.
- When an automatic cleaning has spent all its retries (`cleaning_failed`), the machine
  latches `service_required` (`lens_service_required` event): the lens needs a person. Automatic
  cleaning still resumes after each back-off (rain may wash it off); the latch is released
  only by a cleaning that succeeds or by `clear_service()` (the `clear_lens_service` command),
  each with `lens_service_cleared`.
- `adhesion_detected` / `adhesion_cleared` report the lens as this policy sees it: raised on
  the detector's flag, but never in the middle of a cleaning, so a log always reads
  detected → started → finished → cleared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vehicle_agent.compat import StrEnum
from vehicle_agent.control.events import ControlEvent
from vehicle_agent.control.settings import CleaningConfig
from vehicle_agent.records import JsonValue

CLEANING_DUTY = 1.0
MAX_MANUAL_BURST_S = 60.0


class CleaningState(StrEnum):
    IDLE = "idle"
    CLEANING = "cleaning"
    VERIFYING = "verifying"
    BACKOFF = "backoff"


@dataclass(frozen=True, slots=True)
class CleaningOutput:
    """What the cleaning wants after an input: `duty` None means no opinion."""

    duty: float | None
    state: CleaningState
    events: tuple[ControlEvent, ...] = ()


@dataclass(slots=True)
class _Cycle:
    number: int
    reason: str
    manual: bool
    burst_s: float
    max_attempts: int
    score_before: float | None
    detected_before: bool
    started_at: float
    attempt: int = 1
    phase_until: float = 0.0


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


class CleaningStateMachine:
    """The lens-cleaning policy; see the module docstring for the transitions."""

    def __init__(self, config: CleaningConfig) -> None:
        self.config = config
        self.state = CleaningState.IDLE
        self.cycles = 0
        """Cleanings started (automatic and manual)."""
        self.bursts = 0
        """Bursts blown, retries included."""
        self.succeeded = 0
        """Cleanings verified by the score (a burst without any score is neither)."""
        self.failed = 0
        """Cleanings given up (automatic: after all retries; manual: its one attempt)."""
        self._score: float | None = None
        self._covered: float | None = None
        self._detected = False
        self._reported = False
        self._cycle: _Cycle | None = None
        self._next_auto = -math.inf
        self._backoff_until = -math.inf
        self._skip_noted = False
        self.service_required = False
        """Latched after a cleaning that spent all its retries; see the module docstring."""
        self.service_requests = 0
        """Times the latch was set."""

    @property
    def duty(self) -> float | None:
        return CLEANING_DUTY if self.state is CleaningState.CLEANING else None

    @property
    def cycle(self) -> int | None:
        """Number of the cleaning under way, None when idle or backing off."""
        return None if self._cycle is None else self._cycle.number

    @property
    def adhesion_reported(self) -> bool:
        return self._reported

    # -- inputs

    def update(
        self,
        now: float,
        adhesion_score: float | None = None,
        detected: bool | None = None,
        covered: float | None = None,
    ) -> CleaningOutput:
        """A new adhesion estimate (score 0–1, the detector's flag and the covered share of the
        frame), or with all None no reading, only time passing."""
        if adhesion_score is not None:
            if not math.isfinite(adhesion_score) or not 0.0 <= adhesion_score <= 1.0:
                raise ValueError(f"adhesion score must be within [0, 1], got {adhesion_score!r}")
            self._score = float(adhesion_score)
        if covered is not None:
            if not math.isfinite(covered) or not 0.0 <= covered <= 1.0:
                raise ValueError(f"covered fraction must be within [0, 1], got {covered!r}")
            self._covered = float(covered)
        reading = detected is not None
        if detected is not None:
            if not detected:
                self._skip_noted = False  # the next soiling episode gets its own skip notice
            self._detected = bool(detected)
        events: list[ControlEvent] = []
        self._advance(now, events, reading=reading)
        self._report_adhesion(events)
        if reading and self._detected:
            self._start_automatic(now, events)
        return self._output(events)

    def trigger(
        self, now: float, reason: str = "manual", burst_s: float | None = None
    ) -> CleaningOutput:
        """Clean now (the MQTT `clean_lens` command, a button): one attempt of `burst_s`
        (default: the configured burst)."""
        if burst_s is not None and not (
            math.isfinite(burst_s) and 0.0 < burst_s <= MAX_MANUAL_BURST_S
        ):
            raise ValueError(f"burst_s must be within (0, {MAX_MANUAL_BURST_S}], got {burst_s!r}")
        events: list[ControlEvent] = []
        self._advance(now, events, reading=False)
        if self.state in {CleaningState.CLEANING, CleaningState.VERIFYING}:
            events.append(
                ControlEvent(
                    "cleaning_skipped", {"reason": "busy", "trigger": reason, "retry_in_s": None}
                )
            )
        else:
            self._start(now, events, reason, manual=True, burst_s=burst_s or self.config.burst_s)
        return self._output(events)

    def clear_service(self, reason: str = "command") -> CleaningOutput:
        """Release the `lens_service_required` latch (the lens was serviced)."""
        events: list[ControlEvent] = []
        self._release_service(events, reason)
        return self._output(events)

    # -- transitions

    def _release_service(self, events: list[ControlEvent], reason: str) -> None:
        if not self.service_required:
            return
        self.service_required = False
        events.append(ControlEvent("lens_service_cleared", {"reason": reason}))

    def _advance(self, now: float, events: list[ControlEvent], *, reading: bool) -> None:
        cycle = self._cycle
        if self.state is CleaningState.CLEANING and cycle is not None and now >= cycle.phase_until:
            if cycle.score_before is None:
                # Nothing to judge by (no adhesion detector): the burst is the whole cleaning.
                self._finish(now, events, success=None)
                return
            self.state = CleaningState.VERIFYING
            cycle.phase_until = now + self.config.verify_s
            events.append(
                ControlEvent(
                    "cleaning_verifying",
                    {
                        "cycle": cycle.number,
                        "attempt": cycle.attempt,
                        "verify_s": self.config.verify_s,
                    },
                )
            )
        if self.state is CleaningState.VERIFYING and cycle is not None:
            drop = self._drop(cycle)
            # The detector calling the lens clear is enough once the score moved the right way
            # (or the lens was never soiled: a manual cleaning of a clean lens).
            reported_clear = not self._detected and (drop > 0.0 or not cycle.detected_before)
            if reading and reported_clear:
                self._finish(now, events, success=True)
            elif now >= cycle.phase_until:
                if drop >= self.config.min_score_drop or reported_clear:
                    self._finish(now, events, success=True)
                elif cycle.attempt < cycle.max_attempts:
                    self._retry(now, events, cycle)
                else:
                    self._finish(now, events, success=False)
        if self.state is CleaningState.BACKOFF and now >= self._backoff_until:
            self.state = CleaningState.IDLE
            self._skip_noted = False
            events.append(ControlEvent("cleaning_backoff_ended", {}))

    def _drop(self, cycle: _Cycle) -> float:
        if cycle.score_before is None or self._score is None:
            return 0.0
        return cycle.score_before - self._score

    def _report_adhesion(self, events: list[ControlEvent]) -> None:
        if self.state not in {CleaningState.IDLE, CleaningState.BACKOFF}:
            return  # mid-cleaning the verdict is pending; it is reported when the cycle ends
        if self._detected and not self._reported:
            self._reported = True
            events.append(ControlEvent("adhesion_detected", self._adhesion_fields()))
        elif not self._detected and self._reported:
            self._reported = False
            events.append(ControlEvent("adhesion_cleared", self._adhesion_fields()))

    def _adhesion_fields(self) -> dict[str, JsonValue]:
        return {"score": _round(self._score), "covered_fraction": _round(self._covered)}

    def _start_automatic(self, now: float, events: list[ControlEvent]) -> None:
        if self.state is CleaningState.IDLE:
            if not self.config.automatic:
                self._skip(events, "automatic_off", None)
            elif now < self._next_auto:
                self._skip(events, "min_interval", self._next_auto - now)
            else:
                self._start(now, events, "adhesion", manual=False, burst_s=self.config.burst_s)
        elif self.state is CleaningState.BACKOFF:
            self._skip(events, "backoff", self._backoff_until - now)

    def _skip(self, events: list[ControlEvent], reason: str, retry_in_s: float | None) -> None:
        if self._skip_noted:
            return  # once per soiling episode, not once per frame
        self._skip_noted = True
        events.append(
            ControlEvent(
                "cleaning_skipped",
                {
                    "reason": reason,
                    "trigger": "adhesion",
                    "retry_in_s": None if retry_in_s is None else round(retry_in_s, 3),
                },
            )
        )

    def _start(
        self, now: float, events: list[ControlEvent], reason: str, *, manual: bool, burst_s: float
    ) -> None:
        self.cycles += 1
        self.bursts += 1
        self._skip_noted = False
        cycle = _Cycle(
            number=self.cycles,
            reason=reason,
            manual=manual,
            burst_s=burst_s,
            max_attempts=1 if manual else 1 + self.config.max_retries,
            score_before=self._score,
            detected_before=self._detected,
            started_at=now,
            phase_until=now + burst_s,
        )
        self._cycle = cycle
        self.state = CleaningState.CLEANING
        events.append(
            ControlEvent(
                "cleaning_started",
                {
                    "cycle": cycle.number,
                    "reason": reason,
                    "manual": manual,
                    "burst_s": burst_s,
                    "score": _round(self._score),
                },
            )
        )

    def _retry(self, now: float, events: list[ControlEvent], cycle: _Cycle) -> None:
        events.append(self._finished_event(now, cycle, success=False))
        cycle.attempt += 1
        cycle.phase_until = now + cycle.burst_s
        self.bursts += 1
        self.state = CleaningState.CLEANING
        events.append(
            ControlEvent(
                "cleaning_retry",
                {"cycle": cycle.number, "attempt": cycle.attempt, "score": _round(self._score)},
            )
        )

    def _finish(self, now: float, events: list[ControlEvent], *, success: bool | None) -> None:
        cycle = self._cycle
        assert cycle is not None  # noqa: S101 - only called inside a cycle
        events.append(self._finished_event(now, cycle, success=success))
        self._cycle = None
        self._next_auto = now + self.config.min_interval_s
        if success is False:
            self.failed += 1
        elif success:
            self.succeeded += 1
            self._release_service(events, "cleaning_succeeded")
        if success is False and not cycle.manual:
            self._backoff_until = now + self.config.backoff_s
            self.state = CleaningState.BACKOFF
            events.append(
                ControlEvent(
                    "cleaning_failed",
                    {
                        "cycle": cycle.number,
                        "attempts": cycle.attempt,
                        "score_before": _round(cycle.score_before),
                        "score_after": _round(self._score),
                        "backoff_s": self.config.backoff_s,
                    },
                )
            )
            if not self.service_required:
                self.service_required = True
                self.service_requests += 1
                events.append(
                    ControlEvent(
                        "lens_service_required",
                        {
                            "cycle": cycle.number,
                            "attempts": cycle.attempt,
                            "score": _round(self._score),
                        },
                    )
                )
        else:
            self.state = CleaningState.IDLE
        # After a failure, cleaning_failed already says why nothing happens until the back-off
        # ends; after a success still soiled, the next frame explains the wait (min_interval).
        self._skip_noted = success is False and not cycle.manual

    def _finished_event(self, now: float, cycle: _Cycle, *, success: bool | None) -> ControlEvent:
        data: dict[str, JsonValue] = {
            "cycle": cycle.number,
            "success": success,
            "score_before": _round(cycle.score_before),
            "score_after": _round(self._score) if cycle.score_before is not None else None,
            "attempt": cycle.attempt,
            "duration_s": round(now - cycle.started_at, 3),
        }
        return ControlEvent("cleaning_finished", data)

    def _output(self, events: list[ControlEvent]) -> CleaningOutput:
        return CleaningOutput(self.duty, self.state, tuple(events))
