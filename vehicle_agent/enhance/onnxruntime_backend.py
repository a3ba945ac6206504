"""Enhance stage backend `onnxruntime`: the model on onnxruntime's CUDA provider when present, else CPU.

onnxruntime is imported only here (and only when the backend is chosen); it has no type stubs,
so the session is wrapped in the few typed calls the backend needs.
"""

from __future__ import annotations

import importlib
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from vehicle_agent.config_base import ConfigModel
from vehicle_agent.enhance.base import BackendPlugin, BackendUnavailableError, EnhancerError
from vehicle_agent.enhance.model import ModelEnhancer, TensorInfo
from vehicle_agent.enhance.prepost import Tensor
from vehicle_agent.enhance.store import ModelRef


class OnnxRuntimeEnhancerConfig(ConfigModel):
    type: Literal["onnxruntime"] = Field(
        "onnxruntime",
        description="The model run by onnxruntime: CUDA provider when present, else the CPU.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="'auto': the CUDA provider when onnxruntime has it, else the CPU; 'cuda' "
        "makes a missing CUDA provider a load failure (the chain falls back).",
    )
    intra_op_threads: int = Field(
        2,
        ge=0,
        le=64,
        description="Threads one operator may use; 0 lets onnxruntime take one per core.",
    )
    inter_op_threads: int = Field(
        1, ge=1, le=64, description="Operators run in parallel (1: sequential, the usual best)."
    )
    allow_spinning: bool = Field(
        default=False,
        description="Let idle worker threads spin: lower latency, but they burn cores that "
        "capture and analysis share.",
    )


_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
}


def _import_ort() -> Any:
    try:
        return importlib.import_module("onnxruntime")
    except ImportError as exc:
        raise BackendUnavailableError("onnxruntime", f"onnxruntime not importable: {exc}") from exc


def providers_for(device: str, available: list[str]) -> list[str]:
    """Execution providers to ask for: CUDA first when wanted and present, CPU as the floor."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise BackendUnavailableError(
            "onnxruntime",
            f"no CUDA execution provider in this onnxruntime (has {', '.join(available)})",
        )
    return ["CPUExecutionProvider"]


def _info(arg: Any) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in arg.shape)
    return TensorInfo(str(arg.name), shape, _ORT_TYPES.get(str(arg.type), str(arg.type)))


class OnnxRuntimeEnhancer(ModelEnhancer):
    backend = "onnxruntime"

    def __init__(
        self,
        config: OnnxRuntimeEnhancerConfig | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(config or OnnxRuntimeEnhancerConfig(), **kwargs)
        self.settings: OnnxRuntimeEnhancerConfig = self.config
        self._session: Any = None
        self._input = ""
        self._output = ""
        self.providers: list[str] = []

    def _open(self, model: ModelRef) -> tuple[list[TensorInfo], list[TensorInfo]]:
        ort = _import_ort()
        cfg = self.settings
        options = ort.SessionOptions()
        options.intra_op_num_threads = cfg.intra_op_threads
        options.inter_op_num_threads = cfg.inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        spin = "1" if cfg.allow_spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        providers = providers_for(cfg.device, list(ort.get_available_providers()))
        try:
            self._session = ort.InferenceSession(str(model.onnx_path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for bad models
            raise EnhancerError(self.backend, f"{model.label}: cannot load: {exc}") from exc
        self.providers = list(self._session.get_providers())
        inputs = [_info(a) for a in self._session.get_inputs()]
        outputs = [_info(a) for a in self._session.get_outputs()]
        if inputs and outputs:
            self._input, self._output = inputs[0].name, outputs[0].name
        return inputs, outputs

    def infer(self, tensor: Tensor) -> npt.NDArray[np.generic]:
        if self._session is None:
            raise EnhancerError(self.name, "enhance() before load()")
        result = self._session.run([self._output], {self._input: tensor})
        return np.asarray(result[0])

    def close(self) -> None:
        self._session = None


PLUGIN = BackendPlugin(
    "onnxruntime",
    OnnxRuntimeEnhancerConfig,
    "vehicle_agent.enhance.onnxruntime_backend:OnnxRuntimeEnhancer",
    runs_model=True,
    preference=1,
)
