"""Training data: real photos and footage that packages carry, the train/held-out split, and
batches of degraded pairs.

Sources (nothing is downloaded from the web, nothing but the already bundled clip is committed):
- scikit-image's bundled photos (`skimage.data`);
- `vtest.avi` from Debian's `opencv-doc` (795 frames of a real street, 768×576), found on disk or
  extracted with `apt-get download opencv-doc` into a cache folder;
- the bundled clip `vehicle_agent/sim/samples/street_vtest.mp4` (= vtest frames 0–299).

The split is the footage bank's (`tools/footage/splits.py`): training uses vtest frames 300–794
and the `TRAIN_PHOTOS`, read inside `splits.training`; evaluation uses the bank's held-out scenes
(other streets, a handheld clip, photos no training run sees). The bundled clip is vtest's first
300 frames, the same street as training, so it is no longer an evaluation set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias

import cv2
import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from tools.footage import catalog, degradations, splits
from tools.footage.sets import BuildOptions, enhance_sources
from tools.gan.degrade import (
    KINDS,
    RGB,
    Kind,
    Pair,
    linear_to_srgb,
    make_pair,
    sign_like_mask,
    srgb_to_linear,
    to_float,
    to_uint8,
)

Renderers: TypeAlias = Literal["gan", "bank"]
"""Where a batch's degradations come from: the training pairs' own (`tools/gan/degrade.py`), or
the footage bank's train renderer families (`tools/footage/degradations.py`)."""

BANK_KINDS: dict[Kind, degradations.DegradationKind] = {
    "low_light": "low_light",
    "fog": "fog",
    "blur": "motion_blur",
    "rain": "rain_streaks",
}
"""With bank renderers, a mix's kind stands for the bank's degradation of that name (`rain` is
rain streaks there, not lens drops: drops are the fan's job); `clean`, `noise` and `mask` stay
the training pairs' own."""
BANK_VIDEO_STEP = 15
"""Every 15th frame of each train video: neighbours a few frames apart add little."""

TRAIN_PHOTOS: tuple[str, ...] = (
    "astronaut",
    "coffee",
    "rocket",
    "camera",
    "coins",
    "grass",
    "gravel",
    "brick",
    "clock",
)
"""skimage.data photos used for training (grey ones are stacked to 3 channels)."""
TRAIN_VTEST = range(300, 795, 3)
"""vtest.avi frames used for training: after the 300 the bundled clip holds, every third."""

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vehicle-agent"


class DataError(Exception):
    """Training data that cannot be found or read; the message says what to do."""


def photo(name: str) -> RGB:
    """A photo of the footage bank as H×W×3 uint8 RGB (grey ones stacked to 3 channels); read
    through the bank, so the split sees it."""
    return catalog.load(name, purpose="gan")[0]


def read_frames(path: Path, indices: Sequence[int]) -> list[RGB]:
    """The frames at `indices` (sorted, decoded in order) of a video, as RGB."""
    wanted = set(indices)
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(f"{path}: cannot open video")
    frames: list[RGB] = []
    index = 0
    try:
        while index <= max(wanted):
            ok, frame = cap.read()
            if not ok:
                break
            if index in wanted:
                frames.append(np.ascontiguousarray(frame[..., ::-1], dtype=np.uint8))
            index += 1
    finally:
        cap.release()
    if len(frames) != len(wanted):
        raise DataError(f"{path}: read {len(frames)} of {len(wanted)} wanted frames")
    return frames


@dataclass(frozen=True, slots=True)
class Sample:
    """One named clean image of a split."""

    name: str
    image: RGB


def training_images(vtest: Path | None = None, limit: int | None = None) -> list[Sample]:
    """The train split's frames (footage bank, `tools.footage.splits`): vtest.avi frames
    `TRAIN_VTEST` and the `TRAIN_PHOTOS`; read inside `splits.training`, so a held-out item
    would be refused."""
    with splits.training("tools.gan training images"):
        if vtest is None:
            frames = catalog.load(
                "vtest", TRAIN_VTEST.start, TRAIN_VTEST.stop, TRAIN_VTEST.step, purpose="gan"
            )
        else:
            frames = read_frames(vtest, list(TRAIN_VTEST))
        samples = [Sample(f"vtest#{i}", f) for i, f in zip(TRAIN_VTEST, frames, strict=True)]
        photos = TRAIN_PHOTOS[: None if limit is None else max(0, limit - len(samples))]
        samples += [Sample(f"skimage.{n}", catalog.load(n, purpose="gan")[0]) for n in photos]
    return samples[:limit] if limit else samples


