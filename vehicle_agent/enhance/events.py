"""Enhance: the events of the fallback chain and its models, defined beside the code that emits them.

`vehicle_agent.catalogue` collects them with every other package's for the bus and the docs."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from vehicle_agent.events import EventSpec

ENHANCE_EVENTS: Mapping[str, EventSpec] = {
    "enhancer_demoted": EventSpec(
        "An enhancement backend failed; frames go to the next backend of the chain.",
        {
            "backend": "backend type ('tensorrt', 'onnxruntime', 'classical', …)",
            "model": "model name it ran, or null for a backend without model",
            "kind": "'load' (did not load: model missing or refused, engine build failed), "
            "'unavailable' (library or GPU absent, or a precision this TensorRT cannot build "
            "such as INT8 on TensorRT 11: never retried), 'error' (raised on a "
            "frame), 'nan' (NaN/inf output), 'blank' (flat output from a real frame), "
            "'slow' (over max_latency_ms for slow_frames frames in a row)",
            "reason": "what failed",
            "retry_in_s": "seconds until its health check, or null when never retried",
        },
        logging.WARNING,
    ),
    "enhancer_promoted": EventSpec(
        "A demoted backend passed its health check (fresh load, warm-up, one probe frame) and "
        "takes frames again.",
        {
            "backend": "backend type",
            "model": "model name, or null",
            "demoted_s": "seconds it was demoted",
        },
    ),
    "enhancer_check_failed": EventSpec(
        "A demoted backend failed its health check again; the next check waits twice as long "
        "(up to enhance.health.promote_max_s).",
        {
            "backend": "backend type",
            "model": "model name, or null",
            "kind": "what failed, as for enhancer_demoted ('load': e.g. an engine build failed)",
            "reason": "what failed",
            "failed_checks": "health checks failed in a row",
            "retry_in_s": "seconds until the next health check",
        },
        logging.WARNING,
    ),
    "enhancer_preparing": EventSpec(
        "A backend needs slow one-time work before it loads (a TensorRT engine build); it runs in "
        "the background while the next backend of the chain gives the frames.",
        {
            "backend": "backend type",
            "model": "model name, or null",
            "reason": "what the work is and why (e.g. 'TensorRT engine build (no cached engine)')",
        },
    ),
    "enhancer_prepared": EventSpec(
        "A backend's background preparation finished and it loaded; it takes the frames from "
        "the next frame on (model_swapped, reason 'promoted'). A failure is enhancer_demoted.",
        {
            "backend": "backend type",
            "model": "model name, or null",
            "prepare_s": "seconds from the start of the preparation to the loaded backend",
        },
    ),
    "model_loaded": EventSpec(
        "A model was verified (sha256, input spec), loaded and warmed up.",
        {
            "backend": "backend type that runs it",
            "model": "name@version",
            "sha256": "first 12 hex digits of the model file's sha256",
            "load_s": "seconds to load (TensorRT: with an engine build done in the load; one done "
            "in the background is enhancer_prepared's prepare_s)",
            "warmup_ms": "warm-up inference, milliseconds",
        },
    ),
    "model_swapped": EventSpec(
        "Frames now come from another backend or model, switched between two frames.",
        {
            "previous": "backend:model (or backend) that gave the frames so far",
            "current": "backend:model (or backend) that gives them now; 'passthrough' is none",
            "reason": "'condition' (the scene condition chose another model), 'fallback' (the "
            "previous one was demoted), 'promoted' (a preferred one is back, or its engine "
            "build finished), 'replaced' (config reload or fleet command), 'update' (a model "
            "update was installed), 'rollback' (a model update was rolled back), 'reconciled' (at "
            "start: the model runs a version the fleet was not told of, as after a kill between "
            "an update's swap and this event; previous and current are then name@version)",
            "condition": "scene condition that gated the frame, or null when unknown",
            "model": "name@version of the model now giving frames, or null (none, or unknown)",
        },
    ),
}
