"""Enhance stage backend `tensorrt`: the model as a cached TensorRT engine, on the vehicle's GPU.

The engine is built from the verified ONNX file (FP32, FP16, or INT8 calibrated on a folder of
frames where this TensorRT still calibrates), cached under `<state_dir>/engines/<model>/` per
model version with the key `engine_cache` checks (model name, version and sha256, TensorRT
version, GPU and compute capability, precision and network typing, workspace, shape profile,
calibration images) and rebuilt on any mismatch. The build is the enhancer's `prepare` step, so
the chain runs it on its loader thread while another backend serves frames (`PreparedEnhancer`);
a cancelled chain stops it through TensorRT's progress monitor.

At run time every I/O tensor is planned from the engine (`tensorrt_plan.IoBindings`: its own
dtype and shape, every output bound), frames go through page-locked host buffers and one CUDA
stream, and the device's primary context, retained once per enhancer and released on close, is
pushed around each call (loading on one thread and running on another is safe). tensorrt and
pycuda are imported only here: without them the registry reports "backend unavailable: tensorrt
not importable: …". One `trt.Logger` serves every builder, parser and runtime of the process.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from vehicle_agent.enhance.base import BackendUnavailableError, EnhancerError
from vehicle_agent.enhance.engine_cache import (
    CacheDecision,
    EngineKey,
    Shape,
    calibration_cache_path,
    calibration_digest,
    calibration_images,
    decide,
    mark_used,
    profile_for,
    store,
)
from vehicle_agent.enhance.model import ModelEnhancer, TensorInfo
from vehicle_agent.enhance.prepost import Crop, Preprocessor, Tensor
from vehicle_agent.enhance.store import ModelRef
from vehicle_agent.enhance.tensorrt_plan import (
    BuildFlags,
    CalibrationFeed,
    HostArray,
    IoBindings,
    PlanError,
    PrimaryContext,
    TensorRtEnhancerConfig,
    choose_build,
    describe_io,
)
from vehicle_agent.records import Image

try:
    trt: Any = importlib.import_module("tensorrt")
    cuda: Any = importlib.import_module("pycuda.driver")
except ImportError as _exc:  # the registry turns this into "backend unavailable: …"
    raise ImportError(f"tensorrt not importable: {_exc}") from _exc

logger = logging.getLogger(__name__)

TRT_LOGGER: Any = trt.Logger(trt.Logger.WARNING)
"""The process's one TensorRT logger: builders, parsers and runtimes all take this one."""
TENSORRT_VERSION = str(trt.__version__)

_BUILD_LOCK = threading.Lock()
"""One engine build at a time in this process: two would share a Jetson's memory, and the second
usually finds the first's engine in the cache."""


def build_flags(precision: str) -> BuildFlags:
    """`choose_build` for the imported TensorRT, checked against what the module really has."""
    return choose_build(
        TENSORRT_VERSION,
        precision,
        calibrator_available=hasattr(trt, "IInt8EntropyCalibrator2"),
        fp16_flag_available=hasattr(trt.BuilderFlag, "FP16"),
    )


def gpu_identity(device_index: int) -> tuple[str, str]:
    """(name, compute capability 'major.minor') of a CUDA device; initialises the driver."""
    try:
        cuda.init()
        device = cuda.Device(device_index)
        major, minor = device.compute_capability()
        name = str(device.name())
    except Exception as exc:  # pycuda raises its own error types when there is no GPU
        raise BackendUnavailableError("tensorrt", f"no CUDA device {device_index}: {exc}") from exc
    return name, f"{major}.{minor}"


def parse_onnx(
    onnx_path: Path, fail: Callable[[str], Exception], *, strongly_typed: bool = False
) -> tuple[Any, Any, Any]:
    """(builder, network, parser) for an ONNX file; `fail(message)` is raised when the parser
    refuses it. The parser owns the network's weights: keep it until the engine is built."""
    builder = trt.Builder(TRT_LOGGER)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, TRT_LOGGER)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise fail(f"ONNX parser failed: {errors}")
    return builder, network, parser


