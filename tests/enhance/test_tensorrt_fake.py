"""The real TensorRT backends on a faked TensorRT 10.3 / 10.16 / 11 and pycuda (no GPU here):
engines built with the flags the version allows, every output bound in its own dtype, one
TensorRT logger, contexts and buffers given back on close, INT8 refused clearly where it does
not exist, and the engine build done in the chain's background while onnxruntime serves.

The fakes (`fake_tensorrt.py`) follow the TensorRT Python API the code uses; the GPU tests in
test_tensorrt.py run the same paths on real TensorRT where there is one."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.enhance.fake_tensorrt import FakeGpu, Mode, TensorDecl, default_tensors
from tests.enhance.helpers import FakeClock, frame, halved, model_dir, reference
from tests.quality.test_soilnet import manifest as soilnet_folder
from vehicle_agent.config import (
    EnhanceHealthConfig,
    OnnxRuntimeEnhancerConfig,
    TensorRtEnhancerConfig,
)
from vehicle_agent.enhance.base import (
    BackendUnavailableError,
    EnhancerError,
    PreparedEnhancer,
    create_enhancer,
)
from vehicle_agent.enhance.chain import BackendSpec, EnhancerChain, Gate
from vehicle_agent.enhance.engine_cache import engine_paths
from vehicle_agent.enhance.store import ModelStore
from vehicle_agent.quality.soilnet import CHANNELS, CLASSES
from vehicle_agent.quality.soilnet_runtime import open_tile_net, read_detector


def config(tmp_path: Path, precision: str = "fp16", **changes: Any) -> TensorRtEnhancerConfig:
    return TensorRtEnhancerConfig(
        precision=precision,  # type: ignore[arg-type]
        opt_width=64,
        opt_height=48,
        max_width=640,
        max_height=480,
        engine_dir=tmp_path / "engines",
        calibration_dir=tmp_path / "calib" if precision == "int8" else None,
        **changes,
    )


def built(tmp_path: Path, precision: str = "fp16", version: str = "1.0.0") -> dict[str, Any]:
    """What the fake builder recorded in the cached engine."""
    engine, _ = engine_paths(tmp_path / "engines", "tiny", version, precision)
    data: dict[str, Any] = json.loads(engine.read_bytes())
    return data


def calibration_frames(folder: Path, count: int) -> None:
    folder.mkdir(exist_ok=True)
    for i in range(count):
        cv2.imwrite(str(folder / f"{i}.png"), frame(i, (48, 64)))


def test_an_engine_is_built_cached_and_runs_every_output_bound(
    fake_gpu: FakeGpu, tmp_path: Path, models: Path
) -> None:
    model = ModelStore([models]).resolve("tiny")
    first = create_enhancer(config(tmp_path), model=model)
    first.load()
    assert first.cache_status == "built (no cached engine)"  # type: ignore[attr-defined]
    image = frame(0, (45, 61))
    np.testing.assert_allclose(first.enhance(image), halved(image), atol=1)
    context = fake_gpu.trt.engines[-1].contexts[-1]
    assert set(context.addresses) == {"x", "y", "aux"}  # the second output is bound too
    assert built(tmp_path)["flags"] == ["FP16"]
    first.close()
    second = create_enhancer(config(tmp_path), model=model)
    second.load()
    assert second.cache_status == "hit"  # type: ignore[attr-defined]
    assert fake_gpu.trt.builds == 1
    second.close()


def test_one_tensorrt_logger_serves_every_build_and_load(
    fake_gpu: FakeGpu, tmp_path: Path, models: Path
) -> None:
    model = ModelStore([models]).resolve("tiny")
    for _ in range(3):
        enhancer = create_enhancer(config(tmp_path), model=model)
        enhancer.load()
        enhancer.close()
    (logger,) = fake_gpu.trt.loggers
    assert len(fake_gpu.trt.loggers_used) >= 4  # builder, parser, runtime × 3
    assert all(used is logger for used in fake_gpu.trt.loggers_used)


def test_close_gives_back_the_buffers_and_the_primary_context_once(
    fake_gpu: FakeGpu, tmp_path: Path, models: Path
) -> None:
    cuda = fake_gpu.cuda
    enhancer = create_enhancer(config(tmp_path), model=ModelStore([models]).resolve("tiny"))
    enhancer.load()
    assert cuda.retained == 1
    assert (cuda.device_live, cuda.host_live) == (3, 3)
    enhancer.close()
    enhancer.close()
    assert (cuda.retained, cuda.device_live, cuda.host_live) == (0, 0, 0)
    assert not cuda.stack
    with pytest.raises(EnhancerError, match="before load"):
        enhancer.enhance(frame())
    # The one-off build context of `engine_for` (`vehicle-agent build-engine`) is released too.
    backend = fake_gpu.backend
    backend.engine_for(
        ModelStore([models]).resolve("tiny"), config(tmp_path, "fp32"), tmp_path / "engines"
    )
    assert (cuda.retained, cuda.device_live) == (0, 0)


def test_a_load_that_fails_half_way_still_gives_everything_back(
    fake_gpu: FakeGpu, tmp_path: Path, models: Path
) -> None:
    fake_gpu.trt.tensors = default_tensors(output_dtype="HALF")
    enhancer = create_enhancer(config(tmp_path), model=ModelStore([models]).resolve("tiny"))
    # The output's real dtype is planned from the engine, and the manifest refuses it.
    with pytest.raises(EnhancerError, match="output 'y' is float16, manifest says float32"):
        enhancer.load()
    cuda = fake_gpu.cuda
    assert (cuda.retained, cuda.device_live, cuda.host_live) == (0, 0, 0)


def test_a_frame_outside_the_engine_profile_is_a_clear_error(
    fake_gpu: FakeGpu, tmp_path: Path, models: Path
) -> None:
    enhancer = create_enhancer(config(tmp_path), model=ModelStore([models]).resolve("tiny"))
    enhancer.load()
    with pytest.raises(EnhancerError, match="refused: outside the engine's optimisation profile"):
        enhancer.enhance(frame(0, (600, 800)))
    enhancer.close()


def test_int8_calibrates_frees_the_calibrator_and_new_images_rebuild(
    fake_gpu: FakeGpu, tmp_path: Path, models: Path
) -> None:
    calibration_frames(tmp_path / "calib", 4)
    model = ModelStore([models]).resolve("tiny")
    enhancer = create_enhancer(config(tmp_path, "int8"), model=model)
    enhancer.load()
    recorded = built(tmp_path, "int8")
    assert recorded["flags"] == ["FP16", "INT8"]
    assert recorded["calibration_batches"] == 4
    assert fake_gpu.cuda.device_live == 3  # the calibrator's buffer is gone, the enhancer's stay
    assert list((tmp_path / "engines" / "tiny").glob("1.0.0.int8.*.calib"))
    enhancer.close()
    assert fake_gpu.cuda.device_live == 0
    calibration_frames(tmp_path / "calib", 6)  # new calibration data: a new engine
    again = create_enhancer(config(tmp_path, "int8"), model=model)
    again.load()
    assert "calibration images changed" in again.cache_status  # type: ignore[attr-defined]
    assert built(tmp_path, "int8")["calibration_batches"] == 6
    again.close()
    # A new workspace is a new engine too.
    wider = create_enhancer(config(tmp_path, "int8", workspace_mb=2048), model=model)
    wider.load()
    assert "builder workspace changed" in wider.cache_status  # type: ignore[attr-defined]
    wider.close()


@pytest.mark.parametrize(
    ("version", "precision", "strongly_typed", "flags"),
    [
        ("10.3.0", "fp32", False, []),
        ("10.16.0", "fp32", True, []),
        ("10.16.0", "fp16", False, ["FP16"]),
        ("11.0.0", "fp16", True, []),
    ],
)
def test_the_build_uses_what_the_tensorrt_version_has(
    fake_trt: Callable[[str], FakeGpu],
    tmp_path: Path,
    models: Path,
    *,
    version: str,
    precision: str,
    strongly_typed: bool,
    flags: list[str],
) -> None:
    fake_trt(version)
    enhancer = create_enhancer(
        config(tmp_path, precision), model=ModelStore([models]).resolve("tiny")
    )
    enhancer.load()
    recorded = built(tmp_path, precision)
    assert (recorded["strongly_typed"], recorded["flags"]) == (strongly_typed, flags)
    assert recorded["workspace"] == 1024 << 20
    image = frame(1)
    np.testing.assert_allclose(enhancer.enhance(image), halved(image), atol=1)
    enhancer.close()


def test_tensorrt_11_imports_and_refuses_int8_once_with_the_reason(
    fake_trt: Callable[[str], FakeGpu], tmp_path: Path, models: Path
) -> None:
    gpu = fake_trt("11.0.0")  # no IInt8EntropyCalibrator2, no BuilderFlag.FP16/INT8
    calibration_frames(tmp_path / "calib", 2)
    cfg = config(tmp_path, "int8")
    enhancer = create_enhancer(cfg, model=ModelStore([models]).resolve("tiny"))
    with pytest.raises(
        BackendUnavailableError, match="INT8 calibration not available on TensorRT 11"
    ):
        enhancer.load()
    assert gpu.cuda.retained == 0
    # In the chain it is 'unavailable' (reported once, never retried), not a load failure.
    clock = FakeClock()
    chain = EnhancerChain(
        [
            BackendSpec("tensorrt", cfg, needs_model=True),
            BackendSpec("onnxruntime", OnnxRuntimeEnhancerConfig(device="cpu"), needs_model=True),
        ],
        Gate("tiny", {}),
        ModelStore([models]),
        EnhanceHealthConfig(promote_after_s=30.0),
        background=False,
        clock=clock,
        guard=None,
    )
    chain.load()
    demoted = [e for e in chain.drain_events() if e.type == "enhancer_demoted"]
    assert [(e.data["kind"], e.data["retry_in_s"]) for e in demoted] == [("unavailable", None)]
    assert "use precision 'fp16'" in str(demoted[0].data["reason"])
    clock.advance(3600)
    chain.enhance(frame())
    assert chain.drain_events() == []
    assert chain.name == "onnxruntime:tiny"
    chain.close()


def test_preparation_is_the_engine_build_and_a_cancel_stops_it(
    fake_gpu: FakeGpu, tmp_path: Path, models: Path
) -> None:
    enhancer = create_enhancer(config(tmp_path), model=ModelStore([models]).resolve("tiny"))
    assert isinstance(enhancer, PreparedEnhancer)
    assert enhancer.preparation_needed() == "TensorRT engine build (no cached engine)"
    cancel = threading.Event()
    fake_gpu.trt.during_build = lambda _step: cancel.set()
    with pytest.raises(EnhancerError, match="engine build cancelled"):
        enhancer.prepare(cancel)
    assert enhancer.preparation_needed() is not None  # nothing was stored
    fake_gpu.trt.during_build = None
    enhancer.prepare(threading.Event())
    assert enhancer.preparation_needed() is None
    assert fake_gpu.cuda.retained == 0
    enhancer.load()
    assert enhancer.cache_status == "hit"  # type: ignore[attr-defined]
    enhancer.close()


def chain_on_fakes(
    tmp_path: Path, models: Path, clock: FakeClock, health: EnhanceHealthConfig | None = None
) -> EnhancerChain:
    return EnhancerChain(
        [
            BackendSpec("tensorrt", config(tmp_path), needs_model=True),
            BackendSpec("onnxruntime", OnnxRuntimeEnhancerConfig(device="cpu"), needs_model=True),
        ],
        Gate("tiny", {}),
        ModelStore([models]),
        health or EnhanceHealthConfig(promote_after_s=30.0, promote_max_s=100.0),
        background=True,
        clock=clock,
        guard=None,
    )


def test_the_chain_builds_the_engine_in_the_background_and_promotes_tensorrt_when_done(
    fake_gpu: FakeGpu, tmp_path: Path, models: Path, clock: FakeClock
) -> None:
    release = threading.Event()
    fake_gpu.trt.during_build = lambda _step: release.wait(10)
    chain = chain_on_fakes(tmp_path, models, clock)
    chain.load()  # returns at once: the build is held
    events = chain.drain_events()
    assert [e.type for e in events] == ["enhancer_preparing", "model_loaded"]
    assert events[0].data["reason"] == "TensorRT engine build (no cached engine)"
    assert events[1].data["backend"] == "onnxruntime"
    image = frame(3)
    for _ in range(2):  # onnxruntime serves while the engine builds
        np.testing.assert_allclose(chain.enhance(image), reference(image), atol=1)
    assert chain.name == "onnxruntime:tiny"
    release.set()
    chain.wait_idle()
    np.testing.assert_allclose(chain.enhance(image), halved(image), atol=1)
    assert chain.name == "tensorrt:tiny"
    events = chain.drain_events()
    assert [e.type for e in events] == ["model_loaded", "enhancer_prepared", "model_swapped"]
    assert events[2].data["reason"] == "promoted"
    chain.close()
    assert (fake_gpu.cuda.retained, fake_gpu.cuda.device_live) == (0, 0)


def test_a_failing_background_build_is_demoted_and_retried_with_backoff(
    fake_gpu: FakeGpu, tmp_path: Path, models: Path, clock: FakeClock
) -> None:
    fake_gpu.trt.fail_builds = True
    chain = chain_on_fakes(tmp_path, models, clock)
    chain.load()
    chain.wait_idle()
    image = frame(4)
    np.testing.assert_allclose(chain.enhance(image), reference(image), atol=1)
    events = chain.drain_events()
    demoted = next(e for e in events if e.type == "enhancer_demoted")
    assert demoted.data["kind"] == "load"
    assert "engine build failed" in str(demoted.data["reason"])
    assert demoted.data["retry_in_s"] == 30.0
    waits = []
    for _ in range(3):
        clock.advance(1000)
        chain.enhance(image)  # the check starts (in the background)
        chain.wait_idle()
        chain.enhance(image)  # and its failure is taken up
        failed = [e for e in chain.drain_events() if e.type == "enhancer_check_failed"]
        assert len(failed) == 1
        assert "engine build failed" in str(failed[0].data["reason"])
        waits.append(failed[0].data["retry_in_s"])
    assert waits == [60.0, 100.0, 100.0]  # doubling, capped at promote_max_s
    assert chain.name == "onnxruntime:tiny"
    fake_gpu.trt.fail_builds = False
    clock.advance(100)
    chain.enhance(image)
    chain.wait_idle()
    np.testing.assert_allclose(chain.enhance(image), halved(image), atol=1)
    assert "enhancer_promoted" in [e.type for e in chain.drain_events()]
    chain.close()


def test_closing_the_chain_cancels_a_build_in_progress(
    fake_gpu: FakeGpu, tmp_path: Path, models: Path, clock: FakeClock
) -> None:
    started = threading.Event()

    def slow(step: int) -> None:
        del step
        started.set()
        threading.Event().wait(0.2)

    fake_gpu.trt.during_build = slow
    chain = chain_on_fakes(tmp_path, models, clock)
    chain.load()
    assert started.wait(10)
    chain.close()  # returns after the next build step, not after the whole build
    assert fake_gpu.trt.builds == 1
    assert not list((tmp_path / "engines").rglob("*.engine"))
    assert (fake_gpu.cuda.retained, fake_gpu.cuda.device_live) == (0, 0)


def test_an_updates_engine_leaves_the_running_versions_engine_for_a_rollback(
    fake_gpu: FakeGpu, tmp_path: Path, models: Path
) -> None:
    store = ModelStore([models])
    running = create_enhancer(config(tmp_path), model=store.resolve("tiny"))
    running.load()
    model_dir(models, "tiny", "1.1.0", bias=np.zeros(3, np.float32))
    update = create_enhancer(config(tmp_path), model=store.resolve("tiny"))
    update.load()  # the update's health check: its own engine
    assert update.cache_status == "built (no cached engine)"  # type: ignore[attr-defined]
    update.close()
    running.close()
    assert fake_gpu.trt.builds == 2
    old = dataclasses.replace(store.resolve("tiny"))
    assert old.manifest.version == "1.1.0"
    # Rolled back to 1.0.0: its engine is still there, no rebuild.
    (models / "tiny").rename(tmp_path / "tiny-1.1.0")
    model_dir(models, "tiny", "1.0.0")
    rollback = create_enhancer(config(tmp_path), model=store.resolve("tiny"))
    rollback.load()
    assert rollback.cache_status == "hit"  # type: ignore[attr-defined]
    assert fake_gpu.trt.builds == 2
    rollback.close()


def test_the_soiling_net_plans_its_outputs_and_gives_everything_back(
    fake_gpu: FakeGpu, tmp_path: Path
) -> None:
    fake_gpu.trt.tensors = [
        TensorDecl("features", Mode.INPUT, "FLOAT", (1, CHANNELS, -1, 192)),
        TensorDecl(
            "probs", Mode.OUTPUT, "HALF", (1, 4, -1, 24), lambda s: (1, len(CLASSES), s[2] // 8, 24)
        ),
    ]
    model = read_detector(soilnet_folder(tmp_path / "soilnet"))
    net = open_tile_net(model, "tensorrt")
    out = net(np.zeros((1, CHANNELS, 96, 192), np.float32))
    assert out.dtype == np.float32  # the engine's FP16 output, read as such and converted
    assert out.shape == (1, 4, 12, 24)
    assert out.ravel()[:5].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert (tmp_path / "soilnet" / ".engines" / "soilnet" / "1.0.0.fp16.engine").is_file()
    cuda = fake_gpu.cuda
    assert cuda.retained == 1
    net.close()  # type: ignore[attr-defined]
    net.close()  # type: ignore[attr-defined]
    assert (cuda.retained, cuda.device_live, cuda.host_live) == (0, 0, 0)
    again = open_tile_net(model, "tensorrt")
    assert again.cache_status == "hit"  # type: ignore[attr-defined]
    del again  # dropped without close: the finalizer gives the context back
    assert cuda.retained == 0


def test_vehicle_agent_build_engine_builds_each_model_once_then_finds_it_current(
    fake_gpu: FakeGpu, tmp_path: Path, models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vehicle_agent.cli import main  # noqa: PLC0415

    toml = tmp_path / "vehicle.toml"
    toml.write_text(
        f"""[agent]
state_dir = "{tmp_path / "state"}"

[enhance]
model = "tiny"
gating = {{}}
model_dirs = ["{models}"]

[[enhance.chain]]
type = "tensorrt"
precision = "fp16"
opt_width = 64
opt_height = 48
max_width = 640
max_height = 480
engine_dir = "{tmp_path / "engines"}"
"""
    )
    assert main(["build-engine", "--config", str(toml)]) == 0
    first = capsys.readouterr().out
    assert "tiny@1.0.0: fp16 engine for" in first
    assert "built (" in first
    assert main(["build-engine", "--config", str(toml), "--model", "tiny"]) == 0
    assert " current in " in capsys.readouterr().out
    assert main(["build-engine", "--config", str(toml), "--model", "nosuch"]) == 1
    assert "build-engine: " in capsys.readouterr().err
