"""Analyze: the events of the quality monitor, defined beside the code that emits them.

(Adhesion alarms are the control loop's: `vehicle_agent.control.events`.)

`vehicle_agent.catalogue` collects them with every other package's for the bus and the docs."""

from __future__ import annotations

from collections.abc import Mapping

from vehicle_agent.events import EventSpec

QUALITY_EVENTS: Mapping[str, EventSpec] = {
    "scene_condition_changed": EventSpec(
        "The scene condition of the raw frames changed (after its hysteresis hold).",
        {
            "condition": "'normal', 'low_light', 'fog', 'blur' or 'rain'",
            "previous": "the condition before",
        },
    ),
}
