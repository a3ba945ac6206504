"""Quality metrics on images whose answer is known, and the shared downscale."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.quality.footage import street
from vehicle_agent.quality.metrics import compute_quality, noise_level, prepare
from vehicle_agent.records import Image, QualityMetrics


def uniform(value: int, shape: tuple[int, int] = (180, 320)) -> Image:
    return np.full((*shape, 3), value, np.uint8)


def test_a_uniform_grey_frame_has_its_level_and_nothing_else() -> None:
    q = compute_quality(uniform(90))
    assert q.brightness == pytest.approx(90.0)
    assert q.contrast == pytest.approx(0.0)
    assert q.sharpness == pytest.approx(0.0)
    assert q.noise == pytest.approx(0.0)
    assert q.saturation == pytest.approx(0.0)
    assert q.clipped_shadows == q.clipped_highlights == 0.0
    assert q.haze == pytest.approx(90.0)


def test_black_and_white_frames_are_all_clipped() -> None:
    assert compute_quality(uniform(0)).clipped_shadows == pytest.approx(1.0)
    assert compute_quality(uniform(255)).clipped_highlights == pytest.approx(1.0)
    half = uniform(0)
    half[:, 160:] = 255
    q = compute_quality(half)
    assert q.clipped_shadows == pytest.approx(0.5)
    assert q.clipped_highlights == pytest.approx(0.5)
    assert q.contrast == pytest.approx(127.5)


def test_saturation_is_full_for_pure_colour_and_zero_for_grey() -> None:
    red = uniform(0)
    red[..., 2] = 200
    assert compute_quality(red).saturation == pytest.approx(255.0)
    assert compute_quality(uniform(128)).saturation == pytest.approx(0.0)


def test_noise_estimate_finds_the_added_gaussian_noise() -> None:
    rng = np.random.default_rng(3)
    flat = np.full((180, 320), 120.0) + rng.normal(0.0, 5.0, (180, 320))
    grey = np.clip(flat, 0, 255).astype(np.uint8)
    assert noise_level(grey) == pytest.approx(5.0, rel=0.15)


def test_noise_estimate_ignores_scene_texture() -> None:
    """A real, sharp street frame is far from noisy: texture is not mistaken for noise."""
    q = compute_quality(street()[0])
    assert q.noise < 2.0
    assert q.sharpness > 300.0


def test_blur_lowers_sharpness_and_a_veil_raises_haze() -> None:
    frame = street()[0]
    sharp = compute_quality(frame)
    blurred = compute_quality(np.asarray(cv2.GaussianBlur(frame, (0, 0), 4.0), np.uint8))
    veiled = compute_quality((frame * 0.45 + 200 * 0.55).astype(np.uint8))
    assert blurred.sharpness < sharp.sharpness / 20
    assert veiled.haze > 2 * sharp.haze
    assert veiled.contrast < sharp.contrast / 2


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1280, 720), (180, 320)),
        ((768, 576), (240, 320)),
        ((1920, 1080), (180, 320)),
        ((200, 100), (100, 200)),
    ],
)
def test_prepare_shrinks_to_the_analysis_width_once(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    frame = np.asarray(cv2.resize(street()[0], size), np.uint8)
    small = prepare(frame, 320)
    assert small.grey.shape == expected
    assert small.colour.shape == (*expected, 3)


def test_metrics_of_a_real_frame_do_not_depend_much_on_its_resolution() -> None:
    """Measured on the shrunk copy, a 1280×720 frame and a 640×360 copy agree."""
    big = np.asarray(cv2.resize(street()[0], (1280, 720)), np.uint8)
    small = np.asarray(cv2.resize(big, (640, 360), interpolation=cv2.INTER_AREA), np.uint8)
    a, b = compute_quality(big), compute_quality(small)
    assert a.brightness == pytest.approx(b.brightness, abs=0.5)
    assert a.contrast == pytest.approx(b.contrast, rel=0.02)
    assert a.sharpness == pytest.approx(b.sharpness, rel=0.05)


def test_the_headline_dict_keeps_three_keys_and_json_has_every_field() -> None:
    q = QualityMetrics(100.0, 20.0, 30.0)
    assert q.as_dict() == {"brightness": 100.0, "contrast": 20.0, "sharpness": 30.0}
    data = q.as_json()
    assert data["condition"] == "normal"
    assert data["brisque"] is None
    assert {"noise", "saturation", "clipped_shadows", "clipped_highlights", "haze"} <= data.keys()


def test_an_invalid_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        compute_quality(np.zeros((10, 10), np.uint8))
