"""Footage bank: independent renderers of picture degradations (low light, fog, motion blur, rain).

An image enhancer trained on one renderer learns that renderer's look as much as the
degradation itself, so each degradation here has several renderers written separately, in
families that share no code or parameter choices; training uses some families and the headline
judgement uses one it never saw (the split is `splits.DEGRADATION_SPLIT`). Images are H×W×3
uint8 RGB; every renderer is a pure function of the image and a seed. Pixel sizes quoted below
are at 640 px wide and scale with the frame width.

`gan`: the training pairs' own degradations (`tools/gan/degrade.py`), wrapped: low light, fog,
and motion blur as its line blur followed by its sensor noise. It has no rain streaks.

`sensor`: a camera-pipeline model in linear light. Low light cuts the exposure, shifts the white
balance towards the street lighting, samples Poisson-Gaussian noise on an RGGB mosaic (shot
noise from a full-well count, read noise, row banding, hot pixels), demosaics with OpenCV,
applies a digital gain back to a dim target and a tone curve, and sometimes a JPEG round trip.
Fog is the scattering model with a depth guessed from the picture (brightness and height) and
forward-scattered glare. Motion blur is a camera-shake trajectory (a Boracchi & Foi random walk)
integrated in linear light, then sensor noise. Rain streaks are sparse drops smeared along one
direction in a few depth layers, lit by the scene, under a faint veil.

`atmos`: an appearance model in gamma space, written differently on purpose. Low light darkens
the encoded values, adds luma and (larger, smeared) chroma noise in YCbCr, vignettes, and keeps
lamps clipped bright. Fog is a heterogeneous medium (fBm density × ground-plane depth from a
horizon) with coloured airlight and lifted shadows. Motion blur mixes a straight or curved
stroke with a zoom blur about a vanishing point (forward driving), then Gaussian noise. Rain is
a particle system of short anti-aliased drops following a slowly varying wind field, with
splashes near the bottom, alpha-composited layer by layer.
"""

from __future__ import annotations

import cmath
import math
from collections.abc import Callable
from typing import Literal, TypeAlias

import cv2
import numpy as np
import numpy.typing as npt

from tools.footage import splits
from tools.gan import degrade as gan
from tools.gan.degrade import linear_to_srgb, srgb_to_linear

DegradationKind: TypeAlias = Literal["low_light", "fog", "motion_blur", "rain_streaks"]
DEGRADATION_KINDS: tuple[DegradationKind, ...] = ("low_light", "fog", "motion_blur", "rain_streaks")
Family: TypeAlias = Literal["gan", "sensor", "atmos"]
FAMILIES: tuple[Family, ...] = ("gan", "sensor", "atmos")

RGB: TypeAlias = npt.NDArray[np.uint8]
"""H×W×3 uint8, RGB."""
Float: TypeAlias = npt.NDArray[np.float32]
Renderer: TypeAlias = Callable[[RGB, np.random.Generator], RGB]

_REFERENCE_WIDTH = 640.0
"""Frame width at which the pixel sizes in the docstrings hold."""


# ----------------------------------------------------------------------------- shared helpers

# Lookup tables instead of per-pixel powers: a 640×360 frame would spend ~30 ms in `**2.4`.
_TO_LINEAR: Float = srgb_to_linear(np.arange(256, dtype=np.float32) / np.float32(255.0))
_ENCODE_STEPS = 16384  # linear steps fine enough that the steep sRGB toe stays under one level
_TO_SRGB: Float = linear_to_srgb(np.linspace(0.0, 1.0, _ENCODE_STEPS, dtype=np.float32))


def _linear(image: RGB) -> Float:
    return np.asarray(_TO_LINEAR[image], np.float32)


def _encode(linear: Float) -> Float:
    """Linear light to sRGB-encoded floats in [0, 1], by table."""
    index = np.clip(linear * np.float32(_ENCODE_STEPS - 1) + np.float32(0.5), 0, _ENCODE_STEPS - 1)
    return np.asarray(_TO_SRGB[index.astype(np.intp)], np.float32)


def _unit(image: RGB) -> Float:
    out: Float = image.astype(np.float32) * np.float32(
        1.0 / 255.0
    )  # annotated: numpy's stubs, see [tool.mypy]
    return out


def _quantise(image: Float) -> RGB:
    return np.asarray(np.clip(image * np.float32(255.0) + np.float32(0.5), 0, 255), np.uint8)


