"""Uplink stage: every MQTT topic and payload of the fleet link, defined once (docs/mqtt.md is made here).

Topics live under one subtree per vehicle, `<prefix>/<vehicle_id>/…` (prefix `fleet` by default),
and there under one per camera, `<prefix>/<vehicle_id>/<camera_id>/…` (as Frigate's
`frigate/<camera>/…`): each camera daemon has its own status, Last Will, telemetry, events,
uploads, commands and replies. A few topics are the vehicle's (`commands` that every camera obeys,
`replies`, model `update/…`), so the words they use cannot be camera ids. The broker's ACL
(`MOSQUITTO_ACL`, username = vehicle id) confines a vehicle to its own subtree. `Topics` is a
camera's view (the daemon), `FleetTopics` the cloud's (any vehicle or camera, wildcards). JSON
payloads are pydantic models with a schema version `v`; `mqtt_markdown()` renders them.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeGuard, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field

from vehicle_agent.compat import StrEnum
from vehicle_agent.quality.condition import CONDITIONS
from vehicle_agent.update.manifest import SignedUpdate, UpdateManifest

SCHEMA_VERSION: Final = 1

_CONDITIONS = ", ".join(f"'{c}'" for c in CONDITIONS)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
"""Command ids and upload ids: safe in topics, logs and file names."""

ONLINE = b"online"
OFFLINE = b"offline"


class MessageClass(StrEnum):
    """What an outgoing message is; decides its priority in the outbox and its time to live."""

    REPLY = "reply"
    EVENT = "event"
    TELEMETRY = "telemetry"
    FRAME = "frame"


PRIORITY: Mapping[MessageClass, int] = {
    MessageClass.REPLY: 3,
    MessageClass.EVENT: 2,
    MessageClass.TELEMETRY: 1,
    MessageClass.FRAME: 0,
}
"""Higher is sent first and dropped last when the outbox is over its disk budget."""


class Payload(BaseModel):
    """Base of every JSON payload: closed, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# -- vehicle → cloud ---------------------------------------------------------------------------


class QualitySummary(Payload):
    brightness: float = Field(description="Mean luma over the interval, 0–255.")
    contrast: float = Field(description="Mean standard deviation of luma, 0–255.")
    sharpness: float = Field(description="Mean variance of the Laplacian of luma.")


class AdhesionSummary(Payload):
    score: float = Field(description="Latest adhesion score, 0 (clean lens) – 1.")
    covered_fraction: float = Field(description="Latest fraction of the image covered, 0–1.")


class OutboxStatus(Payload):
    pending: int = Field(description="Messages waiting in the outbox (not yet acknowledged).")
    pending_bytes: int = Field(description="Their size on disk, bytes (estimate).")
    dropped: dict[str, dict[str, int]] = Field(
        description=(
            "Messages dropped since the outbox was created, by class ('reply', 'event', "
            "'telemetry', 'frame') and reason ('budget', 'expired', 'refused', 'too_large'; "
            "'write_failed' when the disk refused them, counted since the daemon started)."
        )
    )


class UplinkStatus(Payload):
    connected: bool = Field(description="Whether the broker link is up.")
    connects: int = Field(description="Successful connections since the daemon started.")
    sent: int = Field(description="Messages acknowledged by the broker since the daemon started.")
    outbox: OutboxStatus = Field(description="The durable outbox.")


