"""Training pairs: every degradation is deterministic for a seed and lowers quality the way it says."""

from __future__ import annotations

import numpy as np
import pytest

from tools.gan.degrade import KINDS, boxes_to_mask, degrade, make_pair, sign_like_mask


def scene(height: int = 96, width: int = 128) -> np.ndarray:
    """A daylight-like RGB frame: a gradient sky, textured ground, a few edges."""
    rng = np.random.default_rng(3)
    img = np.zeros((height, width, 3), np.float64)
    img[: height // 2] = np.linspace(0.6, 0.9, height // 2)[:, None, None] * [0.8, 0.9, 1.0]
    img[height // 2 :] = 0.35 + 0.25 * rng.random((height - height // 2, width, 1))
    img[20:40, 30:34] = 0.05
    return np.asarray(img * 255, np.uint8)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_bytes_and_other_seed_differs(kind: str) -> None:
    image = scene()
    a = degrade(image, kind, 7)  # type: ignore[arg-type]
    b = degrade(image, kind, 7)  # type: ignore[arg-type]
    assert a.dtype == np.uint8
    assert a.shape == image.shape
    assert np.array_equal(a, b)
    if kind != "clean":
        c = degrade(image, kind, 8)  # type: ignore[arg-type]
        assert not np.array_equal(a, c)
        assert not np.array_equal(a, image)


def test_clean_pairs_are_the_frame_itself() -> None:
    image = scene()
    assert np.array_equal(degrade(image, "clean", 1), image)


def test_low_light_darkens_and_fog_lifts_blacks_and_cuts_contrast() -> None:
    image = scene()
    dark = degrade(image, "low_light", 1).astype(float)
    foggy = degrade(image, "fog", 1).astype(float)
    assert dark.mean() < 0.7 * image.mean()
    assert foggy[20:40, 30:34].mean() > image[20:40, 30:34].mean() + 20
    assert foggy.std() < image.std()


def test_unknown_kind_and_bad_image_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade(scene(), "snow", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uint8"):
        degrade(scene().astype(np.float32), "fog", 0)


def test_sign_like_region_found_on_a_red_sign_with_a_symbol() -> None:
    image = np.full((120, 160, 3), 110, np.uint8)
    yy, xx = np.mgrid[:120, :160]
    disk = (yy - 50) ** 2 + (xx - 80) ** 2 < 18**2
    image[disk] = (200, 20, 20)
    image[45:55, 70:90] = 255  # the bar of a no-entry sign
    mask = sign_like_mask(image)
    assert mask is not None
    assert mask[50, 80]
    assert not mask[5, 5]
    assert sign_like_mask(np.full((120, 160, 3), 110, np.uint8)) is None


def test_labelled_boxes_become_the_region() -> None:
    mask = boxes_to_mask([[10, 20, 30, 40]], 50, 60)
    assert mask.sum() == 20 * 20
    pair = make_pair(scene(), "noise", 3, region=mask)
    assert pair.region is mask
    assert pair.kind == "noise"
