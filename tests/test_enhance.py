"""Enhancers: the registry, passthrough identity, the classical backend's behaviour, bad frames."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import types
import typing

import numpy as np
import pytest

from vehicle_agent.config import ClassicalEnhancerConfig, PassthroughEnhancerConfig
from vehicle_agent.enhance import Enhancer, EnhancerError, backends, base, create_enhancer
from vehicle_agent.enhance.base import _BACKENDS, backend_types
from vehicle_agent.enhance.classical import ClassicalEnhancer
from vehicle_agent.enhance.settings import MODEL_BACKENDS, EnhancerConfig, ModelBackend
from vehicle_agent.quality.metrics import compute_quality


def street(value: float) -> np.ndarray:
    """A textured frame (a gradient with stripes) scaled to a mean brightness near `value`."""
    rng = np.random.default_rng(0)
    base = np.linspace(0.3, 1.0, 160)[None, :, None] * np.ones((120, 160, 3))
    base[::8] *= 0.6
    base += rng.normal(0, 0.03, base.shape)
    return np.asarray(np.clip(base * value / base.mean(), 0, 255), dtype=np.uint8)


@pytest.mark.parametrize("config", [PassthroughEnhancerConfig(), ClassicalEnhancerConfig()])
def test_every_backend_keeps_shape_and_dtype(config: object) -> None:
    enhancer = create_enhancer(config)
    assert isinstance(enhancer, Enhancer)
    enhancer.load()
    frame = street(90)
    out = enhancer.enhance(frame)
    assert out.shape == frame.shape
    assert out.dtype == np.uint8
    enhancer.close()


def test_passthrough_returns_the_frame_unchanged() -> None:
    frame = street(90)
    out = create_enhancer(PassthroughEnhancerConfig()).enhance(frame)
    assert np.array_equal(out, frame)


def test_classical_brightens_a_dark_frame_and_adds_contrast() -> None:
    dark = street(25)
    out = ClassicalEnhancer().enhance(dark)
    before, after = compute_quality(dark), compute_quality(out)
    assert after.brightness > before.brightness * 1.8
    assert after.contrast > before.contrast


def test_classical_does_not_darken_or_gamma_a_bright_frame() -> None:
    enhancer = ClassicalEnhancer()
    assert enhancer.gamma_for(200.0) == 1.0
    assert enhancer.gamma_for(10.0) == pytest.approx(1 / 2.5)  # capped by max_gamma_gain
    bright = street(180)
    assert compute_quality(enhancer.enhance(bright)).brightness > 150


@pytest.mark.parametrize(
    ("frame", "words"),
    [
        (np.zeros((10, 10), np.uint8), "H×W×3"),
        (np.zeros((10, 10, 3), np.float32), "dtype is float32"),
        ("not an image", "numpy array"),
    ],
)
def test_bad_frames_are_refused_with_the_reason(frame: object, words: str) -> None:
    with pytest.raises(EnhancerError, match=words):
        ClassicalEnhancer().enhance(frame)  # type: ignore[arg-type]


def test_unknown_backend_type_names_the_known_ones() -> None:
    class Weird:
        type = "warp-drive"

    with pytest.raises(
        EnhancerError,
        match="unknown backend type; known: classical, onnxruntime, passthrough, tensorrt",
    ):
        create_enhancer(Weird())


def test_the_backend_registry_and_the_config_models_name_the_same_backends() -> None:
    """Fail closed both ways: a config `type` with no backend to build it, or a registered
    backend that no config can name, is caught here rather than on a vehicle."""
    union = typing.get_args(typing.get_args(EnhancerConfig)[0])
    config_types = {model.model_fields["type"].default for model in union}
    assert set(backend_types()) == config_types
    assert config_types >= MODEL_BACKENDS
    assert backend_types()[0] == "tensorrt"  # the CLI lists the vehicle's first choice first
    for key in backend_types():
        target = _BACKENDS[key]
        module, _, name = target.partition(":")
        assert module.startswith("vehicle_agent.enhance."), target
        assert name, target


def _module(monkeypatch: pytest.MonkeyPatch, name: str, **attrs: object) -> str:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, name, module)
    return name


def test_the_plugin_registry_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend module without a PLUGIN, a key its config does not carry, or a key declared
    twice stops the registry at its import, naming the module; nothing runs in its place."""
    monkeypatch.setattr(base, "_BACKENDS", dict(base._BACKENDS))  # registrations stay here
    good = backends.PLUGINS[0]
    with pytest.raises(backends.PluginError, match=r"tests\.scratch_none: no PLUGIN"):
        backends._collect((_module(monkeypatch, "tests.scratch_none"),))
    wrong_key = dataclasses.replace(good, key="warp-drive")
    with pytest.raises(backends.PluginError, match="key 'warp-drive' but its config's type is"):
        backends._collect((_module(monkeypatch, "tests.scratch_key", PLUGIN=wrong_key),))
    twice = (_module(monkeypatch, "tests.scratch_a", PLUGIN=good),) * 2
    with pytest.raises(backends.PluginError, match=f"backend '{good.key}' is declared twice"):
        backends._collect(twice)


def test_the_union_and_the_model_backends_come_from_the_plugins() -> None:
    union = typing.get_args(typing.get_args(EnhancerConfig)[0])
    assert union == tuple(p.config for p in backends.PLUGINS)
    assert {p.key for p in backends.PLUGINS if p.runs_model} == MODEL_BACKENDS
    assert set(typing.get_args(ModelBackend)) == MODEL_BACKENDS


def test_parsing_a_config_loads_no_backend_library() -> None:
    """Every plugin is read to parse a config; their libraries load only when built."""
    code = (
        "import sys, vehicle_agent.config as c; c.parse_config({}); "
        "print(sorted(m for m in ('onnxruntime', 'tensorrt', 'pycuda') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
