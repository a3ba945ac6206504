"""Soiling detector training: the tile network, its training loop, the calibration of the
decision thresholds on validation drives, and the ONNX export with its manifest.

The network (`TileNet`, ~30 k parameters, ~28 M multiply-adds on a 192×112 input) takes the
`SoilFeatures` channels and gives, per 8×8 tile, the probabilities of clean, transparent,
semi-transparent and opaque soiling: three stride-2 convolutions to the tile grid, then dilated
convolutions for context (a drop is told from a smooth wall by what surrounds it), each
convolution batch-normalised (without it training stalls at "all clean"; the export folds it), a
1×1 classifier and a softmax inside the graph. Cross-entropy per tile, tiles that are only partly
covered are ignored (label −1), soiling classes weighted up (most tiles are clean).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from tools.footage.soiling import SOILING_KINDS
from tools.soilnet.data import Samples
from vehicle_agent.quality.soilnet import CHANNELS, CLASSES, GAIN_INVARIANT, TILE, hysteresis_off

OPSET = 17
_LINEAR = [c for c in range(CHANNELS) if c not in GAIN_INVARIANT]


def check_dropped(dropped: tuple[int, ...]) -> tuple[int, ...]:
    """The channels to drop, sorted and unique; ValueError if one is not a feature channel or
    none would stay."""
    if any(c < 0 or c >= CHANNELS for c in dropped) or len(set(dropped)) == CHANNELS:
        raise ValueError(
            f"dropped channels {list(dropped)}: each must be one of 0–{CHANNELS - 1}, "
            "and at least one must stay"
        )
    return tuple(sorted(set(dropped)))


class TileNet(nn.Module):
    """Features (N×C×H×W, H and W multiples of 8) → class probabilities (N×4×H/8×W/8)."""

    keep: Tensor
    """Indices of the feature channels the network is given (a buffer; all but `dropped`)."""

    def __init__(self, width: int = 24, dropped: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.dropped = check_dropped(dropped)
        keep = [c for c in range(CHANNELS) if c not in self.dropped]
        # The graph still takes all CHANNELS (the runtime computes every feature) and gathers
        # the ones it was trained on, so a model that ignores some needs no runtime change.
        self.register_buffer("keep", torch.tensor(keep, dtype=torch.int64), persistent=False)
        w1, w2, w3 = width * 2 // 3, width, width * 4 // 3
        layers: list[nn.Module] = []
        plan = [(len(keep), w1, 2, 1), (w1, w2, 2, 1), (w2, w2, 1, 1), (w2, w3, 2, 1),
                (w3, w3, 1, 2), (w3, w3, 1, 4)]  # fmt: skip
        for c_in, c_out, stride, dilation in plan:
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride, padding=dilation, dilation=dilation, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(w3, len(CLASSES), 1))
        self.body = nn.Sequential(*layers)

    def logits(self, x: Tensor) -> Tensor:
        if self.dropped:
            x = x.index_select(1, self.keep)
        out: Tensor = self.body(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.logits(x), dim=1)


def parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def macs(net: TileNet, height: int, width: int) -> int:
    """Multiply-adds of one forward pass at this input size (convolutions only)."""
    total = 0
    h, w = height, width
    for layer in net.body:
        if isinstance(layer, nn.Conv2d):
            stride = layer.stride[0]
            h, w = math.ceil(h / stride), math.ceil(w / stride)
            k = layer.kernel_size[0] * layer.kernel_size[1]
            total += h * w * layer.in_channels * layer.out_channels * k
    return total


@dataclass(frozen=True, slots=True)
class TrainConfig:
    epochs: int = 12
    batch_size: int = 32
    lr: float = 2e-3
    width: int = 24
    seed: int = 0
    class_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    kind_weights: tuple[float, ...] | None = None
    """Per soiling kind (clean, then `SOILING_KINDS`), a weight on each soiled tile's loss on top
    of its class weight (`kind_balance`); None: none. Needs samples that record the kind."""
    gain: tuple[float, float] = (0.6, 1.5)
    """Each sample's features are scaled by a random gain in this range: every channel but the
    ratios (`GAIN_INVARIANT`) is linear in the frame's intensity, so this is the same scene lit
    brighter or darker."""
    threads: int = 2
    dropped: tuple[int, ...] = ()
    """Feature channels the network is not given (`TileNet`): an ablation, for example of
    the picture's own colour and brightness, whose look differs from renderer to renderer."""


