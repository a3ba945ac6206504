"""Footage bank: named benchmark and training sets built on disk, deterministic per seed.

- `adhesion-moving`: one drive (default 60 s) over a scene, standing still twice, with soiling
  put on the lens and blown off again (drops, mud, then dust); `clip.avi`, `truth.json` (the
  drive's motion per frame, stand-still intervals, every soiling event with its mask file under
  `masks/`).
- `adhesion-clean`: clean drives for false alarms (day driving with 10 s stand-stills, a
  parked camera, night, dense passing traffic, dusk), one folder each.
- `enhance`: scenes × degradations (low light, fog, motion blur with noise, rain streaks, lens
  drops) and clean frames: `clean/`, one folder per degradation, `index.json`.

Every set takes `--split held_out` (the default: held-out scenes × held-out renderers, what
benchmarks quote first) or `--split train` (what training may use; built inside
`splits.training`, so nothing held out can slip in).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import cv2
import numpy as np

from tools.footage import catalog, splits
from tools.footage.catalog import RGB, FootageError
from tools.footage.degradations import DEGRADATION_KINDS, degrade, has
from tools.footage.drive import Drive, DriveSpec, synthesise
from tools.footage.soiling import CLASS_OF, Family, SoilingKind, render_soiling

Advance = Callable[[int], None]
"""Called with the number of frames (or images) just written."""

DEFAULT_SCENE: dict[splits.Split, str] = {"held_out": "leuvenA", "train": "aero1"}
"""The drive's scene when none is named: a real street for the held-out benchmark."""
ENHANCE_VIDEO_FRAMES = 4
"""Frames taken from each video scene for the enhancement set (evenly spaced)."""
ENHANCE_MAX_SIDE = 768
ENHANCE_KINDS: tuple[str, ...] = ("clean", *DEGRADATION_KINDS, "lens_drops")


class SetError(ValueError):
    """A set that cannot be built as asked (unknown name, bad option); says what is wrong."""


@dataclass(frozen=True, slots=True)
class SoilingEvent:
    """Soiling on the lens from `onset_s` until `end_s` (blown off)."""

    kind: SoilingKind
    onset_s: float
    end_s: float
    coverage: float


@dataclass(frozen=True, slots=True)
class BuildOptions:
    split: splits.Split = "held_out"
    seed: int = 0
    scene: str | None = None
    seconds: float = 60.0
    fps: float = 15.0
    width: int = 640
    height: int = 360
    minutes: float = 30.0
    """adhesion-clean: total minutes of footage."""
    kinds: tuple[SoilingKind, ...] = ("drops", "mud", "dust")
    coverage: float = 0.03
    light: Literal["day", "dusk", "tunnel", "night", "mixed"] = "day"


def _rng(seed: int, *salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, *salt])


def _families(kind: splits.UseKind, split: splits.Split) -> tuple[str, ...]:
    return splits.names(kind, split)


def _scene_frames(name: str, split: splits.Split, purpose: str) -> list[RGB]:
    if splits.split_of("scene", name) != split:
        raise SetError(
            f"scene {name!r} is in the {splits.split_of('scene', name)} split, not {split}"
        )
    entry = catalog.item(name)
    step = 1 if entry.kind == "photo" else max(1, round((entry.fps or 15.0) / 15.0))
    return catalog.load(name, step=step, purpose=purpose)


def soiling_schedule(options: BuildOptions) -> list[SoilingEvent]:
    """The soiling events of an `adhesion-moving` drive: one per kind, spread over the drive
    with clean gaps between them, onsets jittered by the seed."""
    if not options.kinds:
        raise SetError("no soiling kinds given")
    rng = _rng(options.seed, 11)
    slot = options.seconds / len(options.kinds)
    if slot < 8.0:
        raise SetError(f"{options.seconds} s is too short for {len(options.kinds)} soiling events")
    events = []
    for i, kind in enumerate(options.kinds):
        onset = i * slot + slot * float(rng.uniform(0.15, 0.25))
        end = onset + slot * float(rng.uniform(0.55, 0.65))
        coverage = options.coverage * float(rng.uniform(0.9, 1.3))
        events.append(SoilingEvent(kind, round(onset, 2), round(end, 2), round(coverage, 4)))
    return events


