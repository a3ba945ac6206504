"""Fakes of the TensorRT 10/11 Python API and of pycuda.driver, for the TensorRT code without a GPU.

Only the calls our backends make, with the behaviour they rely on: named I/O tensors with modes,
dtypes and declared shapes; `set_input_shape` returning False outside the profile; outputs whose
shapes follow from the inputs; `execute_async_v3` returning False unless every tensor has an
address; builder flags that do not exist on TensorRT 11; calibrators pulled batch by batch; a
progress monitor that can cancel. Device memory is host memory addressed by integers, and every
retain, push, allocation and free is counted, so the tests can check what is given back.

`install(monkeypatch, version)` puts both modules in `sys.modules` (and removes the backends
imported with them afterwards), so `vehicle_agent.enhance.tensorrt_backend` imports the fakes.
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from vehicle_agent.enhance.tensorrt_plan import parse_version

Shape = tuple[int, ...]
BACKEND_MODULES = (
    "vehicle_agent.enhance.tensorrt_backend",
    "vehicle_agent.quality.soilnet_tensorrt",
)


# -- pycuda.driver -------------------------------------------------------------------------------


class HostMemory(bytearray):
    """What pycuda's page-locked arrays have as `.base`: something with `free()`."""

    def __init__(self, size: int, cuda: FakeCuda) -> None:
        super().__init__(size)
        self.cuda = cuda
        self.freed = False

    def free(self) -> None:
        assert not self.freed, "host buffer freed twice"
        self.freed = True
        self.cuda.host_live -= 1


class DeviceAllocation:
    def __init__(self, cuda: FakeCuda, nbytes: int) -> None:
        self.cuda = cuda
        self.address = cuda.next_address
        cuda.next_address += (nbytes + 255) // 256 * 256 + 256
        self.data = np.zeros(nbytes, np.uint8)
        self.freed = False
        cuda.memory[self.address] = self
        cuda.device_live += 1

    def __int__(self) -> int:
        return self.address

    def free(self) -> None:
        assert not self.freed, "device buffer freed twice"
        assert self.cuda.stack, "device memory freed without a current context"
        self.freed = True
        del self.cuda.memory[self.address]
        self.cuda.device_live -= 1


class FakeContext:
    def __init__(self, cuda: FakeCuda) -> None:
        self.cuda = cuda
        self.detached = False

    def push(self) -> None:
        assert not self.detached
        self.cuda.stack.append(self)
        self.cuda.pushes += 1

    def detach(self) -> None:
        assert not self.detached, "context detached twice"
        self.detached = True
        self.cuda.retained -= 1


class FakeDevice:
    def __init__(self, cuda: FakeCuda, index: int) -> None:
        if index >= cuda.devices:
            raise RuntimeError(f"cuDeviceGet failed: invalid device ordinal {index}")
        self.cuda = cuda

    def name(self) -> str:
        return "Orin (fake)"

    def compute_capability(self) -> tuple[int, int]:
        return 8, 7

    def retain_primary_context(self) -> FakeContext:
        self.cuda.retained += 1
        return FakeContext(self.cuda)


class FakeStream:
    handle = 1234

    def synchronize(self) -> None:
        pass


