"""Cloud side: the fixed, versioned held-out suite the fleet loop's gate judges models on.

    python -m tools.suite show SUITE
    python -m tools.suite add SUITE --dataset DATASET      # the data set's held-out uploads
    python -m tools.suite gate SUITE --previous MODEL_DIR --new MODEL_DIR [--margin-db 0.2]

A suite is a folder: `suite.json` and the fleet frames it holds (`fleet/<vehicle>/<id>.jpg`).
It has two parts, scored separately, condition by condition:

- the footage bank's held-out `enhance` set (held-out scenes × held-out renderers: low light,
  fog, lens drops, motion blur with noise, rain streaks, and clean frames judged against
  themselves), built by its own builder at the seed the suite names and checked against the
  sha256 the suite recorded when it was made, so a changed renderer cannot move the goalposts
  unnoticed;
- the fleet's own held-out uploads: good frames from the segments of each vehicle's footage
  that `is_held_out` sets aside (never trained on), each degraded by the same held-out
  renderers (`fleet <condition>` rows).

The suite only grows: `add` copies new held-out frames in (up to `max_fleet_frames`) and bumps
the version, and a frame once in is never removed, so two models judged on version N saw the
same pictures. The gate's report names the version and the suite's sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tools.dataset import Entry, read_dataset

SUITE_FILE = "suite.json"
FORMAT = 1
SEGMENT_S = 5.0
"""A vehicle's footage is cut into segments this long (video time) for the held-out split …"""
HELD_OUT_EVERY = 3
"""… and every this-many-th segment is held out (its neighbours differ by a segment, not by one
frame, so a near-copy of a held-out frame is never trained on)."""
MAX_FLEET_FRAMES = 24
FLEET = "fleet "
"""Prefix of the fleet part's conditions."""
PSNR_CAP_DB = 60.0
"""Scores above this count as this (a model that leaves a clean frame bit-identical scores ∞;
one that changes it invisibly, 70 dB: neither is worse than the other)."""
GATE_MARGIN_DB = 0.2

Scores = dict[str, dict[str, dict[str, float]]]
"""method → condition → {"mean": dB, "worst": dB}."""


class SuiteError(ValueError):
    """A suite that cannot be used as asked; the text says which and why."""


