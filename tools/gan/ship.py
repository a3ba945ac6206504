"""The shipped models: one command builds the data, trains, exports, checks, benchmarks and
writes `models/<name>/{model.onnx,manifest.json,MODEL_CARD.md}`.

    nice -n 19 python -m tools.gan ship

Checkpoints go to `build/gan/<name>/` (git-ignored); a second run resumes from them, so an
interrupted ship continues and a finished one only re-exports and re-benchmarks (`--fresh`
retrains from scratch).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tools.gan import bench, data, speed
from tools.gan.export import (
    MODEL_FILE,
    OPSET,
    ManifestInfo,
    check_onnx,
    export_onnx,
    load_onnx_weights,
    write_manifest,
)
from tools.gan.models import (
    Generator,
    GuidedUpsampled,
    count_parameters,
    padded_size,
    tone_gate_stage,
)
from tools.gan.train import CALIBRATION, TrainConfig, TrainResult, make_generator, train
from vehicle_agent.enhance.manifest import Task
from vehicle_agent.enhance.settings import DEFAULT_GATING

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
BUILD = ROOT / "build" / "gan"
COMMAND = "nice -n 19 python -m tools.gan ship"
VERSION = "1.0.0"


@dataclass(frozen=True, slots=True)
class ShipSpec:
    config: TrainConfig
    task: Task
    description: str
    conditions: tuple[str, ...] = ()
    """Scene conditions (the analyze stage's) this model is the default for."""
    extra: dict[str, str] = field(default_factory=dict)
    version: str = VERSION
    """The manifest's version: raised whenever the shipped file changes."""


FAST = ShipSpec(
    config=TrainConfig(
        name="fast-enhance",
        arch="fast",
        width=24,
        d_width=8,
        height=192,
        frame_width=256,
        batch_size=8,
        epochs=32,
        steps_per_epoch=60,
        d_pretrain_steps=60,
        seed=2026,
    ),
    task="general",
    description=(
        "Real-time enhancement for the vehicle: lifts low light and removes haze/fog, and leaves "
        "good frames (and what it cannot fix: lens drops, motion blur) alone."
    ),
    conditions=("low_light", "fog"),
)

RESTORE = ShipSpec(
    config=TrainConfig(
        name="restore",
        arch="restore",
        width=8,
        d_width=16,
        height=192,
        frame_width=288,
        batch_size=8,
        epochs=16,
        steps_per_epoch=100,
        d_pretrain_steps=100,
        lr_g=4e-4,
        lr_d=5e-4,
        data="bank",
        tone=0.5,
        night=0.5,
        seed=2026,
        mix={"clean": 0.2, "low_light": 0.4, "blur": 0.25, "noise": 0.1, "rain": 0.05},
        # 1.2.0: 1.1.0 (1.0.0's full-size weights run at a third of the resolution with guided
        # upsampling) fine-tuned inside the wrapper for 16 epochs, crops a multiple of its
        # stride 48. 1.3.0: 1.2.0 fine-tuned 16 more epochs with night-camera low-light pairs
        # (`night`; at lr_g 1e-3 that run diverged after its warm-up) (docs/benchmarks.md).
        guided_scale=3,
        guided_radius=2,
        guided_eps=1e-3,
    ),
    task="denoise",
    description=(
        "Restoration for the conditions a tone curve cannot fix: sensor noise in low light and "
        "motion blur with noise. Brightens, corrects the street-light colour cast and denoises; "
        "trained to leave good frames alone."
    ),
    conditions=(),
    version="1.3.0",
)
RESTORE_COMMAND = (
    "nice -n 5 torchrun --standalone --nproc_per_node=2 -m tools.gan train --shipped restore "
    "--threads 1 --init-from <the previous restore model.onnx>, then nice -n 19 python -m "
    "tools.gan ship --only restore"
)
"""Two processes, one core each (DDP over gloo); `ship` then finds the finished checkpoint."""

SHIPPED: dict[str, ShipSpec] = {FAST.config.name: FAST, RESTORE.config.name: RESTORE}


def calibrate(generator: Generator, samples: list[data.Sample], out: Path) -> float | None:
    """The fast generator, or a restore model's tone stage where it has a dead zone: widen the
    dead zone on the full-size *training* frames (see `FastCurveGenerator.calibrate`) and store
    the result beside the checkpoint. Other generators: None."""
    stage = tone_gate_stage(generator)
    if stage is None:
        return None
    generator = stage
    stride = generator.stride
    frames = [
        data.to_tensor(
            [s.image[: s.image.shape[0] // stride * stride, : s.image.shape[1] // stride * stride]]
        )
        for s in samples
    ]
    gate = generator.calibrate(frames)
    (out / CALIBRATION).write_text(json.dumps({"gate": gate, "quantile": 0.99}) + "\n")
    return gate


def _fmt(value: float) -> str:
    return "∞" if value >= 99.0 else f"{value:.2f}"


def table(report: bench.Report) -> str:
    """Markdown: one row per degradation, PSNR dB / SSIM per method; the best PSNR in bold."""
    head = "| held-out frames | " + " | ".join(report.methods) + " |"
    rows = [head, "|---|" + "---:|" * len(report.methods)]
    for kind in report.kinds:
        values = [report.scores[(m, kind)] for m in report.methods]
        best = max(v.mean_psnr for v in values)
        cells = []
        for v in values:
            cell = f"{_fmt(v.mean_psnr)} / {v.mean_ssim:.3f}"
            cells.append(f"**{cell}**" if v.mean_psnr == best else cell)
        label = "clean (output vs input)" if kind == "clean" else kind.replace("_", " ")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def model_card(
    spec: ShipSpec,
    result: TrainResult,
    report: bench.Report,
    *,
    timings: list[speed.Timing],
    max_abs_diff: float,
    size_bytes: int,
) -> str:
    c = spec.config
    w = c.weights
    stride = result.generator.stride
    gate = float(getattr(result.generator, "gate", 0.0))
    check = f"max abs difference {max_abs_diff:.2e} (random and real frames, several sizes)"
    history = result.history[-1] if result.history else {}
    last = ", ".join(f"{k} {v:.4f}" for k, v in history.items() if k not in ("epoch", "seconds"))
    seconds = sum(h.get("seconds", 0.0) for h in result.history)
    speed_lines = "\n".join(f"- {t.line()}" for t in timings)
    mix = ", ".join(f"{k} {v:.0%}" for k, v in c.mix.items())
    losses = (
        f"adversarial ({c.adversarial_kind}, global PatchGAN"
        + (" + local PatchGAN on random crops" if c.uses_local else "")
        + f") ×{w.adversarial}, reconstruction (L1 + ½·L2) ×{w.reconstruction}, "
        f"brightness difference ×{w.brightness} and texture difference ×{w.texture} over the "
        "road-sign-like region (whole frame when none)"
    )
    if c.perceptual_weight:
        losses += f", perceptual ×{c.perceptual_weight}"
    if c.self_feature_weight:
        losses += f", self-feature preserving ×{c.self_feature_weight}"
    return f"""# {c.name} {VERSION}

{spec.description}

| | |
|---|---|
| task | `{spec.task}`; default for scene conditions: {", ".join(spec.conditions) or "none"} |
| architecture | `{c.arch}` ({count_parameters(result.generator):,} parameters, width {c.width}) |
| file | `{MODEL_FILE}`, {size_bytes / 1024:.0f} KiB, ONNX opset {OPSET} |
| input | float32 N×3×H×W, RGB, [0, 1]; H, W dynamic, padded to a multiple of {stride} |
| output | float32 N×3×H×W, RGB, [0, 1], same size |
| ONNX check | onnxruntime vs PyTorch {check} |
| reproduce | `{COMMAND}` (seed {c.seed}; {seconds / 60:.1f} min of training on 2 shared CPU cores) |

## Architecture

`FastCurveGenerator` (`tools/gan/models.py`): a small CNN looks at a 64×64 thumbnail and
predicts a per-channel tone curve y = x·(a/(x+k) + b) plus a 16×16 grid of local gains g around
a per-channel airlight A, applied as (y − A)·g + A at full resolution (the inverse of the
scattering model). The grid is upsampled bilinearly to a quarter of the frame, then by
repetition; per pixel the model costs 7 element-wise operations. Curve strength and gains pass a
dead zone (±0.02, off for the first 30 % of training, then ramped in), widened after training
to ±{gate:.3f}: the 99th percentile of what the CNN outputs on the full-size *training* frames
left untouched (a continuous ramp to the trained values, so strong corrections are unchanged).
A frame that needs nothing comes out unchanged, bit for bit.

## Training

- Method (patent US 2022/0292642 ¶71–84): pairs of a good frame and a copy whose quality was
  lowered; the discriminator first learns good against poor frames ({c.d_pretrain_steps} steps),
  then discriminator and generator alternate ({c.epochs} epochs × {c.steps_per_epoch} steps,
  batch {c.batch_size}, {c.frame_width}×{c.height} frames, Adam lr G {c.lr_g} with cosine decay,
  D {c.lr_d}).
- Generator loss: {losses}. The road-sign-like region is found by `sign_like_mask` (compact
  saturated red/blue/yellow blobs with edges inside) because the packaged data carries no sign
  labels.
- Degradations (`tools/gan/degrade.py`, deterministic per seed): {mix}. Low light = exposure cut
  in linear light with shot + read noise, white-balance drift, gamma jitter and 8-bit
  quantisation; fog = scattering model with a depth proxy; rain = the simulator's lens drops.
  Half the frames first get a random scene tone (gamma 0.7–1.8, black and white kept), so a
  dark scene is not taken for an under-exposed one; the video and the photos are each drawn
  half the time.
- Data: {data.split_description()}. Nothing was downloaded from the web; the video comes from
  Debian's `opencv-doc` package (Apache-2.0 AND BSD-3-Clause), the photos from scikit-image's
  bundled data (public domain / CC0, the motorcycle pair from the Middlebury stereo set).
- Last epoch losses: {last}.

## Held-out quality

PSNR dB / SSIM, mean over {report.frames} held-out frames (never trained on), each degraded
with evaluation seeds; "clean" scores the output against the untouched input.
`python -m tools.gan bench --legacy-frames` reproduces it (plain `bench`: held-out footage).

{table(report)}

On lens drops, motion blur and noise the model changes next to nothing (it cannot repair them
and is trained to leave them); on clean frames it returns most frames bit for bit (∞ dB) and
the rest within a grey level on a few pixels. Low-light SSIM trails the CLAHE-based methods: the
curve lifts the sensor noise with the signal and nothing here denoises.

## Speed (onnxruntime, CPU)

{speed_lines}

Measured here ({platform.machine()}, onnxruntime, threads not spinning, nice 19, on a 2-core
machine shared with other jobs: the best run is the closest to an idle machine).

## Limits

- Trained on synthetic degradations of real daytime frames: no real night, fog or rain footage
  with ground truth is available offline. Real night scenes with lamps and glare differ.
- One fixed street camera dominates the video; held-out clip frames show the same street at
  other moments, the held-out photos are unseen scenes.
- A curve and a gain grid cannot remove lens drops, motion blur or noise: on those the model
  is trained to do (almost) nothing; lens cleaning handles drops, not this model.
- The perceptual terms (if any) use fixed random conv features, not VGG19 (not available
  offline).
"""


def restore_card(
    spec: ShipSpec,
    built: Built,
    footage: bench.FootageReport,
    train_footage: bench.FootageReport | None,
    *,
    training: dict[str, Any],
    size_bytes: int,
) -> str:
    """The restoration model's card: its figures come from the footage bank's enhance set."""
    c = spec.config
    w = c.weights
    result = built.result
    history = result.history[-1] if result.history else {}
    last = ", ".join(f"{k} {v:.4f}" for k, v in history.items() if k not in ("epoch", "seconds"))
    seconds = float(training.get("seconds", 0.0))
    speed_lines = "\n".join(f"- {t.line()}" for t in built.timings)
    mix = ", ".join(f"{k} {v:.0%}" for k, v in c.mix.items())
    flops = restore_flops(result.generator)
    night = (
        f" {c.night:.0%} of the low-light pairs were made night-camera-like "
        "(`data.night_camera`: lamps planted in half of them, light sources kept saturated in "
        "the dark copy, the camera's denoiser run on half)."
        if c.night
        else ""
    )
    train_table = (
        f"\nOn the train split (scenes and renderers it was trained on), for comparison:\n\n"
        f"{train_footage.table()}\n"
        if train_footage is not None
        else ""
    )
    reproduce = f"`{training.get('command', RESTORE_COMMAND)}`"
    source = training.get("weights_from")
    if source is not None:
        reproduce += (
            f", exported, then `{COMMAND} --only restore --weights-from FILE` on that export "
            "(no further training)"
        )
    losses = (
        f"- Last epoch losses: {last}."
        if last
        else "- Last epoch losses: in the training run's log (this export did not train)."
    )
    gated = sorted(k for k, v in DEFAULT_GATING.items() if v == c.name)
    gating_row = (
        "gated by default on " + ", ".join(f"`{k}`" for k in gated)
        if gated
        else f'opt-in (`[enhance.gating] low_light = "{c.name}"`), not gated by default'
    )
    gating_section = (
        f"""## Where the default chain runs it

The default gating (`DEFAULT_GATING`, vehicle_agent/enhance/settings.py) runs it on
{", ".join(f"`{k}`" for k in gated)} frames; everything else keeps `fast-enhance`, lens drops get
nothing. That choice was made on the train split (`python -m tools.gan bench --split train
--gating low_light=restore`: the chain with it beat the chain without on low light, clean frames
unchanged), and the held-out table above judges it. Where it is slower than the chain's
`max_latency_ms` for `slow_frames` frames in a row (2 CPU cores at 720p can be), the chain
demotes it and the low-light frames get `fast-enhance` on the same backend (not CLAHE) until a
health check finds it fast enough again.
"""
        if gated
        else """## Why it is not in the default gating

The default chain gates by scene condition; it does not run this model by default. Turn it on
with `[enhance.gating]` where the fleet's own footage says it helps.
"""
    )
    g = result.generator if isinstance(result.generator, GuidedUpsampled) else None
    fine_tuned = (
        "\n   The weights were then fine-tuned inside the wrapper (the loss on the full-resolution"
        "\n   output), from the previous version's."
        if trained_inside(training)
        else ""
    )
    guided_section = (
        f"""3. **Guided upsampling** (`GuidedUpsampled`, in the graph): the two stages run on the
   frame shrunk {g.scale}× (area average). Their change is fitted per channel as a linear
   function of the small frame in {2 * g.radius + 1}×{2 * g.radius + 1} windows (a guided
   filter, ridge {g.eps:g} towards "no change"); the smooth fit is upsampled and applied to the
   full-resolution frame. Where the stages change nothing the frame comes out as it went in;
   where they flatten noise the full-resolution noise goes too; edges keep the input's full
   sharpness. Detail finer than 1/{g.scale} of the resolution cannot be restored. Chosen on the
   train split only (scale 2 or 3, radius 1–4, ridge 1e-3 to 1e-2: the fastest within 0.25 dB
   of the best on low light + motion blur; docs/benchmarks.md).{fine_tuned}
"""
        if g is not None
        else ""
    )
    return f"""# {c.name} {spec.version}

{spec.description}

| | |
|---|---|
| task | `{spec.task}`; {gating_row} |
| architecture | `{c.arch}` ({count_parameters(result.generator):,} parameters, width {c.width}) |
| file | `{MODEL_FILE}`, {size_bytes / 1024:.0f} KiB, ONNX opset {OPSET} |
| input | float32 N×3×H×W, RGB, [0, 1]; H, W dynamic, padded to a multiple of {result.generator.stride} |
| output | float32 N×3×H×W, RGB, [0, 1], same size |
| ONNX check | onnxruntime vs PyTorch max abs difference {built.max_abs_diff:.2e} |
| compute | {flops / 1e9:.1f} GFLOPs (multiply-adds ×2 of the convolutions) per 1280×720 frame |
| reproduce | {reproduce} (seed {c.seed}; {seconds / 60:.1f} min of training) |

## Architecture

`RestoreGenerator` (`tools/gan/models.py`), two stages that both start as the identity:
1. **Tone**: the fast model's thumbnail CNN (64×64 view of the whole frame) predicts a
   per-channel curve and a 16×16 airlight gain grid. Brightness and colour cast are judged from
   the whole frame, which a U-Net's receptive field does not see.
2. **Detail**: seed 001's U-Net + residual + dense denoiser (dense residual submodules down,
   a dense block at the bottom, upsampling modules adding the matching skip, a predicted
   residual), run on the toned frame folded 2×2 into 12 channels (pixel unshuffle, as FFDNet
   does): it sees every pixel but convolves at half resolution, about a quarter of the cost.
{guided_section}
## Training

- Method (seed 001 and patent US 2022/0292642 ¶71–84): pairs of a good frame and a degraded
  copy; the discriminator first learns good against poor frames ({c.d_pretrain_steps} steps),
  then discriminator and generator alternate ({c.epochs} epochs × {c.steps_per_epoch} steps,
  batch {c.batch_size} per process, {c.frame_width}×{c.height} crops, Adam lr G {c.lr_g} with
  cosine decay, D {c.lr_d}), two processes under torchrun (DDP, gloo).
- Generator loss: adversarial ({c.adversarial_kind}, PatchGAN) ×{w.adversarial}, reconstruction
  (L1 + ½·L2) ×{w.reconstruction}, brightness difference ×{w.brightness} and texture difference
  ×{w.texture} over the road-sign-like region (whole frame when none), perceptual (fixed random
  conv features) ×{c.perceptual_weight}.
- Data: every *train* scene of the footage bank (`tools/footage/splits.py`: the vtest street,
  the handheld box clip, and 27 photos from OpenCV's and scikit-image's bundled samples; every
  {data.BANK_VIDEO_STEP}th video frame), random crops, half of them given a darker or brighter
  scene tone first.{night} Nothing was downloaded from the web.
- Degradations: {mix}. Low light, fog, motion blur and rain streaks come from the bank's
  *train* renderer families (`gan`: the training pairs' own; `sensor`: a camera-pipeline model
  with Bayer mosaic, Poisson-Gaussian noise, street-light white balance, JPEG); `noise` and
  `clean` are the training pairs' own. The `atmos` family and the held-out scenes are never
  used.
{losses}

## Held-out quality

`python -m tools.gan bench`: held-out scenes × the held-out `atmos` renderers (lens drops:
the held-out `refract` soiling). Each model column runs the model alone on every frame ("raw");
"default chain" is what the daemon and `vehicle-agent enhance` run (gating by scene condition,
then the harm guard).

{footage.table()}
{train_table}
{gating_section}
## What each seed method added

- Seed 001's U-Net + residual + dense architecture is the detail stage. Its camera-noise GAN
  pairs and burst truth frames were tried as separate experiments (docs/benchmarks.md, "The
  seeds' other training methods") and did not feed this model: the bank's sensor renderer
  already models the camera noise it would learn, and there are no real bursts of street scenes.
- Seed 002's deblur → derain transfer: not used here. Its own experiment (docs/benchmarks.md,
  "Deblur → derain transfer") gained next to nothing at a CPU budget, and even its
  blur-pretrained model did not deblur held-out frames; this model does not deblur either
  (motion blur + noise stays at identity or just below).
- Seeds 003/004 (EnlightenGAN): the attention-guided U-Net is not used; its unpaired training
  is a separate experiment.

## Speed (onnxruntime, CPU)

{speed_lines}

Measured here ({platform.machine()}, 2 shared CPU cores). TensorRT FP16 on Jetson Orin was
not measured (no Jetson here); at {flops / 1e9:.1f} GFLOPs per 720p frame an Orin NX's GPU
(~25 dense FP16 TFLOPs peak, typically 10–20 % reached by small convolutions) would be in the
order of {flops / (25e12 * 0.15) * 1e3:.0f} ms — an estimate, not a measurement.

## Limits

- Trained on synthetic degradations of real daytime frames: no real night footage with ground
  truth is available offline.
- Absolute brightness is ambiguous: a dark scene and an under-exposed one can look alike; the
  scene-tone augmentation teaches it to leave dark scenes with full tonal range alone, and the
  night-camera pairs that saturated lights and a denoised grain do not make a frame a day one.
- It does not remove lens drops (the fan's job) and is not the fog model.
"""


def restore_flops(generator: Generator, height: int = 720, width: int = 1280) -> float:
    """Multiply-adds ×2 of the convolutions and linear layers for one frame, padded as the
    runtime pads it (hooks count them)."""
    total = 0.0

    def count(
        module: torch.nn.Module, _inputs: tuple[torch.Tensor, ...], out: torch.Tensor
    ) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels / module.groups
            total += 2.0 * k * out.numel()
        elif isinstance(module, torch.nn.Linear):
            total += 2.0 * module.in_features * out.numel()

    hooks = [m.register_forward_hook(count) for m in generator.modules()]
    try:
        with torch.no_grad():
            generator(torch.zeros(1, 3, *padded_size(height, width, generator.stride)))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def ship(
    *,
    names: list[str] | None = None,
    models_dir: Path = MODELS,
    build_dir: Path = BUILD,
    fresh: bool = False,
    peer: bool = True,
    weights_from: Path | None = None,
    log: Callable[[str], None] = print,
) -> None:
    """Train (or resume), export, check, time, benchmark and write every named shipped model.

    `weights_from` (one footage-bank model named): take its weights from this exported ONNX
    file of the same architecture instead of training (a re-export, for example of full-size
    weights inside `GuidedUpsampled` where the config's `guided_scale` says so); the manifest
    keeps the training record found beside that file."""
    started = time.perf_counter()
    specs = [SHIPPED[n] for n in names] if names else list(SHIPPED.values())
    provenance: dict[str, Any] | None = None
    if weights_from is not None:
        if len(specs) != 1 or specs[0].config.data == "packaged":
            raise ValueError(
                "--weights-from takes one footage-bank model (--only restore), "
                f"not {[s.config.name for s in specs]}"
            )
        if not weights_from.is_file():
            raise FileNotFoundError(f"{weights_from}: no such model file")
        provenance = weights_provenance(weights_from)
    built: dict[str, Built] = {}
    packaged: list[data.Sample] = []
    if any(spec.config.data == "packaged" for spec in specs):
        log(f"data: {data.split_description()}")
        packaged = data.training_images()
    held_out = data.held_out_images()
    for spec in specs:
        name = spec.config.name
        out = build_dir / name
        if fresh and out.exists():
            shutil.rmtree(out)
        if weights_from is not None:
            generator = make_generator(spec.config)
            count = load_onnx_weights(generator, weights_from)
            log(f"{name}: {count} weight tensors from {weights_from} (no training)")
            result = TrainResult(generator=generator, config=spec.config)
        elif spec.config.data == "packaged":
            log(f"{name}: training {spec.config.arch} into {out}")
            result = train(
                spec.config,
                out,
                images=[s.image for s in packaged],
                weights=data.balanced_weights(packaged),
                resume=True,
            )
        else:
            log(f"{name}: training {spec.config.arch} into {out}")
            result = train(spec.config, out, resume=True)
        result.generator.eval()
        gate = None
        if weights_from is None and tone_gate_stage(result.generator) is not None:
            frames = packaged if spec.config.data == "packaged" else data.bank_training_images()
            gate = calibrate(result.generator, frames, out)
        if gate is not None:
            log(f"{name}: dead zone widened to ±{gate:.4f} on the training frames (99 % untouched)")
        generator = result.generator
        if isinstance(generator, GuidedUpsampled):
            log(
                f"{name}: at 1/{generator.scale} resolution, guided upsampling r "
                f"{generator.radius}, eps {generator.eps:g}"
            )
        path = models_dir / name / MODEL_FILE
        export_onnx(generator, path)
        diff = check_onnx(generator, path, images=[held_out[0].image])
        log(f"{name}: exported {path}; onnxruntime vs PyTorch max abs diff {diff:.2e}")
        timings = speed.measure(path, threads=2, stride=generator.stride) + speed.measure(
            path, threads=1, stride=generator.stride
        )
        for t in timings:
            log(f"{name}: {t.line()}")
        built[name] = Built(result, diff, timings, provenance)
    fast_specs = [s for s in specs if s.config.arch == "fast"]
    if fast_specs:
        _ship_fast(
            fast_specs,
            built,
            held_out,
            models_dir=models_dir,
            build_dir=build_dir,
            peer=peer,
            log=log,
        )
    for spec in specs:
        if spec.config.arch != "fast":
            _ship_footage(spec, built[spec.config.name], models_dir=models_dir, peer=peer, log=log)
    log(f"ship: done in {(time.perf_counter() - started) / 60:.1f} min")


def trained_inside(training: dict[str, Any]) -> bool:
    """Whether the weights a manifest's training record describes were trained inside
    `GuidedUpsampled` (its config's `guided_scale` > 1), rather than at full size and wrapped at
    export (a `--weights-from` re-export of full-size weights)."""
    return int((training.get("config") or {}).get("guided_scale", 1)) > 1


def weights_provenance(path: Path) -> dict[str, Any]:
    """Where re-exported weights come from: the file, its sha256, and the training record of
    the manifest beside it (when it has one: a shipped model's folder)."""
    out: dict[str, Any] = {
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    manifest = path.parent / "manifest.json"
    if manifest.is_file():
        try:
            record = json.loads(manifest.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{manifest}: not JSON ({exc})") from exc
        previous = dict(record.get("training") or {})
        previous.pop("weights_from", None)
        previous.pop("guided", None)
        out["version"] = record.get("version")
        out["training"] = previous
    return out


def _training_info(spec: ShipSpec, result: TrainResult, command: str) -> dict[str, Any]:
    return {
        "architecture": spec.config.arch,
        "data": data.split_description()
        if spec.config.data == "packaged"
        else "footage bank train scenes × train renderer families (tools/footage/splits.py)",
        "seed": spec.config.seed,
        "command": command,
        "framework": f"torch {torch.__version__}",
        "seconds": round(sum(h.get("seconds", 0.0) for h in result.history), 1),
        "identity_gate": getattr(result.generator, "gate", None),
        "config": spec.config.model_dump(mode="json"),
    }


@dataclass(frozen=True, slots=True)
class Built:
    """One trained and exported model: its training result, ONNX check and timings."""

    result: TrainResult
    max_abs_diff: float
    timings: list[speed.Timing]
    provenance: dict[str, Any] | None = None
    """With `weights_from`: where the weights came from (`weights_provenance`)."""


def _ship_footage(
    spec: ShipSpec,
    built: Built,
    *,
    models_dir: Path,
    peer: bool,
    log: Callable[[str], None],
) -> None:
    """Benchmark a footage-bank model on the held-out (and train) enhance sets; write its files."""
    name = spec.config.name
    result = built.result
    model_dir = models_dir / name
    reports: dict[str, bench.FootageReport] = {}
    training = _training_info(spec, result, RESTORE_COMMAND)
    wrapped = result.generator if isinstance(result.generator, GuidedUpsampled) else None
    if built.provenance is not None:
        # The weights were trained before; keep that run's record, say how it was re-exported.
        training = {**training, **built.provenance.get("training", {})}
        training["weights_from"] = {k: v for k, v in built.provenance.items() if k != "training"}
    if wrapped is not None:
        training["guided"] = {
            "scale": wrapped.scale,
            "radius": wrapped.radius,
            "eps": wrapped.eps,
            "trained_inside": trained_inside(training),
        }
    info = ManifestInfo(
        name=name,
        version=spec.version,
        task=spec.task,
        stride=result.generator.stride,
        opset=OPSET,
        training=training,
        metrics={"onnx_max_abs_diff": built.max_abs_diff},
    )
    write_manifest(model_dir, info)  # the runtime (and the bench's chain) needs one to load it
    for split in ("held_out", "train"):
        footage = bench.build_enhance_set(split, bench.FOOTAGE_KINDS)
        models = [models_dir / n / MODEL_FILE for n in SHIPPED if (models_dir / n).is_dir()]
        methods, skipped = bench.footage_methods(models, peer=peer and split == "held_out", log=log)
        try:
            reports[split] = bench.evaluate_footage(
                methods,
                footage,
                kinds=bench.FOOTAGE_KINDS,
                log=log,
                cache=BUILD / "bench-cache.json",
                cacheable=("identity", "CLAHE", "auto-gamma", bench.PEER),
                skipped=skipped,
            )
        finally:
            bench.close_methods(methods)
    held = reports["held_out"]
    metrics: dict[str, float] = {}
    column = f"{name} (raw)"
    for kind in held.kinds:
        cell = held.cells[(kind, column)]
        metrics[f"psnr_{kind}"] = round(min(cell.mean_psnr, 99.0), 3)
        metrics[f"worst_psnr_{kind}"] = round(min(cell.worst.psnr, 99.0), 3) if cell.worst else 0.0
    metrics["held_out_images"] = float(len({p.scene for p in held.footage.pairs}))
    metrics["onnx_max_abs_diff"] = built.max_abs_diff
    metrics["parameters"] = float(count_parameters(result.generator))
    metrics["gflops_1280x720"] = round(restore_flops(result.generator) / 1e9, 2)
    for t in built.timings:
        metrics[f"ms_{t.width}x{t.height}_cpu{t.threads}_median"] = round(t.median_ms, 2)
    write_manifest(model_dir, dataclasses.replace(info, metrics=metrics))
    size = (model_dir / MODEL_FILE).stat().st_size
    card = restore_card(
        spec,
        built,
        held,
        reports.get("train"),
        training=training,
        size_bytes=size,
    )
    (model_dir / "MODEL_CARD.md").write_text(card)
    log(held.table())
    log(f"{name}: wrote {model_dir}/manifest.json and MODEL_CARD.md ({size / 1024:.0f} KiB model)")


def _ship_fast(
    specs: list[ShipSpec],
    built: dict[str, Built],
    held_out: list[data.Sample],
    *,
    models_dir: Path,
    build_dir: Path,
    peer: bool,
    log: Callable[[str], None],
) -> bench.Report:
    """The fast model's card and manifest, from the legacy held-out frames."""
    methods = bench.baselines(peer=peer, log=log)
    cacheable = tuple(methods)
    for spec in specs:
        methods[spec.config.name] = bench.onnx_model(
            models_dir / spec.config.name / MODEL_FILE,
            stride=built[spec.config.name].result.generator.stride,
        )
    report = bench.evaluate(
        methods, held_out, log=log, cache=build_dir / "bench-cache.json", cacheable=cacheable
    )
    for spec in specs:
        name = spec.config.name
        result = built[name].result
        model_dir = models_dir / name
        metrics: dict[str, float] = {}
        for kind in report.kinds:
            score = report.scores[(name, kind)]
            metrics[f"psnr_{kind}"] = round(min(score.mean_psnr, 99.0), 3)
            metrics[f"ssim_{kind}"] = round(score.mean_ssim, 4)
        metrics["held_out_frames"] = float(report.frames)
        metrics["onnx_max_abs_diff"] = built[name].max_abs_diff
        metrics["parameters"] = float(count_parameters(result.generator))
        for t in built[name].timings:
            metrics[f"ms_{t.width}x{t.height}_cpu{t.threads}_median"] = round(t.median_ms, 2)
        info = ManifestInfo(
            name=name,
            version=VERSION,
            task=spec.task,
            stride=result.generator.stride,
            opset=OPSET,
            training=_training_info(spec, result, COMMAND),
            metrics=metrics,
        )
        write_manifest(model_dir, info)
        size = (model_dir / MODEL_FILE).stat().st_size
        card = model_card(
            spec,
            result,
            report,
            timings=built[name].timings,
            max_abs_diff=built[name].max_abs_diff,
            size_bytes=size,
        )
        (model_dir / "MODEL_CARD.md").write_text(card)
        log(
            f"{name}: wrote {model_dir}/manifest.json and MODEL_CARD.md ({size / 1024:.0f} KiB model)"
        )
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / "benchmark.md").write_text(table(report) + "\n")
    log(table(report))
    return report
