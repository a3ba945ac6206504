"""Home Assistant MQTT discovery against a real Mosquitto: retained JSON configs under
`homeassistant/…` whose state topics are the daemon's own, whose templates read real telemetry;
nothing is announced unless `[uplink.home_assistant] enabled`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiomqtt
import jinja2
import pytest

from tests.uplink.broker import Broker, Certs
from tests.uplink.conftest import operator_access
from tests.uplink.helpers import Watcher, make_uplink, mqtt_config, record, wait_for
from tools.fleet import FleetClient
from vehicle_agent.catalogue import EVENT_TYPES
from vehicle_agent.compat import timeout
from vehicle_agent.config import MqttUplinkConfig, parse_config
from vehicle_agent.events import EventBus
from vehicle_agent.quality.condition import CONDITIONS
from vehicle_agent.records import Actuation, AdhesionEstimate
from vehicle_agent.uplink.discovery import ENTITIES
from vehicle_agent.uplink.mqtt import MqttUplink
from vehicle_agent.uplink.topics import Telemetry

pytestmark = pytest.mark.usefixtures("vehicle_password")


async def _retained(fleet: FleetClient, topic_filter: str, count: int) -> list[aiomqtt.Message]:
    """The first `count` messages a fresh subscription to `topic_filter` gets."""
    received: list[aiomqtt.Message] = []
    async with fleet.new_client() as client:
        await client.subscribe(topic_filter, qos=1)
        async with timeout(15):
            async for message in client.messages:
                received.append(message)
                if len(received) == count:
                    break
    return received


def _render(template: str, payload: dict[str, Any]) -> str:
    """A value template as Home Assistant renders it: Jinja with `value_json`."""
    return jinja2.Environment(autoescape=False).from_string(template).render(value_json=payload)  # noqa: S701 - not HTML


async def test_discovery_configs_are_retained_json_and_read_the_daemons_topics(
    broker: Broker, certs: Certs, tmp_path: Path
) -> None:
    config = mqtt_config(broker, certs, tmp_path, home_assistant__enabled=True)
    access = operator_access(broker, certs)
    async with Watcher(access, ["fleet/veh-1/front/telemetry"]) as watcher:
        uplink, recorder = make_uplink(config)
        await uplink.start()
        try:
            frame = record(0).replace(
                adhesion=AdhesionEstimate(0.3, 0.1), actuation=Actuation(fan_duty=0.55)
            )
            await uplink.on_frame(frame)
            await wait_for(lambda: bool(watcher.json_on("/telemetry")), 10, "telemetry")
            # Retained: a subscriber that comes later still gets every config.
            messages = await _retained(FleetClient(access), "homeassistant/#", len(ENTITIES))
        finally:
            await uplink.close()
    assert not recorder.of("uplink_refused")
    telemetry = watcher.json_on("/telemetry")[-1]
    by_topic = {str(m.topic): m for m in messages}
    expected = {f"homeassistant/{e.component}/veh-1/front_{e.key}/config": e for e in ENTITIES}
    assert set(by_topic) == set(expected)
    unique_ids = set()
    for topic, message in by_topic.items():
        entity = expected[topic]
        assert message.retain
        assert getattr(message.properties, "ContentType", None) == "application/json"
        assert isinstance(message.payload, bytes)
        discovered = json.loads(message.payload)
        unique_ids.add(discovered["unique_id"])
        assert discovered["device"]["identifiers"] == ["vehicle-agent_veh-1_front"]
        # The state topic is the daemon's own topic, as Topics names it.
        assert discovered["state_topic"] == getattr(uplink.topics, entity.topic)
        if entity.topic == "telemetry":
            assert discovered["availability"] == [
                {
                    "topic": uplink.topics.status,
                    "payload_available": "online",
                    "payload_not_available": "offline",
                }
            ]
            assert entity.field in Telemetry.model_fields
            value = _render(discovered["value_template"], telemetry)
            if entity.key == "condition":
                assert value in CONDITIONS
            elif entity.key == "adhesion":
                assert float(value) == pytest.approx(telemetry["adhesion"]["score"] * 100, abs=0.1)
            elif entity.key == "fan":
                assert float(value) == 55
            elif entity.key == "lens_service":
                assert value == discovered["payload_off"]
        else:
            assert discovered["payload_on"] == "online"
            assert discovered["payload_off"] == "offline"
    assert len(unique_ids) == len(ENTITIES)


def test_templates_render_on_a_telemetry_message_without_a_frame() -> None:
    """Before the first frame condition, adhesion and fan duty are null: no template fails, each
    renders `None`, which Home Assistant's MQTT sensor shows as unknown."""
    payload: dict[str, Any] = {
        "condition": None,
        "adhesion": None,
        "fan_duty": None,
        "lens_service_required": False,
    }
    rendered = {e.key: _render(e.template, payload) for e in ENTITIES if e.template is not None}
    assert rendered == {
        "condition": "None",
        "adhesion": "None",
        "lens_service": "OFF",
        "fan": "None",
    }


def test_discovery_is_off_by_default(tmp_path: Path) -> None:
    config = parse_config(
        {
            "agent": {"vehicle_id": "veh-1", "state_dir": str(tmp_path / "state")},
            "uplink": {"type": "mqtt", "broker": "mqtt://127.0.0.1:1"},
        }
    )
    assert isinstance(config.uplink, MqttUplinkConfig)
    assert not config.uplink.home_assistant.enabled
    assert MqttUplink.from_config(config, EventBus(EVENT_TYPES))._discovery == []