def is_held_out(entry: Entry) -> bool:
    """Whether an upload belongs to the fleet's held-out share (`SEGMENT_S`, `HELD_OUT_EVERY`):
    decided by the frame's own video time, so the same upload is always on the same side."""
    return int(entry.t_video // SEGMENT_S) % HELD_OUT_EVERY == HELD_OUT_EVERY - 1


@dataclass(frozen=True)
class FleetFrame:
    upload_id: str
    vehicle_id: str
    time: float
    sha256: str
    path: str
    """Relative to the suite folder."""
    added_in: int
    """The suite version that added it."""


@dataclass
class Suite:
    folder: Path
    version: int
    footage: dict[str, Any]
    """{"set": "enhance", "split": "held_out", "seed": int, "sha256": str}."""
    fleet: list[FleetFrame] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    max_fleet_frames: int = MAX_FLEET_FRAMES

    @classmethod
    def load(cls, folder: Path) -> Suite:
        path = folder / SUITE_FILE
        try:
            data = json.loads(path.read_text())
            if data.get("format") != FORMAT:
                raise SuiteError(f"{path}: format {data.get('format')!r}, expected {FORMAT}")
            return cls(
                folder,
                int(data["version"]),
                dict(data["footage"]),
                [FleetFrame(**f) for f in data["fleet"]],
                list(data["history"]),
                int(data["max_fleet_frames"]),
            )
        except FileNotFoundError:
            raise SuiteError(
                f"{path}: no suite here; `python -m tools.suite add` makes one"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise SuiteError(f"{path}: not a readable suite ({exc})") from exc

    @classmethod
    def open(cls, folder: Path, *, seed: int = 0) -> Suite:
        """The suite in `folder`, made (version 1: the footage bank's held-out set at `seed`,
        its sha256 recorded, no fleet frames yet) when there is none."""
        if (folder / SUITE_FILE).exists():
            return cls.load(folder)
        from tools.gan.bench import build_enhance_set  # noqa: PLC0415

        built = build_enhance_set("held_out", seed=seed)
        suite = cls(
            folder,
            1,
            {"set": "enhance", "split": "held_out", "seed": seed, "sha256": built.digest},
            history=[{"version": 1, "time": round(time.time(), 3), "added": 0}],
        )
        suite.save()
        return suite

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        data = {
            "format": FORMAT,
            "version": self.version,
            "footage": self.footage,
            "max_fleet_frames": self.max_fleet_frames,
            "fleet": [asdict(f) for f in self.fleet],
            "history": self.history,
        }
        tmp = self.folder / f".{SUITE_FILE}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(self.folder / SUITE_FILE)

    @property
    def digest(self) -> str:
        """sha256 of suite.json (which lists every fleet frame's sha256 and the footage set's):
        what exactly a gate judged on."""
        digest = hashlib.sha256((self.folder / SUITE_FILE).read_bytes())
        return digest.hexdigest()

    def held_out_ids(self) -> set[str]:
        return {f.upload_id for f in self.fleet} | {f.sha256 for f in self.fleet}

    def add(self, dataset: Path) -> int:
        """Copy the data set's held-out good frames that are not in yet (by upload id and by
        picture), up to `max_fleet_frames`; a new version when any were added. Returns how many."""
        known = self.held_out_ids()
        room = self.max_fleet_frames - len(self.fleet)
        new: list[FleetFrame] = []
        for entry in read_dataset(dataset, "good"):
            if len(new) >= room:
                break
            if not is_held_out(entry) or entry.upload_id in known or entry.sha256 in known:
                continue
            relative = f"fleet/{entry.vehicle_id}/{entry.upload_id}.jpg"
            (self.folder / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(dataset / entry.path, self.folder / relative)
            new.append(
                FleetFrame(
                    entry.upload_id,
                    entry.vehicle_id,
                    entry.time,
                    entry.sha256,
                    relative,
                    self.version + 1,
                )
            )
            known |= {entry.upload_id, entry.sha256}
        if new:
            self.version += 1
            self.fleet += new
            self.history.append(
                {"version": self.version, "time": round(time.time(), 3), "added": len(new)}
            )
            self.save()
        return len(new)

    def pairs(self) -> list[Any]:
        """Every (clean, degraded) pair of the suite, as `tools.gan.bench.Pair`s: the footage
        bank's held-out set (its sha256 checked) and the fleet frames under every condition."""
        from tools.footage.sets import ENHANCE_KINDS, enhance_degrade  # noqa: PLC0415
        from tools.gan.bench import Pair, build_enhance_set  # noqa: PLC0415

        built = build_enhance_set("held_out", seed=int(self.footage["seed"]))
        if built.digest != self.footage["sha256"]:
            raise SuiteError(
                f"{self.folder / SUITE_FILE}: the footage bank's held-out set now builds to sha256 "
                f"{built.digest[:12]}…, not the {str(self.footage['sha256'])[:12]}… this suite was "
                "made with (a renderer or a scene changed); judge with the tools that made the "
                "suite, or start a new suite folder"
            )
        pairs = list(built.pairs)
        for frame in self.fleet:
            bgr = cv2.imread(str(self.folder / frame.path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise SuiteError(f"{self.folder / frame.path}: unreadable fleet frame")
            if hashlib.sha256((self.folder / frame.path).read_bytes()).hexdigest() != frame.sha256:
                raise SuiteError(f"{self.folder / frame.path}: sha256 does not match suite.json")
            clean = np.ascontiguousarray(bgr[..., ::-1], dtype=np.uint8)
            seed = int(frame.sha256[:8], 16)
            for k, kind in enumerate(ENHANCE_KINDS):
                scene = f"{frame.vehicle_id}/{frame.upload_id}"
                if kind == "clean":
                    pairs.append(Pair(scene, FLEET + kind, "", clean, clean))
                    continue
                family, degraded = enhance_degrade(clean, kind, "held_out", seed + k)
                pairs.append(Pair(scene, FLEET + kind, family, clean, degraded))
        return pairs

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "sha256": self.digest,
            "footage": self.footage,
            "fleet_frames": len(self.fleet),
            "fleet_vehicles": sorted({f.vehicle_id for f in self.fleet}),
        }


@dataclass
class GateDecision:
    """Champion (the active model) against challenger (the new one) on held-out frames."""

    passed: bool
    reasons: list[str]
    """Why it failed (empty when it passed), one per failed check, naming the condition."""
    improved: list[str]
    """Target conditions on which the challenger's mean is higher."""
    scores: dict[str, dict[str, dict[str, float]]]
    """method → condition → {"mean": dB, "worst": dB} (capped at `PSNR_CAP_DB`)."""
    margin_db: float
    frames: int


def decide(
    scores: dict[str, dict[str, dict[str, float]]],
    *,
    targets: Sequence[str],
    margin_db: float = GATE_MARGIN_DB,
    frames: int = 0,
    require_improvement: bool = True,
) -> GateDecision:
    """Publish only if the challenger ("new") improves one of `targets` and, on every
    condition, neither its mean nor its worst frame falls more than `margin_db` below the
    champion's ("previous"). `require_improvement=False` waives the first check only (a
    re-versioned champion, which the loop's canary-rollback scenario rolls out)."""
    old, new = scores["previous"], scores["new"]
    reasons: list[str] = []
    for kind in old:
        for stat in ("mean", "worst"):
            drop = old[kind][stat] - new[kind][stat]
            if drop > margin_db:
                reasons.append(
                    f"{kind}: {stat} {new[kind][stat]:.2f} dB against {old[kind][stat]:.2f} "
                    f"({-drop:+.2f} dB, margin {margin_db:g})"
                )
    improved = [k for k in targets if k in old and new[k]["mean"] > old[k]["mean"]]
    if not improved and require_improvement:
        reasons.append(
            f"no target condition improved ({', '.join(targets)}: "
            + ", ".join(
                f"{new[k]['mean']:.2f} vs {old[k]['mean']:.2f} dB" for k in targets if k in old
            )
            + ")"
        )
    return GateDecision(not reasons, reasons, improved, scores, margin_db, frames)


def _capped(values: Sequence[float]) -> list[float]:
    return [min(v, PSNR_CAP_DB) for v in values] or [0.0]


def score(suite: Suite, models: dict[str, Path]) -> tuple[Scores, int]:
    """Identity and each named model folder (model.onnx, raw, as `tools.gan.bench` runs it) on
    every pair of the suite: method → condition → mean and worst-frame PSNR (capped); and the
    number of pairs."""
    from tools.gan import bench  # noqa: PLC0415

    pairs = suite.pairs()
    methods = {"identity": bench.identity} | {
        name: bench.onnx_model(folder / "model.onnx") for name, folder in models.items()
    }
    kinds = list(dict.fromkeys(p.kind for p in pairs))
    scores: Scores = {m: {} for m in methods}
    for kind in kinds:
        chosen = [p for p in pairs if p.kind == kind]
        for name, method in methods.items():
            values = _capped([bench.psnr(p.clean, method(p.degraded)) for p in chosen])
            scores[name][kind] = {
                "mean": round(statistics.fmean(values), 2),
                "worst": round(min(values), 2),
            }
    return scores, len(pairs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.suite", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("show", help="print the suite's version and contents")
    show.add_argument("suite", type=Path)
    add = commands.add_parser("add", help="add a data set's held-out good frames (a new version)")
    add.add_argument("suite", type=Path)
    add.add_argument("--dataset", type=Path, required=True)
    add.add_argument("--seed", type=int, default=0, help="footage set seed of a new suite")
    gate = commands.add_parser("gate", help="champion against challenger on the suite")
    gate.add_argument("suite", type=Path)
    gate.add_argument("--previous", type=Path, required=True, help="the active model's folder")
    gate.add_argument("--new", type=Path, required=True, help="the challenger's folder")
    gate.add_argument("--margin-db", type=float, default=0.2)
    gate.add_argument(
        "--targets", default="low_light,fog", help="conditions the challenger must improve"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "show":
            print(json.dumps(Suite.load(args.suite).describe(), indent=1))
        elif args.command == "add":
            suite = Suite.open(args.suite, seed=args.seed)
            added = suite.add(args.dataset)
            print(f"{args.suite}: {added} frames added; version {suite.version}")
        else:
            suite = Suite.load(args.suite)
            scores, pairs = score(suite, {"previous": args.previous, "new": args.new})
            decision = decide(
                scores,
                targets=[t for t in args.targets.split(",") if t],
                margin_db=args.margin_db,
                frames=pairs,
            )
            print(json.dumps({"suite": suite.describe(), **asdict(decision)}, indent=1))
            return 0 if decision.passed else 1
    except (SuiteError, OSError, ValueError) as exc:
        print(f"suite: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