def _stand_stills(seconds: float) -> tuple[tuple[float, float], ...]:
    """Two stand-stills of 10 s (at lights), placed so soiling lands while moving and while
    standing."""
    if seconds < 30.0:
        return ((seconds * 0.4, seconds * 0.6),)
    stills = ((0.25 * seconds, 0.25 * seconds + 10.0), (0.72 * seconds, 0.72 * seconds + 10.0))
    return tuple((round(a, 2), round(min(b, seconds), 2)) for a, b in stills)


def _write_clip(path: Path, drive: Drive, render: Callable[[int], RGB], advance: Advance) -> str:
    """The drive as MJPG in AVI (quality 95: fine soiling survives; every frame a key frame,
    the same bytes for the same frames); returns the sha256 of the raw frames."""
    spec = drive.spec
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter.fourcc(*"MJPG"), spec.fps, (spec.width, spec.height)
    )
    if not writer.isOpened():
        raise FootageError(f"cannot write {path}")
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)
    digest = hashlib.sha256()
    try:
        for i in range(drive.frames):
            frame = render(i)
            digest.update(frame.tobytes())
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
            advance(1)
    finally:
        writer.release()
    return digest.hexdigest()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def _family(kind: splits.UseKind, split: splits.Split, seed: int, index: int) -> str:
    families = _families(kind, split)
    return families[(seed + index) % len(families)]


# ---------------------------------------------------------------------------------------------
# adhesion-moving


def adhesion_moving_frames(options: BuildOptions) -> int:
    return round(options.seconds * options.fps)


def build_adhesion_moving(out: Path, options: BuildOptions, advance: Advance) -> dict[str, Any]:
    """One drive with soiling events; returns the truth written to `truth.json`."""
    scene = options.scene or DEFAULT_SCENE[options.split]
    purpose = f"footage set adhesion-moving ({options.split})"
    frames = _scene_frames(scene, options.split, purpose)
    spec = DriveSpec(
        seconds=options.seconds,
        fps=options.fps,
        width=options.width,
        height=options.height,
        light=options.light,
        stand_still=_stand_stills(options.seconds),
        passing=True,
    )
    drive = synthesise(frames, spec, options.seed)
    events = soiling_schedule(options)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    layers = []
    records: list[dict[str, Any]] = []
    for i, event in enumerate(events):
        family = _family("soiling", options.split, options.seed, i)
        layer = render_soiling(
            event.kind,
            cast("Family", family),
            spec.height,
            spec.width,
            event.coverage,
            options.seed * 100 + i,
        )
        mask_name = f"masks/{i:02d}-{event.kind}.png"
        cv2.imwrite(str(out / mask_name), layer.mask.astype(np.uint8) * 255)
        layers.append((event, layer))
        records.append(
            {
                "kind": event.kind,
                "class": CLASS_OF[event.kind],
                "family": family,
                "onset_s": event.onset_s,
                "end_s": event.end_s,
                "coverage_target": event.coverage,
                "coverage": round(float(layer.mask.mean()), 5),
                "mask": mask_name,
            }
        )

    def render(i: int) -> RGB:
        t = i / spec.fps
        frame = drive.frame(i)
        for event, layer in layers:
            if event.onset_s <= t < event.end_s:
                frame = layer.apply(frame)
        return frame

    digest = _write_clip(out / "clip.avi", drive, render, advance)
    truth = {
        "set": "adhesion-moving",
        "split": options.split,
        "scene": scene,
        "clip": "clip.avi",
        "seed": options.seed,
        "frames_sha256": digest,
        "drive": drive.truth(),
        "soiling": records,
    }
    _write_json(out / "truth.json", truth)
    return truth


# ---------------------------------------------------------------------------------------------
# adhesion-clean


@dataclass(frozen=True, slots=True)
class CleanRun:
    name: str
    light: Literal["day", "dusk", "tunnel", "night", "mixed"]
    motion: Literal["drive", "still"]
    share: float
    """Share of the set's minutes."""
    stand_still: bool = True
    passing: bool = True


CLEAN_RUNS: tuple[CleanRun, ...] = (
    CleanRun("driving-day", "day", "drive", 0.3),
    CleanRun("driving-mixed", "mixed", "drive", 0.2),
    CleanRun("night", "night", "drive", 0.15),
    CleanRun("dusk", "dusk", "drive", 0.1),
    CleanRun("parked", "day", "still", 0.15, stand_still=False),
    CleanRun("traffic", "day", "drive", 0.1),
)