def _scale(image: RGB) -> float:
    """Pixel sizes are given at 640 px wide; smaller frames get proportionally smaller ones."""
    return float(image.shape[1]) / _REFERENCE_WIDTH


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _blur(image: Float, sigma: float) -> Float:
    """A wide Gaussian blur done at reduced size: far cheaper, and the result is smooth anyway."""
    height, width = image.shape[:2]
    factor = max(1, int(sigma // 3))
    small = cv2.resize(
        image, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_AREA
    )
    small = cv2.GaussianBlur(small, (0, 0), max(0.5, sigma / factor))
    big = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.asarray(big, np.float32).reshape(image.shape)


def _luma(image: Float) -> Float:
    return np.asarray(image @ np.array([0.2126, 0.7152, 0.0722], np.float32), np.float32)


# ------------------------------------------------------------------------------------ gan family


def _gan_motion_blur(image: RGB, rng: np.random.Generator) -> RGB:
    # Its blur has no noise of its own; a real blurred frame also went through the sensor.
    return gan.noise(gan.blur(image, rng), rng)


# --------------------------------------------------------------------------------- sensor family


def _sensor_low_light(image: RGB, rng: np.random.Generator) -> RGB:
    height, width = image.shape[:2]
    linear = _linear(image)
    # Street lighting: low-pressure sodium (orange) or white LED (bluish), as an illuminant.
    if rng.random() < 0.5:
        balance = np.array(
            [rng.uniform(1.2, 1.6), 1.0, rng.uniform(0.35, 0.7)], np.float32
        )  # warm sodium
    else:
        balance = np.array([rng.uniform(0.75, 0.92), 1.0, rng.uniform(1.1, 1.35)], np.float32)
    exposure = _log_uniform(rng, 1 / 60, 1 / 8)
    scene = linear * balance * np.float32(exposure)

    # RGGB mosaic: each photosite sees one channel.
    raw = np.empty((height, width), np.float32)
    raw[0::2, 0::2] = scene[0::2, 0::2, 0]
    raw[0::2, 1::2] = scene[0::2, 1::2, 1]
    raw[1::2, 0::2] = scene[1::2, 0::2, 1]
    raw[1::2, 1::2] = scene[1::2, 1::2, 2]

    full_well = _log_uniform(rng, 1500.0, 20000.0)  # electrons at clipping: small pixel → few
    electrons = rng.poisson(np.clip(raw, 0.0, 1.0) * full_well).astype(np.float32)
    read = rng.uniform(1.5, 9.0)  # electrons rms
    banding = rng.normal(0.0, read * rng.uniform(0.1, 0.6), (height, 1)).astype(np.float32)
    electrons += rng.standard_normal((height, width), dtype=np.float32) * np.float32(read)
    electrons += banding
    raw = electrons / np.float32(full_well)
    hot = max(1, round(height * width * rng.uniform(2e-5, 8e-5)))
    raw[rng.integers(0, height, hot), rng.integers(0, width, hot)] += rng.uniform(0.02, 0.3, hot)

    # 12-bit ADC with a black pedestal, so negative read noise survives to the demosaic.
    black = 64.0
    codes = np.clip(raw * np.float32(4095.0 - black) + np.float32(black), 0, 4095)
    # OpenCV names Bayer patterns by their second row: BG2RGB is an RGGB sensor.
    demosaiced = cv2.cvtColor(codes.astype(np.uint16), cv2.COLOR_BayerBG2RGB)
    linear_out = (demosaiced.astype(np.float32) - np.float32(black)) / np.float32(4095.0 - black)

    # Digital gain to a dim target, set by the green channel (as auto-exposure meters).
    target = float(linear[..., 1].mean()) * rng.uniform(0.08, 0.35)
    gain = target / max(float(linear_out[..., 1].mean()), 1e-5)
    encoded = _encode(np.clip(linear_out * np.float32(gain), 0.0, 1.0))
    # The camera's night tone curve: a contrast S-curve of random strength.
    strength = np.float32(rng.uniform(0.0, 0.5))
    s_curve = encoded * encoded * (np.float32(3.0) - np.float32(2.0) * encoded)
    out = _quantise(encoded + strength * (s_curve - encoded))

    if rng.random() < 0.6:
        quality = int(rng.integers(60, 91))
        ok, data = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else None
        if decoded is not None:
            out = np.ascontiguousarray(np.asarray(decoded, np.uint8)[..., ::-1])
    return np.asarray(out, np.uint8)


def _sensor_fog(image: RGB, rng: np.random.Generator) -> RGB:
    height, width = image.shape[:2]
    linear = _linear(image)
    # Depth guessed from the picture: high up is far, and bright (sky, distant haze) is far.
    rows = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None]
    height_term = rows ** np.float32(rng.uniform(0.6, 1.4))
    grey = _blur(_luma(linear), max(2.0, width / 40))
    weight = np.float32(rng.uniform(0.2, 0.5))
    depth = _blur((np.float32(1.0) - weight) * height_term + weight * grey, max(2.0, width / 60))
    beta = _log_uniform(rng, 0.6, 4.5)
    transmission = np.exp(-np.float32(beta) * depth)[..., None]

    grey_level = rng.uniform(0.45, 0.85)  # linear airlight: a blue-grey sky
    airlight = np.float32(grey_level) * np.array(
        [rng.uniform(0.82, 0.92), rng.uniform(0.9, 0.96), 1.0], np.float32
    )
    hazy = linear * transmission + airlight * (np.float32(1.0) - transmission)
    # Veiling glare: droplets scatter bright light forwards, a wide halo that grows with density.
    bright = np.maximum(linear - np.float32(0.5), np.float32(0.0))
    glare = _blur(bright, max(4.0, width / 12)) * np.float32(rng.uniform(0.5, 2.0))
    hazy += glare * (np.float32(1.0) - np.exp(-np.float32(beta) * np.float32(0.5)))
    return _quantise(_encode(np.clip(hazy, 0.0, 1.0)))


def _shake_kernel(rng: np.random.Generator, length: float) -> Float:
    """A camera-shake blur kernel after Boracchi & Foi (2012): a random walk with inertia, a pull
    back to the start, and occasional abrupt jerks, of total path `length` px."""
    steps = 400
    anxiety = rng.uniform(0.0, 0.1)
    centripetal = rng.uniform(0.0, 0.7)
    gaussian_term = rng.uniform(0.0, 10.0)
    big_shakes = rng.uniform(0.0, 0.2)
    step = length / (steps - 1)
    velocity = complex(math.cos(angle := rng.uniform(0, 2 * math.pi)), math.sin(angle)) * step
    jolts = rng.random(steps)
    turns = rng.random(steps)
    kicks = rng.standard_normal((steps, 2))
    path = np.zeros(steps, np.complex128)
    for t in range(steps - 1):
        change = 0j
        if jolts[t] < big_shakes * anxiety:
            change = 2 * velocity * cmath.exp(1j * (math.pi + turns[t] - 0.5))  # a jerk back
        wobble = gaussian_term * complex(kicks[t, 0], kicks[t, 1]) - centripetal * path[t]
        velocity += change + anxiety * wobble * step
        velocity = velocity / max(abs(velocity), 1e-12) * step
        path[t + 1] = path[t] + velocity
    xs = path.real - path.real.min() + 1.0
    ys = path.imag - path.imag.min() + 1.0
    size = math.ceil(max(xs.max(), ys.max())) + 2
    size += 1 - size % 2  # odd, so the kernel has a centre
    xs += (size - 1 - xs.max() - xs.min()) / 2 + 0.0
    ys += (size - 1 - ys.max() - ys.min()) / 2 + 0.0
    # Bilinear splat: the shutter integrates a continuous path, not pixel hops.
    x0 = np.floor(xs).astype(np.intp)
    y0 = np.floor(ys).astype(np.intp)
    fx = xs - x0
    fy = ys - y0
    kernel = np.zeros((size + 1, size + 1), np.float64)
    np.add.at(kernel, (y0, x0), (1 - fx) * (1 - fy))
    np.add.at(kernel, (y0, x0 + 1), fx * (1 - fy))
    np.add.at(kernel, (y0 + 1, x0), (1 - fx) * fy)
    np.add.at(kernel, (y0 + 1, x0 + 1), fx * fy)
    kernel = kernel[:size, :size]
    return np.asarray(kernel / kernel.sum(), np.float32)


def _sensor_motion_blur(image: RGB, rng: np.random.Generator) -> RGB:
    length = max(3.0, rng.uniform(8.0, 40.0) * _scale(image))
    kernel = _shake_kernel(rng, length)
    # Light adds up on the sensor, so the blur is a sum in linear light (highlights smear bright).
    blurred = np.asarray(
        cv2.filter2D(_linear(image), -1, kernel, borderType=cv2.BORDER_REFLECT), np.float32
    )
    full_well = _log_uniform(rng, 2000.0, 30000.0)
    read = rng.uniform(2.0, 12.0) / full_well
    std = np.sqrt(np.clip(blurred, 0.0, 1.0) / np.float32(full_well) + np.float32(read * read))
    noisy = blurred + rng.standard_normal(blurred.shape, dtype=np.float32) * std
    return _quantise(_encode(np.clip(noisy, 0.0, 1.0)))


def _line_kernel(length: int, angle: float) -> Float:
    """A thin anti-aliased line `length` px long through the centre, `angle` rad from vertical."""
    size = length + 2 + (length + 1) % 2
    kernel = np.zeros((size, size), np.float32)
    centre = (size - 1) / 2
    dx = math.sin(angle) * (length - 1) / 2
    dy = math.cos(angle) * (length - 1) / 2
    shift = 4  # sub-pixel endpoints (OpenCV fixed point): a tilted streak stays straight
    one = 1 << shift
    start = (round((centre - dx) * one), round((centre - dy) * one))
    end = (round((centre + dx) * one), round((centre + dy) * one))
    cv2.line(kernel, start, end, 1.0, 1, cv2.LINE_AA, shift)
    out: Float = kernel / np.float32(
        max(float(kernel.sum()), 1e-6)
    )  # annotated: numpy's stubs, see [tool.mypy]
    return out


def _sensor_rain_streaks(image: RGB, rng: np.random.Generator) -> RGB:
    height, width = image.shape[:2]
    scale = _scale(image)
    base = _unit(image)
    # Drops are seen by the light they catch: brighter where the scene around them is bright.
    light = _blur(base, max(3.0, width / 30))
    angle = math.radians(rng.uniform(-20.0, 20.0))
    heaviness = rng.uniform(0.3, 1.0)
    layers = int(rng.integers(2, 5))
    streaks = np.zeros((height, width), np.float32)
    for layer in range(layers):
        near = (layer + 1) / layers  # far layers: short, faint, dense; near ones: long, bright
        length = max(4, round(rng.uniform(10.0, 25.0) + near * rng.uniform(10.0, 35.0)) * scale)
        density = heaviness * rng.uniform(0.002, 0.006) / (0.5 + near)
        drops = (rng.random((height, width)) < density).astype(np.float32)
        drops *= rng.uniform(0.5, 1.0, (height, width)).astype(np.float32)
        jitter = math.radians(rng.uniform(-3.0, 3.0))  # gusts differ a little with distance
        smear = cv2.filter2D(drops, -1, _line_kernel(int(length), angle + jitter))
        strength = (0.25 + 0.75 * near) * rng.uniform(0.6, 1.0) * length
        streaks += np.asarray(smear, np.float32) * np.float32(strength)
    # The exposure smears each streak a little across its direction too.
    streaks = np.asarray(cv2.GaussianBlur(streaks, (0, 0), 0.5 + 0.3 * scale), np.float32)
    brightness = np.float32(0.35) + np.float32(0.65) * _luma(light)
    layer_rgb = np.clip(streaks * brightness, 0.0, 1.0)[..., None] * (
        np.float32(0.6) + np.float32(0.4) * light
    )
    out = np.float32(1.0) - (np.float32(1.0) - base) * (np.float32(1.0) - layer_rgb)
    # Far rain too fine to resolve: a faint veil of the scene's own light, scattered, added.
    veil = np.float32(rng.uniform(0.03, 0.15) * heaviness) * light
    out = np.float32(1.0) - (np.float32(1.0) - out) * (np.float32(1.0) - veil)
    return _quantise(out)


# ---------------------------------------------------------------------------------- atmos family


def _atmos_low_light(image: RGB, rng: np.random.Generator) -> RGB:
    height, width = image.shape[:2]
    encoded = _unit(image)
    # Darken the encoded values directly: a gain and an extra gamma, mild to very dark.
    gain = np.float32(rng.uniform(0.12, 0.5))
    gamma = np.float32(rng.uniform(1.05, 1.7))
    dark = gain * encoded**gamma

    # Vignetting: the lens loses light towards the corners, worst at night with the iris open.
    ys = (np.arange(height, dtype=np.float32) - height * rng.uniform(0.4, 0.6)) / (height / 2)
    xs = (np.arange(width, dtype=np.float32) - width * rng.uniform(0.4, 0.6)) / (width / 2)
    radius2 = (ys[:, None] ** 2 * np.float32((height / width) ** 2) + xs[None, :] ** 2) / 2
    dark *= (np.float32(1.0) - np.float32(rng.uniform(0.15, 0.6)) * radius2)[..., None]

    ycrcb = np.asarray(cv2.cvtColor(np.clip(dark, 0.0, 1.0), cv2.COLOR_RGB2YCrCb), np.float32)
    luma = ycrcb[..., 0]
    photons = _log_uniform(rng, 80.0, 1500.0)  # per unit of encoded luma
    luma_sigma = rng.uniform(0.004, 0.02)
    ycrcb[..., 0] = rng.poisson(luma * np.float32(photons)).astype(np.float32) / np.float32(
        photons
    ) + rng.standard_normal((height, width), dtype=np.float32) * np.float32(luma_sigma)
    # Chroma: the camera's chroma subsampling and denoiser smear both colour and its noise into
    # blotches larger and stronger than the luma grain.
    smear = rng.uniform(0.8, 2.5) * max(0.5, _scale(image) * 2)
    chroma_noise = rng.standard_normal((height, width, 2), dtype=np.float32)
    chroma_noise = np.asarray(cv2.GaussianBlur(chroma_noise, (0, 0), smear), np.float32)
    chroma_noise *= np.float32(luma_sigma * rng.uniform(2.0, 4.0) * (1.0 + smear))
    chroma = np.asarray(cv2.GaussianBlur(ycrcb[..., 1:], (0, 0), smear), np.float32)
    ycrcb[..., 1:] = chroma + chroma_noise
    out = np.asarray(cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB), np.float32)

    # Lamps and lit signs stay clipped bright: the darkening is the exposure, not the lights.
    # Only small clipped sources count: a bright overcast sky is scene, and darkens with it.
    source = _luma(encoded)
    surround = _blur(source, max(4.0, width / 25))
    clipped = np.clip((source - np.float32(0.9)) / np.float32(0.08), 0.0, 1.0)
    standout = np.clip((source - surround) / np.float32(0.15), 0.0, 1.0)
    lamps = (clipped * standout)[..., None]
    out = out * (np.float32(1.0) - lamps) + np.minimum(encoded * np.float32(1.15), 1.0) * lamps
    return _quantise(out)


