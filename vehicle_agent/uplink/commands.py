"""Uplink stage: fleet commands, checked, run at most once, answered with MQTT 5 request/response.

Every command gets one reply: a refusal (too large, malformed, expired, unknown, out of range,
busy) is a reply naming the problem, and changes nothing. An id is recorded before its command
runs and its first reply stored with it, so a redelivered command (normal after a broker restart)
is answered again without running twice. Checking (`admit`) and running (`execute`) are two
steps, so that the link can run a long command (`CommandSpec.background`) beside the short ones.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from vehicle_agent.compat import wait_for
from vehicle_agent.uplink.command_table import COMMANDS
from vehicle_agent.uplink.outbox import OutMessage
from vehicle_agent.uplink.settings import MqttUplinkConfig
from vehicle_agent.uplink.topics import (
    CommandErrorInfo,
    CommandReply,
    CommandRequest,
    MessageClass,
    Payload,
    Topics,
)
from vehicle_agent.validation import describe_validation

logger = logging.getLogger(__name__)

HANDLER_TIMEOUT_S = 60.0
COMMAND_WINDOW = 64
"""Commands waiting to be checked, at most: the fleet link announces it as its MQTT Receive
Maximum and acknowledges a command only once it is answered (or started, in the background),
so the broker holds the rest of a burst; one more is refused with `busy`."""
MAX_DEPTH = 32
"""JSON nesting a command may have (its args included); deeper is `malformed`, never a
RecursionError."""

Handler = Callable[[Any, str], Awaitable[Payload | Mapping[str, Any]]]
"""Runs one command with its validated args model and its id; returns its result."""


class CommandFailedError(Exception):
    """A handler's honest refusal or failure, with the reply's error code."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class CommandLedger(Protocol):
    """Where command ids and first replies are kept (the outbox database)."""

    async def first_reply(self, command_id: str) -> tuple[bool, bytes | None]: ...

    async def started(self, command_id: str, name: str) -> bool: ...

    async def finished(self, command_id: str | None, reply: OutMessage) -> None: ...


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class IncomingCommand:
    payload: bytes
    response_topic: str | None
    correlation: bytes | None
    settle: Callable[[], None] = field(default=_nothing, compare=False)
    """Acknowledges the message to the broker (its PUBACK): call once it is answered, or once a
    background command has started."""


@dataclass(frozen=True)
class Admitted:
    """A command that passed every check and was recorded as started: `execute` runs it (or,
    for a redelivery of one still running, waits for that one's reply)."""

    incoming: IncomingCommand
    id: str
    name: str
    reply_topic: str
    background: bool
    args: Any = None
    handler: Handler | None = None
    original: asyncio.Future[bytes] | None = None
    """The reply of the same id, still running; set instead of `handler`."""


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What happened to one command (for the event and the tests)."""

    id: str | None
    name: str | None
    ok: bool
    error: str | None
    duplicate: bool
    reply: OutMessage


def depth(value: Any) -> int:
    """How deeply lists and objects nest in `value` (iteratively: no recursion to exhaust)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        stack.extend((child, level) for child in children)
    return deepest


class MalformedCommandError(ValueError):
    """A command payload that is not a JSON object a command can be read from."""