class FakeCuda:
    """pycuda.driver: the calls the backends make, with counters."""

    def __init__(self, devices: int = 1) -> None:
        self.devices = devices
        self.retained = 0
        self.pushes = 0
        self.stack: list[FakeContext] = []
        self.memory: dict[int, DeviceAllocation] = {}
        self.next_address = 0x1000
        self.device_live = 0
        self.host_live = 0
        cuda = self

        class Context:
            @staticmethod
            def pop() -> None:
                assert cuda.stack, "pop without push"
                cuda.stack.pop()

        self.Context = Context

    def init(self) -> None:
        if self.devices == 0:
            raise RuntimeError("cuInit failed: no CUDA-capable device is detected")

    def Device(self, index: int) -> FakeDevice:  # noqa: N802 - pycuda's name
        return FakeDevice(self, index)

    def Stream(self) -> FakeStream:  # noqa: N802 - pycuda's name
        return FakeStream()

    def pagelocked_empty(self, shape: Any, dtype: npt.DTypeLike) -> npt.NDArray[Any]:
        dt = np.dtype(dtype)
        dims = (shape,) if isinstance(shape, int) else tuple(shape)
        nbytes = int(np.prod(dims, dtype=np.int64)) * dt.itemsize
        self.host_live += 1
        array: npt.NDArray[Any] = np.ndarray(dims, dt, buffer=HostMemory(nbytes, self))
        return array

    def mem_alloc(self, nbytes: int) -> DeviceAllocation:
        assert self.stack, "mem_alloc without a current context"
        assert nbytes > 0, "cuMemAlloc of 0 bytes"
        return DeviceAllocation(self, nbytes)

    def memcpy_htod(self, dest: DeviceAllocation, src: npt.NDArray[Any]) -> None:
        raw = np.ascontiguousarray(src).view(np.uint8).ravel()
        assert raw.size <= dest.data.size, "htod past the end of the buffer"
        dest.data[: raw.size] = raw

    def memcpy_htod_async(
        self, dest: DeviceAllocation, src: npt.NDArray[Any], stream: FakeStream
    ) -> None:
        del stream
        self.memcpy_htod(dest, src)

    def memcpy_dtoh_async(
        self, dest: npt.NDArray[Any], src: DeviceAllocation, stream: FakeStream
    ) -> None:
        del stream
        raw = dest.reshape(-1).view(np.uint8)
        assert raw.size <= src.data.size, "dtoh past the end of the buffer"
        raw[:] = src.data[: raw.size]


# -- the engine ------------------------------------------------------------------------------


class Mode:
    INPUT = "INPUT"
    OUTPUT = "OUTPUT"


NPTYPES: dict[str, type[np.generic]] = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT32": np.int32,
}


def nptype(dtype: str) -> type[np.generic]:
    if dtype not in NPTYPES:
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
    return NPTYPES[dtype]


@dataclass
class TensorDecl:
    name: str
    mode: str
    dtype: str
    declared: Shape
    shape_of: Callable[[Shape], Shape] = field(default=lambda s: s)
    """Output shape from the input's."""


