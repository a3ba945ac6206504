"""The pipeline runtime: named stages in one TaskGroup, linked by bounded queues, and shutdown.

Read top to bottom, the flow is: capture → enhance → analyze → act → uplink → output. Each
stage's per-record work lives in its package (`CaptureStage`, `EnhanceStage`, `QualityMonitor`,
`ControlLoop.on_record`, the uplink, the sinks); this module moves records between them, times
them, turns a stage's failures into `stage_degraded`/`stage_recovered`, and shuts down in order
(actuators safe first). What runs is chosen by the composition root (`app.build_parts`, or the
bench simulator) and handed over as `Parts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from vehicle_agent import __version__, compat
from vehicle_agent.capture.base import FrameSource
from vehicle_agent.capture.stage import CaptureStage, SourceGaveUpError
from vehicle_agent.capture.uri import is_live_uri
from vehicle_agent.catalogue import EVENT_TYPES
from vehicle_agent.compat import TaskGroup
from vehicle_agent.config import Config
from vehicle_agent.control.build import open_control
from vehicle_agent.control.fan import Fan
from vehicle_agent.control.loop import ControlLoop
from vehicle_agent.enhance import Enhancer
from vehicle_agent.enhance.chain import build_enhancer
from vehicle_agent.enhance.stage import EnhanceStage
from vehicle_agent.events import EventBus
from vehicle_agent.output.sinks import FrameSink
from vehicle_agent.quality.metrics import compute_quality
from vehicle_agent.quality.monitor import QualityMonitor, settings_from_config
from vehicle_agent.queues import END, StageQueue
from vehicle_agent.records import STAGES, FrameRecord, JsonValue
from vehicle_agent.uplink.base import PipelineHooks, Uplink
from vehicle_agent.workers import StageThread, call_detached

logger = logging.getLogger(__name__)

LATENCY_WINDOW = 10_000
"""Latency samples kept per stage for the summary's median and p95."""
FPS_WINDOW = 64
"""Output frames over which the live frame rate is measured."""
REPLAY_MODULE_WAIT_S = 2.0
"""A replay (`Parts.video_timed`) waits this long at most for the camera module's first reading."""
CLOSE_TIMEOUT_S = 2.0
"""At shutdown, a sink or the enhancer gets this long to close before it is left behind."""

StageObserver = Callable[[str, float], None]
"""Called on the event loop with (stage, seconds) for every frame a stage handled."""


@dataclass
class Parts:
    """The concrete implementations one pipeline runs with (chosen by `build_parts`).

    `sinks` are extra sinks beyond those `[output]` configures (the simulator adds its report).
    """

    open_source: Callable[[], FrameSource]
    enhancer: Enhancer
    fan: Fan | None
    """The fan for a pipeline built without `control` (tests); None: `[control.fan]`."""
    uplink: Uplink
    sinks: list[FrameSink] = field(default_factory=list)
    events: EventBus = field(default_factory=lambda: EventBus(EVENT_TYPES))
    closers: list[Callable[[], None]] = field(default_factory=list)
    latency_observers: list[StageObserver] = field(default_factory=list)
    output: Callable[[Callable[[], float | None]], list[FrameSink]] | None = None
    """Makes the sinks `[output]` names, given the source's frame rate once capture knows it
    (the root's `output_sinks`); None: only `sinks`."""
    monitor: QualityMonitor | None = None
    """The scene judge and the analyze stage's work; None: built from `[quality]`/`[adhesion]`."""
    control: AbstractAsyncContextManager[ControlLoop] | None = None
    """The control loop (MCU link, fan, cleaning, thermal), built by the composition root and
    entered when the pipeline starts, first; None: `[control]` with `fan`."""
    actuation_observers: list[Callable[[FrameRecord], None]] = field(default_factory=list)
    """Called on the event loop with each record the act stage finished (the simulated lens)."""
    video_timed: bool = False
    """A replay: the cleaning (bursts, verification, back-off) and the enhancer's retries are
    timed by the video time of the frames, not by how fast the host replays them."""


