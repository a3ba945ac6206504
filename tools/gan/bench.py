"""Quality benchmark: PSNR and SSIM of enhancement methods against the clean picture, per
degradation, and on clean pictures against the input (a good picture must come out undamaged).

    python -m tools.gan bench                         # held-out footage: the headline table
    python -m tools.gan bench --split train           # the same on train scenes × renderers
    python -m tools.gan bench --kinds fog,clean --scene home --no-peer   # a quick look
    python -m tools.gan bench --legacy-frames         # the old frames and tools.gan.degrade

By default (`evaluate_footage`) the pictures are the footage bank's `enhance` set
(`tools.footage.sets`, built for the run): held-out scenes, each clean and degraded by held-out
renderers (low light, fog, lens drops, motion blur with noise, rain streaks). Columns: identity,
CLAHE, auto-gamma, the Zero-DCE++ peer, each ONNX model run raw, and the daemon's default chain
(`build_enhancer`, see `ChainMethod`) with and without its harm guard. Each cell also gives the
worst frame and the frames the method harmed (more than 1 dB below an input that was ≥ 25 dB).

`evaluate` is the older bench (tools.gan.data held-out frames degraded by `tools.gan.degrade`,
the training renderers); `ship` and the method experiments still quote it.

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
from collections.abc import Callable, Mapping, Sequence
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


class ScoreCache:
    """PSNR and SSIM of a method's output against the clean image. The `cacheable` methods'
    scores (fixed baselines: the peer takes seconds per frame) are kept in `path`, keyed by the
    method and the bytes of both images, so they never go stale."""

    def __init__(self, path: Path | None, cacheable: Sequence[str], metric_ssim: bool) -> None:
        self.path = path
        self.cacheable = frozenset(cacheable)
        self.metric_ssim = metric_ssim
        self.stored: dict[str, list[float]] = (
            json.loads(path.read_text()) if path is not None and path.is_file() else {}
        )

    def score(
        self, name: str, method: Method, clean: RGB, poor: RGB
    ) -> tuple[float, float, float | None]:
        """(PSNR, SSIM or NaN, seconds the method ran or None when the cache had it)."""
        digest = hashlib.sha1(clean.tobytes() + poor.tobytes(), usedforsecurity=False)
        key = f"{name}|{digest.hexdigest()}|{self.metric_ssim}"
        if name in self.cacheable and key in self.stored:
            p, s = self.stored[key]
            return p, s, None
        t0 = time.perf_counter()
        out = method(poor)
        seconds = time.perf_counter() - t0
        p = psnr(clean, out)
        s = ssim(clean, out) if self.metric_ssim else math.nan
        if name in self.cacheable:
            self.stored[key] = [p, s]
        return p, s, seconds

    def save(self) -> None:
        if self.path is not None and self.cacheable:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.stored))


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
    scorer = ScoreCache(cache, cacheable, metric_ssim)
    scores: dict[tuple[str, Kind], Score] = {(m, k): Score() for m in methods for k in kinds}
    for kind in kinds:
        for fi, sample in enumerate(frames):
            clean = sample.image
            poor = degrade(clean, kind, eval_seed(kind, fi))
            for name, method in methods.items():
                score = scores[(name, kind)]
                p, s, seconds = scorer.score(name, method, clean, poor)
                score.seconds += seconds or 0.0
                score.psnr.append(p)
                if metric_ssim:
                    score.ssim.append(s)
        if log:
            line = "  ".join(f"{m} {scores[(m, kind)].mean_psnr:.2f}" for m in methods)
            log(f"{kind}: {line}")
    scorer.save()
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


# ---------------------------------------------------------------------------------------------
# The enhancement benchmark on the footage bank (what `python -m tools.gan bench` runs)

FOOTAGE_KINDS: tuple[str, ...] = (
    "low_light",
    "fog",
    "lens_drops",
    "motion_blur",
    "rain_streaks",
    "clean",
)
"""The rows of the footage bench, in table order: the `enhance` set's kinds."""
FOOTAGE_LABELS = {
    "low_light": "low light",
    "fog": "fog",
    "lens_drops": "lens drops",
    "motion_blur": "motion blur + noise",
    "rain_streaks": "rain streaks",
    "clean": "clean (vs input)",
}
HARM_INPUT_DB = 25.0
"""A frame can be harmed only where its input is already this good (PSNR against clean) …"""
HARM_MARGIN_DB = 1.0
"""… and it is harmed when the method's output is more than this much worse than the input."""
RAW_MODEL = "fast-enhance (raw)"
CHAIN = "default chain"
CHAIN_NO_GUARD = "default chain, no guard"


