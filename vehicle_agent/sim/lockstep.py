"""Simulator's capture side, seeded runs: read a frame only once the act stage finished the last.

At `max` speed the capture stage reads ahead of the act stage by however many frames this
host's timing lets it. With a simulated lens that matters: the fan blows the lens in the act
stage, and the lens renders each frame as it is when the frame is read, so how long drops stay
on the picture would depend on the host. In lockstep, frame n is read once the act stage has
finished frame n - 1, so every frame sees the lens the same way on every run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from vehicle_agent.capture.base import FrameSource, RawFrame, SourceInfo
from vehicle_agent.records import FrameRecord

logger = logging.getLogger(__name__)

WAIT_LIMIT_S = 10.0
"""A frame the act stage never sees (dropped, failed) must not stop the replay for good."""


class Lockstep:
    """Counts frames read and frames acted on; `turn()` waits until they match."""

    def __init__(self, wait_limit_s: float = WAIT_LIMIT_S) -> None:
        self.wait_limit_s = wait_limit_s
        self._changed = threading.Condition()
        self._read = 0
        self._acted = 0
        self._closed = False
        self.timeouts = 0

    def __call__(self, record: FrameRecord) -> None:
        """The act-stage observer (after the lens was blown for `record`)."""
        del record
        with self._changed:
            self._acted += 1
            self._changed.notify_all()

    def turn(self) -> None:
        """Wait (capture thread) until the act stage has finished every frame read so far."""
        with self._changed:
            ready = self._changed.wait_for(
                lambda: self._closed or self._acted >= self._read, self.wait_limit_s
            )
            if not ready:
                self.timeouts += 1
                logger.warning(
                    "bench lockstep: frame %d read after %.0f s without the act stage finishing "
                    "frame %d; this run may not repeat exactly",
                    self._read,
                    self.wait_limit_s,
                    self._read - 1,
                )
                self._acted = self._read
            self._read += 1

    def skip(self) -> None:
        """The frame whose turn it was never comes (end of the recording, a bad frame)."""
        with self._changed:
            self._read = max(self._acted, self._read - 1)

    def release(self) -> None:
        """Let a waiting read go, and reads from now on (the source is being closed: after a
        reconnect the run is not repeatable anyway)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def source(self, open_source: Callable[[], FrameSource]) -> Callable[[], FrameSource]:
        """The source factory `open_source`, every source it makes read in lockstep."""
        return lambda: LockstepSource(open_source(), self)


class LockstepSource(FrameSource):
    """A frame source whose reads wait for their turn (a decorator, like `LensSource`)."""

    def __init__(self, inner: FrameSource, lockstep: Lockstep) -> None:
        super().__init__(inner.uri)
        self.inner = inner
        self.lockstep = lockstep

    def open(self) -> SourceInfo:
        return self.inner.open()

    def read(self) -> RawFrame | None:
        self.lockstep.turn()
        try:
            raw = self.inner.read()
        except Exception:
            self.lockstep.skip()
            raise
        if raw is None:
            self.lockstep.skip()
        return raw

    def close(self) -> None:
        self.lockstep.release()
        self.inner.close()

    def rewind(self) -> None:
        self.inner.rewind()
