"""Capture stage: the `[capture]` config models, beside the code they set (`vehicle_agent.config`
composes them into `Config`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vehicle_agent.compat import Self
from vehicle_agent.config_base import ConfigModel


class ReconnectConfig(ConfigModel):
    initial_s: float = Field(
        0.5, ge=0.01, le=60.0, description="First wait before reopening a lost source, seconds."
    )
    max_s: float = Field(
        10.0, ge=0.01, le=600.0, description="Longest wait between reopen attempts, seconds."
    )
    multiplier: float = Field(
        2.0, ge=1.0, le=10.0, description="Factor applied to the wait after each failed attempt."
    )
    jitter: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Random fraction of the wait added or removed so a fleet does not retry in step.",
    )
    max_attempts: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="Give up after this many failed attempts in a row; 0 retries forever.",
    )

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> Self:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s}) is smaller than initial_s ({self.initial_s})")
        return self


class CaptureConfig(ConfigModel):
    uri: str = Field(
        "v4l2:///dev/video0",
        min_length=1,
        description=(
            "Where frames come from: file://PATH (video), file://DIR or a bare DIR (image folder), "
            "v4l2:///dev/videoN, csi://N (Jetson CSI camera) or gst://PIPELINE (GStreamer)."
        ),
    )
    pacing: Literal["realtime", "max"] = Field(
        "realtime",
        description=(
            "Recorded media only: 'realtime' replays at the recording's frame rate (a full queue "
            "drops the oldest frame, as with a camera); 'max' goes as fast as the pipeline takes "
            "frames and never drops."
        ),
    )
    on_end: Literal["auto", "stop", "loop", "reconnect"] = Field(
        "auto",
        description=(
            "What to do when the source ends: 'stop' the pipeline, 'loop' a recording from the "
            "start, or 'reconnect' as for a lost camera. 'auto' stops for recordings and "
            "reconnects for cameras and GStreamer pipelines."
        ),
    )
    width: int | None = Field(
        None,
        ge=16,
        le=8192,
        description="Requested frame width for cameras; none keeps the default.",
    )
    height: int | None = Field(
        None,
        ge=16,
        le=8192,
        description="Requested frame height for cameras; none keeps the default.",
    )
    fps: float | None = Field(
        None,
        gt=0.0,
        le=240.0,
        description=(
            "Frame rate: requested from cameras, and used to pace image folders and recordings "
            "that do not state one (none: the source's own, else 10)."
        ),
    )
    gst_backend: Literal["auto", "opencv", "subprocess"] = Field(
        "auto",
        description=(
            "How gst:// and csi:// pipelines run: inside OpenCV ('opencv', needs a cv2 built "
            "with GStreamer), as a gst-launch-1.0 process that can be killed when a camera "
            "wedges ('subprocess'), or 'auto': OpenCV when it has GStreamer, else the process."
        ),
    )
    open_timeout_s: float = Field(
        20.0,
        ge=1.0,
        le=300.0,
        description="Opening a source that takes longer than this counts as a failed attempt.",
    )
    stall_timeout_s: float = Field(
        3.0,
        ge=0.1,
        le=120.0,
        description="A source that delivers no frame for this long is reported lost and reopened.",
    )
    reconnect: ReconnectConfig = Field(
        default_factory=ReconnectConfig, description="Backoff when a source is lost."
    )