def candidate_column(
    gating: Mapping[str, str] | None = None, quality: Mapping[str, float] | None = None
) -> str:
    """The column of the chain run with `gating` over the default gating table and `quality`
    over the default `[quality]` settings (the scene condition's lines)."""
    entries = {**(gating or {}), **{k: f"{v:g}" for k, v in (quality or {}).items()}}
    return "chain, " + ", ".join(f"{k}={v}" for k, v in sorted(entries.items()))


PEER = "Zero-DCE++ (peer)"
BENCH_LATENCY_MS = 60_000.0
"""The chain's `max_latency_ms` in the bench: a quality bench on a shared CPU must not demote a
backend for speed (`python -m tools.gan speed` measures that); nothing else changes."""


@dataclass(frozen=True, slots=True)
class Pair:
    """One held-out (or train) image: its clean truth and one degraded copy (`kind`)."""

    scene: str
    kind: str
    family: str
    """Renderer family of the degradation ('' for clean)."""
    clean: RGB
    degraded: RGB


@dataclass(frozen=True, slots=True)
class FootageSet:
    split: str
    seed: int
    digest: str
    """sha256 over the set's files (`tools.footage.sets.digest_tree`): what exactly was judged."""
    source: str
    """The folder read, or 'built' (built for this run)."""
    pairs: list[Pair]


def _read_rgb(path: Path) -> RGB:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"{path}: cannot read image")
    return np.ascontiguousarray(image[..., ::-1])


def read_enhance_set(
    folder: Path, kinds: Sequence[str] = FOOTAGE_KINDS, source: str | None = None
) -> FootageSet:
    """The pairs of an `enhance` set built by `python -m tools.footage build enhance`; 'clean'
    pairs a clean image with itself."""
    from tools.footage.sets import digest_tree  # noqa: PLC0415

    index_path = folder / "index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path}: not an enhance set (no index.json)")
    index = json.loads(index_path.read_text())
    if index.get("set") != "enhance":
        raise ValueError(f"{folder}: set {index.get('set')!r}, expected 'enhance'")
    cleans: dict[str, RGB] = {}
    scenes: dict[str, str] = {}
    pairs: list[Pair] = []
    for entry in index["pairs"]:
        file = str(entry["clean"])
        if file not in cleans:
            cleans[file] = _read_rgb(folder / file)
            scenes[str(entry["scene"])] = file
        if entry["kind"] in kinds:
            degraded = _read_rgb(folder / entry["degraded"])
            pairs.append(
                Pair(entry["scene"], entry["kind"], entry["family"], cleans[file], degraded)
            )
    if "clean" in kinds:
        pairs += [Pair(s, "clean", "", cleans[f], cleans[f]) for s, f in scenes.items()]
    pairs.sort(key=lambda p: list(kinds).index(p.kind))  # stable: scenes keep the set's order
    return FootageSet(
        str(index["split"]),
        int(index["seed"]),
        digest_tree(folder),
        source or str(folder),
        pairs,
    )


