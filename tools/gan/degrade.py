"""Training pairs, first step of training: a good frame and a copy whose quality was lowered.

As the patent does (¶71–72): keep the good frame as the first training image and derive the
second by lowering its quality: low light with sensor noise, haze/fog, water drops on the lens,
motion blur, noise, masks. Every degradation is a pure function of the frame and a seed, so a
data set is the same on every machine. Images are H×W×3 uint8 **RGB** here (training order);
the lens-drop renderer of the simulator is colour-order agnostic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias, get_args

import cv2
import numpy as np
import numpy.typing as npt

from vehicle_agent.sim.lens import render_adhesion

Kind: TypeAlias = Literal["clean", "low_light", "fog", "rain", "blur", "noise", "mask"]
KINDS: tuple[Kind, ...] = get_args(Kind)

RGB: TypeAlias = npt.NDArray[np.uint8]
"""H×W×3 uint8, RGB."""
Float: TypeAlias = npt.NDArray[np.float32]
Mask: TypeAlias = npt.NDArray[np.bool_]


def to_float(image: RGB) -> Float:
    """uint8 → 0–1 float32 (still sRGB-encoded)."""
    out: Float = image.astype(np.float32) / np.float32(
        255.0
    )  # annotated: numpy's stubs, see [tool.mypy]
    return out


def to_uint8(image: npt.NDArray[np.floating]) -> RGB:
    """0–1 float (sRGB-encoded) → uint8, rounded to the nearest level and clipped."""
    return np.asarray(np.clip(image * 255.0 + 0.5, 0, 255), dtype=np.uint8)


def srgb_to_linear(x: Float) -> Float:
    """IEC 61966-2-1 decoding (the curve cameras encode with, linear toe included)."""
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: Float) -> Float:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055).astype(np.float32)


def _smooth_field(rng: np.random.Generator, height: int, width: int, cells: int) -> Float:
    """Smooth random field in [0, 1]: a few random values per side, bicubically enlarged."""
    small = rng.uniform(0.0, 1.0, (cells, max(2, round(cells * width / height)))).astype(np.float32)
    big = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(np.asarray(big, np.float32), 0.0, 1.0)


def low_light(image: RGB, rng: np.random.Generator) -> RGB:
    """Under-exposure seen through a real sensor: exposure cut in linear light, then shot noise
    (variance ∝ signal) and read noise, a white-balance drift, the camera's transfer curve with a
    jittered gamma, and 8-bit quantisation (dark frames keep only a few dozen levels)."""
    linear = srgb_to_linear(to_float(image))
    exposure = float(math.exp(rng.uniform(math.log(0.02), math.log(0.2))))
    balance = rng.uniform(0.88, 1.12, 3).astype(np.float32)
    signal = linear * np.float32(exposure) * balance
    shot = float(math.exp(rng.uniform(math.log(1e-4), math.log(1.5e-3))))
    read = float(rng.uniform(5e-4, 3e-3))
    std = np.sqrt(signal * np.float32(shot) + np.float32(read * read))
    noisy = signal + rng.standard_normal(signal.shape, dtype=np.float32) * std
    gamma = float(rng.uniform(0.85, 1.15))  # the night tone curve differs from the day one
    encoded = linear_to_srgb(np.clip(noisy, 0.0, 1.0)) ** np.float32(gamma)
    return to_uint8(encoded)


def fog(image: RGB, rng: np.random.Generator) -> RGB:
    """Atmospheric scattering I = J·t + A·(1 − t), t = exp(−β·d): the depth proxy d grows towards
    a random horizon (far things sit high in a road scene) with smooth random variation, and the
    airlight A is a bright, slightly tinted grey."""
    height, width = image.shape[:2]
    horizon = rng.uniform(0.2, 0.6)
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    ramp = np.clip(1.0 - (rows - horizon) / (1.0 - horizon), 0.0, 1.0) ** 0.7
    depth = 0.55 * ramp + 0.45 * _smooth_field(rng, height, width, int(rng.integers(2, 6)))
    beta = rng.uniform(0.8, 2.8)
    transmission = np.exp(-beta * depth).astype(np.float32)[..., None]
    airlight = (rng.uniform(0.72, 0.95) + rng.uniform(-0.03, 0.03, 3)).astype(np.float32)
    out = to_float(image) * transmission + airlight * (1.0 - transmission)
    return to_uint8(out)


def rain(image: RGB, rng: np.random.Generator) -> RGB:
    """Water drops on the lens: the simulator's refracting, out-of-focus drops (`sim.lens`)."""
    coverage = float(rng.uniform(0.03, 0.12))
    out, _ = render_adhesion(image, "drops", coverage=coverage, seed=int(rng.integers(1 << 30)))
    return np.asarray(out, np.uint8)


