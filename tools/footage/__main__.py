"""Footage bank command line: list the bank and its split, build a named set on disk.

    python -m tools.footage list                      # every item: split, licence, size, motion
    python -m tools.footage fetch                     # extract opencv-doc's files into the cache
    python -m tools.footage sets                      # the named sets
    python -m tools.footage build adhesion-moving --out DIR [--seed 0] [--split held_out]
    python -m tools.footage build adhesion-clean --out DIR --minutes 30
    python -m tools.footage build enhance --out DIR

Exit status: 0 built, 2 bad arguments or a set that cannot be built (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tools.footage import catalog, splits
from tools.footage.sets import SETS, BuildOptions, SetError, build, digest_tree


def _list() -> int:
    print(f"{'name':17} {'split':9} {'kind':5} {'size':9} {'fps':>5} {'frames':>6} moving  licence")
    for entry in catalog.CATALOG:
        fps = f"{entry.fps:.1f}" if entry.fps else "-"
        print(
            f"{entry.name:17} {splits.SCENE_SPLIT[entry.name]:9} {entry.kind:5} "
            f"{entry.width}x{entry.height:<5} {fps:>5} {entry.frames:>6} "
            f"{'yes' if entry.moving else 'no':7} {entry.licence.split(' (')[0]}"
        )
    for kind in ("soiling", "degradation"):
        train, held = splits.names(kind, "train"), splits.names(kind, "held_out")
        print(f"{kind} renderers: train {', '.join(train)}; held out {', '.join(held)}")
    return 0


def _sets() -> int:
    for name, kind in SETS.items():
        print(f"{name:16} {kind.about}")
    return 0


def _build(args: argparse.Namespace) -> int:
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    options = BuildOptions(
        split=args.split,
        seed=args.seed,
        scene=args.scene,
        seconds=args.seconds,
        fps=args.fps,
        width=args.width,
        height=args.height,
        minutes=args.minutes,
        kinds=kinds,
        coverage=args.coverage / 100.0,
        light=args.light,
    )
    kind = SETS.get(args.name)
    if kind is None:
        raise SetError(f"unknown set {args.name!r}; known: {', '.join(SETS)}")
    total = kind.size(options)
    started = time.monotonic()
    columns = (
        TextColumn(f"{args.name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(kind.unit),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True, disable=args.quiet) as progress:
        task = progress.add_task(args.name, total=total)
        build(args.name, args.out, options, lambda n: progress.advance(task, n))
    took = time.monotonic() - started
    print(f"{args.name}: {total} {kind.unit} in {took:.1f} s → {args.out}")
    print(f"sha256 of the set: {digest_tree(args.out)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.footage", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every item with its split and licence")
    sub.add_parser("sets", help="the named sets")
    sub.add_parser("fetch", help="make every file-backed item readable (extracts opencv-doc)")
    b = sub.add_parser("build", help="build a named set into a new folder")
    b.add_argument("name", help=f"one of {', '.join(SETS)}")
    b.add_argument("--out", type=Path, required=True, help="new or empty folder")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--split", choices=("held_out", "train"), default="held_out")
    b.add_argument("--scene", help="one catalog item instead of the split's default")
    b.add_argument("--seconds", type=float, default=60.0, help="adhesion-moving: drive length")
    b.add_argument("--minutes", type=float, default=30.0, help="adhesion-clean: total length")
    b.add_argument("--fps", type=float, default=15.0)
    b.add_argument("--width", type=int, default=640)
    b.add_argument("--height", type=int, default=360)
    b.add_argument("--kinds", default="drops,mud,dust", help="adhesion-moving: soiling events")
    b.add_argument("--coverage", type=float, default=3.0, help="adhesion-moving: percent of frame")
    b.add_argument("--light", choices=("day", "dusk", "tunnel", "night", "mixed"), default="day")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            return _list()
        if args.command == "sets":
            return _sets()
        if args.command == "fetch":
            for path in catalog.fetch():
                print(path)
            return 0
        return _build(args)
    except (SetError, catalog.FootageError, splits.HeldOutError, ValueError, KeyError) as exc:
        print(f"footage: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
