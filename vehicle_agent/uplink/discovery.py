"""Uplink stage: Home Assistant MQTT discovery, the camera as an HA device whose entities read the
daemon's own `status` and `telemetry` topics (`[uplink.home_assistant]`, off by default).

Discovery follows HA's per-component scheme: one retained JSON config per entity on
`<discovery_prefix>/<component>/<node_id>/<object_id>/config`. The node id is the vehicle id,
so a broker ACL `pattern write homeassistant/+/%u/#` admits a vehicle to its own configs only;
the object id is `<camera_id>_<entity>`. The daemon's topics come from `Topics` (topics.py),
never formatted here; the payload fields they carry are named in `ENTITIES` and checked against
the `Telemetry` model by the tests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from vehicle_agent import __version__
from vehicle_agent.config_base import ConfigModel

if TYPE_CHECKING:
    from vehicle_agent.uplink.topics import Topics

CONTENT_TYPE = "application/json"
PAYLOAD_ON = "ON"
PAYLOAD_OFF = "OFF"


class HomeAssistantConfig(ConfigModel):
    """`[uplink.home_assistant]`: announce the camera to Home Assistant through MQTT discovery."""

    enabled: bool = Field(
        default=False,
        description="Publish Home Assistant discovery configs (retained) on every connection; "
        "the broker's ACL must let the vehicle write <discovery_prefix>/+/<vehicle_id>/#.",
    )
    discovery_prefix: str = Field(
        "homeassistant",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Home Assistant's discovery prefix (its MQTT integration's setting).",
    )


@dataclass(frozen=True, kw_only=True)
class Entity:
    """One Home Assistant entity, read from one of the daemon's topics."""

    key: str
    """Object id suffix and unique id suffix: stable, or HA makes a new entity."""
    component: Literal["sensor", "binary_sensor"]
    name: str
    topic: Literal["status", "telemetry"]
    """Which of the daemon's topics (an attribute of `Topics`) holds the state."""
    field: str | None
    """The telemetry field the template reads (None: the payload itself)."""
    template: str | None
    """HA's `value_template` (Jinja, `value_json` is the parsed payload); None: the payload.
    A null field renders `None`, which HA's MQTT sensor shows as unknown."""
    extra: Mapping[str, object]
    """Further discovery keys: device class, unit, icon, payloads."""
    description: str


ENTITIES: tuple[Entity, ...] = (
    Entity(
        key="status",
        component="binary_sensor",
        name="Status",
        topic="status",
        field=None,
        template=None,
        extra={"device_class": "connectivity", "payload_on": "online", "payload_off": "offline"},
        description="Connected to the fleet broker: the retained `online`/`offline` (Last Will).",
    ),
    Entity(
        key="condition",
        component="sensor",
        name="Scene condition",
        topic="telemetry",
        field="condition",
        template="{{ value_json.condition }}",
        extra={"icon": "mdi:weather-fog"},
        description="The scene condition of the latest frame (normal, low_light, fog, blur, rain).",
    ),
    Entity(
        key="adhesion",
        component="sensor",
        name="Lens adhesion",
        topic="telemetry",
        field="adhesion",
        template="{{ (value_json.adhesion.score * 100) | round(1) "
        "if value_json.adhesion is not none else none }}",
        extra={"unit_of_measurement": "%", "state_class": "measurement", "icon": "mdi:water"},
        description="Lens adhesion score, percent (50 % is the detector's alarm threshold).",
    ),
    Entity(
        key="lens_service",
        component="binary_sensor",
        name="Lens service required",
        topic="telemetry",
        field="lens_service_required",
        template=f"{{{{ '{PAYLOAD_ON}' if value_json.lens_service_required else '{PAYLOAD_OFF}' }}}}",
        extra={"device_class": "problem", "payload_on": PAYLOAD_ON, "payload_off": PAYLOAD_OFF},
        description="The lens cleaning spent its retries: someone must service the lens.",
    ),
    Entity(
        key="fan",
        component="sensor",
        name="Lens fan duty",
        topic="telemetry",
        field="fan_duty",
        template="{{ (value_json.fan_duty * 100) | round(0) "
        "if value_json.fan_duty is not none else none }}",
        extra={"unit_of_measurement": "%", "state_class": "measurement", "icon": "mdi:fan"},
        description="Duty cycle of the lens cleaning fan, percent.",
    ),
)
"""What the camera shows in Home Assistant; docs/mqtt.md lists it."""


def discovery_messages(
    config: HomeAssistantConfig, topics: Topics, vehicle_id: str, camera_id: str
) -> list[tuple[str, bytes]]:
    """(topic, JSON payload) of every entity's discovery config, to publish retained."""
    device_id = f"vehicle-agent_{vehicle_id}_{camera_id}"
    device = {
        "identifiers": [device_id],
        "name": f"{vehicle_id} {camera_id} camera",
        "manufacturer": "vehicle-agent",
        "model": "camera controller",
        "sw_version": __version__,
    }
    availability = {
        "topic": topics.status,
        "payload_available": "online",
        "payload_not_available": "offline",
    }
    messages = []
    for entity in ENTITIES:
        payload: dict[str, object] = {
            "name": entity.name,
            "unique_id": f"{device_id}_{entity.key}",
            "state_topic": getattr(topics, entity.topic),
            "device": device,
            "origin": {"name": "vehicle-agent", "sw_version": __version__},
            **entity.extra,
        }
        if entity.template is not None:
            payload["value_template"] = entity.template
        if entity.topic != "status":
            # Telemetry keeps its last value when the link drops: HA shows it unavailable.
            payload["availability"] = [availability]
        topic = (
            f"{config.discovery_prefix}/{entity.component}/{vehicle_id}/"
            f"{camera_id}_{entity.key}/config"
        )
        messages.append((topic, json.dumps(payload, sort_keys=True).encode()))
    return messages


def discovery_markdown() -> str:
    """docs/mqtt.md's Home Assistant section."""
    out = [
        "## Home Assistant discovery",
        "",
        "With `[uplink.home_assistant] enabled = true` (off by default) the daemon announces",
        "its camera to Home Assistant's MQTT integration on every connection: one retained JSON",
        "config per entity on",
        "`<discovery_prefix>/<component>/<vehicle_id>/<camera_id>_<entity>/config`",
        "(prefix `homeassistant` by default), content type `application/json`. The entities",
        "belong to one device (`vehicle-agent_<vehicle_id>_<camera_id>`) and read the daemon's",
        "own topics; the telemetry ones are unavailable while `status` is `offline`. The broker",
        "must let the vehicle write there: `pattern write homeassistant/+/%u/#` next to",
        "`pattern readwrite fleet/%u/#` (a refused config is an `uplink_refused` event).",
        "To remove the entities, publish empty retained messages on the config topics.",
        "",
        "| entity | component | state topic | value | meaning |",
        "|---|---|---|---|---|",
    ]
    for entity in ENTITIES:
        value = "the payload" if entity.field is None else f"`{entity.field}`"
        out.append(
            f"| `{entity.key}` ({entity.name}) | {entity.component} | "
            f"`{entity.topic}` | {value} | {entity.description} |"
        )
    return "\n".join(out)
