"""Training, what the extra methods share: the process (alone or one of a `torchrun` job),
DistributedDataParallel wrapping, the progress bar, and scoring on held-out frames.

The core GAN loop (`train.py`) has the same pieces inside its `Trainer`; the methods of
`noise_gan.py`, `unpaired.py` and `bursts.py` run their own loops, so they take them from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from tools.gan.bench import psnr, ssim
from tools.gan.degrade import RGB
from tools.gan.train import DistEnv

T = TypeVar("T")
Advance = Callable[[str], None]
"""Called once per step with a short status text (the losses)."""


@dataclass
class Runtime:
    """This process: its place in a `torchrun` job, its device, and how it shows progress."""

    env: DistEnv
    device: torch.device
    console: Console
    progress: bool

    @classmethod
    def start(cls, threads: int = 1, progress: bool = True) -> Runtime:
        """Join the `torchrun` process group when there is one (gloo on CPU, NCCL on GPUs)."""
        env = DistEnv.from_environ()
        device = (
            torch.device("cuda", env.local_rank)
            if torch.cuda.is_available()
            else torch.device("cpu")
        )
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if env.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cpu":
            torch.set_num_threads(threads)
        return cls(env, device, Console(stderr=True), progress and env.main)

    def wrap(self, module: nn.Module) -> nn.Module:
        """`module` on this device, inside DistributedDataParallel in a `torchrun` job. Callers
        keep one forward per backward (concatenate what goes through a network in one step)."""
        module = module.to(self.device)
        if self.env.world <= 1:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def print(self, text: str) -> None:
        if self.env.main:
            self.console.print(text, highlight=False)

    @contextmanager
    def bar(self, description: str, total: int) -> Iterator[Advance]:
        """A rich progress bar on the main process; elsewhere a no-op."""
        if not self.progress:
            yield lambda _status: None
            return
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
        )
        with Progress(*columns, console=self.console) as progress:
            task = progress.add_task(description, total=total, status="")

            def advance(status: str) -> None:
                progress.update(task, advance=1, status=status)

            yield advance

    def shard(self, items: Sequence[T]) -> list[T]:
        """This process's share of `items` (every world-th, from its rank)."""
        return list(items[self.env.rank :: self.env.world])

    def gather(self, value: Any) -> list[Any]:
        """Every process's `value`, in rank order (just `[value]` when alone)."""
        if self.env.world <= 1:
            return [value]
        out: list[Any] = [None] * self.env.world
        dist.all_gather_object(out, value)
        return out

    def close(self) -> None:
        if self.env.world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def unwrap(module: nn.Module) -> nn.Module:
    if isinstance(module, DistributedDataParallel):
        inner: nn.Module = module.module
        return inner
    return module


def pad_to(x: Tensor, stride: int) -> tuple[Tensor, int, int]:
    """`x` reflect-padded at the bottom/right to a multiple of `stride`, and its original size."""
    h, w = x.shape[-2:]
    ph, pw = -h % stride, -w % stride
    if ph or pw:
        x = nn.functional.pad(x, (0, pw, 0, ph), mode="reflect")
    return x, h, w


def run_image(net: Callable[[Tensor], Tensor], image: RGB, stride: int, *extra: Tensor) -> RGB:
    """Apply a network to one RGB uint8 frame (extra inputs are concatenated as channels)."""
    x = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    if extra:
        x = torch.cat([x, *extra], dim=1)
    padded, h, w = pad_to(x, stride)
    with torch.inference_mode():
        y = net(padded)[0, :3, :h, :w].clamp(0, 1).permute(1, 2, 0).numpy()
    return np.asarray(y * 255.0 + 0.5, np.uint8)


@dataclass(frozen=True, slots=True)
class Scores:
    """Mean PSNR (dB) and SSIM of one method over a set of frames."""

    psnr: float
    ssim: float
    frames: int

    def cell(self) -> str:
        return f"{self.psnr:.2f} / {self.ssim:.3f}"


def score(pairs: Sequence[tuple[RGB, RGB]]) -> Scores:
    """Mean PSNR / SSIM over (reference, output) pairs."""
    if not pairs:
        raise ValueError("nothing to score")
    return Scores(
        float(np.mean([psnr(ref, out) for ref, out in pairs])),
        float(np.mean([ssim(ref, out) for ref, out in pairs])),
        len(pairs),
    )
