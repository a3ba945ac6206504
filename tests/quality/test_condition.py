"""The scene condition: what each frame shows, and hysteresis in frame time so it never flickers."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from tests.quality.footage import FPS, looped, noisy, street
from vehicle_agent.quality.condition import DEFAULT_THRESHOLDS, ConditionTracker, classify
from vehicle_agent.quality.metrics import compute_quality
from vehicle_agent.records import Image, QualityMetrics


def test_a_real_street_frame_is_normal() -> None:
    assert classify(compute_quality(street()[0])) == "normal"


def test_a_darkened_frame_is_low_light() -> None:
    dark = np.asarray(cv2.convertScaleAbs(street()[0], alpha=0.2), np.uint8)
    assert classify(compute_quality(dark)) == "low_light"


def test_a_veiled_frame_is_fog() -> None:
    veiled = (street()[0] * 0.45 + 200 * 0.55).astype(np.uint8)
    assert classify(compute_quality(veiled)) == "fog"


def test_a_defocused_frame_is_blur() -> None:
    blurred = np.asarray(cv2.GaussianBlur(street()[0], (0, 0), 4.0), np.uint8)
    assert classify(compute_quality(blurred)) == "blur"


def test_soiling_reported_by_the_detector_is_rain_unless_it_is_dark() -> None:
    q = compute_quality(street()[0])
    assert classify(q, adhesion_detected=True) == "rain"
    dark = dataclasses.replace(q, brightness=20.0)
    assert classify(dark, adhesion_detected=True) == "low_light"


def test_a_uniform_frame_is_not_called_blurred() -> None:
    """Without contrast, sharpness means nothing (a featureless grey frame reads as fog)."""
    assert classify(compute_quality(np.full((90, 160, 3), 140, np.uint8))) != "blur"


def test_leaving_low_light_needs_more_light_than_entering() -> None:
    between = (DEFAULT_THRESHOLDS.low_light_enter + DEFAULT_THRESHOLDS.low_light_exit) / 2
    q = QualityMetrics(brightness=between, contrast=30.0, sharpness=500.0)
    assert classify(q, current="normal") == "normal"
    assert classify(q, current="low_light") == "low_light"


def dimmed(i: int) -> Image:
    """The street fading to night from 5 s to 10 s, dark until 20 s, back by 25 s; noisy."""
    t = i / FPS
    if t < 5:
        gain = 1.0
    elif t < 10:
        gain = 1.0 - (t - 5) / 5 * 0.85
    elif t < 20:
        gain = 0.15
    elif t < 25:
        gain = 0.15 + (t - 20) / 5 * 0.85
    else:
        gain = 1.0
    return noisy(np.asarray(cv2.convertScaleAbs(looped(i), alpha=gain), np.uint8), i, 2.0)


def test_darkened_footage_goes_to_low_light_and_back_once_each_without_flicker() -> None:
    tracker = ConditionTracker()
    changes: list[tuple[float, str]] = []
    previous = None
    for i in range(300):
        t = i / FPS
        condition = tracker.update(compute_quality(dimmed(i)), t)
        if condition != previous:
            changes.append((t, condition))
            previous = condition
    assert [c for _, c in changes] == ["normal", "low_light", "normal"]
    assert 6.0 < changes[1][0] < 10.0
    assert 20.0 < changes[2][0] < 26.0


def test_a_new_condition_must_hold_before_it_is_reported() -> None:
    tracker = ConditionTracker(hold_s=1.0, low_light_hold_s=0.3)
    bright = QualityMetrics(brightness=120.0, contrast=40.0, sharpness=800.0)
    dark = dataclasses.replace(bright, brightness=20.0)
    foggy = dataclasses.replace(bright, contrast=20.0, haze=115.0, saturation=20.0)
    assert tracker.update(bright, 0.0) == "normal"
    assert tracker.update(dark, 0.1) == "normal"  # one dark frame: not yet
    assert tracker.update(bright, 0.2) == "normal"
    assert tracker.update(dark, 0.3) == "normal"
    assert tracker.update(dark, 0.5) == "normal"
    assert tracker.update(dark, 0.6) == "low_light"  # dark for 0.3 s
    assert tracker.update(foggy, 0.7) == "low_light"
    assert tracker.update(foggy, 1.6) == "low_light"
    assert tracker.update(foggy, 1.7) == "fog"  # 1 s of fog


@pytest.mark.parametrize("first", ["low_light", "normal"])
def test_the_first_frame_condition_is_taken_at_once(first: str) -> None:
    q = QualityMetrics(
        brightness=20.0 if first == "low_light" else 120.0, contrast=30.0, sharpness=500.0
    )
    assert ConditionTracker().update(q, 7.0) == first
