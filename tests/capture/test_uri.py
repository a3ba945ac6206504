"""open_source(): which source each URI gets, and the errors for URIs no source reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from vehicle_agent.capture.base import FrameSource, SourceError
from vehicle_agent.capture.folder import ImageFolderSource
from vehicle_agent.capture.gst import GstSource
from vehicle_agent.capture.opencv import (
    OpenCvGstSource,
    V4l2Source,
    VideoFileSource,
    opencv_has_gstreamer,
)
from vehicle_agent.capture.uri import SCHEMES, Scheme, csi_pipeline, is_live_uri, open_source
from vehicle_agent.config import CaptureConfig

CONFIG = CaptureConfig()


def test_absolute_file_uri_of_a_video_gives_a_video_file_source(video_file: Path) -> None:
    source = open_source(f"file://{video_file}", CONFIG)
    assert isinstance(source, VideoFileSource)
    assert source.path == video_file
    assert source.uri == f"file://{video_file}"
    assert source.open().width == 64
    source.close()


def test_relative_file_uri_and_bare_path_are_relative_to_the_working_directory(
    video_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(video_file.parent)
    for uri in ("file://clip.mp4", "clip.mp4", str(video_file)):
        source = open_source(uri, CONFIG)
        assert isinstance(source, VideoFileSource)
        assert source.open().height == 48
        source.close()


def test_directory_gives_an_image_folder_source(image_folder: Path) -> None:
    for uri in (f"file://{image_folder}", str(image_folder), f"{image_folder}/"):
        source = open_source(uri, CaptureConfig(fps=4.0))
        assert isinstance(source, ImageFolderSource)
        assert source.fps == 4.0


def test_missing_path_is_reported_by_open_not_by_open_source(tmp_path: Path) -> None:
    for uri in (f"file://{tmp_path}/gone.mp4", f"{tmp_path}/gone.mp4", f"{tmp_path}/gone/"):
        source = open_source(uri, CONFIG)
        with pytest.raises(SourceError, match=r"no such file or directory: .*gone") as caught:
            source.open()
        assert caught.value.uri == uri


def test_file_uri_without_a_path_is_refused() -> None:
    with pytest.raises(SourceError, match="no path"):
        open_source("file://", CONFIG)


def test_v4l2_uri_gives_a_camera_with_the_requested_mode() -> None:
    config = CaptureConfig(width=640, height=480, fps=15.0, stall_timeout_s=2.0)
    source = open_source("v4l2:///dev/video7", config)
    assert isinstance(source, V4l2Source)
    assert source.device == Path("/dev/video7")
    assert (source.width, source.height, source.fps) == (640, 480, 15.0)
    assert source.stall_timeout_s == 2.0


def test_v4l2_uri_needs_an_absolute_device_path() -> None:
    with pytest.raises(SourceError, match=r"expected v4l2:///dev/videoN"):
        open_source("v4l2://video0", CONFIG)


def test_missing_v4l2_device_fails_open() -> None:
    source = open_source("v4l2:///dev/video-does-not-exist", CONFIG)
    with pytest.raises(SourceError, match="no such file or directory"):
        source.open()


def test_csi_uri_gives_the_jetson_argus_pipeline_with_defaults() -> None:
    source = open_source("csi://1", CONFIG)
    assert isinstance(source, GstSource)
    assert source.live
    assert source.pipeline == (
        "nvarguscamerasrc sensor-id=1 ! "
        "video/x-raw(memory:NVMM),width=1920,height=1080,framerate=30/1 ! nvvidconv"
    )


def test_csi_pipeline_takes_the_configured_mode() -> None:
    config = CaptureConfig(width=1280, height=720, fps=59.94)
    assert csi_pipeline(0, config) == (
        "nvarguscamerasrc sensor-id=0 ! "
        "video/x-raw(memory:NVMM),width=1280,height=720,framerate=2997/50 ! nvvidconv"
    )
    argv = GstSource("csi://0", csi_pipeline(0, config)).argv()
    assert "video/x-raw(memory:NVMM),width=1280,height=720,framerate=2997/50" in argv


@pytest.mark.parametrize("uri", ["csi://", "csi://a", "csi://-1", "csi://0/1"])
def test_csi_uri_needs_a_sensor_number(uri: str) -> None:
    with pytest.raises(SourceError, match=r"expected csi://N"):
        open_source(uri, CONFIG)


def test_gst_uri_gives_a_live_pipeline_source() -> None:
    pipeline = "videotestsrc num-buffers=60 ! video/x-raw,width=320,height=240"
    source = open_source(f"gst://{pipeline}", CONFIG)
    assert isinstance(source, GstSource)
    assert source.pipeline == pipeline
    assert source.live


def test_gst_uri_without_a_pipeline_is_refused() -> None:
    with pytest.raises(SourceError, match="empty pipeline"):
        open_source("gst://  ", CONFIG)


def test_schemes_are_case_insensitive() -> None:
    assert isinstance(open_source("GST://videotestsrc", CONFIG), GstSource)


@pytest.mark.parametrize("uri", ["rtsp://camera/stream", "http://x", "://nothing"])
def test_unknown_scheme_names_the_uri_and_the_accepted_schemes(uri: str) -> None:
    with pytest.raises(SourceError) as caught:
        open_source(uri, CONFIG)
    assert caught.value.uri == uri
    assert "unknown scheme" in caught.value.reason
    for scheme in ("file://", "v4l2://", "csi://", "gst://"):
        assert scheme in caught.value.reason


def test_a_registered_scheme_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[tuple[str, str]] = []

    def factory(uri: str, target: str, config: CaptureConfig) -> FrameSource:
        made.append((uri, target))
        return GstSource(uri, "videotestsrc")

    monkeypatch.setitem(SCHEMES, "rtsp", Scheme(factory, live=True))
    open_source("rtsp://camera/stream", CONFIG)
    assert made == [("rtsp://camera/stream", "camera/stream")]


def test_each_scheme_says_whether_it_is_live_and_an_unknown_one_counts_as_live(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert [is_live_uri(u) for u in ("clip.mp4", "file:///a.mp4", "v4l2:///dev/video0")] == [
        False,
        False,
        True,
    ]
    assert is_live_uri("csi://0")
    assert is_live_uri("GST://videotestsrc")
    assert is_live_uri("rtsp://camera/stream")  # nobody registered it: the safe side
    monkeypatch.setitem(SCHEMES, "replay", Scheme(SCHEMES["file"].factory, live=False))
    assert not is_live_uri("replay://clip.mp4")


def test_gst_backend_auto_follows_opencv_build_and_can_be_forced() -> None:
    pipeline = "gst://videotestsrc num-buffers=5"
    auto = open_source(pipeline, CaptureConfig())
    expected = OpenCvGstSource if opencv_has_gstreamer() else GstSource
    assert isinstance(auto, expected)
    assert isinstance(open_source(pipeline, CaptureConfig(gst_backend="subprocess")), GstSource)
    forced = open_source(pipeline, CaptureConfig(gst_backend="opencv"))
    assert isinstance(forced, OpenCvGstSource)
    assert forced.capture_pipeline().endswith("appsink sync=false drop=true max-buffers=2")


@pytest.mark.skipif(opencv_has_gstreamer(), reason="this OpenCV has GStreamer")
def test_opencv_backend_without_gstreamer_says_what_to_use_instead() -> None:
    source = open_source("gst://videotestsrc", CaptureConfig(gst_backend="opencv"))
    with pytest.raises(SourceError, match=r"built without GStreamer: use capture\.gst_backend"):
        source.open()


@pytest.mark.skipif(
    not opencv_has_gstreamer(), reason="PyPI OpenCV has no GStreamer (Debian/JetPack builds do)"
)
def test_opencv_backend_delivers_frames_from_a_test_pipeline() -> None:
    uri = "gst://videotestsrc num-buffers=10 ! video/x-raw,width=160,height=120"
    source = open_source(uri, CaptureConfig(gst_backend="opencv"))
    info = source.open()
    assert (info.width, info.height) == (160, 120)
    got = 0
    while (frame := source.read()) is not None:
        assert frame.image.shape == (120, 160, 3)
        got += 1
    source.close()
    assert got == 10
