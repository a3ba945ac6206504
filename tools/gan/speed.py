"""Speed of an ONNX generator with onnxruntime on the CPU, as the vehicle's fallback runs it.

    nice -n 19 python -m tools.gan speed models/fast-enhance/model.onnx

Reports the median and best frame time over `runs` after a warm-up, per size and thread
count. Threads do not spin while waiting (as the daemon's runtime configures them): on a
machine shared with other jobs a spinning pool doubled the median frame time here. On a shared
machine the median carries other people's load; the best run is closest to an idle machine.
Each frame is padded to the stride in the model's manifest (beside it) as the runtime pads it,
so a 1280×720 frame is timed as the 1280×736 one a stride-32 model really runs on.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vehicle_agent.enhance.manifest import MANIFEST_FILE, ManifestError, read_manifest
from vehicle_agent.enhance.prepost import padded_size

SIZES: tuple[tuple[int, int], ...] = ((1280, 720), (640, 480))


@dataclass(frozen=True, slots=True)
class Timing:
    width: int
    height: int
    median_ms: float
    best_ms: float
    threads: int

    @property
    def median_fps(self) -> float:
        return 1000.0 / self.median_ms

    @property
    def best_fps(self) -> float:
        return 1000.0 / self.best_ms

    def line(self) -> str:
        return (
            f"{self.width}×{self.height}: median {self.median_ms:.1f} ms ({self.median_fps:.0f} fps), "
            f"best {self.best_ms:.1f} ms ({self.best_fps:.0f} fps), "
            f"{self.threads} thread{'s' if self.threads > 1 else ''}"
        )


def manifest_stride(path: Path) -> int:
    """The stride the runtime pads to, from the manifest beside the model (1 without one), read
    by the runtime's own manifest model; ValueError saying where when that manifest is bad."""
    manifest = path.parent / MANIFEST_FILE
    if not manifest.is_file():
        return 1
    try:
        return read_manifest(manifest).input.stride
    except ManifestError as exc:
        raise ValueError(str(exc)) from exc


def measure(
    path: Path,
    sizes: tuple[tuple[int, int], ...] = SIZES,
    threads: int = 2,
    runs: int = 50,
    stride: int | None = None,
) -> list[Timing]:
    """Frame times of the model at `path`, each size padded to `stride` (None: the manifest's)."""
    import onnxruntime as ort  # noqa: PLC0415

    stride = manifest_stride(path) if stride is None else stride

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(0)
    timings: list[Timing] = []
    for width, height in sizes:
        padded = padded_size(height, width, stride, min_size=stride)
        x = rng.random((1, 3, *padded), dtype=np.float32)
        for _ in range(5):
            session.run(None, {name: x})
        times: list[float] = []
        for _ in range(runs):
            t0 = time.perf_counter()
            session.run(None, {name: x})
            times.append((time.perf_counter() - t0) * 1000.0)
        timings.append(Timing(width, height, statistics.median(times), min(times), threads))
    return timings
