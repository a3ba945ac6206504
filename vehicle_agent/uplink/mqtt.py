"""Uplink stage: `MqttUplink`, the fleet link over MQTT 5, the coordinator of its parts.

It owns the connection (`link.py`: one paho client per attempt, jittered reconnect), what the
camera says on it (its `status`, Home Assistant discovery, telemetry, events, frame uploads) and
the subscriptions, and hands the rest to the parts that own their state:
- `OutboxPump` (`pump.py`): outbox → broker, a row deleted only on a PUBACK below 0x80;
- `FleetCommands` (`fleet_commands.py`): the commands, run at most once, and their handlers;
- the model updates it carries (`base.Updates`), built by the composition root and handed in:
  the link routes their messages and keeps their subscriptions, and never imports `update/`.

The pipeline never waits on the network: `on_event` and `on_frame` only add to in-memory lists.
Incoming messages are acknowledged by us, in arrival order, not by paho on receipt (a command only
once it is answered): see `fleet_commands.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import ssl
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from vehicle_agent.backoff import Backoff
from vehicle_agent.compat import TaskGroup
from vehicle_agent.config import AgentConfig, Config, ConfigError, MqttUplinkConfig
from vehicle_agent.events import EventBus
from vehicle_agent.records import Event, FrameRecord, JsonValue
from vehicle_agent.secrets import SecretError, SecretValue, read_secret
from vehicle_agent.uplink.base import PipelineHooks, Updates, UpdatesFactory, Uplink
from vehicle_agent.uplink.commands import SettingsError, apply_settings
from vehicle_agent.uplink.discovery import CONTENT_TYPE as JSON_CONTENT_TYPE
from vehicle_agent.uplink.discovery import discovery_messages
from vehicle_agent.uplink.fleet_commands import FleetCommands
from vehicle_agent.uplink.link import (
    ConnectError,
    KeptSubscriptions,
    Link,
    UplinkError,
    tls_context,
)
from vehicle_agent.uplink.outbox import Outbox, OutboxError, OutMessage, WriteResult
from vehicle_agent.uplink.pump import OutboxPump, ttls
from vehicle_agent.uplink.telemetry import TelemetryAggregator, TelemetryReporter
from vehicle_agent.uplink.topics import (
    ONLINE,
    EventMessage,
    MessageClass,
    Telemetry,
    Topics,
    UplinkStatus,
)
from vehicle_agent.uplink.uploads import UploadJob, UploadPolicy, UploadQueue

logger = logging.getLogger(__name__)

PURGE_EVERY_S = 60.0
CLEANING_STARTED = "cleaning_started"
CLEANING_FINISHED = "cleaning_finished"
"""Events of the cleaning controller (its issue defines them) that trigger the uploads of the
frames before and after a cleaning; a `clean_lens` command triggers them itself."""
STABLE_LINK_S = 10.0
"""A link up this long resets the reconnect backoff."""


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
        updates: UpdatesFactory | None = None,
    ) -> None:
        self.config = config
        self._settings = config
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
        self.hooks: PipelineHooks | None = None
        self.pump = OutboxPump(outbox_path, self.topics, self.emit)
        self._connect_executor = ThreadPoolExecutor(1, thread_name_prefix="uplink-connect")
        self._link: Link | None = None
        self._aggregator = TelemetryAggregator(agent.vehicle_id, agent.camera_id)
        self.telemetry = TelemetryReporter(
            self._aggregator, self.topics, self.pump.enqueue, self._status, lambda: self.hooks
        )
        self.uploads = UploadPolicy(config.upload)
        self.upload_queue = UploadQueue(
            self.topics,
            agent.vehicle_id,
            lambda: self.settings.upload,
            self.pump.enqueue,
            self.emit,
        )
        self.subscriptions = KeptSubscriptions(lambda: self._link, self.pump.refused_event)
        self.updates: Updates | None = updates(self.topics, self.emit) if updates else None
        self.commands = FleetCommands(
            self.topics,
            agent.vehicle_id,
            self.pump,
            self,
            self.emit,
            max_bytes=config.command_max_bytes,
            updates=self.updates,
        )
        self._event_seq = 0
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        self._t_video = 0.0
        self.connected = False
        self.connects = 0
        if self.updates is not None:
            self.updates.bind(self.subscriptions, self.pump.flushed, None)

    @classmethod
    def from_config(
        cls,
        config: Config,
        events: EventBus,
        *,
        outbox_path: Path | None = None,
        updates: UpdatesFactory | None = None,
    ) -> MqttUplink:
        """Resolve the password credential and TLS files; errors name the config key.
        `updates`: what builds the model updater the link carries (the composition root's)."""
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
            updates=updates,
        )

    # -- the Uplink interface -----------------------------------------------------------------

    def attach(self, hooks: PipelineHooks) -> None:
        self.hooks = hooks
        if self.updates is not None:
            self.updates.bind(self.subscriptions, self.pump.flushed, hooks.reload_models)

    async def start(self) -> None:
        try:
            outbox, purged = await self.pump.db(self._open_outbox)
        except (OutboxError, sqlite3.Error) as exc:
            # Degrade: the pipeline runs on without a fleet link, and says so.
            logger.error("fleet link disabled: %s", exc)  # noqa: TRY400 - the reason is the message
            self.emit("uplink_lost", broker=self.config.broker, reason=str(exc), retry_in_s=None)
            return
        self.pump.adopt(outbox, purged)
        await self.telemetry.start()
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="uplink")

    def on_event(self, event: Event) -> None:
        self._t_video = max(self._t_video, event.t)
        if not self.pump.is_open:
            return
        if not self.commands.cleaning:
            if event.type == CLEANING_STARTED:
                for job in self.uploads.cleaning_started():
                    self.queue_upload(job)
            elif event.type == CLEANING_FINISHED:
                self.uploads.cleaning_finished()
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
        self.pump.enqueue(
            [
                OutMessage(
                    MessageClass.EVENT, self.topics.events, message.model_dump_json().encode()
                )
            ],
            {"event_seq": self._event_seq},
        )

    async def on_frame(self, record: FrameRecord) -> None:
        self._t_video = record.frame.t_video
        if not self.pump.is_open:
            return
        self._aggregator.on_frame(record)
        for job in self.uploads.on_frame(record):
            self.queue_upload(job)

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        try:
            if self.pump.is_open and self._runner is not None:
                await self._close_running()
        finally:
            self._connect_executor.shutdown(wait=False, cancel_futures=True)
            await self.pump.close()
            if self.updates is not None:
                await self.updates.close()

    async def _close_running(self) -> None:
        # Background commands end first, so that their `interrupted` replies can still leave;
        # then a last snapshot, so that even a short run reports, then what can leave in time.
        await self.commands.stop()
        await self.telemetry.emit()
        await self.pump.write_pending()
        deadline = time.monotonic() + self.settings.drain_on_close_s
        while self.connected and self.outbox.pending > 0 and time.monotonic() < deadline:
            self.pump.kick()
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
        await self.pump.write_pending()

    def stats(self) -> Mapping[str, float]:
        outbox = self.pump.current
        return {
            "connected": float(self.connected),
            "connects": float(self.connects),
            "sent": float(self.pump.sent),
            "outbox_pending": float(outbox.pending if outbox else 0),
            "outbox_bytes": float(outbox.pending_bytes if outbox else 0),
            "dropped": float(self.pump.dropped_total),
            "telemetry_seq": float(self.telemetry.seq),
        }

    # -- what the commands change (`fleet_commands.CommandHost`) ------------------------------

    @property
    def outbox(self) -> Outbox:
        return self.pump.outbox

    @property
    def settings(self) -> MqttUplinkConfig:
        """`config` with the changes `set_config` made (persisted in the outbox database)."""
        return self._settings

    async def apply_settings(self, settings: MqttUplinkConfig) -> None:
        self._settings = settings
        await self.pump.db(self.outbox.ttl_s.update, ttls(settings.outbox))
        self.uploads.update(settings.upload)

    def uptime(self) -> float:
        return round(time.monotonic() - self._aggregator.started_mono, 3)

    async def flushed(self) -> None:
        """Return once every message queued so far is in the outbox (or counted lost)."""
        await self.pump.flushed()

    def _open_outbox(self) -> tuple[Outbox, WriteResult]:
        """On the outbox's thread: the outbox, made this camera's, with the counters and the
        settings `set_config` saved; and what expired while the daemon was off."""
        outbox = self.pump.create(self.config.outbox)
        try:
            self.telemetry.seq = outbox.counter("telemetry_seq")
            self._event_seq = outbox.counter("event_seq")
            for key, value in outbox.settings().items():
                try:
                    self._settings = apply_settings(self._settings, {key: value})
                except SettingsError as exc:
                    logger.warning("dropping a setting saved by set_config: %s", exc)
                    outbox.forget_settings([key])
            outbox.ttl_s.update(ttls(self._settings.outbox))
            self.uploads.update(self._settings.upload)
            outbox.forget_commands(self.config.command_memory_s)
            purged = WriteResult([], outbox.purge_expired())
        except BaseException:
            outbox.close()
            raise
        logger.info(
            "outbox %s: %d messages waiting (%d bytes); telemetry seq %d",
            self.outbox_path,
            outbox.pending,
            outbox.pending_bytes,
            self.telemetry.seq,
        )
        return outbox, purged

    def queue_upload(self, job: UploadJob) -> None:
        self.upload_queue.put(job)

    @property
    def last_telemetry(self) -> Telemetry | None:
        return self.telemetry.last

    # -- background tasks ---------------------------------------------------------------------

    async def _run(self) -> None:
        async with TaskGroup() as tg:
            for name, factory in (
                ("uplink-outbox", self.pump.run_writer),
                ("uplink-connection", self._connection_loop),
                ("uplink-telemetry", self._telemetry_loop),
                ("uplink-commands", self.commands.run),
                ("uplink-uploads", self.upload_queue.run),
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
                on_lost=self.pump.wake,
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
                self.emit(
                    "uplink_connected",
                    broker=config.broker,
                    attempts=attempts,
                    outage_s=round(time.monotonic() - lost_at, 3)
                    if ever_connected and lost_at is not None
                    else None,
                    pending=self.pump.outbox.pending,
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
                self.emit(
                    "uplink_lost", broker=config.broker, reason=reason, retry_in_s=round(delay, 3)
                )
            else:
                logger.info("fleet link: %s; retrying in %.1f s", reason, delay)
            await asyncio.sleep(delay)

    async def _serve(self, link: Link) -> str:
        """Subscribe to commands, announce `online`, send from the outbox until the link drops."""
        self.connected = True
        sender = asyncio.create_task(
            self.pump.send(link, lambda: self.settings.max_inflight), name="uplink-sender"
        )
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
                    self.pump.refused_event(topic, "subscription", code)
            self.subscriptions.resubscribe(link)
            return await asyncio.shield(link.lost)
        finally:
            self.connected = False
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            self.pump.release(link)

    def _announce(self, link: Link) -> None:
        """Home Assistant discovery configs (retained, JSON), when `[uplink.home_assistant]`."""
        if not self._discovery:
            return
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ContentType = JSON_CONTENT_TYPE
        for topic, payload in self._discovery:

            def acked(code: ReasonCode, topic: str = topic) -> None:
                if code.is_failure:
                    self.pump.refused_event(topic, "discovery", code)

            link.publish(topic, payload, retain=True, properties=properties, on_ack=acked)

    def _status_acked(self, code: ReasonCode) -> None:
        if code.is_failure:
            self.pump.refused_event(self.topics.status, "status", code)

    # -- telemetry ----------------------------------------------------------------------------

    async def _telemetry_loop(self) -> None:
        next_at = time.monotonic() + self.settings.telemetry_interval_s
        next_purge = time.monotonic() + PURGE_EVERY_S
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await self.telemetry.emit()
            now = time.monotonic()
            next_at = max(next_at + self.settings.telemetry_interval_s, now)
            if now >= next_purge:
                next_purge = now + PURGE_EVERY_S
                await self.pump.purge()
            self.pump.report_drops()

    def _status(self) -> UplinkStatus:
        return UplinkStatus(
            connected=self.connected,
            connects=self.connects,
            sent=self.pump.sent,
            outbox=self.pump.status(),
        )

    # -- incoming messages and subscriptions --------------------------------------------------

    def _on_message(self, message: mqtt.MQTTMessage, settle: Callable[[], None]) -> None:
        if self.topics.is_command_topic(message.topic):
            self.commands.receive(message, settle)
            return
        if self.updates is not None and self.updates.wants(message.topic):
            self.updates.on_message(message.topic, bytes(message.payload))
        settle()

    def _max_packet(self) -> int:
        """The Maximum Packet Size announced to the broker: commands, and update chunks."""
        limit = 4 * self.config.command_max_bytes + 1024
        if self.updates is not None:
            limit = max(limit, self.updates.max_message_bytes)
        return limit

    # -- events -------------------------------------------------------------------------------

    def emit(self, type_: str, **data: JsonValue) -> None:
        self.events.emit(type_, self._t_video, None, **data)
