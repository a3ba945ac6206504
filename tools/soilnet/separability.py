"""How well each feature channel, and a trained network, tells soiled tiles from clean ones.

    python -m tools.soilnet separability                       # every channel, 4 train photos
    python -m tools.soilnet separability --model build/soilnet-i --kinds drops,mud

Runs shaped like `tools.eval_adhesion`'s (640×360 at 15 fps, 2 % coverage, the lens soiled at
6 s, tiles scored 1–5 s after the onset), camera moving and parked, but over **train** scenes
and train renderers only: this is for choosing features, so it never looks at the held-out set
(the split guard refuses it). For each kind, camera and channel it prints the per-tile area under
the ROC curve of the tile mean (1.0: every soiled tile above every clean one; 0.0: below, which
is as separating, inverted). With `--model`, the network's 1 − p(clean) is the last column.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

from tools.eval_adhesion import ANY_COVER, SCORE_FROM_S, SCORE_TO_S, TRUE_COVER, tile_cover
from tools.footage import catalog, splits
from tools.footage.drive import DriveSpec, synthesise
from tools.footage.soiling import Family, SoilingKind, render_soiling
from vehicle_agent.quality.metrics import prepare
from vehicle_agent.quality.soilnet import CHANNELS, TILE, SoilFeatures

ONSET_S = 6.0
"""`tools.eval_adhesion`'s default onset."""

Net = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]


def auc(labels: npt.NDArray[np.bool_], scores: npt.NDArray[np.float64]) -> float:
    """Area under the ROC curve (Mann–Whitney, ties counted half); nan without both classes."""
    pos, neg = int(labels.sum()), int((~labels).sum())
    if not pos or not neg:
        return float("nan")
    values, where, counts = np.unique(scores, return_inverse=True, return_counts=True)
    del values
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[where]  # ties share their mean rank
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def tile_means(image: npt.NDArray[np.float32], rows: int, cols: int) -> npt.NDArray[np.float32]:
    blocks = image[: rows * TILE, : cols * TILE].reshape(rows, TILE, cols, TILE)
    return np.asarray(blocks.mean(axis=(1, 3)), np.float32)


@dataclass
class Separability:
    kind: str
    motion: str
    soiled_tiles: int
    aucs: list[float]
    """One per channel, then the network's when there is one."""


def measure(
    kinds: Sequence[SoilingKind],
    scenes: int = 4,
    net: Net | None = None,
    coverage: float = 0.02,
    seconds_after: float = SCORE_TO_S,
) -> list[Separability]:
    """Per-tile AUC of each channel (and the network) for each kind × camera motion."""
    names = [n for n in splits.scenes("train") if catalog.item(n).kind == "photo"][:scenes]
    if not names:
        raise ValueError("the footage bank has no train photos")
    families = splits.names("soiling", "train")
    out = []
    for k, kind in enumerate(kinds):
        for motion in ("drive", "still"):
            scores: list[npt.NDArray[np.float32]] = []
            labels: list[npt.NDArray[np.bool_]] = []
            for s, scene in enumerate(names):
                seed = s * 50 + k * 7 + (motion == "still")
                spec = DriveSpec(
                    seconds=ONSET_S + seconds_after, fps=15.0, width=640, height=360,
                    light="day", motion=motion, stand_still=(),
                )  # fmt: skip
                frames = catalog.load(scene, purpose="soilnet separability")
                drive = synthesise(frames, spec, seed)
                family = cast("Family", families[seed % len(families)])
                layer = render_soiling(kind, family, 360, 640, coverage, seed)
                features = SoilFeatures()
                for i in range(drive.frames):
                    t = i / spec.fps
                    frame = drive.frame(i)
                    if t >= ONSET_S:
                        frame = layer.apply(frame)
                    x = features.update(prepare(np.ascontiguousarray(frame[..., ::-1])).colour, t)
                    if not ONSET_S + SCORE_FROM_S <= t < ONSET_S + seconds_after:
                        continue
                    rows, cols = x.shape[1] // TILE, x.shape[2] // TILE
                    cover = tile_cover(layer.mask, rows, cols)
                    keep = (cover >= TRUE_COVER) | (cover < ANY_COVER)
                    planes = [tile_means(x[c], rows, cols) for c in range(CHANNELS)]
                    if net is not None:
                        planes.append(1.0 - np.asarray(net(x[None])[0, 0], np.float32))
                    scores.append(np.stack(planes)[:, keep])
                    labels.append(cover[keep] >= TRUE_COVER)
            y = np.concatenate(labels)
            z = np.concatenate(scores, axis=1).astype(np.float64)
            out.append(Separability(kind, motion, int(y.sum()), [auc(y, row) for row in z]))
    return out


def print_table(rows: Sequence[Separability], with_net: bool) -> None:
    heads = [str(c) for c in range(CHANNELS)] + (["net"] if with_net else [])
    print("kind   camera  soiled  " + " ".join(f"{h:>4}" for h in heads))
    for r in rows:
        camera = "moving" if r.motion == "drive" else "parked"
        cells = " ".join(f"{a:4.2f}" for a in r.aucs)
        print(f"{r.kind:6} {camera:7} {r.soiled_tiles:6}  {cells}")
