"""`python -m tools.gan`: pairs, train, export, bench, speed and ship, the cloud-side commands."""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from tools.gan.degrade import KINDS, Kind


def _config(args: argparse.Namespace) -> Any:
    from tools.gan.train import TrainConfig  # noqa: PLC0415

    values: dict[str, Any] = {}
    if args.config:
        text = args.config.read_text()
        values = tomllib.loads(text) if args.config.suffix == ".toml" else json.loads(text)
    overrides = {
        "arch": args.arch,
        "name": args.name,
        "width": args.width,
        "epochs": args.epochs,
        "steps_per_epoch": args.steps,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "threads": args.threads,
        "data": args.data,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.model_validate(values)


def cmd_train(args: argparse.Namespace) -> int:
    from tools.gan.train import train  # noqa: PLC0415

    config = _config(args)
    out = args.out or Path("build/gan") / config.name
    result = train(
        config,
        out,
        resume=not args.no_resume,
        progress=not args.quiet,
        stop_after=args.stop_after,
    )
    if result.checkpoint is not None:
        print(f"{config.name}: {result.checkpoint} after {result.seconds:.0f} s")
        print(f"generator sha256 {result.digest}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tools.gan.export import MODEL_FILE, check_onnx, export_onnx  # noqa: PLC0415
    from tools.gan.train import load_generator  # noqa: PLC0415

    generator, config = load_generator(args.checkpoint)
    path = args.out or Path("build/gan") / config.name / MODEL_FILE
    export_onnx(generator, path)
    diff = check_onnx(generator, path)
    print(f"{path}: opset 17, dynamic H/W; onnxruntime vs PyTorch max abs diff {diff:.2e}")
    return 0


def _kinds(text: str) -> tuple[Kind, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown degradations {bad}; choose from {KINDS}")
    return kinds  # type: ignore[return-value]  # checked against KINDS above


def cmd_bench(args: argparse.Namespace) -> int:
    from tools.gan import bench  # noqa: PLC0415
    from tools.gan.ship import BUILD, MODELS, SHIPPED, table  # noqa: PLC0415

    methods = bench.baselines(peer=not args.no_peer, log=print)
    cacheable = tuple(methods)
    models = args.model or [MODELS / name / "model.onnx" for name in SHIPPED]
    for path in models:
        methods[path.parent.name] = bench.onnx_model(path)
    report = bench.evaluate(
        methods,
        kinds=args.kinds,
        metric_ssim=not args.no_ssim,
        log=print,
        cache=BUILD / "bench-cache.json",
        cacheable=cacheable,
    )
    print()
    print(table(report))
    if args.examples:
        bench.save_examples(methods, args.examples, kinds=args.kinds)
        print(f"examples: {args.examples}")
    return 0


def cmd_speed(args: argparse.Namespace) -> int:
    from tools.gan import speed  # noqa: PLC0415

    for timing in speed.measure(args.model, threads=args.threads, runs=args.runs):
        print(f"{args.model}: {timing.line()}")
    return 0


def cmd_pairs(args: argparse.Namespace) -> int:
    import cv2  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from tools.gan import data  # noqa: PLC0415
    from tools.gan.degrade import degrade  # noqa: PLC0415

    args.out.mkdir(parents=True, exist_ok=True)
    sample = data.held_out_images()[0] if args.held_out else data.training_images(limit=1)[0]
    tiles = [sample.image] + [degrade(sample.image, k, args.seed) for k in KINDS if k != "clean"]
    row = np.concatenate(tiles, axis=1)
    path = args.out / f"pairs-seed{args.seed}.jpg"
    cv2.imwrite(str(path), row[..., ::-1])
    print(f"{path}: {sample.name}, then {', '.join(k for k in KINDS if k != 'clean')}")
    return 0


def cmd_ship(args: argparse.Namespace) -> int:
    from tools.gan.ship import ship  # noqa: PLC0415

    ship(names=args.only or None, fresh=args.fresh, peer=not args.no_peer)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from tools.gan.models import ARCHITECTURES  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m tools.gan", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="train a generator (torchrun for DDP)")
    tr.add_argument("--config", type=Path, help="TOML or JSON file of TrainConfig fields")
    tr.add_argument("--arch", choices=ARCHITECTURES)
    tr.add_argument("--name")
    tr.add_argument("--width", type=int, help="generator base channels")
    tr.add_argument("--epochs", type=int)
    tr.add_argument("--steps", type=int, help="generator steps per epoch")
    tr.add_argument("--batch-size", type=int)
    tr.add_argument("--seed", type=int)
    tr.add_argument("--threads", type=int, help="CPU threads per process")
    tr.add_argument("--data", choices=("packaged", "photos"), help="training images")
    tr.add_argument("--out", type=Path, help="checkpoint folder (default build/gan/NAME)")
    tr.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    tr.add_argument("--stop-after", type=int, help="stop after this many epochs (resume later)")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=cmd_train)

    ex = sub.add_parser("export", help="export a checkpoint to ONNX and check it")
    ex.add_argument("checkpoint", type=Path)
    ex.add_argument("--out", type=Path)
    ex.set_defaults(func=cmd_export)

    be = sub.add_parser("bench", help="PSNR/SSIM on held-out frames against baselines")
    be.add_argument("--model", type=Path, action="append", help="ONNX model (repeatable)")
    be.add_argument(
        "--kinds", type=_kinds, default=("low_light", "fog", "rain", "blur", "noise", "clean")
    )
    be.add_argument("--no-peer", action="store_true", help="leave out the Zero-DCE++ peer")
    be.add_argument("--no-ssim", action="store_true", help="PSNR only (faster)")
    be.add_argument("--examples", type=Path, help="write side-by-side JPEGs here")
    be.set_defaults(func=cmd_bench)

    sp = sub.add_parser("speed", help="onnxruntime frame time at 1280×720 and 640×480")
    sp.add_argument("model", type=Path)
    sp.add_argument("--threads", type=int, default=2)
    sp.add_argument("--runs", type=int, default=50)
    sp.set_defaults(func=cmd_speed)

    pa = sub.add_parser("pairs", help="write one frame with every degradation, for a look")
    pa.add_argument("--out", type=Path, default=Path("build/gan/pairs"))
    pa.add_argument("--seed", type=int, default=0)
    pa.add_argument("--held-out", action="store_true", help="use a held-out frame")
    pa.set_defaults(func=cmd_pairs)

    sh = sub.add_parser("ship", help="build data, train, export, benchmark the shipped models")
    sh.add_argument("--only", action="append", help="ship only this model (repeatable)")
    sh.add_argument("--fresh", action="store_true", help="discard checkpoints, retrain")
    sh.add_argument("--no-peer", action="store_true", help="benchmark without the peer")
    sh.set_defaults(func=cmd_ship)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
