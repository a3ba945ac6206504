"""Uplink stage: docs/mqtt.md, rendered from the topic table, payload models and settable keys.

`python -m tools.gen_docs` writes it next to docs/configuration.md; `test_docs` checks it.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from vehicle_agent.config_base import field_bounds, is_class
from vehicle_agent.uplink.command_table import COMMANDS
from vehicle_agent.uplink.commands import COMMAND_WINDOW, MAX_DEPTH, settable_descriptions
from vehicle_agent.uplink.discovery import discovery_markdown
from vehicle_agent.uplink.settings import OutboxConfig
from vehicle_agent.uplink.topics import (
    PRIORITY,
    TOPICS,
    AdhesionSummary,
    OutboxStatus,
    Payload,
    QualitySummary,
    Telemetry,
    UplinkStatus,
    mosquitto_acl,
)


def mqtt_markdown(carried: Sequence[type[BaseModel]] = ()) -> str:
    """docs/mqtt.md. `carried`: the payload models of the parts the link carries without
    importing them (the model updates' offer and manifest: `catalogue.mqtt_docs` names them)."""
    outbox = OutboxConfig()
    ttl = {
        "reply": outbox.ttl_reply_s,
        "event": outbox.ttl_event_s,
        "telemetry": outbox.ttl_telemetry_s,
        "frame": outbox.ttl_frame_s,
    }
    text = render(
        settable_descriptions(),
        ttl,
        command_window=COMMAND_WINDOW,
        max_depth=MAX_DEPTH,
        carried=carried,
    )
    return f"{text.rstrip()}\n\n{discovery_markdown()}\n"


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
    if is_class(annotation):
        if issubclass(annotation, BaseModel):
            return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def _bounds(model: type[BaseModel], name: str) -> str:
    info = model.model_fields[name]
    bounds = field_bounds(info)
    parts = [bounds] if bounds else []
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


def _payload_models(annotation: Any) -> list[type[Payload]]:
    if is_class(annotation) and issubclass(annotation, Payload):
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


def render(
    settable: Mapping[str, str],
    ttl_defaults: Mapping[str, float],
    *,
    command_window: int,
    max_depth: int,
    carried: Sequence[type[BaseModel]] = (),
) -> str:
    """docs/mqtt.md: topics, payloads, commands, errors and the outbox rules (`command_window`:
    the Receive Maximum the vehicle announces; `max_depth`: the JSON nesting a command may have)."""
    background = " and ".join(f"`{n}`" for n, c in COMMANDS.items() if c.background)
    out = [
        "# MQTT fleet link",
        "",
        "<!-- Generated by python -m tools.gen_docs (vehicle_agent.uplink.docs); do not edit. -->",
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
    models.extend(carried)
    for cmd in COMMANDS.values():
        models.append(cmd.args)
        if cmd.result is not None:
            models.append(cmd.result)
    for model in models:
        _model_table(model, out, seen)
    return "\n".join(out).rstrip() + "\n"
