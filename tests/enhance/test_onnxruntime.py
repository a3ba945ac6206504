"""Backends by type key: onnxruntime on a tiny exported model against a numpy reference, and
optional backends that cannot be imported reported as 'backend unavailable', never a crash."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.enhance.helpers import WEIGHTS, frame, reference
from vehicle_agent.config import OnnxRuntimeEnhancerConfig, TensorRtEnhancerConfig
from vehicle_agent.enhance import base
from vehicle_agent.enhance import model as model_module
from vehicle_agent.enhance.base import BackendUnavailableError, EnhancerError, create_enhancer
from vehicle_agent.enhance.onnxruntime_backend import OnnxRuntimeEnhancer, providers_for
from vehicle_agent.enhance.store import ModelStore


def load(models: Path, **config: object) -> OnnxRuntimeEnhancer:
    model = ModelStore([models]).resolve("tiny")
    enhancer = create_enhancer(OnnxRuntimeEnhancerConfig.model_validate(config), model=model)
    assert isinstance(enhancer, OnnxRuntimeEnhancer)
    enhancer.load()
    return enhancer


@pytest.mark.parametrize("size", [(45, 61), (48, 64), (480, 640)])
def test_onnxruntime_output_matches_the_numpy_reference(
    models: Path, size: tuple[int, int]
) -> None:
    enhancer = load(models)
    assert enhancer.name == "onnxruntime:tiny"
    assert enhancer.providers == ["CPUExecutionProvider"]
    image = frame(5, size)
    out = enhancer.enhance(image)
    assert out.shape == image.shape
    assert np.abs(out.astype(int) - reference(image, WEIGHTS).astype(int)).max() <= 1
    enhancer.close()


def test_threads_are_configurable(models: Path) -> None:
    enhancer = load(models, intra_op_threads=1, allow_spinning=True)
    assert enhancer.enhance(frame()).shape == frame().shape
    enhancer.close()


def test_the_cuda_provider_is_used_when_present_and_cpu_otherwise() -> None:
    assert providers_for("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert providers_for("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert providers_for("cpu", ["CUDAExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(BackendUnavailableError, match="backend unavailable: no CUDA"):
        providers_for("cuda", ["CPUExecutionProvider"])


def test_a_backend_whose_module_cannot_be_imported_is_unavailable_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(base._BACKENDS, "ghost", "vehicle_agent.enhance.no_such_module:Ghost")
    with pytest.raises(BackendUnavailableError) as info:
        create_enhancer(SimpleNamespace(type="ghost"))
    assert str(info.value).startswith("ghost: backend unavailable: No module named")
    assert isinstance(info.value, EnhancerError)


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here"
)
def test_tensorrt_without_its_libraries_is_reported_unavailable() -> None:
    with pytest.raises(
        BackendUnavailableError, match="tensorrt: backend unavailable: tensorrt not importable"
    ):
        create_enhancer(TensorRtEnhancerConfig())


def test_a_model_backend_built_alone_without_a_model_says_which_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Built alone (not by a chain), a model backend runs the default model from the store.
    monkeypatch.setattr(model_module, "DEFAULT_MODEL", "absent-model")
    enhancer = create_enhancer(OnnxRuntimeEnhancerConfig(), state_dir=tmp_path)
    with pytest.raises(EnhancerError, match="model 'absent-model' not found in"):
        enhancer.load()
