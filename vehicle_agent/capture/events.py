"""Capture: the events the frame source reports, defined beside the code that emits them.

`vehicle_agent.catalogue` collects them with every other package's for the bus and the docs."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from vehicle_agent.events import EventSpec

CAPTURE_EVENTS: Mapping[str, EventSpec] = {
    "source_opened": EventSpec(
        "The frame source opened.",
        {
            "uri": "source URI",
            "description": "what the source reported",
            "width": "pixels",
            "height": "pixels",
            "fps": "nominal frames per second, or null",
            "live": "true for cameras and pipelines",
        },
    ),
    "source_lost": EventSpec(
        "The source failed to open or stopped delivering; it will be retried.",
        {
            "uri": "source URI",
            "reason": "why",
            "attempt": "failed attempts in a row",
            "retry_in_s": "seconds",
        },
        logging.WARNING,
    ),
    "source_resumed": EventSpec(
        "A lost source delivers again.",
        {
            "uri": "source URI",
            "outage_s": "seconds without frames",
            "missing_frames": "frames the camera would have delivered meanwhile (fps × outage)",
        },
    ),
    "source_gave_up": EventSpec(
        "The source failed more times in a row than allowed; the pipeline stops.",
        {"uri": "source URI", "attempts": "failed attempts", "reason": "last failure"},
        logging.ERROR,
    ),
    "source_ended": EventSpec(
        "A recording reached its end.",
        {"uri": "source URI", "frames": "frames delivered in total"},
    ),
    "source_looped": EventSpec(
        "A recording reached its end and starts again.",
        {"uri": "source URI", "loop": "loops completed"},
    ),
}
