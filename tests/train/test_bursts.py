"""Truth frames from bursts: dead pixels, flicker and clipped values are handled, and the truth
frame of a noisy burst of a real photo beats one frame and the plain mean."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="training needs the train extra (torch)")
pytest.importorskip("skimage", reason="the photos come from the train extra (scikit-image)")

from tools.gan import bursts
from tools.gan.__main__ import main
from tools.gan.data import photo


def real_crop() -> np.ndarray:
    """A 96×128 crop of a real photo (scikit-image's chelsea)."""
    return np.ascontiguousarray(photo("chelsea")[100:196, 150:278])


def test_dead_pixels_are_found_in_the_dark_frames_and_interpolated() -> None:
    dark = [np.full((8, 8, 3), 2, np.uint8) for _ in range(4)]
    for d in dark:
        d[3, 4] = 200  # hot pixel: bright in the dark
    bad = bursts.defect_map(dark, threshold=12)
    assert bad.sum() == 1
    assert bad[3, 4]
    ramp = np.tile(np.arange(8, dtype=np.float32) * 10, (8, 1))[None, ..., None].repeat(3, axis=3)
    frames = ramp.copy()
    frames[0, 3, 4] = 255.0
    fixed = bursts.interpolate_defects(frames, bad)
    assert fixed[0, 3, 4, 0] == pytest.approx(40.0)  # the ramp's value there


def test_a_transient_glitch_in_one_dark_frame_is_not_a_defect() -> None:
    dark = [np.full((8, 8, 3), 2, np.uint8) for _ in range(8)]
    dark[0][5, 5] = 255
    assert not bursts.defect_map(dark, threshold=12).any()


def test_frames_outside_the_confidence_interval_are_dropped() -> None:
    means = [100.0, 100.2, 99.9, 100.1, 130.0, 100.0, 70.0]
    assert bursts.aligned(means, z=3.0, min_sigma=0.5) == [0, 1, 2, 3, 5]


def test_clipped_values_take_the_most_frequent_value_at_their_position() -> None:
    stack = np.array([10, 12, 12, 255, 13], np.float32).reshape(5, 1, 1, 1)
    out, count = bursts.replace_clipped(stack, 0, 255)
    assert count == 1
    assert out[:, 0, 0, 0].tolist() == [10, 12, 12, 12, 13]


def test_truth_frame_of_a_real_photo_beats_one_frame_and_the_plain_mean() -> None:
    sensor = bursts.SensorConfig(frames=12, dark_frames=6, defects=2e-3, flicker_frames=2)
    scores = bursts.evaluate_burst(real_crop(), sensor, seed=3)
    assert scores["flickering frames dropped"] == 2
    assert scores["good frames dropped"] == 0
    assert scores["defects found"] == scores["defects planted"]
    assert scores["truth (all steps)"] > scores["plain mean"] + 3
    assert scores["plain mean"] > scores["single frame"]


def test_truth_frame_refuses_frames_of_different_sizes() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        bursts.truth_frame([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8)])


def test_the_command_builds_a_truth_frame_from_folders(tmp_path: Path) -> None:
    import cv2  # noqa: PLC0415

    burst = bursts.synthetic_burst(real_crop(), bursts.SensorConfig(frames=6, dark_frames=3), 1)
    for folder, frames in (("caps", burst.frames), ("dark", burst.dark)):
        (tmp_path / folder).mkdir()
        for i, f in enumerate(frames):
            cv2.imwrite(str(tmp_path / folder / f"{i:02d}.png"), f[..., ::-1])
    out = tmp_path / "truth.png"
    args = ["burst", "--input", str(tmp_path / "caps"), "--dark", str(tmp_path / "dark")]
    assert main([*args, "--out", str(out)]) == 0
    written = cv2.imread(str(out))
    assert written is not None
    assert written.shape == (96, 128, 3)


def test_bad_arguments_are_refused_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["burst", "--z", "-1", "--scenes", "1"])
    assert "z: Input should be greater than 0" in capsys.readouterr().err


def test_a_burst_needs_more_frames_than_flicker(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["burst", "--frames", "3", "--scenes", "1"])
    assert "flicker_frames (3) must be fewer than frames (3)" in capsys.readouterr().err
