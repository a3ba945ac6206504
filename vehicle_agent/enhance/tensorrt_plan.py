"""Enhance stage, the TensorRT backends' logic without TensorRT: version gates, I/O plan, GPU lifetimes.

Pure (numpy only): `tensorrt_backend` and `quality/soilnet_tensorrt` pass in the real tensorrt
and pycuda objects, the tests pass fakes (an engine with `num_io_tensors`, `get_tensor_name`,
`get_tensor_mode`, `get_tensor_dtype`; a context with `set_input_shape`, `get_tensor_shape`,
`set_tensor_address`, `execute_async_v3`; a module with pycuda.driver's few calls), so every
rule here is tested without a GPU:

- `choose_build`: network typing and builder flags for a TensorRT version and a precision
  (TensorRT 10.12 deprecates weak typing; 11 removes `BuilderFlag.FP16/INT8` and the INT8
  calibrators), and a clear refusal where INT8 calibration does not exist.
- `plan_io` / `IoBindings`: every I/O tensor planned from the engine (its mode, its dtype, its
  shape once the input shapes are set), every one bound to a buffer of its own size and type,
  `set_input_shape` refusals turned into errors that say why.
- `PrimaryContext`, `CalibrationFeed`: what is allocated on the GPU is freed once, on close.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from vehicle_agent.compat import Self
from vehicle_agent.config_base import ConfigModel
from vehicle_agent.enhance.base import BackendPlugin, BackendUnavailableError

logger = logging.getLogger(__name__)

MIN_VERSION = (10, 0)
"""The oldest TensorRT whose Python API (named I/O tensors, execute_async_v3) this code uses."""
STRONG_TYPING_PREFERRED = (10, 12)
"""From here weak typing (the precision builder flags, INT8 calibrators) is deprecated."""
WEAK_TYPING_REMOVED = (11, 0)
"""From here every network is strongly typed: no FP16/INT8 flags, no calibrators."""

Version = tuple[int, int, int]
HostArray = npt.NDArray[Any]


class TensorRtEnhancerConfig(ConfigModel):
    type: Literal["tensorrt"] = Field(
        "tensorrt",
        description="The model as a TensorRT engine (NVIDIA GPU, tensorrt + pycuda), built "
        "from the ONNX file once and cached.",
    )
    precision: Literal["fp32", "fp16", "int8"] = Field(
        "fp16",
        description="Engine precision; 'int8' calibrates on calibration_dir (FP16 where INT8 "
        "has no kernel).",
    )
    calibration_dir: Path | None = Field(
        None, description="Folder of typical frames (JPEG/PNG) for INT8 calibration."
    )
    calibration_images: int = Field(
        64, ge=1, le=10_000, description="Calibration uses at most this many images."
    )
    workspace_mb: int = Field(
        1024, ge=16, le=65_536, description="Scratch memory the engine builder may use, MiB."
    )
    opt_width: int = Field(
        1280, ge=16, le=8192, description="Width the engine is tuned for (the camera's)."
    )
    opt_height: int = Field(
        720, ge=16, le=8192, description="Height the engine is tuned for (the camera's)."
    )
    max_width: int = Field(
        1920, ge=16, le=8192, description="Widest frame the engine accepts, pixels."
    )
    max_height: int = Field(
        1088, ge=16, le=8192, description="Tallest frame the engine accepts, pixels."
    )
    engine_dir: Path | None = Field(
        None, description="Where built engines are cached; none: <agent.state_dir>/engines."
    )
    device: int = Field(0, ge=0, le=15, description="CUDA device index.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.precision == "int8" and self.calibration_dir is None:
            raise ValueError("precision 'int8' needs calibration_dir (a folder of frames)")
        if self.max_width < self.opt_width or self.max_height < self.opt_height:
            raise ValueError("max_width/max_height must be at least opt_width/opt_height")
        return self


PLUGIN = BackendPlugin(
    "tensorrt",
    TensorRtEnhancerConfig,
    "vehicle_agent.enhance.tensorrt_backend:TensorRtEnhancer",
    runs_model=True,
    preference=0,
)
"""The `tensorrt` backend's plugin: its config is here, in the half of the backend that needs
no TensorRT; its enhancer (`tensorrt_backend`) binds tensorrt and pycuda when it is imported,
so it is imported only when the backend is built."""


class PrecisionUnavailableError(BackendUnavailableError):
    """The configured precision cannot be built with this TensorRT (INT8 calibration on 11)."""

    def __init__(self, reason: str) -> None:
        super().__init__("tensorrt", reason)


class PlanError(Exception):
    """An engine's tensors cannot be planned or run as asked; the message says which and why."""


