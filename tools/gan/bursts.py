"""Training data, truth frames: a clean "truth" frame from a burst of a static scene (seed 001,
FIG. 5B, claims 5–7), for pairs whose noisy half is a real capture.

    python -m tools.gan burst                                   # synthetic bursts, PSNR table
    python -m tools.gan burst --input caps/ --dark darks/ --out truth.png   # your captures

Steps, each on H×W×3 uint8 frames:
1. **Dead pixels** (operations 601–603): average the frames taken in the dark; a pixel whose
   dark average stands out from its 3×3 neighbourhood by more than `dead_threshold` is a
   defect (a working pixel reads its black level in the dark, a hot or stuck one does not).
   Every frame's defects are replaced by bilinear interpolation between the nearest good
   pixels of the row and of the column. The seed compares each target pixel with the dark
   average directly; on a lit scene every pixel would differ, so the comparison is made where
   it tells defects apart: in the dark, against the neighbours.
2. **Intensity alignment** (claim 6): each frame's mean; frames whose mean lies outside the
   confidence interval centre ± `z`·σ are dropped (flicker, exposure hunting). Centre and σ are
   the median and the scaled median absolute deviation (the seed says mean and variance; with
   a few flickering frames those widen the interval until it hides them), σ at least
   `min_sigma` grey levels.
3. **Clipped values** (claim 7): a value ≤ `low` or ≥ `high` is replaced by the most frequent
   value at that position among the kept frames (ties: the one nearest their median).
4. The truth frame is the mean of what is left.

The benchmark makes bursts from real frames (a still scene: the same frame every time) with a
synthetic sensor: signal-dependent noise, hot and stuck pixels, transient clipped pixels and
flickering frames, and scores the truth frame against the frame it came from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tools.gan.data import Sample
from tools.gan.degrade import RGB, Float
from tools.gan.runtime import Runtime

FloatStack = npt.NDArray[np.float32]
"""N×H×W×3 float32 grey levels."""


class BurstConfig(BaseModel):
    """Thresholds of the truth-frame procedure (grey levels of 8-bit frames)."""

    model_config = ConfigDict(extra="forbid")

    dead_threshold: float = Field(
        12.0, gt=0, le=255, description="Dark-average deviation from its neighbours: a defect."
    )
    z: float = Field(3.0, gt=0, le=20, description="Half-width of the interval, in σ.")
    min_sigma: float = Field(0.5, gt=0, le=50, description="Floor of σ (grey levels).")
    low: int = Field(0, ge=0, le=254, description="At or below: clipped.")
    high: int = Field(255, ge=1, le=255, description="At or above: clipped.")
    dead_pixels: bool = Field(default=True, description="Step 1 on.")
    align: bool = Field(default=True, description="Step 2 on.")
    clipped_mode: bool = Field(default=True, description="Step 3 on.")

    @model_validator(mode="after")
    def _low_below_high(self) -> BurstConfig:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


@dataclass(frozen=True, slots=True)
class Truth:
    """A truth frame and what was done to get it."""

    image: RGB
    mean: Float
    """The same before rounding, H×W×3 float32."""
    kept: tuple[int, ...]
    dropped: tuple[int, ...]
    defects: int
    clipped: int


def _check(frames: Sequence[RGB], what: str) -> npt.NDArray[np.uint8]:
    if not frames:
        raise ValueError(f"no {what}")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"{what} differ in size: {sorted(shapes)}")
    stack = np.stack(frames)
    if stack.dtype != np.uint8 or stack.ndim != 4 or stack.shape[3] != 3:
        raise ValueError(f"{what}: expected H×W×3 uint8 frames, got {stack.dtype} {stack.shape}")
    return stack


def defect_map(
    dark_frames: Sequence[RGB], threshold: float, high: float = 255
) -> npt.NDArray[np.bool_]:
    """H×W: pixels whose dark average stands out from its 3×3 median by more than
    `threshold` in any channel. A transient saturated value in one dark frame (a readout
    glitch) is first replaced by the position's most frequent value, as step 3 does, so it
    does not pass for a defect; a pixel stuck at `high` keeps it in every frame and stays."""
    stack = _check(dark_frames, "dark frames").astype(np.float32)
    stack, _ = replace_clipped(stack, -1.0, high)
    dark = stack.mean(axis=0)
    local = np.asarray(cv2.medianBlur(np.ascontiguousarray(dark), 3), np.float32)
    out: npt.NDArray[np.bool_] = (np.abs(dark - local) > threshold).any(axis=2)
    return out


def _fill_along_rows(values: FloatStack, bad: npt.NDArray[np.bool_]) -> tuple[FloatStack, Float]:
    """Linear interpolation along axis 2 (the row) between the nearest good pixels left and
    right of each bad one; also whether a value was found (1) or not (0), H×W."""
    _, h, w, _ = values.shape
    idx = np.broadcast_to(np.arange(w), (h, w))
    left = np.maximum.accumulate(np.where(bad, -1, idx), axis=1)
    right = np.minimum.accumulate(np.where(bad, w, idx)[:, ::-1], axis=1)[:, ::-1]
    found = (left >= 0) & (right < w)
    lc, rc = np.clip(left, 0, w - 1), np.clip(right, 0, w - 1)
    rows = np.arange(h)[:, None]
    vl, vr = values[:, rows, lc], values[:, rows, rc]
    t = ((idx - lc) / np.maximum(rc - lc, 1)).astype(np.float32)[None, ..., None]
    filled = (vl + (vr - vl) * t).astype(np.float32)
    return filled, found.astype(np.float32)


def interpolate_defects(frames: FloatStack, bad: npt.NDArray[np.bool_]) -> FloatStack:
    """Every frame with its `bad` pixels replaced by the mean of the row and the column
    interpolations (bilinear between the four nearest good pixels)."""
    if not bad.any():
        return frames
    fh, ok_h = _fill_along_rows(frames, bad)
    fv, ok_v = _fill_along_rows(frames.transpose(0, 2, 1, 3), bad.T)
    fv, ok_v = fv.transpose(0, 2, 1, 3), ok_v.T
    weight = ok_h + ok_v
    est = (fh * ok_h[None, ..., None] + fv * ok_v[None, ..., None]) / np.maximum(weight, 1)[
        None, ..., None
    ]
    out: FloatStack = frames.copy()  # annotated: numpy's stubs, see [tool.mypy]
    use = bad & (weight > 0)
    out[:, use] = est[:, use]
    return out


def aligned(means: Sequence[float], z: float, min_sigma: float) -> list[int]:
    """Indices of the frames whose mean lies within median ± z·σ (σ: scaled MAD)."""
    m = np.asarray(means, np.float64)
    centre = float(np.median(m))
    sigma = max(1.4826 * float(np.median(np.abs(m - centre))), min_sigma)
    return [i for i, v in enumerate(m) if abs(v - centre) <= z * sigma]


def replace_clipped(frames: FloatStack, low: float, high: float) -> tuple[FloatStack, int]:
    """Values ≤ `low` or ≥ `high` replaced by the most frequent value at their position across
    the frames (ties: nearest the median there). Returns the frames and how many were replaced."""
    clipped = (frames <= low) | (frames >= high)
    count = int(clipped.sum())
    if count == 0 or frames.shape[0] < 2:
        return frames, 0
    where = clipped.any(axis=0)  # positions (H×W×C) with a clipped value in some frame
    columns = frames[:, where]  # N×M
    ordered = np.sort(columns, axis=0)
    counts = (ordered[:, None, :] == ordered[None, :, :]).sum(axis=1)  # N×M occurrences
    median = np.median(ordered, axis=0)
    rank = counts * 1024.0 - np.abs(ordered - median[None])
    mode = np.take_along_axis(ordered, rank.argmax(axis=0)[None], axis=0)[0]
    columns = np.where(clipped[:, where], mode[None], columns)
    out = frames.copy()
    out[:, where] = columns
    return out, count


def truth_frame(
    frames: Sequence[RGB], dark_frames: Sequence[RGB] = (), config: BurstConfig | None = None
) -> Truth:
    """The truth frame of a burst of one still scene (see the module text for the steps)."""
    c = config or BurstConfig()
    if c.low >= c.high:
        raise ValueError(f"low ({c.low}) must be below high ({c.high})")
    stack = _check(frames, "frames").astype(np.float32)
    bad = np.zeros(stack.shape[1:3], np.bool_)
    if c.dead_pixels and dark_frames:
        bad = defect_map(dark_frames, c.dead_threshold, c.high)
        if bad.shape != stack.shape[1:3]:
            raise ValueError(f"dark frames are {bad.shape}, frames {stack.shape[1:3]}")
        stack = interpolate_defects(stack, bad)
    kept = list(range(len(stack)))
    if c.align:
        kept = aligned([float(f.mean()) for f in stack], c.z, c.min_sigma)
        stack = stack[kept]
    clipped = 0
    if c.clipped_mode:
        stack, clipped = replace_clipped(stack, c.low, c.high)
    mean = stack.mean(axis=0).astype(np.float32)
    image = np.asarray(np.clip(mean + 0.5, 0, 255), np.uint8)
    dropped = tuple(i for i in range(len(frames)) if i not in kept)
    return Truth(image, mean, tuple(kept), dropped, int(bad.sum()), clipped)


# -- synthetic bursts from real frames (the benchmark and the tests) -----------------------------


class SensorConfig(BaseModel):
    """The synthetic sensor a burst is captured with (grey levels of 8-bit frames)."""

    model_config = ConfigDict(extra="forbid")

    frames: int = Field(16, ge=2, le=256, description="Frames per burst.")
    dark_frames: int = Field(8, ge=1, le=256, description="Frames taken in the dark.")
    shot: float = Field(0.5, ge=0, description="Noise variance per grey level of signal.")
    read: float = Field(2.0, ge=0, description="Noise σ at black (grey levels).")
    defects: float = Field(5e-4, ge=0, le=0.05, description="Share of hot or stuck pixels.")
    glitches: float = Field(2e-3, ge=0, le=0.05, description="Share of transient 0/255 values.")
    flicker_frames: int = Field(3, ge=0, le=255, description="Frames with a wrong exposure.")
    flicker: float = Field(0.25, ge=0, le=0.9, description="Their gain error, ±.")

    @model_validator(mode="after")
    def _some_frames_steady(self) -> SensorConfig:
        if self.flicker_frames >= self.frames:
            raise ValueError(
                f"flicker_frames ({self.flicker_frames}) must be fewer than frames ({self.frames})"
            )
        return self


@dataclass(frozen=True, slots=True)
class Burst:
    frames: list[RGB]
    dark: list[RGB]
    defects: npt.NDArray[np.bool_]
    flickered: tuple[int, ...]


def synthetic_burst(clean: RGB, sensor: SensorConfig, seed: int) -> Burst:
    """`sensor.frames` captures of the still scene `clean` and `sensor.dark_frames` captures in
    the dark: Gaussian noise of variance shot·signal + read², hot pixels (an offset of 40–200
    levels) and stuck pixels (a fixed value ≥ 60) at the same places in every frame, transient
    0/255 glitches, and `flicker_frames` frames exposed ×(1 ± flicker)."""
    rng = np.random.default_rng(seed)
    h, w = clean.shape[:2]
    defects = rng.random((h, w)) < sensor.defects
    hot = defects & (rng.random((h, w)) < 0.5)
    stuck = defects & ~hot
    offset = rng.uniform(40, 200, (h, w, 1)).astype(np.float32)
    stuck_value = rng.uniform(60, 255, (h, w, 3)).astype(np.float32)
    flickered = tuple(
        int(i) for i in rng.choice(sensor.frames, sensor.flicker_frames, replace=False)
    )

    def capture(signal: Float) -> RGB:
        std = np.sqrt(sensor.shot * np.maximum(signal, 0) + sensor.read**2).astype(np.float32)
        x = signal + rng.standard_normal(signal.shape, dtype=np.float32) * std
        x = np.where(hot[..., None], x + offset, x)
        x = np.where(stuck[..., None], stuck_value, x)
        glitch = rng.random(signal.shape) < sensor.glitches
        x = np.where(glitch, np.where(rng.random(signal.shape) < 0.5, 0.0, 255.0), x)
        return np.asarray(np.clip(x + 0.5, 0, 255), np.uint8)

    base = clean.astype(np.float32)
    frames = []
    for i in range(sensor.frames):
        gain = 1.0
        if i in flickered:
            gain = 1.0 + sensor.flicker * (1.0 if rng.random() < 0.5 else -1.0)
        frames.append(capture(base * np.float32(gain)))
    dark = [capture(np.zeros_like(base)) for _ in range(sensor.dark_frames)]
    return Burst(frames, dark, defects, flickered)


VARIANTS: dict[str, dict[str, bool]] = {
    "truth (all steps)": {},
    "without dead-pixel step": {"dead_pixels": False},
    "without intensity alignment": {"align": False},
    "without clipped-value mode": {"clipped_mode": False},
}


def evaluate_burst(
    clean: RGB, sensor: SensorConfig, seed: int, config: BurstConfig | None = None
) -> dict[str, float]:
    """PSNR (dB) against `clean` of: one frame, the plain mean, the median, the truth frame and
    the truth frame with each step left out; and how many flickering frames were dropped."""
    from tools.gan.bench import psnr  # noqa: PLC0415 - bench pulls in more than bursts needs

    c = config or BurstConfig()
    burst = synthetic_burst(clean, sensor, seed)
    stack = np.stack(burst.frames).astype(np.float32)
    single = next(i for i in range(sensor.frames) if i not in burst.flickered)
    out = {
        "single frame": psnr(clean, burst.frames[single]),
        "plain mean": psnr(clean, np.asarray(np.clip(stack.mean(0) + 0.5, 0, 255), np.uint8)),
        "median": psnr(clean, np.asarray(np.clip(np.median(stack, 0) + 0.5, 0, 255), np.uint8)),
    }
    for name, change in VARIANTS.items():
        truth = truth_frame(burst.frames, burst.dark, c.model_copy(update=change))
        out[name] = psnr(clean, truth.image)
        if not change:
            out["flickering frames dropped"] = float(len(set(truth.dropped) & set(burst.flickered)))
            out["good frames dropped"] = float(len(set(truth.dropped) - set(burst.flickered)))
            out["defects found"] = float(truth.defects)
            out["defects planted"] = float(burst.defects.sum())
    return out


def read_folder(folder: Path) -> list[RGB]:
    """Every image file of a folder, by name, as RGB."""
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    paths = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp")
    )
    if not paths:
        raise ValueError(f"{folder}: no .png/.jpg/.bmp images")
    frames: list[RGB] = []
    for p in paths:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{p}: cannot read")
        frames.append(np.ascontiguousarray(bgr[..., ::-1], dtype=np.uint8))
    return frames


def save(path: Path, image: RGB) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1])):
        raise ValueError(f"{path}: cannot write (use .png)")


def write_report(path: Path, rows: dict[str, dict[str, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1) + "\n")


def benchmark(
    samples: Sequence[Sample],
    sensor: SensorConfig,
    runtime: Runtime,
    config: BurstConfig | None = None,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """`evaluate_burst` on every sample (scene i seeded `seed + i`), shared among the processes
    of a `torchrun` job; every process returns all rows, in sample order."""
    mine = runtime.shard(list(enumerate(samples)))
    rows: dict[str, dict[str, float]] = {}
    with runtime.bar("bursts", len(mine)) as advance:
        for i, sample in mine:
            rows[sample.name] = evaluate_burst(sample.image, sensor, seed + i, config)
            advance(sample.name)
    merged: dict[str, dict[str, float]] = {}
    for part in runtime.gather(rows):
        merged.update(part)
    return {s.name: merged[s.name] for s in samples}


def summary(rows: dict[str, dict[str, float]]) -> dict[str, float]:
    """The mean of every figure over the scenes."""
    keys = next(iter(rows.values())).keys()
    return {k: float(np.mean([r[k] for r in rows.values()])) for k in keys}


def table(mean: dict[str, float]) -> str:
    """Markdown: PSNR of each way to make the truth frame."""
    methods = ["single frame", "plain mean", "median", *VARIANTS]
    lines = ["| truth frame from | PSNR (dB) |", "|---|---:|"]
    best = max(mean[m] for m in methods)
    for m in methods:
        cell = f"{mean[m]:.2f}"
        lines.append(f"| {m} | {f'**{cell}**' if mean[m] == best else cell} |")
    return "\n".join(lines)
