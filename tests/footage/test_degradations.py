"""Picture degradation renderers: every family × kind is deterministic, changes the frame in the
way its name says (darker and noisier, hazier, blurrier, streaked), and the families look
different from each other; bad inputs are refused with errors that name the problem."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from skimage import data

from tools.footage import degradations, splits
from tools.footage.degradations import DEGRADATION_KINDS, FAMILIES, DegradationKind, Family

RGB = npt.NDArray[np.uint8]
Grey = npt.NDArray[np.float32]

PAIRS: list[tuple[Family, DegradationKind]] = [
    (family, kind)
    for family in FAMILIES
    for kind in DEGRADATION_KINDS
    if degradations.has(kind, family)
]
SEEDS = range(4)


@pytest.fixture(scope="module")
def photo() -> RGB:
    astronaut = data.astronaut()  # type: ignore[no-untyped-call]
    return np.asarray(cv2.resize(astronaut, (160, 120), interpolation=cv2.INTER_AREA), np.uint8)


def _luma(image: RGB) -> Grey:
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), np.float32)


def _high_pass_std(image: RGB) -> float:
    grey = _luma(image)
    return float((grey - cv2.GaussianBlur(grey, (0, 0), 2.0)).std())


def _dark_channel(image: RGB) -> float:
    return float(cv2.erode(image.min(axis=2), np.ones((7, 7), np.uint8)).mean())


def _laplacian_variance(image: RGB) -> float:
    return float(cv2.Laplacian(_luma(image), cv2.CV_32F).var())


def test_every_family_renders_the_kinds_it_claims() -> None:
    assert len(PAIRS) == 11
    assert not degradations.has("rain_streaks", "gan")
    assert all(degradations.has(kind, "sensor") for kind in DEGRADATION_KINDS)
    assert all(degradations.has(kind, "atmos") for kind in DEGRADATION_KINDS)


@pytest.mark.parametrize(("family", "kind"), PAIRS)
def test_same_arguments_give_same_bytes_and_the_frame_changes(
    photo: RGB, family: Family, kind: DegradationKind
) -> None:
    original = photo.copy()
    first = degradations.degrade(photo, kind, family, 7)
    second = degradations.degrade(photo, kind, family, 7)
    assert first.shape == photo.shape
    assert first.dtype == np.uint8
    assert first.tobytes() == second.tobytes()
    assert np.array_equal(photo, original), "the clean input is left alone"
    assert float(np.abs(first.astype(np.float32) - photo).mean()) > 1.0


@pytest.mark.parametrize(("family", "kind"), PAIRS)
def test_the_seed_changes_the_rendering(photo: RGB, family: Family, kind: DegradationKind) -> None:
    outputs = [degradations.degrade(photo, kind, family, seed).tobytes() for seed in SEEDS]
    assert len(set(outputs)) == len(outputs)


@pytest.mark.parametrize("family", FAMILIES)
def test_low_light_is_darker_and_noisier(photo: RGB, family: Family) -> None:
    flat = np.full_like(photo, 128)
    for seed in SEEDS:
        dark = degradations.degrade(photo, "low_light", family, seed)
        assert _luma(dark).mean() < 0.7 * _luma(photo).mean()
        # On a flat frame any fine structure is noise.
        assert _high_pass_std(degradations.degrade(flat, "low_light", family, seed)) > 0.5


@pytest.mark.parametrize("family", FAMILIES)
def test_fog_raises_the_dark_channel_and_lowers_contrast(photo: RGB, family: Family) -> None:
    for seed in SEEDS:
        hazy = degradations.degrade(photo, "fog", family, seed)
        assert _dark_channel(hazy) > _dark_channel(photo) + 10
        assert _luma(hazy).std() < 0.95 * _luma(photo).std()


@pytest.mark.parametrize("family", FAMILIES)
def test_motion_blur_removes_fine_detail(photo: RGB, family: Family) -> None:
    # The renderers add sensor noise after the blur; the bound leaves room for it.
    for seed in SEEDS:
        blurred = degradations.degrade(photo, "motion_blur", family, seed)
        assert _laplacian_variance(blurred) < 0.8 * _laplacian_variance(photo)


@pytest.mark.parametrize("family", ["sensor", "atmos"])
def test_rain_adds_thin_bright_near_vertical_streaks(photo: RGB, family: Family) -> None:
    for seed in SEEDS:
        rainy = degradations.degrade(photo, "rain_streaks", family, seed)
        # Above the bottom band, where spray and splashes may soften rather than brighten.
        diff = (_luma(rainy) - _luma(photo))[: photo.shape[0] * 7 // 10]
        detail = diff - np.asarray(cv2.GaussianBlur(diff, (0, 0), 3.0), np.float32)
        # Bright: the streaks add light far more than they take away.
        assert np.maximum(diff, 0).mean() > 2 * np.maximum(-diff, 0).mean()
        # Oriented near vertical: the added structure changes mostly across columns.
        across = float((cv2.Sobel(detail, cv2.CV_32F, 1, 0) ** 2).sum())
        along = float((cv2.Sobel(detail, cv2.CV_32F, 0, 1) ** 2).sum())
        assert across > 1.2 * along
        # Thin: a 5 px wide horizontal erosion removes most of what was added.
        added = (detail > 4).astype(np.uint8)
        assert 0.002 < added.mean() < 0.4
        survives = cv2.erode(added, np.ones((1, 5), np.uint8)).sum() / added.sum()
        assert survives < 0.5


@pytest.mark.parametrize("kind", DEGRADATION_KINDS)
def test_families_do_not_share_a_look(photo: RGB, kind: DegradationKind) -> None:
    families = [family for family in FAMILIES if degradations.has(kind, family)]
    outputs = {family: degradations.degrade(photo, kind, family, 3) for family in families}
    for one, other in itertools.combinations(families, 2):
        gap = np.abs(outputs[one].astype(np.float32) - outputs[other]).mean()
        assert gap > 2.0, (one, other)


def test_gan_has_no_rain_streaks(photo: RGB) -> None:
    with pytest.raises(ValueError, match=r"'gan' does not render 'rain_streaks'"):
        degradations.degrade(photo, "rain_streaks", "gan", 0)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((120, 160), np.uint8), "H×W×3"),
        (np.zeros((120, 160, 3), np.float32), "uint8"),
        (np.zeros((0, 0, 3), np.uint8), "empty"),
        ([[0, 0, 0]], "numpy array"),
    ],
)
def test_a_bad_image_is_refused(image: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        degradations.degrade(image, "fog", "sensor", 0)  # type: ignore[arg-type]


def test_unknown_kind_or_family_is_named(photo: RGB) -> None:
    with pytest.raises(ValueError, match="unknown degradation kind 'snow'"):
        degradations.degrade(photo, "snow", "sensor", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown degradation family 'film'"):
        degradations.degrade(photo, "fog", "film", 0)  # type: ignore[arg-type]


def test_the_held_out_family_is_refused_inside_training(photo: RGB) -> None:
    with splits.training("test") as usage:
        degradations.degrade(photo, "fog", "sensor", 0)
        with pytest.raises(splits.HeldOutError, match="atmos"):
            degradations.degrade(photo, "fog", "atmos", 0)
    assert ("degradation", "sensor") in usage.used
    degradations.degrade(photo, "fog", "atmos", 0)  # evaluation may use it