def build_enhance_set(
    split: str = "held_out",
    kinds: Sequence[str] = FOOTAGE_KINDS,
    *,
    seed: int = 0,
    scene: str | None = None,
) -> FootageSet:
    """The footage bank's `enhance` set, built for this run (a few seconds) with its own
    builder, so every renderer, family and seed is the one `tools.footage build enhance` uses."""
    import tempfile  # noqa: PLC0415

    from tools.footage.sets import BuildOptions, build  # noqa: PLC0415

    options = BuildOptions(split=split, seed=seed, scene=scene)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="bench-enhance-") as tmp:
        folder = Path(tmp) / "enhance"
        build("enhance", folder, options, lambda _: None)
        return read_enhance_set(folder, kinds, source="built")


class ChainMethod:
    """The enhance stage's runtime exactly as the daemon builds it from the default config
    (`build_enhancer`: the onnxruntime models → classical → passthrough, the gate and its
    gating table, the harm guard unless `guard=False`), on BGR frames as the daemon feeds it,
    each image gated by `SceneGate` exactly as `vehicle-agent enhance` gates an image (its
    condition as a still scene, given `switch_after_frames` times; the guard's smoothing reset).
    Models come from the shipped `models/` only (no state_dir). `gating` overrides entries of
    the default gating table and `quality` entries of `[quality]` (for example the low-light
    line the gate routes by): a candidate, judged beside the default.
    """

    def __init__(
        self,
        guard: bool = True,
        gating: Mapping[str, str] | None = None,
        quality: Mapping[str, float] | None = None,
    ) -> None:
        from vehicle_agent.config import Config  # noqa: PLC0415
        from vehicle_agent.enhance.chain import DEFAULT_GUARD, build_enhancer  # noqa: PLC0415
        from vehicle_agent.enhance.offline import SceneGate  # noqa: PLC0415

        config = Config.model_validate({"quality": dict(quality)}) if quality else Config()
        enhance = config.enhance
        health = enhance.health.model_copy(update={"max_latency_ms": BENCH_LATENCY_MS})
        update: dict[str, Any] = {"health": health}
        if gating:
            update["gating"] = {**enhance.gating, **gating}
        enhance = enhance.model_copy(update=update)
        self.chain = build_enhancer(
            enhance, None, background=False, guard=DEFAULT_GUARD if guard else None
        )
        self.chain.load()
        self.gate = SceneGate(config)
        self.last: dict[str, str | float | None] = {}
        """What ran on the latest image: condition, backend, guard weight and rule."""

    def __call__(self, image: RGB) -> RGB:
        bgr = np.ascontiguousarray(image[..., ::-1])
        out = self.gate.enhance(self.chain, bgr)
        guard = self.chain.guard
        decision = guard.last if guard is not None else None
        self.last = {
            "condition": self.gate.last,
            "backend": self.chain.name,
            "guard_weight": None if decision is None else round(decision.weight, 3),
            "guard_rule": None if decision is None else decision.reason,
        }
        return np.ascontiguousarray(out[..., ::-1])

    def close(self) -> None:
        self.chain.close()


def footage_methods(
    models: Sequence[Path] = (),
    *,
    peer: bool = True,
    chain: bool = True,
    gating: Mapping[str, str] | None = None,
    quality: Mapping[str, float] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, Method], dict[str, str]]:
    """The columns: baselines, the peer, each ONNX model run raw (`models`; the name
    '<folder> (raw)'), the default chain with and without the guard, and with `gating` and/or
    `quality` the chain under those overrides (`candidate_column`); and {method: why it was
    skipped}."""
    methods: dict[str, Method] = {"identity": identity, "CLAHE": clahe, "auto-gamma": auto_gamma}
    skipped: dict[str, str] = {}
    if peer:
        wheel = find_peer_wheel()
        if wheel is None:
            skipped[PEER] = f"{PEER_WHEEL} not found and not downloadable ({PEER_SPEC})"
        else:
            try:
                methods[PEER] = zero_dce_peer(wheel)
            except ImportError as exc:
                skipped[PEER] = f"torch is needed to run it: {exc}"
    else:
        skipped[PEER] = "--no-peer"
    for path in models:
        methods[f"{path.parent.name} (raw)"] = onnx_model(path)
    if chain:
        methods[CHAIN] = ChainMethod(guard=True)
        methods[CHAIN_NO_GUARD] = ChainMethod(guard=False)
        if gating or quality:
            methods[candidate_column(gating, quality)] = ChainMethod(
                guard=True, gating=gating, quality=quality
            )
    if log:
        for name, reason in skipped.items():
            log(f"{name} skipped: {reason}")
    return methods, skipped