def default_tensors(output_dtype: str = "FLOAT") -> list[TensorDecl]:
    """The enhancer's tensors: x → y (its frame) and a second, smaller output `aux`."""
    return [
        TensorDecl("x", Mode.INPUT, "FLOAT", (1, 3, -1, -1)),
        TensorDecl("y", Mode.OUTPUT, output_dtype, (1, 3, -1, -1)),
        TensorDecl(
            "aux", Mode.OUTPUT, "INT32", (1, 1, -1, -1), lambda s: (1, 1, s[2] // 8, s[3] // 8)
        ),
    ]


class FakeEngine:
    """y = gain · x; aux = the tile index (both written by execute_async_v3)."""

    def __init__(
        self,
        cuda: FakeCuda,
        tensors: Sequence[TensorDecl],
        profile: tuple[Shape, Shape, Shape],
        gain: float = 0.5,
    ) -> None:
        self.cuda = cuda
        self.tensors = list(tensors)
        self.profile = profile
        self.gain = gain
        self.contexts: list[FakeExecutionContext] = []

    @property
    def num_io_tensors(self) -> int:
        return len(self.tensors)

    def _decl(self, name: str) -> TensorDecl:
        return next(t for t in self.tensors if t.name == name)

    def get_tensor_name(self, index: int) -> str:
        return self.tensors[index].name

    def get_tensor_mode(self, name: str) -> str:
        return self._decl(name).mode

    def get_tensor_dtype(self, name: str) -> str:
        return self._decl(name).dtype

    def get_tensor_shape(self, name: str) -> Shape:
        return self._decl(name).declared

    def get_tensor_profile_shape(self, name: str, index: int) -> list[Shape]:
        del name, index
        return list(self.profile)

    def create_execution_context(self) -> FakeExecutionContext:
        context = FakeExecutionContext(self)
        self.contexts.append(context)
        return context


class FakeExecutionContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.input_shape: Shape | None = None
        self.addresses: dict[str, int] = {}
        self.refused: list[Shape] = []

    def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
        assert self.engine.get_tensor_mode(name) == Mode.INPUT
        shape = tuple(shape)
        low, _, high = self.engine.profile
        fits = len(shape) == len(low) and all(
            lo <= d <= hi for lo, d, hi in zip(low, shape, high, strict=True)
        )
        if not fits:
            self.refused.append(shape)
            return False
        self.input_shape = shape
        return True

    def get_tensor_shape(self, name: str) -> Shape:
        decl = self.engine._decl(name)
        if self.input_shape is None:
            return decl.declared
        return self.input_shape if decl.mode == Mode.INPUT else decl.shape_of(self.input_shape)

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        del stream_handle
        if self.input_shape is None or set(self.addresses) != {t.name for t in self.engine.tensors}:
            return False  # TensorRT: "address of tensor … not set"
        memory = self.engine.cuda.memory
        shape = self.input_shape
        x_decl = next(t for t in self.engine.tensors if t.mode == Mode.INPUT)
        count = int(np.prod(shape))
        x = (
            memory[self.addresses[x_decl.name]]
            .data.view(nptype(x_decl.dtype))[:count]
            .reshape(shape)
        )
        for decl in self.engine.tensors:
            if decl.mode != Mode.OUTPUT:
                continue
            out_shape = decl.shape_of(shape)
            value = (
                x * self.engine.gain
                if out_shape == shape
                else np.arange(int(np.prod(out_shape))).reshape(out_shape)
            )
            raw = np.ascontiguousarray(value, nptype(decl.dtype)).view(np.uint8).ravel()
            target = memory[self.addresses[decl.name]].data
            assert raw.size <= target.size, f"output {decl.name} overruns its buffer"
            target[: raw.size] = raw
        return True


# -- tensorrt --------------------------------------------------------------------------------


class FakeNetwork:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.num_inputs = 1

    def get_input(self, index: int) -> Any:
        del index
        return types.SimpleNamespace(name="x")


class FakeBuilderConfig:
    def __init__(self, trt: FakeTrt) -> None:
        self.trt = trt
        self.flags: list[str] = []
        self.profiles: list[Any] = []
        self.int8_calibrator: Any = None
        self.progress_monitor: Any = None
        self.calibration_profile: Any = None
        self.workspace = 0

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        assert pool == "WORKSPACE"
        self.workspace = size

    def add_optimization_profile(self, profile: Any) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def set_flag(self, flag: str) -> None:
        self.flags.append(flag)


class FakeBuilderConfig10(FakeBuilderConfig):
    """TensorRT 10's config: it still has the INT8 calibration profile (11 removed it)."""

    def set_calibration_profile(self, profile: Any) -> None:
        self.calibration_profile = profile


class FakeProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[Shape, Shape, Shape]] = {}

    def set_shape(self, name: str, low: Shape, opt: Shape, high: Shape) -> None:
        self.shapes[name] = (tuple(low), tuple(opt), tuple(high))


