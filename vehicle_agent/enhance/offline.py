"""`vehicle-agent enhance`: the enhance stage's runtime applied offline to an image, a folder or a
video, gated as the daemon gates it.

The daemon's gate picks the model from the scene condition the quality monitor reports on the
raw frame. `SceneGate` reproduces that outside the pipeline: on a video, every frame is measured
and classified through the monitor's `ConditionTracker` (same thresholds and hold times, in
video time); an image is a scene of its own, judged as a stream's first frame would be, given to
the gate `switch_after_frames` times (so the gating table applies at once) and with the harm
guard's smoothing reset (the verdict repeating that frame would converge to). The benchmark
(`tools.gan bench`, its default-chain column) runs the same class, so the two agree.

Pictures above `MAX_SIDE` pixels on a side or `MAX_PIXELS` in all are refused, from the file's
header before it is decoded: a model at full resolution needs about 35 bytes per pixel (a
20000×20000 image took 13 GB). An output never replaces its input, and its folder must exist.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import PIL.Image

from vehicle_agent.enhance.base import Enhancer, EnhancerError
from vehicle_agent.output.sinks import CODEC_BY_SUFFIX, SinkError, VideoWriter
from vehicle_agent.records import Image

if TYPE_CHECKING:
    from vehicle_agent.config import Config
    from vehicle_agent.enhance.settings import EnhanceConfig, EnhancerConfig

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg"})
MAX_SIDE = 8192
"""Widest or tallest picture `enhance` takes, pixels."""
MAX_PIXELS = 50_000_000
"""Largest picture `enhance` takes, pixels in all (50 megapixels)."""


class OfflineError(Exception):
    """The input or output of `enhance` cannot be used; the message names the path."""


class EnhancerLoadError(OfflineError):
    """The enhancer could not be made ready (a named backend or model cannot run): the whole
    run stops, not just one file."""


_LIMIT = f"at most {MAX_SIDE} px on a side and {MAX_PIXELS // 1_000_000} megapixels"


def check_size(path: Path, width: int, height: int) -> None:
    """Refuse a picture above `MAX_SIDE` on a side or `MAX_PIXELS` in all."""
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise OfflineError(
            f"{path}: {width}×{height} is too large to enhance ({_LIMIT}); scale it down first"
        )


def _header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the image file's header, without decoding the pixels; None when
    Pillow cannot tell (the decoded frame is checked instead)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(path) as image:
                width, height = image.size
    except PIL.Image.DecompressionBombError:
        # Pillow's own limit, far above ours, stops it before it tells the size.
        limit = 2 * (PIL.Image.MAX_IMAGE_PIXELS or 0) // 1_000_000
        raise OfflineError(
            f"{path}: over {limit} megapixels is too large to enhance ({_LIMIT}); "
            "scale it down first"
        ) from None
    except (OSError, ValueError, SyntaxError):
        return None
    return int(width), int(height)


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

    def _ready(self) -> Enhancer:
        if self.inner is None:
            try:
                self.inner = self._make()
                self.inner.load()
            except EnhancerError as exc:
                raise EnhancerLoadError(str(exc)) from exc
        return self.inner

    def _enhance(self, image: Image) -> Image:
        inner = self._ready()
        out = inner.enhance(image)
        self.name = inner.name
        return out

    def set_condition(self, condition: str | None) -> None:
        self._ready().set_condition(condition)

    def reset_guard(self) -> None:
        self._ready().reset_guard()

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


def named_chain(
    enhance: EnhanceConfig,
    state_dir: Path,
    backend: str | None,
    model: str | None,
    model_dirs: Sequence[Path] = (),
) -> tuple[EnhanceConfig, list[EnhancerConfig] | None]:
    """`[enhance]` with what `--backend`/`--model`/`--model-dir` name, and the chain that runs
    exactly that (None: the configured chain). A model that no folder holds, a model with a
    backend that runs none, or a chain with no model backend is an `OfflineError`, before
    anything loads: what the user named runs or fails, never a silent fallback."""
    from pydantic import TypeAdapter, ValidationError  # noqa: PLC0415

    from vehicle_agent.enhance.settings import MODEL_BACKENDS, EnhancerConfig  # noqa: PLC0415

    changes: dict[str, object] = {"model_dirs": [*model_dirs, *enhance.model_dirs]}
    if backend or model:
        # Offline no scene condition is observed: the gate only matters for what it preloads.
        changes["gating"] = {}
    if model is not None:
        changes["model"] = model
    try:
        enhance = type(enhance).model_validate(
            enhance.model_dump(exclude={"backend"}, exclude_unset=False) | changes
        )
    except ValidationError as exc:
        raise OfflineError(f"--model: {exc.errors()[0]['msg']}") from None
    chain = None
    if backend is not None:
        same = [c for c in enhance.chain if c.type == backend]
        chain = same[:1] or [TypeAdapter(EnhancerConfig).validate_python({"type": backend})]
    if model is not None:
        if backend is not None and backend not in MODEL_BACKENDS:
            raise OfflineError(f"--model {model}: --backend {backend} runs no model")
        if chain is None:
            # The model, or an error: not the chain's model-free fallbacks.
            chain = [c for c in enhance.chain if c.type in MODEL_BACKENDS]
            if not chain:
                raise OfflineError(
                    f"--model {model}: the config's [enhance] chain has no model backend "
                    f"({', '.join(sorted(MODEL_BACKENDS))}); add --backend onnxruntime"
                )
        _check_model(enhance, state_dir, model)
    return enhance, chain


def _check_model(enhance: EnhanceConfig, state_dir: Path, name: str) -> None:
    """Refuse `--model NAME` when no model folder holds it (before anything loads)."""
    from vehicle_agent.enhance.manifest import ManifestError  # noqa: PLC0415
    from vehicle_agent.enhance.store import ModelNotFoundError, ModelStore, default_dirs  # noqa: PLC0415

    store = ModelStore(default_dirs(state_dir, enhance.model_dirs))
    try:
        store.find(name)
    except ModelNotFoundError as exc:
        installed = ", ".join(store.names()) or "none"
        raise OfflineError(f"--model {name}: {exc} (installed: {installed})") from None
    except ManifestError as exc:
        raise OfflineError(f"--model {name}: {exc}") from None


class SceneGate:
    """The scene condition the daemon's quality monitor would report, fed to an enhancer's gate
    before each frame (see the module docstring). `last` is the latest frame's condition."""

    def __init__(self, config: Config) -> None:
        from vehicle_agent.quality.condition import ConditionTracker  # noqa: PLC0415
        from vehicle_agent.quality.monitor import settings_from_config  # noqa: PLC0415

        settings = settings_from_config(config.quality, config.adhesion)
        self.analysis_width = settings.analysis_width
        self.thresholds = settings.thresholds
        self.repeats = config.enhance.switch_after_frames
        self._tracker = ConditionTracker(
            settings.thresholds, settings.condition_hold_s, settings.low_light_hold_s
        )
        self.last: str | None = None

    def condition(self, image: Image, t: float | None = None) -> str:
        """`image` (BGR) as a still scene (`t` None) or as the frame at video time `t`."""
        from vehicle_agent.quality.condition import classify  # noqa: PLC0415
        from vehicle_agent.quality.metrics import measure, prepare  # noqa: PLC0415

        metrics = measure(prepare(image, self.analysis_width))
        if t is None:
            return classify(metrics, None, adhesion_detected=False, thresholds=self.thresholds)
        return self._tracker.update(metrics, t)

    def enhance(self, enhancer: Enhancer, image: Image, t: float | None = None) -> Image:
        """Gate `enhancer` on `image`'s condition, then enhance it."""
        self.last = self.condition(image, t)
        for _ in range(self.repeats if t is None else 1):
            enhancer.set_condition(self.last)
        if t is None:
            enhancer.reset_guard()
        return enhancer.enhance(image)


