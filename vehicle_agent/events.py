"""Events: how one is declared (`EventSpec`), the pipeline's own, and the bus that delivers them.

Each package declares the events it emits beside its code (`capture/events.py`,
`control/events.py`, …); `vehicle_agent.catalogue` collects them into `EVENT_TYPES`, which the
composition root hands to the `EventBus` and `docs/events.md` is generated from. This module
imports no stage. Events go to `events.jsonl` (bench and vehicle), to the log and to the fleet
uplink.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from vehicle_agent.records import Event, JsonValue

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EventSpec:
    description: str
    fields: Mapping[str, str]
    """Field name → meaning, with its unit."""
    level: int = logging.INFO


PIPELINE_EVENTS: Mapping[str, EventSpec] = {
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
}


class UnknownEventError(ValueError):
    """An event type or field that the bus's table does not define (a programming error)."""


EventListener = Callable[[Event], None]


class EventBus:
    """Checks each event against `types` (the daemon's: `catalogue.EVENT_TYPES`) and hands it to
    every listener, in order.

    Listeners run on the event loop and must be quick (append to a buffer or a queue).
    """

    def __init__(self, types: Mapping[str, EventSpec]) -> None:
        self.types = types
        self._listeners: list[EventListener] = []
        self.counts: dict[str, int] = {}

    def subscribe(self, listener: EventListener) -> None:
        self._listeners.append(listener)

    def emit(self, type_: str, t: float, frame: int | None = None, /, **data: JsonValue) -> Event:
        spec = self.types.get(type_)
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