def _clean_stand_stills(
    seconds: float, rng: np.random.Generator
) -> tuple[tuple[float, float], ...]:
    """A 10 s stand-still about every 40 s."""
    out: list[tuple[float, float]] = []
    t = float(rng.uniform(10.0, 25.0))
    while t + 10.0 < seconds - 5.0:
        out.append((round(t, 2), round(t + 10.0, 2)))
        t += 10.0 + float(rng.uniform(25.0, 40.0))
    return tuple(out)


def clean_plan(options: BuildOptions) -> list[tuple[CleanRun, str, float]]:
    """(run, scene, seconds) for every clip of `adhesion-clean`: the runs cycle through the
    split's scenes (photos and videos) so each clip shows another place."""
    names = splits.scenes(options.split)
    if options.scene is not None:
        names = (options.scene,)
    plan = []
    for i, run in enumerate(CLEAN_RUNS):
        seconds = round(options.minutes * 60.0 * run.share, 1)
        if seconds >= 5.0:
            plan.append((run, names[(options.seed + i) % len(names)], seconds))
    return plan


def build_adhesion_clean(out: Path, options: BuildOptions, advance: Advance) -> dict[str, Any]:
    clips = []
    for i, (run, scene, seconds) in enumerate(clean_plan(options)):
        purpose = f"footage set adhesion-clean ({options.split})"
        frames = _scene_frames(scene, options.split, purpose)
        rng = _rng(options.seed, 23, i)
        spec = DriveSpec(
            seconds=seconds,
            fps=options.fps,
            width=options.width,
            height=options.height,
            light=run.light,
            stand_still=_clean_stand_stills(seconds, rng) if run.stand_still else (),
            passing=run.passing,
            motion=run.motion,
        )
        drive = synthesise(frames, spec, options.seed * 100 + i)
        folder = out / f"{i:02d}-{run.name}"
        folder.mkdir(parents=True, exist_ok=True)
        digest = _write_clip(folder / "clip.avi", drive, drive.frame, advance)
        truth = {
            "set": "adhesion-clean",
            "run": run.name,
            "split": options.split,
            "scene": scene,
            "clip": "clip.avi",
            "seed": options.seed,
            "frames_sha256": digest,
            "drive": drive.truth(),
            "soiling": [],
        }
        _write_json(folder / "truth.json", truth)
        clips.append({"folder": folder.name, "run": run.name, "scene": scene, "seconds": seconds})
    index = {"set": "adhesion-clean", "split": options.split, "seed": options.seed, "clips": clips}
    _write_json(out / "index.json", index)
    return index


def clean_frames(options: BuildOptions) -> int:
    return sum(round(seconds * options.fps) for _, _, seconds in clean_plan(options))


# ---------------------------------------------------------------------------------------------
# enhance


def _fit(image: RGB) -> RGB:
    """At most `ENHANCE_MAX_SIDE` on the long side, even sides (encoders and the nets' strides)."""
    height, width = image.shape[:2]
    scale = min(1.0, ENHANCE_MAX_SIDE / max(height, width))
    if scale < 1.0:
        size = (round(width * scale), round(height * scale))
        image = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)
    height, width = image.shape[:2]
    return np.ascontiguousarray(image[: height - height % 2, : width - width % 2])


def enhance_scenes(options: BuildOptions) -> list[catalog.Item]:
    """The split's scenes the enhancement set draws from (only `options.scene` when given); a
    group's second photo is left out when the first is in (a stereo pair shows the same
    picture twice)."""
    chosen: list[catalog.Item] = []
    groups: set[str] = set()
    for name in splits.scenes(options.split):
        entry = catalog.item(name)
        if options.scene is not None and name != options.scene:
            continue
        if entry.group in groups and entry.kind == "photo":
            continue
        groups.add(entry.group)
        chosen.append(entry)
    return chosen


def enhance_sources(options: BuildOptions) -> Iterator[tuple[str, RGB]]:
    """(name, clean image) for every `enhance_scenes` item: a photo once, a video at
    `ENHANCE_VIDEO_FRAMES` evenly spaced frames."""
    purpose = f"footage set enhance ({options.split})"
    for entry in enhance_scenes(options):
        name = entry.name
        if entry.kind == "photo":
            yield name, _fit(catalog.load(name, purpose=purpose)[0])
            continue
        frames = catalog.load(name, purpose=purpose)
        picks = np.linspace(0, len(frames) - 1, ENHANCE_VIDEO_FRAMES + 2)[1:-1]
        for index in picks.round().astype(int):
            yield f"{name}#{index}", _fit(frames[int(index)])


