"""Soiling detector command line: build the training set, train, calibrate, export, ship.

    python -m tools.soilnet ship                       # models/soilnet/ as shipped (≈ 1 h on 2 cores)
    python -m tools.soilnet train --drives 8 --seconds 10 --epochs 2 --out build/soilnet-try

`ship` = `train` with the shipped budget into `models/soilnet/`, then the held-out evaluation
(`tools.eval_adhesion`) whose figures go into the model card. Exit status 0, or 2 with one line.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import torch

from tools.footage import splits
from tools.footage.soiling import SOILING_KINDS, SoilingKind
from tools.soilnet import card
from tools.soilnet.data import (
    Samples,
    build_training_set,
    cached,
    default_workers,
    source_digest,
    train_families,
    train_scenes,
)
from tools.soilnet.train import (
    TrainConfig,
    calibrate,
    check_dropped,
    clean_frame_alarms,
    export_onnx,
    kind_balance,
    macs,
    parameters,
    predict,
    save_checkpoint,
    soiling_balance,
    tile_scores,
    train,
)
from vehicle_agent.compat import UTC
from vehicle_agent.enhance.manifest import MANIFEST_FILE, sha256_file
from vehicle_agent.quality.settings import AdhesionConfig
from vehicle_agent.quality.soilnet import CHANNELS, CLASSES, FEATURE_VERSION, LABEL_COVER, TILE
from vehicle_agent.quality.soilnet_runtime import SoilNetManifest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "models" / "soilnet"
VERSION = "1.0.0"
ALARM_FRACTION = AdhesionConfig().alarm_fraction


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def _progress(what: str, total: int) -> Any:
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        if done[0] == total or done[0] % max(1, total // 10) == 0:
            log(f"{what}: {done[0]}/{total} drives")

    return advance


def run(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    started = time.monotonic()
    workers = args.workers or default_workers()
    log(f"training drives: {args.drives} × {args.seconds} s (train scenes and renderers)")

    def samples(what: str, drives: int, seed: int) -> Samples:
        def build(x_path: Path | None = None) -> Samples:
            with splits.training("soilnet training") as usage:
                built = build_training_set(
                    drives, seed, args.seconds, args.net_width, args.sample_every, workers,
                    _progress(what, drives), x_path, args.label_cover, args.families,
                    args.leave_out_scenes, args.street_scenes, args.video_share,
                )  # fmt: skip
            assert not usage.held_out()  # noqa: S101 - note_use raised already if it were not so
            return built

        if args.cache is None:
            return build()
        key = (
            f"{drives}x{args.seconds:g}s-seed{seed}-w{args.net_width}-every{args.sample_every}"
            f"-cover{args.label_cover:g}"
        )
        if args.families is not None:
            key += "-" + "+".join(args.families)
        if args.leave_out_scenes:
            key += "-without-" + "+".join(args.leave_out_scenes)
        if args.street_scenes:
            key += f"-streets{args.street_scenes}"
        if args.video_share:
            key += f"-videos{args.video_share:g}"
        return cached(args.cache / f"v{FEATURE_VERSION}-{source_digest()}-{key}", build, log)

    data = samples("train set", args.drives, args.seed)
    val = samples("validation set", args.val_drives, args.seed + 1)
    soiled = float((data.y > 0).mean())
    log(f"samples: train {len(data.x)} ({soiled:.1%} soiled tiles), validation {len(val.x)}")
    weights = soiling_balance(data.y) if args.balance == "soiling" else (1.0, 1.0, 1.0, 1.0)
    if args.balance == "soiling":
        log(f"class weights (clean, transparent, semi-transparent, opaque): {weights}")
    kind_weights = None
    if args.balance == "kind":
        if data.kind is None:
            raise ValueError("--balance kind: these samples do not record the soiling kinds")
        kind_weights = kind_balance(data.y, data.kind)
        log(f"kind weights (clean, {', '.join(SOILING_KINDS)}): {kind_weights}")
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, width=args.width,
        seed=args.seed, threads=args.threads, class_weights=weights, dropped=args.drop_channels,
        kind_weights=kind_weights,
    )  # fmt: skip
    result = train(data, config, log)
    probs = predict(result.net, val.x)
    on, off = calibrate(probs, val.y)
    scores = tile_scores(probs, val.y, on)
    alarms = clean_frame_alarms(probs, val.y, on, ALARM_FRACTION)
    log(f"calibrated: on {on}, off {off}; validation tiles precision {scores.precision:.3f} "
        f"recall {scores.recall:.3f} {scores.per_class_recall}; clean frames over the alarm "
        f"line {alarms:.2%}")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(result.net, out / "checkpoint.pt", config, {"on": on, "off": off})
    diff = export_onnx(result.net, out / "model.onnx", height=112, width=args.net_width)
    log(f"exported ONNX, max |onnxruntime − torch| = {diff:.2e}")
    command = "python -m tools.soilnet " + shlex.join(sys.argv[1:])
    manifest = SoilNetManifest(
        name="soilnet",
        version=VERSION,
        sha256=sha256_file(out / "model.onnx"),
        feature_version=FEATURE_VERSION,
        channels=CHANNELS,
        net_width=args.net_width,
        tile=TILE,
        classes=CLASSES,
        decision={"on": on, "off": off},  # type: ignore[arg-type]
        opset=17,
        training={
            "command": command,
            "data": (
                f"{args.drives} synthesised drives of {args.seconds} s over the footage bank's "
                f"train scenes ({', '.join(train_scenes(args.leave_out_scenes))})"
                + (
                    f" and {args.street_scenes} streets composed from their photos"
                    if args.street_scenes
                    else ""
                )
                + (
                    f", about {args.video_share:.0%} of the drives over the clips"
                    if args.video_share
                    else ""
                )
                + " with soiling from "
                f"the train renderer families ({', '.join(train_families(args.families))}); "
                f"{args.val_drives} more for validation and calibration"
            ),
            "config": asdict(config),
            "samples": len(data.x),
            "soiled_tile_share": round(soiled, 4),
            "losses": [round(v, 4) for v in result.losses],
            "seconds": round(time.monotonic() - started, 1),
            "framework": f"torch {torch.__version__}",
        },
        metrics={
            "parameters": float(parameters(result.net)),
            "macs_192x112": float(macs(result.net, 112, args.net_width)),
            "onnx_max_abs_diff": diff,
            "val_tile_precision": round(scores.precision, 4),
            "val_tile_recall": round(scores.recall, 4),
            "val_clean_frame_alarms": round(alarms, 5),
        },
        created=datetime.now(UTC).replace(microsecond=0),
    )
    (out / MANIFEST_FILE).write_text(
        json.dumps(json.loads(manifest.model_dump_json()), indent=2, sort_keys=True) + "\n"
    )
    log(f"wrote {out} in {time.monotonic() - started:.0f} s")
    return {"manifest": manifest, "validation": scores}


def _separability(args: argparse.Namespace) -> int:
    from tools.soilnet import separability  # noqa: PLC0415

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in SOILING_KINDS]
    if bad or not kinds:
        raise ValueError(f"--kinds {args.kinds!r}: choose from {', '.join(SOILING_KINDS)}")
    net = None
    if args.model is not None:
        from vehicle_agent.quality.soilnet_runtime import (  # noqa: PLC0415
            DetectorError,
            open_tile_net,
            read_detector,
        )

        try:
            net = open_tile_net(read_detector(args.model), "onnxruntime", threads=2)
        except DetectorError as exc:
            raise ValueError(str(exc)) from exc
    rows = separability.measure(cast("list[SoilingKind]", kinds), args.scenes, net)
    separability.print_table(rows, net is not None)
    return 0


_A = TypeVar("_A")
_R = TypeVar("_R")


def _items(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _refused_now(check: Callable[[_A], _R], value: _A) -> _R:
    """`check(value)`, its ValueError an argparse error: a bad list is refused when the command
    line is read, not after the samples are built."""
    try:
        return check(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _channel_list(text: str) -> tuple[int, ...]:
    try:
        channels = tuple(int(part) for part in _items(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of channels"
        ) from None
    return _refused_now(check_dropped, channels)


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is below 0")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value:g} is not in [0, 1]")
    return value


def _family_list(text: str) -> tuple[str, ...]:
    return tuple(_refused_now(train_families, _items(text)))


def _scene_list(text: str) -> tuple[str, ...]:
    names = tuple(_items(text))
    _refused_now(train_scenes, names)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.soilnet", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("train", "ship"):
        p = sub.add_parser(name)
        ship = name == "ship"
        p.add_argument("--out", type=Path, default=SHIPPED if ship else None, required=not ship)
        p.add_argument("--drives", type=int, default=160 if ship else 8)
        p.add_argument("--val-drives", type=int, default=24 if ship else 2)
        p.add_argument("--seconds", type=float, default=20.0 if ship else 8.0)
        p.add_argument("--epochs", type=int, default=14 if ship else 2)
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--lr", type=float, default=6e-3)
        p.add_argument("--width", type=int, default=24, help="channels of the middle layers")
        p.add_argument("--net-width", type=int, default=192, help="input width (pixels)")
        p.add_argument(
            "--sample-every", type=int, default=3, help="keep every n-th frame (at 15 fps)"
        )
        p.add_argument(
            "--label-cover",
            type=float,
            default=LABEL_COVER,
            help="share of a tile soiling must cover to be taught as soiled (under a tenth: clean)",
        )
        p.add_argument(
            "--drop-channels",
            type=_channel_list,
            default=(),
            metavar="LIST",
            help="feature channels the network is not given, comma-separated (e.g. 0,1,2,3,12)",
        )
        p.add_argument(
            "--families",
            type=_family_list,
            metavar="LIST",
            help="train soiling families to draw from, comma-separated (default: all of them)",
        )
        p.add_argument(
            "--leave-out-scenes",
            type=_scene_list,
            default=(),
            metavar="LIST",
            help="train scenes no drive goes over, comma-separated (judge on them with "
            "tools.eval_adhesion --split train)",
        )
        p.add_argument(
            "--street-scenes",
            type=_non_negative,
            default=0,
            metavar="N",
            help="also drive over N streets composed from the train photos "
            "(tools.footage.streets), interleaved with the photos",
        )
        p.add_argument(
            "--video-share",
            type=_share,
            default=0.0,
            metavar="SHARE",
            help="about this share of the drives goes over the train scenes that are clips "
            "(a world moving by itself while the camera may stand; default 0: cycled with "
            "the rest)",
        )
        p.add_argument("--seed", type=int, default=2026)
        p.add_argument("--workers", type=int, default=0, help="data processes (0: cores)")
        p.add_argument("--threads", type=int, default=2, help="torch threads")
        p.add_argument("--eval-json", type=Path, help="held-out evaluation JSON for the card")
        p.add_argument(
            "--balance",
            choices=("none", "soiling", "kind"),
            default="none",
            help="'soiling': weight the soiling classes by inverse frequency among soiled tiles; "
            "'kind': weight the soiling kinds alike (drops and mist share the transparent class)",
        )
        p.add_argument(
            "--cache", type=Path, help="keep the built samples here and reuse them (same options)"
        )
    card_p = sub.add_parser(
        "card", help="rewrite MODEL_CARD.md from the manifest and an evaluation"
    )
    card_p.add_argument("--model", type=Path, default=SHIPPED)
    card_p.add_argument("--eval-json", type=Path, required=True)
    sep_p = sub.add_parser(
        "separability",
        help="per-tile AUC of each feature channel (and a model) on train scenes and renderers",
    )
    sep_p.add_argument("--model", type=Path, help="a trained model folder: its column too")
    sep_p.add_argument("--kinds", default="drops,mud", help="soiling kinds, comma-separated")
    sep_p.add_argument("--scenes", type=int, default=4, help="train photos driven over")
    args = parser.parse_args(argv)
    try:
        if args.command == "separability":
            return _separability(args)
        if args.command == "card":
            card.write(args.model, json.loads(args.eval_json.read_text()))
            return 0
        np.seterr(all="ignore")
        run(args, args.out)
        if args.eval_json is not None:
            card.write(args.out, json.loads(args.eval_json.read_text()))
    except (ValueError, OSError, splits.HeldOutError) as exc:
        print(f"soilnet: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
