"""Enhance stage: the backend plugins, the one list of them.

Each backend is one module holding its config model, its enhancer class and its `PLUGIN`
(`base.BackendPlugin`: type key, config model, where its enhancer is, whether it runs a model,
where a vehicle tries it). TensorRT's comes in two halves: its enhancer module binds tensorrt and
pycuda on import (and fails without them: "backend unavailable"), so its config and plugin live
in the half that needs neither, `tensorrt_plan`.

Adding a backend is writing that module and naming it in `BACKEND_MODULES`; the `[enhance]`
chain's union, the model-backend names (the update manifest's `backends`, `--model`) and the
CLI's `--backend` choices are made from the plugins. It fails closed: a module without a
`PLUGIN`, a key declared twice or a config whose `type` is not its key is an error when this
module is imported (at the first config parse), not a backend that silently never runs.
"""

from __future__ import annotations

import importlib

from vehicle_agent.enhance.base import BackendPlugin, register_backend

BACKEND_MODULES: tuple[str, ...] = (
    # The order of the config union (and of docs/configuration.md).
    "vehicle_agent.enhance.passthrough",
    "vehicle_agent.enhance.classical",
    "vehicle_agent.enhance.onnxruntime_backend",
    "vehicle_agent.enhance.tensorrt_plan",
)


class PluginError(Exception):
    """A backend module does not declare a usable `PLUGIN`."""


def _collect(modules: tuple[str, ...]) -> tuple[BackendPlugin, ...]:
    plugins: dict[str, BackendPlugin] = {}
    for name in modules:
        plugin = getattr(importlib.import_module(name), "PLUGIN", None)
        if not isinstance(plugin, BackendPlugin):
            raise PluginError(f"{name}: no PLUGIN = BackendPlugin(...) in the module")
        declared = plugin.config.model_fields["type"].default
        if declared != plugin.key:
            raise PluginError(
                f"{name}: PLUGIN key {plugin.key!r} but its config's type is {declared!r}"
            )
        if plugin.key in plugins:
            raise PluginError(f"{name}: backend {plugin.key!r} is declared twice")
        plugins[plugin.key] = plugin
        register_backend(plugin.key, plugin.enhancer, plugin.preference)
    return tuple(plugins.values())


PLUGINS: tuple[BackendPlugin, ...] = _collect(BACKEND_MODULES)
CONFIG_MODELS: tuple[type, ...] = tuple(p.config for p in PLUGINS)
"""Every backend's config model, in `BACKEND_MODULES` order (the `[enhance]` chain union)."""
MODEL_BACKEND_KEYS: tuple[str, ...] = tuple(p.key for p in PLUGINS if p.runs_model)
"""The backends that run a model."""