class Telemetry(Payload):
    v: Literal[1] = Field(SCHEMA_VERSION, description="Schema version.")
    vehicle_id: str = Field(description="The vehicle (also in the topic).")
    camera_id: str = Field(description="The camera this daemon controls (also in the topic).")
    seq: int = Field(
        description=(
            "Telemetry sequence number of this camera: +1 per message, kept across restarts "
            "(stored with the outbox), so a gap means a message was dropped (see `uplink.outbox`)."
        )
    )
    time: float = Field(description="When the snapshot was taken, Unix time in seconds.")
    uptime_s: float = Field(description="Seconds since the daemon started.")
    interval_s: float = Field(description="Seconds this snapshot covers.")
    fps: float = Field(description="Frames per second through the pipeline over the interval.")
    frames_in: int = Field(description="Frames captured since the daemon started.")
    frames_out: int = Field(description="Frames through the whole pipeline since start.")
    frames_dropped: int = Field(description="Frames dropped by full queues since start.")
    frames_dropped_interval: int = Field(description="Frames dropped during this interval.")
    frames_invalid: int = Field(description="Frames that could not be decoded since start.")
    quality: QualitySummary | None = Field(
        description="Image quality over the interval; null when no frame was measured."
    )
    condition: str | None = Field(
        description=(
            f"Scene condition of the latest frame, judged on the raw frame: one of {_CONDITIONS}; "
            "null before the first frame was analysed."
        )
    )
    adhesion: AdhesionSummary | None = Field(
        description="What sits on the lens; null when no detector ran."
    )
    temperatures_c: dict[str, float] = Field(
        description=(
            "Temperatures by sensor name, °C: the board's as 'chip/label', the camera module's "
            "latest valid readings as 'camera/sensor', 'camera/cold_side' and "
            "'camera/hot_side'; empty when none."
        )
    )
    fan_duty: float | None = Field(description="Lens fan duty cycle 0–1 on the latest frame.")
    fan_driver: str | None = Field(
        None,
        description="Lens fan driver on the latest frame ('mcu', 'sysfs', 'gpiozero'; 'none': "
        "no real fan, with the alarm `no_real_fan`); null before the first frame.",
    )
    alarms: list[str] = Field(
        default_factory=list,
        description="Control alarms active on the latest frame: thermal and sensor ones, "
        "'actuator_fault:<actuator>' (a fan or MCU that failed to open or dropped out, retried "
        "with backoff), 'no_real_fan', 'lens_service_required'.",
    )
    lens_service_required: bool = Field(
        default=False,
        description="The lens cleaning spent its retries: someone must service the lens. "
        "Latched until a cleaning succeeds or the `clear_lens_service` command.",
    )
    backend: str | None = Field(description="Enhancement backend on the latest frame.")
    model: str | None = Field(
        description=(
            "'name@version' of the model that enhanced the latest frame; null when none did "
            "(a classical or passthrough backend)."
        )
    )
    cpu_percent: float = Field(
        description="System CPU use over the interval, percent of all cores."
    )
    process_cpu_percent: float = Field(description="This daemon's CPU use, percent of one core.")
    memory_percent: float = Field(description="System memory in use, percent.")
    process_rss_mb: float = Field(description="This daemon's resident memory, MiB.")
    uplink: UplinkStatus = Field(description="The fleet link and its outbox.")


class EventMessage(Payload):
    v: Literal[1] = Field(SCHEMA_VERSION, description="Schema version.")
    vehicle_id: str = Field(description="The vehicle.")
    camera_id: str = Field(description="The camera whose daemon emitted it (also in the topic).")
    seq: int = Field(description="Event sequence number of this camera, kept across restarts.")
    time: float = Field(description="When the event was emitted, Unix time in seconds.")
    type: str = Field(description="Event type, one of docs/events.md.")
    t: float = Field(description="Seconds of video time (see docs/events.md).")
    frame: int | None = Field(description="Sequence number of the frame concerned, or null.")
    data: dict[str, Any] = Field(description="The event's fields, as listed in docs/events.md.")


UploadReason = Literal["request", "good_frame", "before_cleaning", "after_cleaning"]
FrameContent = Literal["raw", "enhanced"]


class FrameMeta(Payload):
    v: Literal[1] = Field(SCHEMA_VERSION, description="Schema version.")
    vehicle_id: str = Field(description="The vehicle.")
    camera_id: str = Field(description="The camera that took the frame (also in the topic).")
    upload_id: str = Field(description="Identifies the upload; also in the topic.")
    reason: UploadReason = Field(
        description=(
            "'request' (a `capture_frames` command), 'good_frame' (policy: a good frame every "
            "N seconds), 'before_cleaning' or 'after_cleaning'."
        )
    )
    command_id: str | None = Field(description="The `capture_frames` command id, if any.")
    time: float = Field(description="When the frame was captured, Unix time in seconds.")
    frame_seq: int = Field(description="Frame sequence number in the daemon.")
    t_video: float = Field(description="Seconds of video time of the frame.")
    content: FrameContent = Field(description="'raw' (as captured) or 'enhanced'.")
    width: int = Field(description="Pixels.")
    height: int = Field(description="Pixels.")
    encoding: Literal["jpeg"] = Field("jpeg", description="Image encoding of the chunks.")
    size_bytes: int = Field(description="Size of the whole JPEG, bytes.")
    chunk_size: int = Field(description="Bytes per chunk (the last one may be shorter).")
    chunks: int = Field(description="Number of chunk messages, numbered 0 … chunks−1.")
    sha256: str = Field(description="SHA-256 of the whole JPEG, hex.")
    quality: QualitySummary | None = Field(description="Quality metrics of this frame.")
    adhesion: AdhesionSummary | None = Field(description="Adhesion estimate of this frame.")
    condition: str | None = Field(
        description=f"Scene condition of this frame ({_CONDITIONS}), when known."
    )
    backend: str | None = Field(description="Enhancement backend that processed the frame.")
    model: str | None = Field(
        description="'name@version' of the model that enhanced this frame, when one did."
    )


class CommandErrorInfo(Payload):
    code: Literal[
        "too_large",
        "malformed",
        "bad_response_topic",
        "expired",
        "unknown_command",
        "invalid_args",
        "unavailable",
        "interrupted",
        "busy",
        "failed",
    ] = Field(description="What went wrong (see the command section).")
    message: str = Field(description="Human-readable detail naming the problem.")


