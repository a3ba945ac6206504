"""Topics and payloads are defined once: docs/mqtt.md is generated from them and current, every
payload field is described, and every topic stays inside the vehicle's subtree."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from tools.gen_docs import mqtt_docs
from vehicle_agent.config import ConfigError, parse_config
from vehicle_agent.update.manifest import UpdateManifest
from vehicle_agent.uplink.command_table import COMMANDS
from vehicle_agent.uplink.docs import _payload_models
from vehicle_agent.uplink.topics import (
    RESERVED_CAMERA_IDS,
    TOPICS,
    FleetTopics,
    TopicAddress,
    Topics,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "mqtt.md"


def test_docs_mqtt_md_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == mqtt_docs(), (
        "docs/mqtt.md is stale: python -m tools.gen_docs"
    )


def _all_payloads() -> set[type[BaseModel]]:
    todo: list[type[BaseModel]] = [
        s.payload for s in TOPICS.values() if isinstance(s.payload, type)
    ]
    todo.append(UpdateManifest)
    for spec in COMMANDS.values():
        todo.append(spec.args)
        if spec.result is not None:
            todo.append(spec.result)
    seen: set[type[BaseModel]] = set()
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for info in model.model_fields.values():
            todo.extend(_payload_models(info.annotation))
    return seen


def test_every_payload_field_is_described_and_every_payload_closed() -> None:
    for model in _all_payloads():
        assert model.model_config.get("extra") == "forbid", model
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no description"


def test_a_cameras_topics_stay_in_its_subtree_and_the_vehicle_wide_ones_in_the_vehicles() -> None:
    topics = Topics("fleet", "veh-1", "rear")
    for topic in (
        topics.status,
        topics.telemetry,
        topics.events,
        topics.commands,
        topics.replies,
        topics.frame_meta("abc"),
        topics.frame_chunk("abc", 3),
    ):
        assert topic.startswith("fleet/veh-1/rear/")
    assert topics.vehicle_commands == "fleet/veh-1/commands"
    assert topics.update_offer == "fleet/veh-1/update/offer"
    assert topics.update_chunk("u", 2) == "fleet/veh-1/update/data/u/2"
    assert topics.client_id == "veh-1.rear"
    assert topics.is_command_topic("fleet/veh-1/rear/commands")
    assert topics.is_command_topic("fleet/veh-1/commands")
    assert not topics.is_command_topic("fleet/veh-1/front/commands")
    assert topics.is_reply_topic("fleet/veh-1/rear/replies/console-1")
    assert topics.is_reply_topic("fleet/veh-1/replies/console-1")
    assert not topics.is_reply_topic("fleet/veh-1/front/replies/console-1")
    assert not topics.is_reply_topic("fleet/veh-1/rear/replies-x")
    assert not topics.is_reply_topic("fleet/veh-1/rear/replies/+")
    with pytest.raises(ValueError, match="vehicle id"):
        Topics("fleet", "a/b", "front")
    with pytest.raises(ValueError, match="reserved"):
        Topics("fleet", "veh-1", "update")


def test_two_cameras_of_one_vehicle_share_no_topic_of_their_own_and_no_client_id() -> None:
    front, rear = Topics("fleet", "veh-1", "front"), Topics("fleet", "veh-1", "rear")
    own = ("status", "telemetry", "events", "commands", "replies", "client_id")
    for name in own:
        assert getattr(front, name) != getattr(rear, name), name
    assert front.vehicle_commands == rear.vehicle_commands


def test_single_camera_layout_topics_migrate_to_the_cameras_and_replies_stay() -> None:
    topics = Topics("fleet", "veh-1", "front")
    assert topics.migrated("fleet/veh-1/telemetry") == "fleet/veh-1/front/telemetry"
    assert topics.migrated("fleet/veh-1/events") == "fleet/veh-1/front/events"
    assert topics.migrated("fleet/veh-1/frames/u/0") == "fleet/veh-1/front/frames/u/0"
    assert topics.migrated("fleet/veh-1/replies/console") is None
    assert topics.migrated("fleet/veh-1/front/telemetry") is None
    assert topics.migrated("fleet/veh-2/telemetry") is None


def test_the_cloud_reads_vehicle_and_camera_from_a_topic_and_tells_the_old_layout() -> None:
    fleet = FleetTopics("fleet")
    assert fleet.camera("veh-1", "+", "telemetry") == "fleet/veh-1/+/telemetry"
    assert fleet.parse("fleet/veh-1/rear/frames/u/meta") == TopicAddress(
        "veh-1", "rear", "frames/u/meta"
    )
    assert fleet.parse("fleet/veh-1/update/offer") == TopicAddress("veh-1", None, "update/offer")
    assert fleet.parse("fleet/veh-1/telemetry") is None
    assert fleet.legacy("fleet/veh-1/telemetry")
    assert not fleet.legacy("fleet/veh-1/rear/telemetry")
    assert fleet.parse("other/veh-1/rear/telemetry") is None


@pytest.mark.parametrize("camera", sorted(RESERVED_CAMERA_IDS))
def test_a_camera_id_that_is_a_topic_word_is_refused_naming_the_key(camera: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"agent": {"camera_id": camera}})
    assert info.value.key == "agent.camera_id"
    assert "reserved" in str(info.value)


@pytest.mark.parametrize(
    ("uplink", "key", "words"),
    [
        ({"broker": "mqtts://h:8883"}, "uplink", "needs ca_file"),
        ({"broker": "mqtt://h", "ca_file": "ca.crt"}, "uplink", "plain TCP is refused"),
        ({"broker": "mqtt://h", "client_cert_file": "c.pem"}, "uplink", "use mqtts://"),
        ({"broker": "http://h"}, "uplink.broker", "pattern"),
        ({"broker": "mqtt://h:0"}, "uplink", "port out of range"),
        ({"broker": "mqtt://h", "password": "hunter2"}, "uplink.password", "secrets never"),
        ({"broker": "mqtt://h", "telemetry_interval_s": 0}, "uplink.telemetry_interval_s", "0.1"),
        ({"broker": "mqtt://h", "outbox": {"budget_mb": 0}}, "uplink.outbox.budget_mb", "1"),
    ],
)
def test_uplink_config_errors_name_the_key(uplink: dict[str, object], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"uplink": {"type": "mqtt", **uplink}})
    assert info.value.key == key
    assert words in str(info.value)
    assert "hunter2" not in str(info.value)


def test_broker_url_gives_host_port_and_tls() -> None:
    config = parse_config(
        {"uplink": {"type": "mqtt", "broker": "mqtts://b.example", "ca_file": "c"}}
    )
    assert config.uplink.address() == (True, "b.example", 8883)  # type: ignore[union-attr]
    config = parse_config({"uplink": {"type": "mqtt", "broker": "mqtt://[::1]:1884"}})
    assert config.uplink.address() == (False, "::1", 1884)  # type: ignore[union-attr]
