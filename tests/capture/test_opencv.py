"""VideoFileSource on videos the tests write with cv2.VideoWriter; frame conversion to BGR."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

from tests.capture.media import VIDEO_FPS, VIDEO_FRAMES, frame_value, write_video
from vehicle_agent.capture.base import SourceError
from vehicle_agent.capture.opencv import VideoFileSource, as_bgr

if TYPE_CHECKING:
    from pathlib import Path


def test_video_file_delivers_every_frame_in_order_then_none(video_file: Path) -> None:
    source = VideoFileSource(f"file://{video_file}", video_file)
    info = source.open()
    assert (info.width, info.height, info.fps, info.live) == (64, 48, VIDEO_FPS, False)
    assert info.description == "clip.mp4: 64x48 @ 25 fps, 12 frames"
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    assert len(frames) == VIDEO_FRAMES
    for i, frame in enumerate(frames):
        assert frame.image.shape == (48, 64, 3)
        assert frame.image.dtype == np.uint8
        assert float(frame.image.mean()) == pytest.approx(frame_value(i), abs=4)
    assert [f.pts for f in frames] == pytest.approx([i / VIDEO_FPS for i in range(VIDEO_FRAMES)])
    assert source.read() is None
    source.close()


def test_rewind_goes_back_to_the_first_frame(video_file: Path) -> None:
    source = VideoFileSource("file://clip", video_file)
    source.open()
    for _ in range(5):
        source.read()
    source.rewind()
    frame = source.read()
    assert frame is not None
    assert frame.pts == 0
    assert float(frame.image.mean()) == pytest.approx(frame_value(0), abs=4)
    source.close()


def test_missing_file_fails_open(tmp_path: Path) -> None:
    source = VideoFileSource("file://gone.mp4", tmp_path / "gone.mp4")
    with pytest.raises(SourceError, match=r"no such file or directory: .*gone\.mp4"):
        source.open()


def test_garbage_file_fails_open_with_cannot_decode(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 100)
    with pytest.raises(SourceError, match="cannot decode video") as caught:
        VideoFileSource("file://garbage.mp4", garbage).open()
    assert caught.value.uri == "file://garbage.mp4"


def test_directory_is_not_a_video(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is a directory"):
        VideoFileSource("file://dir", tmp_path).open()


def test_read_before_open_and_after_close_raise(video_file: Path) -> None:
    source = VideoFileSource("file://clip", video_file)
    with pytest.raises(SourceError, match="not open"):
        source.read()
    source.open()
    source.close()
    source.close()
    with pytest.raises(SourceError, match="not open"):
        source.read()


def test_video_without_frame_rate_uses_the_configured_one(tmp_path: Path) -> None:
    """A container's absurd rate (here 2000 fps) is not trusted: the configured fps is used."""
    path = write_video(tmp_path / "fast.mp4", frames=2, fps=2000.0)
    info = VideoFileSource("file://fast", path, fps=7.0).open()
    assert info.fps == 7.0
    info = VideoFileSource("file://fast", path).open()
    assert info.fps == 10.0


def test_as_bgr_converts_grey_bgra_and_16_bit() -> None:
    grey = np.full((4, 6), 200, dtype=np.uint8)
    assert as_bgr(grey).shape == (4, 6, 3)
    assert as_bgr(grey[..., None]).shape == (4, 6, 3)
    bgra = np.zeros((4, 6, 4), dtype=np.uint8)
    bgra[..., 2] = 255
    out = as_bgr(bgra)
    assert out.shape == (4, 6, 3)
    assert out[0, 0].tolist() == [0, 0, 255]
    deep = np.full((4, 6, 3), 0xFF00, dtype=np.uint16)
    assert as_bgr(deep).dtype == np.uint8
    assert int(as_bgr(deep)[0, 0, 0]) == 0xFF
    with pytest.raises(ValueError, match="unsupported frame"):
        as_bgr(np.zeros((4, 6, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="unsupported frame dtype"):
        as_bgr(np.zeros((4, 6, 3), dtype=np.float32))
