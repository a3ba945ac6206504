"""The outbox's side of the fleet link: `OutboxPump` commits what the daemon sends to the outbox
and publishes it from there, deleting a row only on a PUBACK below 0x80.

The pipeline never waits on the disk: `enqueue` only adds to in-memory lists that the writer
task (`run_writer`) commits to the outbox (SQLite, on its own thread) within a loop turn. The
sender (`send`, one per connection) keeps the link's window of unacknowledged messages full,
highest priority first. A reason code ≥ 0x80 is an error: the message is dropped and reported (a
few transient codes are retried first), never retried forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from vehicle_agent.records import JsonValue
from vehicle_agent.uplink.link import Link, UplinkError, nothing
from vehicle_agent.uplink.outbox import Outbox, OutMessage, StoredMessage, WriteResult
from vehicle_agent.uplink.settings import OutboxConfig
from vehicle_agent.uplink.topics import MessageClass, OutboxStatus, Topics

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_CODES = frozenset({0x80, 0x91, 0x97})
"""PUBACK codes worth another try: unspecified error, packet id in use, quota exceeded."""
MAX_PUBLISH_ATTEMPTS = 5
REFUSED_EVENT_EVERY_S = 60.0

Emit = Callable[..., None]
"""`emit(type_, **fields)`: an event of the uplink's (`uplink_refused`, `outbox_dropped`)."""


def ttls(o: OutboxConfig) -> dict[MessageClass, float]:
    """Time to live of each message class, from `[uplink.outbox]`."""
    return {
        MessageClass.REPLY: o.ttl_reply_s,
        MessageClass.EVENT: o.ttl_event_s,
        MessageClass.TELEMETRY: o.ttl_telemetry_s,
        MessageClass.FRAME: o.ttl_frame_s,
    }


