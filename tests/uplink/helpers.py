"""Uplink test helpers: configs for the test broker, a subscriber that outlives broker restarts,
an uplink wired to an event bus that records what it emits, and frame records."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np

from tests.uplink.broker import OPERATOR, Broker, Certs
from tools.fleet import BrokerAccess, FleetClient, Received
from vehicle_agent.app import updates_for
from vehicle_agent.catalogue import EVENT_TYPES
from vehicle_agent.compat import Self
from vehicle_agent.config import Config, MqttUplinkConfig, parse_config
from vehicle_agent.events import EventBus
from vehicle_agent.records import Event, Frame, FrameRecord, QualityMetrics
from vehicle_agent.uplink.base import PipelineHooks
from vehicle_agent.uplink.mqtt import MqttUplink

CREDENTIAL = "mqtt-password"
"""The credential name the test configs give; tests set its environment variable."""


def mqtt_config(
    broker: Broker,
    certs: Certs,
    tmp_path: Path,
    *,
    vehicle: str = "veh-1",
    camera: str = "front",
    listener: str = "tls",
    username: str | None = "veh-1",
    **fields: Any,
) -> Config:
    uplink: dict[str, Any] = {
        "type": "mqtt",
        "broker": broker.url(listener),
        "telemetry_interval_s": 0.1,
        "reconnect_initial_s": 0.05,
        "reconnect_max_s": 0.3,
        "keepalive_s": 5,
        "connect_timeout_s": 3,
    }
    if listener != "plain":
        uplink["ca_file"] = str(certs.ca)
    if username is not None:
        uplink["username"] = username
        uplink["password_credential"] = CREDENTIAL
    for key, value in fields.items():
        section, _, name = key.partition("__")
        if name:
            uplink.setdefault(section, {})[name] = value
        else:
            uplink[key] = value
    return parse_config(
        {
            "agent": {
                "vehicle_id": vehicle,
                "camera_id": camera,
                "state_dir": str(tmp_path / "state"),
            },
            "uplink": uplink,
        }
    )


OPERATOR_CREDENTIAL = "fleet-password"
"""The credential name the operator's command lines give; tests set its environment variable."""


def operator_cli(broker: Broker, certs: Certs) -> list[str]:
    """The cloud tools' broker options (tools.fleet, tools.model_update) for the operator over
    TLS, the password read from `OPERATOR_CREDENTIAL`."""
    return [
        "--broker",
        broker.url("tls"),
        "--ca-file",
        str(certs.ca),
        "--username",
        OPERATOR,
        "--password-credential",
        OPERATOR_CREDENTIAL,
    ]


class Recorder:
    """An event bus listener that keeps every event."""

    def __init__(self, bus: EventBus) -> None:
        self.events: list[Event] = []
        bus.subscribe(self.events.append)

    def of(self, type_: str) -> list[Event]:
        return [e for e in self.events if e.type == type_]


def make_uplink(
    config: Config, counters: Callable[[], dict[str, float]] | None = None, **hooks: Any
) -> tuple[MqttUplink, Recorder]:
    bus = EventBus(EVENT_TYPES)
    recorder = Recorder(bus)
    uplink = MqttUplink.from_config(config, bus, updates=updates_for(config))
    uplink.attach(PipelineHooks(counters=counters or dict, config_digest="test", **hooks))
    # The pipeline subscribes the uplink to its own bus, so its events go out too.
    bus.subscribe(uplink.on_event)
    assert isinstance(config.uplink, MqttUplinkConfig)
    return uplink, recorder


def record(
    seq: int, value: int = 120, size: tuple[int, int] = (48, 64), sharpness: float = 500.0
) -> FrameRecord:
    image = np.random.default_rng(seq).integers(0, 255, (*size, 3), dtype=np.uint8)
    image[..., 0] = value
    frame = Frame(seq, time.monotonic(), seq / 10, image, "test://")
    return FrameRecord(
        frame,
        enhancer="passthrough",
        quality=QualityMetrics(brightness=float(value), contrast=30.0, sharpness=sharpness),
    )


async def wait_for(predicate: Callable[[], bool], within: float, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {within} s")
        await asyncio.sleep(0.02)


class Watcher:
    """An operator subscriber with a persistent session that reconnects when the broker restarts,
    so it misses nothing published while it was away."""

    def __init__(self, access: BrokerAccess, topics: list[str], name: str = "watcher") -> None:
        self.fleet = FleetClient(
            access, client_id=f"{name}-{time.monotonic_ns()}", session_expiry_s=600
        )
        self.topics = topics
        self.messages: list[Received] = []
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name="watcher")
        await asyncio.wait_for(self.connected.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            client = self.fleet.new_client()
            try:
                async with client:
                    for topic in self.topics:
                        await client.subscribe(topic, qos=1)
                    self.connected.set()
                    async for message in client.messages:
                        payload = message.payload if isinstance(message.payload, bytes) else b""
                        correlation = getattr(message.properties, "CorrelationData", None)
                        self.messages.append(Received(str(message.topic), payload, correlation))
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.1)

    def on(self, suffix: str) -> list[Received]:
        return [m for m in self.messages if m.topic.endswith(suffix)]

    def json_on(self, suffix: str) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.on(suffix)]

    def seqs(self, suffix: str = "/telemetry") -> list[int]:
        return [int(m["seq"]) for m in self.json_on(suffix)]
