"""Capture: sources that OpenCV's VideoCapture reads: video files, V4L2 cameras, GStreamer in-process."""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from vehicle_agent.capture.base import FrameSource, RawFrame, SourceError, SourceInfo

if TYPE_CHECKING:
    from vehicle_agent.records import Image

logger = logging.getLogger(__name__)

DEFAULT_FPS = 10.0
"""Pace of a recording that states no frame rate and has none configured."""
MAX_FPS = 1000.0
"""A container claiming more is lying (some write 90000, the timebase)."""
V4L2_SELECT_TIMEOUT_ENV = "OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT"
"""OpenCV's V4L2 backend has no read timeout property: a read waits for a frame this many seconds
(default 10), read from the environment once per process, at the first V4L2 read."""
V4L2_SELECT_TIMEOUT_S = 1
"""What we set it to (unless the operator did): close() from another thread takes effect within
about this long, and a camera that stops is noticed in slices of it."""
_CLOSE_WAIT_S = 2.0
"""close() waits this long for a blocked camera read; past it, the read releases the camera."""


def as_bgr(image: Any) -> Image:
    """An H x W x 3 uint8 BGR array from what VideoCapture returned (grey, BGRA or 16-bit)."""
    array = np.asarray(image)
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ValueError(f"unsupported frame dtype {array.dtype}")
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 1):
        array = cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_BGRA2BGR)
    elif array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"unsupported frame shape {array.shape}")
    return np.asarray(array, dtype=np.uint8)


def _prop(capture: Any, prop: int) -> float:
    value = float(capture.get(prop))
    return value if math.isfinite(value) else 0.0


class VideoFileSource(FrameSource):
    """A video file decoded by FFMPEG through cv2.VideoCapture; not live, frames wait for us.

    Timestamps are the container's (CAP_PROP_POS_MSEC), or index / fps where it gives none.
    """

    def __init__(self, uri: str, path: Path | str, fps: float | None = None) -> None:
        """`fps` paces a file whose container states no frame rate (else DEFAULT_FPS)."""
        super().__init__(uri)
        self.path = Path(path)
        self.fallback_fps = fps
        self._lock = threading.Lock()
        """Held around every call into the capture: releasing it during a read would crash."""
        self._capture: Any = None
        self._fps = DEFAULT_FPS
        self._index = 0
        self._last_pts = -1.0

    def open(self) -> SourceInfo:
        self.close()
        if not self.path.exists():
            raise SourceError(self.uri, f"no such file or directory: {self.path}")
        if self.path.is_dir():
            raise SourceError(self.uri, f"{self.path} is a directory, not a video file")
        capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        width = int(_prop(capture, cv2.CAP_PROP_FRAME_WIDTH))
        height = int(_prop(capture, cv2.CAP_PROP_FRAME_HEIGHT))
        if not capture.isOpened() or width <= 0 or height <= 0:
            capture.release()
            raise SourceError(self.uri, f"cannot decode video: {self.path}")
        fps = _prop(capture, cv2.CAP_PROP_FPS)
        if not 0 < fps <= MAX_FPS:
            fps = self.fallback_fps or DEFAULT_FPS
        count = int(_prop(capture, cv2.CAP_PROP_FRAME_COUNT))
        with self._lock:
            self._capture = capture
            self._fps = fps
            self._index = 0
            self._last_pts = -1.0
        frames = f"{count} frames" if count > 0 else "unknown length"
        return SourceInfo(
            width=width,
            height=height,
            fps=fps,
            live=False,
            description=f"{self.path.name}: {width}x{height} @ {fps:g} fps, {frames}",
        )

    def read(self) -> RawFrame | None:
        with self._lock:
            capture = self._capture
            if capture is None:
                raise SourceError(self.uri, "read() on a source that is not open")
            ok, image = capture.read()
            if not ok or image is None:
                return None
            msec = _prop(capture, cv2.CAP_PROP_POS_MSEC)
            index = self._index
            self._index += 1
            pts = msec / 1000.0
            if pts < 0 or (index > 0 and pts <= self._last_pts):
                # Some containers report 0 or a stale time for every frame: keep time moving.
                pts = self._last_pts + 1.0 / self._fps if index > 0 else 0.0
            self._last_pts = pts
        try:
            bgr = as_bgr(image)
        except ValueError as exc:
            raise SourceError(self.uri, f"cannot use decoded frame {index}: {exc}") from None
        return RawFrame(image=bgr, pts=pts)

    def rewind(self) -> None:
        with self._lock:
            capture = self._capture
            if capture is not None and capture.set(cv2.CAP_PROP_POS_FRAMES, 0):
                self._index = 0
                self._last_pts = -1.0
                return
        # Not open, or the container cannot seek: start again from scratch.
        self.close()
        self.open()

    def close(self) -> None:
        with self._lock:
            capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()