class OutboxPump:
    """Outbox → broker for one camera: the writer, the sender, drop and refusal accounting."""

    def __init__(self, path: Path, topics: Topics, emit: Emit) -> None:
        self.path = path
        self.topics = topics
        self.emit = emit
        self._outbox: Outbox | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="uplink-db")
        # Filled on the loop, committed by the writer task.
        self.pending: list[OutMessage] = []
        self._pending_counters: dict[str, int] = {}
        self._acked: list[int] = []
        self._refused: list[int] = []
        self._retry: list[int] = []
        self._busy: set[int] = set()
        """Rows published and not yet deleted (in flight, or acknowledged and being deleted)."""
        self._dirty = asyncio.Event()
        self._wake = asyncio.Event()
        self.dropped: dict[str, dict[str, int]] = {}
        self.dropped_total = 0
        """Dropped since the outbox was created; `stats()` reads it from another thread."""
        self._drops_to_report: Counter[str] = Counter()
        self._refused_reported: dict[tuple[str, int], float] = {}
        self._properties_cache: dict[tuple[str | None, int], Properties] = {}
        self.sent = 0
        self.write_failures = 0

    # -- the outbox ---------------------------------------------------------------------------

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            raise UplinkError("the outbox is not open")
        return self._outbox

    @property
    def is_open(self) -> bool:
        return self._outbox is not None

    @property
    def current(self) -> Outbox | None:
        """The outbox if open (for readers on other threads: no exception when closed)."""
        return self._outbox

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` on the outbox's thread (SQLite never blocks the loop)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    def create(self, o: OutboxConfig) -> Outbox:
        """Open the outbox file and make it this camera's (on the outbox's thread). One of the
        single-camera layout is migrated: its stored messages move to the camera's topics and
        the old retained `status` is cleared."""
        outbox = Outbox(self.path, int(o.budget_mb * 2**20), ttls(o), synchronous=o.synchronous)
        try:
            topics = self.topics
            claim = outbox.claim(topics.vehicle_id, topics.camera_id, topics.migrated)
            if claim.legacy:
                clear = OutMessage(
                    MessageClass.EVENT, topics.legacy_status, b"", retain=True, content_type=None
                )
                outbox.write([clear])
                logger.warning(
                    "outbox %s: migrated from the single-camera topic layout to %s/… (%d stored "
                    "messages moved; the retained %s is cleared)",
                    self.path,
                    topics.root,
                    claim.migrated,
                    topics.legacy_status,
                )
        except BaseException:
            outbox.close()
            raise
        return outbox

    def adopt(self, outbox: Outbox, purged: WriteResult) -> None:
        """Take `outbox` (made by `create`) into use; `purged`: what expired while we were off."""
        self._outbox = outbox
        stats = outbox.stats()
        self.dropped = stats.dropped
        self.dropped_total = sum(sum(r.values()) for r in self.dropped.values())
        self._drops_to_report.update(f"{k.value}:{r}" for k, r, _ in purged.dropped)

    async def close(self) -> None:
        """Close the outbox (if open) and its thread."""
        if self._outbox is not None:
            outbox, self._outbox = self._outbox, None
            with contextlib.suppress(sqlite3.Error):
                await self.db(outbox.close)
        await asyncio.to_thread(self._executor.shutdown)

    def status(self) -> OutboxStatus:
        outbox = self.outbox
        return OutboxStatus(
            pending=outbox.pending,
            pending_bytes=outbox.pending_bytes,
            dropped={k: dict(v) for k, v in self.dropped.items()},
        )

    # -- writing ------------------------------------------------------------------------------

    def enqueue(
        self, messages: list[OutMessage], counters: Mapping[str, int] | None = None
    ) -> None:
        """Queue `messages` for the outbox (and persistent counters, highest value kept)."""
        self.pending.extend(messages)
        for name, value in (counters or {}).items():
            self._pending_counters[name] = max(value, self._pending_counters.get(name, 0))
        self._dirty.set()

    def kick(self) -> None:
        """Have the writer and the sender look again."""
        self._dirty.set()

    async def flushed(self) -> None:
        """Return once every message queued so far is written to the outbox (or counted lost):
        the outbox's one thread runs writes in order, so an empty job after them marks the end."""
        if self._outbox is None:
            return
        await self.write_pending()
        await self.db(nothing)

    async def run_writer(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self.write_pending()

    async def write_pending(self) -> None:
        messages, self.pending = self.pending, []
        counters, self._pending_counters = self._pending_counters, {}
        acked, self._acked = self._acked, []
        refused, self._refused = self._refused, []
        retry, self._retry = self._retry, []
        if not (messages or counters or acked or refused or retry):
            return
        try:
            result = await self.db(
                functools.partial(
                    self.outbox.write,
                    messages,
                    acked=acked,
                    refused=refused,
                    retry=retry,
                    counters=counters,
                )
            )
        except sqlite3.Error:
            # Disk full or broken: the acknowledgements are kept for the next write; the new
            # messages are lost and counted (they never reached the outbox).
            logger.exception("outbox write failed; %d messages lost", len(messages))
            self.write_failures += len(messages)
            lost = Counter(m.message_class for m in messages)
            for klass, count in lost.items():
                self._count_drop(klass.value, "write_failed", count)
            self._acked[:0] = acked
            self._refused[:0] = refused
            self._retry[:0] = retry
            return
        self._busy.difference_update(acked, refused, retry)
        self.note_write(result)

    def note_write(self, result: WriteResult) -> None:
        """Count what a write dropped; wake the sender for what it stored."""
        for klass, reason, count in result.dropped:
            self._count_drop(klass.value, reason, count)
        self._wake.set()

    def _count_drop(self, klass: str, reason: str, count: int) -> None:
        by_reason = self.dropped.setdefault(klass, {})
        by_reason[reason] = by_reason.get(reason, 0) + count
        self.dropped_total += count
        self._drops_to_report[f"{klass}:{reason}"] += count

    async def purge(self) -> None:
        """Drop what expired; give the space of sent messages back to the file system."""
        self.note_write(WriteResult([], await self.db(self.outbox.purge_expired)))
        await self.db(self.outbox.reclaim)

    def report_drops(self) -> None:
        """One `outbox_dropped` event for what was dropped since the last one (if anything)."""
        if not self._drops_to_report:
            return
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self._drops_to_report.items()))
        self._drops_to_report.clear()
        self.emit("outbox_dropped", counts=counts, pending=self.outbox.pending)

    # -- sending ------------------------------------------------------------------------------

    def wake(self) -> None:
        """The link went down or came up: have the sender look again."""
        self._wake.set()

    async def send(self, link: Link, max_inflight: Callable[[], int]) -> None:
        """Keep the window of unacknowledged messages full, highest priority first, until the
        link drops.

        Rows are read ahead (up to two windows) so that the outbox query is not in the path
        between an acknowledgement and the next publish.
        """
        ready: deque[StoredMessage] = deque()
        while not link.lost.done():
            self._wake.clear()
            window = min(max_inflight(), link.window)
            while ready and len(link.inflight) < window:
                stored = ready.popleft()
                if stored.id in self._busy:
                    continue
                if not self._publish(link, stored):
                    # paho has no connection: the link is going down; let its callbacks run.
                    ready.appendleft(stored)
                    await asyncio.sleep(0.05)
                    break
            if len(ready) < window:
                exclude = frozenset(self._busy.union(m.id for m in ready))
                batch = await self.db(self.outbox.next_batch, 2 * window - len(ready), exclude)
                ready.extend(batch)
                if batch:
                    continue
            if not ready or len(link.inflight) >= window:
                await self._wake.wait()

    def release(self, link: Link) -> None:
        """The link is gone: what it had in flight may be sent again on the next one."""
        self._busy.difference_update(link.inflight.values())
        link.inflight.clear()

    def _properties(self, message: OutMessage, expires: float) -> Properties:
        """Content type, correlation data, and the expiry: what is left of the time to live
        (to the minute for uncorrelated messages, so their properties can be shared: paho's
        `Properties` costs tens of µs to build)."""
        remaining = max(1, int(expires - time.time()))
        if message.correlation is None and remaining > 120:
            remaining -= remaining % 60
            key = (message.content_type, remaining)
            cached = self._properties_cache.get(key)
            if cached is not None:
                return cached
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.MessageExpiryInterval = remaining
        if message.content_type:
            properties.ContentType = message.content_type
        if message.correlation is not None:
            properties.CorrelationData = message.correlation
            return properties
        if len(self._properties_cache) > 256:
            self._properties_cache.clear()
        self._properties_cache[(message.content_type, remaining)] = properties
        return properties

    def _publish(self, link: Link, stored: StoredMessage) -> bool:
        message = stored.message
        properties = self._properties(message, stored.expires)
        try:
            mid = link.publish(
                message.topic,
                message.payload,
                retain=message.retain,
                properties=properties,
                on_ack=functools.partial(self._acked_by_broker, stored),
            )
        except ValueError:
            logger.exception("cannot publish outbox row %d on %r", stored.id, message.topic)
            self._busy.add(stored.id)
            self._refused.append(stored.id)
            self._dirty.set()
            return True
        if mid is None:
            return False
        link.inflight[mid] = stored.id
        self._busy.add(stored.id)
        return True

    def _acked_by_broker(self, stored: StoredMessage, code: ReasonCode) -> None:
        value = code.value
        if value < 0x80:
            self.sent += 1
            self._acked.append(stored.id)
        elif value in RETRY_CODES and stored.attempts + 1 < MAX_PUBLISH_ATTEMPTS:
            logger.warning("broker refused %s (%s); will retry", stored.message.topic, code)
            self._retry.append(stored.id)
        else:
            self._refused.append(stored.id)
            self.refused_event(stored.message.topic, stored.message.message_class.value, code)
        self._dirty.set()
        self._wake.set()

    def refused_event(self, topic: str, message_class: str, code: ReasonCode) -> None:
        """`uplink_refused`, at most once a minute per message class and reason code."""
        key = (message_class, code.value)
        now = time.monotonic()
        last = self._refused_reported.get(key)
        if last is not None and now - last < REFUSED_EVENT_EVERY_S:
            logger.debug("broker refused %s: %s", topic, code)
            return
        self._refused_reported[key] = now
        fields: dict[str, JsonValue] = {
            "topic": topic,
            "message_class": message_class,
            "reason_code": code.value,
            "reason": str(code),
        }
        self.emit("uplink_refused", **fields)