class CommandReply(Payload):
    v: Literal[1] = Field(SCHEMA_VERSION, description="Schema version.")
    vehicle_id: str = Field(description="The vehicle that answers.")
    camera_id: str = Field(
        description="The camera whose daemon answers (a vehicle-wide command gets one reply "
        "from each camera)."
    )
    id: str | None = Field(description="The command id; null when it could not be read.")
    name: str | None = Field(description="The command name; null when it could not be read.")
    ok: bool = Field(description="True when the command ran and succeeded.")
    result: dict[str, Any] | None = Field(description="The command's result when `ok`.")
    error: CommandErrorInfo | None = Field(description="Why not, when not `ok`.")
    time: float = Field(description="When the command was handled, Unix time in seconds.")


# -- cloud → vehicle ---------------------------------------------------------------------------


class CommandRequest(Payload):
    id: str = Field(
        pattern=ID_PATTERN,
        description="Unique per command; a command with an id already handled is not run again.",
    )
    name: str = Field(max_length=64, description="Which command (see below).")
    args: dict[str, Any] = Field(default_factory=dict, description="The command's arguments.")
    expires_at: float = Field(
        gt=0,
        description="Unix time in seconds after which the vehicle refuses the command.",
    )


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
}


# -- the topic table ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TopicSpec:
    suffix: str
    """Below `<prefix>/<vehicle_id>/<camera_id>/` (scope 'camera') or `<prefix>/<vehicle_id>/`
    (scope 'vehicle'); `{name}` parts are filled in per message."""
    scope: Literal["camera", "vehicle"] = "camera"
    direction: Literal["vehicle → cloud", "cloud → vehicle"]
    payload: type[BaseModel] | str
    """A model for JSON payloads, or a description of the bytes."""
    qos: int
    retain: bool
    message_class: MessageClass | None
    """The outbox class (priority, time to live); None: not sent through the outbox."""
    description: str

    @property
    def path(self) -> str:
        """The topic with its placeholders, for the docs."""
        level = "<camera_id>/" if self.scope == "camera" else ""
        return f"<prefix>/<vehicle_id>/{level}{self.suffix}"


TOPICS: Mapping[str, TopicSpec] = {
    "status": TopicSpec(
        suffix="status",
        direction="vehicle → cloud",
        payload="UTF-8 text `online` or `offline`",
        qos=1,
        retain=True,
        message_class=None,
        description="Availability. `online` is published on every connection; `offline` on a clean "
        "shutdown, or by the broker as the Last Will when the link drops.",
    ),
    "telemetry": TopicSpec(
        suffix="telemetry",
        direction="vehicle → cloud",
        payload=Telemetry,
        qos=1,
        retain=False,
        message_class=MessageClass.TELEMETRY,
        description="A snapshot every `telemetry_interval_s`, and one on shutdown.",
    ),
    "events": TopicSpec(
        suffix="events",
        direction="vehicle → cloud",
        payload=EventMessage,
        qos=1,
        retain=False,
        message_class=MessageClass.EVENT,
        description="Every event of docs/events.md, as it happens.",
    ),
    "frame_meta": TopicSpec(
        suffix="frames/{upload_id}/meta",
        direction="vehicle → cloud",
        payload=FrameMeta,
        qos=1,
        retain=False,
        message_class=MessageClass.FRAME,
        description="Describes one uploaded frame; sent before its chunks.",
    ),
    "frame_chunk": TopicSpec(
        suffix="frames/{upload_id}/{index}",
        direction="vehicle → cloud",
        payload="bytes: part `index` (0-based) of the JPEG, `chunk_size` bytes except the last",
        qos=1,
        retain=False,
        message_class=MessageClass.FRAME,
        description="The JPEG of an upload in chunks; reassemble in index order and check `sha256`.",
    ),
    "commands": TopicSpec(
        suffix="commands",
        direction="cloud → vehicle",
        payload=CommandRequest,
        qos=1,
        retain=False,
        message_class=None,
        description="Commands to this camera. Set the MQTT 5 Response Topic (under the camera's "
        "or the vehicle's `replies`) and Correlation Data; the camera subscribes with a "
        "persistent session, so commands sent while it is offline arrive when it reconnects "
        "(unless expired).",
    ),
    "vehicle_commands": TopicSpec(
        suffix="commands",
        scope="vehicle",
        direction="cloud → vehicle",
        payload=CommandRequest,
        qos=1,
        retain=False,
        message_class=None,
        description="Commands to every camera of the vehicle: each camera daemon runs it (its own "
        "ledger: once per camera) and sends its own reply, with its `camera_id`, to the "
        "Response Topic (under the vehicle's `replies`, so that one subscription gets them "
        "all). The topic of the single-camera layout's commands, so an older console still "
        "reaches the vehicle.",
    ),
    "replies": TopicSpec(
        suffix="replies[/{anything}]",
        direction="vehicle → cloud",
        payload=CommandReply,
        qos=1,
        retain=False,
        message_class=MessageClass.REPLY,
        description="One reply per command, on the request's Response Topic (which must lie under "
        "the camera's or the vehicle's `replies`) or on the camera's `replies` itself, with the "
        "request's Correlation Data.",
    ),
    "vehicle_replies": TopicSpec(
        suffix="replies/{anything}",
        scope="vehicle",
        direction="vehicle → cloud",
        payload=CommandReply,
        qos=1,
        retain=False,
        message_class=MessageClass.REPLY,
        description="Replies to a Response Topic under the vehicle's `replies` (the choice for a "
        "vehicle-wide command): one per camera, told apart by `camera_id`.",
    ),
    "update_offer": TopicSpec(
        suffix="update/offer",
        scope="vehicle",
        direction="cloud → vehicle",
        payload=SignedUpdate,
        qos=1,
        retain=True,
        message_class=None,
        description="The signed model update offered to this vehicle (its `manifest` is an "
        "[UpdateManifest](#updatemanifest)); retained, so a vehicle that is offline gets it when "
        "it connects. Every camera of the vehicle takes it (each installs it in its own "
        "`state_dir`) and answers with `model_update_*` events on its own `events` topic "
        "(docs/model-updates.md).",
    ),
    "update_chunk": TopicSpec(
        suffix="update/data/{update_id}/{index}",
        scope="vehicle",
        direction="cloud → vehicle",
        payload="bytes: part `index` (0-based) of the model file, `chunk_size` bytes except the "
        "last",
        qos=1,
        retain=True,
        message_class=None,
        description="The model file of an offer in chunks, retained with a Message Expiry at the "
        "offer's `expires_at`. The vehicle subscribes to the chunks it lacks, "
        "`update.window_chunks` at a time (one exact topic each, unsubscribed on arrival), after "
        "a disconnect or restart too, and subscribes again when the transfer stalls.",
    ),
}

