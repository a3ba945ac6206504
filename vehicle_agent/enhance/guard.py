"""Enhance stage, after a backend: keep its output only where there is evidence it helps.

`HarmGuard.apply(image, output)` compares a backend's output with its input and returns the
frame to show: the output, the input, or the blend `input + w·(output − input)`. The weight `w`
comes from a few no-reference rules measured on two cheap thumbnails (`GuardParams.thumb_width`
pixels wide, area-averaged, so noise is averaged away) and on a few full-resolution rows (where
the noise still is). Each rule gives a factor in [0, 1] through a linear ramp, never a hard
switch; the frame's target is the smallest factor (the strongest objection wins), and `w` follows
that target exponentially over a few frames so video does not flicker. Each rule below pulls
`w` towards 0 (identity) when its condition holds:

1. **The input is already good** (mean luma inside a comfortable band, RMS contrast high,
   almost nothing crushed or clipped). The models are trained to repair degraded
   frames; on a good one there is little to gain, and that is where the shipped tone-curve model
   misreads warm dusk light as fog and dehazes it.
2. **The output is darker than a not-bright input**. None of the conditions the
   chain enhances (low light, haze, rain, blur) is repaired by darkening a frame that is not
   bright, and darkening is how the wrong dehaze and the darkened flat scenes show. Inputs at
   least `bright_mean` may be darkened (a veil of fog or glare is bright).
3. **The output crushes or clips more pixels than the input**. Detail pushed to 0 or
   255 is lost for the viewer and for every detector downstream; no contrast gain is worth that.
4. **The output's local contrast is not higher than the input's** (mean gradient of the
   thumbnail's luma). Structure the eye and the detectors can use is the point of
   enhancing; an output that does not add it (a washed-out or flattened frame) has no upside.
5. **The output amplifies high-frequency noise much more than it lifts the signal** (the ratio
   of the fine-scale gain, measured as the median second difference on full-resolution rows,
   to the coarse gain of rule 4). A tone curve lifts both alike; far more fine-scale
   gain than coarse gain is amplified sensor noise (or over-sharpening), which hides detail
   and costs bits on the uplink.

Fine-scale restoration (deblurring, denoising, removing drops) is not credited by rule 4 and may
be penalised by rule 5; the shipped models are tone curves, so that is the conservative side.
Every number is a field of `GuardParams`. Pure numpy/OpenCV, no state but the smoothed weight.
Cost on one core at 1280×720: about 0.3 ms to decide, plus about 0.4 ms for the blend on the
frames where 0 < w < 1 (w near 0 or 1 returns the input or the output itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from vehicle_agent.records import Image

_Luma = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class GuardParams:
    """Thresholds of `HarmGuard` (luma in grey levels 0–255, fractions in 0–1)."""

    thumb_width: int = 80
    """Thumbnail width in pixels (height keeps the aspect); frames narrower are used whole."""
    noise_rows: int = 16
    """Full-resolution rows, evenly spaced, on which the fine-scale (noise) level is measured."""

    good_mean_low: float = 70.0
    """Rule 1: the comfortable band of mean luma starts here …"""
    good_mean_high: float = 180.0
    """… and ends here …"""
    good_mean_margin: float = 20.0
    """… and fades out over this many grey levels either side."""
    good_contrast_low: float = 36.0
    """Rule 1: RMS contrast (luma std of the thumbnail) where an input starts to count as good …"""
    good_contrast_high: float = 48.0
    """… and where it fully does."""
    good_extremes_low: float = 0.02
    """Rule 1: a crushed + clipped fraction up to this still counts as well exposed …"""
    good_extremes_high: float = 0.08
    """… and from this fraction on the input does not count as good at all."""

    bright_mean: float = 160.0
    """Rule 2: inputs with at least this mean luma may be darkened (fog veil, glare)."""
    darken_tolerance: float = 2.0
    """Rule 2: a drop of mean luma up to this is ignored (rounding, a slight colour shift) …"""
    darken_limit: float = 10.0
    """… and a drop of this much or more means identity."""

    black_level: float = 5.0
    """Rule 3: thumbnail pixels at or below this luma count as crushed …"""
    white_level: float = 250.0
    """… at or above this as clipped."""
    clip_tolerance: float = 0.01
    """Rule 3: extra crushed + clipped fraction of the output ignored …"""
    clip_limit: float = 0.05
    """… and the extra fraction that means identity."""

    structure_floor: float = 0.97
    """Rule 4: gain of mean thumbnail gradient (output / input) at or below which: identity …"""
    structure_full: float = 1.10
    """… and at or above which the output is kept in full."""
    structure_eps: float = 0.5
    """Rule 4: grey levels added to both gradients, so a flat frame's ratio stays finite."""

    noise_eps: float = 2.0
    """Rule 5: grey levels added to both fine-scale levels: a clean frame's is 0–2, mostly
    quantisation, and without it 1 → 2 would read as doubled noise."""
    noise_excess_tolerance: float = 1.3
    """Rule 5: fine-scale gain / coarse gain up to this keeps the output …"""
    noise_excess_limit: float = 1.8
    """… and from this ratio on: identity."""

    fall_frames: float = 2.0
    """Time constant, in frames, with which `w` follows a lower target (pull back quickly) …"""
    rise_frames: float = 5.0
    """… and a higher one (trust again slowly)."""
    snap: float = 0.02
    """`w` within this of 0 or 1 returns the input or output itself, with no blend."""

    def __post_init__(self) -> None:
        ramps = {
            "good_mean": (self.good_mean_low, self.good_mean_high),
            "good_contrast": (self.good_contrast_low, self.good_contrast_high),
            "good_extremes": (self.good_extremes_low, self.good_extremes_high),
            "darken": (self.darken_tolerance, self.darken_limit),
            "levels": (self.black_level, self.white_level),
            "clip": (self.clip_tolerance, self.clip_limit),
            "structure": (self.structure_floor, self.structure_full),
            "noise_excess": (self.noise_excess_tolerance, self.noise_excess_limit),
        }
        for name, (low, high) in ramps.items():
            if not low < high:
                raise ValueError(f"GuardParams: {name} needs low < high, got {low} and {high}")
        if self.thumb_width < 8 or self.noise_rows < 1:
            raise ValueError("GuardParams: thumb_width must be ≥ 8 and noise_rows ≥ 1")
        if min(self.fall_frames, self.rise_frames) <= 0 or not 0 <= self.snap < 0.5:
            raise ValueError("GuardParams: frame constants must be > 0 and snap in [0, 0.5)")


