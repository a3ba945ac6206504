"""Model updates, the gate before activation: load the new model and run it on golden frames.

The model is loaded the way the enhance stage will load it (the chain's first model backend
that the update names and this machine has: on the vehicle TensorRT, whose engine build is
cached for the swap; else onnxruntime), then each golden frame must come out finite, not blank,
not wildly changed from its input, and the median latency must stay within budget. Blocking:
call from a worker thread.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vehicle_agent.enhance.base import BackendUnavailableError, Enhancer, create_enhancer
from vehicle_agent.enhance.manifest import ManifestError, read_manifest, verify_file
from vehicle_agent.enhance.model import NonFiniteOutputError
from vehicle_agent.enhance.store import ModelRef
from vehicle_agent.records import Image
from vehicle_agent.workers import give_back_memory

logger = logging.getLogger(__name__)

FailureKind = Literal["load", "unavailable", "error", "nan", "blank", "changed", "slow"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
SAMPLE_VIDEO = "street_vtest.mp4"


class HealthCheckFailedError(Exception):
    """The new model failed its health check; `kind` says how, `reason` what happened."""

    def __init__(self, kind: FailureKind, reason: str) -> None:
        self.kind = kind
        self.reason = reason
        super().__init__(f"{kind}: {reason}")


@dataclass(frozen=True, slots=True)
class HealthLimits:
    max_latency_ms: float
    blank_std: float
    max_mean_change: float


@dataclass(frozen=True, slots=True)
class HealthReport:
    backend: str
    frames: int
    median_ms: float
    max_ms: float
    load_s: float


def golden_frames(folder: Path | None, count: int, width: int = 640) -> list[Image]:
    """Up to `count` frames: images from `folder`, or frames spread over the sample clip shipped
    with the package (a real street scene), resized to `width` pixels wide."""
    import cv2  # noqa: PLC0415 - the daemon imports OpenCV anyway; kept local for start-up time

    frames: list[Image] = []
    if folder is not None:
        try:
            paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        except OSError as exc:
            raise HealthCheckFailedError("load", f"golden frames {folder}: {exc}") from exc
        for path in paths[:count]:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise HealthCheckFailedError("load", f"golden frame {path} cannot be decoded")
            frames.append(np.asarray(image, np.uint8))
        if not frames:
            raise HealthCheckFailedError("load", f"no golden frames (PNG/JPEG) in {folder}")
    else:
        video = Path(__file__).resolve().parent.parent / "sim" / "samples" / SAMPLE_VIDEO
        capture = cv2.VideoCapture(str(video))
        try:
            total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or count
            for i in range(count):
                capture.set(cv2.CAP_PROP_POS_FRAMES, i * max(1, total // count))
                ok, image = capture.read()
                if ok:
                    frames.append(np.asarray(image, np.uint8))
        finally:
            capture.release()
        if not frames:
            raise HealthCheckFailedError("load", f"cannot read golden frames from {video}")
    out: list[Image] = []
    for frame in frames:
        h, w = frame.shape[:2]
        image = cv2.resize(frame, (width, max(1, round(h * width / w)))) if w > width else frame
        out.append(np.ascontiguousarray(image, np.uint8))
    return out


def model_ref(directory: Path) -> ModelRef:
    """A model folder's manifest and file, sha256 verified."""
    try:
        manifest = read_manifest(directory)
        return ModelRef(directory, manifest, verify_file(directory, manifest))
    except ManifestError as exc:
        raise HealthCheckFailedError("load", str(exc)) from exc


def health_check(
    model: ModelRef,
    backends: Sequence[Any],
    frames: Sequence[Image],
    limits: HealthLimits,
    *,
    state_dir: Path | None = None,
    factory: Callable[..., Enhancer] = create_enhancer,
) -> HealthReport:
    """Load `model` with the first of `backends` (model backend configs, in chain order) that
    this machine has, and run it on `frames`; `HealthCheckFailedError` if anything is off."""
    unavailable: list[str] = []
    for config in backends:
        start = time.perf_counter()
        try:
            enhancer = factory(config, model=model, state_dir=state_dir)
        except BackendUnavailableError as exc:
            unavailable.append(str(exc))
            continue
        try:
            enhancer.load()
        except BackendUnavailableError as exc:
            unavailable.append(str(exc))
            enhancer.close()
            continue
        except NonFiniteOutputError as exc:  # its warm-up frame already gave NaN
            enhancer.close()
            raise HealthCheckFailedError("nan", f"warm-up: {exc}") from exc
        except Exception as exc:
            enhancer.close()
            raise HealthCheckFailedError("load", f"{type(exc).__name__}: {exc}") from exc
        load_s = time.perf_counter() - start
        try:
            return _run(enhancer, str(config.type), frames, limits, load_s)
        finally:
            enhancer.close()
            give_back_memory()
    raise HealthCheckFailedError(
        "unavailable", "no backend of the update can run here: " + "; ".join(unavailable)
    )


def _run(
    enhancer: Enhancer, backend: str, frames: Sequence[Image], limits: HealthLimits, load_s: float
) -> HealthReport:
    times: list[float] = []
    for i, image in enumerate(frames):
        start = time.perf_counter()
        try:
            out = enhancer.enhance(image)
        except NonFiniteOutputError as exc:
            raise HealthCheckFailedError("nan", f"golden frame {i}: {exc}") from exc
        except Exception as exc:
            raise HealthCheckFailedError(
                "error", f"golden frame {i}: {type(exc).__name__}: {exc}"
            ) from exc
        times.append((time.perf_counter() - start) * 1000)
        if limits.blank_std > 0 and float(np.std(out)) < limits.blank_std <= float(np.std(image)):
            raise HealthCheckFailedError(
                "blank", f"golden frame {i}: blank output (pixel std < {limits.blank_std:g})"
            )
        change = float(np.mean(np.abs(out.astype(np.int16) - image.astype(np.int16))))
        if change > limits.max_mean_change:
            raise HealthCheckFailedError(
                "changed",
                f"golden frame {i}: output differs from the input by {change:.1f} on average "
                f"(> {limits.max_mean_change:g} of 255)",
            )
    median = statistics.median(times)
    if median > limits.max_latency_ms:
        raise HealthCheckFailedError(
            "slow", f"median {median:.1f} ms per golden frame > {limits.max_latency_ms:g} ms"
        )
    logger.info(
        "health check of %s on %s: %d golden frames, median %.1f ms",
        enhancer.name,
        backend,
        len(frames),
        median,
    )
    return HealthReport(backend, len(frames), round(median, 2), round(max(times), 2), load_s)
