"""Enhance stage backend `tensorrt`: the model as a cached TensorRT engine, on the vehicle's GPU.

The engine is built from the verified ONNX file (FP32, FP16, or INT8 calibrated on a folder of
frames), cached under `<state_dir>/engines` with the key that `engine_cache` checks (model
sha256, TensorRT version, GPU and compute capability, precision, shape profile) and rebuilt on
any mismatch. Frames go through page-locked host buffers and one CUDA stream; the CUDA context
is the device's primary context, pushed around each call, so loading on one thread and running
on the enhance thread is safe. tensorrt and pycuda are imported only here: without them the
registry reports "backend unavailable: tensorrt not importable: …".
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from vehicle_agent.config import TensorRtEnhancerConfig
from vehicle_agent.enhance.base import BackendUnavailableError, EnhancerError
from vehicle_agent.enhance.engine_cache import (
    CacheDecision,
    EngineKey,
    Shape,
    decide,
    profile_for,
    store,
)
from vehicle_agent.enhance.model import ModelEnhancer, TensorInfo
from vehicle_agent.enhance.prepost import Crop, Preprocessor, Tensor
from vehicle_agent.enhance.store import ModelRef
from vehicle_agent.records import Image

try:
    trt: Any = importlib.import_module("tensorrt")
    cuda: Any = importlib.import_module("pycuda.driver")
except ImportError as _exc:  # the registry turns this into "backend unavailable: …"
    raise ImportError(f"tensorrt not importable: {_exc}") from _exc

logger = logging.getLogger(__name__)

CALIBRATION_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _trt_logger() -> Any:
    return trt.Logger(trt.Logger.WARNING)


def gpu_identity(device_index: int) -> tuple[str, str]:
    """(name, compute capability 'major.minor') of a CUDA device; initialises the driver."""
    try:
        cuda.init()
        device = cuda.Device(device_index)
    except Exception as exc:  # pycuda raises its own error types when there is no GPU
        raise BackendUnavailableError("tensorrt", f"no CUDA device {device_index}: {exc}") from exc
    major, minor = device.compute_capability()
    return str(device.name()), f"{major}.{minor}"


class EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc]
    """INT8 calibration over a folder of frames, fed through the shared preprocessor."""

    def __init__(self, images: list[Path], pre: Preprocessor, shape: Shape, cache: Path) -> None:
        trt.IInt8EntropyCalibrator2.__init__(self)
        self.images = images
        self.pre = pre
        self.shape = shape
        self.cache = cache
        self.index = 0
        self.host = cuda.pagelocked_empty(shape, np.float32)
        self.device = cuda.mem_alloc(self.host.nbytes)

    def get_batch_size(self) -> int:
        return 1

    def get_batch(self, names: list[str]) -> list[int] | None:
        del names
        while self.index < len(self.images):
            path = self.images[self.index]
            self.index += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                logger.warning("calibration: cannot read %s; skipped", path)
                continue
            height, width = self.shape[2], self.shape[3]
            resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            frame = np.asarray(resized, dtype=np.uint8)
            self.pre.to_tensor(frame, out=self.host)
            cuda.memcpy_htod(self.device, self.host)
            return [int(self.device)]
        return None

    def read_calibration_cache(self) -> bytes | None:
        return self.cache.read_bytes() if self.cache.is_file() else None

    def write_calibration_cache(self, cache: Any) -> None:
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        self.cache.write_bytes(bytes(cache))


def calibration_images(folder: Path, limit: int) -> list[Path]:
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in CALIBRATION_SUFFIXES)
    if not images:
        raise EnhancerError("tensorrt", f"{folder}: no calibration images ({CALIBRATION_SUFFIXES})")
    step = max(1, len(images) // limit)
    return images[::step][:limit]


def parse_onnx(onnx_path: Path, fail: Callable[[str], Exception]) -> tuple[Any, Any, Any]:
    """(builder, network, parser) for an ONNX file; `fail(message)` is raised when the parser
    refuses it. The parser owns the network's weights: keep it until the engine is built."""
    log = _trt_logger()
    builder = trt.Builder(log)
    flags = 0
    if int(str(trt.__version__).split(".", 1)[0]) < 10:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, log)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise fail(f"ONNX parser failed: {errors}")
    return builder, network, parser


