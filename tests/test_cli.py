"""The command line: --version, offline enhancement of images, folders and videos, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from vehicle_agent import __version__
from vehicle_agent.cli import main


def dark_image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(5, 60, (60, 80, 3), dtype=np.uint8)


def test_version_from_the_module_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vehicle_agent", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == f"vehicle-agent {__version__}"


def test_enhance_one_image(tmp_path: Path) -> None:
    src = tmp_path / "night.png"
    cv2.imwrite(str(src), dark_image())
    out = tmp_path / "night_enhanced.png"
    assert main(["enhance", str(src), "--out", str(out)]) == 0
    enhanced = cv2.imread(str(out))
    assert enhanced is not None
    assert enhanced.shape == (60, 80, 3)
    assert enhanced.mean() > dark_image().mean()


def test_enhance_a_folder_keeps_names_and_reports_a_corrupt_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        cv2.imwrite(str(src / f"frame_{i}.jpg"), dark_image(i))
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    (src / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    assert main(["enhance", str(src), "--out", str(out)]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["frame_0.jpg", "frame_1.jpg", "frame_2.jpg"]
    captured = capsys.readouterr()
    assert "broken.jpg: cannot decode image" in captured.err
    assert "enhanced 3 frame(s)" in captured.out


def test_enhance_a_video_gives_a_video_with_every_frame(tmp_path: Path) -> None:
    src = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter.fourcc(*"MJPG"), 15, (80, 60))
    for i in range(12):
        writer.write(dark_image(i))
    writer.release()
    out = tmp_path / "clip_out.mp4"
    assert main(["enhance", str(src), "--out", str(out), "--backend", "passthrough"]) == 0
    cap = cv2.VideoCapture(str(out))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 12
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(15)


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("missing.png", None, "no such file or directory"),
        ("notes.txt", b"hello", "not an image"),
        ("corrupt.png", b"\x89PNG garbage", "cannot decode image"),
    ],
)
def test_enhance_errors_are_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes | None, words: str
) -> None:
    src = tmp_path / name
    if content is not None:
        src.write_bytes(content)
    assert main(["enhance", str(src), "--out", str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert name in err[0]
    assert words in err[0]
