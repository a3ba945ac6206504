"""Footage bank: streets composed from train photos (`tools.footage.streets`): one per seed,
repeatable, textured only with the photos the caller allows, laid out as a road (a sky over a
ground that converges on a vanishing point), and only ever from the train side of the split."""

from __future__ import annotations

import zlib

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from tools.footage import splits, streets

SIZE = (320, 180)


def _photo(name: str) -> npt.NDArray[np.uint8]:
    """A textured stand-in photo per name (no footage needed)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    image = rng.normal(rng.uniform(60, 200, 3), 35, (120, 160, 3))
    return np.asarray(np.clip(cv2.GaussianBlur(image, (0, 0), 1.2), 0, 255), np.uint8)


class _Loads:
    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, name: str) -> npt.NDArray[np.uint8]:
        self.names.append(name)
        return _photo(name)


ALL = splits.scenes("train")


def test_a_street_is_one_per_seed_and_repeats_exactly() -> None:
    first = streets.compose(3, ALL, _Loads(), SIZE)
    assert first.shape == (SIZE[1], SIZE[0], 3)
    assert first.dtype == np.uint8
    assert np.array_equal(first, streets.compose(3, ALL, _Loads(), SIZE))
    other = streets.compose(4, ALL, _Loads(), SIZE)
    assert float(np.abs(first.astype(int) - other.astype(int)).mean()) > 10


def test_a_street_reads_only_the_photos_it_is_allowed() -> None:
    allowed = ("brick", "gravel", "grass")
    loads = _Loads()
    for seed in range(6):
        streets.compose(seed, allowed, loads, SIZE)
    assert loads.names
    assert set(loads.names) <= set(allowed)


def test_every_texture_photo_is_a_train_scene() -> None:
    for name in (*streets.FACADE, *streets.GROUND, *streets.FOLIAGE):
        assert splits.split_of("scene", name) == "train", name


def test_allowing_no_photo_of_a_role_is_refused() -> None:
    with pytest.raises(ValueError, match="no foliage photos"):
        streets.pools(("brick", "gravel"))


def test_a_street_has_a_smooth_sky_above_a_textured_ground() -> None:
    """The layout a vehicle camera sees: the top rows are sky or distant roofs (smoother than
    the road), the ground fills the bottom rows, and the rows shrink in texture towards the
    vanishing point."""

    def texture(band: npt.NDArray[np.uint8]) -> float:
        grey = cv2.cvtColor(band, cv2.COLOR_RGB2GRAY).astype(np.float32)
        return float(np.abs(cv2.Laplacian(grey, cv2.CV_32F)).mean())

    sky, ground = [], []
    for seed in range(8):
        image = streets.compose(seed, ALL, _Loads(), (640, 360))
        sky.append(texture(image[:20, 200:440]))
        ground.append(texture(image[-60:, 200:440]))
    assert np.median(sky) < np.median(ground)


@pytest.mark.parametrize("name", ["street-", "street-x", "streets-3", "aero1"])
def test_a_name_that_is_not_a_street_is_not_taken_for_one(name: str) -> None:
    assert not streets.is_street(name)
    with pytest.raises(ValueError, match="not a street scene name"):
        streets.street_seed(name)