_TOPIC_PART = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

VEHICLE_LEVEL: Final = frozenset({"commands", "replies", "update"})
"""Words of the vehicle's own topics, one level below the vehicle: not camera ids."""
LEGACY_LEVEL: Final = frozenset({"status", "telemetry", "events", "frames"})
"""Words of the single-camera layout (`<prefix>/<vehicle_id>/telemetry`, …): not camera ids,
so that no topic of that layout can be read as a camera's."""
RESERVED_CAMERA_IDS: Final = VEHICLE_LEVEL | LEGACY_LEVEL


def camera_id_problem(camera_id: str) -> str | None:
    """Why `camera_id` cannot be a camera's topic level, or None when it can."""
    if not _TOPIC_PART.match(camera_id):
        return "must be 1–64 letters, digits, '-' or '_'"
    if camera_id in RESERVED_CAMERA_IDS:
        reserved = ", ".join(sorted(RESERVED_CAMERA_IDS))
        return f"{camera_id!r} is a topic name of the fleet link (reserved: {reserved})"
    return None


def client_id(vehicle_id: str, camera_id: str) -> str:
    """The camera daemon's MQTT client id, `<vehicle_id>.<camera_id>`: unique per camera (two
    cameras of one vehicle do not take each other's connection over) and stable, so the
    persistent session (commands queued while it was offline) is found again after a restart.
    Neither id may contain '.', so the pair reads back unambiguously."""
    return f"{vehicle_id}.{camera_id}"


class Topics:
    """The topics of one camera daemon (`<prefix>/<vehicle_id>/<camera_id>/…`) and the
    vehicle-wide ones it uses (`<prefix>/<vehicle_id>/commands`, `replies`, `update/…`)."""

    def __init__(self, prefix: str, vehicle_id: str, camera_id: str) -> None:
        for label, part in (("prefix", prefix), ("vehicle id", vehicle_id)):
            if not _TOPIC_PART.match(part):
                raise ValueError(f"{label} {part!r} is not a valid topic level")
        problem = camera_id_problem(camera_id)
        if problem is not None:
            raise ValueError(f"camera id {camera_id!r}: {problem}")
        self.prefix = prefix
        self.vehicle_id = vehicle_id
        self.camera_id = camera_id
        self.client_id = client_id(vehicle_id, camera_id)
        self.vehicle = f"{prefix}/{vehicle_id}"
        self.root = f"{self.vehicle}/{camera_id}"
        self.status = f"{self.root}/{TOPICS['status'].suffix}"
        self.telemetry = f"{self.root}/{TOPICS['telemetry'].suffix}"
        self.events = f"{self.root}/{TOPICS['events'].suffix}"
        self.commands = f"{self.root}/{TOPICS['commands'].suffix}"
        self.replies = f"{self.root}/replies"
        self.vehicle_commands = f"{self.vehicle}/{TOPICS['vehicle_commands'].suffix}"
        self.vehicle_replies = f"{self.vehicle}/replies"
        self.update_offer = f"{self.vehicle}/{TOPICS['update_offer'].suffix}"
        self.legacy_status = f"{self.vehicle}/status"
        """The single-camera layout's retained status, cleared once when a camera migrates."""

    def update_chunk(self, update_id: str, index: int) -> str:
        return f"{self.vehicle}/update/data/{update_id}/{index}"

    def is_update_topic(self, topic: str) -> bool:
        return topic.startswith(f"{self.vehicle}/update/")

    def is_update_chunk(self, topic: str) -> bool:
        return topic.startswith(f"{self.vehicle}/update/data/")

    def is_command_topic(self, topic: str) -> bool:
        """The camera's own commands, or the vehicle-wide ones every camera obeys."""
        return topic in (self.commands, self.vehicle_commands)

    def frame_meta(self, upload_id: str) -> str:
        return f"{self.root}/frames/{upload_id}/meta"

    def frame_chunk(self, upload_id: str, index: int) -> str:
        return f"{self.root}/frames/{upload_id}/{index}"

    def is_reply_topic(self, topic: str) -> bool:
        """Whether `topic` may carry this camera's replies: no wildcards, under the camera's
        `replies` or the vehicle's."""
        if "+" in topic or "#" in topic or len(topic) > 256:
            return False
        return any(
            topic == base or topic.startswith(base + "/")
            for base in (self.replies, self.vehicle_replies)
        )

    def migrated(self, topic: str) -> str | None:
        """The topic of this camera that a stored single-camera-layout `topic` becomes
        (`<prefix>/<vehicle_id>/telemetry` → `<prefix>/<vehicle_id>/<camera_id>/telemetry`, the
        same for `events` and `frames/…`), or None when `topic` is not of that layout. Replies
        stay: the vehicle's `replies` is still valid."""
        head, _, rest = topic.partition(self.vehicle + "/")
        if head or not rest:
            return None
        first = rest.split("/", 1)[0]
        if first in LEGACY_LEVEL - {"status"}:
            return f"{self.root}/{rest}"
        return None