def parse_version(text: str) -> Version:
    """(major, minor, patch) of a TensorRT version string ('10.3.0.30', '11.0.0b1', '10.16')."""
    match = re.match(r"\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?", text)
    if match is None:
        raise ValueError(f"not a TensorRT version: {text!r}")
    major, minor, patch = (int(g) if g is not None else 0 for g in match.groups())
    return major, minor, patch


@dataclass(frozen=True, slots=True)
class BuildFlags:
    """How to build an engine: the network's typing, `trt.BuilderFlag` names, calibration."""

    strongly_typed: bool
    flags: tuple[str, ...] = ()
    calibrate: bool = False
    notes: tuple[str, ...] = ()
    """What the log should say about the choice (deprecations, precision that follows the model)."""

    def describe(self) -> str:
        if self.strongly_typed:
            return "strongly typed"
        return "weakly typed" + (f" {'+'.join(self.flags)}" if self.flags else "")


def choose_build(
    version: str,
    precision: str,
    *,
    calibrator_available: bool | None = None,
    fp16_flag_available: bool | None = None,
) -> BuildFlags:
    """Network typing and builder flags for `precision` on TensorRT `version`.

    - fp32: no flags; strongly typed from 10.12 (the same engine, without deprecated API).
    - fp16: the FP16 flag while TensorRT has it (weak typing is the only way to FP16 kernels from
      an FP32 model; deprecated from 10.12, noted); from 11 strongly typed, running in the
      model's own types (FP16 then needs a mixed-precision ONNX export), noted.
    - int8: FP16 + INT8 flags and entropy calibration while TensorRT has them; where it does not
      (11, or a build without `IInt8EntropyCalibrator2`) `PrecisionUnavailableError`.

    `calibrator_available` / `fp16_flag_available`: what the imported module really has (None:
    what its version implies); a missing feature wins over the version.
    """
    parsed = parse_version(version)
    if parsed[:2] < MIN_VERSION:
        raise BackendUnavailableError(
            "tensorrt", f"TensorRT {version} is older than 10.0; this backend needs TensorRT 10"
        )
    weak = parsed[:2] < WEAK_TYPING_REMOVED
    fp16_flag = weak if fp16_flag_available is None else weak and fp16_flag_available
    calibrator = weak if calibrator_available is None else weak and calibrator_available
    deprecated = parsed[:2] >= STRONG_TYPING_PREFERRED
    if precision == "fp32":
        return BuildFlags(strongly_typed=deprecated or not weak)
    if precision == "fp16":
        if fp16_flag:
            note = (
                f"BuilderFlag.FP16 is deprecated on TensorRT {version}; it is still the only "
                "way to FP16 kernels from an FP32 model (a mixed-precision export builds "
                "strongly typed)"
            )
            notes = (note,) if deprecated else ()
            return BuildFlags(strongly_typed=False, flags=("FP16",), notes=notes)
        note = (
            f"TensorRT {version} has no FP16 builder flag: the network is strongly typed and "
            "runs in the ONNX model's own types (export a mixed-precision model for FP16)"
        )
        return BuildFlags(strongly_typed=True, notes=(note,))
    if precision == "int8":
        if not (calibrator and fp16_flag):
            raise PrecisionUnavailableError(
                f"INT8 calibration not available on TensorRT {version}; use precision 'fp16' "
                "(or a strongly typed model with explicit Q/DQ quantization)"
            )
        notes = (
            (f"INT8 calibration and BuilderFlag.INT8 are deprecated on TensorRT {version}",)
            if deprecated
            else ()
        )
        return BuildFlags(strongly_typed=False, flags=("FP16", "INT8"), calibrate=True, notes=notes)
    raise ValueError(f"unknown precision {precision!r}")


# -- the I/O plan ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """An engine I/O tensor as the engine declares it."""

    name: str
    is_input: bool
    dtype: np.dtype[Any]
    declared: tuple[int, ...]
    """Its shape in the engine, -1 where dynamic."""


@dataclass(frozen=True, slots=True)
class TensorPlan:
    """An I/O tensor at concrete input shapes: what a buffer for it must hold."""

    name: str
    is_input: bool
    shape: tuple[int, ...]
    dtype: np.dtype[Any]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


def describe_io(engine: Any, *, input_mode: Any, nptype: Callable[[Any], Any]) -> list[TensorSpec]:
    """Every I/O tensor of `engine`, in engine order; `nptype` is `trt.nptype`."""
    specs = []
    for index in range(int(engine.num_io_tensors)):
        name = str(engine.get_tensor_name(index))
        trt_dtype = engine.get_tensor_dtype(name)
        try:
            dtype = np.dtype(nptype(trt_dtype))
        except TypeError as exc:  # trt.nptype has no numpy type for e.g. BF16, FP8, INT4
            raise PlanError(f"tensor {name!r} is {trt_dtype}: no numpy equivalent ({exc})") from exc
        declared = tuple(int(d) for d in engine.get_tensor_shape(name))
        specs.append(TensorSpec(name, engine.get_tensor_mode(name) == input_mode, dtype, declared))
    return specs


