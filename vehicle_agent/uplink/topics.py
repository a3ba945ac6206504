"""Uplink stage: every MQTT topic and payload of the fleet link, defined once (docs/mqtt.md is made here).

Topics live under one subtree per vehicle, `<prefix>/<vehicle_id>/…` (prefix `fleet` by default),
and there under one per camera, `<prefix>/<vehicle_id>/<camera_id>/…` (as Frigate's
`frigate/<camera>/…`): each camera daemon has its own status, Last Will, telemetry, events,
uploads, commands and replies. A few topics are the vehicle's (`commands` that every camera obeys,
`replies`, model `update/…`), so the words they use cannot be camera ids. The broker's ACL
(`MOSQUITTO_ACL`, username = vehicle id) confines a vehicle to its own subtree. `Topics` is a
camera's view (the daemon), `FleetTopics` the cloud's (any vehicle or camera, wildcards). JSON
payloads are pydantic models with a schema version `v`; `docs.mqtt_markdown()` renders them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from vehicle_agent.compat import StrEnum
from vehicle_agent.quality.condition import CONDITIONS

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
        payload="[SignedUpdate](#signedupdate) (the model updater's, `update/manifest.py`)",
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
