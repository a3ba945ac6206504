"""Enhance stage: the `[enhance]` config models (chain, gating, health), beside the code they
set (`vehicle_agent.config` composes them into `Config`). Each backend's own config model lives
in its plugin module (`enhance.backends`); the chain's union of them is made from the plugins."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeAlias, Union

from pydantic import Field, field_validator, model_validator

from vehicle_agent.compat import Self
from vehicle_agent.config_base import ConfigModel
from vehicle_agent.enhance.backends import CONFIG_MODELS, MODEL_BACKEND_KEYS
from vehicle_agent.enhance.classical import ClassicalEnhancerConfig
from vehicle_agent.enhance.onnxruntime_backend import OnnxRuntimeEnhancerConfig
from vehicle_agent.enhance.passthrough import PassthroughEnhancerConfig
from vehicle_agent.enhance.tensorrt_plan import TensorRtEnhancerConfig

__all__ = [
    "MODEL_BACKENDS",
    "ClassicalEnhancerConfig",
    "EnhanceConfig",
    "EnhanceHealthConfig",
    "EnhancerConfig",
    "ModelBackend",
    "OnnxRuntimeEnhancerConfig",
    "PassthroughEnhancerConfig",
    "TensorRtEnhancerConfig",
]


if TYPE_CHECKING:
    # For the type checker; at run time the union is made from the plugins (a test holds the
    # two to the same models).
    EnhancerConfig: TypeAlias = (
        PassthroughEnhancerConfig
        | ClassicalEnhancerConfig
        | OnnxRuntimeEnhancerConfig
        | TensorRtEnhancerConfig
    )
    ModelBackend: TypeAlias = str
else:
    EnhancerConfig = Annotated[Union[CONFIG_MODELS], Field(discriminator="type")]  # noqa: UP007
    ModelBackend = Literal[MODEL_BACKEND_KEYS]


def _default_chain() -> list[EnhancerConfig]:
    return [OnnxRuntimeEnhancerConfig(), ClassicalEnhancerConfig()]


MODEL_BACKENDS: frozenset[str] = frozenset(MODEL_BACKEND_KEYS)
"""The backend types that run a model (the others need none), from the plugins: the update
manifest's `backends` (`ModelBackend`) and the CLI's model checks take them from here."""
GATE_WORDS = frozenset({"none", "classical"})
"""Gating values that name no model: 'none' passes frames unchanged, 'classical' skips models."""
DEFAULT_GATING: dict[str, str] = {"rain": "none", "low_light": "restore"}
"""Nothing on lens drops (the fan's job), the restoration model on low light, `model`
(fast-enhance) elsewhere. Low light goes to `restore` since it runs at a third of the resolution
with guided upsampling (models/restore): on the train split the chain gains on low light with it
(docs/benchmarks.md); where it is too slow or missing, the chain gives those frames the default
model (`EnhancerChain.candidates_for`). Blur stays with fast-enhance, which leaves it alone:
restore is below the input on motion blur + noise."""

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