def bank_training_images(limit: int | None = None) -> list[Sample]:
    """Every train scene of the footage bank (`splits.scenes("train")`): each photo, and every
    `BANK_VIDEO_STEP`-th frame of each video, read inside `splits.training`. `limit` caps the
    count (tests)."""
    samples: list[Sample] = []
    with splits.training("tools.gan bank training images"):
        for name in splits.scenes("train"):
            if limit is not None and len(samples) >= limit:
                break
            entry = catalog.item(name)
            if entry.kind == "photo":
                samples.append(Sample(name, catalog.load(name, purpose="gan")[0]))
                continue
            stop = None if limit is None else BANK_VIDEO_STEP * max(1, limit - len(samples))
            frames = catalog.load(name, 0, stop, BANK_VIDEO_STEP, purpose="gan")
            samples += [Sample(f"{name}#{i * BANK_VIDEO_STEP}", f) for i, f in enumerate(frames)]
    return samples[:limit] if limit else samples


def bank_pair(view: RGB, kind: Kind, seed: int, rng: np.random.Generator) -> Pair:
    """A training pair whose degradation, where the bank renders `kind`, comes from one of the
    bank's *train* families that render it, drawn at random (`BANK_KINDS`)."""
    bank_kind = BANK_KINDS.get(kind)
    if bank_kind is None:
        return make_pair(view, kind, seed)
    families = [
        f
        for f in splits.names("degradation", "train")
        if degradations.has(bank_kind, f)  # type: ignore[arg-type]
    ]
    family: degradations.Family = families[int(rng.integers(len(families)))]  # type: ignore[assignment]
    with splits.training("tools.gan bank pairs"):
        poor = degradations.degrade(view, bank_kind, family, seed)
    return Pair(view, poor, kind, sign_like_mask(view))


def held_out_images() -> list[Sample]:
    """The footage bank's held-out scenes (one view per place, four frames of each clip)."""
    options = BuildOptions(split="held_out")
    return [Sample(name, image) for name, image in enhance_sources(options)]


def split_description() -> str:
    held = ", ".join(splits.scenes("held_out"))
    return (
        f"train: opencv-doc vtest.avi frames {TRAIN_VTEST.start}–{TRAIN_VTEST.stop - 1} "
        f"(every {TRAIN_VTEST.step}rd) + skimage.data {', '.join(TRAIN_PHOTOS)}; "
        f"held out (footage bank, tools/footage/splits.py): {held}"
    )


def random_view(image: RGB, height: int, width: int, rng: np.random.Generator) -> RGB:
    """A random crop with the target's aspect (50–100 % of the largest such crop), resized by
    area to height×width, mirrored half the time."""
    h, w = image.shape[:2]
    aspect = width / height
    ch_max = min(h, round(w / aspect))
    scale = float(np.sqrt(rng.uniform(0.25, 1.0)))
    ch = max(8, round(ch_max * scale))
    cw = min(w, max(8, round(ch * aspect)))
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    crop = image[y0 : y0 + ch, x0 : x0 + cw]
    out = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out, dtype=np.uint8)


