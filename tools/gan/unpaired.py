"""Training, unpaired: EnlightenGAN from a set of poor frames and a separate set of good frames,
never the same scene in both (seeds 003/004), as the fleet's uploads arrive; compared with the
paired recipe on the same training frames.

    python -m tools.gan unpaired --out build/gan/unpaired
    torchrun --nproc_per_node=2 -m tools.gan unpaired --out build/gan/unpaired

- **Data**: the training frames are split in two by position (even / odd, so the video and the
  photos are in both): poor frames are low-light versions of random views of the first half,
  good frames random views of the second. No poor frame has a good counterpart.
- **Generator**: the attention-guided U-Net (`EnlightenUNet`: input frame plus 1 − normalised
  luma, which scales every skip and the output residual).
- **Global discriminator** (PatchGAN on the whole frame), relativistic least squares as
  EnlightenGAN: D_Ra(a, b) = D(a) − E[D(b)];
  L_D = E[(D_Ra(good, out) − 1)²] + E[(D_Ra(out, good) + 1)²], the generator the reverse.
- **Local discriminator** (PatchGAN on `local_patches` random crops of each frame), plain least
  squares.
- **Self-feature-preserving loss**: feature distance between the output and its own (poor)
  input, instance-normalised so brightness alone costs nothing (`losses.RandomFeatures`: no
  VGG offline, see docs/training.md).
- **Paired baseline**: the core recipe (`train.Trainer`, arch `enlighten`, low-light pairs:
  reconstruction, region brightness/texture, adversarial, perceptual, self-feature) on pairs
  from *all* the training frames, with the same generator, crop size, batch and steps.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from tools.gan import bench, data, losses
from tools.gan.degrade import RGB, Kind
from tools.gan.models import EnlightenUNet, PatchDiscriminator
from tools.gan.runtime import Runtime, unwrap
from tools.gan.train import TrainConfig, Trainer, random_crops


class UnpairedConfig(BaseModel):
    """An unpaired run and its paired baseline."""

    model_config = ConfigDict(extra="forbid")

    width: int = Field(8, ge=4, le=256, description="Generator base channels.")
    d_width: int = Field(8, ge=4, le=256, description="Discriminator base channels.")
    height: int = Field(96, ge=16, le=2048, description="Training frame height.")
    frame_width: int = Field(128, ge=16, le=4096, description="Training frame width.")
    batch_size: int = Field(4, ge=1, le=256, description="Frames of each set per step.")
    steps: int = Field(250, ge=1, le=1_000_000, description="Generator steps (each run).")
    steps_per_epoch: int = Field(50, ge=1, le=100_000, description="Paired run: epoch length.")
    local_patches: int = Field(5, ge=1, le=32, description="Random crops per frame (local D).")
    local_size: int = Field(32, ge=8, le=256, description="Side of those crops.")
    adversarial: float = Field(1.0, ge=0, description="Weight of global + local adversarial.")
    self_feature: float = Field(1.0, ge=0, description="Weight of self-feature preserving.")
    lr_g: float = Field(3e-4, gt=0, le=1, description="Generator learning rate (Adam).")
    lr_d: float = Field(
        1e-4, gt=0, le=1, description="Discriminator learning rate (Adam; slower than G's)."
    )
    paired_baseline: bool = Field(default=True, description="Also train the paired recipe.")
    seed: int = Field(0, ge=0, description="Seeds weights, views and crops.")
    threads: int = Field(1, ge=1, le=256, description="CPU threads per process.")

    @model_validator(mode="after")
    def _whole_epochs(self) -> UnpairedConfig:
        if self.steps % self.steps_per_epoch:
            raise ValueError(
                f"steps ({self.steps}) must be a whole number of epochs of "
                f"steps_per_epoch ({self.steps_per_epoch}) for the paired baseline"
            )
        if self.local_size > min(self.height, self.frame_width):
            raise ValueError(f"local_size ({self.local_size}) is larger than the frame")
        return self

    def paired_config(self) -> TrainConfig:
        return TrainConfig(
            name="paired",
            arch="enlighten",
            width=self.width,
            d_width=self.d_width,
            height=self.height,
            frame_width=self.frame_width,
            batch_size=self.batch_size,
            epochs=self.steps // self.steps_per_epoch,
            steps_per_epoch=self.steps_per_epoch,
            d_pretrain_steps=0,
            local_patches=self.local_patches,
            local_size=self.local_size,
            mix={"low_light": 1.0},
            tone=0.0,
            seed=self.seed,
            threads=self.threads,
        )


def ra_lsgan_d(real: Tensor, fake: Tensor) -> Tensor:
    """Global discriminator loss, relativistic least squares (Jolicoeur-Martineau, as seed 004
    puts it: good frames scored above the outputs, outputs below the good frames):
    E[(D(good) − E D(out) − 1)²] + E[(D(out) − E D(good) + 1)²]."""
    return 0.5 * (
        ((real - fake.mean() - 1.0) ** 2).mean() + ((fake - real.mean() + 1.0) ** 2).mean()
    )


def ra_lsgan_g(real: Tensor, fake: Tensor) -> Tensor:
    """The generator's side, the roles swapped: its outputs scored above the good frames."""
    return 0.5 * (
        ((fake - real.mean() - 1.0) ** 2).mean() + ((real - fake.mean() + 1.0) ** 2).mean()
    )