def configure_builder(
    builder: Any,
    network: Any,
    *,
    flags: BuildFlags,
    workspace_mb: int,
    profile: tuple[Shape, Shape, Shape],
    fail: Callable[[str], Exception],
) -> tuple[Any, Any]:
    """(builder config, optimisation profile): workspace, one profile for the single input, and
    the builder flags `flags` names (a flag this TensorRT lacks is `fail`)."""
    if network.num_inputs != 1:
        raise fail(f"the network has {network.num_inputs} inputs, expected 1")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    opt = builder.create_optimization_profile()
    opt.set_shape(network.get_input(0).name, *profile)
    config.add_optimization_profile(opt)
    for name in flags.flags:
        flag = getattr(trt.BuilderFlag, name, None)
        if flag is None:
            raise fail(f"TensorRT {TENSORRT_VERSION} has no BuilderFlag.{name}")
        config.set_flag(flag)
    if "FP16" in flags.flags and not getattr(builder, "platform_has_fast_fp16", True):
        logger.warning("tensorrt: this GPU has no fast FP16; building with FP16 anyway")
    return config, opt


def _entropy_calibrator(feed: CalibrationFeed) -> Any:
    """A `trt.IInt8EntropyCalibrator2` over `feed`. Defined here, at run time: TensorRT 11 has no
    such base class, and `build_flags` has already refused INT8 there."""
    base: Any = trt.IInt8EntropyCalibrator2

    class EntropyCalibrator(base):  # type: ignore[misc]
        def __init__(self) -> None:
            base.__init__(self)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            del names
            return feed.next_batch()

        def read_calibration_cache(self) -> bytes | None:
            return feed.read_cache()

        def write_calibration_cache(self, cache: Any) -> None:
            feed.write_cache(bytes(cache))

    return EntropyCalibrator()


def _progress_monitor(cancel: threading.Event) -> Any | None:
    """A `trt.IProgressMonitor` that cancels the build once `cancel` is set (None if absent)."""
    base: Any = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class CancelMonitor(base):  # type: ignore[misc]
        def __init__(self) -> None:
            base.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            del phase_name, parent_phase, num_steps

        def step_complete(self, phase_name: str, step: int) -> bool:
            del phase_name, step
            return not cancel.is_set()

        def phase_finish(self, phase_name: str) -> None:
            del phase_name

    return CancelMonitor()


def _calibration_fill(pre: Preprocessor) -> Callable[[Path, HostArray], bool]:
    def fill(path: Path, host: HostArray) -> bool:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            return False
        height, width = host.shape[2], host.shape[3]
        resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        pre.to_tensor(np.asarray(resized, dtype=np.uint8), out=host)
        return True

    return fill


@dataclass(frozen=True, slots=True)
class EnginePlan:
    """What an engine for a model and config on this GPU is keyed by, and the cache's verdict."""

    key: EngineKey
    flags: BuildFlags
    decision: CacheDecision
    images: tuple[Path, ...]
    """The INT8 calibration images (empty otherwise)."""


def plan_engine(
    model: ModelRef, cfg: TensorRtEnhancerConfig, cache_dir: Path, gpu_name: str, capability: str
) -> EnginePlan:
    """The engine key for `model` with `cfg` on this GPU, and whether the cache has it."""
    flags = build_flags(cfg.precision)  # INT8 where it does not exist: refused here, at once
    spec = model.manifest.input
    profile = profile_for(
        spec.min_size,
        spec.stride,
        (cfg.opt_height, cfg.opt_width),
        (cfg.max_height, cfg.max_width),
    )
    images: tuple[Path, ...] = ()
    calibration = ""
    if flags.calibrate:
        assert cfg.calibration_dir is not None  # noqa: S101 - the config validator requires it
        images = tuple(calibration_images(cfg.calibration_dir, cfg.calibration_images))
        calibration = calibration_digest(images)
    key = EngineKey(
        model_name=model.name,
        model_version=model.manifest.version,
        model_sha256=model.manifest.sha256,
        tensorrt_version=TENSORRT_VERSION,
        gpu_name=gpu_name,
        compute_capability=capability,
        precision=cfg.precision,
        network=flags.describe(),
        workspace_mb=cfg.workspace_mb,
        profile=profile,
        calibration=calibration,
    )
    return EnginePlan(key, flags, decide(cache_dir, key), images)


