"""What the fleet tools publish says what it is: commands and update offers as
`application/json`, model chunks as `application/octet-stream` (MQTT 5 Content Type)."""

from __future__ import annotations

import json
from pathlib import Path

import aiomqtt

from tests.update.helpers import Keys, offer_for, tiny_model
from tools import model_update
from tools.fleet import FleetClient
from vehicle_agent.compat import timeout


async def _first(client: aiomqtt.Client) -> aiomqtt.Message:
    async with timeout(15):
        async for message in client.messages:
            return message
    raise AssertionError("no message")


def _content_type(message: aiomqtt.Message) -> str | None:
    return getattr(message.properties, "ContentType", None)


async def test_commands_from_the_fleet_console_are_json(operator: FleetClient) -> None:
    async with FleetClient(operator.access).new_client() as vehicle_side:
        await vehicle_side.subscribe("fleet/veh-1/front/commands", qos=1)
        payload = json.dumps({"v": 1, "id": "c-1", "command": "ping", "args": {}}).encode()
        await operator.publish_command("veh-1", payload, response_topic="fleet/veh-1/front/replies")
        message = await _first(vehicle_side)
    assert message.payload == payload
    assert _content_type(message) == "application/json"


async def test_a_model_update_offer_is_json_and_its_chunks_are_bytes(
    operator: FleetClient, tmp_path: Path
) -> None:
    model = tiny_model(tmp_path / "src", "1.0.1", "other")
    offer = offer_for(model, Keys().new)
    await model_update.publish(operator, offer, model / "model.onnx", ["veh-1"])
    # Retained: a subscriber that comes later gets them (its own client id).
    async with FleetClient(operator.access).new_client() as vehicle_side:
        await vehicle_side.subscribe("fleet/veh-1/update/offer", qos=1)
        offered = await _first(vehicle_side)
    async with FleetClient(operator.access).new_client() as vehicle_side:
        await vehicle_side.subscribe(f"fleet/veh-1/update/data/{offer.update_id}/0", qos=1)
        chunk = await _first(vehicle_side)
    assert offered.payload == offer.to_bytes()
    assert _content_type(offered) == "application/json"
    assert _content_type(chunk) == "application/octet-stream"
