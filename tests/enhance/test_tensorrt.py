"""TensorRT on a GPU: engine build, cache hit, an engine per model version, output against numpy.

Marked `gpu`: they skip with the reason where tensorrt/pycuda or a CUDA device are absent. The
same code runs without a GPU on faked TensorRT and pycuda in test_tensorrt_fake.py; the cache,
flag and I/O-plan logic is tested alone in test_engine_cache.py and test_tensorrt_plan.py."""

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


def test_a_new_model_version_builds_its_own_engine(
    backend: ModuleType, tmp_path: Path, models: Path
) -> None:
    store = ModelStore([models])
    enhancer = create_enhancer(config(tmp_path), model=store.resolve("tiny"))
    enhancer.load()
    enhancer.close()
    model_dir(models, "tiny", "1.1.0", bias=np.zeros(3, np.float32))
    rebuilt = create_enhancer(config(tmp_path), model=store.resolve("tiny"))
    rebuilt.load()
    # Its own engine: the running version's stays for a rollback.
    assert rebuilt.cache_status == "built (no cached engine)"  # type: ignore[attr-defined]
    rebuilt.close()
    assert sorted(p.name for p in (tmp_path / "engines" / "tiny").glob("*.engine")) == [
        "1.0.0.fp16.engine",
        "1.1.0.fp16.engine",
    ]


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
    assert list((tmp_path / "engines" / "tiny").glob("1.0.0.int8.*.calib"))
    enhancer.close()
