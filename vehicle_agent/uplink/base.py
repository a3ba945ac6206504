"""Uplink stage: the `Uplink` interface to the fleet backend, and the one that sends nothing."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from vehicle_agent.records import Event, FrameRecord, JsonValue
from vehicle_agent.uplink.topics import Topics


@dataclass(frozen=True)
class PipelineHooks:
    """What the running pipeline offers its uplink (handed over by `Uplink.attach`)."""

    counters: Callable[[], Mapping[str, float]]
    """Live totals: frames_in, frames_out, frames_dropped, frames_invalid, reconnects."""
    config_digest: str = ""
    set_enhancer: Callable[[Any], Awaitable[str]] | None = None
    """Switch to an `[enhance.backend]` config (None: the configured one); returns its name."""
    clean_lens: Callable[[float], Awaitable[Mapping[str, Any]]] | None = None
    """Run the lens cleaning for that many seconds; None while the vehicle has no cleaner."""
    clear_lens_service: Callable[[], Mapping[str, Any]] | None = None
    """Release the `lens_service_required` latch (the lens was serviced); returns the result."""
    reload_models: Callable[[str], Awaitable[str | None]] | None = None
    """Rebuild the enhance chain (models resolved again: a model update), load it and switch
    between two frames; the argument is the `model_swapped` reason. Returns the name@version
    the chain runs."""
    module_temperatures: Callable[[], Mapping[str, float]] | None = None
    """The camera module's latest readings, °C by channel ('sensor', 'cold_side', 'hot_side');
    None when the pipeline has no thermal link. Called on the event loop."""


class Subscriptions(Protocol):
    """What the fleet link offers a part it carries: subscriptions kept across reconnects."""

    def want(self, topic_filter: str) -> None:
        """Subscribe now if connected, and after every reconnect."""

    def drop(self, topic_filter: str) -> None:
        """Unsubscribe, and no more after reconnects."""

    def refresh(self, topic_filter: str) -> None:
        """Subscribe again: the broker re-sends the retained messages it matches."""


class Updates(Protocol):
    """Model updates as the fleet link carries them. The composition root builds the updater
    (`vehicle_agent.update.ModelUpdater`) and hands it to the link, which never imports it."""

    @property
    def max_message_bytes(self) -> int:
        """The largest message it expects (an update chunk): the link announces room for it."""

    def bind(
        self,
        subscriptions: Subscriptions,
        flushed: Callable[[], Awaitable[None]],
        reload: Callable[[str], Awaitable[str | None]] | None,
    ) -> None:
        """The link's subscriptions, its outbox flush, and the pipeline's model reload."""

    def wants(self, topic: str) -> bool:
        """Whether a message on `topic` is for the updater."""

    def on_message(self, topic: str, payload: bytes) -> None:
        """A message on one of its topics (on the event loop; returns at once)."""

    async def run(self) -> None:
        """Work through offers, chunks and timers until cancelled."""

    async def withdraw(self, label: str, reason: str) -> dict[str, JsonValue]:
        """The `withdraw_update` command: roll `label` (`name@version`) back or forget it."""

    async def close(self) -> None:
        """Stop its worker thread."""


UpdatesFactory = Callable[[Topics, Callable[..., None]], "Updates | None"]
"""Builds the `Updates` a link carries from its `Topics` and its `emit(type_, **fields)`
(None: updates are off). Handed to `MqttUplink` by the composition root."""


class Uplink(abc.ABC):
    """Carries telemetry, events and frames to the fleet. Its methods must not block the loop."""

    name: str = "uplink"

    def attach(self, hooks: PipelineHooks) -> None:  # noqa: B027 - optional
        """Receive the pipeline's counters and controls (before `start`)."""

    async def start(self) -> None:  # noqa: B027 - a link with nothing to connect needs no start
        """Connect (in the background: the pipeline never waits for the network)."""

    @abc.abstractmethod
    def on_event(self, event: Event) -> None:
        """Queue an event for sending; called on the event loop, must return at once."""

    @abc.abstractmethod
    async def on_frame(self, record: FrameRecord) -> None:
        """See each analysed frame (telemetry, uploads of good frames); must not wait on the network."""

    async def close(self) -> None:  # noqa: B027 - idem
        """Flush what can be flushed quickly and disconnect."""

    def stats(self) -> Mapping[str, float]:
        """Figures for the metrics endpoint (outbox depth, reconnects…); read from another thread."""
        return {}


class NoUplink(Uplink):
    """Nothing leaves the vehicle (bench runs, or a vehicle without a fleet link)."""

    name = "none"

    def on_event(self, event: Event) -> None:
        del event

    async def on_frame(self, record: FrameRecord) -> None:
        del record