def _profile_text(engine: Any, name: str) -> str:
    """' (profile min … opt … max …)' for an input, when the engine says."""
    try:
        min_s, opt_s, max_s = (
            tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(name, 0)
        )
    except Exception:  # only for the message: an engine without profiles has none
        return ""
    return f" (profile min {min_s}, opt {opt_s}, max {max_s})"


def plan_shapes(
    engine: Any,
    context: Any,
    specs: Sequence[TensorSpec],
    input_shapes: Mapping[str, Sequence[int]],
) -> list[TensorPlan]:
    """Set every input's shape (a refusal is a `PlanError`), then read every tensor's shape back
    from the context (outputs follow from the inputs)."""
    inputs = {s.name for s in specs if s.is_input}
    if set(input_shapes) != inputs:
        raise PlanError(
            f"the engine's inputs are {sorted(inputs)}, shapes were given for {sorted(input_shapes)}"
        )
    for name in (s.name for s in specs if s.is_input):
        shape = tuple(int(d) for d in input_shapes[name])
        if not context.set_input_shape(name, shape):
            raise PlanError(
                f"set_input_shape({name!r}, {shape}) refused: outside the engine's optimisation "
                f"profile{_profile_text(engine, name)}"
            )
    plans = []
    for spec in specs:
        shape = tuple(int(d) for d in context.get_tensor_shape(spec.name))
        if any(d < 0 for d in shape):
            raise PlanError(
                f"tensor {spec.name!r} has shape {shape} after the input shapes were set: a "
                "data-dependent shape (needs an output allocator) is not supported"
            )
        plans.append(TensorPlan(spec.name, spec.is_input, shape, spec.dtype))
    return plans


def plan_io(
    engine: Any,
    context: Any,
    input_shapes: Mapping[str, Sequence[int]],
    *,
    input_mode: Any,
    nptype: Callable[[Any], Any],
) -> list[TensorPlan]:
    """Every I/O tensor of `engine` at `input_shapes`: name, mode, shape and numpy dtype."""
    specs = describe_io(engine, input_mode=input_mode, nptype=nptype)
    return plan_shapes(engine, context, specs, input_shapes)


class IoBindings:
    """A page-locked host buffer and a device buffer for every I/O tensor of an engine, each
    sized for its largest shape (the inputs at `max_shapes`) in its own dtype, and every one
    bound with `set_tensor_address` once. Create and `free` with the CUDA context current."""

    def __init__(
        self,
        cuda: Any,
        engine: Any,
        context: Any,
        max_shapes: Mapping[str, Sequence[int]],
        *,
        input_mode: Any,
        nptype: Callable[[Any], Any],
    ) -> None:
        self._cuda = cuda
        self._engine = engine
        self._context = context
        self.specs = describe_io(engine, input_mode=input_mode, nptype=nptype)
        self.capacity = {p.name: p for p in plan_shapes(engine, context, self.specs, max_shapes)}
        self._host: dict[str, HostArray] = {}
        self._device: dict[str, Any] = {}
        self.stream: Any = None
        try:
            for plan in self.capacity.values():
                self._host[plan.name] = cuda.pagelocked_empty(max(1, plan.size), plan.dtype)
                self._device[plan.name] = cuda.mem_alloc(max(1, plan.nbytes))
                if not context.set_tensor_address(plan.name, int(self._device[plan.name])):
                    raise PlanError(f"set_tensor_address({plan.name!r}) refused")  # noqa: TRY301
            self.stream = cuda.Stream()
        except BaseException:
            self.free()
            raise

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.specs if s.is_input]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.specs if not s.is_input]

    def run(
        self,
        input_shapes: Mapping[str, Sequence[int]],
        fill: Callable[[dict[str, HostArray]], None],
    ) -> dict[str, HostArray]:
        """Set the input shapes, let `fill` write the inputs' page-locked views, copy them in,
        execute, copy every output out; returns views of the outputs (valid until the next run)."""
        if self.stream is None:
            raise PlanError("the buffers were freed")
        plans = plan_shapes(self._engine, self._context, self.specs, input_shapes)
        views: dict[str, HostArray] = {}
        for plan in plans:
            capacity = self.capacity[plan.name]
            if plan.size > capacity.size:
                raise PlanError(
                    f"tensor {plan.name!r} needs {plan.shape}, more than its buffer for "
                    f"{capacity.shape}; raise the engine's max_* sizes"
                )
            views[plan.name] = self._host[plan.name][: plan.size].reshape(plan.shape)
        inputs = {p.name: views[p.name] for p in plans if p.is_input}
        fill(inputs)
        cuda, stream = self._cuda, self.stream
        for name, view in inputs.items():
            cuda.memcpy_htod_async(self._device[name], view, stream)
        if not self._context.execute_async_v3(stream.handle):
            raise PlanError("TensorRT execution failed (execute_async_v3 returned False)")
        outputs = {p.name: views[p.name] for p in plans if not p.is_input}
        for name, view in outputs.items():
            cuda.memcpy_dtoh_async(view, self._device[name], stream)
        stream.synchronize()
        return outputs

    def free(self) -> None:
        """Free every buffer; idempotent (the CUDA context must be current)."""
        device, self._device = self._device, {}
        host, self._host = self._host, {}
        self.stream = None
        for allocation in device.values():
            try:
                allocation.free()
            except Exception:
                logger.exception("freeing a TensorRT device buffer failed")
        for array in host.values():
            _free_host(array)


