"""Enhance stage backend `passthrough`: frames go out as they came in (the last resort of the chain)."""

from __future__ import annotations

from typing import Any

from vehicle_agent.enhance.base import Enhancer
from vehicle_agent.records import Image


class PassthroughEnhancer(Enhancer):
    name = "passthrough"

    def __init__(self, config: Any = None) -> None:
        del config

    def _enhance(self, image: Image) -> Image:
        return image
