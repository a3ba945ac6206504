"""The bounded queues between pipeline stages: drop the oldest frame when full, and count it."""

from __future__ import annotations

import asyncio
from typing import Final, Generic, TypeVar

T = TypeVar("T")


class EndOfStream:
    """Marker a stage puts on its output queue when it has finished; never dropped.

    Compare with `is END`: `END` is the only instance the pipeline makes.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


END: Final = EndOfStream()


class StageQueue(Generic[T]):
    """A bounded FIFO between two stages.

    In the default (lossy) mode a put into a full queue drops the oldest item and counts it, so
    the producer (ultimately the camera) never blocks and memory never grows. In lossless mode a
    put waits for room: used when replaying a recording at maximum speed, where there is no camera
    to fall behind and every frame should come out.
    """

    def __init__(self, name: str, maxsize: int, *, lossless: bool = False) -> None:
        if maxsize < 1:
            raise ValueError(f"queue {name!r}: maxsize must be at least 1, got {maxsize}")
        self.name = name
        self.maxsize = maxsize
        self.lossless = lossless
        self.dropped = 0
        self._queue: asyncio.Queue[T | EndOfStream] = asyncio.Queue(maxsize)
        self._closed = False

    def qsize(self) -> int:
        return self._queue.qsize()

    async def put(self, item: T) -> None:
        if self._closed:
            raise RuntimeError(f"queue {self.name!r} is closed")
        if self.lossless:
            await self._queue.put(item)
            return
        self._make_room()
        self._queue.put_nowait(item)

    async def close(self) -> None:
        """Tell the consumer nothing more comes. Waits for room in lossless mode."""
        if self._closed:
            return
        self._closed = True
        if self.lossless:
            await self._queue.put(END)
        else:
            self._make_room()
            self._queue.put_nowait(END)

    async def get(self) -> T | EndOfStream:
        return await self._queue.get()

    def _make_room(self) -> None:
        while self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