def _free_host(array: HostArray) -> None:
    """Free a pycuda page-locked array now (its base is the HostAllocation), not at GC time."""
    free = getattr(array.base, "free", None)
    if free is not None:
        try:
            free()
        except Exception:
            logger.exception("freeing a page-locked host buffer failed")


# -- GPU lifetimes -----------------------------------------------------------------------------


class PrimaryContext:
    """A CUDA device's primary context, retained once: `with ctx:` makes it current around a
    call on any thread; `close(release)` runs `release` with it current, then gives the
    retained context back (`detach`). Idempotent."""

    def __init__(self, cuda: Any, device: int) -> None:
        self._cuda = cuda
        self.device = device
        try:
            cuda.init()
            gpu = cuda.Device(device)
            major, minor = gpu.compute_capability()
            self.name = str(gpu.name())
            self.compute_capability = f"{major}.{minor}"
            self._ctx: Any = gpu.retain_primary_context()
        except Exception as exc:  # pycuda raises its own error types when there is no GPU
            raise BackendUnavailableError("tensorrt", f"no CUDA device {device}: {exc}") from exc

    @property
    def closed(self) -> bool:
        return self._ctx is None

    def __enter__(self) -> None:
        if self._ctx is None:
            raise PlanError(f"CUDA device {self.device}: context already released")
        self._ctx.push()

    def __exit__(self, *exc: object) -> None:
        self._cuda.Context.pop()

    def close(self, release: Callable[[], None] | None = None) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is None:
            return
        try:
            if release is not None:
                ctx.push()
                try:
                    release()
                finally:
                    self._cuda.Context.pop()
        finally:
            ctx.detach()


class CalibrationFeed:
    """The INT8 calibrator's data: one image per batch, written by `fill` into a page-locked
    buffer and copied to one device buffer; the calibration table read from and written to
    `cache`. `free` (idempotent) gives the buffers back once the build is over."""

    def __init__(
        self,
        cuda: Any,
        images: Sequence[Path],
        *,
        fill: Callable[[Path, HostArray], bool],
        shape: Sequence[int],
        cache: Path,
        dtype: npt.DTypeLike = np.float32,
    ) -> None:
        self._cuda = cuda
        self.images = list(images)
        self.fill = fill
        self.cache = cache
        self.index = 0
        self.batches = 0
        self.host: HostArray | None = cuda.pagelocked_empty(tuple(shape), dtype)
        self.device: Any = None
        try:
            self.device = cuda.mem_alloc(self.host.nbytes)
        except BaseException:
            self.free()
            raise

    def next_batch(self) -> list[int] | None:
        """Device addresses of the next batch, or None when the images are used up."""
        if self.host is None or self.device is None:
            return None
        while self.index < len(self.images):
            path = self.images[self.index]
            self.index += 1
            if not self.fill(path, self.host):
                logger.warning("calibration: cannot read %s; skipped", path)
                continue
            self._cuda.memcpy_htod(self.device, self.host)
            self.batches += 1
            return [int(self.device)]
        return None

    def read_cache(self) -> bytes | None:
        return self.cache.read_bytes() if self.cache.is_file() else None

    def write_cache(self, data: bytes) -> None:
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache.with_name(self.cache.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(self.cache)

    def free(self) -> None:
        device, self.device = self.device, None
        host, self.host = self.host, None
        if device is not None:
            try:
                device.free()
            except Exception:
                logger.exception("freeing the calibration buffer failed")
        if host is not None:
            _free_host(host)
