"""On the vehicle: build and cache the TensorRT engines the daemon will load, before it starts
(`vehicle-agent build-engine`; the unit's config by default).

For each model the config's gating may run (or the ones named), with the `tensorrt` entry of
`[[enhance.chain]]` (or its defaults), into the same cache the daemon reads
(`<agent.state_dir>/engines/<model>/<version>.<precision>.engine`, keyed by model version and
sha256, TensorRT version, GPU, precision and typing, workspace, profile and calibration images).
An engine that is already current is left alone unless `force`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from vehicle_agent.config import GATE_WORDS, Config, TensorRtEnhancerConfig
from vehicle_agent.enhance.manifest import ManifestError
from vehicle_agent.enhance.store import ModelNotFoundError, ModelStore, default_dirs

logger = logging.getLogger(__name__)


class TensorRtMissingError(RuntimeError):
    """This machine cannot build engines (no TensorRT or no CUDA bindings)."""


def tensorrt_config(
    config: Config, *, precision: str | None = None, calibration_dir: Path | None = None
) -> TensorRtEnhancerConfig:
    """The chain's `tensorrt` entry (or its defaults) with the command line's overrides;
    `ValueError` (pydantic's) when they make no valid entry."""
    base = next(
        (c for c in config.enhance.chain if isinstance(c, TensorRtEnhancerConfig)),
        TensorRtEnhancerConfig(),
    )
    changes: dict[str, object] = {}
    if precision:
        changes["precision"] = precision
    if calibration_dir:
        changes["calibration_dir"] = calibration_dir
    return TensorRtEnhancerConfig.model_validate(base.model_dump() | changes)


def wanted_models(config: Config, names: Sequence[str] = ()) -> list[str]:
    """`names`, or every model the config's gating may run, each once."""
    if names:
        return list(dict.fromkeys(names))
    enhance = config.enhance
    ordered = [enhance.model, *enhance.gating.values()]
    return list(dict.fromkeys(m for m in ordered if m not in GATE_WORDS))


def build_engines(
    config: Config,
    trt_config: TensorRtEnhancerConfig,
    names: Sequence[str] = (),
    *,
    force: bool = False,
    say: Callable[[str], None] = print,
    complain: Callable[[str], None] = logger.error,
) -> int:
    """Build (or find current) each wanted model's engine; returns how many failed (each one
    said through `complain`, the others go on). `TensorRtMissingError` without TensorRT."""
    try:
        from vehicle_agent.enhance import tensorrt_backend  # noqa: PLC0415 - needs tensorrt
    except ImportError as exc:
        raise TensorRtMissingError(f"cannot build TensorRT engines here: {exc}") from None
    state_dir = config.agent.state_dir
    store = ModelStore(default_dirs(state_dir, config.enhance.model_dirs))
    cache_dir = trt_config.engine_dir or state_dir / "engines"
    failed = 0
    for name in wanted_models(config, names):
        try:
            model = store.resolve(name)
        except (ModelNotFoundError, ManifestError) as exc:
            complain(str(exc))
            failed += 1
            continue
        started = time.perf_counter()
        try:
            _, decision, key = tensorrt_backend.engine_for(
                model, trt_config, cache_dir, force=force
            )
        except Exception as exc:  # a build failure is reported per model, the others go on
            complain(f"{model.label}: {exc}")
            failed += 1
            continue
        what = "current" if decision.action == "use" else f"built ({decision.reason})"
        say(
            f"{model.label}: {key.precision} engine for {key.gpu_name} (sm {key.compute_capability},"
            f" TensorRT {key.tensorrt_version}) {what} in {time.perf_counter() - started:.1f} s"
            f" → {decision.engine}"
        )
    return failed
