"""`python -m tools.gan`: pairs, train, export, bench, speed, ship, and the extra methods
(burst, noise-gan, transfer, unpaired): the cloud-side commands."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from tools.gan.degrade import KINDS, Kind
from vehicle_agent.compat import tomllib


def _config(args: argparse.Namespace) -> Any:
    from tools.gan.train import TrainConfig  # noqa: PLC0415

    values: dict[str, Any] = {}
    if getattr(args, "shipped", None):
        from tools.gan.ship import SHIPPED  # noqa: PLC0415

        if args.shipped not in SHIPPED:
            raise SystemExit(
                f"tools.gan train: --shipped {args.shipped!r}: one of {sorted(SHIPPED)}"
            )
        values = SHIPPED[args.shipped].config.model_dump(mode="json")
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
    if args.init_from is not None and not args.init_from.is_file():
        raise SystemExit(f"tools.gan train: --init-from {args.init_from}: no such file")
    out = args.out or Path("build/gan") / config.name
    images = None
    if args.dataset is not None:
        images = _dataset_images(args.dataset, "good", out)
    result = train(
        config,
        out,
        images=images,
        resume=not args.no_resume,
        progress=not args.quiet,
        stop_after=args.stop_after,
        init_from=args.init_from,
    )
    if result.checkpoint is not None:
        print(f"{config.name}: {result.checkpoint} after {result.seconds:.0f} s")
        print(f"generator sha256 {result.digest}")
    return 0


DATASET_FILE = "dataset.json"
"""Written beside a checkpoint trained on a fleet data set: where the data came from."""


def _dataset_images(root: Path, label: Any, out: Path) -> list[Any]:
    """The `label` frames of a fleet data set (`tools.fleet collect`), and its provenance
    written to `out/dataset.json` for the manifest."""
    from tools.dataset import describe, load_images, read_dataset  # noqa: PLC0415

    entries = read_dataset(root)
    chosen = [e for e in entries if e.label == label]
    if not chosen:
        raise SystemExit(f"error: {root} has no {label} frames")
    out.mkdir(parents=True, exist_ok=True)
    provenance = {"path": str(root.resolve()), **describe(entries)}
    (out / DATASET_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    return load_images(root, chosen)


def cmd_export(args: argparse.Namespace) -> int:
    from tools.dataset import paired_data_line  # noqa: PLC0415
    from tools.gan.export import (  # noqa: PLC0415
        MODEL_FILE,
        OPSET,
        ManifestInfo,
        check_onnx,
        export_onnx,
        write_manifest,
    )
    from tools.gan.train import load_generator  # noqa: PLC0415

    generator, config = load_generator(args.checkpoint)
    path = args.out or Path("build/gan") / config.name / MODEL_FILE
    export_onnx(generator, path)
    diff = check_onnx(generator, path)
    print(f"{path}: opset 17, dynamic H/W; onnxruntime vs PyTorch max abs diff {diff:.2e}")
    if args.version:
        training: dict[str, Any] = {
            "architecture": config.arch,
            "data": f"tools.gan data '{config.data}'",
            "seed": config.seed,
            "config": config.model_dump(mode="json"),
            "command": "python -m tools.gan train/export",
        }
        provenance = args.checkpoint.parent / DATASET_FILE
        if provenance.is_file():
            dataset = json.loads(provenance.read_text())
            training["dataset"] = dataset
            training["data"] = paired_data_line(dataset["path"], dataset)
        info = ManifestInfo(
            name=config.name,
            version=args.version,
            task=args.task,
            stride=generator.stride,
            opset=OPSET,
            training=training,
            metrics={"onnx_max_abs_diff": diff},
        )
        write_manifest(path.parent, info)
        print(f"{path.parent / 'manifest.json'}: {config.name} {args.version} (sign it to publish)")
    return 0


def _kinds(text: str) -> tuple[Kind, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown degradations {bad}; choose from {KINDS}")
    return kinds  # type: ignore[return-value]  # checked against KINDS above


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number ≥ 1, got {value}")
    return value


def _gating_entry(value: str) -> tuple[str, str]:
    """'condition=choice', checked as `[enhance.gating]` checks its entries."""
    from pydantic import ValidationError  # noqa: PLC0415

    from vehicle_agent.enhance.settings import EnhanceConfig  # noqa: PLC0415

    condition, sep, choice = value.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{value!r}: expected CONDITION=CHOICE")
    try:
        EnhanceConfig(gating={condition: choice})
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"]
        raise argparse.ArgumentTypeError(f"{value!r}: {reason}") from None
    return condition, choice


def _quality_entry(value: str) -> tuple[str, float]:
    """'setting=number' of `[quality]` (for example low_light_enter=70). The entries together are
    checked by `QualityConfig` once all are read (`_quality_overrides`): one line alone may sit
    across the default of its pair."""
    from vehicle_agent.quality.settings import QualityConfig  # noqa: PLC0415

    key, sep, number = value.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{value!r}: expected SETTING=NUMBER")
    if key not in QualityConfig.model_fields:
        raise argparse.ArgumentTypeError(f"{value!r}: [quality] has no setting {key!r}")
    try:
        return key, float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: {number!r} is not a number") from None


def _quality_overrides(entries: list[tuple[str, float]] | None) -> dict[str, float]:
    """The `--quality` entries as one override of `[quality]`; SystemExit (2) with pydantic's
    reason when together they are not a valid `[quality]` table."""
    from pydantic import ValidationError  # noqa: PLC0415

    from vehicle_agent.quality.settings import QualityConfig  # noqa: PLC0415

    quality = dict(entries or ())
    try:
        QualityConfig.model_validate(quality)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "[quality]"
        print(f"tools.gan bench: --quality {where}: {error['msg']}", file=sys.stderr)
        raise SystemExit(2) from None
    return quality


def cmd_bench(args: argparse.Namespace) -> int:
    if args.legacy_frames:
        return _bench_legacy(args)
    from tools.gan import bench  # noqa: PLC0415
    from tools.gan.ship import BUILD, MODELS, SHIPPED  # noqa: PLC0415

    kinds = _footage_kinds(args.kinds) if args.kinds else bench.FOOTAGE_KINDS
    quality = _quality_overrides(args.quality)  # before the set is built: it takes a while
    if args.examples:
        print("--examples is for --legacy-frames; the footage set's images are in --set folders")
    if args.set is not None:
        if args.split != "held_out" or args.scene is not None:
            raise SystemExit("tools.gan bench: --set reads a built set; drop --split/--scene")
        footage = bench.read_enhance_set(args.set, kinds)
    else:
        footage = bench.build_enhance_set(args.split, kinds, seed=args.seed, scene=args.scene)
    print(
        f"enhance set ({footage.split}, seed {footage.seed}): {len(footage.pairs)} pairs, "
        f"sha256 {footage.digest[:12]}"
    )
    models = args.model or [MODELS / name / "model.onnx" for name in SHIPPED]
    methods, skipped = bench.footage_methods(
        models,
        peer=not args.no_peer,
        gating=dict(args.gating or ()),
        quality=quality,
        log=print,
    )
    try:
        report = bench.evaluate_footage(
            methods,
            footage,
            kinds=kinds,
            metric_ssim=not args.no_ssim,
            log=print,
            cache=BUILD / "bench-cache.json",
            cacheable=("identity", "CLAHE", "auto-gamma", bench.PEER),
            skipped=skipped,
        )
    finally:
        bench.close_methods(methods)
    print()
    print(report.table())
    print()
    print(report.timing())
    out = args.json or BUILD.parent / "bench-enhance.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {"command": shlex.join(["python", "-m", "tools.gan", *args.argv]), **report.as_dict()}
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


def _footage_kinds(text: str) -> tuple[str, ...]:
    from tools.gan.bench import FOOTAGE_KINDS  # noqa: PLC0415

    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in FOOTAGE_KINDS]
    if bad or not kinds:
        raise SystemExit(f"tools.gan bench: unknown kinds {bad}; choose from {FOOTAGE_KINDS}")
    return kinds


def _bench_legacy(args: argparse.Namespace) -> int:
    """The older bench: tools.gan.data held-out frames degraded by tools.gan.degrade."""
    from tools.gan import bench  # noqa: PLC0415
    from tools.gan.ship import BUILD, MODELS, SHIPPED, table  # noqa: PLC0415

    try:
        kinds = _kinds(args.kinds) if args.kinds else bench.EVAL_KINDS
    except argparse.ArgumentTypeError as exc:
        raise SystemExit(f"tools.gan bench: {exc}") from None
    methods = bench.baselines(peer=not args.no_peer, log=print)
    cacheable = tuple(methods)
    models = args.model or [MODELS / name / "model.onnx" for name in SHIPPED]
    for path in models:
        methods[path.parent.name] = bench.onnx_model(path)
    report = bench.evaluate(
        methods,
        kinds=kinds,
        metric_ssim=not args.no_ssim,
        log=print,
        cache=BUILD / "bench-cache.json",
        cacheable=cacheable,
    )
    print()
    print(table(report))
    if args.examples:
        bench.save_examples(methods, args.examples, kinds=kinds)
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

    try:
        ship(
            names=args.only or None,
            fresh=args.fresh,
            peer=not args.no_peer,
            weights_from=args.weights_from,
        )
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"tools.gan ship: {exc}") from None
    return 0


def cmd_burst(args: argparse.Namespace) -> int:
    from tools.gan import bursts, data  # noqa: PLC0415
    from tools.gan.runtime import Runtime  # noqa: PLC0415

    config = bursts.BurstConfig(
        dead_threshold=args.dead_threshold, z=args.z, low=args.low, high=args.high
    )
    if args.input is not None:
        try:
            frames = bursts.read_folder(args.input)
            dark = bursts.read_folder(args.dark) if args.dark is not None else []
            truth = bursts.truth_frame(frames, dark, config)
        except ValueError as exc:
            raise data.DataError(str(exc)) from exc
        out = args.out if args.out.suffix else args.out / "truth.png"
        bursts.save(out, truth.image)
        print(
            f"{out}: mean of {len(truth.kept)} of {len(frames)} frames "
            f"(dropped {list(truth.dropped)}), {truth.defects} defective pixels interpolated, "
            f"{truth.clipped} clipped values replaced"
        )
        return 0
    sensor = bursts.SensorConfig(frames=args.frames, dark_frames=args.dark_frames)
    runtime = Runtime.start(threads=1, progress=not args.quiet)
    try:
        samples = data.held_out_images()[: args.scenes]
        rows = bursts.benchmark(samples, sensor, runtime, config, seed=args.seed)
    finally:
        runtime.close()
    if runtime.env.main:
        bursts.write_report(args.out / "bursts.json", rows)
        mean = bursts.summary(rows)
        print(bursts.table(mean))
        print(
            f"{len(rows)} scenes; flickering frames dropped "
            f"{mean['flickering frames dropped']:.2f} of {sensor.flicker_frames}, good frames "
            f"dropped {mean['good frames dropped']:.2f}; defects found "
            f"{mean['defects found']:.1f}, planted {mean['defects planted']:.1f} (means)"
        )
        print(f"per scene: {args.out / 'bursts.json'}")
    return 0


def _method_config(args: argparse.Namespace, model: Any, overrides: dict[str, Any]) -> Any:
    """A method's config: the --config file's fields, then the flags that were given."""
    values: dict[str, Any] = {}
    if getattr(args, "shipped", None):
        from tools.gan.ship import SHIPPED  # noqa: PLC0415

        if args.shipped not in SHIPPED:
            raise SystemExit(
                f"tools.gan train: --shipped {args.shipped!r}: one of {sorted(SHIPPED)}"
            )
        values = SHIPPED[args.shipped].config.model_dump(mode="json")
    if args.config:
        if not args.config.is_file():
            from tools.gan.data import DataError  # noqa: PLC0415

            raise DataError(f"--config {args.config}: no such file")
        text = args.config.read_text()
        values = tomllib.loads(text) if args.config.suffix == ".toml" else json.loads(text)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return model.model_validate(values)


def cmd_noise_gan(args: argparse.Namespace) -> int:
    from tools.gan import noise_gan  # noqa: PLC0415
    from tools.gan.runtime import Runtime  # noqa: PLC0415

    config = _method_config(
        args,
        noise_gan.NoiseGanConfig,
        {
            "gan_steps": args.gan_steps,
            "denoise_steps": args.denoise_steps,
            "real_scenes": args.real_scenes,
            "captures": args.captures,
            "crop": args.crop,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "threads": args.threads,
            "references": False if args.no_references else None,
        },
    )
    runtime = Runtime.start(config.threads, progress=not args.quiet)
    try:
        result = noise_gan.run(config, args.out, runtime)
    finally:
        runtime.close()
    if result is not None:
        print(noise_gan.table(result))
        print(f"{args.out / 'noise-gan.json'}; seconds {result.seconds}")
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    from tools.gan import transfer  # noqa: PLC0415
    from tools.gan.runtime import Runtime  # noqa: PLC0415

    config = _method_config(
        args,
        transfer.TransferConfig,
        {
            "pretrain_steps": args.pretrain_steps,
            "steps": args.steps,
            "width": args.width,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "threads": args.threads,
        },
    )
    runtime = Runtime.start(config.threads, progress=not args.quiet)
    try:
        result = transfer.run(config, args.out, runtime)
    finally:
        runtime.close()
    if result is not None:
        print(result.report.table())
        print(f"{args.out / 'transfer.json'}; seconds {result.seconds}")
    return 0


def cmd_unpaired(args: argparse.Namespace) -> int:
    from tools.gan import unpaired  # noqa: PLC0415
    from tools.gan.runtime import Runtime  # noqa: PLC0415

    config = _method_config(
        args,
        unpaired.UnpairedConfig,
        {
            "steps": args.steps,
            "width": args.width,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "threads": args.threads,
            "paired_baseline": False if args.no_paired else None,
        },
    )
    images = poor = None
    if args.dataset is not None:
        images = _dataset_images(args.dataset, "good", args.out)
        poor = _dataset_images(args.dataset, "poor", args.out)
    runtime = Runtime.start(config.threads, progress=not args.quiet)
    try:
        result = unpaired.run(config, args.out, runtime, images=images, poor_frames=poor)
    finally:
        runtime.close()
    if result is not None:
        print(result.report.table())
        print(f"{args.out / 'unpaired.json'}; seconds {result.seconds}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from tools.gan.models import ARCHITECTURES  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m tools.gan", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="train a generator (torchrun for DDP)")
    tr.add_argument("--config", type=Path, help="TOML or JSON file of TrainConfig fields")
    tr.add_argument(
        "--shipped", metavar="NAME", help="start from the config a shipped model is trained with"
    )
    tr.add_argument("--arch", choices=ARCHITECTURES)
    tr.add_argument("--name")
    tr.add_argument("--width", type=int, help="generator base channels")
    tr.add_argument("--epochs", type=int)
    tr.add_argument("--steps", type=int, help="generator steps per epoch")
    tr.add_argument("--batch-size", type=int)
    tr.add_argument("--seed", type=int)
    tr.add_argument("--threads", type=int, help="CPU threads per process")
    tr.add_argument("--data", choices=("packaged", "photos", "bank"), help="training images")
    tr.add_argument(
        "--dataset",
        type=Path,
        help="train on a fleet data set (tools.fleet collect): its good frames, paired by "
        "degradation; its provenance goes to the checkpoint folder and the manifest",
    )
    tr.add_argument("--out", type=Path, help="checkpoint folder (default build/gan/NAME)")
    tr.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    tr.add_argument("--stop-after", type=int, help="stop after this many epochs (resume later)")
    tr.add_argument(
        "--init-from",
        type=Path,
        metavar="ONNX",
        help="fine-tune: start the generator from this exported model of the same architecture",
    )
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=cmd_train)

    ex = sub.add_parser("export", help="export a checkpoint to ONNX and check it")
    ex.add_argument("checkpoint", type=Path)
    ex.add_argument("--out", type=Path)
    ex.add_argument(
        "--version", help="also write manifest.json with this version (a folder to sign)"
    )
    ex.add_argument(
        "--task",
        default="general",
        choices=("low_light", "dehaze", "derain", "denoise", "deblur", "general"),
        help="the manifest's task (default general)",
    )
    ex.set_defaults(func=cmd_export)

    be = sub.add_parser(
        "bench",
        help="PSNR/SSIM of baselines, models and the default chain on held-out footage",
    )
    be.add_argument("--model", type=Path, action="append", help="ONNX model (repeatable)")
    be.add_argument(
        "--kinds",
        help="comma-separated rows: low_light, fog, lens_drops, motion_blur, rain_streaks, "
        "clean (default all); with --legacy-frames: low_light, fog, rain, blur, noise, clean",
    )
    be.add_argument(
        "--split",
        choices=("held_out", "train"),
        default="held_out",
        help="footage split (train: a sanity check on what training may see)",
    )
    be.add_argument("--seed", type=int, default=0, help="the enhance set's seed")
    be.add_argument("--scene", help="only this scene of the split (a quick look)")
    be.add_argument("--set", type=Path, help="read a built enhance set folder instead")
    be.add_argument("--json", type=Path, help="default: build/bench-enhance.json")
    be.add_argument(
        "--legacy-frames",
        action="store_true",
        help="the old bench: tools.gan.data held-out frames, tools.gan.degrade renderers",
    )
    be.add_argument(
        "--gating",
        type=_gating_entry,
        action="append",
        metavar="CONDITION=CHOICE",
        help="also run the chain with this entry over the default gating table, beside the "
        "default chain (repeatable; CHOICE a model name, 'classical' or 'none')",
    )
    be.add_argument(
        "--quality",
        type=_quality_entry,
        action="append",
        metavar="SETTING=NUMBER",
        help="also run the chain with this [quality] setting (for example low_light_enter=70 "
        "with low_light_exit=85: the scene condition's line), beside the default chain "
        "(repeatable; combined with --gating into one candidate column)",
    )
    be.add_argument("--no-peer", action="store_true", help="leave out the Zero-DCE++ peer")
    be.add_argument("--no-ssim", action="store_true", help="PSNR only (faster)")
    be.add_argument("--examples", type=Path, help="--legacy-frames: side-by-side JPEGs here")
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

    bu = sub.add_parser("burst", help="truth frames from bursts of a still scene (seed 001)")
    bu.add_argument("--input", type=Path, help="folder of captures of one still scene")
    bu.add_argument("--dark", type=Path, help="folder of captures in the dark (dead pixels)")
    bu.add_argument("--frames", type=_positive, default=16, help="benchmark: frames per burst")
    bu.add_argument("--dark-frames", type=_positive, default=8, help="benchmark: dark frames")
    bu.add_argument("--scenes", type=_positive, default=18, help="benchmark: held-out scenes")
    bu.add_argument("--dead-threshold", type=float, default=12.0, help="grey levels")
    bu.add_argument("--z", type=float, default=3.0, help="confidence interval half-width, σ")
    bu.add_argument("--low", type=int, default=0, help="clipped at or below")
    bu.add_argument("--high", type=int, default=255, help="clipped at or above")
    bu.add_argument("--seed", type=int, default=0)
    bu.add_argument("--out", type=Path, default=Path("build/gan/burst"), help="folder or .png")
    bu.add_argument("--quiet", action="store_true", help="no progress bar")
    bu.set_defaults(func=cmd_burst)

    ng = sub.add_parser(
        "noise-gan", help="camera-noise GAN, then the denoiser with/without its pairs (seed 001)"
    )
    ng.add_argument("--config", type=Path, help="TOML or JSON file of NoiseGanConfig fields")
    ng.add_argument("--gan-steps", type=_positive)
    ng.add_argument("--denoise-steps", type=_positive, help="steps of each denoiser")
    ng.add_argument("--real-scenes", type=_positive, help="training frames with real captures")
    ng.add_argument("--captures", type=_positive, help="real captures per scene")
    ng.add_argument("--crop", type=_positive, help="crop side, native resolution")
    ng.add_argument("--batch-size", type=_positive)
    ng.add_argument("--seed", type=int)
    ng.add_argument("--threads", type=_positive, help="CPU threads per process")
    ng.add_argument("--no-references", action="store_true", help="only with/without GAN pairs")
    ng.add_argument("--out", type=Path, default=Path("build/gan/noise-gan"))
    ng.add_argument("--quiet", action="store_true", help="no progress bar")
    ng.set_defaults(func=cmd_noise_gan)

    tf = sub.add_parser(
        "transfer", help="ResBlock generator: blur pretraining → rain, vs rain from scratch"
    )
    tf.add_argument("--config", type=Path, help="TOML or JSON file of TransferConfig fields")
    tf.add_argument("--pretrain-steps", type=_positive, help="blur steps")
    tf.add_argument("--steps", type=_positive, help="rain steps (fine-tuning and scratch each)")
    tf.add_argument("--width", type=_positive, help="generator base channels")
    tf.add_argument("--batch-size", type=_positive)
    tf.add_argument("--seed", type=int)
    tf.add_argument("--threads", type=_positive, help="CPU threads per process")
    tf.add_argument("--out", type=Path, default=Path("build/gan/transfer"))
    tf.add_argument("--quiet", action="store_true", help="no progress bar")
    tf.set_defaults(func=cmd_transfer)

    up = sub.add_parser(
        "unpaired", help="EnlightenGAN from unpaired poor/good frames, vs the paired recipe"
    )
    up.add_argument("--config", type=Path, help="TOML or JSON file of UnpairedConfig fields")
    up.add_argument("--steps", type=_positive, help="generator steps (each run)")
    up.add_argument("--width", type=_positive, help="generator base channels")
    up.add_argument("--batch-size", type=_positive)
    up.add_argument("--seed", type=int)
    up.add_argument("--threads", type=_positive, help="CPU threads per process")
    up.add_argument("--no-paired", action="store_true", help="skip the paired baseline")
    up.add_argument(
        "--dataset",
        type=Path,
        help="a fleet data set (tools.fleet collect): its poor frames as they are against its "
        "good frames (the paired baseline degrades the good ones)",
    )
    up.add_argument("--out", type=Path, default=Path("build/gan/unpaired"))
    up.add_argument("--quiet", action="store_true", help="no progress bar")
    up.set_defaults(func=cmd_unpaired)

    sh = sub.add_parser("ship", help="build data, train, export, benchmark the shipped models")
    sh.add_argument("--only", action="append", help="ship only this model (repeatable)")
    sh.add_argument("--fresh", action="store_true", help="discard checkpoints, retrain")
    sh.add_argument("--no-peer", action="store_true", help="benchmark without the peer")
    sh.add_argument(
        "--weights-from",
        type=Path,
        metavar="ONNX",
        help="with --only restore: take the weights from this exported model of the same "
        "architecture instead of training (a re-export; its manifest's training record is kept)",
    )
    sh.set_defaults(func=cmd_ship)
    return parser


TRAIN_EXTRA = frozenset({"torch", "onnx", "skimage"})
"""Top-level modules of the `train` extra (pyproject.toml): missing, they get the install line."""

INSTALL_TRAIN = (
    "pip install -e '.[train]' (torch 2.13.0 CPU build, onnx, scikit-image), or "
    "VEHICLE_AGENT_EXTRAS=dev,train bash tools/setup.sh"
)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from pydantic import ValidationError  # noqa: PLC0415

    from tools.gan.data import DataError  # noqa: PLC0415

    try:
        code: int = args.func(args)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})"
            if e["loc"]
            else str(e["msg"]).removeprefix("Value error, ")
            for e in exc.errors()
        )
        parser.error(f"{args.command}: {problems}")
    except DataError as exc:
        parser.error(f"{args.command}: {exc}")
    return code


def main(argv: list[str] | None = None) -> int:
    try:
        # The parser too: its choices come from the torch models.
        parser = build_parser()
        args = parser.parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        return _run(parser, args)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in TRAIN_EXTRA:
            raise
        print(
            f"python -m tools.gan: needs the train extra ({missing} is not installed): "
            f"{INSTALL_TRAIN}",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
