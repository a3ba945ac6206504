"""The capture stage: stamping, pacing, drop-free replay, reconnect with events, stalls, give-up."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes import Step, frames, scripted_factory
from vehicle_agent.backoff import Backoff
from vehicle_agent.capture.stage import CaptureStage, SourceGaveUpError
from vehicle_agent.catalogue import EVENT_TYPES
from vehicle_agent.config import CaptureConfig, ReconnectConfig
from vehicle_agent.events import EventBus
from vehicle_agent.queues import END, StageQueue
from vehicle_agent.records import Event, FrameRecord


def make_stage(
    script: list[Step],
    *,
    live: bool = True,
    opens_fail: int = 0,
    max_attempts: int = 0,
    stall_timeout_s: float = 3.0,
    on_end: str = "stop",
    pacing: str = "max",
    fps: float | None = 30.0,
) -> tuple[CaptureStage, StageQueue[FrameRecord], list[Event], dict[str, int]]:
    factory, shared = scripted_factory(script, live=live, opens_fail=opens_fail, fps=fps)
    config = CaptureConfig(
        uri="fake://camera",
        on_end=on_end,  # type: ignore[arg-type]
        pacing=pacing,  # type: ignore[arg-type]
        stall_timeout_s=stall_timeout_s,
        reconnect=ReconnectConfig(initial_s=0.01, max_s=0.05, max_attempts=max_attempts),
    )
    out: StageQueue[FrameRecord] = StageQueue("out", 1000, lossless=True)
    bus = EventBus(EVENT_TYPES)
    seen: list[Event] = []
    bus.subscribe(seen.append)
    stage = CaptureStage(factory, config, out, bus, backoff=Backoff(0.01, 0.05, jitter=0.0))
    return stage, out, seen, shared


async def drain(out: StageQueue[FrameRecord]) -> list[FrameRecord]:
    records = []
    while (item := await out.get()) is not END:
        assert isinstance(item, FrameRecord)
        records.append(item)
    return records


async def test_frames_are_numbered_and_stamped_in_order() -> None:
    stage, out, events, _ = make_stage(frames(5), live=False)
    await stage.run(asyncio.Event())
    records = await drain(out)
    assert [r.frame.seq for r in records] == [0, 1, 2, 3, 4]
    t_mono = [r.frame.t_mono for r in records]
    assert t_mono == sorted(t_mono)
    # Recordings without timestamps get index / fps as video time.
    assert [r.frame.t_video for r in records] == pytest.approx([i / 30 for i in range(5)])
    assert [e.type for e in events] == ["source_opened", "source_ended"]
    assert not records[0].frame.image.flags.writeable


async def test_lost_camera_is_reported_retried_and_resumes_with_continuing_numbers() -> None:
    script = [*frames(3), Step("fail"), *frames(3, start=10)]
    stage, out, events, shared = make_stage(script, live=True, on_end="stop")
    await stage.run(asyncio.Event())
    records = await drain(out)
    assert [r.frame.seq for r in records] == list(range(6))
    types = [e.type for e in events]
    assert types == [
        "source_opened",
        "source_lost",
        "source_opened",
        "source_resumed",
        "source_ended",
    ]
    lost = events[1]
    assert lost.data["reason"] == "camera stopped delivering frames"
    assert lost.frame == 2
    assert shared["opens"] == 2
    assert stage.stats.reconnects == 1


async def test_failed_opens_back_off_then_succeed() -> None:
    stage, out, events, shared = make_stage(frames(2), opens_fail=3)
    await stage.run(asyncio.Event())
    assert len(await drain(out)) == 2
    lost = [e for e in events if e.type == "source_lost"]
    assert [e.data["attempt"] for e in lost] == [1, 2, 3]
    assert all(str(e.data["reason"]).startswith("cannot open: device busy") for e in lost)
    assert shared["opens"] == 4


async def test_stalled_camera_is_torn_down_and_reopened() -> None:
    script = [*frames(2), Step("stall"), *frames(2)]
    stage, out, events, _ = make_stage(script, stall_timeout_s=0.2)
    await asyncio.wait_for(stage.run(asyncio.Event()), 10)
    assert len(await drain(out)) == 4
    lost = next(e for e in events if e.type == "source_lost")
    assert "stalled" in str(lost.data["reason"])
    resumed = next(e for e in events if e.type == "source_resumed")
    assert float(resumed.data["outage_s"]) >= 0.2  # type: ignore[arg-type]
    # A live camera at 30 fps missed about outage × fps frames while it was gone.
    assert stage.stats.frames_missing == resumed.data["missing_frames"]
    assert stage.stats.frames_missing >= 5


async def test_gives_up_after_max_attempts() -> None:
    stage, out, events, _ = make_stage(frames(2), opens_fail=10, max_attempts=3)
    with pytest.raises(SourceGaveUpError, match="gave up after 3 attempts"):
        await stage.run(asyncio.Event())
    assert await drain(out) == []  # the queue is closed even so
    assert events[-1].type == "source_gave_up"


async def test_bad_frames_are_skipped_and_counted() -> None:
    stage, out, events, _ = make_stage([*frames(1), Step("bad"), *frames(1)], live=False)
    await stage.run(asyncio.Event())
    assert len(await drain(out)) == 2
    assert stage.stats.frames_invalid == 1
    assert "frame_invalid" in [e.type for e in events]


async def test_loop_replays_with_increasing_video_time() -> None:
    stage, out, events, _ = make_stage(frames(3), live=False, on_end="loop")
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))
    records: list[FrameRecord] = []
    while len(records) < 8:
        item = await out.get()
        assert isinstance(item, FrameRecord)
        records.append(item)
    stop.set()
    await task
    times = [r.frame.t_video for r in records]
    assert times == sorted(times)
    assert len(set(times)) == len(times)
    assert stage.stats.loops >= 2
    assert "source_looped" in [e.type for e in events]


async def test_realtime_pacing_follows_video_time() -> None:
    stage, out, _, _ = make_stage(frames(6), live=False, pacing="realtime", fps=20.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await stage.run(asyncio.Event())
    elapsed = loop.time() - start
    records = await drain(out)
    assert len(records) == 6
    # 6 frames at 20 fps span 0.25 s of video; a replay must not run ahead of it.
    assert elapsed >= 0.25


async def test_stop_interrupts_a_blocked_read_promptly() -> None:
    stage, out, _, _ = make_stage([*frames(1), Step("stall")], stall_timeout_s=60)
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))
    first = await out.get()
    assert isinstance(first, FrameRecord)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert await out.get() is END
