"""Developer tool: enhancement speed and pipeline throughput, every backend and model in one run.

python -m tools.bench_enhance                       # full run, JSON in build/bench_enhance.json
python -m tools.bench_enhance --frames 10 --clip-frames 60   # quick, on a busy machine

Measures, in the same run and through the daemon's own runtime (shared pre/post included):
- pre- and post-processing alone at each size;
- frames/s and latency p50/p99 at 640×480 and 1280×720 for: `classical` (CLAHE + gamma),
  every model in the model store on every model backend available here (onnxruntime, and
  TensorRT where importable), and three models this tool exports itself: `gain-lowres` (a
  stand-in for the real-time model: a gain map estimated at 1/8 resolution, applied at full
  resolution; untrained weights, the speed is the point), `unet3-16` (a full-resolution
  3-level U-Net, 16 base channels, untrained) and `zero-dce-peer` (the MIT `neuro-low-light`
  wheel's Zero-DCE++ weights, loaded from the wheel's model.py; never a dependency);
- the whole pipeline's sustained frame rate (capture → enhance → analyze → … → output) on a
  720p clip made from the sample footage, decoding included;
- `vehicle-agent enhance` itself on two 720p clips (the street as recorded, and darkened to
  dusk), with the default config (gating, guard) and with `--backend classical` (CLAHE) in
  the same run: what a user gets, decoding and encoding included (`--offline-only`: just this).

Exporting needs torch (CPU build) — the `train` extra; the ONNX models are cached in the work
directory between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.util
import io
import json
import math
import os
import platform
import statistics
import sys
import time
import types
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vehicle_agent import compat
from vehicle_agent.capture.uri import open_source
from vehicle_agent.catalogue import EVENT_TYPES
from vehicle_agent.config import (
    ClassicalEnhancerConfig,
    EnhanceConfig,
    EnhanceHealthConfig,
    OnnxRuntimeEnhancerConfig,
    parse_config,
)
from vehicle_agent.enhance.base import Enhancer, EnhancerError, create_enhancer
from vehicle_agent.enhance.chain import build_enhancer
from vehicle_agent.enhance.manifest import InputSpec, OutputSpec, build_manifest, write_manifest
from vehicle_agent.enhance.prepost import Crop, Postprocessor, Preprocessor, Tensor
from vehicle_agent.enhance.store import ModelStore, default_dirs
from vehicle_agent.events import EventBus
from vehicle_agent.output.sinks import FrameSink
from vehicle_agent.pipeline import Parts, Pipeline
from vehicle_agent.records import FrameRecord, Image
from vehicle_agent.sim.hardware import SimulatedFan
from vehicle_agent.sim.simulate import sample_video
from vehicle_agent.uplink.base import NoUplink

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"640x480": (480, 640), "1280x720": (720, 1280)}
PEER_WHEEL = Path("/tmp/nll/neuro_low_light-0.1.0-py3-none-any.whl")  # noqa: S108 - see field notes
TRAINING = {"data": "none (benchmark stand-in)", "seed": 0, "command": "tools.bench_enhance"}


@dataclass
class Row:
    name: str
    backend: str
    size: str
    frames: int
    fps: float
    p50_ms: float
    p99_ms: float
    note: str = ""


@dataclass
class Report:
    machine: dict[str, Any] = field(default_factory=dict)
    prepost: list[dict[str, Any]] = field(default_factory=list)
    enhance: list[Row] = field(default_factory=list)
    pipeline: list[dict[str, Any]] = field(default_factory=list)
    offline: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


# -- frames -----------------------------------------------------------------------------------


def dusk_frames(count: int, size: tuple[int, int], alpha: float = 0.35) -> list[Image]:
    """Real street frames from the sample footage, resized and darkened like dusk (`alpha` 1:
    as recorded)."""
    cap = cv2.VideoCapture(str(sample_video()))
    frames: list[Image] = []
    while len(frames) < count:
        ok, image = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        resized = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        frames.append(np.asarray(cv2.convertScaleAbs(resized, alpha=alpha), dtype=np.uint8))
    cap.release()
    return frames


def make_clip(path: Path, count: int, alpha: float = 0.35) -> Path:
    """A 720p clip (mp4v) of dusk street frames: what the pipeline benchmark decodes."""
    if path.is_file():
        return path
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 30.0, (1280, 720))
    for image in dusk_frames(count, (720, 1280), alpha):
        writer.write(image)
    writer.release()
    return path


# -- models this tool exports ------------------------------------------------------------------


def _export(net: Any, path: Path) -> None:
    import torch  # noqa: PLC0415 - the train extra; only this tool needs it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net.eval(),
            (torch.zeros(1, 3, 64, 64),),
            str(path),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {2: "h", 3: "w"}, "y": {2: "h", 3: "w"}},
            opset_version=17,
            dynamo=False,
        )


def _write_model(
    root: Path, name: str, architecture: str, stride: int, build: Callable[[], Any]
) -> None:
    directory = root / name
    if (directory / "manifest.json").is_file():
        return
    directory.mkdir(parents=True, exist_ok=True)
    _export(build(), directory / "model.onnx")
    manifest = build_manifest(
        directory / "model.onnx",
        name=name,
        version="0.0.1",
        task="low_light",
        opset=17,
        training={**TRAINING, "architecture": architecture},
        input_spec=InputSpec(stride=stride, min_size=stride),
        output_spec=OutputSpec(),
    )
    write_manifest(directory, manifest)
    (directory / "MODEL_CARD.md").write_text(f"# {name}\n\nBenchmark model: {architecture}.\n")


def unet3_16() -> Any:
    import torch  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415

    def block(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1),
            nn.ReLU(inplace=True),
        )

    class UNet(nn.Module):
        """3 levels (16, 32, 64 channels), full resolution in and out: ~117k parameters."""

        def __init__(self) -> None:
            super().__init__()
            self.e1, self.e2, self.e3 = block(3, 16), block(16, 32), block(32, 64)
            self.u2, self.d2 = nn.ConvTranspose2d(64, 32, 2, stride=2), block(64, 32)
            self.u1, self.d1 = nn.ConvTranspose2d(32, 16, 2, stride=2), block(32, 16)
            self.out = nn.Conv2d(16, 3, 1)
            self.pool = nn.MaxPool2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x1 = self.e1(x)
            x2 = self.e2(self.pool(x1))
            x3 = self.e3(self.pool(x2))
            y = self.d2(torch.cat([self.u2(x3), x2], 1))
            y = self.d1(torch.cat([self.u1(y), x1], 1))
            return torch.clamp(x + self.out(y), 0, 1)

    return UNet()


def gain_lowres() -> Any:
    import torch  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415
    from torch.nn import functional  # noqa: PLC0415

    class LowResGain(nn.Module):
        """A log-gain map estimated on a 1/8-resolution copy, upsampled and applied at full
        resolution: three cheap full-resolution passes (pool, upsample one channel, multiply).
        Zero-DCE-style curve iterations at full resolution cost 4 passes per iteration instead,
        which on 2 CPU cores is ~5× slower at 720p (measured while choosing this stand-in)."""

        def __init__(self, factor: int = 8) -> None:
            super().__init__()
            self.factor = factor
            self.net = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(16, 16, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(16, 16, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(16, 1, 3, padding=1),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            gain = torch.exp(self.net(functional.avg_pool2d(x, self.factor)))
            gain = functional.interpolate(gain, scale_factor=float(self.factor), mode="bilinear")
            return torch.clamp(x * gain, 0, 1)

    return LowResGain()


def zero_dce_peer() -> Any:
    import torch  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415

    with zipfile.ZipFile(PEER_WHEEL) as wheel:
        source = wheel.read("neuro_low_light/model.py").decode()
        checkpoint = torch.load(
            io.BytesIO(wheel.read("neuro_low_light/weights/best_model.pth")),
            map_location="cpu",
            weights_only=False,
        )
    module = types.ModuleType("neuro_low_light_model")
    exec(compile(source, "neuro_low_light/model.py", "exec"), module.__dict__)  # noqa: S102 - MIT peer, read from its wheel
    model = module.ZeroDCEPP()
    model.load_state_dict(checkpoint.get("model_state_dict", checkpoint))

    class EnhancedOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)[0]  # type: ignore[no-any-return]

    return EnhancedOnly()


def export_models(root: Path, report: Report) -> list[str]:
    if importlib.util.find_spec("torch") is None:
        report.skipped.append("exported models: torch not installed (pip install -e .[train])")
        return []
    names = []
    for name, arch, stride, build in (
        (
            "gain-lowres",
            "low-res gain estimation, full-res apply (stand-in, untrained)",
            8,
            gain_lowres,
        ),
        ("unet3-16", "U-Net 3 levels × 16 channels, full resolution (untrained)", 4, unet3_16),
        ("zero-dce-peer", "Zero-DCE++ from neuro-low-light 0.1.0 (MIT)", 1, zero_dce_peer),
    ):
        if name == "zero-dce-peer" and not PEER_WHEEL.is_file():
            report.skipped.append(f"zero-dce-peer: {PEER_WHEEL} not found")
            continue
        _write_model(root, name, arch, stride, build)
        names.append(name)
    return names


# -- measuring ----------------------------------------------------------------------------------


def measure(run: Callable[[Image], object], frames: list[Image], warmup: int) -> list[float]:
    for image in frames[:warmup]:
        run(image)
    times = []
    for image in frames:
        start = time.perf_counter()
        run(image)
        times.append(time.perf_counter() - start)
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def row(name: str, backend: str, size: str, times: list[float], note: str = "") -> Row:
    return Row(
        name,
        backend,
        size,
        len(times),
        round(len(times) / sum(times), 2),
        round(statistics.median(times) * 1000, 2),
        round(percentile(times, 0.99) * 1000, 2),
        note,
    )


def _post_only(post: Postprocessor, output: Tensor, crop: Crop, image: Image) -> Image:
    del image
    return post.to_image(output, crop)


def bench_prepost(report: Report, frames: dict[str, list[Image]], warmup: int) -> None:
    spec_in, spec_out = InputSpec(stride=8, min_size=8), OutputSpec()
    pre, post = Preprocessor(spec_in), Postprocessor(spec_out)
    for size, images in frames.items():
        tensor, crop = pre.to_tensor(images[0])
        output = tensor.copy()
        pre_t = measure(pre.to_tensor, images, warmup)
        post_t = measure(functools.partial(_post_only, post, output, crop), images, warmup)
        report.prepost.append(
            {
                "size": size,
                "pre_p50_ms": round(statistics.median(pre_t) * 1000, 2),
                "post_p50_ms": round(statistics.median(post_t) * 1000, 2),
            }
        )


def bench_enhancer(
    report: Report,
    *,
    name: str,
    backend: str,
    make: Callable[[], Enhancer],
    frames: dict[str, list[Image]],
    warmup: int,
) -> None:
    try:
        enhancer = make()
        enhancer.load()
    except EnhancerError as exc:
        report.skipped.append(f"{name} on {backend}: {exc}")
        return
    try:
        for size, images in frames.items():
            report.enhance.append(
                row(name, backend, size, measure(enhancer.enhance, images, warmup))
            )
            print(f"  {name:16s} {backend:12s} {size:9s} {report.enhance[-1].fps:7.1f} fps")
    finally:
        enhancer.close()


class _Times(FrameSink):
    def __init__(self) -> None:
        self.times: list[float] = []

    def write(self, record: FrameRecord) -> None:
        del record
        self.times.append(time.monotonic())

    def close(self) -> None:
        pass


async def _run_pipeline(clip: Path, enhance: EnhanceConfig) -> dict[str, Any]:
    config = parse_config({"capture": {"uri": f"file://{clip}", "pacing": "max", "on_end": "stop"}})
    enhancer = build_enhancer(enhance)
    timer = _Times()
    parts = Parts(
        open_source=lambda: open_source(config.capture.uri, config.capture),
        enhancer=enhancer,
        fan=SimulatedFan(),
        uplink=NoUplink(),
        sinks=[timer],
        events=EventBus(EVENT_TYPES),
    )
    result = await Pipeline(config, parts).run(asyncio.Event())
    times = timer.times
    sustained = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    return {
        "enhancer": enhancer.name,
        "frames": result.frames_out,
        "sustained_fps": round(sustained, 2),
        "stage_p50_ms": {k: v["median"] for k, v in result.latency_ms.items()},
    }


def bench_pipeline(report: Report, clip: Path, model_dir: Path, models: list[str]) -> None:
    chains: list[tuple[str, EnhanceConfig]] = [
        ("classical", EnhanceConfig(chain=[ClassicalEnhancerConfig()])),
        # The daemon's default: the shipped model, gated by scene condition, classical behind.
        (
            "default (fast-enhance)",
            EnhanceConfig(health=EnhanceHealthConfig(max_latency_ms=60_000.0)),
        ),
    ]
    if "gain-lowres" in models:
        chains.append(
            (
                "onnxruntime:gain-lowres",
                EnhanceConfig(
                    chain=[OnnxRuntimeEnhancerConfig(), ClassicalEnhancerConfig()],
                    model="gain-lowres",
                    model_dirs=[model_dir],
                    # Measure the model, not the chain's reaction to a slow machine.
                    health=EnhanceHealthConfig(max_latency_ms=60_000.0),
                ),
            )
        )
    for label, enhance in chains:
        found = compat.run(_run_pipeline(clip, enhance))
        found["chain"] = label
        report.pipeline.append(found)
        print(f"  pipeline {label:24s} {found['sustained_fps']:7.1f} fps ({found['enhancer']})")


def bench_offline(report: Report, clips: dict[str, Path]) -> None:
    """`vehicle-agent enhance CLIP` as a user runs it (default config: gating, guard), and the
    same clip through `--backend classical` (CLAHE + gamma) in the same run: frames per second
    of the whole command, decoding and encoding included."""
    from vehicle_agent.cli import main as cli_main  # noqa: PLC0415

    for label, clip in clips.items():
        frames = int(cv2.VideoCapture(str(clip)).get(cv2.CAP_PROP_FRAME_COUNT))
        for chain, extra in (
            ("default chain", []),
            ("classical (CLAHE)", ["--backend", "classical"]),
        ):
            out = clip.with_name(f"{clip.stem}-{'default' if not extra else 'classical'}-out.mp4")
            start = time.perf_counter()
            code = cli_main(
                ["--log-level", "warning", "enhance", str(clip), "--out", str(out), *extra]
            )
            seconds = time.perf_counter() - start
            found = {
                "clip": label,
                "chain": chain,
                "frames": frames,
                "exit": code,
                "seconds": round(seconds, 2),
                "fps": round(frames / seconds, 1) if seconds > 0 else 0.0,
            }
            report.offline.append(found)
            print(f"  offline {label:14s} {chain:18s} {found['fps']:7.1f} fps (exit {code})")


# -- report ---------------------------------------------------------------------------------


def markdown(report: Report) -> str:
    lines = ["| model | backend | size | fps | p50 ms | p99 ms |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {r.name} | {r.backend} | {r.size} | {r.fps:.1f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} |"
        for r in report.enhance
    ]
    lines += ["", "| pre/post | pre p50 ms | post p50 ms |", "|---|---|---|"]
    lines += [f"| {p['size']} | {p['pre_p50_ms']} | {p['post_p50_ms']} |" for p in report.prepost]
    lines += [
        "",
        "| pipeline chain | frames | sustained fps | enhance p50 ms |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {p['chain']} | {p['frames']} | {p['sustained_fps']} | "
        f"{p['stage_p50_ms'].get('enhance', '')} |"
        for p in report.pipeline
    ]
    if report.offline:
        lines += ["", "| `vehicle-agent enhance` on a 720p clip | chain | frames | fps |"]
        lines += ["|---|---|---|---|"]
        lines += [
            f"| {o['clip']} | {o['chain']} | {o['frames']} | {o['fps']} |" for o in report.offline
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30, help="timed frames per size (30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed frames first (3)")
    parser.add_argument("--clip-frames", type=int, default=150, help="720p clip length (150)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench_enhance")
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "bench_enhance.json")
    parser.add_argument("--no-pipeline", action="store_true", help="skip the pipeline run")
    parser.add_argument(
        "--offline-only",
        action="store_true",
        help="only `vehicle-agent enhance` on the 720p clips (default chain beside CLAHE)",
    )
    parser.add_argument("--state-dir", type=Path, help="also benchmark models under DIR/models")
    args = parser.parse_args(argv)
    cv2.setNumThreads(max(1, os.cpu_count() or 1))
    args.work.mkdir(parents=True, exist_ok=True)
    report = Report(
        machine={
            "cpu_count": os.cpu_count(),
            "load_avg_at_start": [round(v, 2) for v in os.getloadavg()],
            "python": platform.python_version(),
            "onnxruntime_threads": args.threads,
            "frames": args.frames,
        }
    )
    clips = {
        "street (day)": make_clip(
            args.work / f"clip720_day_{args.clip_frames}.mp4", args.clip_frames, 1.0
        ),
        "street (dusk)": make_clip(args.work / f"clip720_{args.clip_frames}.mp4", args.clip_frames),
    }
    if args.offline_only:
        print("vehicle-agent enhance…")
        bench_offline(report, clips)
        return _finish(report, args.json)
    frames = {size: dusk_frames(args.frames, hw) for size, hw in SIZES.items()}
    model_root = args.work / "models"
    print("exporting benchmark models…")
    exported = export_models(model_root, report)
    print("pre/post…")
    bench_prepost(report, frames, args.warmup)
    print("enhancers…")
    bench_enhancer(
        report,
        name="clahe+gamma",
        backend="classical",
        make=lambda: create_enhancer(ClassicalEnhancerConfig()),
        frames=frames,
        warmup=args.warmup,
    )
    store = ModelStore([model_root, *default_dirs(args.state_dir)])
    backends: list[tuple[str, Any]] = [
        ("onnxruntime", OnnxRuntimeEnhancerConfig(intra_op_threads=args.threads))
    ]
    if importlib.util.find_spec("tensorrt") is not None:
        from vehicle_agent.config import TensorRtEnhancerConfig  # noqa: PLC0415

        backends.append(("tensorrt", TensorRtEnhancerConfig(engine_dir=args.work / "engines")))
    else:
        report.skipped.append("tensorrt: not importable here")
    for name in store.names():
        model = store.resolve(name)
        for backend, config in backends:
            bench_enhancer(
                report,
                name=name,
                backend=backend,
                make=functools.partial(create_enhancer, config, model=model),
                frames=frames,
                warmup=args.warmup,
            )
    if not args.no_pipeline:
        print("pipeline…")
        bench_pipeline(report, clips["street (dusk)"], model_root, exported)
    print("vehicle-agent enhance…")
    bench_offline(report, clips)
    return _finish(report, args.json)


def _finish(report: Report, path: Path) -> int:
    report.machine["load_avg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    path.parent.mkdir(parents=True, exist_ok=True)
    data = asdict(report)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print()
    print(markdown(report))
    for line in report.skipped:
        print(f"skipped: {line}", file=sys.stderr)
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
