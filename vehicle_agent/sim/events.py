"""Bench simulator: the events only the simulator emits.

`vehicle_agent.catalogue` collects them with every other package's for the bus and the docs."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from vehicle_agent.events import EventSpec

SIM_EVENTS: Mapping[str, EventSpec] = {
    "fault_injected": EventSpec(
        "Bench simulator only: a fault given with `simulate --fault` took effect (its effects "
        "follow as the stages' own events).",
        {
            "kind": "'camera-stall', 'camera-eos', 'enhance-fail' or 'broker-loss'",
            "spec": "the fault as given, e.g. 'camera-stall@10s-16s'",
            "end_s": "video time it ends, seconds, or null for the end of the run "
            "(camera-stall: start + how long the camera gives no frames, in wall seconds)",
        },
        logging.WARNING,
    ),
}
