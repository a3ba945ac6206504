"""Capture: `open_source()` turns the configured URI into the `FrameSource` that reads it.

Schemes follow jetson-utils' videoSource: file://PATH or a bare PATH (a video file, or a folder
of images), v4l2:///dev/videoN, csi://N and gst://PIPELINE. `SCHEMES` maps each scheme to its
`Scheme`: the factory and whether its sources are live (a camera: the pipeline drops frames
rather than make it wait); a new kind of source registers one there, and nothing else decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from vehicle_agent.capture.base import FrameSource, SourceError
from vehicle_agent.capture.folder import ImageFolderSource
from vehicle_agent.capture.gst import GstSource
from vehicle_agent.capture.opencv import (
    OpenCvGstSource,
    V4l2Source,
    VideoFileSource,
    opencv_has_gstreamer,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from vehicle_agent.capture.settings import CaptureConfig

SourceFactory: TypeAlias = "Callable[[str, str, CaptureConfig], FrameSource]"
"""(uri, target, config) -> unopened source; target is what follows `scheme://`."""

CSI_DEFAULT_WIDTH = 1920
CSI_DEFAULT_HEIGHT = 1080
CSI_DEFAULT_FPS = 30.0


def _path_source(uri: str, target: str, config: CaptureConfig) -> FrameSource:
    if not target:
        raise SourceError(uri, "no path: expected file:///absolute/path or file://relative/path")
    path = Path(target)
    # A path that does not exist yet is taken for a video file (one with a trailing slash for a
    # folder); open() then reports it missing, and a reconnect retries it.
    if path.is_dir() or (not path.exists() and target.endswith("/")):
        return ImageFolderSource(uri, path, fps=config.fps)
    return VideoFileSource(uri, path, fps=config.fps)


def _v4l2_source(uri: str, target: str, config: CaptureConfig) -> FrameSource:
    if not target.startswith("/"):
        raise SourceError(uri, "expected v4l2:///dev/videoN (an absolute device path)")
    return V4l2Source(
        uri,
        target,
        width=config.width,
        height=config.height,
        fps=config.fps,
        stall_timeout_s=config.stall_timeout_s,
    )


def csi_pipeline(sensor_id: int, config: CaptureConfig) -> str:
    """The Jetson pipeline for CSI camera `sensor_id`: Argus capture, then out of NVMM memory."""
    width = config.width or CSI_DEFAULT_WIDTH
    height = config.height or CSI_DEFAULT_HEIGHT
    rate = Fraction(config.fps or CSI_DEFAULT_FPS).limit_denominator(1001)
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM),width={width},height={height},"
        f"framerate={rate.numerator}/{rate.denominator} ! nvvidconv"
    )


def gst_pipeline_source(uri: str, pipeline: str, config: CaptureConfig) -> FrameSource:
    """A pipeline inside OpenCV when its build has GStreamer, else a `gst-launch-1.0` process."""
    backend = config.gst_backend
    if backend == "auto":
        backend = "opencv" if opencv_has_gstreamer() else "subprocess"
    if backend == "opencv":
        return OpenCvGstSource(uri, pipeline, live=True)
    return GstSource(uri, pipeline, live=True)


def _csi_source(uri: str, target: str, config: CaptureConfig) -> FrameSource:
    if not target.isdigit():
        raise SourceError(uri, "expected csi://N, N the sensor id (0, 1, ...)")
    return gst_pipeline_source(uri, csi_pipeline(int(target), config), config)


def _gst_source(uri: str, target: str, config: CaptureConfig) -> FrameSource:
    if not target.strip():
        raise SourceError(uri, "empty pipeline: expected gst://<gst-launch-1.0 pipeline>")
    return gst_pipeline_source(uri, target, config)


@dataclass(frozen=True)
class Scheme:
    factory: SourceFactory
    live: bool
    """A camera, which does not wait: frames it delivers while the pipeline is behind are
    dropped (oldest first) rather than block capture, even at `pacing = "max"`."""


SCHEMES: dict[str, Scheme] = {
    "file": Scheme(_path_source, live=False),
    "v4l2": Scheme(_v4l2_source, live=True),
    "csi": Scheme(_csi_source, live=True),
    "gst": Scheme(_gst_source, live=True),
}
"""Scheme (lower case, without `://`) -> `Scheme`. A URI without `://` is a path (`file`)."""


def is_live_uri(uri: str) -> bool:
    """Whether `uri`'s source is live; a scheme nobody registered counts as live (the safe side:
    a lossy queue never blocks a camera; `open_source` refuses it anyway)."""
    scheme, sep, _ = uri.partition("://")
    if not sep:
        return False
    known = SCHEMES.get(scheme.lower())
    return True if known is None else known.live


def open_source(uri: str, config: CaptureConfig) -> FrameSource:
    """The unopened source for `uri`. Raises `SourceError` for a URI no scheme can read.

    Only the URI's form is checked here: a missing file or camera is reported by `open()`, so
    the capture stage treats it like any source that is lost and retries.
    """
    scheme, sep, target = uri.partition("://")
    if not sep:
        return _path_source(uri, uri, config)
    known = SCHEMES.get(scheme.lower())
    if known is None:
        accepted = ", ".join(f"{name}://" for name in SCHEMES)
        raise SourceError(uri, f"unknown scheme {scheme!r}: expected {accepted} or a path")
    return known.factory(uri, target, config)
