"""Composition root: builds the concrete parts from the config; `pipeline.Pipeline` runs them.

Read top to bottom, the flow is: capture → enhance → analyze → act → uplink → output.
Only this module (and the simulator's wiring in `vehicle_agent.sim`) chooses implementations;
stages receive interfaces and talk through bounded queues of immutable records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vehicle_agent.capture.base import FrameSource
from vehicle_agent.capture.uri import open_source
from vehicle_agent.catalogue import EVENT_TYPES
from vehicle_agent.config import Config, MqttUplinkConfig
from vehicle_agent.control.build import open_control
from vehicle_agent.enhance.chain import EnhancerChain, build_enhancer
from vehicle_agent.events import EventBus, JsonlEventLog
from vehicle_agent.output.sinks import FrameSink, ImageFolderSink, VideoFileSink
from vehicle_agent.pipeline import Parts
from vehicle_agent.quality.monitor import QualityMonitor, settings_from_config
from vehicle_agent.records import FrameRecord
from vehicle_agent.update.updater import ModelUpdater, recover_at_start
from vehicle_agent.uplink.base import NoUplink, Updates, UpdatesFactory, Uplink
from vehicle_agent.uplink.topics import Topics

SourceWrapper = Callable[[Callable[[], FrameSource]], Callable[[], FrameSource]]
"""Wraps the configured source's opener (the bench: a simulated lens, injected faults)."""


@dataclass
class Overrides:
    """What a composition other than the daemon's changes in the parts (the bench simulator);
    everything it leaves alone is built from the config exactly as the daemon builds it."""

    events: EventBus | None = None
    """The bus to use (the bench's logs its own events file); None: one for `EVENT_TYPES`,
    logging to `[output] events`."""
    source: SourceWrapper | None = None
    enhancer: Callable[[EnhancerChain], None] | None = None
    """Adjusts the built chain before it loads (the bench's enhancer faults)."""
    uplink: Callable[[EventBus], Uplink] | None = None
    """Builds the fleet link on the bus instead of `build_uplink` (the bench: its own broker
    and outbox)."""
    sinks: list[FrameSink] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)
    actuation_observers: list[Callable[[FrameRecord], None]] = field(default_factory=list)
    mcu_port: str | None = None
    """Overrides `[control.mcu] port` (the simulator's pty)."""
    video_timed: bool = False
    recover: bool = True
    """Roll back a crash-looping model update before anything loads. The bench does not: a
    run of it must not count a crash against a vehicle's trial."""


def build_parts(config: Config, overrides: Overrides | None = None) -> Parts:
    """Choose the implementations the config names (and `overrides` changes)."""
    o = overrides or Overrides()
    closers: list[Callable[[], None]] = []
    events = o.events
    if events is None:
        events = EventBus(EVENT_TYPES)
        if config.output.events is not None:
            log = JsonlEventLog(config.output.events)
            events.subscribe(log)
            closers.append(log.close)

    def camera() -> FrameSource:
        return open_source(config.capture.uri, config.capture)

    source = camera if o.source is None else o.source(camera)
    # The fallback chain with its models and gating; it loads in `Pipeline.run`, off the loop.
    # A model update that crashed the daemon repeatedly is rolled back before anything loads.
    if o.recover:
        recover_at_start(config)
    enhancer = build_enhancer(config.enhance, config.agent.state_dir)
    if o.enhancer is not None:
        o.enhancer(enhancer)
    monitor = QualityMonitor(settings_from_config(config.quality, config.adhesion))
    # Control opens (MCU link, fan) when the pipeline enters it, before the first frame.
    control = open_control(config.control, events.emit, port=o.mcu_port, video_timed=o.video_timed)
    uplink = build_uplink(config, events) if o.uplink is None else o.uplink(events)

    def output(source_fps: Callable[[], float | None]) -> list[FrameSink]:
        return output_sinks(config, source_fps)

    return Parts(
        open_source=source,
        enhancer=enhancer,
        monitor=monitor,
        fan=None,
        control=control,
        uplink=uplink,
        output=output,
        sinks=list(o.sinks),
        events=events,
        closers=[*closers, *o.closers],
        actuation_observers=list(o.actuation_observers),
        video_timed=o.video_timed,
    )


def build_uplink(config: Config, events: EventBus, *, outbox_path: Path | None = None) -> Uplink:
    """The fleet link `[uplink]` names: MQTT (carrying the model updates `[update]` turns on),
    or none. `outbox_path` overrides the config's outbox file."""
    if isinstance(config.uplink, MqttUplinkConfig):
        from vehicle_agent.uplink.mqtt import MqttUplink  # noqa: PLC0415 - paho only when used

        return MqttUplink.from_config(
            config, events, outbox_path=outbox_path, updates=updates_for(config)
        )
    return NoUplink()


def updates_for(config: Config) -> UpdatesFactory | None:
    """What builds the model updater the fleet link carries; None when `[update]` is off."""
    if not config.update.enabled:
        return None

    def build(topics: Topics, emit: Callable[..., None]) -> Updates:
        return ModelUpdater(config, topics, emit)

    return build


def output_sinks(config: Config, source_fps: Callable[[], float | None]) -> list[FrameSink]:
    """The sinks `[output]` asks for; the video takes the source's frame rate once it is known."""
    out = config.output

    def video_fps() -> float:
        return out.video_fps or source_fps() or config.capture.fps or 10.0

    sinks: list[FrameSink] = []
    if out.video is not None:
        sinks.append(VideoFileSink(out.video, video_fps, out.video_content))
    if out.image_dir is not None:
        sinks.append(ImageFolderSink(out.image_dir, out.image_every, out.video_content))
    return sinks