@dataclass(frozen=True, slots=True)
class FrameScore:
    scene: str
    family: str
    psnr: float
    ssim: float
    input_psnr: float
    """The degraded input's PSNR against clean (100 on clean frames: the input is the truth)."""
    detail: dict[str, str | float | None] = field(default_factory=dict)

    @property
    def eligible(self) -> bool:
        return self.input_psnr >= HARM_INPUT_DB

    @property
    def harmed(self) -> bool:
        return self.eligible and self.psnr < self.input_psnr - HARM_MARGIN_DB


@dataclass
class Cell:
    """One (condition, method): every frame's score."""

    frames: list[FrameScore] = field(default_factory=list)
    seconds: float = 0.0
    runs: int = 0

    @property
    def mean_psnr(self) -> float:
        return float(np.mean([f.psnr for f in self.frames])) if self.frames else math.nan

    @property
    def mean_ssim(self) -> float:
        values = [f.ssim for f in self.frames if not math.isnan(f.ssim)]
        return float(np.mean(values)) if values else math.nan

    @property
    def worst(self) -> FrameScore | None:
        return min(self.frames, key=lambda f: f.psnr) if self.frames else None

    @property
    def harmed(self) -> list[FrameScore]:
        return [f for f in self.frames if f.harmed]

    @property
    def eligible(self) -> int:
        return sum(f.eligible for f in self.frames)


def _db(value: float) -> str:
    return "∞" if value >= 99.0 else f"{value:.2f}"


@dataclass
class FootageReport:
    split: str
    kinds: tuple[str, ...]
    methods: tuple[str, ...]
    cells: dict[tuple[str, str], Cell]
    footage: FootageSet
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def table(self) -> str:
        """Markdown: one row per condition, one column per method; each cell mean PSNR dB /
        mean SSIM / worst-frame PSNR dB / frames harmed; the best mean PSNR of a row in bold."""
        scenes = len({p.scene for p in self.footage.pairs})
        split = self.split.replace("_", "-")
        head = f"| {split} ({scenes} images) | " + " | ".join(self.methods) + " |"
        rows = [head, "|---|" + "---:|" * len(self.methods)]
        for kind in self.kinds:
            cells = [self.cells[(kind, m)] for m in self.methods]
            best = max(c.mean_psnr for c in cells)
            texts = []
            for c in cells:
                worst = c.worst
                text = (
                    f"{_db(c.mean_psnr)} / {c.mean_ssim:.3f} / "
                    f"{_db(worst.psnr) if worst else '–'} / {len(c.harmed)}"
                )
                texts.append(f"**{text}**" if c.mean_psnr == best else text)
            eligible = cells[0].eligible if cells else 0
            label = f"{FOOTAGE_LABELS.get(kind, kind)} ({len(cells[0].frames)}; {eligible} ≥ 25 dB)"
            rows.append(f"| {label} | " + " | ".join(texts) + " |")
        legend = (
            "Cells: mean PSNR dB / mean SSIM / worst-frame PSNR dB / frames harmed (output more "
            f"than {HARM_MARGIN_DB:g} dB below an input already ≥ {HARM_INPUT_DB:g} dB; the row "
            "says how many inputs are). ∞: identical to the truth."
        )
        return "\n".join([*rows, "", legend])

    def timing(self) -> str:
        parts = []
        for m in self.methods:
            seconds = sum(self.cells[(k, m)].seconds for k in self.kinds)
            runs = sum(self.cells[(k, m)].runs for k in self.kinds)
            parts.append(f"{m} {1000 * seconds / runs:.0f}" if runs else f"{m} cached")
        return f"ms per frame: {', '.join(parts)}; {self.seconds:.0f} s in all"

    def as_dict(self) -> dict[str, Any]:
        results: dict[str, dict[str, Any]] = {}
        for kind in self.kinds:
            results[kind] = {}
            for m in self.methods:
                c = self.cells[(kind, m)]
                worst = c.worst
                results[kind][m] = {
                    "psnr": round(c.mean_psnr, 3),
                    "ssim": None if math.isnan(c.mean_ssim) else round(c.mean_ssim, 4),
                    "worst_psnr": None if worst is None else round(worst.psnr, 3),
                    "worst_scene": None if worst is None else worst.scene,
                    "harmed": len(c.harmed),
                    "harmed_scenes": [f.scene for f in c.harmed],
                    "eligible": c.eligible,
                    "frames": len(c.frames),
                    "ms_per_frame": round(1000 * c.seconds / c.runs, 2) if c.runs else None,
                }
        frames = {
            kind: {
                m: [
                    {
                        "scene": f.scene,
                        "family": f.family,
                        "psnr": round(f.psnr, 3),
                        "ssim": None if math.isnan(f.ssim) else round(f.ssim, 4),
                        "input_psnr": round(f.input_psnr, 3),
                        **f.detail,
                    }
                    for f in self.cells[(kind, m)].frames
                ]
                for m in self.methods
            }
            for kind in self.kinds
        }
        return {
            "set": {
                "name": "enhance",
                "split": self.footage.split,
                "seed": self.footage.seed,
                "sha256": self.footage.digest,
                "source": self.footage.source,
                "images": len({p.scene for p in self.footage.pairs}),
            },
            "harm_rule": {
                "input_psnr_at_least": HARM_INPUT_DB,
                "worse_by_more_than": HARM_MARGIN_DB,
            },
            "kinds": list(self.kinds),
            "methods": list(self.methods),
            "skipped": self.skipped,
            "seconds": round(self.seconds, 1),
            "results": results,
            "frames": frames,
        }


