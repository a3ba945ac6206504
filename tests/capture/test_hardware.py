"""Real cameras: a V4L2 device and a Jetson CSI sensor. Skipped (with the reason) without them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from vehicle_agent.capture.uri import open_source
from vehicle_agent.config import CaptureConfig
from vehicle_agent.records import check_image

V4L2_DEVICE = Path("/dev/video0")


def nvargus_missing() -> str | None:
    """Why CSI capture cannot run here, or None when it can."""
    inspect = shutil.which("gst-inspect-1.0")
    if inspect is None:
        return "gst-inspect-1.0 not installed"
    result = subprocess.run(
        [inspect, "nvarguscamerasrc"], capture_output=True, check=False, timeout=30
    )
    return None if result.returncode == 0 else "nvarguscamerasrc not available (not a Jetson)"


@pytest.mark.hardware
@pytest.mark.skipif(not V4L2_DEVICE.exists(), reason=f"{V4L2_DEVICE} does not exist")
def test_v4l2_camera_delivers_frames() -> None:
    source = open_source(f"v4l2://{V4L2_DEVICE}", CaptureConfig(width=640, height=480))
    try:
        info = source.open()
        assert info.live
        for _ in range(5):
            frame = source.read()
            assert frame is not None
            check_image(frame.image)
            assert frame.image.shape == (info.height, info.width, 3)
    finally:
        source.close()


@pytest.mark.hardware
def test_csi_camera_delivers_frames() -> None:
    reason = nvargus_missing()
    if reason is not None:
        pytest.skip(reason)
    source = open_source("csi://0", CaptureConfig(width=1280, height=720, fps=30.0))
    try:
        info = source.open()
        assert (info.width, info.height, info.live) == (1280, 720, True)
        for _ in range(5):
            frame = source.read()
            assert frame is not None
            assert frame.image.shape == (720, 1280, 3)
    finally:
        source.close()
