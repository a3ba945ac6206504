"""Analyze stage, TensorRT runtime of the soiling network: a cached FP16/FP32 engine on the GPU.

The engine is built once from the verified ONNX file with one optimisation profile covering the
feature sizes the detector makes (the network width fixed, heights from 4:3 to 21:9), and cached
beside the enhancer's engines with the same key (`vehicle_agent.enhance.engine_cache`: model
sha256, TensorRT version, GPU, precision, profile). tensorrt and pycuda come from the enhancer's
TensorRT backend, which imports them; `soilnet_runtime.open_tile_net` turns its ImportError
into `DetectorUnavailableError`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vehicle_agent.enhance.engine_cache import EngineKey, Shape, decide, store
from vehicle_agent.enhance.tensorrt_backend import cuda, parse_onnx, trt
from vehicle_agent.quality.soilnet import CHANNELS, CLASSES, TILE
from vehicle_agent.quality.soilnet_runtime import DetectorError, DetectorModel

logger = logging.getLogger(__name__)


def _profile(net_width: int) -> tuple[Shape, Shape, Shape]:
    def rows(aspect: float) -> int:
        return max(4, round(net_width / aspect / TILE)) * TILE

    return (
        (1, CHANNELS, rows(21 / 9), net_width),
        (1, CHANNELS, rows(16 / 9), net_width),
        (1, CHANNELS, rows(4 / 3), net_width),
    )


class TensorRtTileNet:
    """The soiling network as a TensorRT engine; call it like any `TileNet`."""

    def __init__(
        self,
        model: DetectorModel,
        cache_dir: Path | None = None,
        device: int = 0,
        fp16: bool = True,
    ) -> None:
        cuda.init()
        self._ctx = cuda.Device(device).retain_primary_context()
        gpu = cuda.Device(device)
        major, minor = gpu.compute_capability()
        precision = "fp16" if fp16 else "fp32"
        profile = _profile(model.manifest.net_width)
        key = EngineKey(
            model.manifest.sha256, str(trt.__version__), str(gpu.name()), f"{major}.{minor}",
            precision, profile,
        )  # fmt: skip
        cache = cache_dir or model.directory / ".engines"
        decision = decide(cache, model.manifest.name, key)
        self._ctx.push()
        try:
            if decision.action == "use":
                serialized = decision.engine.read_bytes()
            else:
                logger.info("tensorrt: building the soiling engine: %s", decision.reason)
                serialized = self._build(model, profile, fp16)
                store(decision, key, serialized)
            log = trt.Logger(trt.Logger.WARNING)
            self._engine = trt.Runtime(log).deserialize_cuda_engine(serialized)
            if self._engine is None:
                raise DetectorError(f"{model.manifest.label}: the engine does not load")
            self._context = self._engine.create_execution_context()
            self._input = self._engine.get_tensor_name(0)
            self._output = self._engine.get_tensor_name(1)
            biggest = profile[2]
            out_count = len(CLASSES) * (biggest[2] // TILE) * (biggest[3] // TILE)
            self._host_in = cuda.pagelocked_empty(int(np.prod(biggest)), np.float32)
            self._host_out = cuda.pagelocked_empty(out_count, np.float32)
            self._dev_in = cuda.mem_alloc(self._host_in.nbytes)
            self._dev_out = cuda.mem_alloc(self._host_out.nbytes)
            self._context.set_tensor_address(self._input, int(self._dev_in))
            self._context.set_tensor_address(self._output, int(self._dev_out))
            self._stream = cuda.Stream()
        finally:
            self._ctx.pop()
        self.label = model.manifest.label
        self.cache_status = "hit" if decision.action == "use" else f"built ({decision.reason})"

    @staticmethod
    def _build(model: DetectorModel, profile: tuple[Shape, Shape, Shape], fp16: bool) -> bytes:
        builder, network, _parser = parse_onnx(
            model.onnx_path, lambda message: DetectorError(f"{model.manifest.label}: {message}")
        )
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 256 << 20)
        opt = builder.create_optimization_profile()
        opt.set_shape(network.get_input(0).name, *profile)
        config.add_optimization_profile(opt)
        # TensorRT 11 drops the FP16 flag (strongly typed networks); 10.x still has it.
        if fp16 and hasattr(trt.BuilderFlag, "FP16"):
            config.set_flag(trt.BuilderFlag.FP16)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise DetectorError(f"{model.manifest.label}: engine build failed")
        return bytes(serialized)

    def __call__(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        shape = tuple(int(d) for d in features.shape)
        count = int(np.prod(shape))
        if count > self._host_in.size:
            raise DetectorError(f"features {shape} exceed the engine's profile")
        self._ctx.push()
        try:
            host_in = self._host_in[:count].reshape(shape)
            np.copyto(host_in, features)
            self._context.set_input_shape(self._input, shape)
            cuda.memcpy_htod_async(self._dev_in, host_in, self._stream)
            if not self._context.execute_async_v3(self._stream.handle):
                raise DetectorError("TensorRT execution failed")
            out_shape = tuple(int(d) for d in self._context.get_tensor_shape(self._output))
            host_out = self._host_out[: int(np.prod(out_shape))].reshape(out_shape)
            cuda.memcpy_dtoh_async(host_out, self._dev_out, self._stream)
            self._stream.synchronize()
            return np.array(host_out, np.float32)
        finally:
            self._ctx.pop()
