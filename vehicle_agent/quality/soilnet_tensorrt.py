"""Analyze stage, TensorRT runtime of the soiling network: a cached FP16/FP32 engine on the GPU.

The engine is built once from the verified ONNX file with one optimisation profile covering the
feature sizes the detector makes (the network width fixed, heights from 4:3 to 21:9), and cached
beside the enhancer's engines with the same key and per-version layout
(`vehicle_agent.enhance.engine_cache`). tensorrt, pycuda, the process's one TensorRT logger, the
build flags for this TensorRT version and the I/O plan come from the enhancer's TensorRT backend
(`tensorrt_backend`, `tensorrt_plan`): every output is bound in its own dtype, and the primary
context and buffers are freed by `close()` (or when the net is dropped). The backend's
ImportError becomes `DetectorUnavailableError` in `soilnet_runtime.open_tile_net`.
"""

from __future__ import annotations

import logging
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vehicle_agent.enhance.base import BackendUnavailableError, EnhancerError
from vehicle_agent.enhance.engine_cache import EngineKey, Shape, decide, mark_used, store
from vehicle_agent.enhance.tensorrt_backend import (
    TENSORRT_VERSION,
    TRT_LOGGER,
    build_flags,
    configure_builder,
    cuda,
    parse_onnx,
    trt,
)
from vehicle_agent.enhance.tensorrt_plan import (
    BuildFlags,
    IoBindings,
    PlanError,
    PrimaryContext,
    describe_io,
)
from vehicle_agent.quality.soilnet import CHANNELS, TILE
from vehicle_agent.quality.soilnet_runtime import (
    DetectorError,
    DetectorModel,
    DetectorUnavailableError,
)

logger = logging.getLogger(__name__)

WORKSPACE_MB = 256


def _profile(net_width: int) -> tuple[Shape, Shape, Shape]:
    def rows(aspect: float) -> int:
        return max(4, round(net_width / aspect / TILE)) * TILE

    return (
        (1, CHANNELS, rows(21 / 9), net_width),
        (1, CHANNELS, rows(16 / 9), net_width),
        (1, CHANNELS, rows(4 / 3), net_width),
    )


class _Resources:
    """What the net holds on the GPU, released once (by `close` or when the net is dropped)."""

    def __init__(self, gpu: PrimaryContext) -> None:
        self.gpu = gpu
        self.runtime: Any = None
        self.engine: Any = None
        self.context: Any = None
        self.io: IoBindings | None = None

    def release(self) -> None:
        def free() -> None:
            io, self.io = self.io, None
            if io is not None:
                io.free()
            self.context = None
            self.engine = None
            self.runtime = None

        self.gpu.close(free)


class TensorRtTileNet:
    """The soiling network as a TensorRT engine; call it like any `TileNet`."""

    def __init__(
        self,
        model: DetectorModel,
        cache_dir: Path | None = None,
        device: int = 0,
        fp16: bool = True,
    ) -> None:
        label = model.manifest.label
        try:
            gpu = PrimaryContext(cuda, device)
        except BackendUnavailableError as exc:
            raise DetectorUnavailableError(f"{label}: {exc.reason}") from exc
        self._res = _Resources(gpu)
        self._finalizer = weakref.finalize(self, self._res.release)
        self._finalizer.atexit = False  # at exit the driver frees everything itself
        try:
            precision = "fp16" if fp16 else "fp32"
            flags = build_flags(precision)
            profile = _profile(model.manifest.net_width)
            key = EngineKey(
                model_name=model.manifest.name,
                model_version=model.manifest.version,
                model_sha256=model.manifest.sha256,
                tensorrt_version=TENSORRT_VERSION,
                gpu_name=gpu.name,
                compute_capability=gpu.compute_capability,
                precision=precision,
                network=flags.describe(),
                workspace_mb=WORKSPACE_MB,
                profile=profile,
            )
            decision = decide(cache_dir or model.directory / ".engines", key)
            with gpu:
                if decision.action == "use":
                    serialized = decision.engine.read_bytes()
                    mark_used(decision)
                else:
                    logger.info("tensorrt: building the soiling engine: %s", decision.reason)
                    serialized = self._build(model, key, flags)
                    store(decision, key, serialized)
                self._open(serialized, profile, label)
        except BaseException as exc:
            self.close()
            if isinstance(exc, BackendUnavailableError):
                raise DetectorUnavailableError(f"{label}: {exc.reason}") from exc
            if isinstance(exc, (PlanError, EnhancerError)):
                raise DetectorError(f"{label}: {exc}") from exc
            raise
        self.label = label
        self.cache_status = "hit" if decision.action == "use" else f"built ({decision.reason})"

    def _open(self, serialized: bytes, profile: tuple[Shape, Shape, Shape], label: str) -> None:
        res = self._res
        res.runtime = trt.Runtime(TRT_LOGGER)
        res.engine = res.runtime.deserialize_cuda_engine(serialized)
        if res.engine is None:
            raise DetectorError(f"{label}: the engine does not load")
        res.context = res.engine.create_execution_context()
        specs = describe_io(res.engine, input_mode=trt.TensorIOMode.INPUT, nptype=trt.nptype)
        inputs = [s.name for s in specs if s.is_input]
        outputs = [s.name for s in specs if not s.is_input]
        if len(inputs) != 1 or not outputs:
            raise DetectorError(
                f"{label}: expected one input and an output, has {inputs} {outputs}"
            )
        res.io = IoBindings(
            cuda,
            res.engine,
            res.context,
            {inputs[0]: profile[2]},
            input_mode=trt.TensorIOMode.INPUT,
            nptype=trt.nptype,
        )
        self._input, self._output = inputs[0], outputs[0]

    @staticmethod
    def _build(model: DetectorModel, key: EngineKey, flags: BuildFlags) -> bytes:
        def fail(message: str) -> DetectorError:
            return DetectorError(f"{model.manifest.label}: {message}")

        builder, network, _parser = parse_onnx(
            model.onnx_path, fail, strongly_typed=flags.strongly_typed
        )
        config, _ = configure_builder(
            builder, network, flags=flags, workspace_mb=WORKSPACE_MB, profile=key.profile, fail=fail
        )
        for note in flags.notes:
            logger.info("tensorrt: soiling engine: %s", note)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise fail("engine build failed")
        return bytes(serialized)

    def __call__(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        res = self._res
        if res.io is None or res.gpu.closed:
            raise DetectorError("the TensorRT soiling net is closed")
        io = res.io
        shape = tuple(int(d) for d in features.shape)

        def fill(views: dict[str, npt.NDArray[Any]]) -> None:
            np.copyto(views[self._input], features, casting="same_kind")

        with res.gpu:
            try:
                outputs = io.run({self._input: shape}, fill)
            except PlanError as exc:
                raise DetectorError(f"{self.label}: {exc}") from exc
            # A copy in float32 whatever the engine's output type (an FP16 network's).
            return np.array(outputs[self._output], np.float32)

    def close(self) -> None:
        """Free the buffers and the engine, release the primary context; idempotent."""
        self._finalizer()
