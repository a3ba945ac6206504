"""The analyze stage's monitor: metrics of the picture shown, condition and adhesion of the raw
frame, BRISQUE carried between samples, and the pipeline emitting condition changes."""

from __future__ import annotations

import asyncio

import numpy as np

from tests.fakes import Step, scripted_factory
from tests.quality.footage import FPS, looped
from tests.test_pipeline import MemorySink
from vehicle_agent.catalogue import EVENT_TYPES
from vehicle_agent.config import parse_config
from vehicle_agent.enhance.passthrough import PassthroughEnhancer
from vehicle_agent.events import EventBus
from vehicle_agent.pipeline import Parts, Pipeline
from vehicle_agent.quality.monitor import MonitorSettings, QualityMonitor, settings_from_config
from vehicle_agent.records import AdhesionEstimate, Event, Image, QualityMetrics
from vehicle_agent.sim.hardware import SimulatedFan
from vehicle_agent.uplink.base import NoUplink


def test_metrics_come_from_the_shown_picture_and_the_condition_from_the_raw_frame() -> None:
    monitor = QualityMonitor(MonitorSettings(brisque=False))
    dark_raw = (looped(0) * 0.1).astype(np.uint8)
    brightened = looped(0)
    quality, adhesion = monitor.analyze(dark_raw, 0.0, brightened)
    assert quality is not None
    assert quality.brightness > 100  # the enhanced picture
    assert quality.condition == "low_light"  # the scene
    assert adhesion is not None
    assert not adhesion.detected


def test_the_scene_is_judged_before_enhance_and_analyze_reuses_its_copy() -> None:
    monitor = QualityMonitor(MonitorSettings(brisque=False, analysis_width=160))
    dark_raw = (looped(0) * 0.1).astype(np.uint8)
    scene = monitor.judge(dark_raw, 0.0)
    assert scene is not None
    assert scene.metrics.condition == "low_light"
    assert scene.small.colour.shape[1] == 160
    # Analyze takes the judged scene: the condition it reports is the one that gated enhance,
    # even when asked about another raw frame (the copy is not shrunk again).
    quality, adhesion = monitor.analyze(looped(0), 0.0, looped(0), scene=scene)
    assert quality is not None
    assert quality.condition == "low_light"
    assert quality.brightness > 100  # the picture shown
    assert adhesion is not None
    assert QualityMonitor(MonitorSettings(quality=False)).judge(dark_raw, 0.0) is None


def test_rain_before_enhance_comes_from_the_latest_analysed_lens_alarm() -> None:
    monitor = QualityMonitor(MonitorSettings(brisque=False, condition_hold_s=0.0))
    frame = looped(0)
    scene = monitor.judge(frame, 0.0)
    assert scene is not None
    assert scene.metrics.condition != "rain"

    class Soiled:
        def update(self, grey: object, t: float) -> AdhesionEstimate:
            del grey, t
            return AdhesionEstimate(score=0.9, covered_fraction=0.2, detected=True)

    monitor.detector = Soiled()  # type: ignore[assignment]
    monitor.analyze(frame, 0.0, scene=scene)  # this frame's lens alarm is up
    scene = monitor.judge(frame, 0.1)
    assert scene is not None
    assert scene.metrics.condition == "rain"


def test_the_shown_metrics_function_is_the_one_passed_in() -> None:
    calls: list[int] = []

    def fake(image: Image, width: int) -> QualityMetrics:
        calls.append(width)
        return QualityMetrics(1.0, 2.0, 3.0)

    monitor = QualityMonitor(MonitorSettings(brisque=False, analysis_width=160))
    quality, _ = monitor.analyze(looped(0), 0.0, looped(1), fake)
    assert calls == [160]
    assert quality is not None
    assert (quality.brightness, quality.condition) == (1.0, "normal")


def test_disabled_parts_are_not_computed() -> None:
    frame = looped(0)
    assert QualityMonitor(MonitorSettings(quality=False, adhesion=False)).analyze(frame, 0.0) == (
        None,
        None,
    )
    quality, adhesion = QualityMonitor(MonitorSettings(adhesion=False, brisque=False)).analyze(
        frame, 0.0
    )
    assert quality is not None
    assert adhesion is None
    quality, adhesion = QualityMonitor(MonitorSettings(quality=False)).analyze(frame, 0.0)
    assert quality is None
    assert adhesion is not None


def test_the_brisque_score_is_sampled_and_carried_between_samples() -> None:
    monitor = QualityMonitor(MonitorSettings(brisque_interval_s=1.0))
    assert monitor.brisque is not None
    scores = iter([40.0, 41.0, 42.0])
    monitor.brisque.unavailable = None
    monitor.brisque.score = lambda _grey: next(scores)  # type: ignore[method-assign,assignment]
    seen = []
    for i in range(25):
        quality, _ = monitor.analyze(looped(i), i / FPS)
        assert quality is not None
        seen.append(quality.brisque)
    assert seen == [40.0] * 10 + [41.0] * 10 + [42.0] * 5


def test_the_config_reaches_the_monitor() -> None:
    config = parse_config(
        {
            "quality": {"analysis_width": 240, "low_light_enter": 40, "brisque": False},
            "adhesion": {"grid_cols": 30, "confirm_s": 0.8},
        }
    )
    settings = settings_from_config(config.quality, config.adhesion)
    assert settings.analysis_width == 240
    assert settings.thresholds.low_light_enter == 40
    assert not settings.brisque
    assert settings.adhesion_params.grid_cols == 30
    assert settings.adhesion_params.confirm_s == 0.8


async def test_the_pipeline_emits_scene_condition_changes_from_the_event_loop() -> None:
    steps = [Step("frame", 150)] * 20 + [Step("frame", 10)] * 30 + [Step("frame", 150)] * 30
    factory, _ = scripted_factory(steps, live=False, fps=10.0)
    bus = EventBus(EVENT_TYPES)
    seen: list[Event] = []
    bus.subscribe(seen.append)
    parts = Parts(
        open_source=factory,
        enhancer=PassthroughEnhancer(),
        fan=SimulatedFan(),
        uplink=NoUplink(),
        sinks=[MemorySink()],
        events=bus,
    )
    config = parse_config(
        {"capture": {"on_end": "stop", "pacing": "max"}, "quality": {"brisque": False}}
    )
    result = await Pipeline(config, parts, lossless=True).run(asyncio.Event())
    assert result.frames_out == 80
    changes = [e for e in seen if e.type == "scene_condition_changed"]
    # Featureless bright frames read as fog; dark ones as low light, once each way.
    assert [(e.data["previous"], e.data["condition"]) for e in changes] == [
        ("fog", "low_light"),
        ("low_light", "fog"),
    ]
    assert 2.0 <= changes[0].t <= 2.5
    assert 5.0 <= changes[1].t <= 6.1
    assert changes[0].frame is not None