@dataclass
class RunResult:
    """What a pipeline run did, for `summary.json`, telemetry and the exit log line."""

    frames_in: int = 0
    frames_out: int = 0
    frames_dropped: int = 0
    frames_missing: int = 0
    frames_invalid: int = 0
    reconnects: int = 0
    wall_s: float = 0.0
    video_s: float = 0.0
    stop_reason: str = ""
    drops_by_queue: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    stage_failures: dict[str, int] = field(default_factory=dict)
    source_description: str = ""
    source_fps: float | None = None
    events: dict[str, int] = field(default_factory=dict)
    control: dict[str, JsonValue] = field(default_factory=dict)
    """Cleanings, alarms and extremes from the control loop."""

    @property
    def fps(self) -> float:
        return self.frames_out / self.wall_s if self.wall_s > 0 else 0.0


class _StageHealth:
    """Turns per-frame failures of an optional stage into one degraded/recovered event pair."""

    def __init__(self, stage: str, events: EventBus) -> None:
        self.stage = stage
        self.events = events
        self.failures = 0
        self._failing = 0

    def failed(self, record: FrameRecord, error: BaseException) -> None:
        self.failures += 1
        self._failing += 1
        if self._failing == 1:
            logger.error(
                "stage %s failed on frame %d", self.stage, record.frame.seq, exc_info=error
            )
            self.events.emit(
                "stage_degraded",
                record.frame.t_video,
                record.frame.seq,
                stage=self.stage,
                error=f"{type(error).__name__}: {error}",
            )

    def succeeded(self, record: FrameRecord) -> None:
        if self._failing:
            self.events.emit(
                "stage_recovered",
                record.frame.t_video,
                record.frame.seq,
                stage=self.stage,
                failures=self._failing,
            )
            self._failing = 0


