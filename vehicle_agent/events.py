"""Every event the daemon can emit, defined once with its fields, and the bus that delivers them.

Events go to `events.jsonl` (bench and vehicle), to the log, and later to the fleet uplink.
`docs/events.md` is generated from `EVENT_TYPES`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from vehicle_agent.control.events import CONTROL_EVENTS
from vehicle_agent.records import Event, JsonValue
from vehicle_agent.update.events import UPDATE_EVENTS

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EventSpec:
    description: str
    fields: Mapping[str, str]
    """Field name → meaning, with its unit."""
    level: int = logging.INFO


EVENT_TYPES: Mapping[str, EventSpec] = {
    "pipeline_started": EventSpec(
        "The pipeline is running.",
        {"version": "daemon version", "config_digest": "sha256 prefix of the effective config"},
    ),
    "pipeline_stopped": EventSpec(
        "The pipeline stopped.",
        {"reason": "'end_of_stream', 'signal', 'source_gave_up' or 'error'"},
    ),
    "shutdown_forced": EventSpec(
        "Stages did not drain in time on shutdown and were cancelled.",
        {"timeout_s": "drain time allowed, seconds", "pending": "stages still running"},
        logging.WARNING,
    ),
    "stage_stalled": EventSpec(
        "A stage has worked on one frame for longer than pipeline.stall_s: the service stops "
        "its watchdog pings, so systemd restarts it (once per stall).",
        {
            "stage": "the stalled stage",
            "busy_s": "seconds on the frame so far",
            "bound_s": "pipeline.stall_s",
        },
        logging.ERROR,
    ),
    "source_opened": EventSpec(
        "The frame source opened.",
        {
            "uri": "source URI",
            "description": "what the source reported",
            "width": "pixels",
            "height": "pixels",
            "fps": "nominal frames per second, or null",
            "live": "true for cameras and pipelines",
        },
    ),
    "source_lost": EventSpec(
        "The source failed to open or stopped delivering; it will be retried.",
        {
            "uri": "source URI",
            "reason": "why",
            "attempt": "failed attempts in a row",
            "retry_in_s": "seconds",
        },
        logging.WARNING,
    ),
    "source_resumed": EventSpec(
        "A lost source delivers again.",
        {
            "uri": "source URI",
            "outage_s": "seconds without frames",
            "missing_frames": "frames the camera would have delivered meanwhile (fps × outage)",
        },
    ),
    "source_gave_up": EventSpec(
        "The source failed more times in a row than allowed; the pipeline stops.",
        {"uri": "source URI", "attempts": "failed attempts", "reason": "last failure"},
        logging.ERROR,
    ),
    "source_ended": EventSpec(
        "A recording reached its end.",
        {"uri": "source URI", "frames": "frames delivered in total"},
    ),
    "source_looped": EventSpec(
        "A recording reached its end and starts again.",
        {"uri": "source URI", "loop": "loops completed"},
    ),
    "frame_invalid": EventSpec(
        "One frame could not be decoded and was skipped.",
        {"uri": "source URI", "reason": "why"},
        logging.WARNING,
    ),
    "stage_degraded": EventSpec(
        "A stage failed on a frame; the frame went on unchanged by it.",
        {"stage": "stage name", "error": "what failed"},
        logging.WARNING,
    ),
    "stage_recovered": EventSpec(
        "A degraded stage processed a frame again.",
        {"stage": "stage name", "failures": "frames it failed on"},
    ),
    "enhancer_demoted": EventSpec(
        "An enhancement backend failed; frames go to the next backend of the chain.",
        {
            "backend": "backend type ('tensorrt', 'onnxruntime', 'classical', …)",
            "model": "model name it ran, or null for a backend without model",
            "kind": "'load' (did not load: model missing or refused, engine build failed), "
            "'unavailable' (library or GPU absent, or a precision this TensorRT cannot build "
            "such as INT8 on TensorRT 11: never retried), 'error' (raised on a "
            "frame), 'nan' (NaN/inf output), 'blank' (flat output from a real frame), "
            "'slow' (over max_latency_ms for slow_frames frames in a row)",
            "reason": "what failed",
            "retry_in_s": "seconds until its health check, or null when never retried",
        },
        logging.WARNING,
    ),
    "enhancer_promoted": EventSpec(
        "A demoted backend passed its health check (fresh load, warm-up, one probe frame) and "
        "takes frames again.",
        {
            "backend": "backend type",
            "model": "model name, or null",
            "demoted_s": "seconds it was demoted",
        },
    ),
    "enhancer_check_failed": EventSpec(
        "A demoted backend failed its health check again; the next check waits twice as long "
        "(up to enhance.health.promote_max_s).",
        {
            "backend": "backend type",
            "model": "model name, or null",
            "kind": "what failed, as for enhancer_demoted ('load': e.g. an engine build failed)",
            "reason": "what failed",
            "failed_checks": "health checks failed in a row",
            "retry_in_s": "seconds until the next health check",
        },
        logging.WARNING,
    ),
    "enhancer_preparing": EventSpec(
        "A backend needs slow one-time work before it loads (a TensorRT engine build); it runs in "
        "the background while the next backend of the chain gives the frames.",
        {
            "backend": "backend type",
            "model": "model name, or null",
            "reason": "what the work is and why (e.g. 'TensorRT engine build (no cached engine)')",
        },
    ),
    "enhancer_prepared": EventSpec(
        "A backend's background preparation finished and it loaded; it takes the frames from "
        "the next frame on (model_swapped, reason 'promoted'). A failure is enhancer_demoted.",
        {
            "backend": "backend type",
            "model": "model name, or null",
            "prepare_s": "seconds from the start of the preparation to the loaded backend",
        },
    ),
    "model_loaded": EventSpec(
        "A model was verified (sha256, input spec), loaded and warmed up.",
        {
            "backend": "backend type that runs it",
            "model": "name@version",
            "sha256": "first 12 hex digits of the model file's sha256",
            "load_s": "seconds to load (TensorRT: with an engine build done in the load; one done "
            "in the background is enhancer_prepared's prepare_s)",
            "warmup_ms": "warm-up inference, milliseconds",
        },
    ),
    "model_swapped": EventSpec(
        "Frames now come from another backend or model, switched between two frames.",
        {
            "previous": "backend:model (or backend) that gave the frames so far",
            "current": "backend:model (or backend) that gives them now; 'passthrough' is none",
            "reason": "'condition' (the scene condition chose another model), 'fallback' (the "
            "previous one was demoted), 'promoted' (a preferred one is back, or its engine "
            "build finished), 'replaced' (config reload or fleet command), 'update' (a model "
            "update was installed), 'rollback' (a model update was rolled back), 'reconciled' (at "
            "start: the model runs a version the fleet was not told of, as after a kill between "
            "an update's swap and this event; previous and current are then name@version)",
            "condition": "scene condition that gated the frame, or null when unknown",
            "model": "name@version of the model now giving frames, or null (none, or unknown)",
        },
    ),
    "config_reloaded": EventSpec(
        "A new configuration was applied after SIGHUP.",
        {
            "sections": "top-level sections that changed, comma-separated",
            "applied": "'live' (no interruption) or 'restart' (the pipeline restarted)",
            "config_digest": "sha256 prefix of the new config",
        },
    ),
    "config_reload_refused": EventSpec(
        "A configuration given by SIGHUP was invalid; the running one stays.",
        {"error": "file, key and problem"},
        logging.ERROR,
    ),
    "actuator_safe_state": EventSpec(
        "An actuator was put in its safe state.",
        {"actuator": "which", "duty": "duty cycle applied, 0–1", "reason": "why"},
    ),
    "uplink_connected": EventSpec(
        "The fleet link (MQTT) is up.",
        {
            "broker": "broker URL",
            "attempts": "connection attempts it took",
            "outage_s": "seconds without a link before this one, or null on the first",
            "pending": "messages waiting in the outbox",
        },
    ),
    "uplink_lost": EventSpec(
        "The fleet link failed or dropped; it is retried with backoff, the outbox keeps messages.",
        {
            "broker": "broker URL",
            "reason": "why",
            "retry_in_s": "seconds until the next attempt",
        },
        logging.WARNING,
    ),
    "uplink_refused": EventSpec(
        "The broker refused a message (MQTT 5 reason code ≥ 0x80); it was dropped, not retried.",
        {
            "topic": "topic of the message",
            "message_class": "'reply', 'event', 'telemetry' or 'frame'; 'status', 'subscription' "
            "or 'discovery' (Home Assistant) for what is not sent through the outbox",
            "reason_code": "MQTT 5 reason code, e.g. 135 (not authorized)",
            "reason": "reason code name",
        },
        logging.ERROR,
    ),
    "outbox_dropped": EventSpec(
        "Outgoing messages were dropped (over the disk budget, expired, or refused).",
        {
            "counts": "class:reason=count, comma-separated, since the previous report",
            "pending": "messages still in the outbox",
        },
        logging.WARNING,
    ),
    "command_handled": EventSpec(
        "A fleet command was answered.",
        {
            "id": "command id, or null when unreadable",
            "name": "command name, or null",
            "ok": "true when it ran and succeeded",
            "error": "error code when not ok (see docs/mqtt.md), else null",
            "duplicate": "true when it was a redelivery answered with the first reply",
        },
    ),
    "frame_upload_queued": EventSpec(
        "A frame was encoded and queued for upload to the fleet.",
        {
            "upload_id": "identifies the upload",
            "reason": "'request', 'good_frame', 'before_cleaning' or 'after_cleaning'",
            "bytes": "JPEG size, bytes",
            "chunks": "messages it is split into",
        },
    ),
    "scene_condition_changed": EventSpec(
        "The scene condition of the raw frames changed (after its hysteresis hold).",
        {
            "condition": "'normal', 'low_light', 'fog', 'blur' or 'rain'",
            "previous": "the condition before",
        },
    ),
    "fault_injected": EventSpec(
        "Bench simulator only: a fault given with `simulate --fault` took effect (its effects "
        "follow as the stages' own events).",
        {
            "kind": "'camera-stall', 'camera-eos', 'enhance-fail' or 'broker-loss'",
            "spec": "the fault as given, e.g. 'camera-stall@10s-16s'",
            "end_s": "video time it ends, seconds, or null for the end of the run "
            "(camera-stall: start + how long the camera gives no frames, in wall seconds)",
        },
        logging.WARNING,
    ),
    # Lens cleaning and thermal protection, defined beside the control code that emits them.
    **{name: EventSpec(*spec) for name, spec in CONTROL_EVENTS.items()},
    # Model updates, defined beside the update code.
    **{name: EventSpec(*spec) for name, spec in UPDATE_EVENTS.items()},
}


class UnknownEventError(ValueError):
    """An event type or field that `EVENT_TYPES` does not define (a programming error)."""


EventListener = Callable[[Event], None]


class EventBus:
    """Checks each event against `EVENT_TYPES` and hands it to every listener, in order.

    Listeners run on the event loop and must be quick (append to a buffer or a queue).
    """

    def __init__(self) -> None:
        self._listeners: list[EventListener] = []
        self.counts: dict[str, int] = {}

    def subscribe(self, listener: EventListener) -> None:
        self._listeners.append(listener)

    def emit(self, type_: str, t: float, frame: int | None = None, /, **data: JsonValue) -> Event:
        spec = EVENT_TYPES.get(type_)
        if spec is None:
            raise UnknownEventError(f"event type {type_!r} is not defined in EVENT_TYPES")
        unknown = set(data) - set(spec.fields)
        if unknown:
            raise UnknownEventError(f"event {type_!r} has undefined fields {sorted(unknown)}")
        event = Event(type_, t, frame, data)
        self.counts[type_] = self.counts.get(type_, 0) + 1
        logger.log(spec.level, "event %s %s", type_, json.dumps(data, default=str))
        for listener in self._listeners:
            listener(event)
        return event


class JsonlEventLog:
    """Appends each event as one JSON object per line (`t`, `frame`, `type`, then its fields).

    With `ordered` (a replay's report), `close` rewrites the lines this log wrote in video-time
    order: the stages emit as they go, and the enhance stage runs frames ahead of the act stage."""

    def __init__(self, path: Path, *, ordered: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.ordered = ordered
        self._file: IO[str] | None = path.open("a", encoding="utf-8")
        self._start = self._file.tell()

    def __call__(self, event: Event) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(event.as_json(), default=str) + "\n")
        # Flushed per event: events are rare and must survive a crash of the daemon.
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            if self.ordered:
                order_by_time(self.path, self._start)


def order_by_time(path: Path, start: int = 0) -> None:
    """Sort the event lines of `path` after byte `start` by their `t` (stable: events of one
    time keep their order); the file is replaced whole, so a crash leaves the old one."""
    with path.open("rb") as f:
        head = f.read(start)
        lines = f.read().splitlines(keepends=True)

    def t_of(line: bytes) -> float:
        try:
            t = json.loads(line).get("t")
        except (ValueError, AttributeError):
            return float("-inf")  # not ours to judge: it stays first, in its order
        return float(t) if isinstance(t, int | float) else float("-inf")

    ordered = sorted(lines, key=t_of)
    if ordered == lines:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(head + b"".join(ordered))
    tmp.replace(path)
