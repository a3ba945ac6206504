"""Uplink stage: frame uploads, the fleet's training data: which frames, as chunked JPEG, how often.

`UploadPolicy` decides on the event loop (cheap: a few comparisons per frame) and keeps the
last few records for "before cleaning"; `encode_upload` makes the JPEG and its messages and is
blocking (run it in a thread). Every upload passes one token bucket, `max_frames_per_hour`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy.typing as npt

from vehicle_agent.records import FrameRecord
from vehicle_agent.uplink.outbox import OutMessage
from vehicle_agent.uplink.settings import UploadConfig
from vehicle_agent.uplink.topics import (
    AdhesionSummary,
    FrameContent,
    FrameMeta,
    MessageClass,
    QualitySummary,
    Topics,
    UploadReason,
)

logger = logging.getLogger(__name__)

RING_FRAMES = 10
"""Records kept for 'before cleaning' uploads (the config allows at most this many)."""


@dataclass(frozen=True)
class UploadJob:
    record: FrameRecord
    reason: UploadReason
    content: FrameContent
    command_id: str | None
    time: float
    """Wall-clock time of the capture, Unix seconds."""


class TokenBucket:
    """`rate_per_s` tokens a second, at most `capacity` saved up."""

    def __init__(self, capacity: float, rate_per_s: float, clock: Callable[[], float]) -> None:
        self.capacity = capacity
        self.rate = rate_per_s
        self.clock = clock
        self.tokens = capacity
        self._t = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._t) * self.rate)
        self._t = now

    def take(self, n: int = 1) -> int:
        """Take up to `n` whole tokens; returns how many were taken."""
        self._refill()
        taken = min(n, int(self.tokens))
        self.tokens -= taken
        return taken


def _bucket(settings: UploadConfig, clock: Callable[[], float]) -> TokenBucket:
    per_hour = settings.max_frames_per_hour
    return TokenBucket(min(per_hour, 20), per_hour / 3600.0, clock)


class UploadPolicy:
    """Chooses frames to upload: requested ones, a good one every N s, those around a cleaning."""

    def __init__(
        self,
        settings: UploadConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.wall_clock = wall_clock
        self._bucket = _bucket(settings, clock)
        self._ring: deque[FrameRecord] = deque(maxlen=RING_FRAMES)
        self._requests: deque[tuple[str | None, FrameContent]] = deque()
        self._after_cleaning = 0
        self._last_good: float | None = None
        self.skipped = 0
        """Uploads the rate limit refused."""

    def update(self, settings: UploadConfig) -> None:
        if settings.max_frames_per_hour != self.settings.max_frames_per_hour:
            self._bucket = _bucket(settings, self.clock)
        self.settings = settings

    def is_good(self, record: FrameRecord) -> bool:
        s = self.settings
        quality = record.quality
        if quality is None:
            return False
        if record.adhesion is not None and record.adhesion.score > s.good_max_adhesion:
            return False
        return (
            quality.sharpness >= s.good_min_sharpness
            and s.good_min_brightness <= quality.brightness <= s.good_max_brightness
        )

    def request(self, count: int, content: FrameContent, command_id: str | None) -> int:
        """Upload the next `count` frames; returns how many the rate limit lets through."""
        granted = self._bucket.take(count)
        self.skipped += count - granted
        self._requests.extend([(command_id, content)] * granted)
        return granted

    def cleaning_started(self) -> list[UploadJob]:
        """The frames just before a cleaning (from the ring), within the rate limit."""
        n = self.settings.around_cleaning_frames
        recent = list(self._ring)[-n:] if n else []
        return [
            self._job(r, "before_cleaning", self.settings.content, None)
            for r in recent
            if self._allow()
        ]

    def cleaning_finished(self) -> None:
        self._after_cleaning = self.settings.around_cleaning_frames

    def on_frame(self, record: FrameRecord) -> list[UploadJob]:
        self._ring.append(record)
        jobs: list[UploadJob] = []
        if self._requests:
            command_id, content = self._requests.popleft()
            jobs.append(self._job(record, "request", content, command_id))
        if self._after_cleaning > 0:
            self._after_cleaning -= 1
            if self._allow():
                jobs.append(self._job(record, "after_cleaning", self.settings.content, None))
        every = self.settings.good_frame_every_s
        if every > 0 and not jobs:
            now = self.clock()
            due = self._last_good is None or now - self._last_good >= every
            if due and self.is_good(record) and self._allow():
                self._last_good = now
                jobs.append(self._job(record, "good_frame", self.settings.content, None))
        return jobs

    def _allow(self) -> bool:
        if self._bucket.take(1):
            return True
        self.skipped += 1
        return False

    def _job(
        self, record: FrameRecord, reason: UploadReason, content: FrameContent, cid: str | None
    ) -> UploadJob:
        age = max(0.0, time.monotonic() - record.frame.t_mono)
        return UploadJob(record, reason, content, cid, self.wall_clock() - age)


def new_upload_id() -> str:
    return secrets.token_hex(8)


def encode_upload(
    job: UploadJob,
    topics: Topics,
    vehicle_id: str,
    settings: UploadConfig,
    upload_id: str,
) -> tuple[FrameMeta, list[OutMessage]]:
    """JPEG-encode the frame and split it: one meta message, then the chunks (blocking)."""
    record = job.record
    image: npt.NDArray[Any] = record.frame.image if job.content == "raw" else record.output
    height, width = image.shape[:2]
    if width > settings.max_width:
        height = max(1, round(height * settings.max_width / width))
        width = settings.max_width
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, settings.jpeg_quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed for frame {record.frame.seq}")
    data = encoded.tobytes()
    chunk_size = settings.chunk_kib * 1024
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)] or [b""]
    quality = record.quality
    adhesion = record.adhesion
    meta = FrameMeta(
        vehicle_id=vehicle_id,
        camera_id=topics.camera_id,
        upload_id=upload_id,
        reason=job.reason,
        command_id=job.command_id,
        time=round(job.time, 3),
        frame_seq=record.frame.seq,
        t_video=round(record.frame.t_video, 6),
        content=job.content,
        width=width,
        height=height,
        size_bytes=len(data),
        chunk_size=chunk_size,
        chunks=len(chunks),
        sha256=hashlib.sha256(data).hexdigest(),
        quality=None if quality is None else QualitySummary(**quality.as_dict()),
        adhesion=None
        if adhesion is None
        else AdhesionSummary(score=adhesion.score, covered_fraction=adhesion.covered_fraction),
        condition=None if record.quality is None else record.quality.condition,
        backend=record.enhancer or None,
        model=record.model,
    )
    messages = [
        OutMessage(
            MessageClass.FRAME,
            topics.frame_meta(upload_id),
            meta.model_dump_json().encode(),
            group=upload_id,
        )
    ]
    messages.extend(
        OutMessage(
            MessageClass.FRAME,
            topics.frame_chunk(upload_id, i),
            chunk,
            content_type="image/jpeg",
            group=upload_id,
        )
        for i, chunk in enumerate(chunks)
    )
    return meta, messages


UPLOAD_QUEUE = 8
"""Upload jobs waiting to be encoded; more are dropped and counted."""


class UploadQueue:
    """Frame uploads waiting to be encoded (JPEG, chunked, off the loop) into the outbox."""

    def __init__(
        self,
        topics: Topics,
        vehicle_id: str,
        settings: Callable[[], UploadConfig],
        enqueue: Callable[[list[OutMessage]], None],
        emit: Callable[..., None],
    ) -> None:
        self.topics = topics
        self.vehicle_id = vehicle_id
        self.settings = settings
        self.enqueue = enqueue
        self.emit = emit
        self._queue: asyncio.Queue[UploadJob] = asyncio.Queue(UPLOAD_QUEUE)
        self.dropped = 0
        """Jobs dropped: the queue was full, or the frame could not be encoded."""

    def put(self, job: UploadJob) -> None:
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self) -> None:
        while True:
            job = await self._queue.get()
            upload_id = new_upload_id()
            try:
                meta, messages = await asyncio.to_thread(
                    encode_upload, job, self.topics, self.vehicle_id, self.settings(), upload_id
                )
            except Exception:
                logger.exception("frame upload %s could not be encoded", upload_id)
                self.dropped += 1
                continue
            self.enqueue(messages)
            self.emit(
                "frame_upload_queued",
                upload_id=upload_id,
                reason=job.reason,
                bytes=meta.size_bytes,
                chunks=meta.chunks,
            )
