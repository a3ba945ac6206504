"""Uplink stage: fleet commands, checked, run at most once, answered with MQTT 5 request/response.

Every refusal (too large, malformed, expired, unknown, out of range) is a reply naming the problem,
and changes nothing. An id is recorded before its command runs and its first reply stored with it,
so a redelivered command (normal after a broker restart) is answered again without running twice.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from vehicle_agent.compat import wait_for
from vehicle_agent.config import MqttUplinkConfig
from vehicle_agent.uplink.outbox import OutMessage
from vehicle_agent.uplink.topics import (
    COMMANDS,
    CommandErrorInfo,
    CommandReply,
    CommandRequest,
    MessageClass,
    Payload,
    Topics,
)

logger = logging.getLogger(__name__)

HANDLER_TIMEOUT_S = 60.0

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


@dataclass(frozen=True)
class IncomingCommand:
    payload: bytes
    response_topic: str | None
    correlation: bytes | None


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What happened to one command (for the event and the tests)."""

    id: str | None
    name: str | None
    ok: bool
    error: str | None
    duplicate: bool
    reply: OutMessage


def describe_validation(error: ValidationError) -> str:
    """The first problem of a pydantic error as 'key: message (got value)'."""
    first = error.errors(include_url=False)[0]
    key = ".".join(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] not in {"missing", "extra_forbidden"} and "input" in first:
        value = first["input"]
        if not isinstance(value, dict | list):
            message = f"{message} (got {value!r})"
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    more = error.error_count() - 1
    if more:
        message += f" (and {more} more)"
    return f"{key}: {message}" if key else message


class CommandProcessor:
    """Checks, deduplicates, runs and answers commands, one at a time."""

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
        self.handlers = dict(handlers)
        self.max_bytes = max_bytes
        self.clock = clock
        self.timeout_s = timeout_s

    async def handle(self, incoming: IncomingCommand) -> Outcome:
        reply_topic = self.topics.replies
        bad_topic = False
        if incoming.response_topic is not None:
            if self.topics.is_reply_topic(incoming.response_topic):
                reply_topic = incoming.response_topic
            else:
                bad_topic = True

        def reply(
            cid: str | None,
            name: str | None,
            result: Mapping[str, Any] | None = None,
            error: tuple[str, str] | None = None,
        ) -> OutMessage:
            body = CommandReply(
                vehicle_id=self.vehicle_id,
                id=cid,
                name=name,
                ok=error is None,
                result=dict(result) if result is not None else None,
                error=None if error is None else CommandErrorInfo(code=error[0], message=error[1]),  # type: ignore[arg-type]
                time=self.clock(),
            )
            return self._message(reply_topic, body.model_dump_json().encode(), incoming)

        async def refuse(cid: str | None, name: str | None, code: str, message: str) -> Outcome:
            message_out = reply(cid, name, error=(code, message))
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
            data = json.loads(incoming.payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return await refuse(None, None, "malformed", f"not JSON: {exc}")
        if not isinstance(data, dict):
            return await refuse(None, None, "malformed", "not a JSON object")
        try:
            request = CommandRequest.model_validate(data)
        except ValidationError as exc:
            cid = data.get("id") if isinstance(data.get("id"), str) else None
            name = data.get("name") if isinstance(data.get("name"), str) else None
            return await refuse(cid, name, "malformed", describe_validation(exc))
        cid, name = request.id, request.name
        if bad_topic:
            return await refuse(
                cid,
                name,
                "bad_response_topic",
                f"response topic {incoming.response_topic!r} is not under {self.topics.replies}",
            )
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
            message_out = reply(
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
        if not await self.ledger.started(cid, name):
            # Another delivery of the same id got there first (cannot happen with one consumer).
            return await refuse(cid, name, "interrupted", "already started")
        try:
            result = await wait_for(handler(args, cid), self.timeout_s)
        except CommandFailedError as exc:
            message_out = reply(cid, name, error=(exc.code, exc.message))
            outcome = Outcome(
                id=cid, name=name, ok=False, error=exc.code, duplicate=False, reply=message_out
            )
        except TimeoutError:
            message_out = reply(cid, name, error=("failed", f"timed out after {self.timeout_s} s"))
            outcome = Outcome(
                id=cid, name=name, ok=False, error="failed", duplicate=False, reply=message_out
            )
        except Exception as exc:
            logger.exception("command %s (%s) failed", cid, name)
            message_out = reply(cid, name, error=("failed", f"{type(exc).__name__}: {exc}"))
            outcome = Outcome(
                id=cid, name=name, ok=False, error="failed", duplicate=False, reply=message_out
            )
        else:
            data_out = result.model_dump(mode="json") if isinstance(result, Payload) else result
            message_out = reply(cid, name, result=data_out)
            outcome = Outcome(
                id=cid, name=name, ok=True, error=None, duplicate=False, reply=message_out
            )
        await self.ledger.finished(cid, message_out)
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
