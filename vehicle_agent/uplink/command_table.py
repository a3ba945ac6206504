"""Uplink stage: the commands a vehicle answers, each with its arguments and result payloads
(`COMMANDS`, the one table: `FleetCommands` refuses to start without a handler for each, and
docs/mqtt.md's command section is made from it). The envelope every command travels in
(`CommandRequest`, `CommandReply`) is in `topics.py`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from vehicle_agent.uplink.topics import FrameContent, Payload, Telemetry


class NoArgs(Payload):
    pass


class PingResult(Payload):
    pong: Literal[True] = Field(default=True, description="Always true.")
    time: float = Field(description="The vehicle's clock, Unix seconds.")
    uptime_s: float = Field(description="Seconds since the daemon started.")


class StatusResult(Payload):
    version: str = Field(description="Daemon version.")
    config_digest: str = Field(description="Digest of the effective configuration file.")
    uptime_s: float = Field(description="Seconds since the daemon started.")
    connected: bool = Field(description="Whether the broker link is up (true when answering).")
    settings: dict[str, Any] = Field(description="The settings `set_config` can change.")
    telemetry: Telemetry | None = Field(description="The latest telemetry snapshot.")


class CleanLensArgs(Payload):
    duration_s: float = Field(3.0, ge=0.5, le=30.0, description="How long to clean, seconds.")


class ClearLensServiceResult(Payload):
    cleared: bool = Field(description="True when the latch was set and is now released.")
    lens_service_required: bool = Field(description="The latch now (false).")


class SetConfigArgs(Payload):
    changes: dict[str, Any] = Field(
        min_length=1,
        max_length=32,
        description=(
            "Dotted key → new value, from the settable keys listed below. All are validated "
            "with the configuration's bounds before any is applied; they persist across restarts."
        ),
    )


class SetConfigResult(Payload):
    settings: dict[str, Any] = Field(description="All settable keys with their values now.")


class CaptureFramesArgs(Payload):
    count: int = Field(1, ge=1, le=20, description="Frames to upload (the next ones captured).")
    content: FrameContent = Field("raw", description="'raw' or 'enhanced' frames.")


class CaptureFramesResult(Payload):
    scheduled: int = Field(description="Frames that will be uploaded (after the rate limit).")


class WithdrawUpdateArgs(Payload):
    model: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}@[0-9][0-9A-Za-z.+-]{0,31}$",
        description="The update withdrawn, name@version.",
    )
    reason: str = Field("withdrawn by the fleet", max_length=200, description="Why (logged).")


class WithdrawUpdateResult(Payload):
    model: str = Field(description="The update withdrawn, name@version.")
    action: Literal["rolled_back", "transfer_stopped", "marked_bad"] = Field(
        description="'rolled_back': it ran and the version before it runs again; "
        "'transfer_stopped': it was arriving; 'marked_bad': it was not here. Each way it is "
        "never taken again."
    )
    running: str | None = Field(description="name@version the vehicle runs now for that name.")


class SetEnhancementArgs(Payload):
    mode: Literal["enhance", "bypass"] = Field(
        description="'bypass' passes frames through unchanged; 'enhance' uses `backend`."
    )
    backend: dict[str, Any] | None = Field(
        None,
        description=(
            "With 'enhance': an `[enhance.backend]` table as in docs/configuration.md (its "
            "`type` and options); null keeps the configured backend. Not persisted."
        ),
    )


class SetEnhancementResult(Payload):
    backend: str = Field(description="Name of the backend now in use.")


@dataclass(frozen=True)
class CommandSpec:
    description: str
    args: type[Payload]
    result: type[Payload] | None
    """None when the result depends on the handler the daemon was built with."""
    background: bool = False
    """Runs beside the other commands (it may take seconds), one of its name at a time."""


COMMANDS: Mapping[str, CommandSpec] = {
    "ping": CommandSpec(
        "Answers at once: is the vehicle there, and its clock.", NoArgs, PingResult
    ),
    "get_status": CommandSpec(
        "Version, settings and the latest telemetry snapshot.", NoArgs, StatusResult
    ),
    "clean_lens": CommandSpec(
        "Run the lens cleaning sequence; frames before and after it may be uploaded. Refused "
        "with 'unavailable' when the daemon has no lens cleaner.",
        CleanLensArgs,
        None,
        background=True,
    ),
    "clear_lens_service": CommandSpec(
        "Release the `lens_service_required` latch once the lens was serviced (a succeeding "
        "cleaning releases it too). Refused with 'unavailable' when the daemon has no lens "
        "cleaner.",
        NoArgs,
        ClearLensServiceResult,
    ),
    "set_config": CommandSpec(
        "Change settable keys (validated, persisted in the outbox database).",
        SetConfigArgs,
        SetConfigResult,
    ),
    "capture_frames": CommandSpec(
        "Upload the next frames captured (JPEG, chunked).", CaptureFramesArgs, CaptureFramesResult
    ),
    "set_enhancement": CommandSpec(
        "Switch enhancement on or off, or to another backend, while running.",
        SetEnhancementArgs,
        SetEnhancementResult,
        background=True,
    ),
    "withdraw_update": CommandSpec(
        "Withdraw a model update (a rollout's abort): roll it back if it runs, stop its "
        "transfer, and never take it again. Refused with 'unavailable' when updates are off.",
        WithdrawUpdateArgs,
        WithdrawUpdateResult,
        background=True,
    ),
}