@dataclass(frozen=True, slots=True)
class Measures:
    """What the rules look at, for one frame (input or output)."""

    mean: float
    contrast: float
    """RMS contrast: std of the thumbnail's luma."""
    extremes: float
    """Fraction of thumbnail pixels crushed or clipped."""
    gradient: float
    """Mean |∂x| + |∂y| of the thumbnail's luma: coarse local contrast."""
    fine: float
    """Median |second difference| on full-resolution green rows: fine-scale (noise) level."""


@dataclass(frozen=True, slots=True)
class GuardDecision:
    """One frame's verdict: each rule's factor, the target (their minimum) and the smoothed w."""

    good_input: float
    darkening: float
    clipping: float
    structure: float
    noise: float
    target: float
    weight: float

    @property
    def reason(self) -> str:
        """The rule that set the target (the one with the smallest factor), or 'none'."""
        factors = {
            "good_input": self.good_input,
            "darkening": self.darkening,
            "clipping": self.clipping,
            "structure": self.structure,
            "noise": self.noise,
        }
        rule = min(factors, key=factors.__getitem__)
        return rule if factors[rule] < 1.0 else "none"


def _ramp(value: float, low: float, high: float) -> float:
    """0 at or below `low`, 1 at or above `high`, linear between."""
    return min(1.0, max(0.0, (value - low) / (high - low)))


