"""Uplink stage: the `Uplink` interface to the fleet backend, and the one that sends nothing."""

from __future__ import annotations

import abc

from vehicle_agent.records import Event, FrameRecord


class Uplink(abc.ABC):
    """Carries telemetry, events and frames to the fleet. Its methods must not block the loop."""

    name: str = "uplink"

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


class NoUplink(Uplink):
    """Nothing leaves the vehicle (bench runs, or a vehicle without a fleet link)."""

    name = "none"

    def on_event(self, event: Event) -> None:
        del event

    async def on_frame(self, record: FrameRecord) -> None:
        del record