def build_serialized_engine(
    model: ModelRef, cfg: TensorRtEnhancerConfig, key: EngineKey, cache_dir: Path
) -> bytes:
    """Parse the ONNX file and build an engine for `key` (minutes on a Jetson)."""
    builder, network, _parser = parse_onnx(
        model.onnx_path, lambda message: EnhancerError("tensorrt", f"{model.label}: {message}")
    )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mb << 20)
    profile = builder.create_optimization_profile()
    input_name = network.get_input(0).name
    min_s, opt_s, max_s = key.profile
    profile.set_shape(input_name, min_s, opt_s, max_s)
    config.add_optimization_profile(profile)
    if cfg.precision in {"fp16", "int8"}:
        if not getattr(builder, "platform_has_fast_fp16", True):
            logger.warning("this GPU has no fast FP16; building %s anyway", cfg.precision)
        config.set_flag(trt.BuilderFlag.FP16)
    calibrator = None
    if cfg.precision == "int8":
        assert cfg.calibration_dir is not None  # noqa: S101 - the config validator requires it
        images = calibration_images(cfg.calibration_dir, cfg.calibration_images)
        calib_cache = cache_dir / f"{model.name}.{model.manifest.sha256[:12]}.calib"
        pre = Preprocessor(model.manifest.input)
        calibrator = EntropyCalibrator(images, pre, opt_s, calib_cache)
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)
    started = time.perf_counter()
    logger.info("tensorrt: building %s %s engine for %s", cfg.precision, key.gpu_name, model.label)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EnhancerError("tensorrt", f"{model.label}: engine build failed (see the log)")
    logger.info("tensorrt: built in %.1f s", time.perf_counter() - started)
    return bytes(serialized)


def engine_for(
    model: ModelRef, cfg: TensorRtEnhancerConfig, cache_dir: Path, *, force: bool = False
) -> tuple[bytes, CacheDecision, EngineKey]:
    """The serialized engine for `model` on this GPU: from the cache, or built and cached."""
    gpu_name, capability = gpu_identity(cfg.device)
    spec = model.manifest.input
    profile = profile_for(
        spec.min_size,
        spec.stride,
        (cfg.opt_height, cfg.opt_width),
        (cfg.max_height, cfg.max_width),
    )
    key = EngineKey(
        model.manifest.sha256, str(trt.__version__), gpu_name, capability, cfg.precision, profile
    )
    decision = decide(cache_dir, model.name, key)
    if force and decision.action == "use":
        decision = CacheDecision("build", "rebuild requested", decision.engine, decision.meta)
    if decision.action == "use":
        return decision.engine.read_bytes(), decision, key
    logger.info("tensorrt: building the engine for %s: %s", model.label, decision.reason)
    device = cuda.Device(cfg.device)
    context = device.retain_primary_context()
    context.push()
    try:
        serialized = build_serialized_engine(model, cfg, key, cache_dir)
    finally:
        context.pop()
    store(decision, key, serialized)
    return serialized, decision, key


def _dims(shape: Any) -> tuple[int | None, ...]:
    return tuple(int(d) if int(d) >= 0 else None for d in shape)


