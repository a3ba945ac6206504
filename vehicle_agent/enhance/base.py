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


@dataclass(frozen=True, slots=True)
class BackendPlugin:
    """What a backend's module declares as its `PLUGIN`, beside its config model and its
    enhancer class (`enhance.backends` collects them): the type key `[enhance] chain` names it
    by, the config model, where the enhancer is, whether it runs a model (a model backend: the
    update manifest's `backends`, `--model`) and where a vehicle tries it (lower first: the
    CLI's `--backend` choices come in that order). The enhancer is imported only when the
    backend is built, so a config parses without any backend's libraries."""

    key: str
    config: type[Any]
    """Its config model (a `ConfigModel` whose `type` is `Literal[key]`)."""
    enhancer: str
    """'module:Class' of its enhancer, imported when the backend is built (so a backend whose
    libraries are missing is 'unavailable' and breaks no other)."""
    runs_model: bool
    preference: int


_BACKENDS: dict[str, str] = {}
"""Type key → 'module:Factory', filled from the plugins (`enhance.backends`) and
`register_backend`; a factory is imported when its backend is built."""
_PREFERENCE: dict[str, int] = {}


def register_backend(type_key: str, target: str, preference: int = 100) -> None:
    """Register a backend as 'package.module:Factory' under its config type key."""
    _BACKENDS[type_key] = target
    _PREFERENCE[type_key] = preference


def _registry() -> dict[str, str]:
    # The plugins register when `enhance.backends` is first imported (parsing any config does);
    # imported here too, so building a backend never depends on that having happened.
    importlib.import_module("vehicle_agent.enhance.backends")
    return _BACKENDS


def backend_types() -> list[str]:
    """The backend type keys this build knows, in the order a vehicle tries them (the CLI's
    `--backend` choices; tests check each has a config model and the reverse)."""
    return sorted(_registry(), key=lambda k: (_PREFERENCE.get(k, 100), k))


def create_enhancer(config: Any, **context: Any) -> Enhancer:
    """Build the backend that `config.type` names; the factory receives the config.

    `context` goes to backends that need more than their config (a model backend: `model`, a
    verified `ModelRef`, and `state_dir` for its caches)."""
    type_key = str(config.type)
    target = _registry().get(type_key)
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
