"""Scripted stand-ins for tests: a frame source that follows a script of frames and failures."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from vehicle_agent.capture.base import (
    BadFrameError,
    FrameSource,
    RawFrame,
    SourceError,
    SourceInfo,
)
from vehicle_agent.records import Image


def image(value: int = 100, size: tuple[int, int] = (48, 64)) -> Image:
    return np.full((*size, 3), value, np.uint8)


@dataclass(frozen=True)
class Step:
    """One scripted read: a frame, a bad frame, a failure, a stall or the end."""

    kind: str  # "frame" | "bad" | "fail" | "stall" | "end"
    value: int = 0


def frames(n: int, start: int = 0) -> list[Step]:
    return [Step("frame", (start + i) % 256) for i in range(n)]


class ScriptedSource(FrameSource):
    """Plays `script` across successive instances: each open() continues where the last stopped.

    `opens_fail` makes that many open() calls fail first. A "stall" step blocks read() until
    close() is called, like a wedged camera driver.
    """

    def __init__(
        self,
        script: list[Step],
        *,
        live: bool = True,
        fps: float | None = 30.0,
        opens_fail: int = 0,
        shared: dict[str, int] | None = None,
    ) -> None:
        super().__init__("fake://camera")
        self.script = script
        self.live = live
        self.fps = fps
        self.shared = shared if shared is not None else {"pos": 0, "opens": 0, "fails": opens_fail}
        self._closed = threading.Event()
        self.frames_read = 0

    def open(self) -> SourceInfo:
        self.shared["opens"] += 1
        self._closed.clear()
        if self.shared["fails"] > 0:
            self.shared["fails"] -= 1
            raise SourceError(self.uri, "device busy")
        return SourceInfo(64, 48, self.fps, self.live, "scripted")

    def read(self) -> RawFrame | None:
        pos = self.shared["pos"]
        if pos >= len(self.script):
            return None
        self.shared["pos"] = pos + 1
        step = self.script[pos]
        if step.kind == "frame":
            self.frames_read += 1
            return RawFrame(image(step.value), None)
        if step.kind == "bad":
            raise BadFrameError(self.uri, "cannot decode frame")
        if step.kind == "fail":
            raise SourceError(self.uri, "camera stopped delivering frames")
        if step.kind == "stall":
            self._closed.wait(30)
            raise SourceError(self.uri, "closed while stalled")
        return None

    def close(self) -> None:
        self._closed.set()

    def rewind(self) -> None:
        self.shared["pos"] = 0


def scripted_factory(
    script: Iterable[Step], *, live: bool = True, fps: float | None = 30.0, opens_fail: int = 0
) -> tuple[Callable[[], ScriptedSource], dict[str, int]]:
    """A factory of source instances sharing one script position, and that shared state."""
    steps = list(script)
    shared = {"pos": 0, "opens": 0, "fails": opens_fail}

    def make() -> ScriptedSource:
        return ScriptedSource(steps, live=live, fps=fps, shared=shared)

    return make, shared
