"""Training, the loop: discriminator first on good against poor frames, then generator and
discriminator alternating, with a progress bar, per-epoch losses, resumable checkpoints and
DistributedDataParallel when started by `torchrun` (gloo on CPU, NCCL on GPUs).

    python -m tools.gan train --arch fast --epochs 10 --out build/gan/fast
    torchrun --nproc_per_node=2 -m tools.gan train --arch enlighten --out build/gan/unet
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from tools.gan import data, losses
from tools.gan.degrade import RGB, Kind
from tools.gan.models import (
    DEFAULTS,
    Architecture,
    Generator,
    GuidedUpsampled,
    PatchDiscriminator,
    build_discriminator,
    build_generator,
    tone_gate_stage,
)

CHECKPOINT = "checkpoint.pt"
CALIBRATION = "calibration.json"
"""Beside the checkpoint: what was set after training (the fast generator's identity gate)."""
DEFAULT_MIX: dict[Kind, float] = {
    "clean": 0.2,
    "low_light": 0.3,
    "fog": 0.25,
    "rain": 0.1,
    "blur": 0.1,
    "noise": 0.05,
}


class LossWeights(BaseModel):
    model_config = ConfigDict(extra="forbid")

    adversarial: float = Field(0.05, ge=0, description="Adversarial term.")
    reconstruction: float = Field(1.0, ge=0, description="L1 + ½·L2 against the good frame.")
    brightness: float = Field(0.5, ge=0, description="Patent (a): region brightness difference.")
    texture: float = Field(0.5, ge=0, description="Patent (b): region texture difference.")
    perceptual: float | None = Field(None, ge=0, description="Feature L2; None: architecture's.")
    self_feature: float | None = Field(
        None, ge=0, description="EnlightenGAN self-feature preserving; None: architecture's."
    )
    gradient_penalty: float = Field(10.0, ge=0, description="WGAN-GP λ.")


class TrainConfig(BaseModel):
    """Everything a training run depends on; stored in its checkpoint and manifest."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("fast-enhance", description="Model name (folder in models/).")
    arch: Architecture = Field("fast", description="Generator architecture.")
    width: int = Field(24, ge=4, le=256, description="Generator base channels.")
    d_width: int = Field(16, ge=4, le=256, description="Discriminator base channels.")
    adversarial: losses.Adversarial | None = Field(
        None, description="lsgan, bce or wgan-gp; None: the architecture's default."
    )
    local_discriminator: bool | None = Field(
        None, description="EnlightenGAN's local PatchGAN on random crops; None: default."
    )
    local_patches: int = Field(5, ge=1, le=32, description="Random crops per image (local D).")
    local_size: int = Field(32, ge=16, le=256, description="Side of those crops.")
    height: int = Field(192, ge=16, le=2048, description="Training frame height (pixels).")
    frame_width: int = Field(256, ge=16, le=4096, description="Training frame width (pixels).")
    batch_size: int = Field(8, ge=1, le=256, description="Pairs per step per process.")
    epochs: int = Field(10, ge=1, le=10_000, description="Epochs.")
    steps_per_epoch: int = Field(50, ge=1, le=100_000, description="Generator steps per epoch.")
    d_pretrain_steps: int = Field(
        50, ge=0, le=100_000, description="Discriminator steps on good vs poor before any G step."
    )
    d_steps: int = Field(1, ge=1, le=10, description="Discriminator steps per generator step.")
    lr_g: float = Field(2e-3, gt=0, le=1, description="Generator learning rate (Adam).")
    lr_d: float = Field(5e-4, gt=0, le=1, description="Discriminator learning rate (Adam).")
    weights: LossWeights = Field(default_factory=LossWeights, description="Loss weights.")
    mix: dict[Kind, float] = Field(
        default_factory=lambda: dict(DEFAULT_MIX), description="Degradation kinds and shares."
    )
    data: Literal["packaged", "photos", "bank"] = Field(
        "packaged",
        description=(
            "packaged: vtest.avi + photos; photos: skimage photos only; bank: every train scene "
            "of the footage bank, degraded by its train renderer families."
        ),
    )
    tone: float = Field(
        0.5, ge=0, le=1, description="Share of frames given a darker/brighter scene tone first."
    )
    night: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of low-light pairs made night-camera-like: lamps planted in half of "
        "them, lights kept saturated, and the camera's denoiser run on half "
        "(`data.night_camera`).",
    )
    balance_sources: bool = Field(
        default=True, description="Draw the video and the photos equally often."
    )
    corrupt_labels: bool = Field(
        default=False,
        description="Swap every pair's sides (the degraded frame becomes the target): a model "
        "that learns to degrade, for checking that a release gate stops it. Never for shipping.",
    )
    guided_scale: int = Field(
        1,
        ge=1,
        le=8,
        description="> 1: the generator runs on the frame shrunk this many times inside "
        "`GuidedUpsampled` (guided upsampling in the graph), trained and exported so; the "
        "training crops must then be multiples of the wrapped stride.",
    )
    guided_radius: int = Field(
        2, ge=1, le=16, description="Guided filter window radius at the reduced resolution."
    )
    guided_eps: float = Field(
        1e-3, gt=0, le=1, description="Guided filter ridge (towards 'no change')."
    )
    seed: int = Field(0, ge=0, description="Seeds weights, pairs and crops.")
    threads: int = Field(
        1, ge=1, le=256, description="CPU threads per process (1 is fastest on a shared box)."
    )

    @property
    def adversarial_kind(self) -> losses.Adversarial:
        return self.adversarial or DEFAULTS[self.arch].adversarial

    @property
    def uses_local(self) -> bool:
        if self.local_discriminator is None:
            return DEFAULTS[self.arch].local_discriminator
        return self.local_discriminator

    @property
    def perceptual_weight(self) -> float:
        w = self.weights.perceptual
        return DEFAULTS[self.arch].perceptual if w is None else w

    @property
    def self_feature_weight(self) -> float:
        w = self.weights.self_feature
        return DEFAULTS[self.arch].self_feature if w is None else w


@dataclass(frozen=True, slots=True)
class DistEnv:
    """Where this process sits in a `torchrun` job (world 1 when started alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environ(cls) -> DistEnv:
        return cls(
            int(os.environ.get("RANK", "0")),
            int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")),
        )


@dataclass
class TrainResult:
    generator: Generator
    config: TrainConfig
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None
    digest: str = ""
    seconds: float = 0.0


def parameter_digest(module: nn.Module) -> str:
    """sha256 over every parameter's bytes: equal on all replicas after a DDP step."""
    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


def random_crops(x: Tensor, count: int, size: int, generator: torch.Generator) -> Tensor:
    """`count` random size×size crops of every image (EnlightenGAN's local patches)."""
    n, _, h, w = x.shape
    size = min(size, h, w)
    ys = torch.randint(0, h - size + 1, (n, count), generator=generator)
    xs = torch.randint(0, w - size + 1, (n, count), generator=generator)
    crops = [
        x[i, :, int(ys[i, j]) : int(ys[i, j]) + size, int(xs[i, j]) : int(xs[i, j]) + size]
        for i in range(n)
        for j in range(count)
    ]
    return torch.stack(crops)


class Trainer:
    """One GAN training run; `run()` trains from scratch or resumes from `out/checkpoint.pt`."""

    def __init__(
        self,
        config: TrainConfig,
        out: Path,
        *,
        images: Sequence[RGB] | None = None,
        weights: Sequence[float] | None = None,
        env: DistEnv | None = None,
        progress: bool = True,
        console: Console | None = None,
        init_from: Path | None = None,
    ) -> None:
        """`init_from`: an exported model.onnx of the same architecture whose weights the
        generator starts from (fine-tuning); None: fresh weights from the seed."""
        self.config = config
        self.out = out
        self.env = env or DistEnv.from_environ()
        self.progress = progress and self.env.main
        self.console = console or Console(stderr=True)
        self.device = (
            torch.device("cuda", self.env.local_rank)
            if torch.cuda.is_available()
            else torch.device("cpu")
        )
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # NCCL: one GPU per process, before the group
        if self.env.world > 1 and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend)
        if self.device.type == "cpu":
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)  # same initial weights everywhere (DDP also broadcasts)
        arch = config.arch
        self.generator_module = make_generator(config).to(self.device)
        stride = self.generator_module.stride
        if config.height % stride or config.frame_width % stride:
            raise ValueError(
                f"training frames {config.frame_width}×{config.height} are not multiples of the "
                f"generator's stride {stride} (guided_scale {config.guided_scale})"
            )
        if init_from is not None:
            from tools.gan.export import load_onnx_weights  # noqa: PLC0415 - onnx on demand

            load_onnx_weights(self.generator_module, init_from)
        self.d_module = build_discriminator(arch, config.d_width).to(self.device)
        self.local_module = (
            PatchDiscriminator(config.d_width, layers=2).to(self.device)
            if config.uses_local
            else None
        )
        self.features = (
            losses.RandomFeatures().to(self.device)
            if config.perceptual_weight > 0 or config.self_feature_weight > 0
            else None
        )
        self.g: nn.Module = self._wrap(self.generator_module)
        self.d: nn.Module = self._wrap(self.d_module)
        self.d_local: nn.Module | None = (
            self._wrap(self.local_module) if self.local_module is not None else None
        )
        d_params = list(self.d_module.parameters())
        if self.local_module is not None:
            d_params += list(self.local_module.parameters())
        self.opt_g = torch.optim.Adam(
            self.generator_module.parameters(), lr=config.lr_g, betas=(0.5, 0.999)
        )
        self.opt_d = torch.optim.Adam(d_params, lr=config.lr_d, betas=(0.5, 0.999))
        total = config.epochs * config.steps_per_epoch
        # Fine-tuning warms the rate up over its first fifth: Adam's first steps move every
        # weight by about the full rate whatever its gradient, which knocks a trained model off
        # its optimum before the moment estimates mean anything.
        self.fine_tuning = init_from is not None
        warmup = max(1, total // 5) if self.fine_tuning else 0

        # Cosine decay to 5 % of the rate over the run (the paper's linear decay, smoothed).
        def rate(s: int) -> float:
            cosine = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
            return cosine * min(1.0, (s + 1) / warmup) if warmup else cosine

        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, rate)
        if images is None:
            if config.data == "bank":
                samples = data.bank_training_images()
            elif config.data == "packaged":
                samples = data.training_images()
            else:
                samples = [data.Sample(f"skimage.{n}", data.photo(n)) for n in data.TRAIN_PHOTOS]
            images = [s.image for s in samples]
            if config.balance_sources:
                weights = data.balanced_weights(samples)
        self.sampler = data.PairSampler(
            images,
            config.mix,
            height=config.height,
            width=config.frame_width,
            batch_size=config.batch_size,
            seed=config.seed,
            rank=self.env.rank,
            weights=weights,
            tone=config.tone,
            night=config.night,
            corrupt=config.corrupt_labels,
            renderers="bank" if config.data == "bank" else "gan",
        )
        self.crop_rng = torch.Generator().manual_seed(config.seed * 7919 + self.env.rank)
        self._sync_progress()
        self.epoch = 0
        self.d_pretrained = 0
        self.history: list[dict[str, float]] = []

    def _sync_progress(self) -> None:
        """Tell the generator how far training is: a function of the schedule's step alone, so
        a resumed run sees what an uninterrupted one saw."""
        total = self.config.epochs * self.config.steps_per_epoch
        # A fine-tuned model has been through the warm-up its dead zone needs (`set_progress`).
        done = 1.0 if self.fine_tuning else self.sched_g.last_epoch / total
        self.generator_module.set_progress(done)

    def _wrap(self, module: nn.Module) -> nn.Module:
        if self.env.world <= 1:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    # -- checkpoints -----------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT

    def save(self) -> None:
        if not self.env.main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        state: dict[str, Any] = {
            "config": self.config.model_dump(mode="json"),
            "epoch": self.epoch,
            "d_pretrained": self.d_pretrained,
            "generator": self.generator_module.state_dict(),
            "discriminator": self.d_module.state_dict(),
            "local": self.local_module.state_dict() if self.local_module is not None else {},
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "crop_rng": self.crop_rng.get_state(),
            "history": self.history,
        }
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.checkpoint_path)
        (self.out / "history.json").write_text(json.dumps(self.history, indent=1) + "\n")

    def load(self) -> bool:
        """Resume from the checkpoint when there is one; False when starting fresh."""
        if not self.checkpoint_path.is_file():
            return False
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=True)
        saved = TrainConfig.model_validate(state["config"])
        if saved.model_dump(exclude={"epochs", "threads"}) != self.config.model_dump(
            exclude={"epochs", "threads"}
        ):
            raise ValueError(
                f"{self.checkpoint_path}: saved with a different config; use another --out"
            )
        self.generator_module.load_state_dict(state["generator"])
        self.d_module.load_state_dict(state["discriminator"])
        if self.local_module is not None:
            self.local_module.load_state_dict(state["local"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.sched_g.load_state_dict(state["sched_g"])
        self._sync_progress()
        self.crop_rng.set_state(state["crop_rng"])
        self.epoch = int(state["epoch"])
        self.d_pretrained = int(state["d_pretrained"])
        self.history = list(state["history"])
        return True

    # -- steps -----------------------------------------------------------------------------------

    def _d_outputs(self, module: nn.Module, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        # One forward on the concatenation: one DDP forward per backward.
        out = module(torch.cat([real, fake]))
        return out[: real.shape[0]], out[real.shape[0] :]

    def d_step(self, good: Tensor, fake: Tensor) -> dict[str, float]:
        """Discriminator on good (real) against `fake`: the poor frames while pretraining, the
        generator's outputs afterwards."""
        kind = self.config.adversarial_kind
        self.opt_d.zero_grad(set_to_none=True)
        stats: dict[str, float] = {}
        if kind == "wgan-gp":
            eps = torch.rand(good.shape[0], 1, 1, 1, generator=self.crop_rng).to(good)
            interp = (eps * good + (1 - eps) * fake).requires_grad_()
            out = self.d(torch.cat([good, fake, interp]))
            n = good.shape[0]
            real_out, fake_out, interp_out = out[:n], out[n : 2 * n], out[2 * n :]
            gp = losses.gradient_penalty(interp_out, interp)
            loss = (
                losses.d_loss(kind, real_out, fake_out) + self.config.weights.gradient_penalty * gp
            )
            stats["gp"] = float(gp.detach())
        else:
            real_out, fake_out = self._d_outputs(self.d, good, fake)
            loss = losses.d_loss(kind, real_out, fake_out)
        if self.d_local is not None:
            c = self.config
            real_crops = random_crops(good, c.local_patches, c.local_size, self.crop_rng)
            fake_crops = random_crops(fake, c.local_patches, c.local_size, self.crop_rng)
            lr, lf = self._d_outputs(self.d_local, real_crops, fake_crops)
            local = losses.d_loss("lsgan" if kind == "wgan-gp" else kind, lr, lf)
            stats["d_local"] = float(local.detach())
            loss = loss + local
        loss.backward()  # type: ignore[no-untyped-call]
        self.opt_d.step()
        stats["d"] = float(loss.detach())
        return stats

    def g_step(self, batch: data.Batch) -> tuple[Tensor, dict[str, float]]:
        c, w = self.config, self.config.weights
        kind = c.adversarial_kind
        self.opt_g.zero_grad(set_to_none=True)
        good, poor, region = (
            batch.good.to(self.device),
            batch.poor.to(self.device),
            batch.region.to(self.device),
        )
        fake = self.g(poor)
        terms: dict[str, Tensor] = {"adv": losses.g_loss(kind, self.d(fake))}
        if self.d_local is not None:
            crops = random_crops(fake, c.local_patches, c.local_size, self.crop_rng)
            terms["adv"] = terms["adv"] + losses.g_loss(
                "lsgan" if kind == "wgan-gp" else kind, self.d_local(crops)
            )
        terms["rec"] = losses.reconstruction(fake, good)
        terms["bright"] = losses.brightness_difference(fake, good, region)
        terms["tex"] = losses.texture_difference(fake, good, region)
        total = (
            w.adversarial * terms["adv"]
            + w.reconstruction * terms["rec"]
            + w.brightness * terms["bright"]
            + w.texture * terms["tex"]
        )
        if self.features is not None and c.perceptual_weight > 0:
            terms["perc"] = losses.perceptual(self.features, fake, good)
            total = total + c.perceptual_weight * terms["perc"]
        if self.features is not None and c.self_feature_weight > 0:
            terms["sfp"] = losses.self_feature_preserving(self.features, fake, poor)
            total = total + c.self_feature_weight * terms["sfp"]
        total.backward()  # type: ignore[no-untyped-call]
        self.opt_g.step()
        self.sched_g.step()
        self._sync_progress()
        stats = {k: float(v.detach()) for k, v in terms.items()}
        stats["g"] = float(total.detach())
        return fake.detach(), stats

    # -- the run ---------------------------------------------------------------------------------

    def run(self, resume: bool = True, stop_after: int | None = None) -> TrainResult:
        """Train to `config.epochs`; `stop_after` ends this invocation after that many epochs
        (a time-boxed run; the next one resumes from the checkpoint)."""
        started = time.perf_counter()
        c = self.config
        if resume and self.load() and self.env.main:
            self.console.print(f"resumed {self.checkpoint_path} after epoch {self.epoch}")
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[losses]}"),
        )
        bar = (
            Progress(*columns, console=self.console, transient=False)
            if self.progress
            else nullcontext()
        )
        with bar as progress:
            # Patent ¶73-76: the discriminator learns good against poor frames first.
            if self.d_pretrained < c.d_pretrain_steps:
                task = (
                    progress.add_task("discriminator", total=c.d_pretrain_steps, losses="")
                    if isinstance(progress, Progress)
                    else None
                )
                for index in range(self.d_pretrained, c.d_pretrain_steps):
                    batch = self.sampler.batch(0, index, phase=0)
                    pre = self.d_step(batch.good.to(self.device), batch.poor.to(self.device))
                    self.d_pretrained = index + 1
                    if isinstance(progress, Progress) and task is not None:
                        progress.update(task, advance=1, losses=f"d {pre['d']:.3f}")
                self.save()
            last = c.epochs if stop_after is None else min(c.epochs, self.epoch + stop_after)
            for epoch in range(self.epoch, last):
                t0 = time.perf_counter()
                sums: dict[str, float] = {}
                task = (
                    progress.add_task(
                        f"epoch {epoch + 1}/{c.epochs}", total=c.steps_per_epoch, losses=""
                    )
                    if isinstance(progress, Progress)
                    else None
                )
                for batch in self.sampler.epoch(epoch, c.steps_per_epoch):
                    good, poor = batch.good.to(self.device), batch.poor.to(self.device)
                    stats: dict[str, float] = {}
                    for _ in range(c.d_steps):
                        with torch.no_grad():
                            fake = self.g(poor)
                        stats.update(self.d_step(good, fake))
                    _, g_stats = self.g_step(batch)
                    stats.update(g_stats)
                    for k, v in stats.items():
                        sums[k] = sums.get(k, 0.0) + v
                    if isinstance(progress, Progress) and task is not None:
                        progress.update(
                            task, advance=1, losses=f"d {stats['d']:.3f} g {stats['g']:.3f}"
                        )
                means = {k: v / c.steps_per_epoch for k, v in sums.items()}
                means["epoch"] = float(epoch + 1)
                means["seconds"] = time.perf_counter() - t0
                self.history.append(means)
                self.epoch = epoch + 1
                self.save()
                if self.env.main:
                    shown = "  ".join(
                        f"{k} {v:.4f}" for k, v in means.items() if k not in ("epoch", "seconds")
                    )
                    self.console.print(
                        f"epoch {epoch + 1}/{c.epochs}  {shown}  ({means['seconds']:.1f} s)"
                    )
        digest = parameter_digest(self.generator_module)
        if self.env.world > 1:
            # Evidence for the DDP check: equal weights everywhere, from different data.
            first = self.sampler.batch(0, 0)
            replica = {
                "rank": self.env.rank,
                "world": self.env.world,
                "backend": dist.get_backend(),
                "generator_sha256": digest,
                "discriminator_sha256": parameter_digest(self.d_module),
                "first_batch_sha256": hashlib.sha256(first.poor.numpy().tobytes()).hexdigest(),
            }
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / f"replica-{self.env.rank}.json").write_text(json.dumps(replica) + "\n")
        return TrainResult(
            generator=self.generator_module,
            config=c,
            history=self.history,
            checkpoint=self.checkpoint_path if self.env.main else None,
            digest=digest,
            seconds=time.perf_counter() - started,
        )

    def close(self) -> None:
        if self.env.world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def train(
    config: TrainConfig,
    out: Path,
    *,
    images: Sequence[RGB] | None = None,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    weights: Sequence[float] | None = None,
    init_from: Path | None = None,
) -> TrainResult:
    """Train (or resume) `config` into `out`; see `Trainer`. `images` (with sampling `weights`)
    replace the config's data source, e.g. for tests or to share one loaded copy; `init_from`
    starts the generator from an exported model (fine-tuning)."""
    trainer = Trainer(
        config, out, images=images, weights=weights, progress=progress, init_from=init_from
    )
    try:
        return trainer.run(resume=resume, stop_after=stop_after)
    finally:
        trainer.close()


def make_generator(config: TrainConfig) -> Generator:
    """The config's generator, inside `GuidedUpsampled` where `guided_scale` > 1."""
    generator = build_generator(config.arch, config.width)
    if config.guided_scale == 1:
        return generator
    return GuidedUpsampled(generator, config.guided_scale, config.guided_radius, config.guided_eps)


def load_generator(checkpoint: Path) -> tuple[Generator, TrainConfig]:
    """The generator (eval mode) and config stored in a checkpoint."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    config = TrainConfig.model_validate(state["config"])
    gen = make_generator(config)
    gen.load_state_dict(state["generator"])
    calibration = checkpoint.parent / CALIBRATION
    stage = tone_gate_stage(gen)
    if calibration.is_file() and stage is not None:
        stage.gate = float(json.loads(calibration.read_text())["gate"])
    gen.eval()
    return gen, config