def _v4l2_select_timeout_s() -> float:
    os.environ.setdefault(V4L2_SELECT_TIMEOUT_ENV, str(V4L2_SELECT_TIMEOUT_S))
    try:
        return float(os.environ[V4L2_SELECT_TIMEOUT_ENV])
    except ValueError:
        return 10.0  # OpenCV ignores a value it cannot parse


class _LiveCapture(FrameSource):
    """A live cv2.VideoCapture whose blocking read may be interrupted by close() from a thread.

    Every call into the capture holds `_lock` (releasing it during a read would crash OpenCV);
    close() sets `_closing`, and a read that returns afterwards releases the capture itself.
    """

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self._lock = threading.Lock()
        self._capture: Any = None
        self._closing = False

    def close(self) -> None:
        self._closing = True
        # A read in progress ends within its own timeout and sees the flag.
        if not self._lock.acquire(timeout=_CLOSE_WAIT_S):
            logger.warning(
                f"{self.uri}: read still blocked; it releases the device when it returns"
            )
            return
        try:
            capture, self._capture = self._capture, None
        finally:
            self._lock.release()
        if capture is not None:
            capture.release()


class V4l2Source(_LiveCapture):
    """A V4L2 camera (/dev/videoN) through cv2.VideoCapture; live, frames are lost if not taken.

    `width`, `height` and `fps` are requests: the driver picks the nearest mode it has, and
    SourceInfo reports what it picked. Frames carry no pts: the capture stage stamps them.
    """

    def __init__(
        self,
        uri: str,
        device: Path | str,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        *,
        stall_timeout_s: float = 3.0,
    ) -> None:
        """`stall_timeout_s`: how long read() waits for a frame before giving up on the camera."""
        super().__init__(uri)
        self.device = Path(device)
        self.width = width
        self.height = height
        self.fps = fps
        self.stall_timeout_s = stall_timeout_s
        self._slice_s = float(V4L2_SELECT_TIMEOUT_S)

    def open(self) -> SourceInfo:
        self.close()
        if not self.device.exists():
            raise SourceError(self.uri, f"no such file or directory: {self.device}")
        self._slice_s = _v4l2_select_timeout_s()
        capture = cv2.VideoCapture(str(self.device), cv2.CAP_V4L2)
        if not capture.isOpened():
            capture.release()
            raise SourceError(self.uri, f"cannot open camera {self.device}")
        if self.width is not None:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height is not None:
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        if self.fps is not None:
            capture.set(cv2.CAP_PROP_FPS, self.fps)
        width = int(_prop(capture, cv2.CAP_PROP_FRAME_WIDTH))
        height = int(_prop(capture, cv2.CAP_PROP_FRAME_HEIGHT))
        fps = _prop(capture, cv2.CAP_PROP_FPS)
        with self._lock:
            self._capture = capture
            self._closing = False
        rate = f"{fps:g} fps" if fps > 0 else "unknown fps"
        return SourceInfo(
            width=width,
            height=height,
            fps=fps if fps > 0 else None,
            live=True,
            description=f"{self.device} (V4L2): {width}x{height} @ {rate}",
        )

    def read(self) -> RawFrame | None:
        with self._lock:
            capture = self._capture
            if capture is None:
                raise SourceError(self.uri, "read() on a source that is not open")
            deadline = time.monotonic() + self.stall_timeout_s
            while True:
                started = time.monotonic()
                ok, image = capture.read()
                if self._closing:
                    # close() may have given up waiting for us: release here, under the lock.
                    self._capture = None
                    capture.release()
                    return None
                if ok and image is not None:
                    break
                now = time.monotonic()
                if now >= deadline:
                    raise SourceError(
                        self.uri,
                        f"camera stopped delivering frames (none for {self.stall_timeout_s:g} s)",
                    )
                # A read that fails well within the select timeout is a broken device (unplugged,
                # streaming stopped); one that waited it out only saw no frame yet: try again.
                if self._slice_s > 0 and now - started < self._slice_s / 2:
                    raise SourceError(self.uri, "camera stopped delivering frames")
                if self._slice_s <= 0:
                    time.sleep(0.01)  # the operator made reads non-blocking: do not spin
        try:
            return RawFrame(image=as_bgr(image), pts=None)
        except ValueError as exc:
            raise SourceError(self.uri, f"camera frame cannot be used: {exc}") from None


