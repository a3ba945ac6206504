"""Analyze stage: the soiling network's model folder (manifest) and its runtimes.

A detector model is a folder like an enhancer's (`models/soilnet/`: `model.onnx`,
`manifest.json`, `MODEL_CARD.md`), with its own manifest schema (`SoilNetManifest`): the feature
version and input width it was trained with, its classes and output stride, and the decision
thresholds training calibrated. The sha256 is checked before the file is opened.

Runtimes are the enhancer's: onnxruntime (session options and providers from
`vehicle_agent.enhance.onnxruntime_backend`) and TensorRT (`vehicle_agent.enhance.tensorrt_backend`
builds and caches the engine, keyed like an enhancer's). Each is imported only when asked for, and
a missing library is `DetectorUnavailableError` with the reason, so the monitor can fall back
to the classical detector and say why.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vehicle_agent.enhance.manifest import MANIFEST_FILE, NAME_PATTERN, sha256_file
from vehicle_agent.quality.soilnet import CHANNELS, CLASSES, FEATURE_VERSION, TILE, TileNet

logger = logging.getLogger(__name__)

DEFAULT_DETECTOR = "soilnet"
Runtime = Literal["onnxruntime", "tensorrt"]


class DetectorError(Exception):
    """A detector model that cannot be found, verified or run; the message says which and why."""


class DetectorUnavailableError(DetectorError):
    """The runtime asked for is not available here (library or hardware absent)."""


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    on: float = Field(
        ge=0.05,
        le=0.999,
        description="Smoothed soiling probability: tile soiled (the calibration goes to 0.999).",
    )
    off: float = Field(ge=0.01, le=0.99, description="...and clean again below this.")


class SoilNetManifest(BaseModel):
    """`models/<name>/manifest.json` of a soiling detector."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=r"^[0-9]+(\.[0-9]+){0,2}([-+][0-9A-Za-z.-]+)?$")
    kind: Literal["soiling-detector"] = "soiling-detector"
    file: str = Field("model.onnx", pattern=r"^[A-Za-z0-9._-]+\.onnx$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    feature_version: int = Field(ge=1, description="`SoilFeatures` version it was trained on.")
    channels: int = Field(ge=1, le=64)
    net_width: int = Field(ge=32, le=1024, description="Input width the features are made at.")
    tile: int = Field(ge=1, le=64, description="Output stride: input pixels per tile side.")
    classes: tuple[str, ...]
    decision: Decision
    opset: int = Field(ge=7, le=30)
    training: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    created: datetime

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True, slots=True)
class DetectorModel:
    directory: Path
    manifest: SoilNetManifest
    onnx_path: Path


def read_detector(directory: Path) -> DetectorModel:
    """Read and verify a detector folder: schema, compatibility with this code, sha256."""
    path = directory / MANIFEST_FILE
    try:
        manifest = SoilNetManifest.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise DetectorError(f"{path}: no manifest") from None
    except (json.JSONDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()[0:3]
        raise DetectorError(f"{path}: invalid manifest: {' '.join(first)}") from None
    problems = []
    if manifest.feature_version != FEATURE_VERSION:
        problems.append(
            f"trained on features v{manifest.feature_version}, this code makes v{FEATURE_VERSION}"
        )
    if manifest.channels != CHANNELS:
        problems.append(f"{manifest.channels} input channels, expected {CHANNELS}")
    if manifest.tile != TILE:
        problems.append(f"output stride {manifest.tile}, expected {TILE}")
    if tuple(manifest.classes) != CLASSES:
        problems.append(f"classes {manifest.classes}, expected {CLASSES}")
    if manifest.decision.off > manifest.decision.on:
        problems.append("decision.off is above decision.on")
    if manifest.net_width % TILE:
        problems.append(f"net_width {manifest.net_width} is not a multiple of {TILE}")
    if problems:
        raise DetectorError(f"{path}: " + "; ".join(problems))
    onnx_path = directory / manifest.file
    if not onnx_path.is_file():
        raise DetectorError(f"{onnx_path}: missing")
    digest = sha256_file(onnx_path)
    if digest != manifest.sha256:
        raise DetectorError(f"{onnx_path}: sha256 {digest[:12]}… does not match the manifest")
    return DetectorModel(directory, manifest, onnx_path)


def find_detector(name: str, dirs: Sequence[Path]) -> DetectorModel:
    """The detector called `name` in the first folder that has it."""
    for root in dirs:
        if (root / name / MANIFEST_FILE).is_file():
            return read_detector(root / name)
    raise DetectorError(f"detector model {name!r} not found in {', '.join(map(str, dirs))}")


class OnnxTileNet:
    """The network on onnxruntime (CPU here, CUDA where the provider exists)."""

    def __init__(self, model: DetectorModel, threads: int = 1, device: str = "cpu") -> None:
        try:
            backend = importlib.import_module("vehicle_agent.enhance.onnxruntime_backend")
            ort = backend._import_ort()
        except ImportError as exc:
            raise DetectorUnavailableError(f"onnxruntime not importable: {exc}") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = backend.providers_for(device, list(ort.get_available_providers()))
        try:
            self._session = ort.InferenceSession(str(model.onnx_path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own types for bad files
            raise DetectorError(f"{model.manifest.label}: cannot load: {exc}") from exc
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or (inputs[0].shape[1] not in (CHANNELS, None, "channels")):
            raise DetectorError(
                f"{model.manifest.label}: expected one input of {CHANNELS} channels"
            )
        self._input = inputs[0].name
        self.label = model.manifest.label

    def __call__(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out = self._session.run(None, {self._input: np.ascontiguousarray(features, np.float32)})
        return np.asarray(out[0], np.float32)


def open_tile_net(
    model: DetectorModel, runtime: Runtime = "onnxruntime", threads: int = 1, **options: Any
) -> TileNet:
    """A callable running the detector network on `runtime`; warmed up once."""
    net: TileNet
    if runtime == "onnxruntime":
        net = OnnxTileNet(model, threads=threads, device=str(options.get("device", "cpu")))
    elif runtime == "tensorrt":
        try:
            module = importlib.import_module("vehicle_agent.quality.soilnet_tensorrt")
        except ImportError as exc:  # the TensorRT backend's: "tensorrt not importable: …"
            raise DetectorUnavailableError(str(exc)) from exc
        net = module.TensorRtTileNet(model, **options)
    else:
        raise DetectorError(f"unknown runtime {runtime!r}")
    rows = max(4, round(model.manifest.net_width * 9 / 16 / TILE))
    net(np.zeros((1, CHANNELS, rows * TILE, model.manifest.net_width), np.float32))
    return net
