"""Analyze stage: `BrisqueScorer`, OpenCV's no-reference BRISQUE score with Debian's model files.

`cv2.quality` comes with opencv-contrib; its model files do not: Debian's `opencv-data` installs
them in /usr/share/opencv4/quality. Without them (or without cv2.quality) the score is None and
one log line says why. BRISQUE costs about 5 ms at 320×180 on one core, so the monitor scores
one frame per `interval_s` of video time and carries the last score in between.

Lower is better (roughly 0–100); it is a generic score and does not tell lens soiling apart
(see `vehicle_agent.quality.adhesion` for that).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

MODEL_FILE = "brisque_model_live.yml"
RANGE_FILE = "brisque_range_live.yml"
ENV_DIR = "VEHICLE_AGENT_BRISQUE_DIR"
"""Environment variable naming a folder with the two model files (tried first)."""
DEFAULT_DIRS = (Path("/usr/share/opencv4/quality"), Path("/usr/share/opencv/quality"))


def find_model_dir(directory: Path | None = None) -> Path | None:
    """The first folder holding both model files: `directory`, $VEHICLE_AGENT_BRISQUE_DIR,
    then Debian's locations."""
    candidates: list[Path] = []
    if directory is not None:
        candidates.append(directory)
    if os.environ.get(ENV_DIR):
        candidates.append(Path(os.environ[ENV_DIR]))
    candidates.extend(DEFAULT_DIRS)
    for folder in candidates:
        if (folder / MODEL_FILE).is_file() and (folder / RANGE_FILE).is_file():
            return folder
    return None


class BrisqueScorer:
    """BRISQUE on a grey image, at most once per `interval_s` of video time (0: every frame).

    Loads lazily on first use; when it cannot, logs one line and scores None from then on.
    One thread drives it.
    """

    def __init__(self, model_dir: Path | None = None, interval_s: float = 1.0) -> None:
        self.model_dir = model_dir
        self.interval_s = interval_s
        self.unavailable: str | None = None
        """Why there is no score (None while it works or before it was tried)."""
        self._model: Any = None
        self._last_t: float | None = None
        self._last: float | None = None

    def load(self) -> bool:
        """Load the model now (and score a blank image once), so the first frame does not pay
        for it; False when BRISQUE is unavailable (logged once)."""
        model = self._load()
        if model is not None:
            model.compute(np.zeros((64, 64), np.uint8))
        return model is not None

    def _load(self) -> Any:
        if self._model is not None or self.unavailable is not None:
            return self._model
        folder = find_model_dir(self.model_dir)
        try:
            import cv2  # noqa: PLC0415

            quality: Any = getattr(cv2, "quality", None)
            if quality is None:
                self.unavailable = "cv2.quality is missing (install opencv-contrib)"
            elif folder is None:
                searched = ", ".join(
                    str(p) for p in (self.model_dir, os.environ.get(ENV_DIR), *DEFAULT_DIRS) if p
                )
                self.unavailable = (
                    f"model files {MODEL_FILE}, {RANGE_FILE} not found in {searched} "
                    "(install Debian's opencv-data)"
                )
            else:
                self._model = quality.QualityBRISQUE_create(
                    str(folder / MODEL_FILE), str(folder / RANGE_FILE)
                )
        except Exception as exc:  # a corrupt model file must not stop the analysis
            self.unavailable = f"cannot load the model: {type(exc).__name__}: {exc}"
        if self.unavailable is not None:
            logger.warning("BRISQUE score unavailable: %s", self.unavailable)
        return self._model

    def score(self, grey: npt.NDArray[np.uint8]) -> float | None:
        """BRISQUE of `grey` now, or None when unavailable."""
        model = self._load()
        if model is None:
            return None
        value = model.compute(grey)
        return float(value[0])

    def due(self, t: float) -> bool:
        """Whether a frame at video time `t` should be scored (or the last score reused)."""
        return (
            self._last_t is None or t < self._last_t or t - self._last_t >= self.interval_s
        ) and self.unavailable is None

    def update(self, grey: npt.NDArray[np.uint8], t: float) -> float | None:
        """Score `grey` when due, else the latest score."""
        if self.due(t):
            self._last = self.score(grey)
            self._last_t = t
        return self._last
