"""GstSource against a real gst-launch-1.0: frames, end of stream, failures and teardown."""

from __future__ import annotations

import os
import shutil
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
import pytest

from vehicle_agent.capture.base import SourceError
from vehicle_agent.capture.gst import GstSource, failure_reason

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from vehicle_agent.capture.base import RawFrame

pytestmark = pytest.mark.skipif(
    shutil.which("gst-launch-1.0") is None, reason="gst-launch-1.0 not installed"
)

TEST_PIPELINE = "videotestsrc num-buffers=60 ! video/x-raw,width=320,height=240,framerate=30/1"


@pytest.fixture
def sources() -> Iterator[list[GstSource]]:
    """Sources a test creates; closed afterwards even when the test fails."""
    created: list[GstSource] = []
    yield created
    for source in created:
        source.close()


def make(sources: list[GstSource], pipeline: str, open_timeout_s: float = 10.0) -> GstSource:
    source = GstSource(f"gst://{pipeline}", pipeline, open_timeout_s=open_timeout_s)
    sources.append(source)
    return source


def read_all(source: GstSource) -> list[RawFrame]:
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    return frames


def assert_group_gone(pgid: int) -> None:
    """No process is left in the child's process group (gst-launch-1.0 and its children)."""
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)


def test_finite_pipeline_delivers_every_frame_then_none(sources: list[GstSource]) -> None:
    source = make(sources, TEST_PIPELINE)
    info = source.open()
    assert (info.width, info.height, info.fps, info.live) == (320, 240, 30.0, True)
    assert "320x240 @ 30 fps" in info.description
    frames = read_all(source)
    assert len(frames) == 60
    assert all(f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8 for f in frames)
    assert [f.pts for f in frames] == pytest.approx([i / 30 for i in range(60)])
    assert source.read() is None, "the end is reported again, not turned into an error"


def test_colours_arrive_as_bgr(sources: list[GstSource]) -> None:
    pipeline = (
        "videotestsrc num-buffers=1 pattern=solid-color foreground-color=0xffff0000 "
        "! video/x-raw,width=64,height=48"
    )
    source = make(sources, pipeline)
    source.open()
    frame = source.read()
    assert frame is not None
    b, g, r = frame.image.reshape(-1, 3).mean(axis=0)
    assert (b, g) == pytest.approx((0, 0), abs=3)
    assert r == pytest.approx(255, abs=3)


def test_odd_size_is_cropped_to_even_without_shifting_the_picture(
    sources: list[GstSource],
) -> None:
    """321x241 frames (which y4menc of GStreamer <= 1.22 pads) equal GStreamer's own crop."""
    odd = "videotestsrc num-buffers=2 ! video/x-raw,format=I420,width=321,height=241"
    odd_source = make(sources, odd)
    info = odd_source.open()
    assert (info.width, info.height) == (320, 240)
    assert "cropped from 321x241" in info.description
    cropped_by_gst = make(sources, f"{odd} ! videocrop right=1 bottom=1")
    cropped_by_gst.open()
    ours, theirs = read_all(odd_source), read_all(cropped_by_gst)
    assert len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs, strict=True):
        assert a.image.shape == (240, 320, 3)
        np.testing.assert_array_equal(a.image, b.image)


def test_unknown_element_is_named_in_the_error(sources: list[GstSource]) -> None:
    source = make(sources, "videotestsrc ! nosuchelement")
    with pytest.raises(SourceError, match='no element "nosuchelement"') as caught:
        source.open()
    assert caught.value.uri == "gst://videotestsrc ! nosuchelement"
    assert source.pid is None


def test_failure_mid_stream_raises_with_the_reason(sources: list[GstSource]) -> None:
    source = make(sources, "videotestsrc ! video/x-raw,width=8,height=8 ! identity error-after=3")
    source.open()
    assert len([source.read(), source.read()]) == 2
    with pytest.raises(SourceError, match=r"failed after 2 frames \(exit status 1\): identity0"):
        source.read()


def test_killed_pipeline_raises_with_the_signal(sources: list[GstSource]) -> None:
    source = make(sources, "videotestsrc is-live=true ! video/x-raw,width=16,height=16")
    source.open()
    assert source.read() is not None
    assert source.pid is not None
    os.kill(source.pid, 9)
    with pytest.raises(SourceError, match="killed by SIGKILL"):
        read_all(source)  # frames already in the pipe come first