@dataclass(frozen=True)
class TopicAddress:
    """What a topic of the fleet tree names: the vehicle, the camera (None for a vehicle-wide
    topic) and the rest (`telemetry`, `frames/<upload_id>/meta`, …)."""

    vehicle_id: str
    camera_id: str | None
    suffix: str


@dataclass(frozen=True)
class FleetTopics:
    """The cloud's view of the tree: topics and filters for any vehicle and camera (`+` for all),
    and which vehicle and camera a received topic belongs to. The tools build topics here only."""

    prefix: str = "fleet"

    def camera(self, vehicle: str, camera: str, suffix: str) -> str:
        """A camera's topic (`vehicle` or `camera` may be `+`)."""
        return f"{self.prefix}/{vehicle}/{camera}/{suffix}"

    def vehicle(self, vehicle: str, suffix: str) -> str:
        """A vehicle-wide topic: `commands`, `replies/…`, `update/…`."""
        return f"{self.prefix}/{vehicle}/{suffix}"

    def parse(self, topic: str) -> TopicAddress | None:
        """The address of a received topic; None when it is not below the prefix, or is of the
        single-camera layout (`<prefix>/<vehicle_id>/telemetry`): see `legacy`."""
        parts = topic.split("/")
        if len(parts) < 3 or parts[0] != self.prefix:
            return None
        vehicle, level = parts[1], parts[2]
        if level in VEHICLE_LEVEL:
            return TopicAddress(vehicle, None, "/".join(parts[2:]))
        if level in LEGACY_LEVEL or len(parts) < 4:
            return None
        return TopicAddress(vehicle, level, "/".join(parts[3:]))

    def legacy(self, topic: str) -> bool:
        """Whether `topic` is of the single-camera layout, which has no camera level."""
        parts = topic.split("/")
        return len(parts) >= 3 and parts[0] == self.prefix and parts[2] in LEGACY_LEVEL

    def legacy_filters(self, vehicle: str) -> list[str]:
        """Filters that catch what a daemon of the single-camera layout still sends."""
        return [f"{self.prefix}/{vehicle}/{level}" for level in ("status", "telemetry", "events")]


def legacy_message(topic: str) -> str:
    """The one line a tool prints for a message in the single-camera layout."""
    return (
        f"{topic}: single-camera topic layout (no camera level), ignored: that daemon predates "
        "per-camera topics; upgrade it (its topics become <prefix>/<vehicle_id>/<camera_id>/…)"
    )


def mosquitto_acl(prefix: str = "fleet") -> str:
    """The broker's ACL for the vehicles (Mosquitto `acl_file` patterns; username = vehicle id,
    which every camera of the vehicle uses): each camera may write its own telemetry, events,
    status, uploads and replies and read its commands, and the vehicle's commands, replies and
    updates; nothing of another vehicle. The operator's lines come after it."""
    p = f"{prefix}/%u"
    lines = [
        f"pattern write {p}/+/status",
        f"pattern write {p}/+/telemetry",
        f"pattern write {p}/+/events",
        f"pattern write {p}/+/frames/#",
        f"pattern write {p}/+/replies/#",
        f"pattern write {p}/replies/#",
        f"pattern read {p}/+/commands",
        f"pattern read {p}/commands",
        f"pattern read {p}/update/#",
        "# the single-camera layout's retained status, cleared by a camera that migrates",
        f"pattern write {p}/status",
    ]
    return "\n".join(lines) + "\n"