class TensorRtEnhancer(ModelEnhancer):
    backend = "tensorrt"

    def __init__(self, config: TensorRtEnhancerConfig | None = None, **kwargs: Any) -> None:
        super().__init__(config or TensorRtEnhancerConfig(), **kwargs)
        self.settings: TensorRtEnhancerConfig = self.config
        self.warmup_size = (self.settings.opt_height, self.settings.opt_width)
        self.cache_status = ""
        self._ctx: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._buffers: list[Any] = []
        self._host_in: npt.NDArray[np.float32] | None = None
        self._host_out: npt.NDArray[np.float32] | None = None
        self._input = ""
        self._output = ""

    def cache_dir(self) -> Path:
        if self.settings.engine_dir is not None:
            return self.settings.engine_dir
        if self.state_dir is None:
            raise EnhancerError(self.backend, "no engine_dir and no state_dir for the cache")
        return self.state_dir / "engines"

    def _open(self, model: ModelRef) -> tuple[list[TensorInfo], list[TensorInfo]]:
        cfg = self.settings
        serialized, decision, key = engine_for(model, cfg, self.cache_dir())
        self.cache_status = "hit" if decision.action == "use" else f"built ({decision.reason})"
        self._ctx = cuda.Device(cfg.device).retain_primary_context()
        self._ctx.push()
        try:
            runtime = trt.Runtime(_trt_logger())
            self._engine = runtime.deserialize_cuda_engine(serialized)
            if self._engine is None:
                raise EnhancerError(self.backend, f"{model.label}: cached engine does not load")
            self._context = self._engine.create_execution_context()
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            mode = trt.TensorIOMode.INPUT
            inputs: list[TensorInfo] = []
            outputs: list[TensorInfo] = []
            for name in names:
                info = TensorInfo(
                    name,
                    _dims(self._engine.get_tensor_shape(name)),
                    np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))).name,
                )
                (inputs if self._engine.get_tensor_mode(name) == mode else outputs).append(info)
            if len(inputs) == 1 and outputs:
                self._allocate(inputs[0].name, outputs[0].name, key.profile[2])
            return inputs, outputs
        finally:
            self._ctx.pop()

    def _allocate(self, input_name: str, output_name: str, max_shape: Shape) -> None:
        """Page-locked host and device buffers for the largest frame, bound once."""
        self._input, self._output = input_name, output_name
        self._host_in = cuda.pagelocked_empty(int(np.prod(max_shape)), np.float32)
        self._host_out = cuda.pagelocked_empty(int(np.prod(max_shape)), np.float32)
        assert self._host_in is not None  # noqa: S101 - narrows for mypy
        assert self._host_out is not None  # noqa: S101
        dev_in = cuda.mem_alloc(self._host_in.nbytes)
        dev_out = cuda.mem_alloc(self._host_out.nbytes)
        self._buffers = [dev_in, dev_out]
        self._context.set_tensor_address(input_name, int(dev_in))
        self._context.set_tensor_address(output_name, int(dev_out))
        self._stream = cuda.Stream()

    def _run(self, fill: Any, shape: Shape) -> npt.NDArray[np.float32]:
        """Copy in (via `fill`, writing the page-locked input), execute, copy out; one stream."""
        if self._host_in is None or self._host_out is None or self._context is None:
            raise EnhancerError(self.name, "enhance() before load()")
        count = int(np.prod(shape))
        if count > self._host_in.size:
            raise EnhancerError(
                self.name, f"input {shape} exceeds the engine's largest profile; raise max_*"
            )
        self._ctx.push()
        try:
            host_in = self._host_in[:count].reshape(shape)
            fill(host_in)
            self._context.set_input_shape(self._input, shape)
            dev_in, dev_out = self._buffers
            cuda.memcpy_htod_async(dev_in, host_in, self._stream)
            if not self._context.execute_async_v3(self._stream.handle):
                raise EnhancerError(self.name, "TensorRT execution failed")
            out_shape = tuple(int(d) for d in self._context.get_tensor_shape(self._output))
            host_out = self._host_out[: int(np.prod(out_shape))].reshape(out_shape)
            cuda.memcpy_dtoh_async(host_out, dev_out, self._stream)
            self._stream.synchronize()
            return host_out
        finally:
            self._ctx.pop()

    def infer(self, tensor: Tensor) -> npt.NDArray[np.generic]:
        def fill(host: npt.NDArray[np.float32]) -> None:
            np.copyto(host, tensor)

        shape: Shape = tensor.shape
        out: npt.NDArray[np.generic] = self._run(
            fill, shape
        ).copy()  # annotated: numpy's stubs, see [tool.mypy]
        return out

    def _enhance(self, image: Image) -> Image:
        # The preprocessor writes straight into the page-locked buffer: no intermediate copy.
        if self.pre is None or self.post is None:
            raise EnhancerError(self.name, "enhance() before load()")
        pre = self.pre
        height, width = pre.padded_size(image.shape[0], image.shape[1])

        def fill(host: npt.NDArray[np.float32]) -> None:
            pre.to_tensor(image, out=host)

        output = self._run(fill, (1, 3, height, width))
        return self._to_frame(output, Crop(image.shape[0], image.shape[1]))

    def close(self) -> None:
        if self._ctx is None:
            return
        self._ctx.push()
        try:
            for buffer in self._buffers:
                buffer.free()
            self._buffers = []
            self._context = None
            self._engine = None
            self._stream = None
        finally:
            self._ctx.pop()
            self._ctx.detach()
            self._ctx = None
