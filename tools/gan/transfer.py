"""Training, transfer: the ResBlock generator pretrained on motion-blur pairs, then fine-tuned on
lens-rain pairs, against the same generator trained on rain from scratch with the same number of
rain steps (seed 002, §4.4).

    python -m tools.gan transfer --out build/gan/transfer
    torchrun --nproc_per_node=2 -m tools.gan transfer --out build/gan/transfer

Three runs of the core loop (`train.Trainer`: discriminator first, WGAN-GP critic, perceptual
term), one config apart: `blur` (pretraining), `transfer` (rain, starting from `blur`'s
generator; the critic starts afresh, as in `scratch`) and `scratch` (rain, from the identity
start). `transfer` and `scratch` share the seed, so they see the same rain pairs in the same
order and differ only in where the generator starts. Each run keeps its checkpoint in its own
folder, so running the command again resumes or just re-scores. Held-out frames: the bundled
clip and unseen photos, degraded with the benchmark's evaluation seeds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tools.gan import bench, data
from tools.gan.degrade import RGB, Kind
from tools.gan.models import Generator
from tools.gan.runtime import Runtime
from tools.gan.train import TrainConfig, Trainer


class TransferConfig(BaseModel):
    """The three runs' shared settings."""

    model_config = ConfigDict(extra="forbid")

    width: int = Field(8, ge=4, le=256, description="Generator base channels (blocks: 4×).")
    d_width: int = Field(8, ge=4, le=256, description="Critic base channels.")
    height: int = Field(96, ge=16, le=2048, description="Training frame height.")
    frame_width: int = Field(128, ge=16, le=4096, description="Training frame width.")
    batch_size: int = Field(4, ge=1, le=256, description="Pairs per step per process.")
    pretrain_steps: int = Field(200, ge=1, le=1_000_000, description="Blur steps.")
    steps: int = Field(200, ge=1, le=1_000_000, description="Rain steps, each of the two.")
    steps_per_epoch: int = Field(50, ge=1, le=100_000, description="Steps per checkpoint.")
    d_pretrain_steps: int = Field(10, ge=0, le=10_000, description="Critic steps first.")
    seed: int = Field(0, ge=0, description="Seeds weights and pairs.")
    threads: int = Field(1, ge=1, le=256, description="CPU threads per process.")

    @model_validator(mode="after")
    def _whole_epochs(self) -> TransferConfig:
        for name, steps in (("pretrain_steps", self.pretrain_steps), ("steps", self.steps)):
            if steps % self.steps_per_epoch:
                raise ValueError(
                    f"{name} ({steps}) must be a whole number of epochs of "
                    f"steps_per_epoch ({self.steps_per_epoch})"
                )
        return self

    def run_config(self, name: str, kind: Kind, steps: int) -> TrainConfig:
        return TrainConfig(
            name=name,
            arch="resblock",
            width=self.width,
            d_width=self.d_width,
            height=self.height,
            frame_width=self.frame_width,
            batch_size=self.batch_size,
            epochs=steps // self.steps_per_epoch,
            steps_per_epoch=self.steps_per_epoch,
            d_pretrain_steps=self.d_pretrain_steps,
            mix={kind: 1.0},
            tone=0.0,
            seed=self.seed,
            threads=self.threads,
        )


@dataclass
class TransferResult:
    report: bench.Report
    seconds: dict[str, float]


def run(
    config: TransferConfig,
    out: Path,
    runtime: Runtime,
    *,
    images: Sequence[RGB] | None = None,
    weights: Sequence[float] | None = None,
    held_out: Sequence[data.Sample] | None = None,
) -> TransferResult | None:
    """Pretrain, fine-tune, train from scratch, score; the result on the main process only."""
    if images is None:
        samples = data.training_images()
        images, weights = [s.image for s in samples], data.balanced_weights(samples)
    seconds: dict[str, float] = {}

    def trainer(name: str, kind: Kind, steps: int) -> Trainer:
        return Trainer(
            config.run_config(name, kind, steps),
            out / name,
            images=images,
            weights=weights,
            env=runtime.env,
            progress=runtime.progress,
            console=runtime.console,
        )

    t0 = time.perf_counter()
    runtime.print(f"[bold]1/3 pretraining on blur[/] ({config.pretrain_steps} steps)")
    blur = trainer("blur", "blur", config.pretrain_steps).run()
    seconds["blur"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    runtime.print(f"[bold]2/3 fine-tuning on rain[/] ({config.steps} steps from blur)")
    fine = trainer("transfer", "rain", config.steps)
    # The trained weights are the same on every process (DDP), so no file has to be shared.
    fine.generator_module.load_state_dict(blur.generator.state_dict())
    transfer = fine.run()
    seconds["transfer"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    runtime.print(f"[bold]3/3 rain from scratch[/] ({config.steps} steps)")
    scratch = trainer("scratch", "rain", config.steps).run()
    seconds["scratch"] = time.perf_counter() - t0
    if not runtime.env.main:
        return None

    def method(gen: Generator) -> bench.Method:
        return bench.torch_model(gen.eval(), gen.stride)

    methods = {
        "identity": bench.identity,
        "blur model, no fine-tuning": method(blur.generator),
        f"rain from scratch ({config.steps} steps)": method(scratch.generator),
        f"blur → rain transfer ({config.steps} steps)": method(transfer.generator),
    }
    report = bench.evaluate(methods, held_out, kinds=("rain", "blur"))
    result = TransferResult(report, seconds)
    payload: dict[str, Any] = {
        "config": config.model_dump(mode="json"),
        "scores": report.as_dict(),
        "frames": report.frames,
        "seconds": seconds,
        "last_epoch": {
            "transfer": transfer.history[-1] if transfer.history else {},
            "scratch": scratch.history[-1] if scratch.history else {},
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "transfer.json").write_text(json.dumps(payload, indent=1) + "\n")
    return result
