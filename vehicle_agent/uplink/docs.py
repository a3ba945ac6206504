"""Uplink stage: docs/mqtt.md, rendered from the topic table, payload models and settable keys.

`python -m tools.gen_docs` should write it next to docs/configuration.md; `test_docs` checks it.
"""

from __future__ import annotations

from vehicle_agent.uplink import topics
from vehicle_agent.uplink.commands import COMMAND_WINDOW, MAX_DEPTH, settable_descriptions
from vehicle_agent.uplink.discovery import discovery_markdown
from vehicle_agent.uplink.settings import OutboxConfig


def mqtt_markdown() -> str:
    outbox = OutboxConfig()
    ttl = {
        "reply": outbox.ttl_reply_s,
        "event": outbox.ttl_event_s,
        "telemetry": outbox.ttl_telemetry_s,
        "frame": outbox.ttl_frame_s,
    }
    text = topics.mqtt_markdown(
        settable_descriptions(), ttl, command_window=COMMAND_WINDOW, max_depth=MAX_DEPTH
    )
    return f"{text.rstrip()}\n\n{discovery_markdown()}\n"