def _fbm(rng: np.random.Generator, height: int, width: int, octaves: int) -> Float:
    """Fractal Brownian motion in [0, 1]: octaves of value noise, each twice as fine and half as
    strong, summed at a quarter of the size and enlarged once."""
    small_h, small_w = max(4, height // 4), max(4, width // 4)
    total = np.zeros((small_h, small_w), np.float32)
    amplitude = 1.0
    cells = 2
    for _ in range(octaves):
        grid = rng.random((cells + 1, max(2, round(cells * width / height)) + 1), np.float32)
        total += np.float32(amplitude) * np.asarray(
            cv2.resize(grid, (small_w, small_h), interpolation=cv2.INTER_CUBIC), np.float32
        )
        amplitude *= 0.5
        cells *= 2
    total -= total.min()
    total /= max(float(total.max()), 1e-6)
    return np.asarray(cv2.resize(total, (width, height), interpolation=cv2.INTER_LINEAR))


def _atmos_fog(image: RGB, rng: np.random.Generator) -> RGB:
    height, width = image.shape[:2]
    encoded = _unit(image)
    # Ground-plane depth: distance ∝ 1/(row − horizon) below the horizon, far above it.
    horizon = height * rng.uniform(0.25, 0.6)
    near = height * rng.uniform(0.04, 0.12)
    below = np.maximum(np.arange(height, dtype=np.float32) - np.float32(horizon), 0.0)
    depth = (np.float32(near) / (np.float32(near) + below))[:, None]
    # Fog is patchy: banks and wisps, not a uniform medium.
    patchiness = np.float32(rng.uniform(0.3, 1.2))
    density = np.float32(1.0) + patchiness * (_fbm(rng, height, width, 5) - np.float32(0.5))
    optical = np.float32(_log_uniform(rng, 0.5, 3.5)) * depth * np.maximum(density, 0.05)
    transmission = np.exp(-optical)[..., None]

    # Airlight takes the colour of the light in the medium: city glow, dawn, plain grey.
    hsv = np.array(
        [[[rng.uniform(0, 360), rng.uniform(0.03, 0.22), rng.uniform(0.7, 0.95)]]], np.float32
    )
    airlight = np.asarray(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), np.float32).reshape(3)
    out = encoded * transmission + airlight * (np.float32(1.0) - transmission)
    # Multiple scattering fills the shadows: dark regions lose contrast first.
    lift = np.float32(rng.uniform(0.05, 0.3))
    out = out + lift * (np.float32(1.0) - out) ** 2 * (np.float32(1.0) - transmission) * airlight
    return _quantise(out)


