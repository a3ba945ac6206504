"""`vehicle-agent enhance`: the enhance stage's runtime applied offline to an image, a folder or a video."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vehicle_agent.enhance.base import Enhancer, EnhancerError
from vehicle_agent.output.sinks import FOURCC_BY_SUFFIX, SinkError, VideoWriter
from vehicle_agent.records import Image

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg"})


class OfflineError(Exception):
    """The input or output of `enhance` cannot be used; the message names the path."""


@dataclass
class OfflineResult:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    frames: int = 0


class LazyEnhancer(Enhancer):
    """Builds and loads the real enhancer on the first frame that decoded, so a bad input path
    fails with its one-line error before any model is loaded (or any load is logged)."""

    def __init__(self, make: Callable[[], Enhancer]) -> None:
        self._make = make
        self.inner: Enhancer | None = None
        self.name = "enhancer"

    def load(self) -> None:
        """Nothing yet: see the class."""

    def _enhance(self, image: Image) -> Image:
        if self.inner is None:
            self.inner = self._make()
            self.inner.load()
        out = self.inner.enhance(image)
        self.name = self.inner.name
        return out

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


def _read_image(path: Path) -> np.ndarray:
    # imdecode from bytes, so non-ASCII paths work and a corrupt file is one clear error.
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise OfflineError(f"{path}: cannot decode image")
    return np.asarray(image)


def _write_image(path: Path, image: np.ndarray) -> None:
    ok, encoded = cv2.imencode(path.suffix, image)
    if not ok:
        raise OfflineError(f"{path}: cannot encode image as {path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded.tofile(path)


def enhance_image(enhancer: Enhancer, src: Path, dst: Path, result: OfflineResult) -> None:
    try:
        image = _read_image(src)
        _write_image(dst, enhancer.enhance(image))
    except (OfflineError, EnhancerError) as exc:
        result.failed.append((src, str(exc)))
        return
    result.written.append(dst)
    result.frames += 1


def enhance_video(enhancer: Enhancer, src: Path, dst: Path, result: OfflineResult) -> None:
    if dst.suffix.lower() not in FOURCC_BY_SUFFIX:
        raise OfflineError(f"{dst}: unsupported output video type; use {sorted(FOURCC_BY_SUFFIX)}")
    cap = cv2.VideoCapture(str(src), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise OfflineError(f"{src}: cannot decode video")
    fps = cap.get(cv2.CAP_PROP_FPS)
    writer = VideoWriter(dst, fps if fps and fps > 0 else 10.0)
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            writer.write(enhancer.enhance(np.asarray(frame)))
            result.frames += 1
    except (EnhancerError, SinkError) as exc:
        raise OfflineError(f"{src}: frame {result.frames}: {exc}") from exc
    finally:
        writer.close()
        cap.release()
    if result.frames == 0:
        raise OfflineError(f"{src}: no frame could be decoded")
    result.written.append(dst)


def enhance_path(enhancer: Enhancer, src: Path, out: Path) -> OfflineResult:
    """Enhance `src` into `out`: image → image, folder → folder (same names), video → video."""
    result = OfflineResult()
    if src.is_dir():
        if out.exists() and not out.is_dir():
            raise OfflineError(f"{out}: input is a folder, so the output must be a folder")
        images = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise OfflineError(f"{src}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        out.mkdir(parents=True, exist_ok=True)
        if out.resolve() == src.resolve():
            raise OfflineError(f"{out}: output folder is the input folder; refusing to overwrite")
        for image in images:
            enhance_image(enhancer, image, out / image.name, result)
        return result
    if not src.exists():
        raise OfflineError(f"{src}: no such file or directory")
    suffix = src.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        dst = out / src.name if out.is_dir() else out
        if dst.suffix.lower() not in IMAGE_SUFFIXES:
            raise OfflineError(f"{dst}: output of an image must be an image file or a folder")
        enhance_image(enhancer, src, dst, result)
        if result.failed:
            raise OfflineError(result.failed[0][1])
        return result
    if suffix in VIDEO_SUFFIXES:
        dst = out / f"{src.stem}.mp4" if out.is_dir() else out
        enhance_video(enhancer, src, dst, result)
        return result
    raise OfflineError(
        f"{src}: not an image ({', '.join(sorted(IMAGE_SUFFIXES))}), "
        f"video ({', '.join(sorted(VIDEO_SUFFIXES))}) or folder"
    )
