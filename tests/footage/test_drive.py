"""The drive synthesiser: repeatable, random access, stand-stills that only show noise, light
that darkens and adds noise, and a truth that matches the frames."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest

from tools.footage.drive import DriveSpec, synthesise


def _photo(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (120, 160, 3), np.uint8)
    return np.asarray(cv2.GaussianBlur(noise, (0, 0), 1.5), np.uint8)


SPEC = DriveSpec(seconds=8.0, fps=10.0, width=96, height=64, light="day",
                 stand_still=((3.0, 6.0),))  # fmt: skip


def test_frames_repeat_for_the_same_seed_in_any_order() -> None:
    a = synthesise([_photo()], SPEC, 3)
    b = synthesise([_photo()], SPEC, 3)
    forward = [a.frame(i) for i in range(a.frames)]
    backward = [b.frame(i) for i in reversed(range(b.frames))][::-1]
    assert all(np.array_equal(x, y) for x, y in zip(forward, backward, strict=True))
    other = synthesise([_photo()], SPEC, 4)
    assert not np.array_equal(other.frame(5), a.frame(5))


def test_a_standing_vehicle_over_a_photo_changes_only_by_noise() -> None:
    drive = synthesise([_photo()], dataclasses.replace(SPEC, passing=False), 1)
    truth = drive.truth()
    standing = [i for i, s in enumerate(truth["per_frame"]["standing"]) if s]
    assert standing, "the stand-still was kept"
    i = standing[len(standing) // 2]
    still = np.abs(drive.frame(i).astype(int) - drive.frame(i + 1)).mean()
    moving = np.abs(drive.frame(5).astype(int) - drive.frame(7)).mean()
    assert still < 3.0
    assert moving > 1.5 * still
    assert truth["per_frame"]["dx"][i + 1] == 0.0


def test_night_is_darker_and_noisier_than_day() -> None:
    flat = [np.full((120, 160, 3), 150, np.uint8)]
    spec = dataclasses.replace(SPEC, passing=False, motion="still")
    day = synthesise(flat, spec, 0).frame(5).astype(float)
    night = synthesise(flat, dataclasses.replace(spec, light="night"), 0).frame(5).astype(float)
    assert night.mean() < 0.7 * day.mean()
    assert night.std() / night.mean() > day.std() / day.mean()


def test_a_clip_keeps_playing_while_the_vehicle_stands() -> None:
    clip = [_photo(s) for s in range(5)]
    drive = synthesise(clip, dataclasses.replace(SPEC, motion="still"), 0)
    assert np.abs(drive.frame(3).astype(int) - drive.frame(4)).mean() > 10


def test_truth_covers_every_frame_and_is_json() -> None:
    drive = synthesise([_photo()], DriveSpec(seconds=30.0, fps=10.0, width=96, height=64), 2)
    truth = drive.truth()
    json.dumps(truth)
    assert truth["frames"] == drive.frames == 300
    for values in truth["per_frame"].values():
        assert len(values) == drive.frames
    assert truth["stand_still"], "a 30 s drive stops at least once"
    assert any(box is not None for box in truth["per_frame"]["passing"])


@pytest.mark.parametrize(
    ("scene", "spec", "message"),
    [
        ([], SPEC, "no frames"),
        ([np.zeros((10, 10), np.uint8)], SPEC, "H×W×3 uint8"),
        ([np.zeros((10, 10, 3), np.float32)], SPEC, "H×W×3 uint8"),
        ([_photo()], DriveSpec(seconds=0.0), "must be > 0"),
    ],
)
def test_bad_input_is_refused(scene: list[np.ndarray], spec: DriveSpec, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        synthesise(scene, spec, 0)