def _stroke_kernel(rng: np.random.Generator, length: float) -> Float:
    """A straight or curved (parabolic) stroke, drawn 4× larger anti-aliased and reduced."""
    zoom = 4
    curvature = rng.uniform(-0.35, 0.35) if rng.random() < 0.6 else 0.0
    t = np.linspace(-0.5, 0.5, 48)
    points = np.stack([t * length, curvature * length * (t * t - 1.0 / 12.0)], axis=1)
    angle = rng.uniform(0.0, math.pi)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    points = points @ rotation.T
    size = math.ceil(length) + 3
    size += 1 - size % 2
    big = np.zeros((size * zoom, size * zoom), np.float32)
    pixels = np.round((points + size / 2) * zoom).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(big, [pixels], isClosed=False, color=1.0, thickness=zoom, lineType=cv2.LINE_AA)
    kernel = np.asarray(cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA), np.float32)
    out: Float = kernel / np.float32(
        max(float(kernel.sum()), 1e-6)
    )  # annotated: numpy's stubs, see [tool.mypy]
    return out


def _atmos_motion_blur(image: RGB, rng: np.random.Generator) -> RGB:
    height, width = image.shape[:2]
    encoded = _unit(image)
    # Forward motion: the scene expands from the vanishing point during the exposure.
    vanish = (width * rng.uniform(0.3, 0.7), height * rng.uniform(0.3, 0.55))
    expansion = rng.uniform(0.0, 0.06)
    copies = max(2, min(10, math.ceil(expansion * math.hypot(width, height) / 2)))
    zoomed = np.zeros_like(encoded)
    for factor in np.linspace(1.0, 1.0 + expansion, copies):
        matrix = cv2.getRotationMatrix2D(vanish, 0.0, float(factor))
        zoomed += np.asarray(
            cv2.warpAffine(
                encoded,
                matrix,
                (width, height),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT,
            ),
            np.float32,
        )
    zoomed /= np.float32(copies)
    # Yaw, pitch and bumps on top: a stroke, sometimes curved.
    length = max(2.0, rng.uniform(3.0, 35.0) * _scale(image))
    blurred = np.asarray(
        cv2.filter2D(zoomed, -1, _stroke_kernel(rng, length), borderType=cv2.BORDER_REFLECT),
        np.float32,
    )
    sigma = np.float32(rng.uniform(1.0, 6.0) / 255.0)
    return _quantise(blurred + rng.standard_normal(blurred.shape, dtype=np.float32) * sigma)


