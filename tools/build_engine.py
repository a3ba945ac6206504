"""On the vehicle: build and cache the TensorRT engines the daemon will load, before it starts.

python -m tools.build_engine --config /etc/vehicle-agent/vehicle-agent.toml          # every model
python -m tools.build_engine --config FILE --model fast-enhance --precision int8 \\
    --calibration-dir /var/lib/vehicle-agent/calibration --force

Builds for each model the config's gating may run (or the ones named), with the `tensorrt`
entry of `[[enhance.chain]]` (or its defaults), into the same cache the daemon reads
(`<agent.state_dir>/engines/<model>/<version>.<precision>.engine`, keyed by model version and
sha256, TensorRT version, GPU, precision and typing, workspace, profile and calibration images).
An engine that is already current is left alone unless --force. Exit 1 when a build failed (INT8
on a TensorRT without calibration is one, with the reason), 2 on a usage error (no tensorrt
here, unknown model).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from vehicle_agent.config import (
    GATE_WORDS,
    Config,
    ConfigError,
    TensorRtEnhancerConfig,
    load_config,
)
from vehicle_agent.enhance.manifest import ManifestError
from vehicle_agent.enhance.store import ModelNotFoundError, ModelStore, default_dirs


def tensorrt_config(config: Config, overrides: argparse.Namespace) -> TensorRtEnhancerConfig:
    base = next(
        (c for c in config.enhance.chain if isinstance(c, TensorRtEnhancerConfig)),
        TensorRtEnhancerConfig(),
    )
    changes: dict[str, object] = {}
    if overrides.precision:
        changes["precision"] = overrides.precision
    if overrides.calibration_dir:
        changes["calibration_dir"] = overrides.calibration_dir
    return TensorRtEnhancerConfig.model_validate(base.model_dump() | changes)


def wanted_models(config: Config, names: list[str]) -> list[str]:
    if names:
        return names
    enhance = config.enhance
    ordered = [enhance.model, *enhance.gating.values()]
    return list(dict.fromkeys(m for m in ordered if m not in GATE_WORDS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="the daemon's TOML config (default: defaults)")
    parser.add_argument("--model", action="append", default=[], help="model name (repeatable)")
    parser.add_argument("--precision", choices=["fp32", "fp16", "int8"])
    parser.add_argument("--calibration-dir", type=Path, help="frames for INT8 calibration")
    parser.add_argument("--force", action="store_true", help="rebuild even when current")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        config = load_config(args.config) if args.config else Config()
        trt_config = tensorrt_config(config, args)
    except (ConfigError, ValueError) as exc:
        print(f"build_engine: {exc}", file=sys.stderr)
        return 2
    try:
        from vehicle_agent.enhance import tensorrt_backend  # noqa: PLC0415 - needs tensorrt
    except ImportError as exc:
        print(f"build_engine: {exc}", file=sys.stderr)
        return 2
    state_dir = config.agent.state_dir
    store = ModelStore(default_dirs(state_dir, config.enhance.model_dirs))
    cache_dir = trt_config.engine_dir or state_dir / "engines"
    failed = 0
    for name in wanted_models(config, args.model):
        try:
            model = store.resolve(name)
        except (ModelNotFoundError, ManifestError) as exc:
            print(f"build_engine: {exc}", file=sys.stderr)
            failed += 1
            continue
        started = time.perf_counter()
        try:
            _, decision, key = tensorrt_backend.engine_for(
                model, trt_config, cache_dir, force=args.force
            )
        except Exception as exc:  # a build failure is reported per model, the others go on
            print(f"build_engine: {model.label}: {exc}", file=sys.stderr)
            failed += 1
            continue
        what = "current" if decision.action == "use" else f"built ({decision.reason})"
        print(
            f"{model.label}: {key.precision} engine for {key.gpu_name} (sm {key.compute_capability},"
            f" TensorRT {key.tensorrt_version}) {what} in {time.perf_counter() - started:.1f} s"
            f" → {decision.engine}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
