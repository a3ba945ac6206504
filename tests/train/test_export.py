"""Export: every architecture goes to ONNX (opset 17, dynamic H/W) and onnxruntime agrees with PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="export needs the train extra (torch)")
onnx = pytest.importorskip("onnx", reason="export needs onnx")
ort = pytest.importorskip("onnxruntime", reason="the check runs onnxruntime")

from tools.gan.export import (  # noqa: E402
    OPSET,
    ExportError,
    ManifestInfo,
    check_onnx,
    export_onnx,
    load_onnx_weights,
    write_manifest,
)
from tools.gan.models import ARCHITECTURES, Generator, build_generator  # noqa: E402
from vehicle_agent.enhance.manifest import read_manifest, sha256_file  # noqa: E402


def trained_like(arch: str) -> Generator:
    """A generator with non-trivial weights (fresh ones are the identity, which proves little)."""
    torch.manual_seed(0)
    gen = build_generator(arch, 4)  # type: ignore[arg-type]
    with torch.no_grad():
        for p in gen.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return gen.eval()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_onnx_matches_pytorch_at_several_sizes(arch: str, tmp_path: Path) -> None:
    gen = trained_like(arch)
    path = tmp_path / "model.onnx"
    export_onnx(gen, path)
    model = onnx.load(str(path))
    assert {o.domain: o.version for o in model.opset_import}[""] >= 17
    frame = np.random.default_rng(1).integers(0, 256, (40, 72, 3), dtype=np.uint8)
    diff = check_onnx(gen, path, images=[frame])
    print(f"{arch}: onnxruntime vs PyTorch max abs diff {diff:.2e}")
    assert diff < 1e-4
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dims = session.get_inputs()[0].shape
    assert isinstance(dims[2], str)
    assert isinstance(dims[3], str)


def test_a_graph_that_disagrees_with_pytorch_is_refused(tmp_path: Path) -> None:
    gen = trained_like("fast")
    path = tmp_path / "model.onnx"
    export_onnx(gen, path)
    with torch.no_grad():
        gen.curve.bias.add_(1.0)  # type: ignore[union-attr,operator]
    with pytest.raises(ExportError, match="differs from PyTorch"):
        check_onnx(gen, path)


def test_manifest_names_the_file_by_its_sha256_with_the_contract_keys(tmp_path: Path) -> None:
    gen = trained_like("fast")
    export_onnx(gen, tmp_path / "model.onnx")
    training = {"data": "tiny", "seed": 1, "command": "pytest", "architecture": "fast"}
    info = ManifestInfo("t", "0.0.1", "general", 4, OPSET, training, {"psnr_fog": 20.0})
    manifest = write_manifest(tmp_path, info)
    assert read_manifest(tmp_path) == manifest  # the runtime reads back what we wrote
    saved = json.loads((tmp_path / "manifest.json").read_text())
    assert saved["sha256"] == sha256_file(tmp_path / "model.onnx")
    assert {"name", "version", "file", "sha256", "task", "input", "output", "opset"} <= set(saved)
    assert {"training", "metrics", "created"} <= set(saved)
    assert saved["input"]["stride"] == 4
    assert saved["input"]["dynamic_hw"] is True


def test_the_shipped_model_loads_back_into_torch_for_fine_tuning() -> None:
    """The loop fine-tunes from the active model.onnx: its weights load back exactly."""
    shipped = Path(__file__).resolve().parents[2] / "models" / "fast-enhance"
    generator = build_generator("fast", 24)
    assert load_onnx_weights(generator, shipped / "model.onnx") == len(list(generator.parameters()))
    generator.eval()
    generator.set_progress(1.0)
    generator.gate = json.loads((shipped / "manifest.json").read_text())["training"][
        "identity_gate"
    ]
    image = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)
    assert check_onnx(generator, shipped / "model.onnx", images=[image]) < 1e-4
    with pytest.raises(ValueError, match="no weights for"):
        load_onnx_weights(build_generator("restore", 16), shipped / "model.onnx")
