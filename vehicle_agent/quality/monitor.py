"""Analyze stage: `QualityMonitor`, everything the analyze stage keeps between frames (pure).

Per frame: `judge` shrinks the raw frame once, before enhance, and classifies the scene
condition on it (the condition travels on the record and gates that frame's model); `analyze`
reuses that copy for the adhesion detector (both judge the scene as the camera sees it, so
enhancement never feeds back into them), and gives the picture the vehicle shows (the enhanced
frame) its own metrics and, once per `brisque_interval_s`, a BRISQUE score. The enhance stage's
thread drives `judge`, the analyze stage's `analyze`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vehicle_agent.quality.adhesion import AdhesionDetector
from vehicle_agent.quality.brisque import BrisqueScorer
from vehicle_agent.quality.condition import (
    DEFAULT_THRESHOLDS,
    ConditionThresholds,
    ConditionTracker,
)
from vehicle_agent.quality.metrics import compute_quality, downscale_grey, measure, prepare
from vehicle_agent.quality.settings import AdhesionConfig
from vehicle_agent.quality.soilnet import DecisionParams, LearnedAdhesionDetector
from vehicle_agent.records import (
    AdhesionEstimate,
    AnalysisImage,
    FrameRecord,
    Grey,
    Image,
    QualityMetrics,
    Scene,
)

if TYPE_CHECKING:
    from vehicle_agent.quality.settings import QualityConfig

OutputMetrics = Callable[[Image, int], QualityMetrics]
logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    """What the monitor computes (`[quality]` and `[adhesion]` in the config)."""

    analysis_width: int = 320
    quality: bool = True
    adhesion: bool = True
    brisque: bool = True
    brisque_interval_s: float = 1.0
    brisque_model_dir: Path | None = None
    condition_hold_s: float = 1.0
    low_light_hold_s: float = 0.2
    thresholds: ConditionThresholds = DEFAULT_THRESHOLDS
    adhesion_params: AdhesionConfig = field(default_factory=AdhesionConfig)
    detector: str = "classical"
    """'classical' (the tile heuristic) or 'learned' (the soiling tile network)."""
    detector_model: str = "soilnet"
    detector_runtime: str = "onnxruntime"
    detector_every: int = 2
    model_dirs: tuple[Path, ...] = ()
    """Where the learned detector's model is looked for; empty: the shipped `models/`."""


def settings_from_config(quality: QualityConfig, adhesion: AdhesionConfig) -> MonitorSettings:
    """The monitor `[quality]` and `[adhesion]` ask for."""
    return MonitorSettings(
        analysis_width=quality.analysis_width,
        quality=quality.enabled,
        adhesion=adhesion.enabled,
        brisque=quality.brisque,
        brisque_interval_s=quality.brisque_interval_s,
        brisque_model_dir=quality.brisque_model_dir,
        condition_hold_s=quality.condition_hold_s,
        low_light_hold_s=quality.low_light_hold_s,
        thresholds=dataclasses.replace(
            DEFAULT_THRESHOLDS,
            low_light_enter=quality.low_light_enter,
            low_light_exit=quality.low_light_exit,
        ),
        adhesion_params=adhesion,
        detector=adhesion.detector,
        detector_model=adhesion.model,
        detector_runtime=adhesion.runtime,
        detector_every=adhesion.every_n_frames,
    )


