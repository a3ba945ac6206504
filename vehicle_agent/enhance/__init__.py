"""Enhance, second stage of the flow: the `Enhancer` interface and its backends, by type key."""

from vehicle_agent.enhance.base import (
    BackendUnavailableError,
    Enhancer,
    EnhancerError,
    create_enhancer,
    register_backend,
)

__all__ = [
    "BackendUnavailableError",
    "Enhancer",
    "EnhancerError",
    "create_enhancer",
    "register_backend",
]
