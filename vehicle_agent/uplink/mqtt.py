"""Uplink stage: `MqttUplink`, the fleet link over MQTT 5: outbox → broker, commands → handlers.

The pipeline never waits on the network: `on_event` and `on_frame` only add to in-memory lists
that a writer task commits to the outbox (SQLite, on its own thread) within a loop turn; a
sender task publishes from the outbox and a row is deleted only on a PUBACK with a reason code
below 0x80. A reason code ≥ 0x80 is an error: the message is dropped and reported (a few
transient codes are retried first), never retried forever.

paho-mqtt is driven from the event loop directly, the way aiomqtt does it (socket callbacks,
`loop_read`/`loop_write`/`loop_misc`), because aiomqtt's `publish()` does not tell the PUBACK
reason code, and a refused publish must not count as delivered. Each connection attempt uses a
fresh paho client: its in-memory session is disposable, the outbox is the truth.

Incoming messages are acknowledged by us, in arrival order, not by paho on receipt: a command
only once it is answered (or has started, in the background). With the Receive Maximum we
announce, that is the backpressure that keeps a burst of commands in the broker's session
instead of overflowing our queue, and a command cut short by a crash is delivered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import ssl
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import TypeAdapter, ValidationError

from vehicle_agent import __version__
from vehicle_agent.backoff import Backoff
from vehicle_agent.compat import TaskGroup
from vehicle_agent.config import (
    AgentConfig,
    Config,
    ConfigError,
    EnhancerConfig,
    MqttUplinkConfig,
    PassthroughEnhancerConfig,
)
from vehicle_agent.events import EventBus
from vehicle_agent.records import Event, FrameRecord, JsonValue
from vehicle_agent.secrets import SecretError, SecretValue, read_secret
from vehicle_agent.update.updater import ModelUpdater
from vehicle_agent.uplink.base import PipelineHooks, Uplink
from vehicle_agent.uplink.commands import (
    COMMAND_WINDOW,
    Admitted,
    CommandFailedError,
    CommandProcessor,
    Handler,
    IncomingCommand,
    Outcome,
    SettingsError,
    apply_settings,
    current_settings,
)
from vehicle_agent.uplink.discovery import CONTENT_TYPE as JSON_CONTENT_TYPE
from vehicle_agent.uplink.discovery import discovery_messages
from vehicle_agent.uplink.link import ConnectError, Link, UplinkError, nothing, tls_context
from vehicle_agent.uplink.outbox import (
    Outbox,
    OutboxError,
    OutMessage,
    StoredMessage,
    WriteResult,
)
from vehicle_agent.uplink.telemetry import SystemSampler, TelemetryAggregator
from vehicle_agent.uplink.topics import (
    ONLINE,
    CaptureFramesArgs,
    CaptureFramesResult,
    CleanLensArgs,
    EventMessage,
    MessageClass,
    NoArgs,
    OutboxStatus,
    PingResult,
    SetConfigArgs,
    SetConfigResult,
    SetEnhancementArgs,
    SetEnhancementResult,
    StatusResult,
    Telemetry,
    Topics,
    UplinkStatus,
    WithdrawUpdateArgs,
    WithdrawUpdateResult,
)
from vehicle_agent.uplink.uploads import UploadJob, UploadPolicy, encode_upload, new_upload_id
from vehicle_agent.validation import describe_validation

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_CODES = frozenset({0x80, 0x91, 0x97})
"""PUBACK codes worth another try: unspecified error, packet id in use, quota exceeded."""
MAX_PUBLISH_ATTEMPTS = 5
PURGE_EVERY_S = 60.0
REFUSED_EVENT_EVERY_S = 60.0
CLEANING_STARTED = "cleaning_started"
CLEANING_FINISHED = "cleaning_finished"
"""Events of the cleaning controller (its issue defines them) that trigger the uploads of the
frames before and after a cleaning; a `clean_lens` command triggers them itself."""
STABLE_LINK_S = 10.0
"""A link up this long resets the reconnect backoff."""
UPLOAD_QUEUE = 8

_ENHANCER_CONFIG: TypeAdapter[Any] = TypeAdapter(EnhancerConfig)


@dataclass
class _Ledger:
    """Command ids and first replies, in the outbox database (see `CommandLedger`)."""

    uplink: MqttUplink

    async def first_reply(self, command_id: str) -> tuple[bool, bytes | None]:
        outbox = self.uplink.outbox
        return await self.uplink.db(outbox.command_reply, command_id)

    async def started(self, command_id: str, name: str) -> bool:
        outbox = self.uplink.outbox
        return await self.uplink.db(outbox.command_started, command_id, name)

    async def finished(self, command_id: str | None, reply: OutMessage) -> None:
        outbox = self.uplink.outbox
        result = await self.uplink.db(outbox.command_finished, command_id, reply)
        self.uplink.note_write(result)


class MqttUplink(Uplink):
    """The fleet link: telemetry, events, frame uploads and commands over MQTT 5."""

    name = "mqtt"

    def __init__(
        self,
        config: MqttUplinkConfig,
        agent: AgentConfig,
        events: EventBus,
        *,
        outbox_path: Path,
        password: SecretValue | None = None,
        tls: ssl.SSLContext | None = None,
        full_config: Config | None = None,
    ) -> None:
        self.config = config
        self.settings = config
        """`config` with the changes `set_config` made (persisted in the outbox database)."""
        self.agent = agent
        self.events = events
        self.topics = Topics(config.topic_prefix, agent.vehicle_id, agent.camera_id)
        self._discovery = (
            discovery_messages(
                config.home_assistant, self.topics, agent.vehicle_id, agent.camera_id
            )
            if config.home_assistant.enabled
            else []
        )
        """Home Assistant discovery configs, published retained on every connection."""
        self.outbox_path = outbox_path
        self._password = password
        self._tls = tls
        _, self._host, self._port = config.address()
        self._hooks: PipelineHooks | None = None
        self._outbox: Outbox | None = None
        self._db_executor = ThreadPoolExecutor(1, thread_name_prefix="uplink-db")
        self._connect_executor = ThreadPoolExecutor(1, thread_name_prefix="uplink-connect")
        # Filled on the loop, committed by the writer task.
        self._pending: list[OutMessage] = []
        self._pending_counters: dict[str, int] = {}
        self._acked: list[int] = []
        self._refused: list[int] = []
        self._retry: list[int] = []
        self._busy: set[int] = set()
        """Rows published and not yet deleted (in flight, or acknowledged and being deleted)."""
        self._dirty = asyncio.Event()
        self._wake = asyncio.Event()
        self._link: Link | None = None
        self._aggregator = TelemetryAggregator(agent.vehicle_id, agent.camera_id)
        self._uploads = UploadPolicy(config.upload)
        self._upload_queue: asyncio.Queue[UploadJob] = asyncio.Queue(UPLOAD_QUEUE)
        self._commands: asyncio.Queue[IncomingCommand] = asyncio.Queue(COMMAND_WINDOW)
        self._processor = CommandProcessor(
            self.topics,
            agent.vehicle_id,
            _Ledger(self),
            self._handlers(),
            max_bytes=config.command_max_bytes,
        )
        self._command_tasks: set[asyncio.Task[None]] = set()
        """Background commands running now (`clean_lens`, `set_enhancement`)."""
        self._sampler: SystemSampler | None = None
        self._telemetry_seq = 0
        self._event_seq = 0
        self._last_telemetry: Telemetry | None = None
        self._dropped: dict[str, dict[str, int]] = {}
        self._dropped_total = 0
        """Dropped since the outbox was created; `stats()` reads it from another thread."""
        self._drops_to_report: Counter[str] = Counter()
        self._refused_reported: dict[tuple[str, int], float] = {}
        self._properties_cache: dict[tuple[str | None, int], Properties] = {}
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        self._cleaning_by_command = False
        self._t_video = 0.0
        self.connected = False
        self.connects = 0
        self.sent = 0
        self.uploads_dropped = 0
        self.commands_busy = 0
        self.write_failures = 0
        self._wanted: set[str] = set()
        """Extra subscriptions (model updates), made again on every connection."""
        self._subscribing: set[asyncio.Task[None]] = set()
        self.updates: ModelUpdater | None = None
        if full_config is not None and full_config.update.enabled:
            self.updates = ModelUpdater(full_config, self.topics, self._emit)
            self.updates.subscriptions = self
            self.updates.flushed = self.flushed

    @classmethod
    def from_config(
        cls, config: Config, events: EventBus, *, outbox_path: Path | None = None
    ) -> MqttUplink:
        """Resolve the password credential and TLS files; errors name the config key."""
        uplink = config.uplink
        if not isinstance(uplink, MqttUplinkConfig):
            raise ConfigError(None, "uplink.type", "not an MQTT uplink")
        password = None
        if uplink.password_credential is not None:
            try:
                password = read_secret(uplink.password_credential)
            except SecretError as exc:
                raise ConfigError(None, "uplink.password_credential", str(exc)) from None
        tls = None
        if uplink.address()[0]:
            try:
                tls = tls_context(uplink)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(None, "uplink.ca_file", f"cannot load TLS files: {exc}") from None
        path = outbox_path or uplink.outbox.path or config.agent.state_dir / "uplink.sqlite3"
        return cls(
            uplink,
            config.agent,
            events,
            outbox_path=path,
            password=password,
            tls=tls,
            full_config=config,
        )

    # -- the Uplink interface -----------------------------------------------------------------

    def attach(self, hooks: PipelineHooks) -> None:
        self._hooks = hooks
        if self.updates is not None:
            self.updates.reload = hooks.reload_models

    async def start(self) -> None:
        try:
            self._outbox, purged = await self.db(self._open_outbox)
        except (OutboxError, sqlite3.Error) as exc:
            # Degrade: the pipeline runs on without a fleet link, and says so.
            logger.error("fleet link disabled: %s", exc)  # noqa: TRY400 - the reason is the message
            self._emit("uplink_lost", broker=self.config.broker, reason=str(exc), retry_in_s=None)
            return
        self._drops_to_report.update(f"{k.value}:{r}" for k, r, _ in purged.dropped)
        self._sampler = await asyncio.to_thread(SystemSampler)
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="uplink")

    def on_event(self, event: Event) -> None:
        self._t_video = max(self._t_video, event.t)
        if self._outbox is None:
            return
        if not self._cleaning_by_command:
            if event.type == CLEANING_STARTED:
                for job in self._uploads.cleaning_started():
                    self._queue_upload(job)
            elif event.type == CLEANING_FINISHED:
                self._uploads.cleaning_finished()
        self._event_seq += 1
        message = EventMessage(
            vehicle_id=self.agent.vehicle_id,
            camera_id=self.agent.camera_id,
            seq=self._event_seq,
            time=round(time.time(), 3),
            type=event.type,
            t=round(event.t, 6),
            frame=event.frame,
            data=dict(event.data),
        )
        self._enqueue(
            [
                OutMessage(
                    MessageClass.EVENT, self.topics.events, message.model_dump_json().encode()
                )
            ],
            {"event_seq": self._event_seq},
        )

    async def on_frame(self, record: FrameRecord) -> None:
        self._t_video = record.frame.t_video
        if self._outbox is None:
            return
        self._aggregator.on_frame(record)
        for job in self._uploads.on_frame(record):
            self._queue_upload(job)

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        try:
            if self._outbox is not None and self._runner is not None:
                await self._close_running()
        finally:
            self._connect_executor.shutdown(wait=False, cancel_futures=True)
            if self._outbox is not None:
                outbox, self._outbox = self._outbox, None
                with contextlib.suppress(sqlite3.Error):
                    await self.db(outbox.close)
            await asyncio.to_thread(self._db_executor.shutdown)
            if self.updates is not None:
                await self.updates.close()

    async def _close_running(self) -> None:
        # Background commands end first, so that their `interrupted` replies can still leave;
        # then a last snapshot, so that even a short run reports, then what can leave in time.
        await self._stop_commands()
        await self._emit_telemetry()
        await self._write_pending()
        deadline = time.monotonic() + self.settings.drain_on_close_s
        while self.connected and self.outbox.pending > 0 and time.monotonic() < deadline:
            self._dirty.set()
            await asyncio.sleep(0.02)
        link = self._link
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        if link is not None:
            await link.close(self.topics.status)
        self.connected = False
        await self._write_pending()

    def stats(self) -> Mapping[str, float]:
        outbox = self._outbox
        return {
            "connected": float(self.connected),
            "connects": float(self.connects),
            "sent": float(self.sent),
            "outbox_pending": float(outbox.pending if outbox else 0),
            "outbox_bytes": float(outbox.pending_bytes if outbox else 0),
            "dropped": float(self._dropped_total),
            "telemetry_seq": float(self._telemetry_seq),
        }

    # -- outbox -------------------------------------------------------------------------------

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            raise UplinkError("the outbox is not open")
        return self._outbox

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` on the outbox's thread (SQLite never blocks the loop)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db_executor, functools.partial(fn, *args))

    def _open_outbox(self) -> tuple[Outbox, WriteResult]:
        o = self.config.outbox
        ttl = {
            MessageClass.REPLY: o.ttl_reply_s,
            MessageClass.EVENT: o.ttl_event_s,
            MessageClass.TELEMETRY: o.ttl_telemetry_s,
            MessageClass.FRAME: o.ttl_frame_s,
        }
        outbox = Outbox(self.outbox_path, int(o.budget_mb * 2**20), ttl, synchronous=o.synchronous)
        try:
            self._claim(outbox)
            self._telemetry_seq = outbox.counter("telemetry_seq")
            self._event_seq = outbox.counter("event_seq")
            overrides = outbox.settings()
            for key, value in overrides.items():
                try:
                    self.settings = apply_settings(self.settings, {key: value})
                except SettingsError as exc:
                    logger.warning("dropping a setting saved by set_config: %s", exc)
                    outbox.forget_settings([key])
            self._set_ttls(outbox)
            self._uploads.update(self.settings.upload)
            outbox.forget_commands(self.config.command_memory_s)
            purged = WriteResult([], outbox.purge_expired())
            self._dropped = outbox.stats().dropped
            self._dropped_total = sum(sum(r.values()) for r in self._dropped.values())
        except BaseException:
            outbox.close()
            raise
        logger.info(
            "outbox %s: %d messages waiting (%d bytes); telemetry seq %d",
            self.outbox_path,
            outbox.pending,
            outbox.pending_bytes,
            self._telemetry_seq,
        )
        return outbox, purged

    def _claim(self, outbox: Outbox) -> None:
        """Make the outbox this camera's; one of the single-camera layout is migrated: its
        stored messages move to the camera's topics and the old retained `status` is cleared."""
        topics = self.topics
        claim = outbox.claim(topics.vehicle_id, topics.camera_id, topics.migrated)
        if not claim.legacy:
            return
        clear = OutMessage(
            MessageClass.EVENT, topics.legacy_status, b"", retain=True, content_type=None
        )
        outbox.write([clear])
        logger.warning(
            "outbox %s: migrated from the single-camera topic layout to %s/… (%d stored messages "
            "moved; the retained %s is cleared)",
            self.outbox_path,
            topics.root,
            claim.migrated,
            topics.legacy_status,
        )

    def _set_ttls(self, outbox: Outbox) -> None:
        o = self.settings.outbox
        outbox.ttl_s.update(
            {
                MessageClass.REPLY: o.ttl_reply_s,
                MessageClass.EVENT: o.ttl_event_s,
                MessageClass.TELEMETRY: o.ttl_telemetry_s,
                MessageClass.FRAME: o.ttl_frame_s,
            }
        )

    def _enqueue(
        self, messages: list[OutMessage], counters: Mapping[str, int] | None = None
    ) -> None:
        self._pending.extend(messages)
        for name, value in (counters or {}).items():
            self._pending_counters[name] = max(value, self._pending_counters.get(name, 0))
        self._dirty.set()

    async def flushed(self) -> None:
        """Return once every message queued so far is written to the outbox (or counted lost):
        the outbox's one thread runs writes in order, so an empty job after them marks the end."""
        if self._outbox is None:
            return
        await self._write_pending()
        await self.db(nothing)

    async def _writer(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self._write_pending()

    async def _write_pending(self) -> None:
        messages, self._pending = self._pending, []
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
                by_reason = self._dropped.setdefault(klass.value, {})
                by_reason["write_failed"] = by_reason.get("write_failed", 0) + count
                self._dropped_total += count
                self._drops_to_report[f"{klass.value}:write_failed"] += count
            self._acked[:0] = acked
            self._refused[:0] = refused
            self._retry[:0] = retry
            return
        self._busy.difference_update(acked, refused, retry)
        self.note_write(result)

    def note_write(self, result: WriteResult) -> None:
        """Count what a write dropped; wake the sender for what it stored."""
        for klass, reason, count in result.dropped:
            by_reason = self._dropped.setdefault(klass.value, {})
            by_reason[reason] = by_reason.get(reason, 0) + count
            self._dropped_total += count
            self._drops_to_report[f"{klass.value}:{reason}"] += count
        self._wake.set()

    def _queue_upload(self, job: UploadJob) -> None:
        try:
            self._upload_queue.put_nowait(job)
        except asyncio.QueueFull:
            self.uploads_dropped += 1

    # -- background tasks ---------------------------------------------------------------------

    async def _run(self) -> None:
        async with TaskGroup() as tg:
            for name, factory in (
                ("uplink-outbox", self._writer),
                ("uplink-connection", self._connection_loop),
                ("uplink-telemetry", self._telemetry_loop),
                ("uplink-commands", self._command_loop),
                ("uplink-uploads", self._upload_loop),
                *([("uplink-updates", self.updates.run)] if self.updates is not None else []),
            ):
                tg.create_task(self._supervised(name, factory), name=name)

    async def _supervised(self, name: str, factory: Callable[[], Any]) -> None:
        """Run a task; an unexpected failure is logged and the task restarted a second later."""
        while True:
            try:
                await factory()
            except Exception:
                logger.exception("uplink task %s failed; restarting it", name)
                await asyncio.sleep(1.0)
            else:
                return

    async def _connection_loop(self) -> None:
        config = self.config
        backoff = Backoff(config.reconnect_initial_s, config.reconnect_max_s)
        attempts = 0
        lost_at: float | None = None
        ever_connected = False
        reported = False
        while True:
            attempts += 1
            link = Link(
                client_id=self.topics.client_id,
                username=config.username,
                password=self._password,
                tls=self._tls,
                will_topic=self.topics.status,
                keepalive=config.keepalive_s,
                connect_timeout=config.connect_timeout_s,
                on_message=self._on_message,
                on_lost=self._wake.set,
            )
            self._link = link
            try:
                await link.connect(
                    self._host,
                    self._port,
                    config.session_expiry_s,
                    self._max_packet(),
                    self._connect_executor,
                )
            except ConnectError as exc:
                link.abandon()
                reason = exc.reason
            else:
                self.connects += 1
                connected_at = time.monotonic()
                self._emit(
                    "uplink_connected",
                    broker=config.broker,
                    attempts=attempts,
                    outage_s=round(time.monotonic() - lost_at, 3)
                    if ever_connected and lost_at is not None
                    else None,
                    pending=self.outbox.pending,
                )
                attempts = 0
                reported = False
                ever_connected = True
                reason = await self._serve(link)
                lost_at = None
                # A link that drops at once (another client with our id, a broker that kicks
                # us) must not turn the backoff into a tight loop.
                if time.monotonic() - connected_at >= STABLE_LINK_S:
                    backoff.reset()
            self._link = None
            if lost_at is None:
                lost_at = time.monotonic()
            delay = backoff.next_delay()
            if not reported:
                reported = True
                self._emit(
                    "uplink_lost", broker=config.broker, reason=reason, retry_in_s=round(delay, 3)
                )
            else:
                logger.info("fleet link: %s; retrying in %.1f s", reason, delay)
            await asyncio.sleep(delay)

    async def _serve(self, link: Link) -> str:
        """Subscribe to commands, announce `online`, send from the outbox until the link drops."""
        self.connected = True
        sender = asyncio.create_task(self._sender(link), name="uplink-sender")
        try:
            link.publish(
                self.topics.status,
                ONLINE,
                retain=True,
                on_ack=self._status_acked,
            )
            self._announce(link)
            # The camera's commands and the vehicle's, which every camera obeys: one round trip.
            command_topics = (self.topics.commands, self.topics.vehicle_commands)
            try:
                codes = await link.subscribe(*command_topics)
            except (UplinkError, TimeoutError) as exc:
                link.abandon()
                return f"subscribe failed: {exc}"
            for topic, code in zip(command_topics, codes, strict=False):
                if code.is_failure:
                    self._refused_event(topic, "subscription", code)
            for topic_filter in sorted(self._wanted):
                self._subscribe_soon(link, topic_filter)
            return await asyncio.shield(link.lost)
        finally:
            self.connected = False
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            self._busy.difference_update(link.inflight.values())
            link.inflight.clear()

    def _announce(self, link: Link) -> None:
        """Home Assistant discovery configs (retained, JSON), when `[uplink.home_assistant]`."""
        if not self._discovery:
            return
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ContentType = JSON_CONTENT_TYPE
        for topic, payload in self._discovery:

            def acked(code: ReasonCode, topic: str = topic) -> None:
                if code.is_failure:
                    self._refused_event(topic, "discovery", code)

            link.publish(topic, payload, retain=True, properties=properties, on_ack=acked)

    def _status_acked(self, code: ReasonCode) -> None:
        if code.is_failure:
            self._refused_event(self.topics.status, "status", code)

    async def _sender(self, link: Link) -> None:
        """Keep the window of unacknowledged messages full, highest priority first.

        Rows are read ahead (up to two windows) so that the outbox query is not in the path
        between an acknowledgement and the next publish.
        """
        ready: deque[StoredMessage] = deque()
        while not link.lost.done():
            self._wake.clear()
            window = min(self.settings.max_inflight, link.window)
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
            self._refused_event(stored.message.topic, stored.message.message_class.value, code)
        self._dirty.set()
        self._wake.set()

    def _refused_event(self, topic: str, message_class: str, code: ReasonCode) -> None:
        key = (message_class, code.value)
        now = time.monotonic()
        last = self._refused_reported.get(key)
        if last is not None and now - last < REFUSED_EVENT_EVERY_S:
            logger.debug("broker refused %s: %s", topic, code)
            return
        self._refused_reported[key] = now
        self._emit(
            "uplink_refused",
            topic=topic,
            message_class=message_class,
            reason_code=code.value,
            reason=str(code),
        )

    # -- telemetry ----------------------------------------------------------------------------

    async def _telemetry_loop(self) -> None:
        next_at = time.monotonic() + self.settings.telemetry_interval_s
        next_purge = time.monotonic() + PURGE_EVERY_S
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await self._emit_telemetry()
            now = time.monotonic()
            next_at = max(next_at + self.settings.telemetry_interval_s, now)
            if now >= next_purge:
                next_purge = now + PURGE_EVERY_S
                self.note_write(WriteResult([], await self.db(self.outbox.purge_expired)))
                await self.db(self.outbox.reclaim)
            self._report_drops()

    async def _emit_telemetry(self) -> None:
        assert self._sampler is not None  # noqa: S101 - set by start()
        system = await asyncio.to_thread(self._sampler.sample)
        hooks = self._hooks
        counters = hooks.counters() if hooks is not None else {}
        read_module = None if hooks is None else hooks.module_temperatures
        self._telemetry_seq += 1
        seq = self._telemetry_seq
        telemetry = self._aggregator.snapshot(
            seq=seq,
            now_wall=time.time(),
            counters=counters,
            system=system,
            uplink=self._status_now(),
            module_temperatures=None if read_module is None else read_module(),
        )
        self._last_telemetry = telemetry
        self._enqueue(
            [
                OutMessage(
                    MessageClass.TELEMETRY,
                    self.topics.telemetry,
                    telemetry.model_dump_json().encode(),
                )
            ],
            {"telemetry_seq": seq},
        )

    def _status_now(self) -> UplinkStatus:
        outbox = self.outbox
        return UplinkStatus(
            connected=self.connected,
            connects=self.connects,
            sent=self.sent,
            outbox=OutboxStatus(
                pending=outbox.pending,
                pending_bytes=outbox.pending_bytes,
                dropped={k: dict(v) for k, v in self._dropped.items()},
            ),
        )

    def _report_drops(self) -> None:
        if not self._drops_to_report:
            return
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self._drops_to_report.items()))
        self._drops_to_report.clear()
        self._emit("outbox_dropped", counts=counts, pending=self.outbox.pending)

    # -- uploads ------------------------------------------------------------------------------

    async def _upload_loop(self) -> None:
        while True:
            job = await self._upload_queue.get()
            upload_id = new_upload_id()
            try:
                meta, messages = await asyncio.to_thread(
                    encode_upload,
                    job,
                    self.topics,
                    self.agent.vehicle_id,
                    self.settings.upload,
                    upload_id,
                )
            except Exception:
                logger.exception("frame upload %s could not be encoded", upload_id)
                self.uploads_dropped += 1
                continue
            self._enqueue(messages)
            self._emit(
                "frame_upload_queued",
                upload_id=upload_id,
                reason=job.reason,
                bytes=meta.size_bytes,
                chunks=meta.chunks,
            )

    # -- commands -----------------------------------------------------------------------------

    def _on_message(self, message: mqtt.MQTTMessage, settle: Callable[[], None]) -> None:
        if not self.topics.is_command_topic(message.topic):
            if self.updates is not None and self.topics.is_update_topic(message.topic):
                self.updates.on_message(message.topic, bytes(message.payload))
            settle()
            return
        properties = message.properties
        response_topic = getattr(properties, "ResponseTopic", None)
        correlation = getattr(properties, "CorrelationData", None)
        incoming = IncomingCommand(bytes(message.payload), response_topic, correlation, settle)
        try:
            self._commands.put_nowait(incoming)
        except asyncio.QueueFull:
            # Only a broker that ignores our Receive Maximum gets here.
            self.commands_busy += 1
            logger.warning("command queue full: a command was refused with 'busy'")
            outcome = self._processor.refusal(
                incoming, "busy", f"{COMMAND_WINDOW} commands are waiting; send it again later"
            )
            self._enqueue([outcome.reply])
            self._command_handled(outcome)
            settle()

    def _command_handled(self, outcome: Outcome) -> None:
        self._emit(
            "command_handled",
            id=outcome.id,
            name=outcome.name,
            ok=outcome.ok,
            error=outcome.error,
            duplicate=outcome.duplicate,
        )

    async def _command_loop(self) -> None:
        """Check the commands in arrival order and run them: short ones here, one at a time,
        background ones in tasks of their own; acknowledge each once it is answered (started,
        in the background)."""
        processor = self._processor
        try:
            while True:
                incoming = await self._commands.get()
                try:
                    admitted = await processor.admit(incoming)
                    if isinstance(admitted, Outcome):
                        self._command_handled(admitted)
                    elif admitted.background:
                        task = asyncio.get_running_loop().create_task(
                            self._run_command(admitted), name=f"uplink-command-{admitted.name}"
                        )
                        self._command_tasks.add(task)
                        task.add_done_callback(self._command_tasks.discard)
                    else:
                        try:
                            await self._run_command(admitted)
                        finally:
                            incoming.settle()  # answered (`interrupted` when cancelled)
                except Exception as exc:
                    # A bug must not leave a command unanswered (nor end this task).
                    logger.exception("command could not be handled")
                    outcome = processor.refusal(incoming, "failed", f"{type(exc).__name__}: {exc}")
                    self._enqueue([outcome.reply])
                    self._command_handled(outcome)
                # Not when cancelled (the daemon stops) before it was answered: unacknowledged,
                # the broker delivers it again at the next connection. (Settling is idempotent.)
                incoming.settle()
        finally:
            await self._stop_commands()

    async def _run_command(self, admitted: Admitted) -> None:
        try:
            outcome = await self._processor.execute(admitted)
        except Exception as exc:
            logger.exception("command %s (%s) could not be answered", admitted.id, admitted.name)
            outcome = self._processor.refusal(
                admitted.incoming, "failed", f"{type(exc).__name__}: {exc}"
            )
            self._enqueue([outcome.reply])
        self._command_handled(outcome)

    async def _stop_commands(self) -> None:
        """Cancel the background commands; each stores its `interrupted` reply as it ends."""
        tasks = list(self._command_tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _handlers(self) -> dict[str, Handler]:
        return {
            "ping": self._cmd_ping,
            "get_status": self._cmd_get_status,
            "clean_lens": self._cmd_clean_lens,
            "clear_lens_service": self._cmd_clear_lens_service,
            "set_config": self._cmd_set_config,
            "capture_frames": self._cmd_capture_frames,
            "set_enhancement": self._cmd_set_enhancement,
            "withdraw_update": self._cmd_withdraw_update,
        }

    def _uptime(self) -> float:
        return round(time.monotonic() - self._aggregator.started_mono, 3)

    async def _cmd_ping(self, _args: NoArgs, _cid: str) -> PingResult:
        return PingResult(time=round(time.time(), 3), uptime_s=self._uptime())

    async def _cmd_get_status(self, _args: NoArgs, _cid: str) -> StatusResult:
        return StatusResult(
            version=__version__,
            config_digest=self._hooks.config_digest if self._hooks else "",
            uptime_s=self._uptime(),
            connected=self.connected,
            settings=current_settings(self.settings),
            telemetry=self._last_telemetry,
        )

    async def _cmd_clean_lens(self, args: CleanLensArgs, _cid: str) -> Mapping[str, Any]:
        clean = self._hooks.clean_lens if self._hooks else None
        if clean is None:
            raise CommandFailedError("unavailable", "no lens cleaner configured on this vehicle")
        self._cleaning_by_command = True
        try:
            for job in self._uploads.cleaning_started():
                self._queue_upload(job)
            result = await clean(args.duration_s)
            self._uploads.cleaning_finished()
        finally:
            self._cleaning_by_command = False
        return result

    async def _cmd_clear_lens_service(self, _args: NoArgs, _cid: str) -> Mapping[str, Any]:
        clear = self._hooks.clear_lens_service if self._hooks else None
        if clear is None:
            raise CommandFailedError("unavailable", "no lens cleaner configured on this vehicle")
        return clear()

    async def _cmd_set_config(self, args: SetConfigArgs, _cid: str) -> SetConfigResult:
        try:
            settings = apply_settings(self.settings, args.changes)
        except SettingsError as exc:
            raise CommandFailedError("invalid_args", str(exc)) from None
        outbox = self.outbox
        await self.db(outbox.save_settings, args.changes)
        self.settings = settings
        await self.db(self._set_ttls, outbox)
        self._uploads.update(settings.upload)
        logger.info("set_config applied and saved: %s", args.changes)
        return SetConfigResult(settings=current_settings(settings))

    async def _cmd_capture_frames(self, args: CaptureFramesArgs, cid: str) -> CaptureFramesResult:
        return CaptureFramesResult(scheduled=self._uploads.request(args.count, args.content, cid))

    async def _cmd_set_enhancement(
        self, args: SetEnhancementArgs, _cid: str
    ) -> SetEnhancementResult:
        switch = self._hooks.set_enhancer if self._hooks else None
        if switch is None:
            raise CommandFailedError("unavailable", "enhancement cannot be switched here")
        backend: Any = None
        if args.mode == "bypass":
            backend = PassthroughEnhancerConfig()
        elif args.backend is not None:
            try:
                backend = _ENHANCER_CONFIG.validate_python(args.backend)
            except ValidationError as exc:
                raise CommandFailedError(
                    "invalid_args", "backend." + describe_validation(exc)
                ) from None
        return SetEnhancementResult(backend=await switch(backend))

    async def _cmd_withdraw_update(
        self, args: WithdrawUpdateArgs, _cid: str
    ) -> WithdrawUpdateResult:
        if self.updates is None:
            raise CommandFailedError("unavailable", "model updates are off on this vehicle")
        done = await self.updates.withdraw(args.model, args.reason)
        return WithdrawUpdateResult.model_validate(done)

    # -- extra subscriptions (model updates) --------------------------------------------------

    def _max_packet(self) -> int:
        """The Maximum Packet Size announced to the broker: commands, and update chunks."""
        limit = 4 * self.config.command_max_bytes + 1024
        if self.updates is not None:
            limit = max(limit, self.updates.settings.max_chunk_bytes + 1024)
        return limit

    def want(self, topic_filter: str) -> None:
        """Subscribe to `topic_filter` now if connected, and after every reconnect."""
        self._wanted.add(topic_filter)
        link = self._link
        if link is not None and link.up:
            self._subscribe_soon(link, topic_filter)

    def drop(self, topic_filter: str) -> None:
        self._wanted.discard(topic_filter)
        link = self._link
        if link is not None and link.up:
            link.unsubscribe(topic_filter)

    def refresh(self, topic_filter: str) -> None:
        """Subscribe again: the broker re-sends the retained messages the filter matches."""
        self.want(topic_filter)

    def _subscribe_soon(self, link: Link, topic_filter: str) -> None:
        async def subscribe() -> None:
            try:
                codes = await link.subscribe(topic_filter)
            except (UplinkError, TimeoutError) as exc:
                logger.warning("subscribing to %s failed: %s", topic_filter, exc)
                return
            if codes and codes[0].is_failure:
                self._refused_event(topic_filter, "subscription", codes[0])

        task = asyncio.get_running_loop().create_task(subscribe(), name="uplink-subscribe")
        self._subscribing.add(task)
        task.add_done_callback(self._subscribing.discard)

    # -- events -------------------------------------------------------------------------------

    def _emit(self, type_: str, **data: JsonValue) -> None:
        self.events.emit(type_, self._t_video, None, **data)
