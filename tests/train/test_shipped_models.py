"""Shipped models: each file matches its manifest's sha256, follows the runtime contract and runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from vehicle_agent.enhance.manifest import read_manifest, verify_file

MODELS = Path(__file__).resolve().parents[2] / "models"
MANIFESTS = sorted(MODELS.glob("*/manifest.json"))


def test_at_least_the_default_fast_model_is_shipped() -> None:
    assert (MODELS / "fast-enhance" / "manifest.json") in MANIFESTS


@pytest.mark.parametrize("manifest_path", MANIFESTS, ids=lambda p: p.parent.name)
def test_manifest_sha256_matches_the_committed_file(manifest_path: Path) -> None:
    manifest = json.loads(manifest_path.read_text())
    model = manifest_path.parent / manifest["file"]
    assert manifest["name"] == manifest_path.parent.name
    assert hashlib.sha256(model.read_bytes()).hexdigest() == manifest["sha256"]
    assert model.stat().st_size < 4 * 1024 * 1024
    assert (manifest_path.parent / "MODEL_CARD.md").is_file()


@pytest.mark.parametrize("manifest_path", MANIFESTS, ids=lambda p: p.parent.name)
def test_the_runtime_accepts_the_manifest_and_the_file(manifest_path: Path) -> None:
    manifest = read_manifest(manifest_path)
    assert verify_file(manifest_path.parent, manifest) == manifest_path.parent / manifest.file


@pytest.mark.parametrize("manifest_path", MANIFESTS, ids=lambda p: p.parent.name)
def test_manifest_follows_the_runtime_contract(manifest_path: Path) -> None:
    manifest = json.loads(manifest_path.read_text())
    assert manifest["task"] in ("low_light", "dehaze", "derain", "denoise", "general")
    assert manifest["input"] == {
        "layout": "NCHW",
        "color": "RGB",
        "range": [0.0, 1.0],
        "dtype": "float32",
        "stride": manifest["input"]["stride"],
        "min_size": manifest["input"]["min_size"],
        "dynamic_hw": True,
    }
    assert manifest["output"] == {
        "layout": "NCHW",
        "color": "RGB",
        "range": [0.0, 1.0],
        "dtype": "float32",
        "dynamic_hw": True,
    }
    assert manifest["opset"] >= 17
    training = manifest["training"]
    assert {"data", "seed", "command", "architecture"} <= set(training)
    assert "psnr_low_light" in manifest["metrics"]


@pytest.mark.parametrize("manifest_path", MANIFESTS, ids=lambda p: p.parent.name)
def test_shipped_model_runs_at_a_padded_odd_size_and_keeps_range(manifest_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    manifest = json.loads(manifest_path.read_text())
    session = ort.InferenceSession(
        str(manifest_path.parent / manifest["file"]), providers=["CPUExecutionProvider"]
    )
    stride = manifest["input"]["stride"]
    h, w = -(-37 // stride) * stride, -(-53 // stride) * stride
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    (y,) = session.run(None, {session.get_inputs()[0].name: x})
    assert y.shape == x.shape
    assert y.dtype == np.float32
    assert float(y.min()) >= 0.0
    assert float(y.max()) <= 1.0
