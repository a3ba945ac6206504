"""Capture test fixtures: a small video and an image folder, written into tmp_path."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.capture.media import frame_value, grey, write_image, write_video

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def video_file(tmp_path: Path) -> Path:
    """A 12-frame 64x48 25 fps mp4 whose frame i is uniformly grey at frame_value(i)."""
    return write_video(tmp_path / "clip.mp4")


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three PNGs, 00.png .. 02.png, grey at frame_value(i), 64x48."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        write_image(folder / f"{i:02d}.png", grey(frame_value(i)))
    return folder