def parse_object(payload: bytes) -> dict[str, Any]:
    """The JSON object of a command payload; `MalformedCommandError` naming the problem."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedCommandError(f"not JSON: {exc}") from None
    except RecursionError:
        raise MalformedCommandError(f"not JSON: nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(data, dict):
        raise MalformedCommandError("not a JSON object")
    if depth(data) > MAX_DEPTH:
        raise MalformedCommandError(f"nested deeper than {MAX_DEPTH} levels")
    return data


class CommandProcessor:
    """Checks, deduplicates, runs and answers commands.

    `handle` does both steps for one command; the fleet link calls `admit` for each command in
    arrival order and `execute` inline, or in a task of its own for a background command (one
    of each name at a time: another one meanwhile is refused with `busy`).
    """

    def __init__(
        self,
        topics: Topics,
        vehicle_id: str,
        ledger: CommandLedger,
        handlers: Mapping[str, Handler],
        *,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
        timeout_s: float = HANDLER_TIMEOUT_S,
    ) -> None:
        self.topics = topics
        self.vehicle_id = vehicle_id
        self.ledger = ledger
        unknown = sorted(set(handlers) - set(COMMANDS))
        if unknown:
            # Fail closed: a handler under a name no command has would never run.
            raise ValueError(f"handlers for commands that do not exist: {', '.join(unknown)}")
        self.handlers = dict(handlers)
        self.max_bytes = max_bytes
        self.clock = clock
        self.timeout_s = timeout_s
        self._running: dict[str, asyncio.Future[bytes]] = {}
        """Command id → its reply payload, from `admit` until its reply is stored."""
        self._background: dict[str, str] = {}
        """Name → id of the background command of that name running now."""

    async def handle(self, incoming: IncomingCommand) -> Outcome:
        admitted = await self.admit(incoming)
        if isinstance(admitted, Outcome):
            return admitted
        return await self.execute(admitted)

    def _reply_topic(self, incoming: IncomingCommand) -> tuple[str, bool]:
        """Where the reply goes, and whether the request named a topic outside `replies`."""
        if incoming.response_topic is None:
            return self.topics.replies, False
        if self.topics.is_reply_topic(incoming.response_topic):
            return incoming.response_topic, False
        return self.topics.replies, True

    def _reply(
        self,
        incoming: IncomingCommand,
        cid: str | None,
        name: str | None,
        result: Mapping[str, Any] | None = None,
        error: tuple[str, str] | None = None,
    ) -> OutMessage:
        body = CommandReply(
            vehicle_id=self.vehicle_id,
            camera_id=self.topics.camera_id,
            id=cid,
            name=name,
            ok=error is None,
            result=dict(result) if result is not None else None,
            error=None if error is None else CommandErrorInfo(code=error[0], message=error[1]),  # type: ignore[arg-type]
            time=self.clock(),
        )
        topic, _ = self._reply_topic(incoming)
        return self._message(topic, body.model_dump_json().encode(), incoming)

    def refusal(self, incoming: IncomingCommand, code: str, message: str) -> Outcome:
        """A refusal built without the ledger (the caller queues `reply`): for a command that
        cannot even be queued (`busy`), or one whose checks failed unexpectedly (`failed`).
        Names the id and command when the payload shows them."""
        cid = name = None
        if len(incoming.payload) <= self.max_bytes:
            try:
                data = parse_object(incoming.payload)
            except MalformedCommandError:
                data = {}
            cid = data.get("id") if isinstance(data.get("id"), str) else None
            name = data.get("name") if isinstance(data.get("name"), str) else None
        reply = self._reply(incoming, cid, name, error=(code, message))
        return Outcome(id=cid, name=name, ok=False, error=code, duplicate=False, reply=reply)

    async def admit(self, incoming: IncomingCommand) -> Outcome | Admitted:
        """Every check, in the order docs/mqtt.md lists them: an `Outcome` when the command is
        answered already (refused, or a redelivery of a finished one), else `Admitted`, with
        the command recorded as started."""
        reply_topic, bad_topic = self._reply_topic(incoming)

        async def refuse(cid: str | None, name: str | None, code: str, message: str) -> Outcome:
            message_out = self._reply(incoming, cid, name, error=(code, message))
            await self.ledger.finished(None, message_out)
            return Outcome(
                id=cid, name=name, ok=False, error=code, duplicate=False, reply=message_out
            )

        size = len(incoming.payload)
        if size > self.max_bytes:
            return await refuse(
                None, None, "too_large", f"payload is {size} bytes, limit {self.max_bytes}"
            )
        try:
            data = parse_object(incoming.payload)
        except MalformedCommandError as exc:
            return await refuse(None, None, "malformed", str(exc))
        try:
            request = CommandRequest.model_validate(data)
        except ValidationError as exc:
            cid = data.get("id") if isinstance(data.get("id"), str) else None
            name = data.get("name") if isinstance(data.get("name"), str) else None
            return await refuse(cid, name, "malformed", describe_validation(exc))
        cid, name = request.id, request.name
        if incoming.correlation is None:
            logger.warning("command %s (%s) has no Correlation Data; refused", cid, name)
            return await refuse(
                cid,
                name,
                "malformed",
                "no Correlation Data: set the MQTT 5 property, so that the reply can be matched",
            )
        if bad_topic:
            return await refuse(
                cid,
                name,
                "bad_response_topic",
                f"response topic {incoming.response_topic!r} is not under {self.topics.replies} "
                f"or {self.topics.vehicle_replies}",
            )
        running = self._running.get(cid)
        if running is not None:
            # A redelivery while it runs: it gets the first reply when there is one.
            return Admitted(incoming, cid, name, reply_topic, background=True, original=running)
        seen, first = await self.ledger.first_reply(cid)
        if seen and first is not None:
            message_out = self._message(reply_topic, first, incoming)
            await self.ledger.finished(None, message_out)
            first_reply = CommandReply.model_validate_json(first)
            code = first_reply.error.code if first_reply.error else None
            return Outcome(
                id=cid, name=name, ok=first_reply.ok, error=code, duplicate=True, reply=message_out
            )
        if seen:
            message_out = self._reply(
                incoming,
                cid,
                name,
                error=("interrupted", "it was running when the daemon stopped; not rerun"),
            )
            await self.ledger.finished(cid, message_out)
            return Outcome(
                id=cid, name=name, ok=False, error="interrupted", duplicate=True, reply=message_out
            )
        now = self.clock()
        if request.expires_at <= now:
            return await refuse(
                cid, name, "expired", f"expired {now - request.expires_at:.1f} s ago"
            )
        spec = COMMANDS.get(name)
        if spec is None:
            return await refuse(
                cid,
                name,
                "unknown_command",
                f"unknown command {name!r}; known: {', '.join(COMMANDS)}",
            )
        try:
            args = spec.args.model_validate(request.args)
        except ValidationError as exc:
            return await refuse(cid, name, "invalid_args", describe_validation(exc))
        handler = self.handlers.get(name)
        if handler is None:
            return await refuse(cid, name, "unavailable", f"this daemon has no handler for {name}")
        busy_with = self._background.get(name) if spec.background else None
        if busy_with is not None:
            return await refuse(
                cid, name, "busy", f"{name} {busy_with} is running; send it again when it is done"
            )
        if not await self.ledger.started(cid, name):
            # Another delivery of the same id got there first (cannot happen with one consumer).
            return await refuse(cid, name, "interrupted", "already started")
        self._running[cid] = asyncio.get_running_loop().create_future()
        if spec.background:
            self._background[name] = cid
        return Admitted(
            incoming, cid, name, reply_topic, background=spec.background, args=args, handler=handler
        )

    async def execute(self, admitted: Admitted) -> Outcome:
        """Run an admitted command and store its reply (the first for its id)."""
        cid, name, incoming = admitted.id, admitted.name, admitted.incoming
        if admitted.original is not None:
            first = await asyncio.shield(admitted.original)
            message_out = self._message(admitted.reply_topic, first, incoming)
            await self.ledger.finished(None, message_out)
            first_reply = CommandReply.model_validate_json(first)
            code = first_reply.error.code if first_reply.error else None
            return Outcome(
                id=cid, name=name, ok=first_reply.ok, error=code, duplicate=True, reply=message_out
            )
        assert admitted.handler is not None  # noqa: S101 - set by admit() without `original`
        future = self._running[cid]
        message_out = self._reply(
            incoming,
            cid,
            name,
            error=("interrupted", "the daemon stopped while it ran"),
        )
        try:
            try:
                result = await wait_for(admitted.handler(admitted.args, cid), self.timeout_s)
            except CommandFailedError as exc:
                message_out = self._reply(incoming, cid, name, error=(exc.code, exc.message))
                outcome = Outcome(
                    id=cid, name=name, ok=False, error=exc.code, duplicate=False, reply=message_out
                )
            except TimeoutError:
                message_out = self._reply(
                    incoming, cid, name, error=("failed", f"timed out after {self.timeout_s} s")
                )
                outcome = Outcome(
                    id=cid, name=name, ok=False, error="failed", duplicate=False, reply=message_out
                )
            except Exception as exc:
                logger.exception("command %s (%s) failed", cid, name)
                message_out = self._reply(
                    incoming, cid, name, error=("failed", f"{type(exc).__name__}: {exc}")
                )
                outcome = Outcome(
                    id=cid, name=name, ok=False, error="failed", duplicate=False, reply=message_out
                )
            else:
                data_out = result.model_dump(mode="json") if isinstance(result, Payload) else result
                message_out = self._reply(incoming, cid, name, result=data_out)
                outcome = Outcome(
                    id=cid, name=name, ok=True, error=None, duplicate=False, reply=message_out
                )
        finally:
            # Cancelled (the daemon stops): `interrupted` is its reply, stored before the task
            # ends, so that it is sent at the next connection.
            try:
                await self.ledger.finished(cid, message_out)
            finally:
                self._running.pop(cid, None)
                if self._background.get(name) == cid:
                    del self._background[name]
                if not future.done():
                    future.set_result(message_out.payload)
        return outcome

    def _message(self, topic: str, payload: bytes, incoming: IncomingCommand) -> OutMessage:
        return OutMessage(MessageClass.REPLY, topic, payload, correlation=incoming.correlation)


# -- set_config --------------------------------------------------------------------------------

SETTABLE_KEYS = (
    "telemetry_interval_s",
    "upload.good_frame_every_s",
    "upload.good_min_sharpness",
    "upload.good_min_brightness",
    "upload.good_max_brightness",
    "upload.good_max_adhesion",
    "upload.around_cleaning_frames",
    "upload.max_frames_per_hour",
    "upload.content",
    "upload.jpeg_quality",
    "upload.max_width",
    "outbox.ttl_reply_s",
    "outbox.ttl_event_s",
    "outbox.ttl_telemetry_s",
    "outbox.ttl_frame_s",
)
"""Keys of `[uplink]` that `set_config` may change (the rest needs the config file)."""


def settable_descriptions() -> dict[str, str]:
    """Key → the config field's description and bounds (for docs/mqtt.md)."""
    out: dict[str, str] = {}
    for key in SETTABLE_KEYS:
        model: type[Any] = MqttUplinkConfig
        *sections, name = key.split(".")
        for section in sections:
            model = model.model_fields[section].default_factory
        info = model.model_fields[name]
        bounds = [
            f"{sign} {getattr(meta, attr)}"
            for meta in info.metadata
            for attr, sign in (("ge", "≥"), ("le", "≤"))
            if getattr(meta, attr, None) is not None
        ]
        extra = f" ({', '.join(bounds)})" if bounds else ""
        out[key] = f"{info.description}{extra}"
    return out


class SettingsError(ValueError):
    """A `set_config` change that is not settable or out of range; the message names the key."""


def current_settings(config: MqttUplinkConfig) -> dict[str, Any]:
    data = config.model_dump(mode="json")
    out: dict[str, Any] = {}
    for key in SETTABLE_KEYS:
        node: Any = data
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


def apply_settings(config: MqttUplinkConfig, changes: Mapping[str, Any]) -> MqttUplinkConfig:
    """`config` with `changes` (dotted keys) applied, validated with the config's own bounds."""
    unknown = sorted(set(changes) - set(SETTABLE_KEYS))
    if unknown:
        raise SettingsError(
            f"{unknown[0]}: not settable remotely; settable: {', '.join(SETTABLE_KEYS)}"
        )
    data = config.model_dump(mode="json")
    for key, value in changes.items():
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise SettingsError(f"{key}: expected a number or a string, got {value!r}")
        *sections, name = key.split(".")
        node = data
        for section in sections:
            node = node[section]
        node[name] = value
    try:
        return MqttUplinkConfig.model_validate_json(json.dumps(data), strict=True)
    except ValidationError as exc:
        raise SettingsError(describe_validation(exc)) from None
