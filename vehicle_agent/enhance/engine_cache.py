"""Enhance stage, TensorRT engine cache: when a cached engine may be used, and when it must be rebuilt.

Pure (no TensorRT, no GPU): the TensorRT backend and `tools/build_engine.py` call it, and the
tests drive it on plain files. An engine is only valid for the exact model file, TensorRT
version, GPU (name and compute capability), precision and shape profile it was built with; each
is recorded beside the engine and compared before use, and any difference rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

Shape = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class EngineKey:
    """Everything a serialized engine depends on."""

    model_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    """'8.7' (Jetson Orin), '9.0' (H100)…"""
    precision: str
    profile: tuple[Shape, Shape, Shape]
    """(min, opt, max) input shapes, NCHW."""

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
            model_sha256=str(data["model_sha256"]),
            tensorrt_version=str(data["tensorrt_version"]),
            gpu_name=str(data["gpu_name"]),
            compute_capability=str(data["compute_capability"]),
            precision=str(data["precision"]),
            profile=(min_s, opt_s, max_s),  # type: ignore[arg-type]
        )


@dataclass(frozen=True, slots=True)
class CacheDecision:
    action: Literal["use", "build"]
    reason: str
    engine: Path
    meta: Path


def engine_paths(cache_dir: Path, model_name: str, precision: str) -> tuple[Path, Path]:
    """One engine per model and precision: a rebuild replaces it, so nothing stale piles up."""
    stem = f"{model_name}.{precision}"
    return cache_dir / f"{stem}.engine", cache_dir / f"{stem}.json"


_FIELD_NAMES = {
    "model_sha256": "model file changed",
    "tensorrt_version": "TensorRT version changed",
    "gpu_name": "GPU changed",
    "compute_capability": "GPU compute capability changed",
    "precision": "precision changed",
    "profile": "shape profile changed",
}


def decide(cache_dir: Path, model_name: str, key: EngineKey) -> CacheDecision:
    """Use the cached engine when its recorded key and checksum match `key`, else rebuild."""
    engine, meta = engine_paths(cache_dir, model_name, key.precision)

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


def store(decision: CacheDecision, key: EngineKey, serialized: bytes) -> None:
    """Write a freshly built engine and its record atomically (a crash leaves the old pair)."""
    decision.engine.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(decision.engine, serialized)
    record = {"key": key.as_json(), "engine_sha256": hashlib.sha256(serialized).hexdigest()}
    _atomic_write(decision.meta, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())


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
