"""Simulator's output side: a progress bar on the terminal (frames, frame rate, time left)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import IO

import cv2
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from vehicle_agent.output.sinks import FrameSink
from vehicle_agent.records import FrameRecord


def frame_count(video: Path) -> int | None:
    """Frames in `video` as its container says, or None when it does not say."""
    capture = cv2.VideoCapture(str(video))
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    return count if count > 0 else None


class FrameRateColumn(ProgressColumn):
    """Frames per second over the last seconds."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        return Text("  -- fps" if speed is None else f"{speed:5.1f} fps", style="cyan")


class ProgressSink(FrameSink):
    """Advances a progress bar for each frame written; the bar starts with the first frame."""

    def __init__(self, total: int | None, description: str, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            FrameRateColumn(),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            speed_estimate_period=5.0,
        )
        self._task = self._progress.add_task(description, total=total)
        self._started = False
        self._moved: list[tuple[logging.StreamHandler[IO[str]], IO[str]]] = []

    def write(self, record: FrameRecord) -> None:
        del record
        self.advance()

    def advance(self) -> None:
        """One more frame done (`vehicle-agent enhance` on a video calls it directly)."""
        if not self._started:
            self._start()
        self._progress.advance(self._task)

    def _start(self) -> None:
        original = sys.stderr
        self._progress.start()
        self._started = True
        if sys.stderr is original:
            return
        # While the bar is shown, rich routes writes to sys.stderr above it; log handlers hold
        # the stream they were given, so they are pointed at the new one until the bar goes.
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is original:
                self._moved.append((handler, original))
                handler.setStream(sys.stderr)

    def close(self) -> None:
        if self._started:
            for handler, stream in self._moved:
                handler.setStream(stream)
            self._moved.clear()
            self._progress.stop()
            self._started = False
