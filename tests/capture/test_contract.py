"""The FrameSource contract, run against every source that works without hardware.

What the capture stage relies on: open() describes the frames read() returns; frames are
HxWx3 uint8 with non-decreasing pts; the end of a recording is None, again and again; rewind()
starts over; close() is idempotent and a closed source refuses read() with SourceError.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from vehicle_agent.capture.base import FrameSource, SourceError
from vehicle_agent.capture.uri import open_source
from vehicle_agent.config import CaptureConfig
from vehicle_agent.records import check_image

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from vehicle_agent.capture.base import RawFrame


@dataclass(frozen=True)
class Case:
    source: FrameSource
    frames: int
    """How many frames the source holds."""


@pytest.fixture(params=["video", "folder", "gst"])
def case(request: pytest.FixtureRequest, video_file: Path, image_folder: Path) -> Iterator[Case]:
    kind = request.param
    if kind == "gst" and shutil.which("gst-launch-1.0") is None:
        pytest.skip("gst-launch-1.0 not installed")
    uri, frames = {
        "video": (f"file://{video_file}", 12),
        "folder": (str(image_folder), 3),
        "gst": ("gst://videotestsrc num-buffers=5 ! video/x-raw,width=64,height=48", 5),
    }[kind]
    source = open_source(uri, CaptureConfig())
    yield Case(source, frames)
    source.close()


def read_all(source: FrameSource) -> list[RawFrame]:
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    return frames


def test_frames_match_what_open_described(case: Case) -> None:
    info = case.source.open()
    frames = read_all(case.source)
    assert len(frames) == case.frames
    for frame in frames:
        check_image(frame.image)
        assert frame.image.shape == (info.height, info.width, 3)
    pts = [f.pts for f in frames if f.pts is not None]
    assert len(pts) == len(frames), "recordings and finite pipelines give every frame a pts"
    assert pts == sorted(pts)


def test_end_is_none_again_and_again(case: Case) -> None:
    source = case.source
    source.open()
    read_all(source)
    assert source.read() is None
    assert source.read() is None


def test_rewind_starts_over(case: Case) -> None:
    source = case.source
    source.open()
    first = read_all(source)
    source.rewind()
    again = read_all(source)
    assert len(again) == len(first) == case.frames
    assert again[0].pts == first[0].pts


def test_close_is_idempotent_and_a_closed_source_refuses_read(case: Case) -> None:
    source = case.source
    with pytest.raises(SourceError):
        source.read()
    source.open()
    source.close()
    source.close()
    with pytest.raises(SourceError):
        source.read()
    source.open()
    assert source.read() is not None
