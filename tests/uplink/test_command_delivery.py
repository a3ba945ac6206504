"""Commands and the broker's window, without a broker: PUBACKs go out in arrival order and only
once a message is settled (a command: answered), and a command that finds the queue full (a
broker that ignores our Receive Maximum) is answered `busy` instead of dropped in silence."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.uplink.helpers import make_uplink
from vehicle_agent.config import parse_config
from vehicle_agent.uplink.commands import COMMAND_WINDOW
from vehicle_agent.uplink.link import Link
from vehicle_agent.uplink.topics import CommandReply


def message(mid: int, topic: str = "fleet/veh-1/update/offer", payload: bytes = b"") -> Any:
    msg = mqtt.MQTTMessage(mid, topic.encode())
    msg.qos = 1
    msg.payload = payload
    return msg


def link(on_message: Any) -> tuple[Link, list[int]]:
    new = Link(
        client_id="veh-1.front",
        username=None,
        password=None,
        tls=None,
        will_topic="fleet/veh-1/front/status",
        keepalive=5,
        connect_timeout=1,
        on_message=on_message,
        on_lost=lambda: None,
    )
    acked: list[int] = []
    new.client.ack = lambda mid, _qos: acked.append(mid)  # type: ignore[method-assign,assignment,return-value]
    return new, acked


async def test_pubacks_go_out_in_arrival_order_once_each_message_is_settled() -> None:
    settles: dict[int, Any] = {}

    def on_message(msg: Any, settle: Any) -> None:
        if msg.mid == 4:
            raise RuntimeError("handler bug")
        settles[msg.mid] = settle

    conn, acked = link(on_message)
    for mid in (1, 2, 3):
        conn._deliver(message(mid))
    settles[2]()
    settles[3]()
    assert acked == []  # 1 is still being handled: nothing after it is acknowledged
    settles[1]()
    assert acked == [1, 2, 3]
    settles[1]()  # twice is harmless
    assert acked == [1, 2, 3]
    with pytest.raises(RuntimeError):
        conn._deliver(message(4))
    assert acked == [1, 2, 3, 4]  # a message whose handler raised is acknowledged anyway
    conn._deliver(message(5))
    conn.abandon()
    settles[5]()
    assert acked == [1, 2, 3, 4]  # the link is gone: the broker delivers it again
    assert not conn._unacked


def command_message(mid: int, cid: str) -> Any:
    payload = json.dumps(
        {"id": cid, "name": "ping", "args": {}, "expires_at": time.time() + 60}
    ).encode()
    msg = message(mid, "fleet/veh-1/front/commands", payload)
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.CorrelationData = cid.encode()
    properties.ResponseTopic = "fleet/veh-1/front/replies/t"
    msg.properties = properties
    return msg


async def test_a_command_that_finds_the_queue_full_is_answered_busy(tmp_path: Path) -> None:
    config = parse_config(
        {
            "agent": {"vehicle_id": "veh-1", "state_dir": str(tmp_path / "state")},
            "uplink": {"type": "mqtt", "broker": "mqtt://127.0.0.1:9"},
        }
    )
    uplink, recorder = make_uplink(config)
    settled: list[str] = []
    for i in range(COMMAND_WINDOW + 1):
        cid = f"c-{i}"
        uplink._on_message(command_message(i + 1, cid), functools.partial(settled.append, cid))
    # The queue holds COMMAND_WINDOW, not settled (not acknowledged) until answered; the one
    # more is answered `busy` at once, and acknowledged.
    assert settled == [f"c-{COMMAND_WINDOW}"]
    assert uplink.commands.busy == 1
    [busy] = uplink.pump.pending
    reply = CommandReply.model_validate_json(busy.payload)
    assert reply.error is not None
    assert (reply.id, reply.error.code) == (f"c-{COMMAND_WINDOW}", "busy")
    assert (busy.topic, busy.correlation) == (
        "fleet/veh-1/front/replies/t",
        f"c-{COMMAND_WINDOW}".encode(),
    )
    [event] = recorder.of("command_handled")
    assert event.data["error"] == "busy"
    # Other messages (update chunks, offers) are settled at once.
    uplink._on_message(message(99, "fleet/veh-1/somewhere"), lambda: settled.append("other"))
    assert settled[-1] == "other"
