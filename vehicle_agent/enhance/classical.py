"""Enhance stage backend `classical`: gamma for dark frames plus CLAHE on luma; no model needed."""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from vehicle_agent.config_base import ConfigModel
from vehicle_agent.enhance.base import BackendPlugin, Enhancer
from vehicle_agent.records import Image


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


class ClassicalEnhancer(Enhancer):
    """A gamma that lifts dark frames, then local contrast from CLAHE, both on the Y of YCrCb.

    The gamma is chosen per frame so the mean luma moves towards `target_brightness`, never
    darkening and never brightening beyond `max_gamma_gain`, which keeps bright scenes untouched.
    YCrCb rather than Lab: its integer conversions cost a third as much at 720p (3.4 ms against
    12.6 ms round trip here), and chroma is left as it was either way.
    """

    name = "classical"

    def __init__(self, config: ClassicalEnhancerConfig | None = None) -> None:
        self.config = config or ClassicalEnhancerConfig()
        grid = self.config.tile_grid
        self._clahe = cv2.createCLAHE(clipLimit=self.config.clip_limit, tileGridSize=(grid, grid))
        self._index = np.arange(256, dtype=np.float32) / 255.0

    def gamma_for(self, mean_luma: float) -> float:
        """Exponent applied to normalised luma: ≤ 1 (brightens) for frames darker than the target."""
        target = self.config.target_brightness / 255.0
        mean = min(max(mean_luma / 255.0, 1e-3), 0.999)
        if mean >= target:
            return 1.0
        gamma = math.log(target) / math.log(mean)
        return max(gamma, 1.0 / self.config.max_gamma_gain)

    def _enhance(self, image: Image) -> Image:
        ycc = cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb)
        luma = np.ascontiguousarray(ycc[:, :, 0])
        gamma = self.gamma_for(float(cv2.mean(luma)[0]))
        if gamma != 1.0:
            lut = np.clip(np.power(self._index, gamma) * 255.0 + 0.5, 0, 255).astype(np.uint8)
            luma = cv2.LUT(luma, lut)
        ycc[:, :, 0] = self._clahe.apply(luma)
        return np.asarray(cv2.cvtColor(ycc, cv2.COLOR_YCrCb2BGR), dtype=np.uint8)


PLUGIN = BackendPlugin(
    "classical",
    ClassicalEnhancerConfig,
    "vehicle_agent.enhance.classical:ClassicalEnhancer",
    runs_model=False,
    preference=2,
)