def _check(image: object, what: str) -> Image:
    if not isinstance(image, np.ndarray):
        # ValueError, not TypeError: one exception for every frame the guard cannot judge.
        raise ValueError(  # noqa: TRY004
            f"guard: {what} must be a numpy array, got {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        raise ValueError(f"guard: {what} dtype is {image.dtype}, expected uint8")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 3 or image.shape[1] < 3:
        raise ValueError(f"guard: {what} shape is {image.shape}, expected H×W×3 with H, W ≥ 3")
    return image


class HarmGuard:
    """Per-frame check of a backend's output against its input; one instance per stream.

    Not thread-safe: the enhance thread alone calls `apply` (it holds the smoothed weight)."""

    def __init__(self, params: GuardParams | None = None) -> None:
        self.params = params or GuardParams()
        self.weight: float | None = None
        """The smoothed w of the last frame; None before the first (or after `reset`)."""
        self.last: GuardDecision | None = None

    def reset(self) -> None:
        """Forget the smoothed weight: the next frame starts at its own target."""
        self.weight = None
        self.last = None

    def apply(self, image: Image, output: Image) -> Image:
        """The frame to show for `output`, a backend's result on `image` (both H×W×3 uint8)."""
        decision = self.decide(image, output)
        w = decision.weight
        if w >= 1.0 - self.params.snap:
            return output
        if w <= self.params.snap:
            return image
        return np.asarray(cv2.addWeighted(output, w, image, 1.0 - w, 0.0), dtype=np.uint8)

    def decide(self, image: Image, output: Image) -> GuardDecision:
        """Measure both frames, apply the rules, smooth; records and returns the decision."""
        _check(image, "input")
        _check(output, "output")
        if output.shape != image.shape:
            raise ValueError(
                f"guard: output shape {output.shape} differs from input shape {image.shape}"
            )
        before, after = self.measure(image), self.measure(output)
        decision = self._judge(before, after)
        self.last = decision
        return decision

    def measure(self, image: Image) -> Measures:
        """The rules' measures of one frame: a thumbnail and a few full-resolution rows."""
        p = self.params
        luma = self._thumbnail_luma(image)
        mean = float(luma.mean())
        contrast = float(luma.std())
        extremes = float(np.count_nonzero((luma <= p.black_level) | (luma >= p.white_level)))
        gx = np.abs(np.diff(luma, axis=1)).mean()
        gy = np.abs(np.diff(luma, axis=0)).mean()
        return Measures(
            mean=mean,
            contrast=contrast,
            extremes=extremes / luma.size,
            gradient=float(gx + gy),
            fine=self._fine_level(image),
        )

    def _thumbnail_luma(self, image: Image) -> _Luma:
        height, width = image.shape[:2]
        target = self.params.thumb_width
        small: Image = image
        if width > target:
            size = (target, max(2, round(height * target / width)))
            if width > 2 * target:
                # Bilinear to twice the size first (it reads 4 pixels per output pixel, so it is
                # cheap at any scale), then a true area average: 1280×720 → 80×45 in ~45 µs
                # where one INTER_AREA pass costs ~600 µs.
                twice = (2 * size[0], 2 * size[1])
                small = np.asarray(cv2.resize(image, twice, interpolation=cv2.INTER_LINEAR))
            small = np.asarray(cv2.resize(small, size, interpolation=cv2.INTER_AREA))
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        return np.asarray(gray, dtype=np.float32)

    def _fine_level(self, image: Image) -> float:
        """Median |x[i-1] − 2x[i] + x[i+1]| of green on evenly spaced rows.

        The second difference ignores smooth gradients; the median ignores the few edges, so on
        most frames this follows the sensor noise (green carries most of the luma)."""
        height = image.shape[0]
        rows = np.linspace(0, height - 1, min(self.params.noise_rows, height)).astype(np.intp)
        green = image[rows, :, 1].astype(np.int16)
        second = np.abs(green[:, :-2] - 2 * green[:, 1:-1] + green[:, 2:])
        # A histogram median (values are at most 4·255; bincount beats a partition here),
        # interpolated within its bin so that it moves smoothly rather than in whole steps.
        counts = np.bincount(second.ravel())
        cumulative = counts.cumsum()
        half = cumulative[-1] / 2.0
        median = int(np.searchsorted(cumulative, half))
        below = float(cumulative[median - 1]) if median > 0 else 0.0
        return max(0.0, median - 0.5 + float(half - below) / float(counts[median]))

    def _judge(self, before: Measures, after: Measures) -> GuardDecision:
        p = self.params
        in_band = min(
            _ramp(before.mean, p.good_mean_low - p.good_mean_margin, p.good_mean_low),
            1.0 - _ramp(before.mean, p.good_mean_high, p.good_mean_high + p.good_mean_margin),
        )
        goodness = (
            in_band
            * _ramp(before.contrast, p.good_contrast_low, p.good_contrast_high)
            * (1.0 - _ramp(before.extremes, p.good_extremes_low, p.good_extremes_high))
        )
        darkening = 1.0
        if before.mean < p.bright_mean:
            darkening = 1.0 - _ramp(before.mean - after.mean, p.darken_tolerance, p.darken_limit)
        clipping = 1.0 - _ramp(after.extremes - before.extremes, p.clip_tolerance, p.clip_limit)
        coarse_gain = (after.gradient + p.structure_eps) / (before.gradient + p.structure_eps)
        structure = _ramp(coarse_gain, p.structure_floor, p.structure_full)
        fine_gain = (after.fine + p.noise_eps) / (before.fine + p.noise_eps)
        excess = fine_gain / max(coarse_gain, 1.0)
        noise = 1.0 - _ramp(excess, p.noise_excess_tolerance, p.noise_excess_limit)
        target = min(1.0 - goodness, darkening, clipping, structure, noise)
        self.weight = self._smooth(target)
        return GuardDecision(
            1.0 - goodness, darkening, clipping, structure, noise, target, self.weight
        )

    def _smooth(self, target: float) -> float:
        if self.weight is None:
            return target
        frames = self.params.fall_frames if target < self.weight else self.params.rise_frames
        alpha = 1.0 - math.exp(-1.0 / frames)
        return self.weight + alpha * (target - self.weight)