def build_serialized_engine(
    model: ModelRef,
    cfg: TensorRtEnhancerConfig,
    plan: EnginePlan,
    cache_dir: Path,
    cancel: threading.Event | None = None,
) -> bytes:
    """Parse the ONNX file and build the engine `plan` describes (minutes on a Jetson); call
    with the CUDA context current."""

    def fail(message: str) -> EnhancerError:
        return EnhancerError("tensorrt", f"{model.label}: {message}")

    key, flags = plan.key, plan.flags
    builder, network, _parser = parse_onnx(
        model.onnx_path, fail, strongly_typed=flags.strongly_typed
    )
    config, profile = configure_builder(
        builder, network, flags=flags, workspace_mb=cfg.workspace_mb, profile=key.profile, fail=fail
    )
    monitor = _progress_monitor(cancel) if cancel is not None else None
    if monitor is not None:
        config.progress_monitor = monitor
    for note in flags.notes:
        logger.warning("tensorrt: %s: %s", model.label, note)
    feed: CalibrationFeed | None = None
    try:
        if flags.calibrate:
            feed = CalibrationFeed(
                cuda,
                plan.images,
                fill=_calibration_fill(Preprocessor(model.manifest.input)),
                shape=key.profile[1],
                cache=calibration_cache_path(cache_dir, key),
            )
            calibrator = _entropy_calibrator(feed)
            config.int8_calibrator = calibrator
            config.set_calibration_profile(profile)
        started = time.perf_counter()
        logger.info(
            "tensorrt: building the %s %s engine of %s for %s (TensorRT %s)",
            cfg.precision,
            flags.describe(),
            model.label,
            key.gpu_name,
            TENSORRT_VERSION,
        )
        serialized = builder.build_serialized_network(network, config)
    finally:
        if feed is not None:
            feed.free()
    if cancel is not None and cancel.is_set():
        raise EnhancerError("tensorrt", f"{model.label}: engine build cancelled")
    if serialized is None:
        raise fail("engine build failed (see the log)")
    logger.info("tensorrt: built in %.1f s", time.perf_counter() - started)
    return bytes(serialized)


@contextlib.contextmanager
def _build_slot(cancel: threading.Event | None) -> Iterator[None]:
    """Hold the process's build lock; waiting for it gives up when `cancel` is set."""
    while not _BUILD_LOCK.acquire(timeout=0.5):
        if cancel is not None and cancel.is_set():
            raise EnhancerError("tensorrt", "engine build cancelled (waiting for another build)")
    try:
        yield
    finally:
        _BUILD_LOCK.release()


def engine_for(
    model: ModelRef,
    cfg: TensorRtEnhancerConfig,
    cache_dir: Path,
    *,
    force: bool = False,
    cancel: threading.Event | None = None,
    gpu: PrimaryContext | None = None,
) -> tuple[bytes, CacheDecision, EngineKey]:
    """The serialized engine for `model` on this GPU: from the cache, or built and cached.

    `gpu`: a context the caller holds; without one, the device's primary context is retained
    for the build and released after it."""
    own = gpu is None
    context = gpu if gpu is not None else PrimaryContext(cuda, cfg.device)
    try:
        plan = plan_engine(model, cfg, cache_dir, context.name, context.compute_capability)
        if plan.decision.action == "use" and not force:
            mark_used(plan.decision)
            return plan.decision.engine.read_bytes(), plan.decision, plan.key
        with _build_slot(cancel):
            if not force:  # another thread may have built it while this one waited
                plan = plan_engine(model, cfg, cache_dir, context.name, context.compute_capability)
                if plan.decision.action == "use":
                    mark_used(plan.decision)
                    return plan.decision.engine.read_bytes(), plan.decision, plan.key
            decision = plan.decision
            if force and decision.action == "use":
                decision = CacheDecision(
                    "build", "rebuild requested", decision.engine, decision.meta
                )
            logger.info("tensorrt: building the engine for %s: %s", model.label, decision.reason)
            with context:
                serialized = build_serialized_engine(model, cfg, plan, cache_dir, cancel)
            store(decision, plan.key, serialized)
            return serialized, decision, plan.key
    finally:
        if own:
            context.close()


def _dims(shape: tuple[int, ...]) -> tuple[int | None, ...]:
    return tuple(d if d >= 0 else None for d in shape)