def test_pipeline_ending_before_its_first_frame_fails_open(sources: list[GstSource]) -> None:
    source = make(sources, "videotestsrc num-buffers=0")
    with pytest.raises(SourceError, match="pipeline ended before its first frame"):
        source.open()


def test_open_gives_up_after_its_timeout(sources: list[GstSource]) -> None:
    """A pipeline that runs but never produces a frame is refused, and its child killed."""
    source = make(sources, "videotestsrc ! valve drop=true", open_timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"no video from the pipeline within 0.5 s"):
        source.open()
    assert time.monotonic() - started < 3
    assert source.pid is None


def test_close_while_read_blocks_returns_promptly_and_kills_the_child(
    sources: list[GstSource],
) -> None:
    # One frame now, the next in 10 s: the second read() blocks.
    source = make(sources, "videotestsrc is-live=true ! video/x-raw,framerate=1/10")
    source.open()
    assert source.read() is not None
    pgid = source.pid
    assert pgid is not None
    results: list[object] = []

    def reader() -> None:
        try:
            results.append(source.read())
        except SourceError as exc:
            results.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive(), "read() should block waiting for the next frame"
    started = time.monotonic()
    source.close()
    thread.join(timeout=3)
    assert not thread.is_alive()
    assert time.monotonic() - started < 2
    assert results == [None] or isinstance(results[0], SourceError)
    assert_group_gone(pgid)
    source.close()  # idempotent


def test_read_after_close_raises_and_reopen_starts_over(sources: list[GstSource]) -> None:
    source = make(sources, "videotestsrc num-buffers=3 ! video/x-raw,width=16,height=16")
    source.open()
    assert source.read() is not None
    source.close()
    with pytest.raises(SourceError, match="not open"):
        source.read()
    source.open()
    assert len(read_all(source)) == 3


def test_rewind_restarts_the_pipeline(sources: list[GstSource]) -> None:
    source = make(sources, "videotestsrc num-buffers=2 ! video/x-raw,width=16,height=16")
    source.open()
    assert len(read_all(source)) == 2
    source.rewind()
    frames = read_all(source)
    assert [f.pts for f in frames] == pytest.approx([0, 1 / 30])


def test_chatty_stderr_does_not_block_the_pipeline(
    sources: list[GstSource], monkeypatch: pytest.MonkeyPatch
) -> None:
    """GST_DEBUG=*:6 writes about 4 MB to stderr (far more than a pipe holds); it is drained,
    so all frames still arrive."""
    monkeypatch.setenv("GST_DEBUG", "*:6")
    source = make(sources, "videotestsrc num-buffers=30 ! video/x-raw,width=16,height=16")
    source.open()
    assert len(read_all(source)) == 30


def test_missing_gst_launch_says_what_to_install(
    sources: list[GstSource], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    source = make(sources, TEST_PIPELINE)
    with pytest.raises(
        SourceError, match=r"gst-launch-1\.0 not found: install gstreamer1\.0-tools"
    ):
        source.open()


@pytest.mark.parametrize("pipeline", ["", "   ", "videotestsrc ! 'unbalanced"])
def test_pipeline_that_cannot_be_split_is_refused(sources: list[GstSource], pipeline: str) -> None:
    with pytest.raises(SourceError, match=r"empty pipeline|cannot split"):
        make(sources, pipeline).open()


def test_quoted_caps_reach_gst_launch_as_one_token(sources: list[GstSource]) -> None:
    source = make(
        sources, "videotestsrc num-buffers=1 ! 'video/x-raw, width=(int)24, height=(int)16'"
    )
    info = source.open()
    assert (info.width, info.height) == (24, 16)


def test_failure_reason_picks_the_useful_stderr_line() -> None:
    stderr = [
        "ERROR: from element /GstPipeline:pipeline0/GstFileSrc:filesrc0: Resource not found.",
        "Additional debug info:",
        "../plugins/elements/gstfilesrc.c(553): gst_file_src_start (): /GstPipeline:pipeline0:",
        'No such file "/nonexist"',
        "ERROR: pipeline doesn't want to preroll.",
        "Setting pipeline to NULL ...",
        "Freeing pipeline ...",
    ]
    assert failure_reason(stderr) == 'filesrc0: Resource not found. (No such file "/nonexist")'
    assert failure_reason(['WARNING: erroneous pipeline: no element "foo"']) == ('no element "foo"')
    assert failure_reason(["Setting pipeline to NULL ...", "segfault here", ""]) == "segfault here"
    assert failure_reason(["Freeing pipeline ..."]) is None