class FakeBuilder:
    def __init__(self, trt: FakeTrt, logger: Any) -> None:
        trt.loggers_used.append(logger)
        self.trt = trt
        self.platform_has_fast_fp16 = True

    def create_network(self, flags: int) -> FakeNetwork:
        return FakeNetwork(flags)

    def create_builder_config(self) -> FakeBuilderConfig:
        if self.trt.major < 11:
            return FakeBuilderConfig10(self.trt)
        return FakeBuilderConfig(self.trt)

    def create_optimization_profile(self) -> FakeProfile:
        return FakeProfile()

    def build_serialized_network(self, network: FakeNetwork, config: FakeBuilderConfig) -> Any:
        trt = self.trt
        trt.builds += 1
        strongly_typed = bool(
            network.flags & (1 << trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        )
        if strongly_typed:
            assert not config.flags, "precision flags on a strongly typed network"
        monitor = config.progress_monitor
        for step in range(3):
            if monitor is not None and not monitor.step_complete("build", step):
                return None  # cancelled
            if trt.during_build is not None:
                trt.during_build(step)
        batches = 0
        if config.int8_calibrator is not None:
            assert config.calibration_profile is not None
            calibrator = config.int8_calibrator
            if calibrator.read_calibration_cache() is None:
                while calibrator.get_batch(["x"]) is not None:
                    batches += 1
                calibrator.write_calibration_cache(b"calibration table")
        if trt.fail_builds:
            return None
        (profile,) = config.profiles
        (shapes,) = profile.shapes.values()
        return json.dumps(
            {
                "strongly_typed": strongly_typed,
                "flags": config.flags,
                "calibration_batches": batches,
                "profile": [list(s) for s in shapes],
                "workspace": config.workspace,
            }
        ).encode()


class FakeParser:
    def __init__(self, trt: FakeTrt, network: FakeNetwork, logger: Any) -> None:
        del network
        trt.loggers_used.append(logger)
        self.num_errors = 0

    def parse_from_file(self, path: str) -> bool:
        with open(path, "rb") as f:  # noqa: PTH123 - the fake reads like TensorRT does
            ok = len(f.read()) > 0
        self.num_errors = 0 if ok else 1
        return ok

    def get_error(self, index: int) -> str:
        del index
        return "empty file"


class FakeRuntime:
    def __init__(self, trt: FakeTrt, logger: Any) -> None:
        trt.loggers_used.append(logger)
        self.trt = trt

    def deserialize_cuda_engine(self, serialized: bytes) -> FakeEngine | None:
        try:
            desc = json.loads(bytes(serialized))
        except ValueError:
            return None
        low, opt, high = (tuple(s) for s in desc["profile"])
        engine = FakeEngine(self.trt.cuda, self.trt.tensors, (low, opt, high))
        self.trt.engines.append(engine)
        return engine


class FakeTrt(types.ModuleType):
    """A `tensorrt` module of `version`: 10.x has the weak-typing API, 11 does not."""

    def __init__(self, version: str, cuda: FakeCuda) -> None:
        super().__init__("tensorrt")
        self.__version__ = version
        self.cuda = cuda
        self.loggers: list[Any] = []
        self.loggers_used: list[Any] = []
        self.builds = 0
        self.fail_builds = False
        self.during_build: Callable[[int], object] | None = None
        self.tensors = default_tensors()
        self.engines: list[FakeEngine] = []
        trt = self
        major = self.major = parse_version(version)[0]

        class Logger:
            WARNING = 2

            def __init__(self, severity: int) -> None:
                self.severity = severity
                trt.loggers.append(self)

        self.Logger = Logger
        self.TensorIOMode = Mode
        self.nptype = nptype
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
        if major < 11:
            self.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8")

            class IInt8EntropyCalibrator2:
                def __init__(self) -> None:
                    pass

            self.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
        else:
            self.BuilderFlag = types.SimpleNamespace()

        class IProgressMonitor:
            def __init__(self) -> None:
                pass

        self.IProgressMonitor = IProgressMonitor
        self.Builder = lambda logger: FakeBuilder(trt, logger)
        self.OnnxParser = lambda network, logger: FakeParser(trt, network, logger)
        self.Runtime = lambda logger: FakeRuntime(trt, logger)


@dataclass
class FakeGpu:
    trt: FakeTrt
    cuda: FakeCuda
    backend: Any
    """The freshly imported `vehicle_agent.enhance.tensorrt_backend`, on the fakes."""


def install(monkeypatch: pytest.MonkeyPatch, version: str = "10.3.0", devices: int = 1) -> FakeGpu:
    """Fake tensorrt + pycuda.driver in sys.modules and a fresh import of the backend on them."""
    cuda = FakeCuda(devices)
    trt = FakeTrt(version, cuda)
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    # importlib.import_module returns what sys.modules holds: the fake object is the module.
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    for name in BACKEND_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    backend = importlib.import_module("vehicle_agent.enhance.tensorrt_backend")
    return FakeGpu(trt, cuda, backend)


def uninstall() -> None:
    """Forget the backends imported on the fakes (monkeypatch restores the rest)."""
    for name in BACKEND_MODULES:
        sys.modules.pop(name, None)