def evaluate_footage(
    methods: dict[str, Method],
    footage: FootageSet,
    *,
    kinds: Sequence[str] = FOOTAGE_KINDS,
    metric_ssim: bool = True,
    log: Callable[[str], None] | None = None,
    cache: Path | None = None,
    cacheable: Sequence[str] = (),
    skipped: dict[str, str] | None = None,
) -> FootageReport:
    """Score every method on every pair of `footage` against its clean image (clean pairs: the
    output against the input itself). `cacheable` methods' scores are kept in `cache` as in
    `evaluate` (keyed by the method and both images' bytes)."""
    start = time.perf_counter()
    scorer = ScoreCache(cache, cacheable, metric_ssim)
    kinds = tuple(k for k in kinds if any(p.kind == k for p in footage.pairs))
    cells = {(k, m): Cell() for k in kinds for m in methods}
    for kind in kinds:
        for pair in (p for p in footage.pairs if p.kind == kind):
            clean, poor = pair.clean, pair.degraded
            input_psnr = psnr(clean, poor)
            for name, method in methods.items():
                cell = cells[(kind, name)]
                detail: dict[str, str | float | None] = {}
                p, s, seconds = scorer.score(name, method, clean, poor)
                if seconds is not None:
                    cell.seconds += seconds
                    cell.runs += 1
                    if isinstance(method, ChainMethod):
                        detail = dict(method.last)
                cell.frames.append(FrameScore(pair.scene, pair.family, p, s, input_psnr, detail))
        if log:
            line = "  ".join(f"{m} {_db(cells[(kind, m)].mean_psnr)}" for m in methods)
            log(f"{kind}: {line}")
    scorer.save()
    return FootageReport(
        footage.split,
        kinds,
        tuple(methods),
        cells,
        footage,
        dict(skipped or {}),
        time.perf_counter() - start,
    )


def close_methods(methods: dict[str, Method]) -> None:
    for method in methods.values():
        if isinstance(method, ChainMethod):
            method.close()
