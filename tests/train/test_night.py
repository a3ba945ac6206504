"""Night-camera training pairs (`TrainConfig.night`): lights stay saturated when the exposure is
cut, planted lamps are small saturated discs, and a sampler without it draws the same pairs as
before."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from tools.gan import data
from tools.gan.degrade import Kind
from tools.gan.train import TrainConfig


def scene(height: int = 96, width: int = 144) -> np.ndarray:
    rng = np.random.default_rng(5)
    img = np.zeros((height, width, 3), np.float64)
    img[: height // 3] = 0.97  # a clipped sky: large, so not a light source
    img[height // 3 :] = 0.3 + 0.3 * rng.random((height - height // 3, width, 1))
    img[60:63, 100:103] = 1.0  # a lamp: small and saturated
    return np.asarray(img * 255, np.uint8)


def test_light_sources_are_small_saturated_patches_not_a_clipped_sky() -> None:
    mask = data.light_sources(scene())
    assert mask.shape == (96, 144)
    assert mask[61, 101] > 0.9
    assert mask[10, 70] == 0.0  # sky
    assert mask[80, 20] == 0.0  # ground


def test_night_camera_keeps_lights_at_their_level_and_leaves_the_rest_dark() -> None:
    good = scene()
    poor = (good // 6).astype(np.uint8)
    for seed in range(6):  # with and without the denoiser
        out = data.night_camera(good, poor, np.random.default_rng(seed))
        assert out.dtype == np.uint8
        assert out.shape == good.shape
        assert (out[60:63, 100:103] == 255).all()
        assert abs(float(out[70:, :60].mean()) - float(poor[70:, :60].mean())) < 2.0


def test_planted_lamps_are_saturated_discs_that_light_their_surround() -> None:
    image = np.full((120, 180, 3), 60, np.uint8)
    lit = data.plant_lamps(image, np.random.default_rng(0))
    again = data.plant_lamps(image, np.random.default_rng(0))
    assert np.array_equal(lit, again)
    saturated = (lit.min(axis=2) >= 250).mean()
    assert 0 < saturated < 0.05
    assert lit.astype(int).sum() > image.astype(int).sum()
    assert (lit >= image).all()  # light is only added
    assert data.light_sources(lit).max() > 0.9


def sampler(night: float) -> data.PairSampler:
    images = [scene(), scene()[:, ::-1].copy()]
    mix: dict[Kind, float] = {"low_light": 0.6, "clean": 0.4}
    return data.PairSampler(
        images, mix, height=48, width=72, batch_size=4, seed=3, night=night, tone=0.5
    )


def test_without_night_the_sampler_draws_the_pairs_it_always_drew() -> None:
    a, b = sampler(0.0).batch(0, 1), sampler(0.0).batch(0, 1)
    assert a.kinds == b.kinds
    assert bool((a.poor == b.poor).all())
    night = sampler(1.0).batch(0, 1)
    assert night.kinds == a.kinds  # the kind is drawn before any night draw
    assert bool((night.poor == sampler(1.0).batch(0, 1).poor).all())  # still deterministic


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_night_share_is_checked(value: float) -> None:
    with pytest.raises(ValidationError, match="night"):
        TrainConfig(night=value)
