"""Tiny ONNX models written by the tests themselves, and scripted backends that fail on demand."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from vehicle_agent.enhance.base import Enhancer, create_enhancer
from vehicle_agent.enhance.manifest import InputSpec, OutputSpec, build_manifest, write_manifest
from vehicle_agent.enhance.model import ModelEnhancer, TensorInfo
from vehicle_agent.enhance.prepost import Tensor
from vehicle_agent.enhance.store import ModelRef
from vehicle_agent.records import Image

# y = W·x + b per pixel (a 1×1 convolution): easy to compute with numpy as a reference.
WEIGHTS = np.array([[0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.0, 0.2, 0.7]], np.float32)
BIAS = np.array([0.05, 0.0, 0.1], np.float32)


def conv_model(
    path: Path,
    weights: npt.NDArray[np.float32] = WEIGHTS,
    bias: npt.NDArray[np.float32] = BIAS,
    *,
    in_channels: int = 3,
    fixed_hw: tuple[int, int] | None = None,
) -> Path:
    """A 1×1 convolution model with dynamic H and W (or fixed ones), opset 17."""
    h, w = fixed_hw if fixed_hw is not None else ("h", "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, in_channels, h, w])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, h, w])
    kernel = np.zeros((3, in_channels, 1, 1), np.float32)
    kernel[:, :, 0, 0] = weights[:, :in_channels]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W", "B"], ["y"])],
        "tiny",
        [x],
        [y],
        [numpy_helper.from_array(kernel, "W"), numpy_helper.from_array(bias, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def reference(image: Image, weights: npt.NDArray[np.float32] = WEIGHTS) -> Image:
    """What the conv model does to a BGR frame (the model works in RGB, range 0–1)."""
    rgb = image[:, :, ::-1].astype(np.float32) / 255.0
    out = rgb @ weights.T + BIAS
    return np.asarray(np.clip(out * 255.0 + 0.5, 0, 255), np.uint8)[:, :, ::-1]


def model_dir(
    root: Path,
    name: str = "tiny",
    version: str = "1.0.0",
    *,
    task: str = "low_light",
    input_spec: InputSpec | None = None,
    **conv: Any,
) -> Path:
    """`root/<name>/` with model.onnx, manifest.json and a model card, as training writes it."""
    directory = root / name
    onnx_path = conv_model(directory / "model.onnx", **conv)
    manifest = build_manifest(
        onnx_path,
        name=name,
        version=version,
        task=task,
        opset=17,
        training={"data": "none (test)", "seed": 0, "command": "pytest", "architecture": "conv1x1"},
        input_spec=input_spec or InputSpec(stride=8, min_size=8),
        output_spec=OutputSpec(),
        metrics={"psnr": 0.0},
    )
    write_manifest(directory, manifest)
    (directory / "MODEL_CARD.md").write_text(f"# {name}\n\nTest model.\n")
    return directory


def frame(seed: int = 0, size: tuple[int, int] = (45, 61)) -> Image:
    """A textured frame of odd size (so padding to the stride is exercised)."""
    rng = np.random.default_rng(seed)
    return rng.integers(20, 230, (*size, 3), dtype=np.uint8)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Script:
    """What scripted backends do now: 'ok', 'raise', 'nan', 'blank' or 'slow'."""

    mode: str = "ok"
    load_fails: bool = False
    clock: FakeClock | None = None
    slow_s: float = 0.5
    calls: int = 0
    loads: int = 0
    hold: threading.Event | None = None
    """When set, loads wait for it (a slow load, e.g. an engine build)."""


@dataclass(frozen=True)
class ScriptedConfig:
    script: Script
    type: str = "scripted"
    gain: float = field(default=0.5)


class ScriptedEnhancer(ModelEnhancer):
    """A model backend (shared pre/post, real manifest checks) whose inference follows a script:
    'ok' halves the picture (so its frames are recognisable), the others fail as named."""

    backend = "scripted"

    def __init__(self, config: ScriptedConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.script = config.script
        self.gain = config.gain

    def _open(self, model: ModelRef) -> tuple[list[TensorInfo], list[TensorInfo]]:
        del model  # verified by the store; the script decides what inference does
        self.script.loads += 1
        if self.script.hold is not None:
            self.script.hold.wait(10)
        if self.script.load_fails:
            raise RuntimeError("engine deserialisation failed")
        info = TensorInfo("x", (1, 3, None, None), "float32")
        return [info], [TensorInfo("y", info.shape, "float32")]

    def infer(self, tensor: Tensor) -> npt.NDArray[np.generic]:
        self.script.calls += 1
        mode = self.script.mode
        if mode == "raise":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if mode == "nan":
            return np.full_like(tensor, np.nan)
        if mode == "blank":
            return np.zeros_like(tensor)
        if mode == "slow" and self.script.clock is not None:
            self.script.clock.advance(self.script.slow_s)
        return tensor * self.gain


@dataclass
class Builder:
    """What a scripted backend's one-time preparation (its 'engine build') does."""

    needed: bool = True
    fails: bool = False
    hold: threading.Event | None = None
    """When set, preparations wait for it (or for their cancel)."""
    builds: int = 0
    cancelled: int = 0


@dataclass(frozen=True)
class PreparedConfig:
    script: Script
    builder: Builder
    type: str = "prepared"
    gain: float = field(default=0.5)


class PreparedScriptedEnhancer(ScriptedEnhancer):
    """A scripted backend that is a `PreparedEnhancer`: like TensorRT, its first load needs a
    build, which succeeds or fails as its `Builder` says."""

    backend = "prepared"

    def __init__(self, config: PreparedConfig, **kwargs: Any) -> None:
        super().__init__(ScriptedConfig(config.script, gain=config.gain), **kwargs)
        self.builder = config.builder

    def preparation_needed(self) -> str | None:
        return "engine build (no cached engine)" if self.builder.needed else None

    def prepare(self, cancel: threading.Event) -> None:
        builder = self.builder
        if not builder.needed:
            return
        builder.builds += 1
        if builder.hold is not None:
            while not builder.hold.wait(0.01):
                if cancel.is_set():
                    builder.cancelled += 1
                    raise RuntimeError("engine build cancelled")
        if builder.fails:
            raise RuntimeError("engine build failed: out of memory")
        builder.needed = False

    def load(self) -> None:
        self.prepare(threading.Event())  # as TensorRT's load builds when nothing is cached
        super().load()


def factory(config: Any, **context: Any) -> Enhancer:
    """The registry, plus the scripted backends."""
    if isinstance(config, PreparedConfig):
        return PreparedScriptedEnhancer(config, **context)
    if isinstance(config, ScriptedConfig):
        return ScriptedEnhancer(config, **context)
    return create_enhancer(config, **context)


def halved(image: Image) -> Image:
    """What ScriptedEnhancer's 'ok' mode gives (gain 0.5 through the shared pre/post)."""
    return np.asarray(np.clip(image.astype(np.float32) * 0.5 + 0.5, 0, 255), np.uint8)
