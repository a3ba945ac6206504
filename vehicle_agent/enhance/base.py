"""Enhance stage: the `Enhancer` interface and the registry that builds a backend from its config."""

from __future__ import annotations

import abc
import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vehicle_agent.records import Image, InvalidFrameError, JsonValue, check_image


class EnhancerError(Exception):
    """A backend failed to load or to enhance a frame; `backend` says which."""

    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        self.reason = reason
        super().__init__(f"{backend}: {reason}")


class BackendUnavailableError(EnhancerError):
    """An optional backend whose libraries or hardware are absent here."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(backend, f"backend unavailable: {reason}")


class Enhancer(abc.ABC):
    """Turns a degraded frame into a better one. Blocking: the enhance stage runs it in a thread."""

    name: str = "enhancer"

    def load(self) -> None:
        """Load and warm up, so the first real frame does not pay for it. Default: one dummy frame."""
        self.enhance(np.zeros((64, 64, 3), np.uint8))

    @abc.abstractmethod
    def _enhance(self, image: Image) -> Image:
        """Backend-specific work on a checked frame."""

    def enhance(self, image: Image) -> Image:
        """Enhanced copy of `image` (H×W×3 uint8 BGR), same size. Raises `EnhancerError`."""
        try:
            check_image(image)
        except InvalidFrameError as exc:
            raise EnhancerError(self.name, str(exc)) from exc
        out = self._enhance(image)
        if out.shape != image.shape or out.dtype != np.uint8:
            raise EnhancerError(
                self.name, f"returned {out.dtype} {out.shape} for a uint8 {image.shape} frame"
            )
        return out

    def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Release what `load` acquired."""

    @property
    def model_label(self) -> str | None:
        """name@version of the model that gives frames, or None (no model, or none yet)."""
        return None

    def set_condition(self, condition: str | None) -> None:  # noqa: B027 - only chains gate
        """The scene condition of the frame about to be enhanced (judged on the raw frame;
        called on the enhance stage's thread, before `enhance`)."""

    def use_timer(self, timer: Callable[[], float]) -> None:  # noqa: B027 - only chains retry
        """Time retries and promotions by `timer` (a replay: the video time of the frame being
        enhanced) instead of the host's clock; latency is still measured on the host's."""

    def reset_guard(self) -> None:  # noqa: B027 - only chains guard
        """Forget the harm guard's smoothing, so the next frame gets its own verdict."""

    def drain_events(self) -> list[EnhancerEvent]:
        """Events that happened since the last call (demotions, swaps), for the event loop."""
        return []


@runtime_checkable
class PreparedEnhancer(Protocol):
    """An enhancer whose `load` may first need slow one-time work (a TensorRT engine build: minutes
    on a Jetson). The chain asks before loading it and, when there is work, does it on its loader
    thread while the next backend gives the frames; `load` alone still does everything."""

    def preparation_needed(self) -> str | None:
        """Why `load` would be slow now (e.g. 'no cached engine'), or None when it would not."""
        ...  # pragma: no cover - protocol

    def prepare(self, cancel: threading.Event) -> None:
        """Do that work (blocking); give up soon after `cancel` is set. `load` is fast after it."""
        ...  # pragma: no cover - protocol


@dataclass(frozen=True, slots=True)
class EnhancerEvent:
    """An event for `EVENT_TYPES`, recorded off the loop and emitted by the stage on it."""

    type: str
    data: dict[str, JsonValue] = field(default_factory=dict)


_BACKENDS: dict[str, str] = {
    # type key → "module:factory"; imported only when chosen, so an optional backend whose
    # libraries are missing cannot break the others.
    "passthrough": "vehicle_agent.enhance.passthrough:PassthroughEnhancer",
    "classical": "vehicle_agent.enhance.classical:ClassicalEnhancer",
    "onnxruntime": "vehicle_agent.enhance.onnxruntime_backend:OnnxRuntimeEnhancer",
    "tensorrt": "vehicle_agent.enhance.tensorrt_backend:TensorRtEnhancer",
}


def register_backend(type_key: str, target: str) -> None:
    """Register a backend as 'package.module:Factory' under its config type key."""
    _BACKENDS[type_key] = target


def backend_types() -> list[str]:
    """The backend type keys this build knows, fastest first as a vehicle tries them (the CLI's
    `--backend` choices; tests check each has a config model and the reverse)."""
    order = ["tensorrt", "onnxruntime", "classical", "passthrough"]
    return sorted(_BACKENDS, key=lambda k: (order.index(k) if k in order else len(order), k))


def create_enhancer(config: Any, **context: Any) -> Enhancer:
    """Build the backend that `config.type` names; the factory receives the config.

    `context` goes to backends that need more than their config (a model backend: `model`, a
    verified `ModelRef`, and `state_dir` for its caches)."""
    type_key = str(config.type)
    target = _BACKENDS.get(type_key)
    if target is None:
        raise EnhancerError(
            type_key, f"unknown backend type; known: {', '.join(sorted(_BACKENDS))}"
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailableError(type_key, str(exc)) from exc
    factory: Callable[..., Enhancer] = getattr(module, attr)
    return factory(config, **context)
