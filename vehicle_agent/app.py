"""Composition root: builds the concrete parts from the config; `pipeline.Pipeline` runs them.

Read top to bottom, the flow is: capture → enhance → analyze → act → uplink → output.
Only this module (and the simulator's wiring in `vehicle_agent.sim`) chooses implementations;
stages receive interfaces and talk through bounded queues of immutable records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vehicle_agent.capture.uri import open_source
from vehicle_agent.catalogue import EVENT_TYPES
from vehicle_agent.config import Config, MqttUplinkConfig
from vehicle_agent.enhance.chain import build_enhancer
from vehicle_agent.events import EventBus, JsonlEventLog
from vehicle_agent.pipeline import Parts
from vehicle_agent.update.updater import ModelUpdater, recover_at_start
from vehicle_agent.uplink.base import NoUplink, Updates, UpdatesFactory, Uplink


def build_parts(config: Config) -> Parts:
    """Choose the implementations the config names. The simulator swaps its own in instead."""
    events = EventBus(EVENT_TYPES)
    closers: list[Callable[[], None]] = []
    if config.output.events is not None:
        log = JsonlEventLog(config.output.events)
        events.subscribe(log)
        closers.append(log.close)
    # The fallback chain with its models and gating; it loads in `Pipeline.run`, off the loop.
    # A model update that crashed the daemon repeatedly is rolled back before anything loads.
    recover_at_start(config)
    enhancer = build_enhancer(config.enhance, config.agent.state_dir)
    return Parts(
        open_source=lambda: open_source(config.capture.uri, config.capture),
        enhancer=enhancer,
        fan=None,
        uplink=build_uplink(config, events),
        events=events,
        closers=closers,
    )


def build_uplink(config: Config, events: EventBus) -> Uplink:
    """The fleet link `[uplink]` names: MQTT (carrying the model updates `[update]` turns on),
    or none."""
    if isinstance(config.uplink, MqttUplinkConfig):
        from vehicle_agent.uplink.mqtt import MqttUplink  # noqa: PLC0415 - paho only when used

        return MqttUplink.from_config(config, events, updates=updates_for(config))
    return NoUplink()


def updates_for(config: Config) -> UpdatesFactory | None:
    """What builds the model updater the fleet link carries; None when `[update]` is off."""
    if not config.update.enabled:
        return None

    def build(topics: Any, emit: Callable[..., None]) -> Updates:
        return ModelUpdater(config, topics, emit)

    return build
