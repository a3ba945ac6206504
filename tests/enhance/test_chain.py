"""The fallback chain: demotion on exception/NaN/blank/slow/load, promotion after a health check,
events for each, gating by scene condition, and a frame out of every call."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from tests.enhance.helpers import (
    Builder,
    FakeClock,
    PreparedConfig,
    Script,
    ScriptedConfig,
    factory,
    frame,
    halved,
    model_dir,
)
from vehicle_agent.config import (
    ClassicalEnhancerConfig,
    EnhanceHealthConfig,
    TensorRtEnhancerConfig,
)
from vehicle_agent.enhance.base import (
    BackendUnavailableError,
    Enhancer,
    EnhancerError,
    EnhancerEvent,
)
from vehicle_agent.enhance.chain import BackendSpec, EnhancerChain, Gate
from vehicle_agent.enhance.classical import ClassicalEnhancer
from vehicle_agent.enhance.store import ModelStore
from vehicle_agent.records import Image

PROMOTE_S = 10.0


def make_chain(
    models: Path,
    clock: FakeClock,
    script: Script,
    *,
    gate: Gate | None = None,
    background: bool = False,
    slow_frames: int = 3,
    extra: list[BackendSpec] | None = None,
) -> EnhancerChain:
    script.clock = clock
    specs = [
        BackendSpec("scripted", ScriptedConfig(script), needs_model=True),
        *(extra or []),
        BackendSpec("classical", ClassicalEnhancerConfig(), needs_model=False),
    ]
    return EnhancerChain(
        specs,
        gate or Gate("tiny", {}),
        ModelStore([models]),
        EnhanceHealthConfig(
            max_latency_ms=100.0, slow_frames=slow_frames, promote_after_s=PROMOTE_S
        ),
        background=background,
        clock=clock,
        factory=factory,
        guard=None,  # these tests follow frames through the chain, not their quality
    )


def types(events: list[EnhancerEvent]) -> list[str]:
    return [e.type for e in events]


def test_a_healthy_chain_runs_the_model_and_reports_it_loaded(
    models: Path, clock: FakeClock
) -> None:
    chain = make_chain(models, clock, Script())
    chain.load()
    assert types(chain.drain_events()) == ["model_loaded"]
    image = frame()
    np.testing.assert_allclose(chain.enhance(image), halved(image), atol=1)
    assert chain.name == "scripted:tiny"
    assert chain.drain_events() == []  # no swap: it was the active one from the start
    chain.close()


@pytest.mark.parametrize(
    ("mode", "kind", "words"),
    [
        ("raise", "error", "illegal memory access"),
        ("nan", "nan", "NaN"),
        ("blank", "blank", "blank output"),
    ],
)
def test_a_failing_backend_is_demoted_at_once_and_the_frame_comes_from_the_next(
    models: Path, clock: FakeClock, mode: str, kind: str, words: str
) -> None:
    script = Script()
    chain = make_chain(models, clock, script)
    chain.load()
    chain.enhance(frame())
    chain.drain_events()
    script.mode = mode
    image = frame(1)
    out = chain.enhance(image)
    # The same frame went on to the classical backend: no frame is lost to the failure.
    assert np.array_equal(out, ClassicalEnhancer().enhance(image))
    assert chain.name == "classical"
    events = chain.drain_events()
    assert types(events) == ["enhancer_demoted", "model_swapped"]
    demoted, swapped = events
    assert demoted.data["backend"] == "scripted"
    assert demoted.data["model"] == "tiny"
    assert demoted.data["kind"] == kind
    assert words in str(demoted.data["reason"])
    assert demoted.data["retry_in_s"] == PROMOTE_S
    assert swapped.data == {
        "previous": "scripted:tiny",
        "current": "classical",
        "reason": "fallback",
        "condition": None,
    }
    chain.close()


def test_a_replay_times_retries_by_its_timer_not_the_host_clock(
    models: Path, clock: FakeClock
) -> None:
    """A replay at full speed: the host clock races (or crawls); the video time decides."""
    script = Script()
    chain = make_chain(models, clock, script)
    video = FakeClock()
    chain.use_timer(video)
    chain.load()
    script.mode = "raise"
    chain.enhance(frame())
    script.mode = "ok"
    loads = script.loads
    clock.advance(100 * PROMOTE_S)  # an hour of host time: no retry, the video has not moved
    chain.enhance(frame())
    assert (script.loads, chain.name) == (loads, "classical")
    video.advance(PROMOTE_S + 1)
    chain.enhance(frame())
    assert (script.loads, chain.name) == (loads + 1, "scripted:tiny")
    promoted = next(e for e in chain.drain_events() if e.type == "enhancer_promoted")
    assert promoted.data["demoted_s"] == pytest.approx(PROMOTE_S + 1)
    chain.close()


def test_a_demoted_backend_is_checked_after_promote_after_s_and_promoted_when_healthy(
    models: Path, clock: FakeClock
) -> None:
    script = Script()
    chain = make_chain(models, clock, script)
    chain.load()
    script.mode = "raise"
    chain.enhance(frame())
    chain.drain_events()
    loads = script.loads
    # Before promote_after_s: no health check at all.
    clock.advance(PROMOTE_S - 1)
    chain.enhance(frame())
    assert script.loads == loads
    # Due, but still broken: the failed check is reported (not as a second demotion), and the
    # next one waits twice as long.
    clock.advance(2)
    chain.enhance(frame())
    assert script.loads == loads + 1
    (failed,) = chain.drain_events()
    assert failed.type == "enhancer_check_failed"
    assert failed.data["kind"] == "load"  # its warm-up frame raised
    assert "illegal memory access" in str(failed.data["reason"])
    assert (failed.data["failed_checks"], failed.data["retry_in_s"]) == (1, 2 * PROMOTE_S)
    assert chain.name == "classical"
    clock.advance(PROMOTE_S)
    chain.enhance(frame())
    assert script.loads == loads + 1  # not due yet: backing off
    # Fixed: the next check (a fresh load + one probe frame) promotes it, on that very frame.
    script.mode = "ok"
    clock.advance(PROMOTE_S)
    image = frame(2)
    np.testing.assert_allclose(chain.enhance(image), halved(image), atol=1)
    events = chain.drain_events()
    assert types(events) == ["model_loaded", "enhancer_promoted", "model_swapped"]
    promoted = events[1]
    assert promoted.data["backend"] == "scripted"
    assert promoted.data["demoted_s"] == pytest.approx(3 * PROMOTE_S + 1)
    assert events[2].data["reason"] == "promoted"
    assert chain.name == "scripted:tiny"
    chain.close()


def test_a_slow_backend_is_demoted_after_n_slow_frames_in_a_row_keeping_the_last_frame(
    models: Path, clock: FakeClock
) -> None:
    script = Script(slow_s=0.5)  # 500 ms per frame against a 100 ms limit
    chain = make_chain(models, clock, script, slow_frames=3)
    chain.load()
    chain.drain_events()
    image = frame()
    script.mode = "slow"
    chain.enhance(image)
    script.mode = "ok"
    chain.enhance(image)  # a fast frame resets the count
    script.mode = "slow"
    outs = [chain.enhance(image) for _ in range(3)]
    # All three slow frames still came from the model (they were good, only late)…
    for out in outs:
        np.testing.assert_allclose(out, halved(image), atol=1)
    events = chain.drain_events()
    assert types(events) == ["enhancer_demoted"]
    assert events[0].data["kind"] == "slow"
    assert "3 frames in a row over 100 ms" in str(events[0].data["reason"])
    # …and the next goes to the classical backend.
    assert np.array_equal(chain.enhance(image), ClassicalEnhancer().enhance(image))
    assert chain.name == "classical"
    chain.close()


def test_a_missing_model_falls_back_and_is_picked_up_once_it_arrives(
    tmp_path: Path, clock: FakeClock
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    chain = make_chain(models, clock, Script())
    chain.load()
    events = chain.drain_events()
    assert types(events) == ["enhancer_demoted"]
    assert events[0].data["kind"] == "load"
    assert "model 'tiny' not found in" in str(events[0].data["reason"])
    assert chain.name == "classical"
    image = frame()
    assert np.array_equal(chain.enhance(image), ClassicalEnhancer().enhance(image))
    model_dir(models, "tiny")  # e.g. delivered by a model update
    clock.advance(PROMOTE_S)
    np.testing.assert_allclose(chain.enhance(image), halved(image), atol=1)
    assert types(chain.drain_events()) == ["model_loaded", "enhancer_promoted", "model_swapped"]
    chain.close()


def test_an_unavailable_backend_is_reported_once_and_never_retried(
    models: Path, clock: FakeClock
) -> None:
    def no_gpu(config: object, **context: object) -> Enhancer:
        if getattr(config, "type", "") == "tensorrt":
            raise BackendUnavailableError("tensorrt", "tensorrt not importable: no module")
        return factory(config, **context)

    script = Script()
    chain = make_chain(models, clock, script)
    chain.specs.insert(0, BackendSpec("tensorrt", TensorRtEnhancerConfig(), needs_model=True))
    chain.factory = no_gpu
    chain.load()
    events = chain.drain_events()
    assert types(events) == ["enhancer_demoted", "model_loaded"]
    assert events[0].data["kind"] == "unavailable"
    assert events[0].data["retry_in_s"] is None
    assert "backend unavailable: tensorrt not importable" in str(events[0].data["reason"])
    assert chain.name == "scripted:tiny"
    clock.advance(10 * PROMOTE_S)
    chain.enhance(frame())
    assert chain.drain_events() == []
    chain.close()


def test_a_load_failure_is_demoted_and_everything_failing_still_gives_frames(
    models: Path, clock: FakeClock
) -> None:
    script = Script(load_fails=True)
    chain = make_chain(models, clock, script)
    chain.specs.pop()  # no classical either: only passthrough is left
    chain.load()
    events = chain.drain_events()
    assert types(events) == ["enhancer_demoted"]
    assert "engine deserialisation failed" in str(events[0].data["reason"])
    image = frame()
    assert np.array_equal(chain.enhance(image), image)
    assert chain.name == "passthrough"
    chain.close()


def test_health_checks_run_in_the_background_while_frames_go_to_the_next_backend(
    models: Path, clock: FakeClock
) -> None:
    script = Script()
    chain = make_chain(models, clock, script, background=True)
    chain.load()
    script.mode = "raise"
    image = frame()
    chain.enhance(image)
    script.mode = "ok"
    script.hold = threading.Event()
    clock.advance(PROMOTE_S + 1)
    # These frames start the check on the loader thread (a slow load) and are served by
    # classical meanwhile: the frame path never waits for a load.
    for _ in range(3):
        assert np.array_equal(chain.enhance(image), ClassicalEnhancer().enhance(image))
    assert any(t.name.startswith("enhance-loader") for t in threading.enumerate())
    script.hold.set()
    chain.wait_idle()
    # The finished check is taken up between two frames: the next one is the model's again.
    np.testing.assert_allclose(chain.enhance(image), halved(image), atol=1)
    assert "enhancer_promoted" in types(chain.drain_events())
    chain.close()


def test_gating_follows_the_condition_with_hysteresis(tmp_path: Path, clock: FakeClock) -> None:
    models = tmp_path / "models"
    model_dir(models, "night")
    model_dir(models, "dehaze", task="dehaze")
    gate = Gate(
        "night",
        {"normal": "none", "fog": "dehaze", "rain": "classical", "low_light": "night"},
        switch_after=2,
    )
    chain = make_chain(models, clock, Script(), gate=gate)
    chain.load()
    loaded = [e.data["model"] for e in chain.drain_events() if e.type == "model_loaded"]
    assert sorted(str(m) for m in loaded) == [
        "dehaze@1.0.0",
        "night@1.0.0",
    ]  # every gated model, warm
    image = frame()
    chain.enhance(image)
    assert chain.name == "scripted:night"  # unknown condition: the default model

    chain.set_condition("fog")
    chain.enhance(image)
    assert chain.name == "scripted:night"  # one fog frame is not enough
    chain.set_condition("fog")
    chain.enhance(image)
    assert chain.name == "scripted:dehaze"
    swapped = [e for e in chain.drain_events() if e.type == "model_swapped"]
    assert swapped[-1].data == {
        "previous": "scripted:night",
        "current": "scripted:dehaze",
        "reason": "condition",
        "condition": "fog",
    }

    for _ in range(2):
        chain.set_condition("normal")
    assert np.array_equal(chain.enhance(image), image)  # 'none': nothing runs on a good picture
    assert chain.name == "passthrough"

    for _ in range(2):
        chain.set_condition("rain")
    assert np.array_equal(chain.enhance(image), ClassicalEnhancer().enhance(image))
    assert chain.name == "classical"

    for _ in range(2):
        chain.set_condition("snow")  # not in the table: the default model
    chain.enhance(image)
    assert chain.name == "scripted:night"
    chain.close()


def test_a_condition_flickering_at_a_threshold_does_not_switch_models() -> None:
    gate = Gate("night", {"normal": "none"}, switch_after=3)
    for condition in ["normal", "low_light", "normal", "normal", "low_light"] * 4:
        gate.observe(condition)
        assert gate.current[0] == "night"
    for _ in range(3):
        gate.observe("normal")
    assert gate.current == ("none", "normal")


# -- backends that prepare in the background (a TensorRT engine build) -------------------------


def prepared_chain(
    models: Path, clock: FakeClock, builder: Builder, *, background: bool = True
) -> EnhancerChain:
    script = Script(clock=clock)
    return EnhancerChain(
        [
            BackendSpec("prepared", PreparedConfig(script, builder, gain=0.25), needs_model=True),
            BackendSpec("scripted", ScriptedConfig(script), needs_model=True),
        ],
        Gate("tiny", {}),
        ModelStore([models]),
        EnhanceHealthConfig(promote_after_s=PROMOTE_S, promote_max_s=4 * PROMOTE_S),
        background=background,
        clock=clock,
        factory=factory,
        guard=None,
    )


def quartered(image: Image) -> Image:
    return np.asarray(np.clip(image.astype(np.float32) * 0.25 + 0.5, 0, 255), np.uint8)


def test_load_does_not_wait_for_a_build_and_the_built_backend_is_promoted_when_done(
    models: Path, clock: FakeClock
) -> None:
    builder = Builder(hold=threading.Event())
    chain = prepared_chain(models, clock, builder)
    chain.load()  # returns while the build is held: start-up is not the build's time
    events = chain.drain_events()
    assert types(events) == ["enhancer_preparing", "model_loaded"]
    assert events[0].data == {
        "backend": "prepared",
        "model": "tiny",
        "reason": "engine build (no cached engine)",
    }
    assert events[1].data["backend"] == "scripted"
    assert chain.name == "scripted:tiny"
    assert chain.model_label == "tiny@1.0.0"
    image = frame()
    np.testing.assert_allclose(chain.enhance(image), halved(image), atol=1)
    clock.advance(5)
    builder.hold.set()  # type: ignore[union-attr]
    chain.wait_idle()
    np.testing.assert_allclose(chain.enhance(image), quartered(image), atol=1)
    events = chain.drain_events()
    assert types(events) == ["model_loaded", "enhancer_prepared", "model_swapped"]
    assert events[1].data["prepare_s"] == pytest.approx(5.0)
    assert events[2].data["reason"] == "promoted"
    assert events[2].data["current"] == "prepared:tiny"
    assert builder.builds == 1
    chain.close()


def test_a_failed_build_is_a_load_demotion_retried_with_a_growing_wait(
    models: Path, clock: FakeClock
) -> None:
    builder = Builder(fails=True)
    chain = prepared_chain(models, clock, builder)
    chain.load()
    chain.wait_idle()
    image = frame()
    np.testing.assert_allclose(chain.enhance(image), halved(image), atol=1)
    events = chain.drain_events()
    demoted = next(e for e in events if e.type == "enhancer_demoted")
    assert (demoted.data["kind"], demoted.data["retry_in_s"]) == ("load", PROMOTE_S)
    assert "engine build failed: out of memory" in str(demoted.data["reason"])
    waits: list[object] = []
    for wait in (PROMOTE_S, 2 * PROMOTE_S, 4 * PROMOTE_S):
        clock.advance(wait - 1)
        chain.enhance(image)
        chain.wait_idle()
        assert builder.builds == len(waits) + 1  # not due yet: no new attempt
        clock.advance(1)
        chain.enhance(image)
        chain.wait_idle()
        chain.enhance(image)
        (failed,) = [e for e in chain.drain_events() if e.type == "enhancer_check_failed"]
        waits.append(failed.data["retry_in_s"])
    assert waits == [2 * PROMOTE_S, 4 * PROMOTE_S, 4 * PROMOTE_S]  # capped at promote_max_s
    assert chain.name == "scripted:tiny"
    builder.fails = False
    clock.advance(4 * PROMOTE_S)
    chain.enhance(image)
    chain.wait_idle()
    np.testing.assert_allclose(chain.enhance(image), quartered(image), atol=1)
    assert "enhancer_promoted" in types(chain.drain_events())
    chain.close()


def test_without_a_background_thread_the_build_happens_in_load(
    models: Path, clock: FakeClock
) -> None:
    builder = Builder()
    chain = prepared_chain(models, clock, builder, background=False)  # offline enhancement
    chain.load()
    assert types(chain.drain_events()) == ["model_loaded"]
    assert chain.name == "prepared:tiny"
    assert builder.builds == 1
    chain.close()


def test_closing_the_chain_cancels_a_build_still_running(models: Path, clock: FakeClock) -> None:
    builder = Builder(hold=threading.Event())
    chain = prepared_chain(models, clock, builder)
    chain.load()
    chain.close()
    assert builder.cancelled == 1
    assert not any(t.name.startswith("enhance-loader") for t in threading.enumerate())


def floorless_chain(models: Path, clock: FakeClock, *scripts: Script) -> EnhancerChain:
    """Scripted model backends only, no passthrough after them (offline, a named model)."""
    for script in scripts:
        script.clock = clock
    return EnhancerChain(
        [BackendSpec("scripted", ScriptedConfig(s), needs_model=True) for s in scripts],
        Gate("tiny", {}),
        ModelStore([models]),
        EnhanceHealthConfig(max_latency_ms=100.0, slow_frames=2, promote_after_s=PROMOTE_S),
        background=False,
        clock=clock,
        factory=factory,
        guard=None,
        floor=False,
    )


def test_without_a_floor_the_last_backend_failing_to_load_is_an_error(
    models: Path, clock: FakeClock
) -> None:
    chain = floorless_chain(models, clock, Script(load_fails=True))
    with pytest.raises(EnhancerError, match="engine deserialisation failed") as caught:
        chain.load()
    assert caught.value.backend == "scripted:tiny"
    assert chain.describe() == "scripted"  # no passthrough floor
    chain.close()


def test_without_a_floor_an_earlier_backend_still_falls_back_to_a_later_one(
    models: Path, clock: FakeClock
) -> None:
    broken, healthy = Script(load_fails=True), Script()
    chain = floorless_chain(models, clock, broken, healthy)
    chain.load()
    image = frame()
    np.testing.assert_allclose(chain.enhance(image), halved(image), atol=1)
    healthy.mode = "raise"  # the last one left fails on a frame: an error, not a copy
    with pytest.raises(EnhancerError, match="illegal memory access"):
        chain.enhance(image)
    chain.close()


def test_without_a_floor_a_slow_last_backend_keeps_giving_frames(
    models: Path, clock: FakeClock
) -> None:
    chain = floorless_chain(models, clock, Script(mode="slow"))
    chain.load()
    image = frame()
    for _ in range(4):
        np.testing.assert_allclose(chain.enhance(image), halved(image), atol=1)
    assert chain.name == "scripted:tiny"
    chain.close()


def test_a_gated_model_that_cannot_run_falls_back_to_the_default_model_before_classical(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The restoration model gated on low light, absent (or slow, or broken): the frame gets
    the default model on the same backend, not the model-free CLAHE of the chain's end."""
    models = tmp_path / "models"
    model_dir(models, "night")  # the default model; "restore" is not installed
    gate = Gate("night", {"low_light": "restore"}, switch_after=1)
    chain = make_chain(models, clock, Script(), gate=gate)
    chain.load()
    assert [c.label for c in chain.candidates_for("restore")] == [
        "scripted:restore",
        "scripted:night",
        "classical",
    ]
    # The default model itself and 'classical' get no extra candidates.
    assert [c.label for c in chain.candidates_for("night")] == ["scripted:night", "classical"]
    assert [c.label for c in chain.candidates_for("classical")] == ["classical"]
    chain.set_condition("low_light")
    image = frame()
    np.testing.assert_allclose(chain.enhance(image), halved(image), atol=1)
    assert chain.name == "scripted:night"
    chain.close()
