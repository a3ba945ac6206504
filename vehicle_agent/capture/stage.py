"""Capture stage: drives a `FrameSource` on a thread, stamps frames, paces replays and reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from vehicle_agent.backoff import Backoff
from vehicle_agent.capture.base import BadFrameError, FrameSource, RawFrame, SourceError, SourceInfo
from vehicle_agent.capture.settings import CaptureConfig
from vehicle_agent.compat import wait_for
from vehicle_agent.events import EventBus
from vehicle_agent.queues import StageQueue
from vehicle_agent.records import Frame, FrameRecord, InvalidFrameError

logger = logging.getLogger(__name__)

T = TypeVar("T")

EndPolicy = Literal["stop", "loop", "reconnect"]
DEFAULT_FPS = 10.0


class SourceGaveUpError(Exception):
    """The source failed more times in a row than `reconnect.max_attempts` allows."""


@dataclass(slots=True)
class CaptureStats:
    frames_in: int = 0
    """Frames delivered into the pipeline."""
    frames_missing: int = 0
    """Frames a live source would have delivered while it was lost (fps × outage)."""
    frames_invalid: int = 0
    """Frames the source could not decode, skipped."""
    reconnects: int = 0
    """Times a lost source delivered again."""
    loops: int = 0
    source_fps: float | None = None
    source_description: str = ""


def end_policy(setting: str, live: bool) -> EndPolicy:
    if setting == "auto":
        return "reconnect" if live else "stop"
    if setting in ("stop", "loop", "reconnect"):
        return setting  # type: ignore[return-value]
    raise ValueError(f"unknown on_end setting {setting!r}")


class _StopRequestedError(Exception):
    """`stop` was set while waiting on the source."""


class _SourceLostError(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class CaptureStage:
    """Turns a source into a stream of `FrameRecord`s on `out`.

    Each source instance gets its own one-thread executor: a camera that wedges inside a blocking
    read is abandoned with its thread (after `close()` from another thread) and a fresh instance
    is opened, so a stuck driver never blocks the daemon.
    """

    def __init__(
        self,
        open_source: Callable[[], FrameSource],
        config: CaptureConfig,
        out: StageQueue[FrameRecord],
        events: EventBus,
        *,
        clock: Callable[[], float] = time.monotonic,
        backoff: Backoff | None = None,
    ) -> None:
        self._open_source = open_source
        self.config = config
        self.out = out
        self.events = events
        self.clock = clock
        rc = config.reconnect
        self.backoff = backoff or Backoff(rc.initial_s, rc.max_s, rc.multiplier, rc.jitter)
        self.stats = CaptureStats()
        self._seq = 0
        self._t_start = clock()
        self._last_t_video = 0.0
        self._video_offset = 0.0
        self._lost_since: float | None = None
        self._is_live = True
        self._last_frame_mono: float | None = None

    # -- helpers -----------------------------------------------------------------------------

    async def _in_thread(
        self, executor: ThreadPoolExecutor, fn: Callable[[], T], stop: asyncio.Event, limit_s: float
    ) -> T:
        """Run `fn` on the source thread; `_SourceLostError` past `limit_s`, `_StopRequestedError` on stop."""
        loop = asyncio.get_running_loop()
        work = asyncio.ensure_future(loop.run_in_executor(executor, fn))
        stopper = asyncio.ensure_future(stop.wait())
        waiters: set[asyncio.Future[Any]] = {work, stopper}
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopper.cancel()
        if work in done:
            return work.result()
        # Stopped or timed out: the blocking call is left to finish on its own thread once the
        # source is closed; its result or error is consumed so it is not reported as lost.
        work.add_done_callback(lambda f: f.exception())
        if stop.is_set():
            raise _StopRequestedError
        raise _SourceLostError(f"stalled: no frame for {limit_s:g} s")

    async def _sleep(self, seconds: float, stop: asyncio.Event) -> None:
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await wait_for(stop.wait(), seconds)

    @staticmethod
    async def _close(source: FrameSource) -> None:
        # Closing can wait on a subprocess; do it off the loop, on a thread of its own so it
        # does not queue behind a read that is stuck on the source's executor.
        try:
            await asyncio.to_thread(source.close)
        except Exception:
            logger.exception("closing %s failed", source.uri)

    @property
    def lost(self) -> bool:
        """True while the source is lost and being retried."""
        return self._lost_since is not None

    def _t_now(self) -> float:
        return self.clock() - self._t_start

    # -- the stage ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver frames until the source ends (policy 'stop') or `stop` is set."""
        try:
            while not stop.is_set():
                source = self._open_source()
                executor = ThreadPoolExecutor(1, thread_name_prefix="capture")
                reason = ""
                try:
                    ended = await self._run_source(source, executor, stop)
                except _StopRequestedError:
                    ended = True
                except _SourceLostError as lost:
                    ended, reason = False, lost.reason
                finally:
                    await self._close(source)
                    executor.shutdown(wait=False, cancel_futures=True)
                if ended:
                    break
                await self._on_lost(reason, stop)
        finally:
            await self.out.close()

    async def _on_lost(self, reason: str, stop: asyncio.Event) -> None:
        if self._lost_since is None:
            # The outage began with the last frame, not when the stall timeout noticed it.
            self._lost_since = self._last_frame_mono or self.clock()
        attempts = self.backoff.attempt + 1
        max_attempts = self.config.reconnect.max_attempts
        if max_attempts and attempts >= max_attempts:
            self.events.emit(
                "source_gave_up",
                self._t_now() if self._is_live else self._last_t_video,
                self._seq - 1 if self._seq else None,
                uri=self.config.uri,
                attempts=attempts,
                reason=reason,
            )
            raise SourceGaveUpError(
                f"{self.config.uri}: gave up after {attempts} attempts: {reason}"
            )
        delay = self.backoff.next_delay()
        self.events.emit(
            "source_lost",
            self._t_now() if self._is_live else self._last_t_video,
            self._seq - 1 if self._seq else None,
            uri=self.config.uri,
            reason=reason,
            attempt=attempts,
            retry_in_s=round(delay, 3),
        )
        await self._sleep(delay, stop)

    async def _run_source(
        self, source: FrameSource, executor: ThreadPoolExecutor, stop: asyncio.Event
    ) -> bool:
        """Open and read one source instance. True when capture is over, False to reopen."""
        open_timeout = self.config.open_timeout_s
        try:
            info: SourceInfo = await self._in_thread(executor, source.open, stop, open_timeout)
        except SourceError as exc:
            raise _SourceLostError(f"cannot open: {exc.reason}") from exc
        self._is_live = info.live
        fps = self.config.fps or info.fps or DEFAULT_FPS
        self.stats.source_fps = info.fps or self.config.fps
        self.stats.source_description = info.description
        self.events.emit(
            "source_opened",
            self._t_now() if info.live else self._last_t_video,
            uri=self.config.uri,
            description=info.description,
            width=info.width,
            height=info.height,
            fps=info.fps,
            live=info.live,
        )
        if self._lost_since is not None:
            outage = self.clock() - self._lost_since
            missing = round(outage * fps) if info.live else 0
            self.stats.frames_missing += missing
            self.stats.reconnects += 1
            self._lost_since = None
            self.events.emit(
                "source_resumed",
                self._t_now() if info.live else self._last_t_video,
                self._seq - 1 if self._seq else None,
                uri=self.config.uri,
                outage_s=round(outage, 3),
                missing_frames=missing,
            )
        self.backoff.reset()
        policy = end_policy(self.config.on_end, info.live)
        paced = not info.live and self.config.pacing == "realtime"
        loop = asyncio.get_running_loop()
        pace_origin: tuple[float, float] | None = None  # (loop time, video time) of first frame
        frames_this_open = 0
        while not stop.is_set():
            try:
                raw: RawFrame | None = await self._in_thread(
                    executor, source.read, stop, self.config.stall_timeout_s
                )
            except BadFrameError as exc:
                self.stats.frames_invalid += 1
                self.events.emit(
                    "frame_invalid", self._last_t_video, uri=self.config.uri, reason=exc.reason
                )
                continue
            except SourceError as exc:
                raise _SourceLostError(exc.reason) from exc
            if raw is None:
                if policy == "stop":
                    self.events.emit(
                        "source_ended",
                        self._last_t_video,
                        self._seq - 1 if self._seq else None,
                        uri=self.config.uri,
                        frames=self.stats.frames_in,
                    )
                    return True
                if policy == "loop" and frames_this_open:
                    self.stats.loops += 1
                    self._video_offset = self._last_t_video + 1.0 / fps
                    self.events.emit(
                        "source_looped",
                        self._last_t_video,
                        self._seq - 1,
                        uri=self.config.uri,
                        loop=self.stats.loops,
                    )
                    try:
                        await self._in_thread(executor, source.rewind, stop, open_timeout)
                    except SourceError as exc:
                        raise _SourceLostError(f"cannot rewind: {exc.reason}") from exc
                    pace_origin = None
                    frames_this_open = 0
                    continue
                raise _SourceLostError("stream ended")
            frames_this_open += 1
            if info.live:
                t_video = self._t_now()
            else:
                pts = raw.pts if raw.pts is not None else (frames_this_open - 1) / fps
                t_video = self._video_offset + pts
            if paced:
                if pace_origin is None:
                    pace_origin = (loop.time(), t_video)
                due = pace_origin[0] + (t_video - pace_origin[1])
                await self._sleep(due - loop.time(), stop)
            try:
                frame = Frame(self._seq, self.clock(), t_video, raw.image, self.config.uri)
            except InvalidFrameError as exc:
                self.stats.frames_invalid += 1
                self.events.emit("frame_invalid", t_video, uri=self.config.uri, reason=str(exc))
                continue
            self._seq += 1
            self._last_t_video = t_video
            self._last_frame_mono = frame.t_mono
            self.stats.frames_in += 1
            await self.out.put(FrameRecord(frame))
        return True
