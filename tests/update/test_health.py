"""The health check before activation, on real onnxruntime and real (tiny) model files: a sane
model passes; NaN, blank, inverted and slow ones fail with their kind; golden frames load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.enhance.helpers import model_dir
from tests.update.helpers import tiny_model
from vehicle_agent.config import OnnxRuntimeEnhancerConfig, TensorRtEnhancerConfig
from vehicle_agent.update.activate import (
    HealthCheckFailedError,
    HealthLimits,
    golden_frames,
    health_check,
    model_ref,
)

LIMITS = HealthLimits(max_latency_ms=1000.0, blank_std=1.0, max_mean_change=96.0)
ORT = [OnnxRuntimeEnhancerConfig(intra_op_threads=1)]


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return golden_frames(None, 2, width=160)  # the shipped sample clip


def test_golden_frames_come_from_the_sample_clip_or_a_folder(
    frames: list[np.ndarray], tmp_path: Path
) -> None:
    assert len(frames) == 2
    assert frames[0].shape[1] == 160
    assert frames[0].dtype == np.uint8
    assert float(np.std(frames[0])) > 10  # a real scene, not a flat frame
    with pytest.raises(HealthCheckFailedError, match="no golden frames"):
        golden_frames(tmp_path, 2)


def test_a_sane_model_passes_and_reports_its_speed(
    tmp_path: Path, frames: list[np.ndarray]
) -> None:
    report = health_check(model_ref(tiny_model(tmp_path, "1.0.1")), ORT, frames, LIMITS)
    assert report.backend == "onnxruntime"
    assert report.frames == 2
    assert 0 < report.median_ms <= report.max_ms


@pytest.mark.parametrize(
    ("kind", "weights", "limits"),
    [
        ("nan", {"weights": np.full((3, 3), np.nan, np.float32)}, LIMITS),
        (
            "blank",
            {"weights": np.zeros((3, 3), np.float32), "bias": np.full(3, 0.5, np.float32)},
            LIMITS,
        ),
        (
            "changed",
            {"weights": -np.eye(3, dtype=np.float32), "bias": np.ones(3, np.float32)},
            LIMITS,
        ),
        ("slow", {}, HealthLimits(max_latency_ms=1e-6, blank_std=1.0, max_mean_change=96.0)),
    ],
)
def test_a_bad_model_fails_with_its_kind(
    tmp_path: Path,
    frames: list[np.ndarray],
    kind: str,
    weights: dict[str, Any],
    limits: HealthLimits,
) -> None:
    ref = model_ref(model_dir(tmp_path, "tiny", "1.0.1", **weights))
    with pytest.raises(HealthCheckFailedError) as info:
        health_check(ref, ORT, frames, limits)
    assert info.value.kind == kind, info.value.reason


def test_no_backend_of_the_update_available_here_fails_as_unavailable(
    tmp_path: Path, frames: list[np.ndarray]
) -> None:
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # type: ignore[import-not-found]  # noqa: F401, PLC0415
    except ImportError:
        pass
    else:
        pytest.skip("tensorrt is installed here")
    ref = model_ref(tiny_model(tmp_path, "1.0.1"))
    with pytest.raises(HealthCheckFailedError) as info:
        health_check(ref, [TensorRtEnhancerConfig()], frames, LIMITS)
    assert info.value.kind == "unavailable"