def _atmos_rain_streaks(image: RGB, rng: np.random.Generator) -> RGB:
    height, width = image.shape[:2]
    scale = _scale(image)
    out = _unit(image)
    # Wind: a base fall angle with slow swirls across the frame.
    base_angle = rng.uniform(-20.0, 20.0)
    swirl = rng.uniform(2.0, 10.0)
    wind = _fbm(rng, height, width, 2) - np.float32(0.5)
    area = height * width / (_REFERENCE_WIDTH * 360.0)
    heaviness = rng.uniform(0.2, 1.0)
    tint = np.float32(0.75) + np.float32(0.25) * out.mean(axis=(0, 1))
    for layer in range(int(rng.integers(2, 4))):
        depth = 1.0 - layer / 3.0  # layer 0 is nearest: longest, brightest, fewest
        alpha = np.zeros((height, width), np.float32)
        count = max(8, round(heaviness * area * rng.uniform(250.0, 700.0) / (depth + 0.3)))
        xs = rng.uniform(0, width, count)
        ys = rng.uniform(0, height, count)
        lengths = rng.uniform(4.0, 12.0, count) * (0.5 + depth) * scale + 2.0
        iy = np.clip(ys.astype(np.intp), 0, height - 1)
        ix = np.clip(xs.astype(np.intp), 0, width - 1)
        angles = np.radians(base_angle + swirl * 2 * wind[iy, ix])
        dx = np.sin(angles) * lengths / 2
        dy = np.cos(angles) * lengths / 2
        shades = rng.uniform(0.5, 1.0, count)
        one = 16.0  # 4 fractional bits
        for x, y, ex, ey, shade in zip(xs, ys, dx, dy, shades, strict=True):
            start = (round((x - ex) * one), round((y - ey) * one))
            end = (round((x + ex) * one), round((y + ey) * one))
            cv2.line(alpha, start, end, float(shade), 1, cv2.LINE_AA, 4)
        if layer == 0:
            # Splashes where near drops hit the road: small crowns in the bottom band.
            band = height * rng.uniform(0.1, 0.22)
            for _ in range(round(count * rng.uniform(0.05, 0.2))):
                centre = (int(rng.uniform(0, width)), int(height - rng.uniform(0, band)))
                radius = max(1, round(rng.uniform(1.0, 3.5) * scale * 1.5))
                cv2.ellipse(
                    alpha, centre, (radius, max(1, radius // 2)), 0, 180, 360, 0.8, 1, cv2.LINE_AA
                )
        opacity = np.float32(rng.uniform(0.25, 0.7) * (0.4 + 0.6 * depth))
        alpha = np.clip(alpha * opacity, 0.0, 1.0)[..., None]
        out = out * (np.float32(1.0) - alpha) + tint * alpha
    # Spray: the bottom of the frame, near the wheels of the car ahead, is softened.
    start_row = int(height * rng.uniform(0.75, 0.9))
    spray = np.asarray(cv2.GaussianBlur(out, (0, 0), 1.0 + 2.0 * heaviness * scale), np.float32)
    ramp = np.clip(
        (np.arange(height, dtype=np.float32) - start_row) / max(1, height - start_row), 0, 1
    )
    weight = (ramp * np.float32(0.8))[:, None, None]
    out = out * (np.float32(1.0) - weight) + spray * weight
    return _quantise(out)


# ------------------------------------------------------------------------------------ the table

_RENDERERS: dict[Family, dict[DegradationKind, Renderer]] = {
    "gan": {"low_light": gan.low_light, "fog": gan.fog, "motion_blur": _gan_motion_blur},
    "sensor": {
        "low_light": _sensor_low_light,
        "fog": _sensor_fog,
        "motion_blur": _sensor_motion_blur,
        "rain_streaks": _sensor_rain_streaks,
    },
    "atmos": {
        "low_light": _atmos_low_light,
        "fog": _atmos_fog,
        "motion_blur": _atmos_motion_blur,
        "rain_streaks": _atmos_rain_streaks,
    },
}


def has(kind: DegradationKind, family: Family) -> bool:
    """Whether `family` renders `kind` (the gan family has no rain streaks)."""
    return kind in _RENDERERS.get(family, {})


def _check_image(image: object) -> RGB:
    if not isinstance(image, np.ndarray):  # callers catch one error type for any bad image
        raise ValueError(  # noqa: TRY004
            f"image must be a numpy array, got {type(image).__name__}"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be H×W×3 (RGB), got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got dtype {image.dtype}")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise ValueError(f"image is empty or too small (under 8×8): shape {image.shape}")
    return np.ascontiguousarray(image)


def degrade(image: RGB, kind: DegradationKind, family: Family, seed: int) -> RGB:
    """The degraded copy (same shape, uint8); the clean input is the truth. Same arguments → same
    bytes."""
    if kind not in DEGRADATION_KINDS:
        raise ValueError(f"unknown degradation kind {kind!r}, expected one of {DEGRADATION_KINDS}")
    if family not in FAMILIES:
        raise ValueError(f"unknown degradation family {family!r}, expected one of {FAMILIES}")
    splits.note_use("degradation", family)
    if not has(kind, family):
        raise ValueError(f"degradation family {family!r} does not render {kind!r}")
    checked = _check_image(image)
    if family == "gan":
        rng = np.random.default_rng(seed)  # as tools/gan/degrade.py seeds it: the same pairs
    else:
        # Keyed by family and kind too, so two renderers never draw the same random numbers.
        rng = np.random.default_rng([seed, FAMILIES.index(family), DEGRADATION_KINDS.index(kind)])
    out = _RENDERERS[family][kind](checked, rng)
    return np.asarray(out, np.uint8).reshape(checked.shape)
