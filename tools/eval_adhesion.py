"""Developer tool: evaluate the lens soiling detectors on the footage bank, soiled and clean.

    python -m tools.eval_adhesion                           # held-out scenes × held-out renderer
    python -m tools.eval_adhesion --split train             # the same on the train split
    python -m tools.eval_adhesion --quick --json build/eval-adhesion.json
    python -m tools.eval_adhesion --split train --detectors learned --lines 0.9,0.95,0.98

Both detectors run side by side on the same frames: the learned one the daemon uses by default
(`models/soilnet`, `vehicle_agent.quality.soilnet`) and the classical tile heuristic it replaces
(`vehicle_agent.quality.adhesion`), each fed exactly as the monitor feeds it (the 320-pixel
analysis copy of the raw frame).

Soiled runs: a drive (`tools.footage.drive`) over each scene of the split, with the camera
moving and parked, gets one kind of soiling from the split's renderer families (or those of them
`--families` names) at `--onset` seconds. Reported per detector, kind and motion:
- detection latency: video seconds from the onset to the first `detected` (≤ 1 s is the target);
- per-tile precision and recall over the 1–5 s after the onset: a tile is truly soiled when the
  soiling covers at least half of it, a flagged tile counts as right when soiling covers at least
  a tenth of it; for the learned detector also whether it named the right class;
- alarms before the onset.
`--lines` scores the learned detector's network output at other decision lines too, beside its
manifest's (`learned@0.9`, …), from one run of the network: a line is chosen on the train split
this way and judged once on the held-out one.
Clean runs: the `adhesion-clean` plan (driving with 10 s stand-stills, mixed light, night, dusk,
a parked camera, traffic) for `--clean-minutes`; false alarms are rising edges of `detected`,
per hour.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from tools.footage import catalog, splits
from tools.footage.drive import DriveSpec, synthesise
from tools.footage.sets import CLEAN_RUNS, BuildOptions, clean_plan
from tools.footage.soiling import CLASS_OF, SOILING_KINDS, render_soiling
from vehicle_agent.quality.adhesion import AdhesionDetector
from vehicle_agent.quality.metrics import prepare
from vehicle_agent.quality.monitor import MonitorSettings, QualityMonitor
from vehicle_agent.quality.settings import AdhesionConfig
from vehicle_agent.quality.soilnet import (
    CLASSES,
    LearnedAdhesionDetector,
    TileDecision,
    hysteresis_off,
)
from vehicle_agent.records import AdhesionEstimate

ANALYSIS_WIDTH = 320
TRUE_COVER = 0.5
ANY_COVER = 0.1
SCORE_FROM_S, SCORE_TO_S = 1.0, 5.0
COVERAGE: dict[str, float] = {"drops": 0.02, "mud": 0.02, "dust": 0.04, "mist": 0.3}
"""Share of the frame each kind covers in the soiled runs (the issue's 2 % for drops and mud)."""


class Detector(Protocol):
    name: str

    def update(self, bgr: npt.NDArray[np.uint8], t: float) -> AdhesionEstimate: ...

    def classes(self) -> npt.NDArray[np.int8] | None: ...


class Learned:
    name = "learned"

    def __init__(self, model: Path | None = None) -> None:
        settings = MonitorSettings(quality=False, brisque=False, detector="learned")
        if model is not None:  # a model folder other than the shipped one (a training's --out)
            settings = dataclasses.replace(
                settings, detector_model=model.name, model_dirs=(model.parent,)
            )
        monitor = QualityMonitor(settings)
        if monitor.learned is None:
            raise SystemExit(f"learned detector unavailable: {monitor.detector_fallback}")
        self.label = monitor.detector_label
        self.detector = monitor.learned

    def update(self, bgr: npt.NDArray[np.uint8], t: float) -> AdhesionEstimate:
        return self.detector.update(prepare(bgr, ANALYSIS_WIDTH).colour, t)

    def classes(self) -> npt.NDArray[np.int8] | None:
        return self.detector.decision.tile_classes


class LearnedAt:
    """The learned detector's network output (`Learned`, run first on the same frame) under
    another decision line: `on`, and `off` by training's calibration rule (`hysteresis_off`).
    For `--lines`: choosing a line on the train split runs the network once."""

    def __init__(self, source: LearnedAdhesionDetector, label: str, on: float) -> None:
        params = source.decision.params
        self.name = f"learned@{on:g}"
        self.label = f"{label}, on {on:g}"
        self._source = source
        self._decision = TileDecision(dataclasses.replace(params, on=on, off=hysteresis_off(on)))

    def update(self, bgr: npt.NDArray[np.uint8], t: float) -> AdhesionEstimate:
        del bgr  # the source detector has just analysed it
        latest = self._source.latest
        if latest is None:
            return AdhesionEstimate(score=0.0, covered_fraction=0.0)
        return self._decision.update(latest, t)

    def classes(self) -> npt.NDArray[np.int8] | None:
        return self._decision.tile_classes


class Classical:
    name = "classical"
    label = "classical tile heuristic"

    def __init__(self, model: Path | None = None) -> None:
        del model  # nothing learned
        self._detector = AdhesionDetector(AdhesionConfig())

    def update(self, bgr: npt.NDArray[np.uint8], t: float) -> AdhesionEstimate:
        return self._detector.update(prepare(bgr, ANALYSIS_WIDTH).grey, t)

    def classes(self) -> npt.NDArray[np.int8] | None:
        return None


FACTORIES: dict[str, Callable[[Path | None], Detector]] = {
    "learned": Learned,
    "classical": Classical,
}


def tile_cover(mask: npt.NDArray[np.bool_], rows: int, cols: int) -> npt.NDArray[np.float32]:
    """Share of each tile of a rows × cols grid that `mask` covers."""
    small = cv2.resize(mask.astype(np.float32), (cols, rows), interpolation=cv2.INTER_AREA)
    return np.asarray(small, np.float32)


@dataclass
class SoiledResult:
    detector: str
    scene: str
    kind: str
    family: str
    motion: str
    coverage: float
    latency_s: float | None = None
    early_alarms: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    class_right: int = 0


@dataclass
class CleanResult:
    detector: str
    run: str
    scene: str
    minutes: float
    alarms: int = 0
    alarm_s: float = 0.0
    max_covered: float = 0.0


@dataclass
class Report:
    split: str
    detectors: dict[str, str]
    soiled: list[SoiledResult] = field(default_factory=list)
    clean: list[CleanResult] = field(default_factory=list)
    ms_per_frame: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0


def _scene_frames(name: str) -> list[catalog.RGB]:
    entry = catalog.item(name)
    step = 1 if entry.kind == "photo" else max(1, round((entry.fps or 15.0) / 15.0))
    return catalog.load(name, step=step, purpose="eval_adhesion")


def soiled_runs(
    detectors: Sequence[Detector], args: argparse.Namespace, timing: dict[str, list[float]]
) -> Iterator[SoiledResult]:
    families = args.families or splits.names("soiling", args.split)
    scenes = [
        n for n in splits.scenes(args.split) if catalog.item(n).kind == "photo" or args.videos
    ]
    for s, scene in enumerate(scenes[: args.scenes]):
        frames = _scene_frames(scene)
        for k, kind in enumerate(args.kinds):
            for motion in ("drive", "still"):
                seed = args.seed * 1000 + s * 50 + k * 2 + (motion == "still")
                family = families[seed % len(families)]
                spec = DriveSpec(
                    seconds=args.onset + SCORE_TO_S, fps=args.fps, width=640, height=360,
                    light="day", motion=motion,
                    stand_still=((args.onset - 2.0, args.onset + 1.0),) if seed % 3 == 0 else (),
                )  # fmt: skip
                drive = synthesise(frames, spec, seed)
                layer = render_soiling(kind, family, 360, 640, COVERAGE[kind], seed)
                yield from _one_run(
                    detectors, drive, layer, scene, kind, family, motion, args, timing
                )


def _one_run(  # noqa: PLR0917 - one run's context
    detectors: Sequence[Detector],
    drive: Any,
    layer: Any,
    scene: str,
    kind: str,
    family: str,
    motion: str,
    args: argparse.Namespace,
    timing: dict[str, list[float]],
) -> Iterator[SoiledResult]:
    results = [
        SoiledResult(d.name, scene, kind, family, motion, round(float(layer.mask.mean()), 4))
        for d in detectors
    ]
    was = [False] * len(detectors)
    want = CLASSES.index(CLASS_OF[kind])  # type: ignore[index]
    grids: dict[tuple[int, int], tuple[Any, Any]] = {}
    for i in range(drive.frames):
        t = i / drive.spec.fps
        frame = drive.frame(i)
        if t >= args.onset:
            frame = layer.apply(frame)
        bgr = np.ascontiguousarray(frame[..., ::-1])
        for j, detector in enumerate(detectors):
            started = time.perf_counter()
            estimate = detector.update(bgr, t)
            timing[detector.name].append(time.perf_counter() - started)
            r = results[j]
            if t < args.onset:
                r.early_alarms += int(estimate.detected and not was[j])
            elif estimate.detected and r.latency_s is None:
                r.latency_s = round(t - args.onset, 3)
            was[j] = estimate.detected
            mask = estimate.tile_mask
            if mask is None or not args.onset + SCORE_FROM_S <= t < args.onset + SCORE_TO_S:
                continue
            if mask.shape not in grids:
                cover = tile_cover(layer.mask, *mask.shape)
                grids[mask.shape] = (cover >= TRUE_COVER, cover >= ANY_COVER)
            truth, touched = grids[mask.shape]
            r.tp += int((mask & truth).sum())
            r.fp += int((mask & ~touched).sum())
            r.fn += int((~mask & truth).sum())
            classes = detector.classes()
            if classes is not None:
                r.class_right += int(((classes == want) & mask & truth).sum())
    yield from results


def clean_runs(
    detectors: Sequence[Detector], args: argparse.Namespace, timing: dict[str, list[float]]
) -> Iterator[CleanResult]:
    options = BuildOptions(
        split=args.split, seed=args.seed, minutes=args.clean_minutes, fps=args.fps
    )
    for i, (run, scene, seconds) in enumerate(clean_plan(options)):
        rng = np.random.default_rng([args.seed, 23, i])
        stills = []
        t0 = float(rng.uniform(10.0, 25.0))
        while t0 + 10.0 < seconds - 5.0 and run.stand_still:
            stills.append((t0, t0 + 10.0))
            t0 += 10.0 + float(rng.uniform(25.0, 40.0))
        spec = DriveSpec(
            seconds=seconds, fps=args.fps, width=640, height=360, light=run.light,
            stand_still=tuple(stills), passing=run.passing, motion=run.motion,
        )  # fmt: skip
        drive = synthesise(_scene_frames(scene), spec, args.seed * 100 + i)
        results = [CleanResult(d.name, run.name, scene, round(seconds / 60, 3)) for d in detectors]
        was = [False] * len(detectors)
        for f in range(drive.frames):
            t = f / args.fps
            bgr = np.ascontiguousarray(drive.frame(f)[..., ::-1])
            for j, detector in enumerate(detectors):
                started = time.perf_counter()
                estimate = detector.update(bgr, t)
                timing[detector.name].append(time.perf_counter() - started)
                r = results[j]
                r.alarms += int(estimate.detected and not was[j])
                r.alarm_s += (1.0 / args.fps) * estimate.detected
                r.max_covered = max(r.max_covered, estimate.covered_fraction)
                was[j] = estimate.detected
        yield from results


def _ratio(a: int, b: int) -> float:
    return a / b if b else float("nan")


def summarise(report: Report) -> dict[str, Any]:
    rows = []
    keys = sorted(
        {(r.detector, r.kind, r.motion) for r in report.soiled}, key=lambda k: (k[1], k[2], k[0])
    )
    for detector, kind, motion in keys:
        runs = [
            r for r in report.soiled if (r.detector, r.kind, r.motion) == (detector, kind, motion)
        ]
        lat = [r.latency_s for r in runs if r.latency_s is not None]
        tp, fp, fn = (sum(getattr(r, k) for r in runs) for k in ("tp", "fp", "fn"))
        right = sum(r.class_right for r in runs)
        rows.append(
            {
                "detector": detector,
                "kind": kind,
                "camera": "moving" if motion == "drive" else "parked",
                "runs": len(runs),
                "cover": round(statistics.mean(r.coverage for r in runs), 4),
                "detected": len(lat),
                "within_1s": sum(1 for x in lat if x <= 1.0),
                "latency_median_s": round(statistics.median(lat), 2) if lat else None,
                "latency_max_s": max(lat) if lat else None,
                "tile_precision": round(_ratio(tp, tp + fp), 3),
                "tile_recall": round(_ratio(tp, tp + fn), 3),
                "class_right": round(_ratio(right, tp), 3) if detector == "learned" else None,
                "early_alarms": sum(r.early_alarms for r in runs),
            }
        )
    clean = []
    for detector in report.detectors:
        for run in [*(c.name for c in CLEAN_RUNS), "all"]:
            items = [c for c in report.clean if c.detector == detector and run in {"all", c.run}]
            if not items:
                continue
            minutes = sum(c.minutes for c in items)
            alarms = sum(c.alarms for c in items)
            clean.append(
                {
                    "detector": detector,
                    "run": run,
                    "minutes": round(minutes, 1),
                    "alarms": alarms,
                    "per_hour": round(alarms / (minutes / 60), 2) if minutes else None,
                    "max_covered": round(max(c.max_covered for c in items), 4),
                }
            )
    cost = [
        {"detector": name, "ms_per_frame_median": round(ms, 2)}
        for name, ms in report.ms_per_frame.items()
    ]
    return {"soiled": rows, "clean": clean, "cost": cost}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    widths = [max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in rows:
        print("  ".join(_fmt(r[c]).ljust(w) for c, w in zip(columns, widths, strict=True)))


def evaluate(args: argparse.Namespace) -> Report:
    started = time.monotonic()
    detectors = [FACTORIES[name](args.model) for name in args.detectors]
    learned = next((d for d in detectors if isinstance(d, Learned)), None)
    if learned is not None:  # after their source, which analyses each frame first
        detectors += [LearnedAt(learned.detector, learned.label, on) for on in args.lines]
    report = Report(args.split, {d.name: getattr(d, "label", d.name) for d in detectors})
    timing: dict[str, list[float]] = {d.name: [] for d in detectors}
    if args.split == "train":
        context = splits.training("eval_adhesion on the train split")
    else:
        import contextlib  # noqa: PLC0415

        context = contextlib.nullcontext()  # type: ignore[assignment]
    with context:
        for result in soiled_runs(detectors, args, timing):
            report.soiled.append(result)
            if not args.quiet and result.detector == detectors[-1].name:
                print(f"  soiled {result.scene} {result.kind} {result.motion}", file=sys.stderr)
        for clean in clean_runs(detectors, args, timing):
            report.clean.append(clean)
    shared = {d.name for d in detectors if isinstance(d, LearnedAt)}  # no network of their own
    report.ms_per_frame = {
        k: 1000 * statistics.median(v) for k, v in timing.items() if v and k not in shared
    }
    report.wall_s = round(time.monotonic() - started, 1)
    return report


def _lines(parser: argparse.ArgumentParser, text: str) -> list[float]:
    lines = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            on = float(item)
        except ValueError:
            parser.error(f"--lines: {item!r} is not a number")
        if not 0.05 <= on <= 0.999:
            parser.error(f"--lines: {item} is outside 0.05–0.999 (a manifest's `on` range)")
        lines.append(on)
    return sorted(set(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("held_out", "train"), default="held_out")
    parser.add_argument(
        "--detectors", default="classical", help="comma separated: classical, learned"
    )
    parser.add_argument(
        "--model", type=Path, help="the learned detector's model folder (default: the shipped one)"
    )
    parser.add_argument(
        "--lines",
        default="",
        help="also score the learned detector at these decision lines (`on`, comma separated, "
        "each in 0.05–0.999; `off` by training's rule), beside its manifest's line: the network "
        "runs once, so a line can be chosen on the train split in one pass",
    )
    parser.add_argument("--kinds", default=",".join(SOILING_KINDS))
    parser.add_argument(
        "--families",
        help="only these of the split's soiling families, comma separated (e.g. a train family "
        "a leave-one-renderer-out model was not trained on)",
    )
    parser.add_argument("--scenes", type=int, default=99, help="at most this many scenes")
    parser.add_argument("--videos", action="store_true", help="also drive over the split's clips")
    parser.add_argument("--onset", type=float, default=6.0, help="soiling onset, seconds")
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--clean-minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="3 scenes, 3 clean minutes")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    args.detectors = [d.strip() for d in args.detectors.split(",") if d.strip()]
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if bad := sorted(set(args.detectors) - set(FACTORIES)):
        parser.error(f"unknown detectors {bad}; known: {', '.join(FACTORIES)}")
    if bad := sorted(set(args.kinds) - set(SOILING_KINDS)):
        parser.error(f"unknown kinds {bad}; known: {', '.join(SOILING_KINDS)}")
    args.lines = _lines(parser, args.lines)
    if args.lines and "learned" not in args.detectors:
        parser.error("--lines scores the learned detector: add it to --detectors")
    if args.families is not None:
        args.families = [f.strip() for f in args.families.split(",") if f.strip()]
        split_families = splits.names("soiling", args.split)
        if not args.families or set(args.families) - set(split_families):
            parser.error(
                f"soiling families {args.families}: the {args.split} split's are "
                f"{', '.join(split_families)}"
            )
    if args.quick:
        args.scenes, args.clean_minutes = min(args.scenes, 3), min(args.clean_minutes, 3.0)
    report = evaluate(args)
    summary = summarise(report)
    renderers = ", ".join(args.families) if args.families else f"{args.split} renderers"
    print(f"Split: {args.split} scenes × {renderers}; detectors: {report.detectors}")
    print("Soiled (tiles scored 1–5 s after the onset):")
    print_table(summary["soiled"])
    print("Clean footage:")
    print_table(summary["clean"])
    print("Cost per frame (analysis copy → estimate, median):")
    print_table(summary["cost"])
    print(f"({report.wall_s} s)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        command = "python -m tools.eval_adhesion " + shlex.join(
            argv if argv is not None else sys.argv[1:]
        )
        data = {"command": command, "summary": summary, **asdict(report)}
        args.json.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
