"""Uplink stage: `FleetCommands`, the fleet's commands as one camera runs them.

Commands arrive on the link (`receive`), are checked in arrival order by the `CommandProcessor`
(`commands.py`: validation, the at-most-once ledger in the outbox database, replies) and run
here: short ones one at a time, background ones (`clean_lens`, `set_enhancement`) in tasks of
their own. Each is acknowledged to the broker once it is answered (or has started, in the
background): with the Receive Maximum the link announces, that is the backpressure that keeps a
burst of commands in the broker's session instead of overflowing our queue, and a command cut
short by a crash is delivered again.

What a handler needs of the rest of the daemon comes through `CommandHost` (the link's settings,
uploads and status, `MqttUplink`) and the pipeline's `PipelineHooks`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from pydantic import TypeAdapter, ValidationError

from vehicle_agent import __version__
from vehicle_agent.config import EnhancerConfig, PassthroughEnhancerConfig
from vehicle_agent.uplink.base import PipelineHooks, Updates
from vehicle_agent.uplink.command_table import (
    COMMANDS,
    CaptureFramesArgs,
    CaptureFramesResult,
    CleanLensArgs,
    NoArgs,
    PingResult,
    SetConfigArgs,
    SetConfigResult,
    SetEnhancementArgs,
    SetEnhancementResult,
    StatusResult,
    WithdrawUpdateArgs,
    WithdrawUpdateResult,
)
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
from vehicle_agent.uplink.outbox import OutMessage
from vehicle_agent.uplink.pump import Emit, OutboxPump
from vehicle_agent.uplink.settings import MqttUplinkConfig
from vehicle_agent.uplink.topics import Telemetry, Topics
from vehicle_agent.uplink.uploads import UploadJob, UploadPolicy
from vehicle_agent.validation import describe_validation

logger = logging.getLogger(__name__)

_ENHANCER_CONFIG: TypeAdapter[Any] = TypeAdapter(EnhancerConfig)


class CommandHost(Protocol):
    """What the commands read and change of the link that carries them (`MqttUplink`)."""

    hooks: PipelineHooks | None
    connected: bool
    uploads: UploadPolicy

    @property
    def last_telemetry(self) -> Telemetry | None:
        """The latest telemetry message sent (`get_status` returns it)."""

    @property
    def settings(self) -> MqttUplinkConfig:
        """The link's settings as `set_config` left them."""

    def uptime(self) -> float: ...

    async def apply_settings(self, settings: MqttUplinkConfig) -> None:
        """Take `settings` into use (time to live, upload policy); they are saved already."""

    def queue_upload(self, job: UploadJob) -> None: ...


@dataclass
class _Ledger:
    """Command ids and first replies, in the outbox database (see `CommandLedger`)."""

    pump: OutboxPump

    async def first_reply(self, command_id: str) -> tuple[bool, bytes | None]:
        return await self.pump.db(self.pump.outbox.command_reply, command_id)

    async def started(self, command_id: str, name: str) -> bool:
        return await self.pump.db(self.pump.outbox.command_started, command_id, name)

    async def finished(self, command_id: str | None, reply: OutMessage) -> None:
        result = await self.pump.db(self.pump.outbox.command_finished, command_id, reply)
        self.pump.note_write(result)


