"""TensorRT on a GPU: engine build, cache hit, rebuild on a new model, output against numpy.

Marked `gpu`: they skip with the reason where tensorrt/pycuda or a CUDA device are absent (the
cache logic itself is tested without a GPU in test_engine_cache.py)."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tests.enhance.helpers import frame, model_dir, reference
from vehicle_agent.config import TensorRtEnhancerConfig
from vehicle_agent.enhance.base import BackendUnavailableError, create_enhancer
from vehicle_agent.enhance.store import ModelStore

pytestmark = pytest.mark.gpu


@pytest.fixture
def backend() -> ModuleType:
    try:
        module = importlib.import_module("vehicle_agent.enhance.tensorrt_backend")
    except ImportError as exc:
        pytest.skip(str(exc))  # "tensorrt not importable: …"
    try:
        module.gpu_identity(0)
    except BackendUnavailableError as exc:
        pytest.skip(f"no CUDA device: {exc}")
    return module


def config(tmp_path: Path, precision: str = "fp16") -> TensorRtEnhancerConfig:
    return TensorRtEnhancerConfig(
        precision=precision,  # type: ignore[arg-type]
        opt_width=64,
        opt_height=48,
        max_width=640,
        max_height=480,
        engine_dir=tmp_path / "engines",
        calibration_dir=tmp_path / "calib" if precision == "int8" else None,
    )


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_an_engine_is_built_cached_and_matches_the_reference(
    backend: ModuleType, tmp_path: Path, models: Path, precision: str
) -> None:
    model = ModelStore([models]).resolve("tiny")
    first = create_enhancer(config(tmp_path, precision), model=model)
    first.load()
    assert first.cache_status.startswith("built")  # type: ignore[attr-defined]
    image = frame(0, (45, 61))
    tolerance = 1 if precision == "fp32" else 3
    diff = np.abs(first.enhance(image).astype(int) - reference(image).astype(int))
    assert diff.max() <= tolerance
    first.close()
    second = create_enhancer(config(tmp_path, precision), model=model)
    second.load()
    assert second.cache_status == "hit"  # type: ignore[attr-defined]
    second.close()


def test_a_new_model_version_rebuilds_the_engine(
    backend: ModuleType, tmp_path: Path, models: Path
) -> None:
    store = ModelStore([models])
    enhancer = create_enhancer(config(tmp_path), model=store.resolve("tiny"))
    enhancer.load()
    enhancer.close()
    model_dir(models, "tiny", "1.1.0", bias=np.zeros(3, np.float32))
    rebuilt = create_enhancer(config(tmp_path), model=store.resolve("tiny"))
    rebuilt.load()
    assert "model file changed" in rebuilt.cache_status  # type: ignore[attr-defined]
    rebuilt.close()


def test_int8_calibrates_on_a_folder_of_frames(
    backend: ModuleType, tmp_path: Path, models: Path
) -> None:
    import cv2  # noqa: PLC0415

    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(4):
        cv2.imwrite(str(calib / f"{i}.png"), frame(i, (48, 64)))
    enhancer = create_enhancer(config(tmp_path, "int8"), model=ModelStore([models]).resolve("tiny"))
    enhancer.load()
    image = frame(9, (48, 64))
    diff = np.abs(enhancer.enhance(image).astype(int) - reference(image).astype(int))
    assert diff.mean() < 6
    assert list((tmp_path / "engines").glob("tiny.*.calib"))
    enhancer.close()
