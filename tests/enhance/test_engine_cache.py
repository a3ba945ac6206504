"""TensorRT engine cache, without a GPU: the key, when a cached engine is used or rebuilt, and
engines kept per model version (a rollback finds its engine, an update never overwrites it)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from vehicle_agent.enhance.base import EnhancerError
from vehicle_agent.enhance.engine_cache import (
    EngineKey,
    calibration_cache_path,
    calibration_digest,
    calibration_images,
    decide,
    engine_paths,
    mark_used,
    profile_for,
    prune,
    store,
)

KEY = EngineKey(
    model_name="night",
    model_version="1.0.0",
    model_sha256="a" * 64,
    tensorrt_version="10.3.0",
    gpu_name="Orin",
    compute_capability="8.7",
    precision="fp16",
    network="weakly typed FP16",
    workspace_mb=1024,
    profile=profile_for(16, 8, (720, 1280), (1088, 1920)),
)


def test_the_profile_is_padded_like_the_frames() -> None:
    assert profile_for(16, 32, (720, 1280), (1080, 1920)) == (
        (1, 3, 32, 32),
        (1, 3, 736, 1280),
        (1, 3, 1088, 1920),
    )


def test_no_cache_builds_then_the_stored_engine_is_used(tmp_path: Path) -> None:
    first = decide(tmp_path, KEY)
    assert (first.action, first.reason) == ("build", "no cached engine")
    store(first, KEY, b"serialized engine")
    again = decide(tmp_path, KEY)
    assert again.action == "use"
    assert again.engine.read_bytes() == b"serialized engine"
    assert engine_paths(tmp_path, "night", "1.0.0", "fp16") == (again.engine, again.meta)
    assert again.engine == tmp_path / "night" / "1.0.0.fp16.engine"
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"model_sha256": "b" * 64}, "model file changed (aaaaaaaaaaaa… → bbbbbbbbbbbb…)"),
        ({"tensorrt_version": "10.16.0"}, "TensorRT version changed (10.3.0 → 10.16.0)"),
        ({"gpu_name": "Xavier"}, "GPU changed (Orin → Xavier)"),
        ({"compute_capability": "7.2"}, "compute capability changed (8.7 → 7.2)"),
        ({"profile": profile_for(16, 8, (480, 640), (1088, 1920))}, "shape profile changed"),
        ({"workspace_mb": 512}, "builder workspace changed (1024 → 512)"),
        ({"network": "strongly typed"}, "network typing changed"),
    ],
)
def test_any_change_of_the_key_rebuilds_and_says_why(
    tmp_path: Path, change: dict[str, object], words: str
) -> None:
    store(decide(tmp_path, KEY), KEY, b"old engine")
    new_key = dataclasses.replace(KEY, **change)  # type: ignore[arg-type]
    decision = decide(tmp_path, new_key)
    assert decision.action == "build"
    assert words in decision.reason
    store(decision, new_key, b"new engine")
    assert decide(tmp_path, new_key).action == "use"
    # Same model version and precision: the rebuilt engine replaced the old one.
    assert decide(tmp_path, KEY).action == "build"


def test_new_calibration_images_give_a_new_engine_and_a_new_calibration_table(
    tmp_path: Path,
) -> None:
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(3):
        (calib / f"{i}.png").write_bytes(bytes([i]) * 10)
    (calib / "notes.txt").write_text("not an image")
    images = calibration_images(calib, 64)
    assert [p.name for p in images] == ["0.png", "1.png", "2.png"]
    int8 = dataclasses.replace(KEY, precision="int8", calibration=calibration_digest(images))
    store(decide(tmp_path, int8), int8, b"int8 engine")
    assert decide(tmp_path, int8).action == "use"
    table = calibration_cache_path(tmp_path, int8)

    (calib / "1.png").write_bytes(b"another frame")  # same names, new content
    changed = dataclasses.replace(
        int8, calibration=calibration_digest(calibration_images(calib, 64))
    )
    decision = decide(tmp_path, changed)
    assert decision.action == "build"
    assert "calibration images changed" in decision.reason
    assert calibration_cache_path(tmp_path, changed) != table
    (calib / "3.png").write_bytes(b"one more")
    assert calibration_digest(calibration_images(calib, 64)) != changed.calibration
    assert len(calibration_images(calib, 2)) == 2


def test_a_folder_without_calibration_images_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EnhancerError, match="no calibration images"):
        calibration_images(tmp_path, 8)
    with pytest.raises(EnhancerError, match="cannot list calibration images"):
        calibration_images(tmp_path / "missing", 8)


def test_another_precision_is_another_engine(tmp_path: Path) -> None:
    store(decide(tmp_path, KEY), KEY, b"fp16 engine")
    fp32 = dataclasses.replace(KEY, precision="fp32", network="weakly typed")
    assert decide(tmp_path, fp32).reason == "no cached engine"
    assert decide(tmp_path, KEY).action == "use"


def test_an_update_does_not_overwrite_the_running_versions_engine_and_a_rollback_reuses_it(
    tmp_path: Path,
) -> None:
    store(decide(tmp_path, KEY), KEY, b"engine 1.0.0")
    update = dataclasses.replace(KEY, model_version="1.1.0", model_sha256="b" * 64)
    # The update's health check builds its own engine…
    assert decide(tmp_path, update).reason == "no cached engine"
    store(decide(tmp_path, update), update, b"engine 1.1.0")
    # …and the running version's is untouched: a rollback loads it without a rebuild.
    back = decide(tmp_path, KEY)
    assert back.action == "use"
    assert back.engine.read_bytes() == b"engine 1.0.0"
    assert decide(tmp_path, update).engine.read_bytes() == b"engine 1.1.0"


def test_only_the_most_recently_used_versions_are_kept(tmp_path: Path) -> None:
    keys = [
        dataclasses.replace(KEY, model_version=v, model_sha256=c * 64)
        for v, c in (("1.0", "a"), ("1.0.1", "b"), ("1.1.0-rc.1", "c"), ("2.0", "d"))
    ]
    for age, key in enumerate(keys[:3]):
        decision = decide(tmp_path, key)
        store(decision, key, key.model_version.encode())
        stamp = 1_000_000 + age * 10
        os.utime(decision.meta, (stamp, stamp))
    # 1.0 is the running one: it was loaded last.
    mark_used(decide(tmp_path, keys[0]))
    other = tmp_path / "night" / "notes.txt"
    other.write_text("not ours")
    store(decide(tmp_path, keys[3]), keys[3], b"2.0")
    kept = {k.model_version for k in keys if decide(tmp_path, k).action == "use"}
    # "1.0" is not "1.0.1"'s prefix to the pruner: exactly the oldest-used version went.
    assert kept == {"1.0", "1.1.0-rc.1", "2.0"}
    assert other.exists()
    assert prune(tmp_path, "night", 1, current_version="2.0")
    assert {k.model_version for k in keys if decide(tmp_path, k).action == "use"} == {"2.0"}
    assert prune(tmp_path, "absent", 1, current_version="1") == []


def test_the_old_flat_layout_is_removed_when_an_engine_is_stored(tmp_path: Path) -> None:
    (tmp_path / "night.fp16.engine").write_bytes(b"old")
    (tmp_path / "night.fp16.json").write_text("{}")
    store(decide(tmp_path, KEY), KEY, b"new")
    assert not (tmp_path / "night.fp16.engine").exists()
    assert not (tmp_path / "night.fp16.json").exists()


def test_a_corrupt_engine_or_record_rebuilds(tmp_path: Path) -> None:
    decision = decide(tmp_path, KEY)
    store(decision, KEY, b"engine")
    decision.engine.write_bytes(b"engin3")
    assert "corrupt" in decide(tmp_path, KEY).reason
    store(decision, KEY, b"engine")
    decision.meta.write_text("{not json")
    assert "unreadable cache record" in decide(tmp_path, KEY).reason
    decision.meta.write_text(json.dumps({"key": {}}))
    assert decide(tmp_path, KEY).action == "build"


def test_the_key_round_trips_through_json() -> None:
    assert EngineKey.from_json(json.loads(json.dumps(KEY.as_json()))) == KEY
    assert len(KEY.digest()) == 16
