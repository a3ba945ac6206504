"""Capture, first stage of the flow: the `FrameSource` interface every camera or recording implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass

from vehicle_agent.records import Image


class SourceError(Exception):
    """A source failed to open or stopped delivering; `uri` says which, the message why."""

    def __init__(self, uri: str, reason: str) -> None:
        self.uri = uri
        self.reason = reason
        super().__init__(f"{uri}: {reason}")


class BadFrameError(SourceError):
    """One frame could not be decoded (e.g. a corrupt file in an image folder); the source goes on."""


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What a source told us when it opened."""

    width: int
    height: int
    fps: float | None
    """Nominal frame rate, when the source knows one."""
    live: bool
    """True for cameras and pipelines (frames come at their own pace and are lost if not taken);
    False for recordings and image folders (frames wait for us)."""
    description: str
    """Human summary, e.g. 'vtest.mp4: 768x576 @ 10 fps, 300 frames'."""


@dataclass(frozen=True, slots=True)
class RawFrame:
    """A frame as the source gave it, before the capture stage stamps it."""

    image: Image
    pts: float | None
    """Presentation time in seconds from the start of the media, when the source has one."""


class FrameSource(abc.ABC):
    """A camera, pipeline or recording. Blocking calls: the capture stage runs them in a thread.

    `close()` may be called from another thread while `read()` blocks, and must make it return
    (or raise) soon: that is how a wedged camera is torn down.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri

    @abc.abstractmethod
    def open(self) -> SourceInfo:
        """Open the device or file. Raises `SourceError` with the reason when it cannot."""

    @abc.abstractmethod
    def read(self) -> RawFrame | None:
        """Next frame; None at the end of a recording or when a pipeline exits cleanly.

        Raises `BadFrameError` for one undecodable frame and `SourceError` when the source broke.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device; idempotent; safe to call from another thread."""

    def rewind(self) -> None:
        """Go back to the first frame (recordings only); the default reopens the source."""
        self.close()
        self.open()
