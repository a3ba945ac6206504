"""Model updates: the events they report, defined beside the code; `vehicle_agent.events` adds them."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from vehicle_agent.update.manifest import REFUSAL_REASONS

_MODEL = "name@version of the update"
_ID = "16 hex digits naming the signed offer (its chunk topics use it)"

UPDATE_EVENTS: Mapping[str, tuple[str, Mapping[str, str], int]] = {
    # name: (description, {field: meaning with unit}, log level)
    "model_update_offered": (
        (
            "A correctly signed model update for this vehicle was accepted; its transfer starts "
            "(or resumes)."
        ),
        {
            "update_id": _ID,
            "model": _MODEL,
            "key_id": "the trusted key that signed it",
            "bytes": "size of the model file, bytes",
            "chunks": "chunk messages it comes in",
            "have_bytes": "bytes already in staging from before a disconnect or restart",
        },
        logging.INFO,
    ),
    "model_update_progress": (
        "A model transfer advanced (every `update.progress_interval_s`, and when complete).",
        {
            "update_id": _ID,
            "model": _MODEL,
            "received_bytes": "bytes in staging, verified by length",
            "total_bytes": "size of the model file, bytes",
            "percent": "received share, 0–100",
        },
        logging.INFO,
    ),
    "model_update_refused": (
        (
            "A model update was refused; nothing outside the staging folder changed and the active "
            "model runs on."
        ),
        {
            "update_id": _ID + ", or null when unreadable",
            "model": _MODEL + ", or null when unreadable",
            "reason": "; ".join(f"'{k}' ({v})" for k, v in REFUSAL_REASONS.items()),
            "detail": "what exactly, naming the field, key or value",
        },
        logging.WARNING,
    ),
    "model_update_installed": (
        (
            "A transferred model passed its checks (sha256, health check on golden frames) and is "
            "now the active model; frames switch to it between two frames (`model_swapped`)."
        ),
        {
            "update_id": _ID,
            "model": _MODEL,
            "previous": "name@version that ran before (the shipped one included), or null",
            "backend": "backend the health check loaded it with",
            "median_ms": "median time per golden frame in the health check, milliseconds",
            "transfer_s": "seconds from the offer to the last chunk (this run of the daemon)",
        },
        logging.INFO,
    ),
    "model_update_confirmed": (
        (
            "The new model ran for `update.confirm_after_s`: it is kept, and older versions are "
            "refused from now on."
        ),
        {"model": _MODEL},
        logging.INFO,
    ),
    "model_rolled_back": (
        (
            "A model update failed and the previous model runs (or never stopped running); the "
            "version is marked bad and not taken again."
        ),
        {
            "model": _MODEL,
            "restored": "name@version the model store runs now (the shipped one included), or "
            "null when it has none",
            "stage": "'health_check' (failed before the swap: load, golden frames, latency), "
            "'swap' (the enhance stage could not run it), 'crash_loop' (the daemon stopped "
            "`update.max_crashes` times without a clean shutdown after the swap), 'withdrawn' "
            "(the fleet withdrew it: the `withdraw_update` command of an aborted rollout)",
            "reason": "what failed",
        },
        logging.ERROR,
    ),
}
