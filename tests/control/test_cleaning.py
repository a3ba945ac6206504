"""The cleaning state machine, every transition, on explicit times: idle → cleaning → verifying →
idle, retries, failure and back-off, the minimum interval, manual triggers, and the order of
the adhesion events around a cleaning."""

from __future__ import annotations

import pytest

from tests.control.conftest import types
from vehicle_agent.control.cleaning import CleaningOutput, CleaningState, CleaningStateMachine
from vehicle_agent.control.settings import CleaningConfig

CONFIG = CleaningConfig(
    burst_s=3.0,
    verify_s=2.0,
    min_score_drop=0.2,
    max_retries=2,
    backoff_s=100.0,
    min_interval_s=30.0,
)


def machine(**changes: object) -> CleaningStateMachine:
    return CleaningStateMachine(CONFIG.model_copy(update=changes))


def data(out: CleaningOutput, type_: str) -> dict[str, object]:
    matches = [dict[str, object](e.data) for e in out.events if e.type == type_]
    assert len(matches) == 1, f"expected one {type_} in {types(out.events)}"
    return matches[0]


def clean_once(m: CleaningStateMachine, t: float = 0.0) -> float:
    """Soiling at `t`, a burst, the lens clear in verification: returns the time it ended."""
    m.update(t, 0.7, detected=True)
    m.update(t + 3.0)
    m.update(t + 3.5, 0.1, detected=False)
    assert m.state is CleaningState.IDLE
    return t + 3.5


def test_soiling_starts_a_burst_at_full_duty() -> None:
    m = machine()
    out = m.update(10.0, 0.7, detected=True)
    assert types(out.events) == ["adhesion_detected", "cleaning_started"]
    assert data(out, "cleaning_started") == {
        "cycle": 1,
        "reason": "adhesion",
        "manual": False,
        "burst_s": 3.0,
        "score": 0.7,
    }
    assert out.state is CleaningState.CLEANING
    assert out.duty == 1.0
    assert m.duty == 1.0


def test_no_reading_and_a_clean_lens_want_nothing() -> None:
    m = machine()
    assert m.update(0.0) == CleaningOutput(None, CleaningState.IDLE, ())
    assert m.update(1.0, 0.05, detected=False) == CleaningOutput(None, CleaningState.IDLE, ())


def test_the_burst_lasts_its_time_then_verification_starts() -> None:
    m = machine()
    m.update(0.0, 0.7, detected=True)
    out = m.update(2.9, 0.2, detected=False)  # the lens clears during the burst: keep blowing
    assert out.events == ()
    assert out.duty == 1.0
    out = m.update(3.0)  # time alone ends the burst (frames may have stopped)
    assert types(out.events) == ["cleaning_verifying"]
    assert data(out, "cleaning_verifying") == {"cycle": 1, "attempt": 1, "verify_s": 2.0}
    assert out.state is CleaningState.VERIFYING
    assert out.duty is None


def test_verified_clean_lens_finishes_then_reports_it_clear() -> None:
    """The done criterion's order: detected, started, finished, cleared."""
    m = machine()
    first = m.update(0.0, 0.7, detected=True, covered=0.03)
    assert data(first, "adhesion_detected") == {"score": 0.7, "covered_fraction": 0.03}
    seen = types(first.events)
    seen += types(m.update(3.0, 0.6, detected=True, covered=0.02).events)
    out = m.update(3.4, 0.1, detected=False, covered=0.001)
    seen += types(out.events)
    assert seen == [
        "adhesion_detected",
        "cleaning_started",
        "cleaning_verifying",
        "cleaning_finished",
        "adhesion_cleared",
    ]
    assert data(out, "cleaning_finished") == {
        "cycle": 1,
        "success": True,
        "score_before": 0.7,
        "score_after": 0.1,
        "attempt": 1,
        "duration_s": 3.4,
    }
    assert data(out, "adhesion_cleared") == {"score": 0.1, "covered_fraction": 0.001}
    assert out.state is CleaningState.IDLE
    assert (m.cycles, m.bursts, m.succeeded, m.failed) == (1, 1, 1, 0)


