"""The runtime in the pipeline: the condition judged on the raw frame gates it (events emitted on
the event loop), a hot swap between frames loses none, and the default chain works without a
model."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.enhance.helpers import FakeClock, Script, ScriptedConfig, factory, model_dir
from tests.fakes import Step, scripted_factory
from vehicle_agent import pipeline as pipeline_module
from vehicle_agent.catalogue import EVENT_TYPES
from vehicle_agent.config import ClassicalEnhancerConfig, EnhanceHealthConfig, parse_config
from vehicle_agent.enhance.chain import BackendSpec, EnhancerChain, Gate, build_enhancer
from vehicle_agent.enhance.passthrough import PassthroughEnhancer
from vehicle_agent.enhance.store import ModelStore
from vehicle_agent.events import EventBus
from vehicle_agent.output.sinks import FrameSink
from vehicle_agent.pipeline import Parts, Pipeline
from vehicle_agent.records import Event, FrameRecord, Image, QualityMetrics
from vehicle_agent.sim.hardware import SimulatedFan
from vehicle_agent.uplink.base import NoUplink


@dataclasses.dataclass(frozen=True, slots=True)
class ConditionQuality(QualityMetrics):
    """Quality metrics with the scene condition the quality monitor will add."""

    condition: str = "normal"


def fake_quality(image: Image, analysis_width: int = 320) -> QualityMetrics:
    del analysis_width
    brightness = float(image.mean())
    return ConditionQuality(brightness, 0.0, 0.0, "low_light" if brightness < 50 else "normal")


class Sink(FrameSink):
    def __init__(self) -> None:
        self.records: list[FrameRecord] = []
        self.on_write: list[object] = []

    def write(self, record: FrameRecord) -> None:
        self.records.append(record)
        for hook in self.on_write:
            hook(record)  # type: ignore[operator]

    def close(self) -> None:
        pass


def chain(
    models: Path, table: dict[str, str], model: str = "tiny", gain: float = 0.5
) -> EnhancerChain:
    return EnhancerChain(
        [
            BackendSpec("scripted", ScriptedConfig(Script(), gain=gain), needs_model=True),
            BackendSpec("classical", ClassicalEnhancerConfig(), needs_model=False),
        ],
        Gate(model, table, switch_after=1),
        ModelStore([models]),
        EnhanceHealthConfig(max_latency_ms=10_000.0),
        clock=FakeClock(),
        factory=factory,
        guard=None,  # the scripted model darkens; these tests follow frames, not their quality
    )


def pipeline(
    steps: list[Step], enhancer: object
) -> tuple[Pipeline, Sink, list[tuple[Event, bool]]]:
    source, _ = scripted_factory(steps, live=False)
    bus = EventBus(EVENT_TYPES)
    seen: list[tuple[Event, bool]] = []
    bus.subscribe(lambda e: seen.append((e, threading.current_thread() is threading.main_thread())))
    sink = Sink()
    parts = Parts(
        open_source=source,
        enhancer=enhancer,  # type: ignore[arg-type]
        fan=SimulatedFan(),
        uplink=NoUplink(),
        sinks=[sink],
        events=bus,
    )
    config = parse_config({"capture": {"on_end": "stop"}})
    return Pipeline(config, parts, lossless=True), sink, seen


async def test_the_analysed_condition_gates_the_next_frames_and_events_come_from_the_loop(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline_module, "compute_quality", fake_quality)
    steps = [Step("frame", 200)] * 10 + [Step("frame", 10)] * 20
    runtime = chain(models, {"low_light": "none"})
    pipe, sink, seen = pipeline(steps, runtime)
    result = await pipe.run(asyncio.Event())
    assert result.frames_out == 30
    labels = [r.enhancer for r in sink.records]
    assert labels[:10] == ["scripted:tiny"] * 10
    assert labels[-5:] == ["passthrough"] * 5  # nothing runs once the scene is 'low_light'
    assert pipe.condition == "low_light"
    swaps = [e for e, _ in seen if e.type == "model_swapped"]
    assert [(e.data["current"], e.data["reason"], e.data["condition"]) for e in swaps] == [
        ("passthrough", "condition", "low_light")
    ]
    assert swaps[0].frame is not None
    assert swaps[0].frame >= 10
    assert all(on_loop for _, on_loop in seen)
    assert [e.type for e, _ in seen].count("model_loaded") == 1


async def test_a_hot_swap_happens_between_frames_and_loses_none(tmp_path: Path) -> None:
    models = tmp_path / "models"
    model_dir(models, "tiny")
    model_dir(models, "sharp", "2")
    first, second = chain(models, {}), chain(models, {}, model="sharp", gain=0.25)
    await asyncio.to_thread(second.load)  # loaded and warm before the swap, as reload does
    steps = [Step("frame", 120)] * 40
    pipe, sink, seen = pipeline(steps, first)

    def swap_at_10(record: FrameRecord) -> None:
        if record.frame.seq == 10:
            pipe.replace_enhancer(second)

    sink.on_write.append(swap_at_10)
    result = await pipe.run(asyncio.Event())
    assert result.frames_in == result.frames_out == 40
    labels = [r.enhancer for r in sink.records]
    switch = labels.index("scripted:sharp")
    # One change point, and every frame enhanced by one model or the other: none lost, none raw.
    assert labels == ["scripted:tiny"] * switch + ["scripted:sharp"] * (40 - switch)
    assert np.all(sink.records[-1].output == np.uint8(30))  # 120 × 0.25
    swapped = [e for e, _ in seen if e.type == "model_swapped"]
    assert [(e.data["previous"], e.data["current"], e.data["reason"]) for e in swapped] == [
        ("scripted:tiny", "scripted:sharp", "replaced")
    ]
    assert first.closed


async def test_the_default_chain_runs_classical_when_its_model_is_absent(tmp_path: Path) -> None:
    config = parse_config(
        {"enhance": {"model": "absent-model", "gating": {}}, "capture": {"on_end": "stop"}}
    )
    runtime = build_enhancer(config.enhance, tmp_path / "state")
    pipe, sink, seen = pipeline([Step("frame", 30)] * 5, runtime)
    result = await pipe.run(asyncio.Event())
    assert result.frames_out == 5
    assert {r.enhancer for r in sink.records} == {"classical"}
    demoted = [e for e, _ in seen if e.type == "enhancer_demoted"]
    assert len(demoted) == 1
    assert demoted[0].data["backend"] == "onnxruntime"
    assert "model 'absent-model' not found" in str(demoted[0].data["reason"])


async def test_the_condition_judged_on_a_raw_frame_gates_that_same_frame() -> None:
    """No lag: the first dark frame is enhanced knowing it is dark (the condition travels on
    the record, judged before enhance), and every record carries the condition that gated it."""
    seen: list[str | None] = []

    class Recording(PassthroughEnhancer):
        def set_condition(self, condition: str | None) -> None:
            seen.append(condition)

    steps = [Step("frame", 200)] * 5 + [Step("frame", 10)] * 5
    pipe, sink, _ = pipeline(steps, Recording())
    pipe.monitor.conditions.low_light_hold_s = 0.0  # dark is dark from its first frame
    result = await pipe.run(asyncio.Event())
    assert result.frames_out == 10
    gated = [r.condition for r in sink.records if r.condition is not None]
    assert seen == gated
    assert gated[5] == "low_light"
    assert all(
        r.quality is not None and r.quality.condition == c
        for r, c in zip(sink.records, gated, strict=True)
    )
