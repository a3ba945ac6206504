"""Soiling detector training data: drives over the footage bank's train scenes with soiling from
its train renderers, turned into the detector's own input features and per-tile labels.

Each drive (`DriveRecipe`) is a clip from `tools.footage.drive` (moving or parked, day, dusk,
tunnel or night, with stand-stills and passing vehicles) with zero to three soiling events
(kind, renderer family, coverage 0.5–30 %, onset, and for some an end: blown off) put on the lens
with `tools.footage.soiling`, from every train family. A third of the drives stay clean
throughout (some of them stand still for a stretch, some at night). Most clean drives and a
quarter of the soiled ones have large featureless regions painted into their scene (sky, a wall,
a dark pole or area: `paint_featureless`), the clean negatives a detector needs to tell "nothing
to see" from "soiled". Soiling arrives only after `FIRST_ONSET_S` of clean driving,
so the features' long-horizon references (how textured and bright each place was before) have
formed, as on a vehicle that has been driving; a third of the moving drives stand still around
the first onset and pull away after it (soiled while waiting at lights). Every frame goes
through exactly what the daemon does: the 320-pixel analysis copy (`prepare`), then
`SoilFeatures`; every `sample_every`-th frame after the warm-up is kept with its per-tile
labels (`tile_truth` of the true masks). Everything is built inside `splits.training`, so a
held-out scene or renderer is refused.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from tools.footage import catalog, splits, streets
from tools.footage.drive import DriveSpec, synthesise
from tools.footage.soiling import CLASS_OF, SOILING_KINDS, SoilingKind, render_soiling
from vehicle_agent.quality.metrics import prepare
from vehicle_agent.quality.soilnet import (
    CHANNELS,
    CLASSES,
    LABEL_COVER,
    TILE,
    SoilFeatures,
    net_size,
    tile_texture,
    tile_truth,
)

Light = Literal["day", "dusk", "tunnel", "night", "mixed"]
LIGHTS: tuple[Light, ...] = ("day", "day", "mixed", "dusk", "night", "tunnel")
CLASS_INDEX = {name: i for i, name in enumerate(CLASSES)}
WARMUP_S = 1.5
"""Frames before this are not sampled (the temporal features are still filling)."""
FIRST_ONSET_S = 4.0
"""No soiling arrives before this much clean driving."""
FEATURELESS_STD = 4.0 / 255
"""A tile of the clean picture whose grey levels vary less than this (RMS, about 4 grey levels:
sensor noise, a clear sky, a blank wall) has nothing soiling could hide; soiling there is not
taught as soiling (`tile_truth`'s `visible`). A definition of the labels, not a detector
threshold."""


@dataclass(frozen=True, slots=True)
class Event:
    kind: SoilingKind
    family: str
    coverage: float
    onset_s: float
    end_s: float | None
    seed: int


@dataclass(frozen=True, slots=True)
class DriveRecipe:
    scene: str
    seconds: float
    fps: float
    light: Light
    motion: Literal["drive", "still"]
    size: tuple[int, int]
    """(width, height) of the camera frames."""
    events: tuple[Event, ...]
    seed: int
    stand_still: tuple[tuple[float, float], ...] | None = None
    """Stretches without ego-motion; None: the synthesiser chooses them from the seed."""
    featureless: int | None = None
    """Seed of the large uniform regions (sky, a wall, a dark pole or underpass) painted into
    the scene before the drive is synthesised (`paint_featureless`); None: the scene as it is."""
    textures: tuple[str, ...] = ()
    """For a composed street (`scene` `street-<seed>`, `tools.footage.streets`): the train
    photos it may be textured with."""


@dataclass
class Samples:
    """Features (N×C×H×W float16) and per-tile labels (N×rows×cols int8, −1 ignored)."""

    x: npt.NDArray[np.float16]
    y: npt.NDArray[np.int8]
    kind: npt.NDArray[np.int8] | None = None
    """Per tile (N×rows×cols), the soiling kind a soiled label comes from: 1 + its index in
    `SOILING_KINDS`, 0 where the label is clean or ignored (for `--balance kind`: drops and mist
    share a class but not a look); None: not recorded."""

    @staticmethod
    def join(parts: Sequence[Samples]) -> Samples:
        kinds = [p.kind for p in parts]
        return Samples(
            np.concatenate([p.x for p in parts]),
            np.concatenate([p.y for p in parts]),
            None if any(k is None for k in kinds) else np.concatenate(kinds),  # type: ignore[arg-type]
        )


def train_families(chosen: Sequence[str] | None = None) -> list[str]:
    """The train soiling families to draw from: all of them, or `chosen` (for a leave-one-renderer-
    out run, which judges on a train family no training saw). A held-out or unknown name is
    refused with the list of train families."""
    families = splits.names("soiling", "train")
    if chosen is None:
        return list(families)
    wrong = [f for f in chosen if f not in families]
    if wrong:
        raise ValueError(
            f"soiling families {', '.join(wrong)}: not train families "
            f"(choose among {', '.join(families)})"
        )
    if not chosen:
        raise ValueError(f"no soiling family chosen (choose among {', '.join(families)})")
    return [f for f in families if f in chosen]


def train_scenes(left_out: Sequence[str] = ()) -> list[str]:
    """The train scenes to drive over: all of them but `left_out` (for a leave-scenes-out run,
    which judges on train scenes no training saw). A name that is not a train scene, or leaving
    every scene out, is refused."""
    scenes = splits.scenes("train")
    if wrong := [n for n in left_out if n not in scenes]:
        raise ValueError(
            f"scenes {', '.join(wrong)}: not train scenes (choose among {', '.join(scenes)})"
        )
    kept = [n for n in scenes if n not in left_out]
    if not kept:
        raise ValueError("every train scene is left out: nothing to drive over")
    return kept


def recipes(  # noqa: PLR0917 - the CLI passes its options through
    count: int,
    seed: int,
    seconds: float = 24.0,
    families: Sequence[str] | None = None,
    left_out_scenes: Sequence[str] = (),
    street_scenes: int = 0,
    video_share: float = 0.0,
) -> list[DriveRecipe]:
    """`count` drives over the train scenes (cycled; all, or all but `left_out_scenes`) with random
    soiling from train families (all, or `families`; the draws are the same either way, only the
    family picked differs). With `street_scenes` the cycle also has that many streets composed
    from those scenes' photos (`tools.footage.streets`), each its own.

    With `video_share` about that share of the drives goes over the scenes that are clips, not
    photos (a world that moves by itself: people walking, traffic, wind), drawn from a stream of
    their own so every other draw stays as it was. Cycled, a clip gets one drive in as many as
    there are scenes, yet it is where a vehicle that waits at lights sees the world move while
    the lens stands still, the picture a detector must not take for soiling."""
    if street_scenes < 0:
        raise ValueError(f"street scenes {street_scenes} < 0")
    if not 0.0 <= video_share <= 1.0:
        raise ValueError(f"video share {video_share} is not in [0, 1]")
    photos = train_scenes(left_out_scenes)
    videos = [n for n in photos if catalog.item(n).kind == "video"]
    if video_share > 0 and not videos:
        raise ValueError("a video share is asked for, but no train scene left is a clip")
    pick_video = np.random.default_rng([seed, 9])
    if street_scenes:
        streets.pools(photos)  # refuses a leave-out that leaves a street nothing to be made of
    # Real scenes and streets interleaved, so any number of drives sees both.
    named = [f"{streets.PREFIX}{seed * 100 + k}" for k in range(street_scenes)]
    scenes = [s for pair in zip(photos, named, strict=False) for s in pair]
    scenes += photos[len(named) :] + named[len(photos) :]
    families = train_families(families)
    rng = np.random.default_rng([seed, 8])
    first = min(FIRST_ONSET_S, seconds * 0.4)
    out = []
    for i in range(count):
        fps = float(rng.choice([10.0, 15.0, 15.0, 30.0]))
        events: list[Event] = []
        n_events = int(rng.choice([0, 0, 1, 1, 2, 3]))
        onset = first
        for e in range(n_events):
            kind: SoilingKind = SOILING_KINDS[int(rng.integers(len(SOILING_KINDS)))]
            coverage = float(math.exp(rng.uniform(math.log(0.005), math.log(0.3))))
            if kind == "mist":
                coverage = float(rng.uniform(0.1, 0.6))
            # The first onset after the clean stretch, later ones after it.
            onset = float(rng.uniform(onset, max(onset, seconds * 0.75)))
            end = onset + float(rng.uniform(1.0, 3.0 + seconds)) if rng.random() < 0.4 else None
            family = families[int(rng.integers(len(families)))]
            events.append(Event(kind, family, coverage, onset, end, seed * 1000 + i * 10 + e))
        size = (640, 360) if rng.random() < 0.75 else (480, 360)
        motion: Literal["drive", "still"] = "drive" if rng.random() < 0.8 else "still"
        stand_still: tuple[tuple[float, float], ...] | None = None
        if motion == "drive" and rng.random() < 1 / 3:
            # Waiting at lights when the soiling arrives, or (clean) for a long stretch.
            at = events[0].onset_s if events else float(rng.uniform(2.0, seconds * 0.5))
            length = float(rng.uniform(2.0, 3.0)) if events else float(rng.uniform(6.0, 10.0))
            stand_still = ((max(0.5, at - length * 0.6), at + length * 0.4),)
        light = LIGHTS[int(rng.integers(len(LIGHTS)))]
        if not events and rng.random() < 0.3:
            light = "night"
        # Clean uniform regions are where a detector can confuse "nothing to see" with "soiled":
        # most clean drives and some soiled ones get a sky, a wall or a dark area of their own.
        featureless = (
            int(rng.integers(1 << 30)) if rng.random() < FEATURELESS_SHARE[bool(events)] else None
        )
        scene = scenes[(i + seed) % len(scenes)]
        if video_share > 0 and pick_video.random() < video_share:
            scene = videos[int(pick_video.integers(len(videos)))]
        out.append(
            DriveRecipe(
                scene=scene,
                seconds=seconds,
                fps=fps,
                light=light,
                motion=motion,
                size=size,
                events=tuple(events),
                seed=seed * 1000 + i,
                stand_still=stand_still,
                featureless=featureless,
                textures=tuple(photos) if streets.is_street(scene) else (),
            )
        )
    return out


FEATURELESS_SHARE = {False: 0.6, True: 0.25}
"""Share of clean (False) and soiled (True) drives whose scene gets featureless regions."""


def paint_featureless(frames: Sequence[catalog.RGB], seed: int) -> list[catalog.RGB]:
    """The scene's frames with one to three large low-texture regions painted in at the same
    place in every frame (so the drive's ego-motion carries them like the rest of the world):
    a sky above an irregular skyline (a smooth gradient), a wall (a flat colour with a faint
    texture), a dark pole or a dark area (an underpass, a shadowed doorway). The drive adds
    sensor noise and light on top, as for any scene."""
    rng = np.random.default_rng([seed, 18])
    height, width = frames[0].shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    paint = np.zeros((height, width), np.float32)
    colour = np.zeros((height, width, 3), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        region = str(rng.choice(["sky", "wall", "dark"], p=[0.4, 0.35, 0.25]))
        if region == "sky":
            knots = rng.uniform(0.15, 0.6, int(rng.integers(3, 12))) * height
            line = np.interp(np.linspace(0, len(knots) - 1, width), np.arange(len(knots)), knots)
            inside = ys < line[None, :].astype(np.float32)
            top = rng.uniform([90, 120, 170], [200, 215, 250])
            low = top + rng.uniform(10, 50)
            t = np.clip(ys / np.float32(max(float(knots.max()), 1.0)), 0.0, 1.0)[..., None]
            shade = top * (1 - t) + low * t
        else:
            w, h = rng.uniform(0.2, 0.6) * width, rng.uniform(0.25, 0.8) * height
            if region == "dark" and rng.random() < 0.5:
                w = rng.uniform(0.04, 0.12) * width  # a pole
                h = height * 1.0
            x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
            inside = (xs >= x0) & (xs < x0 + w) & (ys >= y0) & (ys < y0 + h)
            base = (
                rng.uniform(50, 220) * rng.uniform(0.85, 1.15, 3)  # concrete, render, paint
                if region == "wall"
                else rng.uniform(4, 40) * rng.uniform(0.85, 1.15, 3)
            )
            grain = cv2.GaussianBlur(
                rng.standard_normal((height, width)).astype(np.float32), (0, 0), 6.0
            )
            shade = base[None, None, :] * (1.0 + 0.02 * np.asarray(grain, np.float32))[..., None]
        paint = np.where(inside, np.float32(1.0), paint)
        colour = np.where(inside[..., None], shade.astype(np.float32), colour)
    soft = cv2.GaussianBlur(paint, (0, 0), 1.0)[..., None]
    out = []
    for frame in frames:
        mixed = frame.astype(np.float32) * (1.0 - soft) + colour * soft
        out.append(np.clip(mixed + 0.5, 0, 255).astype(np.uint8))
    return out


def sample_indices(recipe: DriveRecipe, sample_every: int) -> list[int]:
    """The frames of a drive that become samples: every `sample_every`-th at 15 fps (as many
    per second at any frame rate) after the warm-up."""
    step = max(1, round(sample_every * recipe.fps / 15.0))
    frames = max(1, round(recipe.seconds * recipe.fps))
    return [i for i in range(frames) if i / recipe.fps >= WARMUP_S and i % step == 0]


def feature_height(recipe: DriveRecipe, net_width: int) -> int:
    """Height of the drive's features (the analysis copy shrunk to the network's width)."""
    width, height = recipe.size
    small = prepare(np.zeros((height, width, 3), np.uint8), 320).colour
    return net_size(small.shape[0], small.shape[1], net_width)[0]


def tile_kinds(kind_map: npt.NDArray[np.int8], tile: int = TILE) -> npt.NDArray[np.int8]:
    """Per tile, the most common soiling kind of a per-pixel kind map (0 none, 1 + index in
    `SOILING_KINDS`); 0 where the tile has no soiling."""
    height, width = kind_map.shape
    rows, cols = height // tile, width // tile
    blocks = kind_map[: rows * tile, : cols * tile].reshape(rows, tile, cols, tile)
    counts = np.stack([(blocks == k).sum(axis=(1, 3)) for k in range(1, len(SOILING_KINDS) + 1)])
    return np.where(counts.max(axis=0) > 0, np.argmax(counts, axis=0) + 1, 0).astype(np.int8)


def _class_map(
    masks: Sequence[tuple[int, npt.NDArray[np.bool_]]], size: tuple[int, int]
) -> npt.NDArray[np.int8]:
    """Per-pixel class at the network's size (later events paint over earlier ones)."""
    height, width = size
    out = np.zeros((height, width), np.int8)
    for index, mask in masks:
        small = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
        out[small >= 0.5] = index
    return out


def render_drive(
    recipe: DriveRecipe,
    net_width: int,
    sample_every: int,
    frames: Callable[[str], list[catalog.RGB]],
    label_cover: float = LABEL_COVER,
) -> Samples:
    """The samples of one drive."""
    width, height = recipe.size
    spec = DriveSpec(
        seconds=recipe.seconds,
        fps=recipe.fps,
        width=width,
        height=height,
        light=recipe.light,
        motion=recipe.motion,
        stand_still=recipe.stand_still,
    )
    if streets.is_street(recipe.scene):
        scene = [
            streets.compose(
                streets.street_seed(recipe.scene), recipe.textures, lambda n: frames(n)[0]
            )
        ]
    else:
        scene = frames(recipe.scene)
    if recipe.featureless is not None:
        scene = paint_featureless(scene, recipe.featureless)
    drive = synthesise(scene, spec, recipe.seed)
    layers = [
        (e, render_soiling(e.kind, e.family, height, width, e.coverage, e.seed))  # type: ignore[arg-type]
        for e in recipe.events
    ]
    features = SoilFeatures(net_width)
    xs: list[npt.NDArray[np.float16]] = []
    ys: list[npt.NDArray[np.int8]] = []
    ks: list[npt.NDArray[np.int8]] = []
    keep = set(sample_indices(recipe, sample_every))
    for i in range(drive.frames):
        t = i / recipe.fps
        frame = clean = drive.frame(i)
        active = []
        kinds = []
        for event, layer in layers:
            if event.onset_s <= t and (event.end_s is None or t < event.end_s):
                frame = layer.apply(frame)
                active.append((CLASS_INDEX[CLASS_OF[event.kind]], layer.mask))
                kinds.append((1 + SOILING_KINDS.index(event.kind), layer.mask))
        bgr = np.ascontiguousarray(frame[..., ::-1])
        x = features.update(prepare(bgr, 320).colour, t)
        if i not in keep:
            continue
        size = (x.shape[1], x.shape[2])
        grey = cv2.resize(
            cv2.cvtColor(clean, cv2.COLOR_RGB2GRAY),
            (size[1], size[0]),
            interpolation=cv2.INTER_AREA,
        )
        visible = tile_texture(np.asarray(grey, np.float32) / 255.0) >= FEATURELESS_STD
        xs.append(x.astype(np.float16))
        label = tile_truth(_class_map(active, size), min_cover=label_cover, visible=visible)
        ys.append(label.astype(np.int8))
        ks.append(np.where(label > 0, tile_kinds(_class_map(kinds, size)), 0).astype(np.int8))
    return Samples(np.stack(xs), np.stack(ys), np.stack(ks))


def _load_train_scene(name: str) -> list[catalog.RGB]:
    entry = catalog.item(name)
    step = 1 if entry.kind == "photo" else max(1, round((entry.fps or 15.0) / 15.0))
    return catalog.load(name, step=step, purpose="soilnet training")


def _worker(args: tuple[DriveRecipe, int, int, float]) -> Samples:
    recipe, net_width, sample_every, label_cover = args
    with splits.training("soilnet training"):
        return render_drive(recipe, net_width, sample_every, _load_train_scene, label_cover)


def build_training_set(  # noqa: PLR0917 - the CLI passes its options through
    drives: int = 2,
    seed: int = 0,
    seconds: float = 4.0,
    net_width: int = 192,
    sample_every: int = 4,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
    x_path: Path | None = None,
    label_cover: float = LABEL_COVER,
    families: Sequence[str] | None = None,
    left_out_scenes: Sequence[str] = (),
    street_scenes: int = 0,
    video_share: float = 0.0,
) -> Samples:
    """Samples from `drives` train drives (in `workers` processes); the CI split test runs it
    tiny. With `x_path` the features are written straight into that .npy file (memory-mapped):
    a full set is several times the size of one drive's, and is never held in memory twice."""
    if not 0.0 < label_cover <= 1.0:
        raise ValueError(f"label cover {label_cover} is not in (0, 1]")
    with splits.training("soilnet training"):
        plan = recipes(drives, seed, seconds, families, left_out_scenes, street_scenes, video_share)
    height = min(feature_height(r, net_width) for r in plan)
    total = sum(len(sample_indices(r, sample_every)) for r in plan)
    rows, cols = height // TILE, net_width // TILE
    shape = (total, CHANNELS, height, net_width)
    x: npt.NDArray[np.float16]
    if x_path is None:
        x = np.empty(shape, np.float16)
    else:
        x = np.lib.format.open_memmap(x_path, mode="w+", dtype=np.float16, shape=shape)
    y = np.empty((total, rows, cols), np.int8)
    kind = np.zeros((total, rows, cols), np.int8)
    crop = _Crop(rows)
    jobs = [(r, net_width, sample_every, label_cover) for r in plan]
    done = 0

    def take(part: Samples) -> None:
        nonlocal done
        n = crop.into(part, x, y, done, kind)
        done += n
        if progress:
            progress(1)

    if workers <= 1:
        for job in jobs:
            take(_worker(job))
    else:
        with ProcessPoolExecutor(workers) as pool:
            for part in pool.map(_worker, jobs):
                take(part)
    if done != total:
        raise ValueError(f"drives gave {done} samples, {total} expected")
    return Samples(x, y, kind)


class _Crop:
    """Samples cut to `rows` tile rows: a band of whole tile rows at an offset that varies from
    sample to sample (a 4:3 frame's features are taller than a 16:9 one's), so the network sees
    every part of the frame. The network is fully convolutional; the daemon runs it on the whole
    frame."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.rng = np.random.default_rng(0)

    def into(
        self,
        part: Samples,
        x: npt.NDArray[np.float16],
        y: npt.NDArray[np.int8],
        start: int,
        kind: npt.NDArray[np.int8] | None = None,
    ) -> int:
        rows, height = self.rows, self.rows * TILE
        spare = part.y.shape[1] - rows
        for k, (xk, yk) in enumerate(zip(part.x, part.y, strict=True)):
            r = int(self.rng.integers(spare + 1)) if spare else 0
            x[start + k] = xk[:, r * TILE : r * TILE + height]
            y[start + k] = yk[r : r + rows]
            if kind is not None and part.kind is not None:
                kind[start + k] = part.kind[k, r : r + rows]
        return len(part.x)


def group_by_size(parts: Sequence[Samples]) -> Samples:
    """All samples cut to the shortest feature height (see `_Crop`)."""
    rows = min(p.y.shape[1] for p in parts)
    first = parts[0].x
    total = sum(len(p.x) for p in parts)
    x = np.empty((total, first.shape[1], rows * TILE, first.shape[3]), np.float16)
    y = np.empty((total, rows, parts[0].y.shape[2]), np.int8)
    kind = None if any(p.kind is None for p in parts) else np.zeros_like(y)
    crop, done = _Crop(rows), 0
    for part in parts:
        done += crop.into(part, x, y, done, kind)
    return Samples(x, y, kind)


SOURCES = (
    "tools/footage/catalog.py",
    "tools/footage/drive.py",
    "tools/footage/soiling.py",
    "tools/footage/soiling_optics.py",
    "tools/footage/streets.py",
    "tools/soilnet/data.py",
    "vehicle_agent/quality/soilnet.py",
    "vehicle_agent/quality/metrics.py",
)
"""The code that decides what a training sample is: a cached set is reused only while it is
unchanged."""


def source_digest() -> str:
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:12]


def cached(stem: Path, build: Callable[[Path], Samples], log: Callable[[str], None]) -> Samples:
    """`build(x_path)`'s samples, kept as `stem`.x.npy / `stem`.y.npy / `stem`.kind.npy and read
    back (memory-mapped) the next time; `build` writes the features into `x_path` itself."""
    xs, ys = stem.with_name(stem.name + ".x.npy"), stem.with_name(stem.name + ".y.npy")
    ks = stem.with_name(stem.name + ".kind.npy")
    if xs.is_file() and ys.is_file() and ks.is_file():
        log(f"samples from the cache: {stem}")
        return Samples(np.load(xs, mmap_mode="r"), np.load(ys), np.load(ks))
    stem.parent.mkdir(parents=True, exist_ok=True)
    x_part = xs.with_name(xs.name + ".part")
    built = build(x_part)
    if isinstance(built.x, np.memmap):
        built.x.flush()
    else:
        with x_part.open("wb") as fh:
            np.save(fh, built.x)
    y_part = ys.with_name(ys.name + ".part")
    with y_part.open("wb") as fh:
        np.save(fh, built.y)
    kind = np.zeros_like(built.y) if built.kind is None else built.kind
    k_part = ks.with_name(ks.name + ".part")
    with k_part.open("wb") as fh:
        np.save(fh, kind)
    x_part.replace(xs)
    y_part.replace(ys)
    k_part.replace(ks)
    return Samples(np.load(xs, mmap_mode="r"), built.y, kind)


def default_workers() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), 4))
