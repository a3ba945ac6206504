"""Enhance stage: the `[enhance]` config models (backends, chain, gating, health), beside the
code they set (`vehicle_agent.config` composes them into `Config`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import Field, field_validator, model_validator

from vehicle_agent.compat import Self
from vehicle_agent.config_base import ConfigModel


class PassthroughEnhancerConfig(ConfigModel):
    type: Literal["passthrough"] = Field(
        "passthrough", description="Frames go out as they came in."
    )


class ClassicalEnhancerConfig(ConfigModel):
    type: Literal["classical"] = Field(
        "classical", description="Contrast-limited histogram equalisation and gamma, no model."
    )
    clip_limit: float = Field(
        2.0, ge=0.1, le=40.0, description="CLAHE clip limit: higher gives more local contrast."
    )
    tile_grid: int = Field(8, ge=1, le=64, description="CLAHE tiles per side.")
    target_brightness: float = Field(
        110.0,
        ge=1.0,
        le=254.0,
        description="Mean luma (0–255) that the gamma correction aims for on dark frames.",
    )
    max_gamma_gain: float = Field(
        2.5,
        ge=1.0,
        le=10.0,
        description="Limit of the brightening: 1/gamma never exceeds this.",
    )


class OnnxRuntimeEnhancerConfig(ConfigModel):
    type: Literal["onnxruntime"] = Field(
        "onnxruntime",
        description="The model run by onnxruntime: CUDA provider when present, else the CPU.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="'auto': the CUDA provider when onnxruntime has it, else the CPU; 'cuda' "
        "makes a missing CUDA provider a load failure (the chain falls back).",
    )
    intra_op_threads: int = Field(
        2,
        ge=0,
        le=64,
        description="Threads one operator may use; 0 lets onnxruntime take one per core.",
    )
    inter_op_threads: int = Field(
        1, ge=1, le=64, description="Operators run in parallel (1: sequential, the usual best)."
    )
    allow_spinning: bool = Field(
        default=False,
        description="Let idle worker threads spin: lower latency, but they burn cores that "
        "capture and analysis share.",
    )


class TensorRtEnhancerConfig(ConfigModel):
    type: Literal["tensorrt"] = Field(
        "tensorrt",
        description="The model as a TensorRT engine (NVIDIA GPU, tensorrt + pycuda), built "
        "from the ONNX file once and cached.",
    )
    precision: Literal["fp32", "fp16", "int8"] = Field(
        "fp16",
        description="Engine precision; 'int8' calibrates on calibration_dir (FP16 where INT8 "
        "has no kernel).",
    )
    calibration_dir: Path | None = Field(
        None, description="Folder of typical frames (JPEG/PNG) for INT8 calibration."
    )
    calibration_images: int = Field(
        64, ge=1, le=10_000, description="Calibration uses at most this many images."
    )
    workspace_mb: int = Field(
        1024, ge=16, le=65_536, description="Scratch memory the engine builder may use, MiB."
    )
    opt_width: int = Field(
        1280, ge=16, le=8192, description="Width the engine is tuned for (the camera's)."
    )
    opt_height: int = Field(
        720, ge=16, le=8192, description="Height the engine is tuned for (the camera's)."
    )
    max_width: int = Field(
        1920, ge=16, le=8192, description="Widest frame the engine accepts, pixels."
    )
    max_height: int = Field(
        1088, ge=16, le=8192, description="Tallest frame the engine accepts, pixels."
    )
    engine_dir: Path | None = Field(
        None, description="Where built engines are cached; none: <agent.state_dir>/engines."
    )
    device: int = Field(0, ge=0, le=15, description="CUDA device index.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.precision == "int8" and self.calibration_dir is None:
            raise ValueError("precision 'int8' needs calibration_dir (a folder of frames)")
        if self.max_width < self.opt_width or self.max_height < self.opt_height:
            raise ValueError("max_width/max_height must be at least opt_width/opt_height")
        return self


EnhancerConfig = Annotated[
    PassthroughEnhancerConfig
    | ClassicalEnhancerConfig
    | OnnxRuntimeEnhancerConfig
    | TensorRtEnhancerConfig,
    Field(discriminator="type"),
]


def _default_chain() -> list[EnhancerConfig]:
    return [OnnxRuntimeEnhancerConfig(), ClassicalEnhancerConfig()]


ModelBackend = Literal["onnxruntime", "tensorrt"]
"""The backend types that run a model (the others need none): the one list, which the update
manifest's `backends` and the CLI's model checks take from here."""
MODEL_BACKENDS: frozenset[str] = frozenset(get_args(ModelBackend))
GATE_WORDS = frozenset({"none", "classical"})
"""Gating values that name no model: 'none' passes frames unchanged, 'classical' skips models."""
DEFAULT_GATING: dict[str, str] = {"rain": "none"}
"""Nothing on lens drops (the fan's job), `model` (fast-enhance) elsewhere. The restoration
model is opt-in (`low_light = "restore"`, `blur = "restore"`): on the held-out footage it does
not beat fast-enhance yet, and on a CPU it is too slow for the frame rate (models/restore)."""

_MODEL_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"  # the same as vehicle_agent.enhance.manifest
_CONDITION = r"^[a-z][a-z0-9_]{0,31}$"


class EnhanceHealthConfig(ConfigModel):
    max_latency_ms: float = Field(
        60.0,
        ge=1.0,
        le=60_000.0,
        description="A backend slower than this on a frame had a slow frame, milliseconds.",
    )
    slow_frames: int = Field(
        30,
        ge=1,
        le=100_000,
        description="Slow frames in a row after which a backend is demoted to the next one.",
    )
    promote_after_s: float = Field(
        30.0,
        ge=0.0,
        le=86_400.0,
        description="A demoted backend gets a health check this long after its demotion; "
        "passing it promotes it back.",
    )
    promote_max_s: float = Field(
        900.0,
        ge=0.0,
        le=86_400.0,
        description="Each failed health check doubles the wait before the next one, from "
        "promote_after_s up to this (never below promote_after_s), seconds.",
    )
    blank_std: float = Field(
        1.0,
        ge=0.0,
        le=64.0,
        description="Output whose pixel standard deviation is below this, from an input above "
        "it, is blank: the backend failed (0–255 scale).",
    )


class EnhanceConfig(ConfigModel):
    """`[enhance]`: the backend chain, the models and which one runs for which scene."""

    chain: list[EnhancerConfig] = Field(
        default_factory=_default_chain,
        min_length=1,
        max_length=8,
        description="Backends in order of preference (`[[enhance.chain]]` tables, each chosen by "
        "'type'); a backend that fails is demoted to the next one, and passthrough always ends "
        "the chain, so a frame always comes out.",
    )
    backend: EnhancerConfig = Field(
        default_factory=ClassicalEnhancerConfig,
        description="Short form: `[enhance.backend]` alone is a chain of that one backend. "
        "Not allowed together with `chain`.",
    )
    model: str = Field(
        "fast-enhance",
        pattern=_MODEL_NAME,
        description="Model that model backends run when `gating` names none for the scene "
        "condition (and before the first condition is known).",
    )
    gating: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_GATING),
        max_length=32,
        description="Scene condition (from the quality monitor: 'normal', 'low_light', 'fog', "
        "'rain', 'blur', …) → model name, 'classical' (no model: the chain's model-free "
        "backends) or 'none' (frames pass unchanged). Unlisted conditions run `model`.",
    )
    switch_after_frames: int = Field(
        3,
        ge=1,
        le=1000,
        description="A new condition must hold for this many analysed frames before the model "
        "switches (no flicker at a threshold).",
    )
    model_dirs: list[Path] = Field(
        default_factory=list,
        max_length=16,
        description="Extra model folders, searched with <agent.state_dir>/models (updates) and "
        "the models shipped with the package; the highest version of a name wins.",
    )
    health: EnhanceHealthConfig = Field(
        default_factory=EnhanceHealthConfig,
        description="When a backend is demoted and promoted back.",
    )
    guard: bool = Field(
        default=True,
        description="Check every model/classical output against its input and fall back towards "
        "the input where it is unlikely to help (the input was already good; the output darkens "
        "a frame that is not bright, clips, flattens, or amplifies noise); smoothed over a few "
        "frames. Off: outputs are shown as the backend gives them.",
    )

    @field_validator("gating")
    @classmethod
    def _gating_names(cls, table: dict[str, str]) -> dict[str, str]:
        for condition, choice in table.items():
            if not re.fullmatch(_CONDITION, condition):
                raise ValueError(f"condition {condition!r} must match {_CONDITION}")
            if not re.fullmatch(_MODEL_NAME, choice):
                raise ValueError(
                    f"{condition} = {choice!r}: a model name, 'classical' or 'none' "
                    f"(matching {_MODEL_NAME})"
                )
        return table

    @model_validator(mode="after")
    def _backend_is_a_chain_of_one(self) -> Self:
        if "backend" in self.model_fields_set:
            if "chain" in self.model_fields_set:
                raise ValueError("give either [enhance.backend] or [[enhance.chain]], not both")
            # Frozen model: set the derived field once, here, while it is being built.
            object.__setattr__(self, "chain", [self.backend])
        return self