def split(images: Sequence[RGB], weights: Sequence[float] | None) -> tuple[Any, Any]:
    """(poor source, good source): even and odd positions, each with its sampling weights."""
    w = list(weights) if weights is not None else [1.0] * len(images)
    if len(images) < 2:
        raise ValueError("unpaired training needs at least 2 training frames (1 per set)")
    return (list(images[0::2]), w[0::2]), (list(images[1::2]), w[1::2])


def train_unpaired(
    config: UnpairedConfig,
    images: Sequence[RGB],
    weights: Sequence[float] | None,
    runtime: Runtime,
    poor_frames: Sequence[RGB] | None = None,
) -> tuple[EnlightenUNet, list[dict[str, float]]]:
    """With `poor_frames` (real poor frames, e.g. a fleet data set's), `images` are the good set and
    the poor frames are used as they are; without, `images` are split and half made dark."""
    torch.manual_seed(config.seed)
    g_module = EnlightenUNet(config.width)
    d_module = PatchDiscriminator(config.d_width)
    local_module = PatchDiscriminator(config.d_width, layers=2)
    g, d, d_local = (runtime.wrap(m) for m in (g_module, d_module, local_module))
    features = losses.RandomFeatures().to(runtime.device)
    opt_g = torch.optim.Adam(g_module.parameters(), lr=config.lr_g, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(
        [*d_module.parameters(), *local_module.parameters()], lr=config.lr_d, betas=(0.5, 0.999)
    )
    total = config.steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt_g, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    if poor_frames is None:
        (poor_images, poor_w), (good_images, good_w) = split(images, weights)
        poor_mix: dict[Kind, float] = {"low_light": 1.0}
    else:
        if not poor_frames or not images:
            raise ValueError("unpaired training needs at least one poor and one good frame")
        poor_images, poor_w = list(poor_frames), [1.0] * len(poor_frames)
        good_images = list(images)
        good_w = list(weights) if weights is not None else [1.0] * len(good_images)
        poor_mix = {"clean": 1.0}  # real poor frames: no synthetic degradation
    common: dict[str, Any] = {
        "height": config.height,
        "width": config.frame_width,
        "batch_size": config.batch_size,
        "rank": runtime.env.rank,
    }
    poor_source = data.PairSampler(
        poor_images, poor_mix, seed=config.seed, weights=poor_w, **common
    )
    good_source = data.PairSampler(
        good_images, {"clean": 1.0}, seed=config.seed + 1, weights=good_w, **common
    )
    crop_rng = torch.Generator().manual_seed(config.seed * 7919 + runtime.env.rank)
    c, dev = config, runtime.device
    history: list[dict[str, float]] = []
    with runtime.bar("unpaired", total) as advance:
        for step in range(total):
            poor = poor_source.batch(0, step).poor.to(dev)
            good = good_source.batch(0, step).good.to(dev)
            n = good.shape[0]
            with torch.no_grad():
                fake = g(poor)
            out = d(torch.cat([good, fake]))
            loss_d = ra_lsgan_d(out[:n], out[n:])
            crops = torch.cat(
                [
                    random_crops(good, c.local_patches, c.local_size, crop_rng),
                    random_crops(fake, c.local_patches, c.local_size, crop_rng),
                ]
            )
            local = d_local(crops)
            half = crops.shape[0] // 2
            loss_d = loss_d + losses.d_loss("lsgan", local[:half], local[half:])
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()  # type: ignore[no-untyped-call]
            opt_d.step()

            fake = g(poor)
            out = d(torch.cat([good, fake]))
            adv = ra_lsgan_g(out[:n].detach(), out[n:])
            adv = adv + losses.g_loss(
                "lsgan", d_local(random_crops(fake, c.local_patches, c.local_size, crop_rng))
            )
            sfp = losses.self_feature_preserving(features, fake, poor)
            loss_g = c.adversarial * adv + c.self_feature * sfp
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()  # type: ignore[no-untyped-call]
            opt_g.step()
            sched.step()
            stats = {
                "d": float(loss_d.detach()),
                "adv": float(adv.detach()),
                "sfp": float(sfp.detach()),
            }
            history.append(stats)
            advance(f"d {stats['d']:.3f} adv {stats['adv']:.3f} sfp {stats['sfp']:.3f}")
    g_module.eval()
    return g_module, history


@dataclass
class UnpairedResult:
    report: bench.Report
    seconds: dict[str, float]


def run(
    config: UnpairedConfig,
    out: Path,
    runtime: Runtime,
    *,
    images: Sequence[RGB] | None = None,
    weights: Sequence[float] | None = None,
    poor_frames: Sequence[RGB] | None = None,
    held_out: Sequence[data.Sample] | None = None,
) -> UnpairedResult | None:
    """Unpaired run, paired baseline, held-out scores; the result on the main process only."""
    if images is None:
        samples = data.training_images()
        images, weights = [s.image for s in samples], data.balanced_weights(samples)
    paired_config = config.paired_config()
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    generator, history = train_unpaired(config, images, weights, runtime, poor_frames)
    seconds["unpaired"] = time.perf_counter() - t0
    paired = None
    if config.paired_baseline:
        t0 = time.perf_counter()
        runtime.print(f"[bold]paired baseline[/] ({config.steps} steps, same frames)")
        paired = Trainer(
            paired_config,
            out / "paired",
            images=images,
            weights=weights,
            env=runtime.env,
            progress=runtime.progress,
            console=runtime.console,
        ).run()
        seconds["paired"] = time.perf_counter() - t0
    if not runtime.env.main:
        return None
    out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"config": config.model_dump(mode="json"), "generator": unwrap(generator).state_dict()},
        out / "unpaired-generator.pt",
    )
    methods: dict[str, bench.Method] = {
        "identity": bench.identity,
        "auto-gamma": bench.auto_gamma,
        "unpaired (EnlightenGAN)": bench.torch_model(generator, generator.stride),
    }
    if paired is not None:
        methods["paired (core recipe)"] = bench.torch_model(
            paired.generator.eval(), paired.generator.stride
        )
    report = bench.evaluate(methods, held_out, kinds=("low_light", "clean"))
    payload: dict[str, Any] = {
        "config": config.model_dump(mode="json"),
        "scores": report.as_dict(),
        "frames": report.frames,
        "seconds": seconds,
        "unpaired_last": history[-1] if history else {},
    }
    (out / "unpaired.json").write_text(json.dumps(payload, indent=1) + "\n")
    return UnpairedResult(report, seconds)