def enhance_degrade(image: RGB, kind: str, split: splits.Split, seed: int) -> tuple[str, RGB]:
    """(renderer family, `image` degraded by `kind`) as the `enhance` set renders it: one of the
    split's families chosen by `seed` (lens drops from the split's soiling renderers at 3–12 %
    coverage). Also what `tools.suite` applies to the fleet's held-out frames."""
    if kind == "lens_drops":
        family = _family("soiling", split, seed, 0)
        height, width = image.shape[:2]
        coverage = float(_rng(seed, 5).uniform(0.03, 0.12))
        drops = render_soiling("drops", family, height, width, coverage, seed)  # type: ignore[arg-type]
        return family, drops.apply(image)
    if kind not in DEGRADATION_KINDS:
        raise SetError(f"unknown degradation {kind!r}; known: {', '.join(ENHANCE_KINDS[1:])}")
    usable = [f for f in _families("degradation", split) if has(kind, f)]  # type: ignore[arg-type]
    family = usable[seed % len(usable)]
    return family, degrade(image, kind, family, seed)  # type: ignore[arg-type]


def build_enhance(out: Path, options: BuildOptions, advance: Advance) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    for kind in ENHANCE_KINDS:
        (out / kind).mkdir(parents=True, exist_ok=True)
    for i, (name, image) in enumerate(enhance_sources(options)):
        file = name.replace("#", "_") + ".png"
        cv2.imwrite(str(out / "clean" / file), image[..., ::-1])
        for k, kind in enumerate(ENHANCE_KINDS[1:]):
            seed = options.seed * 100_003 + i * 101 + k
            family, degraded = enhance_degrade(image, kind, options.split, seed)
            cv2.imwrite(str(out / kind / file), degraded[..., ::-1])
            entries.append(
                {"scene": name, "kind": kind, "family": family, "seed": seed,
                 "clean": f"clean/{file}", "degraded": f"{kind}/{file}"}
            )  # fmt: skip
        advance(1)
    index = {"set": "enhance", "split": options.split, "seed": options.seed, "pairs": entries}
    _write_json(out / "index.json", index)
    return index


def enhance_images(options: BuildOptions) -> int:
    return sum(1 if e.kind == "photo" else ENHANCE_VIDEO_FRAMES for e in enhance_scenes(options))


@dataclass(frozen=True, slots=True)
class SetKind:
    build: Callable[[Path, BuildOptions, Advance], dict[str, Any]]
    size: Callable[[BuildOptions], int]
    unit: str
    about: str


SETS: dict[str, SetKind] = {
    "adhesion-moving": SetKind(
        build_adhesion_moving, adhesion_moving_frames, "frames",
        "a drive with stand-stills and soiling events (clip.avi, truth.json, masks/)",
    ),
    "adhesion-clean": SetKind(
        build_adhesion_clean, clean_frames, "frames",
        "clean drives for false alarms: driving, stand-stills, parked, night, dusk, traffic",
    ),
    "enhance": SetKind(
        build_enhance, enhance_images, "images",
        "scenes × low light, fog, motion blur + noise, rain streaks, lens drops, clean",
    ),
}  # fmt: skip


def build(name: str, out: Path, options: BuildOptions, advance: Advance) -> dict[str, Any]:
    """Build set `name` into `out` (created; must be empty or absent)."""
    if name not in SETS:
        raise SetError(f"unknown set {name!r}; known: {', '.join(SETS)}")
    if out.exists() and any(out.iterdir()):
        raise SetError(f"{out} is not empty; give a new folder")
    if options.scene is not None:
        catalog.item(options.scene)
    out.mkdir(parents=True, exist_ok=True)
    if options.split == "train":
        with splits.training(f"footage set {name} (train)"):
            return SETS[name].build(out, options, advance)
    return SETS[name].build(out, options, advance)


def digest_tree(root: Path, files: Sequence[Path] | None = None) -> str:
    """sha256 over every file's relative path and bytes (to check that a build repeats)."""
    digest = hashlib.sha256()
    for path in sorted(files or [p for p in root.rglob("*") if p.is_file()]):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