class FleetCommands:
    """The command queue, its loop and the handlers of every command in `command_table.COMMANDS`."""

    def __init__(
        self,
        topics: Topics,
        vehicle_id: str,
        pump: OutboxPump,
        host: CommandHost,
        emit: Emit,
        *,
        max_bytes: int,
        updates: Updates | None = None,
    ) -> None:
        self.pump = pump
        self.host = host
        self.emit = emit
        self.updates = updates
        self._queue: asyncio.Queue[IncomingCommand] = asyncio.Queue(COMMAND_WINDOW)
        handlers = self.handlers()
        missing = set(COMMANDS) - set(handlers)
        if missing:
            # The processor refuses the reverse (a handler no command names).
            raise TypeError(f"commands without a handler: {', '.join(sorted(missing))}")
        self.processor = CommandProcessor(
            topics, vehicle_id, _Ledger(pump), handlers, max_bytes=max_bytes
        )
        self._tasks: set[asyncio.Task[None]] = set()
        """Background commands running now (`clean_lens`, `set_enhancement`)."""
        self.cleaning = False
        """A `clean_lens` command is cleaning (its uploads are its own, not the events')."""
        self.busy = 0
        """Commands refused because the queue was full."""

    def receive(self, message: mqtt.MQTTMessage, settle: Callable[[], None]) -> None:
        """A message on a command topic (on the event loop; returns at once)."""
        properties = message.properties
        response_topic = getattr(properties, "ResponseTopic", None)
        correlation = getattr(properties, "CorrelationData", None)
        incoming = IncomingCommand(bytes(message.payload), response_topic, correlation, settle)
        try:
            self._queue.put_nowait(incoming)
        except asyncio.QueueFull:
            # Only a broker that ignores our Receive Maximum gets here.
            self.busy += 1
            logger.warning("command queue full: a command was refused with 'busy'")
            outcome = self.processor.refusal(
                incoming, "busy", f"{COMMAND_WINDOW} commands are waiting; send it again later"
            )
            self.pump.enqueue([outcome.reply])
            self._handled(outcome)
            settle()

    def _handled(self, outcome: Outcome) -> None:
        self.emit(
            "command_handled",
            id=outcome.id,
            name=outcome.name,
            ok=outcome.ok,
            error=outcome.error,
            duplicate=outcome.duplicate,
        )

    async def run(self) -> None:
        """Check the commands in arrival order and run them: short ones here, one at a time,
        background ones in tasks of their own; acknowledge each once it is answered (started,
        in the background)."""
        processor = self.processor
        try:
            while True:
                incoming = await self._queue.get()
                try:
                    admitted = await processor.admit(incoming)
                    if isinstance(admitted, Outcome):
                        self._handled(admitted)
                    elif admitted.background:
                        task = asyncio.get_running_loop().create_task(
                            self._execute(admitted), name=f"uplink-command-{admitted.name}"
                        )
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                    else:
                        try:
                            await self._execute(admitted)
                        finally:
                            incoming.settle()  # answered (`interrupted` when cancelled)
                except Exception as exc:
                    # A bug must not leave a command unanswered (nor end this task).
                    logger.exception("command could not be handled")
                    outcome = processor.refusal(incoming, "failed", f"{type(exc).__name__}: {exc}")
                    self.pump.enqueue([outcome.reply])
                    self._handled(outcome)
                # Not when cancelled (the daemon stops) before it was answered: unacknowledged,
                # the broker delivers it again at the next connection. (Settling is idempotent.)
                incoming.settle()
        finally:
            await self.stop()

    async def _execute(self, admitted: Admitted) -> None:
        try:
            outcome = await self.processor.execute(admitted)
        except Exception as exc:
            logger.exception("command %s (%s) could not be answered", admitted.id, admitted.name)
            outcome = self.processor.refusal(
                admitted.incoming, "failed", f"{type(exc).__name__}: {exc}"
            )
            self.pump.enqueue([outcome.reply])
        self._handled(outcome)

    async def stop(self) -> None:
        """Cancel the background commands; each stores its `interrupted` reply as it ends."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- the handlers -------------------------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        return {
            "ping": self._ping,
            "get_status": self._get_status,
            "clean_lens": self._clean_lens,
            "clear_lens_service": self._clear_lens_service,
            "set_config": self._set_config,
            "capture_frames": self._capture_frames,
            "set_enhancement": self._set_enhancement,
            "withdraw_update": self._withdraw_update,
        }

    async def _ping(self, _args: NoArgs, _cid: str) -> PingResult:
        return PingResult(time=round(time.time(), 3), uptime_s=self.host.uptime())

    async def _get_status(self, _args: NoArgs, _cid: str) -> StatusResult:
        host = self.host
        return StatusResult(
            version=__version__,
            config_digest=host.hooks.config_digest if host.hooks else "",
            uptime_s=host.uptime(),
            connected=host.connected,
            settings=current_settings(host.settings),
            telemetry=host.last_telemetry,
        )

    async def _clean_lens(self, args: CleanLensArgs, _cid: str) -> Mapping[str, Any]:
        host = self.host
        clean = host.hooks.clean_lens if host.hooks else None
        if clean is None:
            raise CommandFailedError("unavailable", "no lens cleaner configured on this vehicle")
        self.cleaning = True
        try:
            for job in host.uploads.cleaning_started():
                host.queue_upload(job)
            result = await clean(args.duration_s)
            host.uploads.cleaning_finished()
        finally:
            self.cleaning = False
        return result

    async def _clear_lens_service(self, _args: NoArgs, _cid: str) -> Mapping[str, Any]:
        clear = self.host.hooks.clear_lens_service if self.host.hooks else None
        if clear is None:
            raise CommandFailedError("unavailable", "no lens cleaner configured on this vehicle")
        return clear()

    async def _set_config(self, args: SetConfigArgs, _cid: str) -> SetConfigResult:
        try:
            settings = apply_settings(self.host.settings, args.changes)
        except SettingsError as exc:
            raise CommandFailedError("invalid_args", str(exc)) from None
        await self.pump.db(self.pump.outbox.save_settings, args.changes)
        await self.host.apply_settings(settings)
        logger.info("set_config applied and saved: %s", args.changes)
        return SetConfigResult(settings=current_settings(settings))

    async def _capture_frames(self, args: CaptureFramesArgs, cid: str) -> CaptureFramesResult:
        scheduled = self.host.uploads.request(args.count, args.content, cid)
        return CaptureFramesResult(scheduled=scheduled)

    async def _set_enhancement(self, args: SetEnhancementArgs, _cid: str) -> SetEnhancementResult:
        switch = self.host.hooks.set_enhancer if self.host.hooks else None
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

    async def _withdraw_update(self, args: WithdrawUpdateArgs, _cid: str) -> WithdrawUpdateResult:
        if self.updates is None:
            raise CommandFailedError("unavailable", "model updates are off on this vehicle")
        done = await self.updates.withdraw(args.model, args.reason)
        return WithdrawUpdateResult.model_validate(done)