def _run(enhancer: Enhancer, gate: SceneGate | None, image: Image, t: float | None) -> Image:
    return enhancer.enhance(image) if gate is None else gate.enhance(enhancer, image, t)


def _read_image(path: Path) -> np.ndarray:
    size = _header_size(path)
    if size is not None:
        check_size(path, *size)
    # imdecode from bytes, so non-ASCII paths work and a corrupt file is one clear error.
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise OfflineError(f"{path}: cannot read: {exc.strerror or exc}") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise OfflineError(f"{path}: cannot decode image")
    check_size(path, image.shape[1], image.shape[0])
    return np.asarray(image)


def _write_image(path: Path, image: np.ndarray) -> None:
    ok, encoded = cv2.imencode(path.suffix, image)
    if not ok:
        raise OfflineError(f"{path}: cannot encode image as {path.suffix}")
    try:
        encoded.tofile(path)
    except OSError as exc:
        raise OfflineError(f"{path}: cannot write: {exc.strerror or exc}") from None


def _check_output(src: Path, dst: Path) -> None:
    """An output file needs an existing folder and must not be the input."""
    if not dst.parent.is_dir():
        raise OfflineError(f"{dst}: no such folder {dst.parent}; create it first")
    if dst.exists() and dst.resolve() == src.resolve():
        raise OfflineError(f"{dst}: is the input; refusing to overwrite it (choose another --out)")


