"""Every event the daemon can emit, collected from the packages that declare them.

The composition roots (`app.build_parts`, the bench simulator) hand `EVENT_TYPES` to the
`EventBus`, and `tools/gen_docs.py` writes `docs/events.md` from it. Only this module knows every
package's events; `vehicle_agent.events` knows none of them.
"""

from __future__ import annotations

from collections.abc import Mapping

from vehicle_agent.capture.events import CAPTURE_EVENTS
from vehicle_agent.control.events import CONTROL_EVENTS
from vehicle_agent.enhance.events import ENHANCE_EVENTS
from vehicle_agent.events import PIPELINE_EVENTS, EventSpec
from vehicle_agent.quality.events import QUALITY_EVENTS
from vehicle_agent.sim.events import SIM_EVENTS
from vehicle_agent.update.events import UPDATE_EVENTS
from vehicle_agent.uplink.events import UPLINK_EVENTS

PACKAGES: Mapping[str, Mapping[str, EventSpec]] = {
    "pipeline": PIPELINE_EVENTS,
    "capture": CAPTURE_EVENTS,
    "enhance": ENHANCE_EVENTS,
    "quality": QUALITY_EVENTS,
    "control": {name: EventSpec(*spec) for name, spec in CONTROL_EVENTS.items()},
    "uplink": UPLINK_EVENTS,
    "update": {name: EventSpec(*spec) for name, spec in UPDATE_EVENTS.items()},
    "sim": SIM_EVENTS,
}
"""Each package's events, in the order of the flow (the docs follow it)."""


def collect(packages: Mapping[str, Mapping[str, EventSpec]]) -> dict[str, EventSpec]:
    """One table from the packages' tables; a name two packages declare is an error."""
    table: dict[str, EventSpec] = {}
    owner: dict[str, str] = {}
    for package, events in packages.items():
        for name, spec in events.items():
            if name in table:
                raise ValueError(f"event {name!r} is declared by both {owner[name]} and {package}")
            table[name], owner[name] = spec, package
    return table


EVENT_TYPES: Mapping[str, EventSpec] = collect(PACKAGES)
