"""Media the capture tests write themselves: uniform frames, mp4 videos, image files."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from pathlib import Path

    from vehicle_agent.records import Image

VIDEO_FRAMES = 12
VIDEO_FPS = 25.0
VIDEO_SIZE = (64, 48)
"""(width, height)"""


def grey(value: int, size: tuple[int, int] = VIDEO_SIZE) -> Image:
    """A uniform BGR frame of `size` (width, height)."""
    width, height = size
    return np.full((height, width, 3), value, dtype=np.uint8)


def frame_value(i: int) -> int:
    """Grey level of frame i of the test video, far enough apart to survive lossy coding."""
    return 10 + 20 * i


def write_video(
    path: Path,
    frames: int = VIDEO_FRAMES,
    fps: float = VIDEO_FPS,
    size: tuple[int, int] = VIDEO_SIZE,
) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    assert writer.isOpened(), "this OpenCV build cannot write mp4v"
    for i in range(frames):
        writer.write(grey(frame_value(i), size))
    writer.release()
    return path


def write_image(path: Path, image: Image) -> Path:
    assert cv2.imwrite(str(path), image), f"cannot write {path}"
    return path