class Pipeline:
    """One run of the pipeline: named stages in one TaskGroup, linked by bounded queues."""

    def __init__(self, config: Config, parts: Parts, *, lossless: bool | None = None) -> None:
        self.config = config
        self.parts = parts
        self.events = parts.events
        size = config.pipeline.queue_size
        if lossless is None:
            # A recording replayed at max speed has no camera to fall behind: keep every frame.
            lossless = config.capture.pacing == "max" and not is_live_uri(config.capture.uri)
        names = (
            "capture->enhance",
            "enhance->analyze",
            "analyze->act",
            "act->uplink",
            "uplink->output",
        )
        self.queues: list[StageQueue[FrameRecord]] = [
            StageQueue(n, size, lossless=lossless) for n in names
        ]
        self.capture = CaptureStage(parts.open_source, config.capture, self.queues[0], self.events)
        self.health = {s: _StageHealth(s, self.events) for s in STAGES[1:]}
        # Bounded: a daemon runs for months; the summary's median/p95 cover the latest frames.
        self._latency: dict[str, deque[float]] = {
            s: deque(maxlen=LATENCY_WINDOW) for s in STAGES[1:]
        }
        self._out_times: deque[float] = deque(maxlen=FPS_WINDOW)
        self.last_record: FrameRecord | None = None
        self.frames_out = 0
        self._last_t_video = 0.0
        self.monitor = parts.monitor or QualityMonitor(
            settings_from_config(config.quality, config.adhesion)
        )
        """The scene judged on the raw frame (the enhance thread calls `judge`), then quality
        metrics and adhesion (the analyze thread calls `on_record`)."""
        self.enhance = EnhanceStage(
            parts.enhancer,
            self.events,
            video_timed=parts.video_timed,
            judge=self.monitor.judge,
        )
        """The running enhancer, its swaps and the condition, judged on the raw frame first."""
        self.running = asyncio.Event()
        self._exits = contextlib.AsyncExitStack()
        self.control: ControlLoop | None = None
        """Set by `run()` before any stage starts."""
        self.control_summary: dict[str, JsonValue] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._busy_since: dict[str, float] = {}
        """Stage → when the frame it works on now entered it (absent: waiting for a frame)."""
        self._threads: dict[str, StageThread] = {}
        configured = (
            [] if parts.output is None else parts.output(lambda: self.capture.stats.source_fps)
        )
        self.sinks = [*configured, *parts.sinks]

    # -- stages, in flow order ---------------------------------------------------------------

    async def _stage(
        self,
        name: str,
        inq: StageQueue[FrameRecord],
        outq: StageQueue[FrameRecord] | None,
        work: Callable[[FrameRecord], Awaitable[FrameRecord]],
        on_result: Callable[[FrameRecord], None] | None = None,
    ) -> None:
        """Apply `work` to each record; a failure passes the record on unchanged.

        `on_result` runs on the event loop with each result (e.g. to emit events: the bus is not
        thread-safe, so thread stages must not emit from their worker).
        """
        health = self.health[name]
        try:
            while (record := await inq.get()) is not END:
                assert isinstance(record, FrameRecord)  # noqa: S101 - narrows the END union
                start = time.perf_counter()
                self._busy_since[name] = time.monotonic()
                try:
                    result = await work(record)
                    health.succeeded(record)
                except Exception as exc:
                    health.failed(record, exc)
                    result = record
                finally:
                    self._busy_since.pop(name, None)
                seconds = time.perf_counter() - start
                self._observe(name, seconds)
                if on_result is not None:
                    on_result(result)
                if outq is not None:
                    await outq.put(result.after(name, seconds))
        finally:
            if outq is not None:
                await outq.close()

    async def _thread_stage(
        self,
        name: str,
        inq: StageQueue[FrameRecord],
        outq: StageQueue[FrameRecord] | None,
        work: Callable[[FrameRecord], FrameRecord],
        on_result: Callable[[FrameRecord], None] | None = None,
    ) -> None:
        """A CPU-bound stage: `work` runs on the stage's own thread, off the event loop. A
        daemon thread: cancelled (a forced shutdown), the stage never waits for a frame that
        does not return, and neither does the process at exit."""
        loop = asyncio.get_running_loop()
        executor = self._threads[name] = StageThread(f"stage-{name}")

        def in_thread(record: FrameRecord) -> Awaitable[FrameRecord]:
            return loop.run_in_executor(executor, work, record)

        try:
            await self._stage(name, inq, outq, in_thread, on_result)
        finally:
            executor.shutdown(wait=False)

    def stalled(self, bound_s: float) -> tuple[str, float] | None:
        """(stage, seconds) of the first stage, in flow order, that has worked on one frame for
        longer than `bound_s`; None while frames move (a stage waiting for input is not
        stalled: capture waiting for a camera is the source's own state)."""
        now = time.monotonic()
        for name in STAGES:
            since = self._busy_since.get(name)
            if since is not None and now - since > bound_s:
                return name, now - since
        return None

    @property
    def enhancer(self) -> Enhancer:
        """The enhancer running now (a swap takes effect between two frames)."""
        return self.enhance.enhancer

    @property
    def condition(self) -> str | None:
        """Scene condition of the latest frame enhanced (judged on it raw, it gated its model)."""
        return self.enhance.condition

    def replace_enhancer(self, enhancer: Enhancer, reason: str = "replaced") -> None:
        """Swap the backend (loaded already): the enhance stage switches between two frames."""
        self.enhance.replace(enhancer, reason)

    async def swap_enhancer(
        self, build: Callable[[], Enhancer], reason: str = "replaced"
    ) -> Enhancer:
        """Build, load (off the loop) and switch to a new enhancer between two frames; one that
        does not load is closed and its error raised (the running one stays)."""
        return await self.enhance.swap(build, reason)

    @property
    def video_time(self) -> float:
        """Video time of the latest frame out, for events that concern no frame."""
        return self._last_t_video

    def _analyze(self, record: FrameRecord) -> FrameRecord:
        # Quality is measured on the picture the vehicle shows; lens adhesion on the raw frame's
        # analysis copy that the scene judgement made before enhance.
        return self.monitor.on_record(record, compute_quality)

    async def _act(self, record: FrameRecord) -> FrameRecord:
        assert self.control is not None  # noqa: S101 - opened before the stages start
        result = self.control.on_record(record)
        for observer in self.parts.actuation_observers:
            observer(result)
        return result

    async def _uplink(self, record: FrameRecord) -> FrameRecord:
        await self.parts.uplink.on_frame(record)
        return record

    def _output(self, record: FrameRecord) -> FrameRecord:
        for sink in self.sinks:
            sink.write(record)
        self.frames_out += 1
        self.last_record = record
        self._out_times.append(time.monotonic())
        self._last_t_video = record.frame.t_video
        return record

    def _observe(self, stage: str, seconds: float) -> None:
        self._latency[stage].append(seconds)
        for observer in self.parts.latency_observers:
            observer(stage, seconds)

    @property
    def fps(self) -> float:
        """Output frame rate over the last `FPS_WINDOW` frames."""
        times = self._out_times
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def counters(self) -> dict[str, float]:
        """Live totals for telemetry (cheap: no percentiles, unlike `result`)."""
        stats = self.capture.stats
        return {
            "frames_in": stats.frames_in,
            "frames_out": self.frames_out,
            "frames_dropped": sum(q.dropped for q in self.queues),
            "frames_invalid": stats.frames_invalid,
            "reconnects": stats.reconnects,
        }

    async def set_enhancer(self, backend: Any | None) -> str:
        """Load an `[enhance.backend]` config (None: the configured one) and switch to it
        between two frames; the fleet's `set_enhancement` command. Returns the backend's name."""
        chain = [backend] if backend is not None else None
        config = self.config
        enhancer = await self.swap_enhancer(
            lambda: build_enhancer(config.enhance, config.agent.state_dir, chain=chain)
        )
        return enhancer.name

    async def reload_models(self, reason: str) -> str | None:
        """Rebuild the configured chain (the model store resolves models again: an update was
        installed or rolled back), load it off the loop and switch between two frames. Returns
        the name@version the new chain runs."""
        config = self.config
        enhancer = await self.swap_enhancer(
            lambda: build_enhancer(config.enhance, config.agent.state_dir), reason
        )
        return enhancer.model_label

    def uplink_hooks(self) -> PipelineHooks:
        return PipelineHooks(
            counters=self.counters,
            config_digest=self.config.digest(),
            set_enhancer=self.set_enhancer,
            clean_lens=self.control.clean_lens if self.control is not None else None,
            clear_lens_service=(
                self.control.clear_lens_service if self.control is not None else None
            ),
            reload_models=self.reload_models,
            module_temperatures=self.module_temperatures,
        )

    def module_temperatures(self) -> dict[str, float]:
        """The camera module's latest valid readings, °C ('sensor', 'cold_side', 'hot_side');
        empty without a thermal link or before its first reading."""
        thermal = None if self.control is None else self.control.thermal
        return {} if thermal is None else thermal.temperatures()

    # -- running -----------------------------------------------------------------------------

    async def _stages(self, stop: asyncio.Event) -> None:
        q = self.queues
        async with TaskGroup() as tg:
            for name, coro in (
                ("capture", self.capture.run(stop)),
                (
                    "enhance",
                    self._thread_stage("enhance", q[0], q[1], self.enhance.run, self.enhance.after),
                ),
                ("analyze", self._thread_stage("analyze", q[1], q[2], self._analyze)),
                ("act", self._stage("act", q[2], q[3], self._act)),
                ("uplink", self._stage("uplink", q[3], q[4], self._uplink)),
                ("output", self._thread_stage("output", q[4], None, self._output)),
            ):
                self._tasks[name] = tg.create_task(coro, name=name)
            self.running.set()

    async def run(self, stop: asyncio.Event) -> RunResult:
        """Run until the source ends or `stop` is set; then drain, make actuators safe, close."""
        parts = self.parts
        started = time.monotonic()
        reason = "end_of_stream"
        loop = asyncio.get_running_loop()
        try:
            # Control first: fan and cooler are driven (and end safe) whatever happens next.
            control = parts.control or open_control(
                self.config.control,
                self.events.emit,
                fan=parts.fan,
                video_timed=parts.video_timed,
            )
            self.control = await self._exits.enter_async_context(control)
            # Loading takes a while (models verified and warmed up; a TensorRT engine build goes
            # to the chain's loader thread instead); a stop meanwhile must not wait.
            load = loop.run_in_executor(None, self.enhancer.load)
            stopper = asyncio.ensure_future(stop.wait())
            waiters: set[asyncio.Future[Any]] = {load, stopper}
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not load.done():
                reason = "signal"
                load.add_done_callback(lambda f: f.cancelled() or f.exception())
                return self.result(reason, time.monotonic() - started)
            load.result()
            if parts.video_timed:
                # A replay starts once the camera module has reported (bounded): its first
                # frames carry temperatures however fast the host replays, run after run.
                await self.control.first_reading(REPLAY_MODULE_WAIT_S)
            parts.uplink.attach(self.uplink_hooks())
            await parts.uplink.start()
            self.events.subscribe(parts.uplink.on_event)
            self.events.emit(
                "pipeline_started", 0.0, version=__version__, config_digest=self.config.digest()
            )
            stages = asyncio.create_task(self._stages(stop), name="pipeline")
            stopper = asyncio.create_task(stop.wait(), name="stop-signal")
            await asyncio.wait({stages, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not stages.done():
                reason = "signal"
                timeout = self.config.pipeline.shutdown_timeout_s
                if self.stalled(self.config.pipeline.stall_s) is not None:
                    timeout = 0.0  # a stalled stage cannot drain: no time lost waiting for it
                done, _ = await asyncio.wait({stages}, timeout=timeout)
                if not done:
                    pending = [n for n, t in self._tasks.items() if not t.done()]
                    self.events.emit(
                        "shutdown_forced",
                        self._last_t_video,
                        timeout_s=timeout,
                        pending=", ".join(pending),
                    )
                    stages.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await stages
            if not stages.cancelled():
                try:
                    stages.result()
                except compat.BaseExceptionGroup as group:
                    # `except* SourceGaveUpError` (no such syntax on Python 3.10): the rest of the
                    # group, if any, propagates; the reason is set before `finally` reads it.
                    gave_up, rest = group.split(SourceGaveUpError)
                    if gave_up is None:
                        raise
                    reason = "source_gave_up"
                    if rest is not None:
                        raise rest from None
        finally:
            await self._shutdown(reason, started)
        return self.result(reason, time.monotonic() - started)

    async def _shutdown(self, reason: str, started: float) -> None:
        parts = self.parts
        del started
        if self.control is not None:
            self.control_summary = self.control.summary()
        try:
            # Fan and cooler to their safe state (`actuator_safe_state` events), MCU link closed.
            await self._exits.aclose()
        except Exception:
            logger.exception("could not put the actuators in their safe state")
        for sink in self.sinks:
            try:
                await call_detached(sink.close, CLOSE_TIMEOUT_S, f"closing {type(sink).__name__}")
            except Exception:
                logger.exception("closing a sink failed")
        self.events.emit("pipeline_stopped", self._last_t_video, reason=reason)
        with contextlib.suppress(Exception):
            await parts.uplink.close()
        enhance = self._threads.get("enhance")
        if enhance is not None and enhance.busy_s is not None:
            # A frame never came back: the backend is in use; closing it under the stuck call
            # could crash the process before it exits.
            logger.error(
                "the enhance stage has been on one frame for %.1f s; its backend is left open",
                enhance.busy_s,
            )
        else:
            await call_detached(self.enhancer.close, CLOSE_TIMEOUT_S, "closing the enhancer")
        for close in parts.closers:
            close()

    def result(self, reason: str, wall_s: float) -> RunResult:
        stats = self.capture.stats
        latency = {
            stage: {
                "median": round(statistics.median(values) * 1000, 3),
                "p95": round(_percentile(values, 0.95) * 1000, 3),
            }
            for stage, values in self._latency.items()
            if values
        }
        return RunResult(
            frames_in=stats.frames_in,
            frames_out=self.frames_out,
            frames_dropped=sum(q.dropped for q in self.queues),
            frames_missing=stats.frames_missing,
            frames_invalid=stats.frames_invalid,
            reconnects=stats.reconnects,
            wall_s=wall_s,
            video_s=self._last_t_video,
            stop_reason=reason,
            drops_by_queue={q.name: q.dropped for q in self.queues},
            latency_ms=latency,
            stage_failures={s: h.failures for s, h in self.health.items()},
            source_description=stats.source_description,
            source_fps=stats.source_fps,
            events=dict(self.events.counts),
            control=dict(self.control_summary),
        )


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