def test_enough_drop_at_the_end_of_verification_succeeds_even_if_still_detected() -> None:
    m = machine()
    m.update(0.0, 0.8, detected=True)
    m.update(3.0)
    assert m.update(4.0, 0.55, detected=True).events == ()
    out = m.update(5.0, 0.55, detected=True)
    assert types(out.events) == ["cleaning_finished", "cleaning_skipped"]
    assert data(out, "cleaning_finished")["success"] is True
    assert data(out, "cleaning_skipped") == {
        "reason": "min_interval",
        "trigger": "adhesion",
        "retry_in_s": 30.0,
    }
    assert m.adhesion_reported  # still soiled: no adhesion_cleared


def test_no_drop_retries_with_another_burst() -> None:
    m = machine()
    m.update(0.0, 0.7, detected=True)
    m.update(3.0)
    out = m.update(5.0, 0.69, detected=True)
    assert types(out.events) == ["cleaning_finished", "cleaning_retry"]
    assert data(out, "cleaning_finished")["success"] is False
    assert data(out, "cleaning_finished")["attempt"] == 1
    assert data(out, "cleaning_retry") == {"cycle": 1, "attempt": 2, "score": 0.69}
    assert out.state is CleaningState.CLEANING
    assert out.duty == 1.0
    assert m.bursts == 2


def test_second_attempt_can_succeed() -> None:
    m = machine()
    m.update(0.0, 0.7, detected=True)
    m.update(3.0)
    m.update(5.0, 0.7, detected=True)  # retry
    m.update(8.0)  # verifying again
    out = m.update(8.5, 0.2, detected=False)
    assert types(out.events) == ["cleaning_finished", "adhesion_cleared"]
    assert data(out, "cleaning_finished")["attempt"] == 2
    assert data(out, "cleaning_finished")["success"] is True


def fail_all(m: CleaningStateMachine) -> CleaningOutput:
    m.update(0.0, 0.7, detected=True)
    t = 0.0
    out = m.update(t)
    for _ in range(1 + CONFIG.max_retries):
        t += 3.0
        m.update(t)  # burst over
        t += 2.0
        out = m.update(t, 0.7, detected=True)  # verify window over, no drop
    return out


def test_after_the_retries_the_cleaning_fails_and_backs_off() -> None:
    m = machine()
    out = fail_all(m)
    # Issue 22: spent retries now also latch lens_service_required (tested below).
    assert types(out.events) == ["cleaning_finished", "cleaning_failed", "lens_service_required"]
    assert data(out, "cleaning_failed") == {
        "cycle": 1,
        "attempts": 3,
        "score_before": 0.7,
        "score_after": 0.7,
        "backoff_s": 100.0,
    }
    assert out.state is CleaningState.BACKOFF
    assert out.duty is None
    assert (m.cycles, m.bursts, m.succeeded, m.failed) == (1, 3, 0, 1)


def test_backoff_holds_automatic_cleaning_then_ends() -> None:
    m = machine()
    fail_all(m)  # ends at t = 15
    assert m.update(20.0, 0.7, detected=True).events == ()  # cleaning_failed said why already
    out = m.update(21.0, 0.1, detected=False)  # the soiling went away by itself
    assert types(out.events) == ["adhesion_cleared"]
    out = m.update(40.0, 0.7, detected=True)  # a new episode during the back-off
    assert types(out.events) == ["adhesion_detected", "cleaning_skipped"]
    assert data(out, "cleaning_skipped")["reason"] == "backoff"
    assert data(out, "cleaning_skipped")["retry_in_s"] == 75.0
    assert m.update(41.0, 0.7, detected=True).events == ()  # once per episode
    out = m.update(115.0)
    assert types(out.events) == ["cleaning_backoff_ended"]
    assert out.state is CleaningState.IDLE
    out = m.update(116.0, 0.7, detected=True)
    assert types(out.events) == ["cleaning_started"]


def test_soiling_clearing_by_itself_is_reported() -> None:
    m = machine(automatic=False)
    m.update(0.0, 0.6, detected=True)
    out = m.update(5.0, 0.05, detected=False)
    assert types(out.events) == ["adhesion_cleared"]


def test_minimum_interval_delays_the_next_automatic_cleaning_once_per_episode() -> None:
    m = machine()
    end = clean_once(m)
    out = m.update(end + 10.0, 0.7, detected=True)
    assert types(out.events) == ["adhesion_detected", "cleaning_skipped"]
    assert data(out, "cleaning_skipped")["retry_in_s"] == 20.0
    assert m.update(end + 11.0, 0.7, detected=True).events == ()
    m.update(end + 12.0, 0.1, detected=False)
    out = m.update(end + 13.0, 0.7, detected=True)  # a new episode: told again
    assert types(out.events) == ["adhesion_detected", "cleaning_skipped"]
    out = m.update(end + 30.0, 0.7, detected=True)
    assert types(out.events) == ["cleaning_started"]


