"""Uplink: the events of the fleet link, defined beside the code that emits them.

`vehicle_agent.catalogue` collects them with every other package's for the bus and the docs."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from vehicle_agent.events import EventSpec

UPLINK_EVENTS: Mapping[str, EventSpec] = {
    "uplink_connected": EventSpec(
        "The fleet link (MQTT) is up.",
        {
            "broker": "broker URL",
            "attempts": "connection attempts it took",
            "outage_s": "seconds without a link before this one, or null on the first",
            "pending": "messages waiting in the outbox",
        },
    ),
    "uplink_lost": EventSpec(
        "The fleet link failed or dropped; it is retried with backoff, the outbox keeps messages.",
        {
            "broker": "broker URL",
            "reason": "why",
            "retry_in_s": "seconds until the next attempt",
        },
        logging.WARNING,
    ),
    "uplink_refused": EventSpec(
        "The broker refused a message (MQTT 5 reason code ≥ 0x80); it was dropped, not retried.",
        {
            "topic": "topic of the message",
            "message_class": "'reply', 'event', 'telemetry' or 'frame'; 'status', 'subscription' "
            "or 'discovery' (Home Assistant) for what is not sent through the outbox",
            "reason_code": "MQTT 5 reason code, e.g. 135 (not authorized)",
            "reason": "reason code name",
        },
        logging.ERROR,
    ),
    "outbox_dropped": EventSpec(
        "Outgoing messages were dropped (over the disk budget, expired, or refused).",
        {
            "counts": "class:reason=count, comma-separated, since the previous report",
            "pending": "messages still in the outbox",
        },
        logging.WARNING,
    ),
    "command_handled": EventSpec(
        "A fleet command was answered.",
        {
            "id": "command id, or null when unreadable",
            "name": "command name, or null",
            "ok": "true when it ran and succeeded",
            "error": "error code when not ok (see docs/mqtt.md), else null",
            "duplicate": "true when it was a redelivery answered with the first reply",
        },
    ),
    "frame_upload_queued": EventSpec(
        "A frame was encoded and queued for upload to the fleet.",
        {
            "upload_id": "identifies the upload",
            "reason": "'request', 'good_frame', 'before_cleaning' or 'after_cleaning'",
            "bytes": "JPEG size, bytes",
            "chunks": "messages it is split into",
        },
    ),
}