@functools.cache
def opencv_has_gstreamer() -> bool:
    """Whether this cv2 was built with GStreamer (Debian/JetPack python3-opencv; not PyPI wheels)."""
    for line in cv2.getBuildInformation().splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "GStreamer":
            return value.strip().upper().startswith("YES")
    return False


class OpenCvGstSource(_LiveCapture):
    """A GStreamer pipeline run inside OpenCV (cv2.CAP_GSTREAMER), ending in a BGR appsink.

    No subprocess and no pipe copy, so it is the cheaper way where cv2 has GStreamer. Its limit:
    a read blocked inside GStreamer cannot be interrupted, so a wedged camera is only freed when
    the read returns; the `gst-launch-1.0` subprocess backend (`GstSource`) can be killed instead.
    """

    def __init__(self, uri: str, pipeline: str, *, live: bool = True) -> None:
        super().__init__(uri)
        self.pipeline = pipeline
        self.live = live

    def capture_pipeline(self) -> str:
        # drop + max-buffers: a slow consumer gets the newest frames, as from a camera.
        tail = "videoconvert ! video/x-raw,format=BGR ! appsink sync=false"
        tail += " drop=true max-buffers=2" if self.live else ""
        return f"{self.pipeline} ! {tail}"

    def open(self) -> SourceInfo:
        self.close()
        if not opencv_has_gstreamer():
            raise SourceError(
                self.uri,
                "this OpenCV was built without GStreamer: use capture.gst_backend = 'subprocess'",
            )
        capture = cv2.VideoCapture(self.capture_pipeline(), cv2.CAP_GSTREAMER)
        if not capture.isOpened():
            capture.release()
            raise SourceError(
                self.uri,
                "GStreamer pipeline did not start (OpenCV gives no reason; "
                "capture.gst_backend = 'subprocess' reports the element's error)",
            )
        width = int(_prop(capture, cv2.CAP_PROP_FRAME_WIDTH))
        height = int(_prop(capture, cv2.CAP_PROP_FRAME_HEIGHT))
        fps = _prop(capture, cv2.CAP_PROP_FPS)
        with self._lock:
            self._capture = capture
            self._closing = False
        rate = f"{fps:g} fps" if 0 < fps <= MAX_FPS else "unknown fps"
        return SourceInfo(
            width=width,
            height=height,
            fps=fps if 0 < fps <= MAX_FPS else None,
            live=self.live,
            description=f"GStreamer in OpenCV: {width}x{height} @ {rate}",
        )

    def read(self) -> RawFrame | None:
        with self._lock:
            capture = self._capture
            if capture is None:
                raise SourceError(self.uri, "read() on a source that is not open")
            ok, image = capture.read()
            if self._closing:
                self._capture = None
                capture.release()
                return None
            if not ok or image is None:
                return None  # end of stream; the stage's on_end policy decides what follows
            pts = _prop(capture, cv2.CAP_PROP_POS_MSEC) / 1000.0
        try:
            return RawFrame(image=as_bgr(image), pts=pts if pts > 0 else None)
        except ValueError as exc:
            raise SourceError(self.uri, f"pipeline frame cannot be used: {exc}") from None
