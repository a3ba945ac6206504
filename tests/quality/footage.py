"""Footage for the quality tests: the bundled real street video and scenes made from it."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import cv2
import numpy as np
import numpy.typing as npt

from vehicle_agent.quality.adhesion import AdhesionDetector
from vehicle_agent.quality.metrics import prepare
from vehicle_agent.records import AdhesionEstimate, Image
from vehicle_agent.sim.lens import AdhesionLayer
from vehicle_agent.sim.simulate import sample_video

FPS = 10.0
Scene = Callable[[int], Image]
"""Frame number → frame (10 fps)."""


@functools.cache
def street() -> tuple[Image, ...]:
    """The bundled sample's 300 frames (768×576, 10 fps, fixed camera, people walking)."""
    cap = cv2.VideoCapture(str(sample_video()))
    frames: list[Image] = []
    while True:
        ok, read = cap.read()
        if not ok:
            break
        frame = np.asarray(read, np.uint8)
        frame.flags.writeable = False
        frames.append(frame)
    cap.release()
    assert len(frames) == 300
    return tuple(frames)


def looped(i: int) -> Image:
    frames = street()
    return frames[i % len(frames)]


@functools.cache
def _noise(shape: tuple[int, ...], sigma: float) -> tuple[npt.NDArray[np.int16], ...]:
    """Eight frames of Gaussian sensor noise, cycled (fresh noise per frame is slow to make)."""
    rng = np.random.default_rng(0)
    return tuple(np.round(rng.normal(0.0, sigma, shape)).astype(np.int16) for _ in range(8))


def noisy(image: Image, i: int, sigma: float) -> Image:
    """`image` with frame `i`'s sensor noise of standard deviation `sigma`."""
    noise = _noise(image.shape, sigma)[i % 8]
    return (
        np.asarray(cv2.add(image.astype(np.int16), noise), np.int16).clip(0, 255).astype(np.uint8)
    )


def darkened(gain: float, noise: float = 2.0) -> Scene:
    """Night-like: the street at `gain` of its light, with sensor noise."""

    def frame(i: int) -> Image:
        dark = np.asarray(cv2.convertScaleAbs(looped(i), alpha=gain), np.uint8)
        return noisy(dark, i, noise)

    return frame


def truck(period: int, width: float = 0.45, grey: int = 30) -> Scene:
    """A big dark rectangle crossing the street from left to right every `period` frames."""

    def frame(i: int) -> Image:
        image: Image = looped(i).copy()  # annotated: numpy's stubs, see [tool.mypy]
        h, w = image.shape[:2]
        x0 = int((-width + (i % period) / period * (1 + width)) * w)
        image[int(0.3 * h) : int(0.9 * h), max(0, x0) : max(0, min(w, x0 + int(width * w)))] = grey
        return image

    return frame


def panning(i: int) -> Image:
    """A moving camera: a window drifting and zooming over the street."""
    image = looped(i)
    h, w = image.shape[:2]
    scale = 0.6 + 0.3 * ((2 * i) % 200) / 200
    cw, ch = int(w * (1 - scale / 2)), int(h * (1 - scale / 2))
    x0 = int((w - cw) * (0.5 + 0.5 * np.sin(i * 0.05)))
    y0 = int((h - ch) * (0.5 + 0.4 * np.cos(i * 0.031)))
    return np.asarray(cv2.resize(image[y0 : y0 + ch, x0 : x0 + cw], (w, h)), np.uint8)


def soiled(scene: Scene, layer: AdhesionLayer, onset_frame: int) -> Scene:
    """`scene` with `layer` on the lens from frame `onset_frame` on."""

    def frame(i: int) -> Image:
        image = scene(i)
        return image if i < onset_frame else layer.render(image)[0]

    return frame


def run(
    scene: Scene, frames: int, detector: AdhesionDetector | None = None
) -> Iterator[tuple[float, AdhesionEstimate]]:
    """(video time, estimate) for each frame of `scene` through the detector at 320 px."""
    detector = detector or AdhesionDetector()
    for i in range(frames):
        t = i / FPS
        yield t, detector.update(prepare(scene(i), 320).grey, t)


def first_alarm(scene: Scene, frames: int) -> float | None:
    """Video time of the first `detected`, or None."""
    return next((t for t, estimate in run(scene, frames) if estimate.detected), None)
