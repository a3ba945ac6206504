"""TensorRT engine cache, without a GPU: the key, and when a cached engine is used or rebuilt."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from vehicle_agent.enhance.engine_cache import EngineKey, decide, engine_paths, profile_for, store

KEY = EngineKey(
    model_sha256="a" * 64,
    tensorrt_version="10.3.0",
    gpu_name="Orin",
    compute_capability="8.7",
    precision="fp16",
    profile=profile_for(16, 8, (720, 1280), (1088, 1920)),
)


def test_the_profile_is_padded_like_the_frames() -> None:
    assert profile_for(16, 32, (720, 1280), (1080, 1920)) == (
        (1, 3, 32, 32),
        (1, 3, 736, 1280),
        (1, 3, 1088, 1920),
    )


def test_no_cache_builds_then_the_stored_engine_is_used(tmp_path: Path) -> None:
    first = decide(tmp_path, "night", KEY)
    assert (first.action, first.reason) == ("build", "no cached engine")
    store(first, KEY, b"serialized engine")
    again = decide(tmp_path, "night", KEY)
    assert again.action == "use"
    assert again.engine.read_bytes() == b"serialized engine"
    assert engine_paths(tmp_path, "night", "fp16") == (again.engine, again.meta)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"model_sha256": "b" * 64}, "model file changed (aaaaaaaaaaaa… → bbbbbbbbbbbb…)"),
        ({"tensorrt_version": "10.4.0"}, "TensorRT version changed (10.3.0 → 10.4.0)"),
        ({"gpu_name": "Xavier"}, "GPU changed (Orin → Xavier)"),
        ({"compute_capability": "7.2"}, "compute capability changed (8.7 → 7.2)"),
        ({"profile": profile_for(16, 8, (480, 640), (1088, 1920))}, "shape profile changed"),
    ],
)
def test_any_change_of_the_key_rebuilds_and_says_why(
    tmp_path: Path, change: dict[str, object], words: str
) -> None:
    store(decide(tmp_path, "night", KEY), KEY, b"old engine")
    new_key = dataclasses.replace(KEY, **change)  # type: ignore[arg-type]
    decision = decide(tmp_path, "night", new_key)
    assert decision.action == "build"
    assert words in decision.reason
    store(decision, new_key, b"new engine")
    assert decide(tmp_path, "night", new_key).action == "use"
    assert decide(tmp_path, "night", KEY).action == "build"  # one engine per model: replaced


def test_another_precision_is_another_engine(tmp_path: Path) -> None:
    store(decide(tmp_path, "night", KEY), KEY, b"fp16 engine")
    int8 = dataclasses.replace(KEY, precision="int8")
    assert decide(tmp_path, "night", int8).reason == "no cached engine"
    assert decide(tmp_path, "night", KEY).action == "use"


def test_a_corrupt_engine_or_record_rebuilds(tmp_path: Path) -> None:
    decision = decide(tmp_path, "night", KEY)
    store(decision, KEY, b"engine")
    decision.engine.write_bytes(b"engin3")
    assert "corrupt" in decide(tmp_path, "night", KEY).reason
    store(decision, KEY, b"engine")
    decision.meta.write_text("{not json")
    assert "unreadable cache record" in decide(tmp_path, "night", KEY).reason
    decision.meta.write_text(json.dumps({"key": {}}))
    assert decide(tmp_path, "night", KEY).action == "build"


def test_the_key_round_trips_through_json() -> None:
    assert EngineKey.from_json(json.loads(json.dumps(KEY.as_json()))) == KEY
    assert len(KEY.digest()) == 16