def scene_tone(image: RGB, rng: np.random.Generator) -> RGB:
    """A darker or brighter scene, not a worse picture: a random gamma (0.7–1.8) that keeps
    black and white where they were. Clean pairs made from it teach the generator that a dark
    scene with its full tonal range is not an under-exposed one."""
    gamma = float(np.exp(rng.uniform(np.log(0.7), np.log(1.8))))
    lut = np.clip((np.arange(256) / 255.0) ** gamma * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.asarray(cv2.LUT(image, lut), np.uint8)


def plant_lamps(image: RGB, rng: np.random.Generator) -> RGB:
    """A few street lamps, headlights or lit signs planted into a frame: small saturated discs
    (white, sodium-warm or LED-cool) with a soft glow added in linear light. Night frames hold
    such lights, and many training scenes are daytime ones that do not."""
    height, width = image.shape[:2]
    scale = width / 640.0
    linear = srgb_to_linear(to_float(image))
    light = np.zeros((height, width), np.float32)
    glow = np.zeros((height, width, 3), np.float32)
    colours = ((1.0, 1.0, 1.0), (1.0, 0.72, 0.38), (0.82, 0.9, 1.0))
    for _ in range(int(rng.integers(1, 7))):
        radius = float(rng.uniform(1.5, 9.0)) * scale
        centre = (float(rng.uniform(0, width)), float(rng.uniform(0, height * 0.8)))
        disc = np.zeros((height, width), np.float32)
        cv2.circle(
            disc,
            (round(centre[0] * 16), round(centre[1] * 16)),
            round(radius * 16),
            1.0,
            -1,
            cv2.LINE_AA,
            4,
        )
        halo = cv2.GaussianBlur(disc, (0, 0), max(1.0, radius * float(rng.uniform(1.5, 4.0))))
        colour = np.array(colours[int(rng.integers(len(colours)))], np.float32)
        glow += halo[..., None] * colour * np.float32(rng.uniform(0.3, 1.5))
        light = np.maximum(light, disc)
    lit = linear + glow
    lit = lit * (np.float32(1.0) - light[..., None]) + light[..., None]  # the lamp itself clips
    return to_uint8(linear_to_srgb(np.clip(lit, 0.0, 1.0)))


def light_sources(image: RGB, max_share: float = 0.005) -> npt.NDArray[np.float32]:
    """Where `image` shows a light source: each connected patch of saturated pixels (luma ≥ 0.96)
    no larger than `max_share` of the frame (a lamp, a headlight, a lit sign; a clipped sky is
    larger), grown by a pixel and feathered. H×W in [0, 1]."""
    height, width = image.shape[:2]
    saturated = (image.astype(np.float32).mean(axis=2) >= 0.96 * 255).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(saturated, connectivity=8)
    small = stats[:, cv2.CC_STAT_AREA] <= max(1.0, max_share * height * width)
    small[0] = False  # background
    core = small[labels].astype(np.float32)
    grown = cv2.dilate(core, np.ones((3, 3), np.uint8))
    return np.asarray(np.maximum(core, cv2.GaussianBlur(grown, (0, 0), 0.8)), np.float32)


def night_camera(good: RGB, poor: RGB, rng: np.random.Generator) -> RGB:
    """What a real night camera adds to an under-exposed frame: its lights stay saturated (a
    lamp's radiance is far above the clipping level, so cutting the exposure does not dim it),
    and, half the time, the camera's own denoiser has smoothed the grain (non-local means or a
    bilateral filter of random strength), so little noise is left to say the frame is dark."""
    out = poor
    if rng.random() < 0.5:
        if rng.random() < 0.5:
            h = float(rng.uniform(3.0, 12.0))
            out = np.asarray(
                cv2.fastNlMeansDenoisingColored(np.ascontiguousarray(out), None, h, h, 5, 15),
                np.uint8,
            )
        else:
            out = np.asarray(
                cv2.bilateralFilter(
                    np.ascontiguousarray(out), 5, float(rng.uniform(15.0, 60.0)), 3.0
                ),
                np.uint8,
            )
    sources = light_sources(good)[..., None]
    mixed = out.astype(np.float32) * (1.0 - sources) + good.astype(np.float32) * sources
    return np.asarray(np.clip(mixed + 0.5, 0, 255), np.uint8)


def balanced_weights(samples: Sequence[Sample]) -> list[float]:
    """Sampling weights giving each source (the video, the photos) half of the draws, so the
    165 frames of one street do not drown the photos."""
    groups = [s.name.split("#")[0].split(".")[0] for s in samples]
    counts = {g: groups.count(g) for g in set(groups)}
    return [1.0 / (len(counts) * counts[g]) for g in groups]


def to_tensor(images: Sequence[RGB]) -> Tensor:
    """N×3×H×W float32 in [0, 1] from RGB uint8 images."""
    array = np.stack(images).astype(np.float32) / np.float32(255.0)
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def to_image(tensor: Tensor) -> RGB:
    """H×W×3 uint8 RGB from a 3×H×W (or 1×3×H×W) float tensor in [0, 1]."""
    t = tensor.detach().reshape(-1, *tensor.shape[-3:])[0].clamp(0, 1)
    return np.ascontiguousarray((t.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8))


@dataclass(frozen=True, slots=True)
class Batch:
    good: Tensor
    poor: Tensor
    region: Tensor
    """N×1×H×W, 1 inside the region the brightness/texture losses use (all ones when none)."""
    kinds: tuple[Kind, ...]


class PairSampler:
    """Deterministic batches: batch `i` of epoch `e` is a pure function of (seed, rank, phase,
    e, i), so a resumed or repeated run sees the same pairs."""

    def __init__(
        self,
        images: Sequence[RGB],
        mix: dict[Kind, float],
        *,
        height: int,
        width: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        weights: Sequence[float] | None = None,
        tone: float = 0.0,
        night: float = 0.0,
        renderers: Renderers = "gan",
        corrupt: bool = False,
    ) -> None:
        unknown = set(mix) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown degradations {sorted(unknown)}, expected some of {KINDS}")
        if not images:
            raise ValueError("no training images")
        self.images = list(images)
        p = np.ones(len(self.images)) if weights is None else np.asarray(weights, np.float64)
        if p.shape != (len(self.images),) or (p < 0).any() or p.sum() <= 0:
            raise ValueError("need one non-negative weight per image")
        self.image_p = p / p.sum()
        self.tone = tone
        self.night = night
        """Share of low-light pairs given `plant_lamps` (half of them) and `night_camera`."""
        self.renderers = renderers
        self.corrupt = corrupt
        """Corrupted labels: each batch's good and poor sides swapped (`TrainConfig`)."""
        self.kinds: tuple[Kind, ...] = tuple(k for k, w in mix.items() if w > 0)
        shares = np.array([mix[k] for k in self.kinds], np.float64)
        self.kind_p = shares / shares.sum()
        self.height, self.width = height, width
        self.batch_size = batch_size
        self.seed, self.rank = seed, rank

    def pair(self, rng: np.random.Generator) -> Pair:
        image = self.images[int(rng.choice(len(self.images), p=self.image_p))]
        view = random_view(image, self.height, self.width, rng)
        if rng.random() < self.tone:
            view = scene_tone(view, rng)
        kind = self.kinds[int(rng.choice(len(self.kinds), p=self.kind_p))]
        seed = int(rng.integers(1 << 31))
        night = kind == "low_light" and self.night > 0 and rng.random() < self.night
        if night and rng.random() < 0.5:
            view = plant_lamps(view, rng)
        pair = (
            bank_pair(view, kind, seed, rng)
            if self.renderers == "bank"
            else make_pair(view, kind, seed)
        )
        if night:
            pair = Pair(pair.good, night_camera(pair.good, pair.poor, rng), kind, pair.region)
        return pair

    def batch(self, epoch: int, index: int, phase: int = 1) -> Batch:
        """Phase 0: discriminator pretraining; 1: the alternating epochs."""
        rng = np.random.default_rng([self.seed, self.rank, phase, epoch, index])
        pairs = [self.pair(rng) for _ in range(self.batch_size)]
        regions = np.stack(
            [
                np.ones((self.height, self.width), np.float32)
                if p.region is None
                else p.region.astype(np.float32)
                for p in pairs
            ]
        )
        good, poor = [p.good for p in pairs], [p.poor for p in pairs]
        if self.corrupt:
            good, poor = poor, good
        return Batch(
            good=to_tensor(good),
            poor=to_tensor(poor),
            region=torch.from_numpy(regions[:, None]),
            kinds=tuple(p.kind for p in pairs),
        )

    def epoch(self, epoch: int, steps: int, start: int = 0) -> Iterator[Batch]:
        for index in range(start, steps):
            yield self.batch(epoch, index)


def bank_pair_sampler(batches: int = 0, *, limit: int | None = 3) -> PairSampler:
    """A bank-mode sampler over `bank_training_images(limit)` with every bank kind, drawn
    `batches` times (a check that the pairs stay on the train split: tests/footage)."""
    images = [s.image for s in bank_training_images(limit)]
    mix: dict[Kind, float] = dict.fromkeys(BANK_KINDS, 1.0)
    sampler = PairSampler(images, mix, height=32, width=48, batch_size=4, seed=0, renderers="bank")
    for index in range(batches):
        sampler.batch(0, index)
    return sampler