def enhance_image(
    enhancer: Enhancer,
    src: Path,
    dst: Path,
    result: OfflineResult,
    gate: SceneGate | None = None,
) -> None:
    try:
        image = _read_image(src)
        _write_image(dst, _run(enhancer, gate, image, None))
    except EnhancerLoadError:
        raise
    except (OfflineError, EnhancerError) as exc:
        result.failed.append((src, str(exc)))
        return
    result.written.append(dst)
    result.frames += 1


Progress = Callable[[int, int | None], None]
"""Called after each frame of a video with (frames done, frames in the file or None)."""


def enhance_video(
    enhancer: Enhancer,
    src: Path,
    dst: Path,
    result: OfflineResult,
    gate: SceneGate | None = None,
    *,
    progress: Progress | None = None,
) -> None:
    if dst.suffix.lower() not in CODEC_BY_SUFFIX:
        raise OfflineError(f"{dst}: unsupported output video type; use {sorted(CODEC_BY_SUFFIX)}")
    cap = cv2.VideoCapture(str(src), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise OfflineError(f"{src}: cannot decode video")
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    try:
        check_size(src, width, height)
    except OfflineError:
        cap.release()
        raise
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if fps and fps > 0 else 10.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    writer = VideoWriter(dst, fps)
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            t = result.frames / fps
            writer.write(_run(enhancer, gate, np.asarray(frame), t))
            result.frames += 1
            if progress is not None:
                progress(result.frames, total if total > 0 else None)
    except (EnhancerError, SinkError) as exc:
        raise OfflineError(f"{src}: frame {result.frames}: {exc}") from exc
    finally:
        writer.close()
        cap.release()
    if result.frames == 0:
        raise OfflineError(f"{src}: no frame could be decoded")
    result.written.append(dst)


def enhance_path(
    enhancer: Enhancer,
    src: Path,
    out: Path,
    gate: SceneGate | None = None,
    *,
    progress: Progress | None = None,
) -> OfflineResult:
    """Enhance `src` into `out`: image → image, folder → folder (same names), video → video;
    with `gate`, every frame is gated on its scene condition first; `progress` follows a video."""
    result = OfflineResult()
    if src.is_dir():
        if out.exists() and not out.is_dir():
            raise OfflineError(f"{out}: input is a folder, so the output must be a folder")
        images = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise OfflineError(f"{src}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OfflineError(f"{out}: cannot create the folder: {exc.strerror or exc}") from None
        if out.resolve() == src.resolve():
            raise OfflineError(f"{out}: output folder is the input folder; refusing to overwrite")
        for image in images:
            enhance_image(enhancer, image, out / image.name, result, gate)
        return result
    if not src.exists():
        raise OfflineError(f"{src}: no such file or directory")
    suffix = src.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        dst = out / src.name if out.is_dir() else out
        if dst.suffix.lower() not in IMAGE_SUFFIXES:
            raise OfflineError(f"{dst}: output of an image must be an image file or a folder")
        _check_output(src, dst)
        enhance_image(enhancer, src, dst, result, gate)
        if result.failed:
            raise OfflineError(result.failed[0][1])
        return result
    if suffix in VIDEO_SUFFIXES:
        dst = out / f"{src.stem}.mp4" if out.is_dir() else out
        _check_output(src, dst)
        enhance_video(enhancer, src, dst, result, gate, progress=progress)
        return result
    raise OfflineError(
        f"{src}: not an image ({', '.join(sorted(IMAGE_SUFFIXES))}), "
        f"video ({', '.join(sorted(VIDEO_SUFFIXES))}) or folder"
    )
