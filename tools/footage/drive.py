"""Footage bank: the drive synthesiser, a virtual vehicle camera over a real photo or clip.

A drive is a smooth path of camera poses over the (upscaled) source: forward driving is an
expansion about a vanishing point that wanders slowly, turns and lane changes move the view
sideways with a little roll, the road shakes it (more at speed, with the odd bump), and the
vehicle stops and pulls away again: while it stands the pose does not change at all, so a photo
changes only by sensor noise and a clip keeps only its own motion. When forward motion has used
up the zoom the source allows, the view cross-fades over a second to a fresh one (a new stretch
of road; the truth records it). Light is applied in linear light: day, dusk (dim, warm), a
tunnel (dark for a few seconds), night (very dim), with Poisson–Gaussian sensor noise before the
camera's auto-gain, so dark frames are noisy as real ones are. Passing vehicles cross the view.

Poses, light and traffic are drawn once in `synthesise`; `Drive.frame(i)` renders frame `i`
alone (its noise seeded by `(seed, i)`), so frames can be read in any order and repeat exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

RGB = npt.NDArray[np.uint8]
Light = Literal["day", "dusk", "tunnel", "night", "mixed"]
Float = npt.NDArray[np.float64]

_SRGB = np.arange(256, dtype=np.float32) / 255.0
_TO_LINEAR = np.where(_SRGB <= 0.04045, _SRGB / 12.92, ((_SRGB + 0.055) / 1.055) ** 2.4).astype(
    np.float32
)
_LUT_SIZE = 4096
_lin = np.linspace(0.0, 1.0, _LUT_SIZE, dtype=np.float32)
_TO_SRGB = np.clip(
    np.where(_lin <= 0.0031308, _lin * 12.92, 1.055 * _lin ** (1 / 2.4) - 0.055) * 255.0 + 0.5,
    0,
    255,
).astype(np.uint8)

MAX_ZOOM = 1.8
"""Forward motion zooms the view at most this far before a new view fades in."""
FADE_S = 1.0
MARGIN = 1.12
"""The source is scaled so the view has this much room for shake and pans."""
LIGHT_GAIN: dict[str, float] = {"day": 1.0, "dusk": 0.38, "tunnel": 0.12, "night": 0.08}
LIGHT_BALANCE: dict[str, tuple[float, float, float]] = {
    "day": (1.0, 1.0, 1.0),
    "dusk": (1.12, 0.97, 0.78),  # low sun and sodium lamps: warm
    "tunnel": (1.08, 1.0, 0.85),
    "night": (1.1, 0.98, 0.82),
}
FULL_WELL = 10000.0
"""Photo-electrons at full scale: shot noise variance is signal / FULL_WELL (linear light)."""
READ_NOISE = 0.0025
"""Read noise, standard deviation in linear light."""


@dataclass(frozen=True, slots=True)
class DriveSpec:
    seconds: float = 60.0
    fps: float = 15.0
    width: int = 640
    height: int = 360
    light: Light = "mixed"
    stand_still: tuple[tuple[float, float], ...] | None = None
    """(start_s, end_s) stretches with no ego-motion; None: chosen from the seed."""
    passing: bool = True
    motion: Literal["drive", "still"] = "drive"
    """'still': a parked camera, no ego-motion at all."""


@dataclass(frozen=True, slots=True)
class _Car:
    start: float
    duration: float
    direction: int  # +1 left to right, −1 right to left
    lane: float  # vertical centre, share of the height
    size: float  # height, share of the frame height
    colour: tuple[float, float, float]
    approach: bool  # grows while crossing (overtaking)


def _smooth_noise(rng: np.random.Generator, n: int, fps: float, period_s: float) -> Float:
    """Random curve in about [−1, 1] varying over `period_s`."""
    knots = max(2, int(n / max(fps * period_s, 1.0)) + 2)
    values = rng.uniform(-1.0, 1.0, knots)
    return np.interp(np.linspace(0, knots - 1, n), np.arange(knots), values)


def _check(scene: Sequence[RGB], spec: DriveSpec) -> None:
    if len(scene) == 0:
        raise ValueError("scene has no frames")
    for frame in scene[:1]:
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"scene frames must be H×W×3 uint8, got {frame.dtype} {frame.shape}")
    if any(f.shape != scene[0].shape for f in scene):
        raise ValueError("scene frames differ in size")
    if spec.seconds <= 0 or spec.fps <= 0:
        raise ValueError(f"seconds and fps must be > 0, got {spec.seconds} s at {spec.fps} fps")
    if spec.width < 16 or spec.height < 16:
        raise ValueError(f"frame size {spec.width}×{spec.height} is too small")
    if spec.light not in (*LIGHT_GAIN, "mixed"):
        raise ValueError(f"unknown light {spec.light!r}")
    for start, end in spec.stand_still or ():
        if not 0 <= start < end:
            raise ValueError(f"bad stand-still interval {start}–{end}")


def _stand_stills(spec: DriveSpec, rng: np.random.Generator) -> tuple[tuple[float, float], ...]:
    if spec.stand_still is not None:
        return spec.stand_still
    out = []
    t = float(rng.uniform(4.0, 12.0))
    while t + 8.0 < spec.seconds - 2.0:
        length = float(rng.uniform(8.0, 12.0))
        out.append((round(t, 2), round(t + length, 2)))
        t += length + float(rng.uniform(15.0, 30.0))
    return tuple(out)


def _speed(times: Float, stills: Sequence[tuple[float, float]], rng: np.random.Generator) -> Float:
    """Speed 0–1: cruising with variation, easing down to 0 over 2 s before each stand-still and
    up again after it."""
    cruise = 0.7 + 0.25 * _smooth_noise(
        rng, len(times), 1.0 / max(times[1] - times[0], 1e-3) if len(times) > 1 else 1.0, 6.0
    )
    factor = np.ones_like(times)
    ramp = 2.0
    for start, end in stills:
        down = np.clip((start - times) / ramp, 0.0, 1.0)
        up = np.clip((times - end) / ramp, 0.0, 1.0)
        inside = (times >= start) & (times < end)
        near = np.where(times < start, down, np.where(times >= end, up, 0.0))
        factor = np.minimum(factor, np.where(inside, 0.0, near))
    return np.clip(cruise, 0.3, 1.0) * factor


def _light_levels(
    spec: DriveSpec, times: Float, rng: np.random.Generator
) -> tuple[Float, npt.NDArray[np.float64], list[str]]:
    """Per frame: exposure gain, white balance (n×3) and the light's name."""
    n = len(times)
    if spec.light == "mixed":
        t = 0.0
        plan: list[tuple[float, str]] = []
        while t < spec.seconds:
            name = str(rng.choice(["day", "day", "dusk", "night", "tunnel"]))
            plan.append((t, name))
            t += float(rng.uniform(8.0, 20.0)) if name != "tunnel" else float(rng.uniform(4.0, 7.0))
        names = [next(name for start, name in reversed(plan) if start <= time) for time in times]
    elif spec.light == "tunnel":
        enter = float(rng.uniform(0.2, 0.5)) * spec.seconds
        length = min(float(rng.uniform(4.0, 8.0)), spec.seconds * 0.4)
        names = ["tunnel" if enter <= t < enter + length else "day" for t in times]
    else:
        names = [spec.light] * n
    gain = np.array([LIGHT_GAIN[x] for x in names], np.float64)
    balance = np.array([LIGHT_BALANCE[x] for x in names], np.float64)
    # The light changes over about a second (a tunnel mouth, clouds), never in one frame.
    width = max(1, round(spec.fps * 0.8))
    kernel = np.ones(width) / width
    pad = (width // 2, width - 1 - width // 2)
    log_gain = np.convolve(np.pad(np.log(gain), pad, mode="edge"), kernel, mode="valid")
    balance = np.stack(
        [
            np.convolve(np.pad(balance[:, c], pad, mode="edge"), kernel, mode="valid")
            for c in range(3)
        ],
        axis=1,
    )
    jitter = 1.0 + 0.08 * _smooth_noise(rng, n, spec.fps, 5.0)
    return np.exp(log_gain) * jitter, balance, names


class Drive:
    """A synthesised clip: `frame(i)` for i < `frames`, and `truth()`."""

    def __init__(self, scene: Sequence[RGB], spec: DriveSpec, seed: int) -> None:
        _check(scene, spec)
        self.spec = spec
        self.seed = seed
        self.frames = max(1, round(spec.seconds * spec.fps))
        rng = np.random.default_rng([seed, 31])
        src_h, src_w = scene[0].shape[:2]
        # Scale the source so the output fits inside it with a margin; the source is kept in
        # linear light once (the light model works there).
        self._base = max(spec.width / src_w, spec.height / src_h) * MARGIN
        self._scene = [np.asarray(_TO_LINEAR[f], np.float32) for f in scene]
        self._src_size = (src_w, src_h)
        self._build_path(rng)
        self._gain, self._balance, self._light = _light_levels(spec, self._times, rng)
        self._cars = self._traffic(rng) if spec.passing else []

    # -- the camera path ---------------------------------------------------------------------

    def _build_path(self, rng: np.random.Generator) -> None:
        spec, n = self.spec, self.frames
        fps = spec.fps
        self._times = np.arange(n) / fps
        self._stills = _stand_stills(spec, rng) if spec.motion == "drive" else ()
        speed = _speed(self._times, self._stills, rng) if spec.motion == "drive" else np.zeros(n)
        src_w, src_h = self._src_size
        cx, cy = src_w / 2, src_h / 2
        zoom = 1.0
        vp = np.array([0.0, -0.08])  # vanishing point, share of the output size from the centre
        yaw_curve = _smooth_noise(rng, n, fps, 7.0)
        vp_curve = _smooth_noise(rng, n, fps, 10.0)
        shake = np.zeros((n, 3))
        if spec.motion == "drive":
            for axis, amp in enumerate((1.0, 1.3, 0.25)):
                raw = rng.standard_normal(n + 4)
                smooth = np.convolve(raw, np.ones(3) / 3, mode="same")[2 : n + 2]
                shake[:, axis] = smooth * amp * (0.3 + speed) * (speed > 0)
            bumps = np.flatnonzero(rng.random(n) < 0.25 / fps)
            for b in bumps:
                decay = np.exp(-np.arange(n - b) / max(fps * 0.15, 1.0))
                shake[b:, 1] += (
                    float(rng.uniform(3.0, 7.0))
                    * decay
                    * math.copysign(1, rng.uniform(-1, 1))
                    * speed[b]
                )
            shake[speed == 0] = 0.0  # a standing vehicle does not shake
        poses = np.zeros((n, 4))  # cx, cy, zoom, roll (deg) of the view, before shake
        view_changes: list[float] = []
        fade_from: list[int] = []
        fade_start = -1
        for i in range(n):
            v = speed[i]
            dt = 1.0 / fps
            if v > 0:
                # Zoom about the vanishing point: the source point under it stays put.
                vp[0] = 0.12 * vp_curve[i]
                px, py = vp[0] * spec.width, vp[1] * spec.height
                scale = self._base * zoom
                sx, sy = cx + px / scale, cy + py / scale
                zoom *= math.exp(0.07 * v * dt)
                scale = self._base * zoom
                cx, cy = sx - px / scale, sy - py / scale
                cx += yaw_curve[i] * 0.05 * v * dt * src_w
            half_w = spec.width / (2 * self._base * zoom)
            half_h = spec.height / (2 * self._base * zoom)
            cx = float(np.clip(cx, half_w, src_w - half_w))
            cy = float(np.clip(cy, half_h, src_h - half_h))
            roll = 1.5 * yaw_curve[i] * v
            poses[i] = (cx, cy, zoom, roll)
            if zoom >= MAX_ZOOM and (fade_start < 0 or i - fade_start > fps * FADE_S):
                fade_start = i
                view_changes.append(round(float(self._times[i]), 3))
                fade_from.append(i)
                zoom = 1.0
                cx = float(rng.uniform(0.4, 0.6)) * src_w
                cy = float(rng.uniform(0.45, 0.55)) * src_h
        self._speed = speed
        self._poses = poses
        self._shake = shake
        self._view_changes = view_changes
        self._fades = fade_from

    def _traffic(self, rng: np.random.Generator) -> list[_Car]:
        cars = []
        t = float(rng.uniform(1.0, 6.0))
        while t < self.spec.seconds:
            colour = tuple(float(c) for c in rng.choice(
                [[0.02, 0.02, 0.02], [0.6, 0.6, 0.62], [0.5, 0.05, 0.04], [0.05, 0.1, 0.35],
                 [0.8, 0.8, 0.78], [0.15, 0.15, 0.17]]
            ) * rng.uniform(0.8, 1.1))  # fmt: skip
            cars.append(
                _Car(
                    start=t,
                    duration=float(rng.uniform(1.5, 4.0)),
                    direction=1 if rng.random() < 0.5 else -1,
                    lane=float(rng.uniform(0.55, 0.75)),
                    size=float(rng.uniform(0.2, 0.45)),
                    colour=(colour[0], colour[1], colour[2]),
                    approach=bool(rng.random() < 0.4),
                )
            )
            t += float(rng.uniform(4.0, 12.0))
        return cars

    def _car_box(self, car: _Car, t: float) -> tuple[int, int, int, int] | None:
        if not car.start <= t < car.start + car.duration:
            return None
        u = (t - car.start) / car.duration
        w, h = self.spec.width, self.spec.height
        size = car.size * (0.6 + 0.8 * u if car.approach else 1.0)
        car_h = size * h
        car_w = car_h * 2.2
        x = -car_w + u * (w + car_w) if car.direction > 0 else w - u * (w + car_w)
        y = car.lane * h - car_h / 2
        return round(x), round(y), round(x + car_w), round(y + car_h)

    # -- rendering ---------------------------------------------------------------------------

    def _source(self, i: int) -> npt.NDArray[np.float32]:
        n = len(self._scene)
        if n == 1:
            return self._scene[0]
        period = 2 * (n - 1)
        k = i % period
        return self._scene[k if k < n else period - k]

    def _warp(
        self, src: npt.NDArray[np.float32], pose: Sequence[float], shake: Sequence[float]
    ) -> npt.NDArray[np.float32]:
        spec = self.spec
        cx, cy, zoom, roll = pose
        scale = self._base * zoom
        matrix = cv2.getRotationMatrix2D((cx, cy), roll + shake[2], scale)
        matrix[0, 2] += spec.width / 2 - cx + shake[0]
        matrix[1, 2] += spec.height / 2 - cy + shake[1]
        out = cv2.warpAffine(
            src, matrix, (spec.width, spec.height), flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT101,
        )  # fmt: skip
        return np.asarray(out, np.float32)

    def _draw_cars(self, image: npt.NDArray[np.float32], t: float, night: bool) -> None:
        for car in self._cars:
            box = self._car_box(car, t)
            if box is None:
                continue
            x0, y0, x1, y1 = box
            body = tuple(c * (0.25 if night else 1.0) for c in car.colour)
            h = y1 - y0
            cv2.rectangle(image, (x0, y0 + h // 3), (x1, y1 - h // 6), body, -1, cv2.LINE_AA)
            cv2.rectangle(
                image,
                (x0 + (x1 - x0) // 5, y0),
                (x1 - (x1 - x0) // 5, y0 + h // 3),
                body,
                -1,
                cv2.LINE_AA,
            )
            glass = (0.05, 0.07, 0.09)
            cv2.rectangle(
                image,
                (x0 + (x1 - x0) // 4, y0 + h // 12),
                (x1 - (x1 - x0) // 4, y0 + h // 3),
                glass,
                -1,
                cv2.LINE_AA,
            )
            wheel = max(2, h // 6)
            for wx in (x0 + (x1 - x0) // 5, x1 - (x1 - x0) // 5):
                cv2.circle(image, (wx, y1 - h // 6), wheel, (0.01, 0.01, 0.01), -1, cv2.LINE_AA)
            lamp = (4.0, 0.2, 0.1) if night else (0.6, 0.05, 0.03)
            cv2.rectangle(image, (x0, y0 + h // 3), (x0 + max(2, h // 8), y0 + h // 2), lamp, -1)
            cv2.rectangle(image, (x1 - max(2, h // 8), y0 + h // 3), (x1, y0 + h // 2), lamp, -1)

    def frame(self, i: int) -> RGB:
        if not 0 <= i < self.frames:
            raise IndexError(f"frame {i} of a {self.frames}-frame drive")
        t = float(self._times[i])
        image = self._warp(self._source(i), self._poses[i], self._shake[i])
        fade = next((f for f in self._fades if f <= i < f + self.spec.fps * FADE_S), None)
        if fade is not None:
            # Cross-fade from where the old view would have gone on to the new view.
            old = self._poses[fade - 1] if fade > 0 else self._poses[fade]
            steps = i - fade + 1
            old_pose = (old[0], old[1], old[2] * math.exp(0.07 * steps / self.spec.fps), old[3])
            before = self._warp(self._source(i), old_pose, self._shake[i])
            u = np.float32(min(1.0, steps / (self.spec.fps * FADE_S)))
            image = before * (1 - u) + image * u
        gain = float(self._gain[i])
        night = self._light[i] in ("night", "tunnel")
        self._draw_cars(image, t, night)
        signal = image * (np.asarray(self._balance[i], np.float32) * np.float32(gain))
        rng = np.random.default_rng([self.seed, 97, i])
        std = np.sqrt(np.maximum(signal, 0) / FULL_WELL + READ_NOISE**2).astype(np.float32)
        noisy = signal + rng.standard_normal(signal.shape, dtype=np.float32) * std
        # Auto-gain lifts a dark exposure part of the way (and its noise with it).
        auto = min(1.0 / max(gain, 1e-3), 6.0) ** 0.5
        out = np.clip(noisy * np.float32(auto), 0.0, 1.0)
        index = (out * (_LUT_SIZE - 1) + 0.5).astype(np.int32)
        return np.ascontiguousarray(_TO_SRGB[index])

    # -- truth -------------------------------------------------------------------------------

    def truth(self) -> dict[str, Any]:
        poses = self._poses
        moved = np.zeros((self.frames, 3))
        if self.frames > 1:
            scale = self._base * poses[:, 2]
            moved[1:, 0] = -(np.diff(poses[:, 0]) * scale[1:]) + np.diff(self._shake[:, 0])
            moved[1:, 1] = -(np.diff(poses[:, 1]) * scale[1:]) + np.diff(self._shake[:, 1])
            moved[1:, 2] = poses[1:, 2] / poses[:-1, 2]
        moved[0, 2] = 1.0
        per_frame = {
            "t": [round(float(t), 4) for t in self._times],
            "dx": [round(float(v), 3) for v in moved[:, 0]],
            "dy": [round(float(v), 3) for v in moved[:, 1]],
            "zoom": [round(float(v), 5) for v in moved[:, 2]],
            "roll_deg": [
                round(float(r + s), 3) for r, s in zip(poses[:, 3], self._shake[:, 2], strict=True)
            ],
            "speed": [round(float(v), 3) for v in self._speed],
            "standing": [int(v == 0) for v in self._speed],
            "gain": [round(float(g), 4) for g in self._gain],
            "light": list(self._light),
            "passing": [self._passing(float(t)) for t in self._times],
        }
        return {
            "fps": self.spec.fps,
            "frames": self.frames,
            "width": self.spec.width,
            "height": self.spec.height,
            "seed": self.seed,
            "light": self.spec.light,
            "motion": self.spec.motion,
            "stand_still": [[float(a), float(b)] for a, b in self._stills],
            "per_frame": per_frame,
            "view_changes": self._view_changes,
        }

    def _passing(self, t: float) -> list[int] | None:
        for car in self._cars:
            box = self._car_box(car, t)
            if box is not None:
                return list(box)
        return None


def synthesise(scene: Sequence[RGB], spec: DriveSpec, seed: int) -> Drive:
    """A drive over `scene` (one frame: a photo; several: a clip played at the drive's frame
    rate, back and forth when the drive is longer)."""
    return Drive(scene, spec, seed)
