"""Enhance stage: `EnhanceStage`, the per-record work of the pipeline's enhance step.

It owns the running enhancer (a chain, usually), the swap to a new one between two frames (a
config reload, the fleet's `set_enhancement`, a model update: `swap`, the one way to do it), and
the scene condition that gates the chain: judged on the raw frame before enhance, it travels on
the record (`FrameRecord.scene`) and gates that very frame. `run` is called on the stage's own
thread; `after` on the event loop, which alone emits events (the bus is not thread-safe).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from vehicle_agent.enhance.base import Enhancer
from vehicle_agent.events import EventBus
from vehicle_agent.records import FrameRecord, Image, Scene
from vehicle_agent.workers import give_back_memory

SceneJudge = Callable[[Image, float], Scene | None]
"""The raw frame and its video time → its analysis copy, metrics and scene condition."""


class EnhanceStage:
    """The running enhancer, its swaps and its condition; see the module doc."""

    def __init__(
        self,
        enhancer: Enhancer,
        events: EventBus,
        *,
        video_timed: bool = False,
        judge: SceneJudge | None = None,
    ) -> None:
        self.enhancer = enhancer
        self.judge = judge
        """Judges the raw frame before it is enhanced (`QualityMonitor.judge`); None: the
        record's scene as it came."""
        self.events = events
        self.video_timed = video_timed
        """A replay: the enhancer's retries are timed by the frames' video time."""
        self.condition: str | None = None
        """Scene condition of the latest frame enhanced (it gated that frame's model)."""
        self._reported: str | None = None
        """The condition `after` last saw (on the loop): a change is one event."""
        self._t = 0.0
        self._next: Enhancer | None = None
        self._swapped: tuple[str, str, str] | None = None
        self._swap_reason = "replaced"
        if video_timed:
            enhancer.use_timer(self.video_time)

    def video_time(self) -> float:
        """Video time of the frame on the enhance thread (a replay's enhancer timer)."""
        return self._t

    # -- swaps ----------------------------------------------------------------------------------

    def replace(self, enhancer: Enhancer, reason: str = "replaced") -> None:
        """Switch to `enhancer` (loaded already) between two frames."""
        self._swap_reason = reason
        self._next = enhancer

    async def swap(self, build: Callable[[], Enhancer], reason: str = "replaced") -> Enhancer:
        """Build an enhancer, load and warm it up off the loop while the running one keeps
        serving frames, and switch to it between two frames. One that fails to load is closed
        and its error raised; the running one stays."""
        enhancer = build()
        try:
            await asyncio.to_thread(enhancer.load)
        except BaseException:
            enhancer.close()
            raise
        self.replace(enhancer, reason)
        return enhancer

    # -- per record -----------------------------------------------------------------------------

    def run(self, record: FrameRecord) -> FrameRecord:
        """On the stage's thread: the frame enhanced (after a pending swap, if any), by the
        model its scene condition asks for (judged here first, on the raw frame)."""
        if self.judge is not None:
            record = record.replace(scene=self.judge(record.frame.image, record.frame.t_video))
        self.condition = record.condition
        if self._next is not None:
            # On the enhance thread, so the old backend is never closed while it runs a frame.
            old, self.enhancer, self._next = self.enhancer, self._next, None
            old.close()
            give_back_memory()  # else each swap keeps the old model's pages (RSS)
            if self.video_timed:
                self.enhancer.use_timer(self.video_time)
            self._swapped = (old.name, self.enhancer.name, self._swap_reason)
        enhancer = self.enhancer
        enhancer.set_condition(self.condition)
        self._t = record.frame.t_video
        enhanced = enhancer.enhance(record.frame.image)
        # Asked after the frame, on this thread: a chain names the model that just ran.
        return record.replace(enhanced=enhanced, enhancer=enhancer.name, model=enhancer.model_label)

    def after(self, record: FrameRecord) -> None:
        """On the loop: a change of the scene condition, and what the enhancer recorded on its
        thread (demotions, swaps)."""
        frame = record.frame
        condition = record.condition
        if condition is not None and self._reported is not None and condition != self._reported:
            self.events.emit(
                "scene_condition_changed",
                frame.t_video,
                frame.seq,
                condition=condition,
                previous=self._reported,
            )
        self._reported = condition
        if self._swapped is not None:
            previous, current, reason = self._swapped
            self._swapped = None
            self.events.emit(
                "model_swapped",
                frame.t_video,
                frame.seq,
                previous=previous,
                current=current,
                reason=reason,
                condition=condition,
                model=self.enhancer.model_label,
            )
        for event in self.enhancer.drain_events():
            self.events.emit(event.type, frame.t_video, frame.seq, **event.data)