def soiling_balance(labels: np.ndarray) -> tuple[float, ...]:
    """Class weights that give each soiling class the same total weight as the most common one
    (inverse frequency among soiled tiles, counted on the training labels); clean stays 1, so
    the balance between clean and soiled is the data's. A class with no tile keeps weight 1."""
    counts = np.bincount(labels[labels >= 0].ravel().astype(np.int64), minlength=4)[:4]
    most = counts[1:].max()
    return (1.0, *(float(most / c) if c else 1.0 for c in counts[1:]))


def kind_balance(labels: np.ndarray, kinds: np.ndarray) -> tuple[float, ...]:
    """Weights (clean, then each of `SOILING_KINDS`) that give each soiling kind the same total
    weight as the most common one among soiled tiles: drops and mist are one class
    (transparent) with nothing alike in their look, so each is weighed on its own. Clean stays
    1; a kind with no tile keeps weight 1."""
    soiled = (labels > 0) & (kinds > 0)
    counts = np.bincount(kinds[soiled].ravel().astype(np.int64), minlength=len(SOILING_KINDS) + 1)
    most = counts[1:].max()
    return (1.0, *(float(most / c) if c else 1.0 for c in counts[1 : len(SOILING_KINDS) + 1]))


@dataclass
class TrainResult:
    net: TileNet
    losses: list[float]
    """Mean training loss per epoch."""
    seconds: float


def train(
    data: Samples,
    config: TrainConfig,
    log: Callable[[str], None] = print,
    init: TileNet | None = None,
) -> TrainResult:
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    net = init or TileNet(config.width, config.dropped)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
    steps = max(1, math.ceil(len(data.x) / config.batch_size)) * config.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps)
    weight = torch.tensor(config.class_weights, dtype=torch.float32)
    if config.kind_weights is not None and data.kind is None:
        raise ValueError("kind weights need samples that record each tile's soiling kind")
    kind_weight = (
        None
        if config.kind_weights is None
        else torch.tensor(config.kind_weights, dtype=torch.float32)
    )
    loss_fn = nn.CrossEntropyLoss(weight=weight, ignore_index=-1, reduction="none")
    losses: list[float] = []
    started = time.monotonic()
    for epoch in range(config.epochs):
        order = rng.permutation(len(data.x))
        total, count = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            idx = np.sort(order[start : start + config.batch_size])
            x = torch.from_numpy(data.x[idx].astype(np.float32))
            y = torch.from_numpy(data.y[idx].astype(np.int64))
            k = (
                torch.from_numpy(data.kind[idx].astype(np.int64))
                if kind_weight is not None and data.kind is not None
                else None
            )
            gain = np.ones((len(idx), CHANNELS, 1, 1), np.float32)
            gain[:, _LINEAR] = rng.uniform(*config.gain, size=(len(idx), 1, 1, 1))
            x = torch.clamp(x * torch.from_numpy(gain), 0.0, 4.0)
            if rng.random() < 0.5:  # the lens has no left or right
                x, y = torch.flip(x, dims=[3]), torch.flip(y, dims=[2])
                k = None if k is None else torch.flip(k, dims=[2])
            loss = _weighted_loss(loss_fn(net.logits(x), y), y, weight, kind_weight, k)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            count += len(idx)
        losses.append(total / max(count, 1))
        log(
            f"epoch {epoch + 1}/{config.epochs}: loss {losses[-1]:.4f} ({time.monotonic() - started:.0f} s)"
        )
    net.eval()
    return TrainResult(net, losses, time.monotonic() - started)


def _weighted_loss(
    per_tile: Tensor,
    y: Tensor,
    class_weight: Tensor,
    kind_weight: Tensor | None,
    kind: Tensor | None,
) -> Tensor:
    """The class-weighted mean of the per-tile losses (as `CrossEntropyLoss`'s own mean: the sum
    over the weights of the tiles not ignored), each soiled tile also weighted by its kind."""
    valid = y >= 0
    w = torch.where(valid, class_weight[y.clamp(min=0)], torch.zeros((), dtype=per_tile.dtype))
    if kind_weight is not None and kind is not None:
        extra = torch.where(y > 0, kind_weight[kind.clamp(min=0)], torch.ones((), dtype=w.dtype))
        w = w * extra
        per_tile = per_tile * extra
    return per_tile.sum() / w.sum().clamp(min=1e-12)


def predict(net: TileNet, x: npt.NDArray[np.float16], batch: int = 64) -> npt.NDArray[np.float32]:
    """Class probabilities for every sample (N×4×rows×cols)."""
    with torch.no_grad():
        out = [
            net(torch.from_numpy(x[start : start + batch].astype(np.float32))).numpy()
            for start in range(0, len(x), batch)
        ]
    return np.concatenate(out).astype(np.float32)


