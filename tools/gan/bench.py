"""Quality benchmark: PSNR and SSIM of enhancement methods on held-out real frames, per
degradation against the clean frame, and on clean frames against the input (a good picture must
come out undamaged).

    python -m tools.gan bench                       # the shipped default model and baselines
    python -m tools.gan bench --model models/fast-enhance/model.onnx --kinds low_light,fog

Methods: identity, CLAHE (OpenCV, L of Lab), auto-gamma (mean luma to ½), the daemon's current
`classical` backend, the Zero-DCE++ peer of the `neuro-low-light` wheel (MIT; its model.py and
weights are read straight from the wheel, its CLI would need torchvision), and each ONNX model
run with onnxruntime exactly as the vehicle runs it (padded to the manifest's stride).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import subprocess
import sys
import time
import types
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tools.gan.data import CACHE, Sample, held_out_images
from tools.gan.degrade import KINDS, RGB, Kind, degrade

EVAL_KINDS: tuple[Kind, ...] = ("low_light", "fog", "rain", "blur", "noise", "clean")
EVAL_SEED = 900_000
"""Evaluation pairs use seeds from here on (training seeds come from another stream)."""
PEER_SPEC = "neuro-low-light==0.1.0"
PEER_WHEEL = "neuro_low_light-0.1.0-py3-none-any.whl"
PEER_CANDIDATES = (Path("/tmp/nll") / PEER_WHEEL, CACHE / "peer" / PEER_WHEEL)  # noqa: S108

Method = Callable[[RGB], RGB]


def eval_seed(kind: Kind, frame: int) -> int:
    """The seed of held-out frame `frame` degraded by `kind`: the same whichever kinds run."""
    return EVAL_SEED + 1000 * KINDS.index(kind) + frame


def identity(image: RGB) -> RGB:
    return image


def clahe(image: RGB, clip: float = 2.0, grid: int = 8) -> RGB:
    """OpenCV CLAHE on L of Lab, chroma untouched."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    op = cv2.createCLAHE(clipLimit=clip, tileGridSize=(grid, grid))
    lab[..., 0] = op.apply(np.ascontiguousarray(lab[..., 0]))
    return np.asarray(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), np.uint8)


def auto_gamma(image: RGB) -> RGB:
    """The gamma that moves mean luma to ½: γ = log ½ / log mean, on every channel."""
    mean = float(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).mean()) / 255.0
    mean = min(max(mean, 1e-3), 0.999)
    gamma = math.log(0.5) / math.log(mean)
    lut = np.clip((np.arange(256) / 255.0) ** gamma * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.asarray(cv2.LUT(image, lut), np.uint8)


def classical(image: RGB) -> RGB:
    """The daemon's `classical` backend (gamma for dark frames + CLAHE on Y), on BGR as it runs."""
    from vehicle_agent.enhance.classical import ClassicalEnhancer  # noqa: PLC0415

    bgr = np.ascontiguousarray(image[..., ::-1])
    return np.ascontiguousarray(ClassicalEnhancer().enhance(bgr)[..., ::-1])


def find_peer_wheel(download: bool = True) -> Path | None:
    """The `neuro-low-light` wheel: a known copy, or `pip download` into the cache folder."""
    for path in PEER_CANDIDATES:
        if path.is_file():
            return path
    if not download:
        return None
    dest = CACHE / "peer"
    dest.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), PEER_SPEC],
        check=False,
        capture_output=True,
    )
    path = dest / PEER_WHEEL
    return path if result.returncode == 0 and path.is_file() else None


def zero_dce_peer(wheel: Path, threads: int = 2) -> Method:
    """Zero-DCE++ from the wheel, full resolution, as its own inference code runs it."""
    import torch  # noqa: PLC0415 - train extra

    with zipfile.ZipFile(wheel) as zf:
        source = zf.read("neuro_low_light/model.py").decode()
        weights = zf.read("neuro_low_light/weights/best_model.pth")
    module = types.ModuleType("neuro_low_light_model")
    exec(compile(source, f"{wheel}!neuro_low_light/model.py", "exec"), module.__dict__)  # noqa: S102 - the peer's own MIT source, read from its wheel
    model = module.ZeroDCEPP(num_iterations=8)
    state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    model.load_state_dict(state["model_state_dict"])
    model.eval()
    torch.set_num_threads(threads)

    def run(image: RGB) -> RGB:
        x = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        with torch.inference_mode():
            out, _ = model(x)
        y = out[0].clamp(0, 1).permute(1, 2, 0).numpy()
        return np.asarray(y * 255.0 + 0.5, np.uint8)

    return run


