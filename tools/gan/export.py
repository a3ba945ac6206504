"""Export: a trained generator to ONNX (dynamic height and width, opset 17), checked with
onnxruntime against PyTorch, with the manifest the vehicle's model store reads and a model card.

Layout (the contract with the runtime in `vehicle_agent/enhance/`, whose manifest schema
`vehicle_agent.enhance.manifest` this module fills in): `models/<name>/model.onnx`,
`models/<name>/manifest.json`, `models/<name>/MODEL_CARD.md`.
Model I/O: float32 N×3×H×W RGB in [0, 1]; the runtime pads H and W to the manifest's `stride`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tools.gan.models import Generator
from vehicle_agent.compat import UTC
from vehicle_agent.enhance.manifest import (
    InputSpec,
    Manifest,
    OutputSpec,
    Task,
    build_manifest,
)
from vehicle_agent.enhance.manifest import write_manifest as write_runtime_manifest

OPSET = 17
MODEL_FILE = "model.onnx"
GUIDED_PREFIX = "inner."
"""What `GuidedUpsampled` puts before the names of the generator it wraps."""


class ExportError(Exception):
    """The exported graph is invalid or does not match PyTorch; `max_abs_diff` says how far."""

    def __init__(self, path: Path, reason: str, max_abs_diff: float = float("nan")) -> None:
        self.path = path
        self.max_abs_diff = max_abs_diff
        super().__init__(f"{path}: {reason}")


def export_onnx(generator: Generator, path: Path, opset: int = OPSET) -> None:
    """Write `generator` (put in eval mode) as ONNX with dynamic batch, height and width."""
    generator.eval()
    stride = generator.stride
    example = torch.rand(1, 3, 12 * stride if stride < 16 else 4 * stride, 16 * stride)
    path.parent.mkdir(parents=True, exist_ok=True)
    dims = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        # The TorchScript exporter warns that it is deprecated (the torch.export one needs
        # onnxscript, which the train extra does not carry) and about traced shape arithmetic,
        # which is what makes H and W dynamic here.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", getattr(torch.jit, "TracerWarning", UserWarning))
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(
            generator,
            (example,),
            str(path),
            opset_version=opset,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": dims, "output": dims},
            do_constant_folding=True,
            dynamo=False,
        )


def load_onnx_weights(generator: torch.nn.Module, path: Path) -> int:
    """Set `generator`'s parameters from the ONNX file `export_onnx` wrote for the same
    architecture (its initializers keep the parameter names, under "inner." where it was
    exported inside `GuidedUpsampled`): the start of a fine-tuning run from a shipped model,
    whose torch checkpoint is not shipped, or of a re-export. Returns how many tensors were
    loaded; raises ValueError naming the first parameter the file lacks or shapes differently."""
    import onnx  # noqa: PLC0415 - the train extra
    from onnx import numpy_helper  # noqa: PLC0415

    tensors = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    loaded = 0
    with torch.no_grad():
        for name, param in generator.named_parameters():
            # A model exported inside `GuidedUpsampled` keeps its own names under "inner.": load
            # either into a bare generator or into a wrapped one.
            value = tensors.get(name)
            if value is None:
                value = tensors.get(
                    f"{GUIDED_PREFIX}{name}", tensors.get(name.removeprefix(GUIDED_PREFIX))
                )
            if value is None:
                raise ValueError(f"{path}: no weights for {name!r} (another architecture?)")
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(
                    f"{path}: {name!r} is {tuple(value.shape)}, the generator's is "
                    f"{tuple(param.shape)}"
                )
            param.copy_(torch.from_numpy(np.array(value, dtype=np.float32)))
            loaded += 1
    return loaded


def check_onnx(
    generator: Generator,
    path: Path,
    images: list[np.ndarray] | None = None,
    tolerance: float = 1e-4,
) -> float:
    """Run the ONNX file with onnxruntime and the generator with PyTorch on the same inputs (at
    several sizes, so dynamic H/W is exercised) and return the largest absolute difference.
    Raises `ExportError` when the graph is invalid or the difference exceeds `tolerance`."""
    import onnx  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415

    model = onnx.load(str(path))
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(path, f"invalid ONNX: {exc}") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    s = generator.stride
    rng = np.random.default_rng(0)
    inputs = [
        rng.random((1, 3, 8 * s, 12 * s), dtype=np.float32),
        rng.random((2, 3, 12 * s, 8 * s), dtype=np.float32),
    ]
    for image in images or []:
        h, w = (image.shape[0] // s) * s, (image.shape[1] // s) * s
        x = image[:h, :w].astype(np.float32).transpose(2, 0, 1)[None] / np.float32(255.0)
        inputs.append(np.ascontiguousarray(x))
    worst = 0.0
    generator.eval()
    for x in inputs:
        (onnx_out,) = session.run(None, {"input": x})
        with torch.inference_mode():
            torch_out = generator(torch.from_numpy(x)).numpy()
        if onnx_out.shape != torch_out.shape:
            raise ExportError(path, f"output shape {onnx_out.shape} != PyTorch {torch_out.shape}")
        worst = max(worst, float(np.abs(onnx_out - torch_out).max()))
    if worst > tolerance:
        raise ExportError(path, f"onnxruntime differs from PyTorch by {worst:.2e}", worst)
    return worst


@dataclass(frozen=True, slots=True)
class ManifestInfo:
    name: str
    version: str
    task: Task
    stride: int
    opset: int
    training: dict[str, Any]
    metrics: dict[str, float]


def min_size(stride: int) -> int:
    """Smallest side the runtime pads to: 16 rounded up to a multiple of the stride."""
    return math.ceil(16 / stride) * stride


def build(model_dir: Path, info: ManifestInfo) -> Manifest:
    """The runtime's manifest (`vehicle_agent.enhance.manifest`) for `model_dir/model.onnx`:
    what the vehicle validates is exactly what we write."""
    return build_manifest(
        model_dir / MODEL_FILE,
        name=info.name,
        version=info.version,
        task=info.task,
        opset=info.opset,
        training=info.training,
        input_spec=InputSpec(
            layout="NCHW",
            color="RGB",
            range=(0.0, 1.0),
            dtype="float32",
            dynamic_hw=True,
            stride=info.stride,
            min_size=min_size(info.stride),
        ),
        output_spec=OutputSpec(
            layout="NCHW", color="RGB", range=(0.0, 1.0), dtype="float32", dynamic_hw=True
        ),
        metrics=info.metrics,
        created=datetime.now(UTC).replace(microsecond=0),
    )


def write_manifest(model_dir: Path, info: ManifestInfo) -> Manifest:
    manifest = build(model_dir, info)
    write_runtime_manifest(model_dir, manifest)
    return manifest