@dataclass(frozen=True, slots=True)
class TileScores:
    precision: float
    recall: float
    per_class_recall: dict[str, float]


def tile_scores(
    probs: npt.NDArray[np.float32], labels: npt.NDArray[np.int8], on: float
) -> TileScores:
    """Per-tile precision and recall of "soiled" (any class) at threshold `on` of 1 − P(clean);
    per-class recall counts a soiled tile found whatever class was guessed."""
    soil = 1.0 - probs[:, 0]
    judged = labels >= 0
    truth = labels > 0
    flagged = soil >= on
    tp = int((flagged & truth & judged).sum())
    fp = int((flagged & ~truth & judged).sum())
    fn = int((~flagged & truth & judged).sum())
    per_class = {}
    for index, name in enumerate(CLASSES[1:], start=1):
        members = labels == index
        if members.any():
            per_class[name] = float((flagged & members).sum() / members.sum())
    return TileScores(
        precision=tp / (tp + fp) if tp + fp else 1.0,
        recall=tp / (tp + fn) if tp + fn else 1.0,
        per_class_recall=per_class,
    )


def clean_frame_alarms(
    probs: npt.NDArray[np.float32], labels: npt.NDArray[np.int8], on: float, alarm: float
) -> float:
    """Share of the validation frames without any soiling on which the tiles above `on` cover
    at least `alarm` of the frame (a false alarm, before any smoothing in time)."""
    clean = (labels == 0).all(axis=(1, 2))
    if not clean.any():
        return 0.0
    flagged = (1.0 - probs[clean, 0]) >= on
    return float((flagged.mean(axis=(1, 2)) >= alarm).mean())


CALIBRATION_GRID: tuple[float, ...] = (
    *(round(float(c), 3) for c in np.arange(0.30, 0.981, 0.01)),
    *(round(1.0 / (1.0 + math.exp(-z)), 4) for z in np.linspace(4.2, 6.9, 7)),
)


def calibrate(
    probs: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int8],
    precision: float = 0.95,
    alarm: float = 0.005,
    clean_alarms: float = 0.002,
) -> tuple[float, float]:
    """(on, off) thresholds from the validation drives: `on` the lowest at which per-tile
    precision is ≥ `precision` and at most `clean_alarms` of the clean frames would raise the
    alarm (`alarm`: the `[adhesion]` alarm fraction), `off` a hysteresis band below it.

    The candidates run in steps of 0.01 up to 0.98 and on towards certainty in even steps of
    log-odds (0.985 … 0.999, odds up to about 1000 to 1; the decision smooths log-odds, so it
    can hold a line there); when none holds both, the last."""
    on = CALIBRATION_GRID[-1]
    for c in CALIBRATION_GRID:
        if (
            tile_scores(probs, labels, c).precision >= precision
            and clean_frame_alarms(probs, labels, c, alarm) <= clean_alarms
        ):
            on = c
            break
    return round(on, 4), hysteresis_off(on)


def export_onnx(net: TileNet, path: Path, height: int = 112, width: int = 192) -> float:
    """Write the network as ONNX (dynamic batch, height, width); returns the max abs difference
    between onnxruntime and torch on a random input."""
    import onnxruntime as ort  # noqa: PLC0415 - only the export step needs it

    net.eval()
    example = torch.rand(1, CHANNELS, height, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    dims = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            str(path),
            opset_version=OPSET,
            input_names=["features"],
            output_names=["probabilities"],
            dynamic_axes={"features": dims, "probabilities": dims},
            do_constant_folding=True,
            dynamo=False,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    check = torch.rand(1, CHANNELS, 144, 192)
    with torch.no_grad():
        want = net(check).numpy()
    got = session.run(None, {"features": check.numpy()})[0]
    return float(np.abs(got - want).max())


def save_checkpoint(net: TileNet, path: Path, config: TrainConfig, extra: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": net.state_dict(), "config": asdict(config), "extra": extra}, path)


def load_checkpoint(path: Path) -> TileNet:
    blob = torch.load(path, map_location="cpu", weights_only=False)
    config = blob["config"]
    net = TileNet(int(config["width"]), tuple(config.get("dropped", ())))
    net.load_state_dict(blob["state"])
    net.eval()
    return net


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


assert TILE == 8  # noqa: S101 - three stride-2 convolutions