def onnx_model(path: Path, threads: int = 2, stride: int | None = None) -> Method:
    """An ONNX generator run with onnxruntime, padded like the runtime pads: to `stride`, else
    to its manifest's."""
    import onnxruntime as ort  # noqa: PLC0415

    manifest_path = path.parent / "manifest.json"
    bgr = False
    if stride is None:
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{manifest_path}: no manifest to read the stride from")
        manifest = json.loads(manifest_path.read_text())
        stride = int(manifest["input"]["stride"])
        bgr = manifest["input"]["color"] == "BGR"
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(image: RGB) -> RGB:
        h, w = image.shape[:2]
        ph, pw = -h % stride, -w % stride
        src = image[..., ::-1] if bgr else image
        padded = cv2.copyMakeBorder(src, 0, ph, 0, pw, cv2.BORDER_REFLECT_101) if ph or pw else src
        x = (padded.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        (y,) = session.run(None, {name: np.ascontiguousarray(x)})
        out = np.clip(y[0].transpose(1, 2, 0)[:h, :w] * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(out[..., ::-1] if bgr else out)

    return run


def torch_model(generator: Any, stride: int) -> Method:
    """A PyTorch generator (while training, before export), padded like the runtime pads."""
    import torch  # noqa: PLC0415

    def run(image: RGB) -> RGB:
        h, w = image.shape[:2]
        ph, pw = -h % stride, -w % stride
        padded = (
            cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_REFLECT_101) if ph or pw else image
        )
        x = torch.from_numpy(padded.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        with torch.inference_mode():
            y = generator(x)[0, :, :h, :w].clamp(0, 1).permute(1, 2, 0).numpy()
        return np.asarray(y * 255.0 + 0.5, np.uint8)

    return run


def psnr(ref: RGB, out: RGB) -> float:
    mse = float(np.mean((ref.astype(np.float64) - out.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ssim(ref: RGB, out: RGB) -> float:
    from skimage import metrics  # noqa: PLC0415

    compare: Callable[..., Any] = metrics.structural_similarity
    return float(compare(ref, out, channel_axis=2, data_range=255))


@dataclass
class Score:
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def mean_psnr(self) -> float:
        return float(np.mean(self.psnr)) if self.psnr else float("nan")

    @property
    def mean_ssim(self) -> float:
        return float(np.mean(self.ssim)) if self.ssim else float("nan")


@dataclass
class Report:
    kinds: tuple[Kind, ...]
    methods: tuple[str, ...]
    frames: int
    scores: dict[tuple[str, Kind], Score]

    def table(self) -> str:
        """Markdown: one row per degradation, PSNR / SSIM per method; best PSNR in bold."""
        head = "| degradation | " + " | ".join(self.methods) + " |"
        rule = "|---|" + "---|" * len(self.methods)
        rows = [head, rule]
        for kind in self.kinds:
            best = max(self.scores[(m, kind)].mean_psnr for m in self.methods)
            cells = []
            for m in self.methods:
                s = self.scores[(m, kind)]
                cell = f"{s.mean_psnr:.2f} / {s.mean_ssim:.3f}"
                cells.append(f"**{cell}**" if s.mean_psnr == best else cell)
            label = "clean (vs input)" if kind == "clean" else kind
            rows.append(f"| {label} | " + " | ".join(cells) + " |")
        return "\n".join(rows)

    def as_dict(self) -> dict[str, dict[str, dict[str, float]]]:
        return {
            m: {
                k: {
                    "psnr": round(self.scores[(m, k)].mean_psnr, 3),
                    "ssim": round(self.scores[(m, k)].mean_ssim, 4),
                }
                for k in self.kinds
            }
            for m in self.methods
        }


def evaluate(
    methods: dict[str, Method],
    samples: Sequence[Sample] | None = None,
    *,
    kinds: Sequence[Kind] = EVAL_KINDS,
    metric_ssim: bool = True,
    log: Callable[[str], None] | None = None,
    cache: Path | None = None,
    cacheable: Sequence[str] = (),
) -> Report:
    """Score every method on every held-out frame degraded by every kind.

    Scores of the `cacheable` methods (fixed baselines: the peer takes seconds per frame) are
    kept in `cache`, keyed by the method and the bytes of both images, so they never go stale.
    """
    frames = held_out_images() if samples is None else list(samples)
    stored: dict[str, list[float]] = (
        json.loads(cache.read_text()) if cache is not None and cache.is_file() else {}
    )
    scores: dict[tuple[str, Kind], Score] = {(m, k): Score() for m in methods for k in kinds}
    for kind in kinds:
        for fi, sample in enumerate(frames):
            clean = sample.image
            poor = degrade(clean, kind, eval_seed(kind, fi))
            digest = hashlib.sha1(clean.tobytes() + poor.tobytes(), usedforsecurity=False)
            for name, method in methods.items():
                score = scores[(name, kind)]
                key = f"{name}|{digest.hexdigest()}|{metric_ssim}"
                if name in cacheable and key in stored:
                    p, s = stored[key]
                else:
                    t0 = time.perf_counter()
                    out = method(poor)
                    score.seconds += time.perf_counter() - t0
                    p = psnr(clean, out)
                    s = ssim(clean, out) if metric_ssim else float("nan")
                    if name in cacheable:
                        stored[key] = [p, s]
                score.psnr.append(p)
                if metric_ssim:
                    score.ssim.append(s)
        if log:
            line = "  ".join(f"{m} {scores[(m, kind)].mean_psnr:.2f}" for m in methods)
            log(f"{kind}: {line}")
    if cache is not None and cacheable:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(stored))
    return Report(tuple(kinds), tuple(methods), len(frames), scores)


def baselines(peer: bool = True, log: Callable[[str], None] | None = None) -> dict[str, Method]:
    methods: dict[str, Method] = {
        "identity": identity,
        "CLAHE": clahe,
        "auto-gamma": auto_gamma,
        "classical": classical,
    }
    if peer:
        wheel = find_peer_wheel()
        if wheel is None:
            if log:
                log("Zero-DCE peer skipped: neuro-low-light wheel not found and not downloadable")
        else:
            methods["Zero-DCE++ (peer)"] = zero_dce_peer(wheel)
    return methods


def save_examples(
    methods: dict[str, Method], out: Path, kinds: Sequence[Kind] = EVAL_KINDS, index: int = 0
) -> None:
    """One held-out frame per degradation through every method, side by side, for a look."""
    sample = held_out_images()[index]
    out.mkdir(parents=True, exist_ok=True)
    for kind in kinds:
        poor = degrade(sample.image, kind, eval_seed(kind, index))
        tiles = [poor] + [m(poor) for m in methods.values()] + [sample.image]
        row = np.concatenate([cv2.resize(t, (384, 288)) for t in tiles], axis=1)
        cv2.imwrite(str(out / f"{kind}.jpg"), row[..., ::-1])