# -- docs/mqtt.md ------------------------------------------------------------------------------


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{a!r}`".replace("'", '"') for a in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in get_args(annotation))
    if origin is dict:
        key, value = get_args(annotation)
        return f"object of {_type_name(key)} → {_type_name(value)}"
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if _is_class(annotation):
        if issubclass(annotation, BaseModel):
            return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def _bounds(model: type[BaseModel], name: str) -> str:
    info = model.model_fields[name]
    parts = []
    for meta in info.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{sign} {value}")
        for attr, label in (("min_length", "length ≥"), ("max_length", "length ≤")):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{label} {value}")
        pattern = getattr(meta, "pattern", None)
        if pattern is not None:
            parts.append(f"matches `{pattern}`")
    if not info.is_required():
        default = info.get_default(call_default_factory=True)
        parts.insert(0, f"default `{default!r}`".replace("'", '"'))
    return ", ".join(parts)


def _model_table(model: type[BaseModel], out: list[str], seen: set[type[BaseModel]]) -> None:
    if model in seen:
        return
    seen.add(model)
    out.append(f"### {model.__name__}")
    out.append("")
    if not model.model_fields:
        out.append("No fields: `{}`.")
        out.append("")
        return
    out.append("| field | type | constraints | meaning |")
    out.append("|---|---|---|---|")
    nested: list[type[Payload]] = []
    for name, info in model.model_fields.items():
        desc = (info.description or "").replace("|", "\\|")
        out.append(
            f"| `{name}` | {_type_name(info.annotation)} | {_bounds(model, name)} | {desc} |"
        )
        nested.extend(_payload_models(info.annotation))
    out.append("")
    for sub in nested:
        _model_table(sub, out, seen)


def _is_class(annotation: Any) -> TypeGuard[type[Any]]:
    """A class, not an alias such as `list[str]` (which Python 3.10 also counts as a `type`)."""
    return isinstance(annotation, type) and not isinstance(annotation, types.GenericAlias)


def _payload_models(annotation: Any) -> list[type[Payload]]:
    if _is_class(annotation) and issubclass(annotation, Payload):
        return [annotation]
    return [m for a in get_args(annotation) for m in _payload_models(a)]


TELEMETRY_EXAMPLE = Telemetry(
    vehicle_id="veh-0001",
    camera_id="front",
    seq=42,
    time=1764781200.5,
    uptime_s=21.0,
    interval_s=0.5,
    fps=29.8,
    frames_in=626,
    frames_out=622,
    frames_dropped=0,
    frames_dropped_interval=0,
    frames_invalid=0,
    quality=QualitySummary(brightness=151.4, contrast=18.3, sharpness=42.6),
    condition="fog",
    adhesion=AdhesionSummary(score=0.04, covered_fraction=0.002),
    temperatures_c={
        "coretemp/Package id 0": 54.0,
        "camera/sensor": 41.3,
        "camera/cold_side": 29.8,
        "camera/hot_side": 47.1,
    },
    fan_duty=0.0,
    backend="onnxruntime:fast-enhance",
    model="fast-enhance@1.0.0",
    cpu_percent=37.5,
    process_cpu_percent=88.1,
    memory_percent=41.2,
    process_rss_mb=412.6,
    uplink=UplinkStatus(
        connected=True,
        connects=1,
        sent=57,
        outbox=OutboxStatus(pending=1, pending_bytes=1210, dropped={}),
    ),
)
"""docs/mqtt.md's example: every field, with values the daemon really produces."""


def mqtt_markdown(
    settable: Mapping[str, str],
    ttl_defaults: Mapping[str, float],
    *,
    command_window: int,
    max_depth: int,
) -> str:
    """docs/mqtt.md: topics, payloads, commands, errors and the outbox rules (`command_window`:
    the Receive Maximum the vehicle announces; `max_depth`: the JSON nesting a command may have)."""
    background = " and ".join(f"`{n}`" for n, c in COMMANDS.items() if c.background)
    out = [
        "# MQTT fleet link",
        "",
        "<!-- Generated by vehicle_agent.uplink.docs.mqtt_markdown(); do not edit. -->",
        "",
        'The daemon talks MQTT 5 to one broker (`[uplink] type = "mqtt"`, see',
        "docs/configuration.md). TLS (`mqtts://`) checks the broker's certificate against",
        "`ca_file` and its name against the URL's host; a config that names TLS files with a",
        "plain `mqtt://` URL is refused.",
        "",
        "## Vehicles and cameras",
        "",
        "One daemon runs beside each camera (`agent.camera_id`; `front` by default), so a",
        "vehicle may have several. Every topic sits below `<prefix>/<vehicle_id>/` (prefix",
        "`fleet` by default), and a camera's below `<prefix>/<vehicle_id>/<camera_id>/`, as",
        "Frigate's `frigate/<camera>/…`: each camera has its own `status` (and Last Will),",
        "`telemetry` and `events` (each with its own `seq`, so a gap still means a lost",
        "message), frame uploads, `commands` and `replies`. The vehicle-wide view is a",
        "wildcard: `fleet/veh-0001/+/telemetry` (every camera of a vehicle),",
        "`fleet/+/+/status` (the whole fleet). Three things are the vehicle's: `commands`,",
        "which every camera of the vehicle runs and answers, each with its `camera_id`;",
        "`replies/…`, where a vehicle-wide command's replies go; and model `update/…`, which",
        "every camera takes. So `commands`, `replies` and `update`, and the old layout's",
        "`status`, `telemetry`, `events` and `frames`, cannot be camera ids (`check-config`",
        "refuses them).",
        "",
        "Each camera connects with the MQTT client id `<vehicle_id>.<camera_id>`: unique per",
        "camera, so two cameras do not take each other's connection over, and stable, so the",
        "persistent session (commands sent while the camera was offline) is found again after",
        "a restart. All cameras of a vehicle log in as the vehicle (username or certificate",
        "name = vehicle id). Each camera daemon needs its own `agent.state_dir` (or",
        "`uplink.outbox.path`): the outbox holds the camera's sequence numbers and command",
        "ledger, and a daemon refuses an outbox that another camera of the vehicle uses.",
        "",
        "The broker's ACL (Mosquitto `acl_file`; `%u` is the username) confines each vehicle to",
        "its own subtree, each direction to its topics:",
        "",
        "```",
        mosquitto_acl().rstrip(),
        "```",
        "",
        "The operator (the fleet console, `tools.model_update`, the collector) gets",
        "`topic readwrite fleet/#`.",
        "",
        "**The single-camera layout** (`<prefix>/<vehicle_id>/telemetry`, client id = vehicle",
        "id) is migrated, not refused, on the vehicle: at the first start with this version the",
        "outbox's pending telemetry, events and uploads move to the camera's topics (nothing",
        "queued during an outage is lost), and the old layout's retained `status` is cleared",
        "(an empty retained message), so it does not claim `online` for ever. Commands on the",
        "old topic `<prefix>/<vehicle_id>/commands` are now vehicle-wide, so an older console",
        "still reaches a one-camera vehicle. The old client id's session at the broker expires",
        "by itself after `session_expiry_s`. The tools refuse the old layout instead: a",
        "message on an old topic is reported with one line naming the topic and ignored.",
        "",
        "All messages are QoS 1. Outgoing ones (except `status`) are first written to a SQLite",
        "outbox and deleted only when the broker acknowledges them with a PUBACK reason code",
        "below 0x80, so a broker outage or a `kill -9` of the daemon loses nothing the outbox",
        "holds; a message may arrive twice after a reconnect: deduplicate on `seq` / `upload_id`",
        "/ `id`. JSON payloads are UTF-8 objects with a schema version `v`, content type",
        "`application/json`, and a Message Expiry Interval equal to their remaining time to live.",
        "",
        "## Topics",
        "",
        "| topic | direction | payload | QoS | retained | outbox class | meaning |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in TOPICS.values():
        payload = (
            f"[{spec.payload.__name__}](#{spec.payload.__name__.lower()})"
            if isinstance(spec.payload, type)
            else spec.payload
        )
        klass = spec.message_class.value if spec.message_class else "—"
        out.append(
            f"| `{spec.path}` | {spec.direction} | {payload} | "
            f"{spec.qos} | {'yes' if spec.retain else 'no'} | {klass} | {spec.description} |"
        )
    out += [
        "",
        "## Outbox classes",
        "",
        "When the outbox exceeds its disk budget it drops the lowest priority first, oldest",
        "first (a frame upload as a whole), never a higher-priority message to keep a lower one;",
        "a message older than its class's time to live is dropped instead of sent. Drops are",
        "counted by class and reason in telemetry (`uplink.outbox.dropped`) and reported in",
        "`outbox_dropped` events. A PUBACK with a reason code ≥ 0x80 is an error: 0x87 (not",
        "authorized), 0x90 (topic name invalid), 0x99 (payload format invalid) and 0x83 drop the",
        "message at once (reason `refused`, event `uplink_refused`); 0x80, 0x91 and 0x97 are",
        "retried a few times first. 0x10 (no matching subscribers) is a success.",
        "",
        "| class | priority (higher first) | default time to live, s |",
        "|---|---|---|",
    ]
    for klass, priority in sorted(PRIORITY.items(), key=lambda kv: -kv[1]):
        out.append(f"| `{klass.value}` | {priority} | {ttl_defaults.get(klass.value, '')} |")
    out += [
        "",
        "## Commands",
        "",
        "A command is a [CommandRequest](#commandrequest) on a camera's `commands` (or the",
        "vehicle's, for every camera) with the MQTT 5 Response Topic and Correlation Data set;",
        "the [CommandReply](#commandreply) goes to that Response Topic (it must lie under the",
        "camera's or the vehicle's `replies`; otherwise the reply goes to the camera's `replies`",
        "with error `bad_response_topic` and the command is not run; without a Response Topic it",
        "goes to the camera's `replies`) and carries the same Correlation Data. Every command",
        "gets one reply from each camera that receives it.",
        "Each id runs at most once: a redelivered command gets the first reply again (a",
        "redelivery of one still running gets it when that one finishes); one that was running",
        "when the daemon stopped gets `interrupted`. Checks, in order, each refusing the command",
        "without changing anything:",
        "",
        "1. `too_large`: the payload exceeds `command_max_bytes` (the vehicle announces a",
        "   Maximum Packet Size of 4 × that + 1 KiB: the broker drops anything larger unanswered);",
        "2. `malformed`: not a JSON object matching CommandRequest, nested deeper than",
        f"   {max_depth} levels, or without Correlation Data (the message names the problem;",
        "   the reply to a command without Correlation Data has none either: match it by `id`);",
        "3. `bad_response_topic`: the Response Topic lies outside `replies`;",
        "4. (an id already handled gets its first reply again);",
        "5. `expired`: `expires_at` has passed;",
        "6. `unknown_command`: `name` is not one below;",
        "7. `invalid_args`: `args` do not match the command (the message names the key and bound);",
        "8. `unavailable`: the daemon has no handler for it (e.g. no lens cleaner);",
        "9. `busy`: a background command of the same name is running (see below).",
        "",
        "A handler that fails replies `failed`.",
        "",
        f"{background} run in the background: the commands after them are",
        "answered while they run (a `ping` during a 10 s `clean_lens` is answered at once); the",
        "others run one at a time, in arrival order.",
        "",
        "The vehicle acknowledges a command to the broker (PUBACK, in arrival order) only once",
        "its reply is in the outbox (a background command: once it has started), and announces",
        f"a Receive Maximum of {command_window}: the broker sends no more than that many",
        "unacknowledged messages and keeps the rest in the vehicle's session (Mosquitto: up to",
        "`max_queued_messages`, 1000 by default, beyond which it drops messages silently). So a",
        "burst is answered in full, and a command that a `kill -9` cut short before its reply",
        "was stored is delivered again and answered then (`interrupted` if it had started). A",
        f"command that still finds {command_window} commands waiting (a broker that ignores",
        "the Receive Maximum) is refused with `busy`. A background command running when the",
        "daemon stops cleanly is answered `interrupted`; one running at a `kill -9` had been",
        "acknowledged, so it is answered only if sent again (same id: `interrupted`).",
        "",
        "| command | args | result | what it does |",
        "|---|---|---|---|",
    ]
    for name, cmd in COMMANDS.items():
        result = f"[{cmd.result.__name__}](#{cmd.result.__name__.lower()})" if cmd.result else "—"
        out.append(
            f"| `{name}` | [{cmd.args.__name__}](#{cmd.args.__name__.lower()}) | {result} | "
            f"{cmd.description} |"
        )
    out += [
        "",
        "### Settable keys (`set_config`)",
        "",
        "| key | meaning |",
        "|---|---|",
    ]
    out.extend(f"| `{key}` | {desc} |" for key, desc in settable.items())
    out += [
        "",
        "## Model updates",
        "",
        "The cloud publishes a model's chunks on `update/data/<update_id>/<index>`, then the",
        "signed offer on `update/offer`, all retained with a Message Expiry at the offer's",
        "expiry (`python -m tools.model_update publish`). These topics are the vehicle's, not a",
        "camera's: every camera of the vehicle takes the update. Each camera verifies the offer,",
        "subscribes to the chunks it lacks a window at a time (after a reconnect or restart",
        "too), and reports every step as events",
        "(`model_update_offered`, `…_progress`, `…_refused`, `…_installed`, `model_swapped`,",
        "`model_rolled_back`, `model_update_confirmed`). It announces a Maximum Packet Size that",
        "fits `update.max_chunk_bytes`. See docs/model-updates.md.",
        "",
        "## Payloads",
        "",
        "A telemetry message from `vehicle-agent simulate` with the simulated camera module",
        "(fast-enhance on ONNX Runtime in fog; `camera/…` are the module's sensor, cooler cold",
        "side and hot side):",
        "",
        "```json",
        TELEMETRY_EXAMPLE.model_dump_json(indent=2),
        "```",
        "",
    ]
    seen: set[type[BaseModel]] = set()
    models: list[type[BaseModel]] = [
        m.payload for m in TOPICS.values() if isinstance(m.payload, type)
    ]
    models.append(UpdateManifest)
    for cmd in COMMANDS.values():
        models.append(cmd.args)
        if cmd.result is not None:
            models.append(cmd.result)
    for model in models:
        _model_table(model, out, seen)
    return "\n".join(out).rstrip() + "\n"
