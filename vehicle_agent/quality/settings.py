"""Analyze stage: the `[quality]` and `[adhesion]` config models, beside the code they set.

`vehicle_agent.config` composes them into `Config`; the adhesion detector reads `AdhesionConfig`
itself, so its defaults are written once, here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from vehicle_agent.compat import Self
from vehicle_agent.config_base import ConfigModel
from vehicle_agent.quality.condition import DEFAULT_THRESHOLDS


class QualityConfig(ConfigModel):
    enabled: bool = Field(default=True, description="Compute quality metrics for every frame.")
    analysis_width: int = Field(
        320,
        ge=32,
        le=4096,
        description="Metrics are computed on a copy downscaled to this width, in pixels "
        "(the adhesion detector shares the raw frame's copy).",
    )
    brisque: bool = Field(
        default=True,
        description="Add OpenCV's no-reference BRISQUE score (needs Debian's opencv-data "
        "model files; without them the score is empty and one log line says why).",
    )
    brisque_interval_s: float = Field(
        1.0,
        ge=0.0,
        le=3600.0,
        description="Score one frame per this many seconds of video (about 5 ms each) and "
        "carry the score in between; 0 scores every frame.",
    )
    brisque_model_dir: Path | None = Field(
        None,
        description="Folder with brisque_model_live.yml and brisque_range_live.yml; none "
        "searches $VEHICLE_AGENT_BRISQUE_DIR, /usr/share/opencv4/quality, "
        "/usr/share/opencv/quality.",
    )
    low_light_enter: float = Field(
        DEFAULT_THRESHOLDS.low_light_enter,
        ge=1.0,
        le=254.0,
        description="Scene condition: mean luma (0–255) of the raw frame below which the scene "
        "is 'low_light'.",
    )
    low_light_exit: float = Field(
        DEFAULT_THRESHOLDS.low_light_exit,
        ge=1.0,
        le=255.0,
        description="The scene leaves 'low_light' once its mean luma is back above this.",
    )
    low_light_hold_s: float = Field(
        0.2,
        ge=0.0,
        le=60.0,
        description="Seconds of video a dark scene must stay dark before 'low_light' is reported.",
    )
    condition_hold_s: float = Field(
        1.0,
        ge=0.0,
        le=60.0,
        description="Seconds of video any other new scene condition must hold before it is "
        "reported (no flicker).",
    )

    @model_validator(mode="after")
    def _low_light_hysteresis(self) -> Self:
        if self.low_light_exit < self.low_light_enter:
            raise ValueError(
                f"low_light_exit ({self.low_light_exit}) is below low_light_enter "
                f"({self.low_light_enter})"
            )
        return self


class AdhesionConfig(ConfigModel):
    enabled: bool = Field(
        default=True,
        description="Estimate what sits on the lens (drops, mist, dust, mud).",
    )
    detector: Literal["learned", "classical"] = Field(
        "classical",
        description="'classical': the hand-built tile heuristic (fixed cameras); 'learned': the "
        "soiling tile network `model` (trained with `python -m tools.soilnet`; no model is "
        "shipped yet). A learned model that cannot load falls back to the classical one with a "
        "warning.",
    )
    model: str = Field(
        "soilnet",
        pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$",
        description="Name of the learned detector's model folder (shipped `models/` or "
        "`<state_dir>/models/`).",
    )
    runtime: Literal["onnxruntime", "tensorrt"] = Field(
        "onnxruntime",
        description="Runtime of the learned detector's network (TensorRT on the vehicle's GPU).",
    )
    every_n_frames: int = Field(
        2,
        ge=1,
        le=10,
        description="The learned network runs on every n-th frame (its features and decision "
        "on every frame).",
    )
    grid_cols: int = Field(
        40,
        ge=4,
        le=256,
        description="Tiles across the frame (rows follow its aspect ratio); the per-tile mask "
        "has this many columns.",
    )
    warmup_s: float = Field(
        3.0,
        ge=0.5,
        le=600.0,
        description="Seconds of video the detector learns the scene before it flags anything.",
    )
    confirm_s: float = Field(
        0.5,
        ge=0.1,
        le=30.0,
        description="With the camera still, a soiling onset must hold this long, seconds.",
    )
    moving_confirm_s: float = Field(
        4.0,
        ge=0.5,
        le=120.0,
        description="With the camera moving, a tile must look soiled this long, seconds.",
    )
    release_s: float = Field(
        1.0,
        ge=0.0,
        le=60.0,
        description="A soiled tile that looks clean again is released after this long, seconds.",
    )
    blur_ratio: float = Field(
        0.4,
        ge=0.05,
        le=0.95,
        description="A tile whose texture fell below this share of its learnt texture counts "
        "as blurred.",
    )
    clear_ratio: float = Field(
        0.65,
        ge=0.05,
        le=1.0,
        description="A soiled tile is clean again once its texture is back above this share.",
    )
    alarm_fraction: float = Field(
        0.005,
        ge=0.0005,
        le=0.5,
        description="Adhesion is detected when soiled tiles cover this share of the frame (the "
        "score is 0.5 there).",
    )
    clear_fraction: float = Field(
        0.0025,
        ge=0.0,
        le=0.5,
        description="Adhesion is cleared when the covered share falls below this.",
    )

    @model_validator(mode="after")
    def _hysteresis(self) -> Self:
        if self.clear_fraction >= self.alarm_fraction:
            raise ValueError(
                f"clear_fraction ({self.clear_fraction}) must be below alarm_fraction "
                f"({self.alarm_fraction})"
            )
        if self.clear_ratio <= self.blur_ratio:
            raise ValueError(
                f"clear_ratio ({self.clear_ratio}) must be above blur_ratio ({self.blur_ratio})"
            )
        return self
