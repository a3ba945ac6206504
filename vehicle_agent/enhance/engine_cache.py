"""Enhance stage, TensorRT engine cache: when a cached engine may be used, and when it must be rebuilt.

Pure (no TensorRT, no GPU): the TensorRT backends and `vehicle-agent build-engine`
(enhance/build_engines.py) call it, and the tests drive it on plain files. An engine is only
valid for exactly what it was built from: the model (name, version, sha256 of model.onnx), the
TensorRT version, the GPU (name and compute capability), the precision and network typing, the
builder workspace, the shape profile, and for INT8 the calibration images (their digest). All of
it is the `EngineKey`, recorded beside the engine and compared before use; any difference
rebuilds it and the record says what changed.

Engines are stored per model version (`<cache>/<model>/<version>.<precision>.engine`), so a new
version's build (an update's health check) never replaces the running version's engine and a
rollback finds its old engine again. The engines of the `KEEP_VERSIONS` most recently used
versions of a model are kept; older ones are removed when a new one is stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from vehicle_agent.enhance.base import EnhancerError

Shape = tuple[int, int, int, int]

KEEP_VERSIONS = 3
"""Versions per model whose engines stay cached: the running one, the one a rollback returns to,
and a new one under test."""
CALIBRATION_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True, slots=True)
class EngineKey:
    """Everything a serialized engine depends on."""

    model_name: str
    model_version: str
    model_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    """'8.7' (Jetson Orin), '9.0' (H100)…"""
    precision: str
    network: str
    """How the network was built: 'strongly typed', or 'weakly typed' with its builder flags."""
    workspace_mb: int
    profile: tuple[Shape, Shape, Shape]
    """(min, opt, max) input shapes, NCHW."""
    calibration: str = ""
    """Digest of the INT8 calibration images (names and contents); '' when not calibrated."""

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["profile"] = [list(s) for s in self.profile]
        return data

    def digest(self) -> str:
        blob = json.dumps(self.as_json(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EngineKey:
        min_s, opt_s, max_s = (tuple(int(v) for v in s) for s in data["profile"])
        return cls(
            model_name=str(data["model_name"]),
            model_version=str(data["model_version"]),
            model_sha256=str(data["model_sha256"]),
            tensorrt_version=str(data["tensorrt_version"]),
            gpu_name=str(data["gpu_name"]),
            compute_capability=str(data["compute_capability"]),
            precision=str(data["precision"]),
            network=str(data["network"]),
            workspace_mb=int(data["workspace_mb"]),
            profile=(min_s, opt_s, max_s),  # type: ignore[arg-type]
            calibration=str(data["calibration"]),
        )


@dataclass(frozen=True, slots=True)
class CacheDecision:
    action: Literal["use", "build"]
    reason: str
    engine: Path
    meta: Path


def engine_paths(
    cache_dir: Path, model_name: str, model_version: str, precision: str
) -> tuple[Path, Path]:
    """One engine per model version and precision; a rebuild (new GPU, TensorRT, settings)
    replaces it, another version has its own."""
    stem = f"{model_version}.{precision}"
    folder = cache_dir / model_name
    return folder / f"{stem}.engine", folder / f"{stem}.json"


def calibration_cache_path(cache_dir: Path, key: EngineKey) -> Path:
    """TensorRT's INT8 calibration cache for exactly this key: new images, another profile or
    TensorRT version never reuse an old table."""
    engine, _ = engine_paths(cache_dir, key.model_name, key.model_version, key.precision)
    return engine.with_name(f"{key.model_version}.{key.precision}.{key.digest()}.calib")


_FIELD_NAMES = {
    "model_name": "model changed",
    "model_version": "model version changed",
    "model_sha256": "model file changed",
    "tensorrt_version": "TensorRT version changed",
    "gpu_name": "GPU changed",
    "compute_capability": "GPU compute capability changed",
    "precision": "precision changed",
    "network": "network typing changed",
    "workspace_mb": "builder workspace changed",
    "profile": "shape profile changed",
    "calibration": "calibration images changed",
}


def decide(cache_dir: Path, key: EngineKey) -> CacheDecision:
    """Use the cached engine when its recorded key and checksum match `key`, else rebuild."""
    engine, meta = engine_paths(cache_dir, key.model_name, key.model_version, key.precision)

    def build(reason: str) -> CacheDecision:
        return CacheDecision("build", reason, engine, meta)

    if not engine.is_file() or not meta.is_file():
        return build("no cached engine")
    try:
        recorded = json.loads(meta.read_text(encoding="utf-8"))
        old = EngineKey.from_json(recorded["key"])
        engine_sha = str(recorded["engine_sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return build(f"unreadable cache record ({exc})")
    if old != key:
        new_json, old_json = key.as_json(), old.as_json()
        changed = [
            f"{_FIELD_NAMES[name]} ({_short(old_json[name])} → {_short(new_json[name])})"
            for name in _FIELD_NAMES
            if old_json[name] != new_json[name]
        ]
        return build("; ".join(changed))
    if _sha256(engine) != engine_sha:
        return build("cached engine file is corrupt (checksum differs)")
    return CacheDecision("use", "cached engine matches", engine, meta)


def mark_used(decision: CacheDecision) -> None:
    """Note that the engine was loaded (its record's mtime), so pruning keeps recent versions."""
    with contextlib.suppress(OSError):
        os.utime(decision.meta)


def store(
    decision: CacheDecision, key: EngineKey, serialized: bytes, keep: int = KEEP_VERSIONS
) -> None:
    """Write a freshly built engine and its record atomically (a crash leaves the old pair),
    then remove the engines of versions beyond the `keep` most recently used."""
    decision.engine.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(decision.engine, serialized)
    record = {"key": key.as_json(), "engine_sha256": hashlib.sha256(serialized).hexdigest()}
    _atomic_write(decision.meta, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    cache_dir = decision.engine.parent.parent
    prune(cache_dir, key.model_name, keep, current_version=key.model_version)
    # The layout before engines were kept per version: `<cache>/<model>.<precision>.engine`.
    for suffix in (".engine", ".json"):
        with contextlib.suppress(OSError):
            (cache_dir / f"{key.model_name}.{key.precision}{suffix}").unlink(missing_ok=True)


def _version_of(path: Path) -> str | None:
    """The model version a cache file belongs to, or None for anything else (a .tmp file)."""
    parts = path.name.split(".")
    if path.suffix in {".engine", ".json"} and len(parts) >= 3 and parts[-2] in PRECISIONS:
        return ".".join(parts[:-2])
    if path.suffix == ".calib" and len(parts) >= 4 and parts[-3] in PRECISIONS:
        return ".".join(parts[:-3])
    return None


def prune(cache_dir: Path, model_name: str, keep: int, *, current_version: str) -> list[Path]:
    """Remove the cache files of `model_name`'s versions beyond the `keep` most recently used
    (by their records' mtimes; `current_version` always stays). Returns what was removed."""
    folder = cache_dir / model_name
    if not folder.is_dir():
        return []
    files: dict[str, list[Path]] = {}
    used: dict[str, float] = {}
    for path in folder.iterdir():
        version = _version_of(path)
        if version is None:
            continue
        files.setdefault(version, []).append(path)
        if path.suffix == ".json":
            with contextlib.suppress(OSError):
                used[version] = max(used.get(version, 0.0), path.stat().st_mtime)
    used[current_version] = math.inf
    ranked = sorted(files, key=lambda v: used.get(v, 0.0), reverse=True)
    removed: list[Path] = []
    for version in ranked[max(1, keep) :]:
        for path in files[version]:
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def calibration_images(folder: Path, limit: int) -> list[Path]:
    """Up to `limit` images of `folder`, spread evenly over its sorted listing."""
    try:
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in CALIBRATION_SUFFIXES)
    except OSError as exc:
        raise EnhancerError("tensorrt", f"{folder}: cannot list calibration images: {exc}") from exc
    if not images:
        raise EnhancerError("tensorrt", f"{folder}: no calibration images ({CALIBRATION_SUFFIXES})")
    step = max(1, len(images) // limit)
    return images[::step][:limit]


def calibration_digest(images: Sequence[Path]) -> str:
    """Digest of the calibration set, names and contents in order: other images, more images or
    an edited image give another digest (and so another engine key)."""
    digest = hashlib.sha256()
    for path in images:
        digest.update(path.name.encode())
        digest.update(b"\0")
        digest.update(_sha256(path).encode())
    return digest.hexdigest()[:16]


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] + "…" if len(text) == 64 else text


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def profile_for(
    min_size: int, stride: int, opt_hw: tuple[int, int], max_hw: tuple[int, int]
) -> tuple[Shape, Shape, Shape]:
    """(min, opt, max) NCHW shapes for frames padded to `stride` (what the preprocessor feeds)."""

    def up(n: int) -> int:
        return -(-max(n, min_size) // stride) * stride

    return (
        (1, 3, up(min_size), up(min_size)),
        (1, 3, up(opt_hw[0]), up(opt_hw[1])),
        (1, 3, up(max_hw[0]), up(max_hw[1])),
    )
