"""Footage bank: what the `optics` soiling family adds beyond the shared contract
(tests/footage/test_soiling.py runs that on it too): small drops and small mud, masks that are the
footprint, and its place on the train side of the split."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from tools.footage import splits
from tools.footage.soiling import render_soiling

HEIGHT, WIDTH = 360, 640


def _scene() -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(4)
    image = rng.normal(128, 30, (HEIGHT, WIDTH, 3))
    smooth = np.asarray(cv2.GaussianBlur(image, (0, 0), 1.5), np.float64)
    return np.asarray(np.clip(smooth, 0, 255), np.uint8)


SCENE = _scene()


def _radii(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """Equivalent radius (pixels) of each connected part of a mask."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[1:count, cv2.CC_STAT_AREA].astype(np.float64)
    return np.sqrt(areas / np.pi)


def _grown(mask: npt.NDArray[np.bool_], px: int) -> npt.NDArray[np.bool_]:
    kernel = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    return np.asarray(cv2.dilate(mask.astype(np.uint8), kernel), np.bool_)


def test_the_family_is_on_the_train_side_and_recorded_when_used() -> None:
    assert splits.split_of("soiling", "optics") == "train"
    with splits.training("test") as usage:
        render_soiling("drops", "optics", 64, 64, 0.1, 0)
        with pytest.raises(splits.HeldOutError, match="refract"):
            render_soiling("drops", "refract", 64, 64, 0.1, 0)
    assert ("soiling", "optics") in usage.used


def test_small_coverage_drops_are_many_small_drops() -> None:
    """At 2 % of a 640-px frame most drops have a radius of a few pixels, some of 1–3 px."""
    for seed in range(4):
        radii = _radii(render_soiling("drops", "optics", HEIGHT, WIDTH, 0.02, seed).mask)
        assert len(radii) >= 8, (seed, len(radii))
        assert float(np.median(radii)) <= 6.0, (seed, float(np.median(radii)))
        assert float(radii.min()) <= 3.0, seed


@pytest.mark.parametrize("coverage", [0.01, 0.02])
@pytest.mark.parametrize("kind", ["drops", "mud", "dust"])
def test_small_targets_down_to_one_percent_are_met(kind: str, coverage: float) -> None:
    for seed in range(4):
        got = float(render_soiling(kind, "optics", HEIGHT, WIDTH, coverage, seed).mask.mean())  # type: ignore[arg-type]
        assert 0.7 * coverage <= got <= 1.3 * coverage, (seed, got)


def test_mud_includes_specks_of_a_couple_of_pixels() -> None:
    smallest = [
        float(_radii(render_soiling("mud", "optics", HEIGHT, WIDTH, 0.02, seed).mask).min())
        for seed in range(8)
    ]
    assert min(smallest) <= 2.5, smallest


@pytest.mark.parametrize("kind", ["drops", "mud"])
def test_drops_and_mud_change_the_frame_only_on_their_footprint(kind: str) -> None:
    """The mask is the footprint: changes stay within its soft edge (half of 0.5–3 px at 640 px
    across, up to 4.5 times that along a smear) and nearly every masked pixel changes."""
    for seed in range(3):
        layer = render_soiling(kind, "optics", HEIGHT, WIDTH, 0.05, seed)  # type: ignore[arg-type]
        diff = np.abs(layer.apply(SCENE).astype(np.int16) - SCENE.astype(np.int16)).max(axis=2)
        assert int(diff[~_grown(layer.mask, 6)].max()) <= 1, seed
        assert float((diff[layer.mask] > 0).mean()) > 0.9, seed


def test_drops_have_a_dark_rim() -> None:
    """On a flat grey frame a drop's edge is darker than the frame (light leaves sideways)."""
    grey = np.full((HEIGHT, WIDTH, 3), 140, np.uint8)
    for seed in range(3):
        layer = render_soiling("drops", "optics", HEIGHT, WIDTH, 0.05, seed)
        edge = layer.mask & ~np.asarray(
            cv2.erode(layer.mask.astype(np.uint8), np.ones((3, 3), np.uint8)), np.bool_
        )
        out = layer.apply(grey).astype(np.float64).mean(axis=2)
        assert float(out[edge].mean()) < 135.0, seed


def test_drops_magnify_what_is_behind_them() -> None:
    """In the middle of a drop the background is enlarged: a ramp behind it climbs more slowly
    across the drop than across the open frame."""
    xs = np.arange(WIDTH, dtype=np.float64)
    wide = np.broadcast_to((40 + (xs % 150) * 1.2)[None, :, None], (HEIGHT, WIDTH, 3))
    ramp = np.ascontiguousarray(wide, np.uint8)
    slopes = []
    for seed in range(4):
        layer = render_soiling("drops", "optics", HEIGHT, WIDTH, 0.1, seed)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(layer.mask.astype(np.uint8))
        biggest = labels == 1 + int(np.argmax(stats[1:count, cv2.CC_STAT_AREA]))
        depth = cv2.distanceTransform(biggest.astype(np.uint8), cv2.DIST_L2, 5)
        middle = depth > 0.6 * float(depth.max())
        middle[:, -1] = False
        out = layer.apply(ramp).astype(np.float64).mean(axis=2)
        step = np.abs(np.diff(out, axis=1))[middle[:, :-1]]
        slopes.append(float(np.median(step)))
    assert np.median(slopes) < 0.9 * 1.2, slopes