def blur(image: RGB, rng: np.random.Generator) -> RGB:
    """Motion blur: a line kernel, 1–3 % of the width long, at a random angle."""
    width = image.shape[1]
    length = max(3, round(width * rng.uniform(0.01, 0.03)))
    angle = rng.uniform(0.0, 180.0)
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    rotation = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), angle, 1.0)
    kernel = np.asarray(cv2.warpAffine(kernel, rotation, (length, length)), np.float32)
    kernel /= max(float(kernel.sum()), 1e-6)
    out = cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)
    return np.asarray(out, np.uint8)


def noise(image: RGB, rng: np.random.Generator) -> RGB:
    """Sensor noise at normal exposure (high gain): signal-dependent plus constant."""
    x = to_float(image)
    sigma = rng.uniform(0.015, 0.06)
    std = np.sqrt(x * np.float32(sigma * sigma) + np.float32((sigma / 2) ** 2))
    return to_uint8(x + rng.standard_normal(x.shape, dtype=np.float32) * std)


def mask(image: RGB, rng: np.random.Generator) -> RGB:
    """Masks (¶72): one to four opaque blotches, black, grey or mud-coloured, soft-edged."""
    height, width = image.shape[:2]
    alpha = np.zeros((height, width), np.float32)
    for _ in range(int(rng.integers(1, 5))):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(width * rng.uniform(0.03, 0.12)), int(height * rng.uniform(0.03, 0.12)))
        cv2.ellipse(alpha, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    alpha = np.asarray(cv2.GaussianBlur(alpha, (0, 0), max(1.0, height / 200)), np.float32)
    colour = rng.uniform(0.0, 0.5, 3).astype(np.float32)
    out = to_float(image) * (1.0 - alpha[..., None]) + colour * alpha[..., None]
    return to_uint8(out)


def clean(image: RGB, rng: np.random.Generator) -> RGB:
    """No degradation: the pair teaches the generator to leave a good frame alone."""
    del rng
    out: RGB = image.copy()  # annotated: numpy's stubs, see [tool.mypy]
    return out


DEGRADATIONS: dict[Kind, Callable[[RGB, np.random.Generator], RGB]] = {
    "clean": clean,
    "low_light": low_light,
    "fog": fog,
    "rain": rain,
    "blur": blur,
    "noise": noise,
    "mask": mask,
}


def degrade(image: RGB, kind: Kind, seed: int) -> RGB:
    """`image` (RGB uint8) with `kind` applied; the same seed gives the same bytes."""
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {kind!r}, expected one of {KINDS}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 uint8 image, got {image.dtype} {image.shape}")
    return DEGRADATIONS[kind](image, np.random.default_rng(seed))


def sign_like_mask(image: RGB, min_frac: float = 2e-4, max_frac: float = 0.08) -> Mask | None:
    """Road-sign-like regions when the data carries none: compact, saturated red, blue or yellow
    blobs or bright white plates with strong edges inside. None when nothing qualifies (the
    losses then use the whole frame). A heuristic, not a detector; labelled boxes win."""
    height, width = image.shape[:2]
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    red = ((hue < 10) | (hue > 170)) & (sat > 120) & (val > 70)
    blue = (hue > 100) & (hue < 130) & (sat > 120) & (val > 50)
    yellow = (hue > 18) & (hue < 35) & (sat > 120) & (val > 110)
    colour = (red | blue | yellow).astype(np.uint8)
    edges = cv2.Canny(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 80, 160) > 0
    count, _labels, stats, _ = cv2.connectedComponentsWithStats(colour, connectivity=8)
    out = np.zeros((height, width), np.bool_)
    total = height * width
    for label in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[label])
        if not min_frac * total <= area <= max_frac * total:
            continue
        if not 0.4 <= w / max(h, 1) <= 2.5 or area < 0.45 * w * h:
            continue  # signs are compact: not streaks, not thin outlines
        box = (slice(y, y + h), slice(x, x + w))
        if edges[box].mean() < 0.04:
            continue  # a plain coloured surface, no symbol on it
        out[box] = True
    return out if out.any() else None


def boxes_to_mask(boxes: Sequence[Sequence[float]], height: int, width: int) -> Mask:
    """Region mask from [x0, y0, x1, y1] pixel boxes (labels that come with the data)."""
    out = np.zeros((height, width), np.bool_)
    for box in boxes:
        x0, y0, x1, y1 = (round(float(v)) for v in box)
        out[max(0, y0) : min(height, y1), max(0, x0) : min(width, x1)] = True
    return out


@dataclass(frozen=True, slots=True)
class Pair:
    """One training pair: the good frame, its degraded copy, and the region the brightness and
    texture losses look at (None: the whole frame)."""

    good: RGB
    poor: RGB
    kind: Kind
    region: Mask | None = None


def make_pair(image: RGB, kind: Kind, seed: int, region: Mask | None = None) -> Pair:
    region = sign_like_mask(image) if region is None else region
    return Pair(image, degrade(image, kind, seed), kind, region)