class TensorRtEnhancer(ModelEnhancer):
    backend = "tensorrt"

    def __init__(self, config: TensorRtEnhancerConfig | None = None, **kwargs: Any) -> None:
        super().__init__(config or TensorRtEnhancerConfig(), **kwargs)
        self.settings: TensorRtEnhancerConfig = self.config
        self.warmup_size = (self.settings.opt_height, self.settings.opt_width)
        self.cache_status = ""
        self._gpu: PrimaryContext | None = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._io: IoBindings | None = None
        self._input = ""
        self._output = ""

    def cache_dir(self) -> Path:
        if self.settings.engine_dir is not None:
            return self.settings.engine_dir
        if self.state_dir is None:
            raise EnhancerError(self.backend, "no engine_dir and no state_dir for the cache")
        return self.state_dir / "engines"

    # -- PreparedEnhancer: the engine build, off the start-up path ----------------------------

    def preparation_needed(self) -> str | None:
        model = self.resolve_model()
        gpu_name, capability = gpu_identity(self.settings.device)
        plan = plan_engine(model, self.settings, self.cache_dir(), gpu_name, capability)
        if plan.decision.action == "use":
            return None
        return f"TensorRT engine build ({plan.decision.reason})"

    def prepare(self, cancel: threading.Event) -> None:
        engine_for(self.resolve_model(), self.settings, self.cache_dir(), cancel=cancel)

    # -- ModelEnhancer -------------------------------------------------------------------------

    def _open(self, model: ModelRef) -> tuple[list[TensorInfo], list[TensorInfo]]:
        try:
            return self._open_engine(model)
        except BaseException:
            self.close()  # a load that fails half way holds nothing on the GPU
            raise

    def _open_engine(self, model: ModelRef) -> tuple[list[TensorInfo], list[TensorInfo]]:
        cfg = self.settings
        self._gpu = PrimaryContext(cuda, cfg.device)
        serialized, decision, key = engine_for(model, cfg, self.cache_dir(), gpu=self._gpu)
        self.cache_status = "hit" if decision.action == "use" else f"built ({decision.reason})"
        with self._gpu:
            self._runtime = trt.Runtime(TRT_LOGGER)
            self._engine = self._runtime.deserialize_cuda_engine(serialized)
            if self._engine is None:
                raise EnhancerError(self.backend, f"{model.label}: cached engine does not load")
            self._context = self._engine.create_execution_context()
            if self._context is None:
                raise EnhancerError(self.backend, f"{model.label}: no execution context")
            try:
                specs = describe_io(
                    self._engine, input_mode=trt.TensorIOMode.INPUT, nptype=trt.nptype
                )
                inputs = [
                    TensorInfo(s.name, _dims(s.declared), s.dtype.name) for s in specs if s.is_input
                ]
                outputs = [
                    TensorInfo(s.name, _dims(s.declared), s.dtype.name)
                    for s in specs
                    if not s.is_input
                ]
                if len(inputs) == 1 and outputs:
                    # Every tensor gets a buffer of its own dtype, sized at the largest frame.
                    self._io = IoBindings(
                        cuda,
                        self._engine,
                        self._context,
                        {inputs[0].name: key.profile[2]},
                        input_mode=trt.TensorIOMode.INPUT,
                        nptype=trt.nptype,
                    )
                    self._input, self._output = inputs[0].name, outputs[0].name
            except PlanError as exc:
                raise EnhancerError(self.backend, f"{model.label}: {exc}") from exc
        return inputs, outputs

    def _run(self, fill: Callable[[HostArray], None], shape: Shape) -> npt.NDArray[np.generic]:
        """Input written by `fill` into its page-locked buffer, engine run, the frame's output
        tensor (a view of its page-locked buffer until the next call)."""
        if self._io is None or self._gpu is None:
            raise EnhancerError(self.name, "enhance() before load()")
        io = self._io
        with self._gpu:
            try:
                outputs = io.run({self._input: shape}, lambda views: fill(views[self._input]))
            except PlanError as exc:
                raise EnhancerError(self.name, str(exc)) from exc
        return outputs[self._output]

    def infer(self, tensor: Tensor) -> npt.NDArray[np.generic]:
        def fill(host: HostArray) -> None:
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

        def fill(host: HostArray) -> None:
            pre.to_tensor(image, out=host)

        output = self._run(fill, (1, 3, height, width))
        return self._to_frame(output, Crop(image.shape[0], image.shape[1]))

    def close(self) -> None:
        """Free the buffers, the engine and its context, then release the primary context;
        idempotent, and safe after a load that failed half way."""
        gpu, self._gpu = self._gpu, None
        if gpu is None:
            return

        def release() -> None:
            io, self._io = self._io, None
            if io is not None:
                io.free()
            # Dropped while the context is current: TensorRT frees their device memory now.
            self._context = None
            self._engine = None
            self._runtime = None

        gpu.close(release)