class QualityMonitor:
    """Quality metrics with the scene condition, and the lens adhesion estimate, per frame."""

    def __init__(self, settings: MonitorSettings | None = None) -> None:
        self.settings = s = settings or MonitorSettings()
        self.detector_label = "none"
        """What finds soiling: 'soilnet@1.0.0 (onnxruntime)', 'classical' or 'none'."""
        self.detector_fallback: str | None = None
        """Why the learned detector could not be used, when it could not."""
        self.learned: LearnedAdhesionDetector | None = None
        self.detector = AdhesionDetector(s.adhesion_params) if s.adhesion else None
        if s.adhesion:
            self.detector_label = "classical"
            if s.detector == "learned":
                self._open_learned()
        self.conditions = ConditionTracker(s.thresholds, s.condition_hold_s, s.low_light_hold_s)
        self._conditions_lock = threading.Lock()
        self.brisque = (
            BrisqueScorer(s.brisque_model_dir, s.brisque_interval_s) if s.brisque else None
        )
        # Start-up work here, not on the first frame: OpenCV's first calls are slow, and the
        # BRISQUE model is loaded (or found missing) once.
        self._warm_up()
        if self.brisque is not None:
            self.brisque.load()
        self._brisque_latest: float | None = None
        self._lens_soiled = False
        """The latest analysed frame's adhesion alarm ('rain' for `judge`)."""

    def _open_learned(self) -> None:
        """The learned detector from its model folder; on failure the classical one stays, with
        the reason logged and kept (`detector_fallback`)."""
        # The runtime module is imported here: it reaches onnxruntime (lazily) through enhance/.
        from vehicle_agent.enhance.store import shipped_models_dir  # noqa: PLC0415
        from vehicle_agent.quality import soilnet_runtime as rt  # noqa: PLC0415

        s = self.settings
        dirs = list(s.model_dirs) or [shipped_models_dir()]
        try:
            model = rt.find_detector(s.detector_model, dirs)
            net = rt.open_tile_net(model, s.detector_runtime)  # type: ignore[arg-type]
        except rt.DetectorError as exc:
            self.detector_fallback = str(exc)
            logger.warning("learned soiling detector unavailable, using the classical one: %s", exc)
            return
        p = s.adhesion_params
        decision = DecisionParams(
            on=model.manifest.decision.on,
            off=model.manifest.decision.off,
            alarm_fraction=p.alarm_fraction,
            clear_fraction=p.clear_fraction,
        )
        self.learned = LearnedAdhesionDetector(
            net, decision, net_width=model.manifest.net_width, every=s.detector_every
        )
        self.detector = None
        self.detector_label = f"{model.manifest.label} ({s.detector_runtime})"

    def _warm_up(self) -> None:
        rng = np.random.default_rng(0)
        frame = rng.integers(0, 256, (96, 128, 3), np.uint8)
        scratch = AdhesionDetector(self.settings.adhesion_params)
        for t in (0.0, 0.1):
            scratch.update(prepare(frame).grey, t)
        measure(prepare(frame))

    def judge(self, raw: Image, t: float) -> Scene | None:
        """The raw frame at video time `t`, before enhance: shrunk once, measured, and its
        scene condition (with hysteresis), which gates the enhancer for this very frame. None
        when `[quality]` is off.

        'rain' comes from the lens: the adhesion alarm of the latest analysed frame (the
        detector confirms over seconds, so the frames between matter little). The pipeline
        calls `judge` on the enhance stage's thread and `analyze` on the analyze stage's; that
        flag is all they share."""
        s = self.settings
        if not s.quality:
            return None
        return self._judge(prepare(raw, s.analysis_width), t, self._lens_soiled)

    def _judge(self, small: AnalysisImage, t: float, lens_soiled: bool) -> Scene:
        metrics = measure(small)
        # Locked: a frame whose enhance step failed reaches `analyze` unjudged and is judged
        # on the analyze thread while the enhance thread judges the next one.
        with self._conditions_lock:
            condition = self.conditions.update(metrics, t, adhesion_detected=lens_soiled)
        return Scene(small, dataclasses.replace(metrics, condition=condition))

    def on_record(
        self, record: FrameRecord, output_metrics: OutputMetrics = compute_quality
    ) -> FrameRecord:
        """The analyze stage's work: the record with the quality of the picture it shows and
        the adhesion estimate of its raw frame (on the scene judged before enhance)."""
        frame = record.frame
        quality, adhesion = self.analyze(
            frame.image, frame.t_video, record.enhanced, output_metrics, scene=record.scene
        )
        return record.replace(quality=quality, adhesion=adhesion)

    def analyze(
        self,
        raw: Image,
        t: float,
        shown: Image | None = None,
        output_metrics: OutputMetrics = compute_quality,
        scene: Scene | None = None,
    ) -> tuple[QualityMetrics | None, AdhesionEstimate | None]:
        """Metrics of `shown` (the enhanced picture; None: the raw frame is shown) and the
        adhesion estimate of `raw`, for the frame at video time `t`. `scene` is what `judge`
        made of `raw` before enhance; without it (a caller with no enhance step) the raw frame
        is judged here, with this frame's adhesion."""
        s = self.settings
        if not s.quality and self.detector is None and self.learned is None:
            return None, None
        small = prepare(raw, s.analysis_width) if scene is None else scene.small
        adhesion = None
        if self.learned is not None:
            adhesion = self.learned.update(small.colour, t)
        elif self.detector is not None:
            adhesion = self.detector.update(small.grey, t)
        self._lens_soiled = adhesion is not None and adhesion.detected
        if not s.quality:
            return None, adhesion
        if scene is None:
            scene = self._judge(small, t, self._lens_soiled)
        grey: Grey | None = None
        if shown is None:
            metrics, grey = scene.metrics, small.grey
        else:
            metrics = dataclasses.replace(
                output_metrics(shown, s.analysis_width), condition=scene.metrics.condition
            )
        if self.brisque is not None and self.brisque.due(t):
            if grey is None and shown is not None:
                grey = downscale_grey(shown, s.analysis_width)
            if grey is not None:
                self._brisque_latest = self.brisque.update(grey, t)
        return dataclasses.replace(metrics, brisque=self._brisque_latest), adhesion