def test_automatic_off_only_reports() -> None:
    m = machine(automatic=False)
    out = m.update(0.0, 0.7, detected=True)
    assert types(out.events) == ["adhesion_detected", "cleaning_skipped"]
    assert data(out, "cleaning_skipped")["reason"] == "automatic_off"
    assert out.duty is None


def test_manual_trigger_without_a_detector_is_just_a_burst() -> None:
    m = machine()
    out = m.trigger(0.0, "command", burst_s=5.0)
    assert types(out.events) == ["cleaning_started"]
    assert data(out, "cleaning_started") == {
        "cycle": 1,
        "reason": "command",
        "manual": True,
        "burst_s": 5.0,
        "score": None,
    }
    assert m.update(4.9).duty == 1.0
    out = m.update(5.0)
    assert types(out.events) == ["cleaning_finished"]
    assert data(out, "cleaning_finished")["success"] is None
    assert data(out, "cleaning_finished")["score_after"] is None
    assert out.state is CleaningState.IDLE


def test_manual_trigger_on_a_clean_lens_succeeds() -> None:
    m = machine()
    m.update(0.0, 0.05, detected=False)
    m.trigger(1.0)
    m.update(4.0)
    out = m.update(4.2, 0.06, detected=False)
    assert types(out.events) == ["cleaning_finished"]
    assert data(out, "cleaning_finished")["success"] is True


def test_manual_trigger_is_honoured_during_the_minimum_interval() -> None:
    m = machine()
    end = clean_once(m)
    out = m.trigger(end + 1.0, "manual")
    assert types(out.events) == ["cleaning_started"]
    assert out.duty == 1.0


def test_manual_trigger_during_backoff_runs_one_attempt_and_no_backoff() -> None:
    m = machine()
    fail_all(m)
    out = m.trigger(20.0, "command")
    assert types(out.events) == ["cleaning_started"]
    m.update(23.0)
    out = m.update(25.0, 0.7, detected=True)
    assert types(out.events) == ["cleaning_finished", "cleaning_skipped"]
    assert data(out, "cleaning_finished")["success"] is False
    assert out.state is CleaningState.IDLE
    assert data(out, "cleaning_skipped")["reason"] == "min_interval"
    assert m.failed == 2


def test_manual_trigger_while_cleaning_is_refused_as_busy() -> None:
    m = machine()
    m.update(0.0, 0.7, detected=True)
    out = m.trigger(1.0, "command")
    assert types(out.events) == ["cleaning_skipped"]
    assert data(out, "cleaning_skipped") == {
        "reason": "busy",
        "trigger": "command",
        "retry_in_s": None,
    }
    m.update(3.0)
    assert types(m.trigger(3.5).events) == ["cleaning_skipped"]  # verifying: busy too


def test_trigger_first_lets_time_pass() -> None:
    """A trigger after the back-off ran out reports its end before starting."""
    m = machine()
    fail_all(m)
    out = m.trigger(500.0)
    assert types(out.events) == ["cleaning_backoff_ended", "cleaning_started"]


def test_cycles_are_numbered() -> None:
    m = machine(min_interval_s=0.0)
    end = clean_once(m)
    out = m.update(end + 1.0, 0.7, detected=True)
    assert data(out, "cleaning_started")["cycle"] == 2
    assert m.cycle == 2


@pytest.mark.parametrize("score", [-0.1, 1.5, float("nan"), float("inf")])
def test_refuses_a_score_outside_0_1(score: float) -> None:
    with pytest.raises(ValueError, match="adhesion score"):
        machine().update(0.0, score, detected=True)


@pytest.mark.parametrize("covered", [-0.1, 1.5, float("nan")])
def test_refuses_a_covered_fraction_outside_0_1(covered: float) -> None:
    with pytest.raises(ValueError, match="covered fraction"):
        machine().update(0.0, 0.5, detected=True, covered=covered)


@pytest.mark.parametrize("burst", [0.0, -1.0, 61.0, float("nan")])
def test_refuses_a_manual_burst_out_of_range(burst: float) -> None:
    with pytest.raises(ValueError, match="burst_s"):
        machine().trigger(0.0, burst_s=burst)
