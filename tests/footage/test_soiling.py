"""Footage bank: the lens soiling renderers, every family × kind against the same contract."""

from __future__ import annotations

import functools
import itertools
import math

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from tools.footage import splits
from tools.footage.soiling import (
    CLASS_OF,
    FAMILIES,
    SOILING_KINDS,
    Family,
    Soiling,
    SoilingKind,
    render_soiling,
)

HEIGHT, WIDTH = 180, 320
CASES = list(itertools.product(FAMILIES, SOILING_KINDS))
IDS = [f"{family}-{kind}" for family, kind in CASES]
VEILS = ("mist", "dust")
"""Kinds whose effect fades out softly past the half-strength mask."""


def _scene(seed: int) -> npt.NDArray[np.uint8]:
    """A textured RGB frame (gradients, edges, fine detail) so blurs and refraction show."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    image = np.zeros((HEIGHT, WIDTH, 3), np.float32)
    for c in range(3):
        fx, fy = rng.uniform(0.02, 0.12, 2)
        image[..., c] = 128 + 60 * np.sin(fx * xs + rng.uniform(0, 6)) * np.cos(fy * ys)
    checker = ((xs // 12 + ys // 12) % 2).astype(np.float32)[..., None]
    image += 50 * (checker - 0.5) * rng.uniform(0.5, 1.0, 3)
    image += rng.normal(0, 12, image.shape)
    return np.asarray(np.clip(image, 0, 255), np.uint8)


SCENE = _scene(1)
OTHER = _scene(2)


@functools.cache
def _layer(family: Family, kind: SoilingKind, coverage: float = 0.15, seed: int = 7) -> Soiling:
    return render_soiling(kind, family, HEIGHT, WIDTH, coverage, seed)


def _diff(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    return np.asarray(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean(axis=2))


def _grown(mask: npt.NDArray[np.bool_], px: int) -> npt.NDArray[np.bool_]:
    kernel = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    return np.asarray(cv2.dilate(mask.astype(np.uint8), kernel), np.bool_)


def test_tables_name_every_kind_and_family() -> None:
    assert SOILING_KINDS == ("drops", "mist", "dust", "mud")
    assert FAMILIES == ("sim", "blurdisc", "refract", "optics")
    assert CLASS_OF == {
        "drops": "transparent",
        "mist": "transparent",
        "dust": "semi_transparent",
        "mud": "opaque",
    }


@pytest.mark.parametrize(("family", "kind"), CASES, ids=IDS)
def test_same_arguments_give_the_same_bytes(family: Family, kind: SoilingKind) -> None:
    first = render_soiling(kind, family, HEIGHT, WIDTH, 0.1, 3)
    again = render_soiling(kind, family, HEIGHT, WIDTH, 0.1, 3)
    assert first.kind == kind
    assert first.family == family
    assert np.array_equal(first.mask, again.mask)
    assert first.apply(SCENE).tobytes() == again.apply(SCENE).tobytes()
    # The layer keeps no state between frames: the same frame twice, the same output.
    assert first.apply(SCENE).tobytes() == first.apply(SCENE).tobytes()


@pytest.mark.parametrize(("family", "kind"), CASES, ids=IDS)
def test_output_is_an_rgb_frame_of_the_input_size(family: Family, kind: SoilingKind) -> None:
    layer = _layer(family, kind)
    out = layer.apply(SCENE)
    assert out.shape == SCENE.shape
    assert out.dtype == np.uint8
    assert layer.mask.shape == (HEIGHT, WIDTH)
    assert layer.mask.dtype == np.bool_


@pytest.mark.parametrize(("family", "kind"), CASES, ids=IDS)
@pytest.mark.parametrize("coverage", [0.02, 0.1, 0.4])
def test_mask_covers_the_target_fraction(
    family: Family, kind: SoilingKind, coverage: float
) -> None:
    for seed in (0, 1):
        got = float(render_soiling(kind, family, HEIGHT, WIDTH, coverage, seed).mask.mean())
        assert 0.7 * coverage <= got <= 1.3 * coverage, (seed, got)


@pytest.mark.parametrize(("family", "kind"), CASES, ids=IDS)
def test_soiling_changes_the_frame_inside_its_mask_only(family: Family, kind: SoilingKind) -> None:
    layer = _layer(family, kind)
    diff = _diff(layer.apply(SCENE), SCENE)
    inside = float(diff[layer.mask].mean())
    assert inside > 6.0
    outside = diff[~_grown(layer.mask, 8)]
    if kind in VEILS:
        # A veil fades out softly below half strength: weak, never a second veil.
        assert float(outside.mean()) < 0.25 * inside
    else:
        assert float(np.percentile(outside, 99.9)) <= 2.0
        assert float(outside.mean()) < 0.1


@pytest.mark.parametrize(("family", "kind"), CASES, ids=IDS)
def test_amount_fades_the_soiling_out(family: Family, kind: SoilingKind) -> None:
    layer = _layer(family, kind)
    assert np.array_equal(layer.apply(SCENE, 0.0), SCENE)
    full = float(_diff(layer.apply(SCENE, 1.0), SCENE).mean())
    half = float(_diff(layer.apply(SCENE, 0.5), SCENE).mean())
    assert 0.1 * full < half < 0.9 * full
    assert np.array_equal(layer.apply(SCENE), layer.apply(SCENE, 1.0))


@pytest.mark.parametrize("family", FAMILIES)
def test_mud_hides_the_background(family: Family) -> None:
    layer = _layer(family, "mud")
    core = np.asarray(cv2.erode(layer.mask.astype(np.uint8), np.ones((9, 9), np.uint8)), np.bool_)
    assert core.sum() > 50
    moved = float(_diff(layer.apply(SCENE), layer.apply(OTHER))[core].mean())
    background = float(_diff(SCENE, OTHER)[core].mean())
    assert moved < 0.05 * background


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["drops", "mist", "dust"])
def test_see_through_soiling_shows_the_background(family: Family, kind: SoilingKind) -> None:
    layer = _layer(family, kind)
    moved = float(_diff(layer.apply(SCENE), layer.apply(OTHER))[layer.mask].mean())
    background = float(_diff(SCENE, OTHER)[layer.mask].mean())
    assert moved > 0.2 * background


@pytest.mark.parametrize("kind", SOILING_KINDS)
def test_families_do_not_share_a_look(kind: SoilingKind) -> None:
    for one, two in itertools.combinations(FAMILIES, 2):
        a, b = _layer(one, kind), _layer(two, kind)
        union = np.logical_or(a.mask, b.mask).sum()
        overlap = np.logical_and(a.mask, b.mask).sum() / max(int(union), 1)
        assert overlap < 0.5, (one, two, overlap)
        assert float(_diff(a.apply(SCENE), b.apply(SCENE)).mean()) > 2.0, (one, two)


@pytest.mark.parametrize(("family", "kind"), CASES, ids=IDS)
def test_seed_changes_the_geometry(family: Family, kind: SoilingKind) -> None:
    a = render_soiling(kind, family, HEIGHT, WIDTH, 0.15, 1)
    b = render_soiling(kind, family, HEIGHT, WIDTH, 0.15, 2)
    assert not np.array_equal(a.mask, b.mask)


@pytest.mark.parametrize(("family", "kind"), CASES, ids=IDS)
def test_small_frames_meet_the_target_and_stay_put_outside(
    family: Family, kind: SoilingKind
) -> None:
    """At 160×120 and 5 % coverage (the detector's training size), several seeds."""
    image = np.asarray(cv2.resize(SCENE, (160, 120), interpolation=cv2.INTER_AREA), np.uint8)
    for seed in range(3):
        layer = render_soiling(kind, family, 120, 160, 0.05, seed)
        assert 0.035 <= float(layer.mask.mean()) <= 0.065, (seed, float(layer.mask.mean()))
        diff = _diff(layer.apply(image), image)
        assert float(diff[layer.mask].mean()) > 4.0, seed
        outside = float(diff[~_grown(layer.mask, 6)].mean())
        assert outside < (2.0 if kind in VEILS else 0.2), (seed, outside)


def test_an_unknown_family_is_a_value_error_before_the_split_is_asked() -> None:
    with splits.training("test"), pytest.raises(ValueError, match="'nope'"):
        render_soiling("drops", "nope", 64, 64, 0.1, 0)  # type: ignore[arg-type]


def test_frames_of_other_sizes_work() -> None:
    layer = render_soiling("drops", "refract", 120, 160, 0.1, 0)
    image = np.full((120, 160, 3), 90, np.uint8)
    assert layer.apply(image).shape == (120, 160, 3)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("rain", "sim", HEIGHT, WIDTH, 0.1, 0), "'rain'"),
        (("drops", "photoshop", HEIGHT, WIDTH, 0.1, 0), "'photoshop'"),
        (("drops", "sim", HEIGHT, WIDTH, 0.7, 0), "0.7"),
        (("drops", "sim", HEIGHT, WIDTH, 0.001, 0), "0.001"),
        (("drops", "sim", HEIGHT, WIDTH, math.nan, 0), "nan"),
        (("drops", "blurdisc", 8, WIDTH, 0.1, 0), "height 8"),
        (("drops", "blurdisc", HEIGHT, 10.5, 0.1, 0), "width 10.5"),
        (("drops", "blurdisc", HEIGHT, WIDTH, 0.1, "x"), "'x'"),
    ],
)
def test_bad_arguments_are_refused_by_name(args: tuple[object, ...], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        render_soiling(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize("family", FAMILIES)
def test_bad_frames_are_refused_by_name(family: Family) -> None:
    layer = _layer(family, "dust")
    with pytest.raises(ValueError, match=r"\(100, 100, 3\)"):
        layer.apply(np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(ValueError, match="float32"):
        layer.apply(SCENE.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(180, 320\)"):
        layer.apply(SCENE[..., 0])
    with pytest.raises(ValueError, match=r"1\.5"):
        layer.apply(SCENE, 1.5)


def test_held_out_family_is_refused_inside_training() -> None:
    with splits.training("test") as usage:
        render_soiling("drops", "blurdisc", 64, 64, 0.1, 0)
        with pytest.raises(splits.HeldOutError, match="refract"):
            render_soiling("drops", "refract", 64, 64, 0.1, 0)
    assert ("soiling", "blurdisc") in usage.used
