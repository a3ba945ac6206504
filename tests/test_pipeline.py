"""The pipeline: every frame out at max speed, drops counted when a stage is slow, failures
degrade instead of killing the daemon, shutdown drains and leaves the fan safe."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np

from tests.fakes import frames, scripted_factory
from vehicle_agent.catalogue import EVENT_TYPES
from vehicle_agent.config import Config, parse_config
from vehicle_agent.enhance import Enhancer
from vehicle_agent.enhance.passthrough import PassthroughEnhancer
from vehicle_agent.events import EventBus
from vehicle_agent.output.sinks import FrameSink
from vehicle_agent.pipeline import Parts, Pipeline
from vehicle_agent.records import Event, FrameRecord, Image
from vehicle_agent.sim.hardware import SimulatedFan
from vehicle_agent.uplink.base import NoUplink


class MemorySink(FrameSink):
    def __init__(self) -> None:
        self.records: list[FrameRecord] = []
        self.closed = False

    def write(self, record: FrameRecord) -> None:
        self.records.append(record)

    def close(self) -> None:
        self.closed = True


class SlowEnhancer(Enhancer):
    name = "slow"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def load(self) -> None:
        pass

    def _enhance(self, image: Image) -> Image:
        time.sleep(self.seconds)
        return image


class FlakyEnhancer(Enhancer):
    """Fails on frames 3..5, then recovers; returns an inverted frame when it works."""

    name = "flaky"

    def __init__(self) -> None:
        self.calls = 0

    def load(self) -> None:
        pass

    def _enhance(self, image: Image) -> Image:
        self.calls += 1
        if 3 <= self.calls <= 5:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return np.asarray(255 - image, dtype=np.uint8)


def build(
    config: Config, script_len: int, enhancer: Enhancer, *, live: bool, lossless: bool
) -> tuple[Pipeline, MemorySink, list[Event], SimulatedFan]:
    factory, _ = scripted_factory(frames(script_len), live=live)
    sink = MemorySink()
    bus = EventBus(EVENT_TYPES)
    seen: list[Event] = []
    bus.subscribe(seen.append)
    fan = SimulatedFan()
    parts = Parts(
        open_source=factory,
        enhancer=enhancer,
        fan=fan,
        uplink=NoUplink(),
        sinks=[sink],
        events=bus,
    )
    return Pipeline(config, parts, lossless=lossless), sink, seen, fan


async def test_lossless_replay_delivers_every_frame_in_order_through_every_stage() -> None:
    config = parse_config({"capture": {"on_end": "stop"}})
    pipeline, sink, events, fan = build(
        config, 50, PassthroughEnhancer(), live=False, lossless=True
    )
    result = await pipeline.run(asyncio.Event())
    assert result.frames_in == result.frames_out == 50
    assert result.frames_dropped == 0
    assert [r.frame.seq for r in sink.records] == list(range(50))
    record = sink.records[0]
    assert [stage for stage, _ in record.latency] == ["enhance", "analyze", "act", "uplink"]
    assert record.quality is not None
    assert record.actuation is not None
    assert record.actuation.fan_duty == 0.0
    assert sink.closed
    assert events[0].type == "pipeline_started"
    assert [e.type for e in events][-2:] == ["actuator_safe_state", "pipeline_stopped"]
    assert fan.history[-1] == 0.0


async def test_a_slow_stage_drops_oldest_frames_and_counts_them() -> None:
    config = parse_config({"pipeline": {"queue_size": 2}, "capture": {"on_end": "stop"}})
    pipeline, sink, _, _ = build(config, 200, SlowEnhancer(0.005), live=True, lossless=False)
    result = await pipeline.run(asyncio.Event())
    assert result.frames_in == 200
    assert result.frames_dropped > 0
    # Nothing vanishes unaccounted: every frame either came out or was counted as dropped.
    assert result.frames_out + result.frames_dropped == result.frames_in
    seqs = [r.frame.seq for r in sink.records]
    assert seqs == sorted(seqs)
    # The slow enhancer drops at its input; the analysis after it may drop some too.
    assert result.drops_by_queue["capture->enhance"] > 0
    assert sum(result.drops_by_queue.values()) == result.frames_dropped


async def test_a_failing_enhancer_degrades_and_recovers_without_losing_frames() -> None:
    config = parse_config({"capture": {"on_end": "stop"}})
    pipeline, sink, events, _ = build(config, 10, FlakyEnhancer(), live=False, lossless=True)
    result = await pipeline.run(asyncio.Event())
    assert result.frames_out == 10
    assert result.stage_failures["enhance"] == 3
    types = [e.type for e in events]
    assert types.count("stage_degraded") == 1
    assert types.count("stage_recovered") == 1
    degraded = next(e for e in events if e.type == "stage_degraded")
    assert "illegal memory access" in str(degraded.data["error"])
    # The failed frames went on as raw pictures; the others were enhanced.
    assert [r.enhanced is None for r in sink.records] == [False] * 2 + [True] * 3 + [False] * 5


async def test_stop_drains_within_the_shutdown_timeout_and_leaves_the_fan_safe() -> None:
    config = parse_config({"capture": {"on_end": "loop"}})
    pipeline, sink, events, fan = build(config, 5, PassthroughEnhancer(), live=True, lossless=False)
    fan.set_duty(0.8)  # as if a cleaning burst were running when the stop came
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    while len(sink.records) < 20:  # noqa: ASYNC110 - the sink is written from a thread
        await asyncio.sleep(0.01)
    started = time.monotonic()
    stop.set()
    result = await asyncio.wait_for(task, 5)
    assert time.monotonic() - started < 5
    assert result.stop_reason == "signal"
    assert fan.duty == 0.0
    assert sink.closed
    assert events[-1].type == "pipeline_stopped"
    assert events[-1].data["reason"] == "signal"


async def test_a_stage_that_hangs_is_cancelled_at_the_shutdown_timeout() -> None:
    config = parse_config({"capture": {"on_end": "loop"}, "pipeline": {"shutdown_timeout_s": 0.5}})
    pipeline, sink, events, fan = build(config, 5, SlowEnhancer(2.0), live=True, lossless=False)
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.wait_for(task, 5)
    forced = [e for e in events if e.type == "shutdown_forced"]
    assert forced
    assert "enhance" in str(forced[0].data["pending"])
    assert fan.duty == 0.0
    assert sink.closed


async def test_stop_during_a_long_model_load_does_not_wait_for_it() -> None:
    class SlowLoad(PassthroughEnhancer):
        def load(self) -> None:
            time.sleep(3)

    config = parse_config({"capture": {"on_end": "loop"}})
    pipeline, _, events, fan = build(config, 5, SlowLoad(), live=True, lossless=False)
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    await asyncio.sleep(0.1)
    stop.set()
    result = await asyncio.wait_for(task, 1.5)
    assert result.stop_reason == "signal"
    assert result.frames_in == 0
    assert events[-1].type == "pipeline_stopped"
    assert fan.duty == 0.0


async def test_a_fan_that_cannot_open_leaves_the_pipeline_running(tmp_path: Path) -> None:
    """Issue 22: a fan driver that fails to open is an event and an alarm on every frame's
    actuation, never the end of capture, enhancement and uplink."""
    root = tmp_path / "no-pwm"  # no pwmchip0: the overlay was never loaded
    config = parse_config(
        {
            "capture": {"on_end": "stop"},
            "control": {"fan": {"driver": "sysfs", "chip": 0, "root": str(root)}},
        }
    )
    pipeline, sink, events, _ = build(config, 30, PassthroughEnhancer(), live=False, lossless=True)
    pipeline.parts.fan = None  # built from [control.fan], as `run` does
    result = await pipeline.run(asyncio.Event())
    assert result.frames_out == 30
    assert result.stop_reason == "end_of_stream"
    last = sink.records[-1].actuation
    assert last is not None
    assert last.fan_driver == "sysfs"
    types = [e.type for e in events]
    assert "pipeline_started" in types
    assert "pipeline_stopped" in types
    (fault,) = [e for e in events if e.type == "actuator_fault"]
    assert fault.data["actuator"] == "fan:sysfs"
    assert "actuator_fault:fan:sysfs" in last.alarms
