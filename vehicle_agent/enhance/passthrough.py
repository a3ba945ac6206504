"""Enhance stage backend `passthrough`: frames go out as they came in (the last resort of the chain)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from vehicle_agent.config_base import ConfigModel
from vehicle_agent.enhance.base import BackendPlugin, Enhancer
from vehicle_agent.records import Image


class PassthroughEnhancerConfig(ConfigModel):
    type: Literal["passthrough"] = Field(
        "passthrough", description="Frames go out as they came in."
    )


class PassthroughEnhancer(Enhancer):
    name = "passthrough"

    def __init__(self, config: Any = None) -> None:
        del config

    def _enhance(self, image: Image) -> Image:
        return image


PLUGIN = BackendPlugin(
    "passthrough",
    PassthroughEnhancerConfig,
    "vehicle_agent.enhance.passthrough:PassthroughEnhancer",
    runs_model=False,
    preference=3,
)
