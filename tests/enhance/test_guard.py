"""The harm guard: a backend's output is kept where it helps and falls back to the input where
it darkens, washes out, or amplifies noise; its weight is smoothed over frames; the chain runs
every backend output through it by default."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from tests.enhance.helpers import FakeClock, Script, ScriptedConfig, factory, halved
from vehicle_agent.config import ClassicalEnhancerConfig, EnhanceConfig, EnhanceHealthConfig
from vehicle_agent.enhance.chain import (
    DEFAULT_GUARD,
    BackendSpec,
    EnhancerChain,
    Gate,
    build_enhancer,
)
from vehicle_agent.enhance.classical import ClassicalEnhancer
from vehicle_agent.enhance.guard import GuardParams, HarmGuard
from vehicle_agent.enhance.store import ModelStore
from vehicle_agent.records import Image

Floats = npt.NDArray[np.float64]


def clean_luma(mean: float, contrast: float, size: tuple[int, int] = (180, 320)) -> Floats:
    """A street-like luma plane: a gradient, a checkerboard of edges and a fine texture, scaled to
    the given mean and RMS contrast."""
    h, w = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = 0.6 * x / w + 0.4 * y / h
    base += 0.5 * ((x // 24 + y // 24) % 2)
    base += 0.25 * np.sin(x / 5.0) * np.cos(y / 7.0)
    return np.asarray(mean + contrast * (base - base.mean()) / base.std(), np.float64)


def to_bgr(luma: Floats, grain: Floats | float = 0.0) -> Image:
    """A slightly warm colour frame around `luma`, plus `grain`."""
    bgr = np.stack([luma * 0.9, luma, luma * 1.05], axis=2) + grain
    return np.asarray(np.clip(bgr + 0.5, 0, 255), np.uint8)


def scene(mean: float, contrast: float, noise: float = 0.0, seed: int = 0) -> tuple[Image, Floats]:
    """The frame, with Gaussian sensor noise of std `noise`, and the noise that was added."""
    luma = clean_luma(mean, contrast)
    grain = np.random.default_rng(seed).normal(0.0, noise, (*luma.shape, 3))
    return to_bgr(luma, grain), grain


def gamma(image: Image, exponent: float) -> Image:
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** exponent + 0.5, 0, 255).astype(np.uint8)
    return np.asarray(cv2.LUT(image, lut), np.uint8)


def max_diff(a: Image, b: Image) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


@pytest.mark.parametrize(
    ("name", "worsen"),
    [
        ("darkened", lambda f: f * 0.75),
        ("washed out", lambda f: f * 0.5 + 64),
    ],
)
def test_a_good_frame_made_darker_or_flatter_comes_back_as_the_input(
    name: str, worsen: object
) -> None:
    good, _ = scene(115, 50, noise=1.5)
    output = np.asarray(np.clip(worsen(good.astype(np.float64)), 0, 255), np.uint8)  # type: ignore[operator]
    guard = HarmGuard()
    shown = guard.apply(good, output)
    assert max_diff(shown, good) <= 2, name
    assert guard.last is not None
    assert guard.last.weight < 0.05


def test_a_clean_flat_scene_darkened_is_refused_for_the_darkening() -> None:
    """The held-out failure: a clean, flat, mid-grey scene darkened by 28 grey levels."""
    flat, _ = scene(110, 15, noise=1.0)
    darker = np.asarray(np.clip(flat.astype(np.int16) - 28, 0, 255), np.uint8)
    guard = HarmGuard()
    assert max_diff(guard.apply(flat, darker), flat) <= 2
    assert guard.last is not None
    assert guard.last.darkening == 0.0


@pytest.mark.parametrize("how", ["gamma", "classical"])
def test_a_dark_frame_sensibly_brightened_keeps_the_output(how: str) -> None:
    dark, _ = scene(30, 14, noise=2.0)
    output = gamma(dark, 0.5) if how == "gamma" else ClassicalEnhancer().enhance(dark)
    guard = HarmGuard()
    shown = guard.apply(dark, output)
    assert guard.last is not None
    assert guard.last.weight > 0.9, guard.last
    assert np.abs(shown.astype(np.int16) - output.astype(np.int16)).mean() < 2.0


def test_an_output_that_amplifies_the_noise_of_a_dark_frame_is_pulled_back() -> None:
    dark, grain = scene(30, 14, noise=4.0, seed=1)
    brightened = gamma(dark, 0.5)
    # The same brightening, plus the frame's own noise amplified threefold (a model that mistakes
    # grain for texture): the picture is no brighter, but much grainier.
    noisy = np.asarray(np.clip(brightened + 3.0 * grain, 0, 255), np.uint8)
    guard = HarmGuard()
    shown = guard.apply(dark, noisy)
    assert guard.last is not None
    assert guard.last.reason == "noise"
    assert guard.last.weight < 0.2
    assert (
        np.abs(shown.astype(np.int16) - dark.astype(np.int16)).mean()
        < 0.25 * np.abs(noisy.astype(np.int16) - dark.astype(np.int16)).mean()
    )
    # The brightening alone, on the same noisy frame, is kept.
    control = HarmGuard()
    control.apply(dark, brightened)
    assert control.last is not None
    assert control.last.weight > 0.9


def _grainier(seed: int) -> tuple[Image, Image]:
    """A dark noisy frame and a brightened output with its grain somewhat amplified: a partial
    objection of the noise rule, which varies a little with each frame's grain."""
    dark, grain = scene(30, 14, noise=4.0, seed=seed)
    return dark, np.asarray(np.clip(gamma(dark, 0.5) + 1.2 * grain, 0, 255), np.uint8)


def test_the_weight_holds_steady_over_a_stream_whose_frames_vary() -> None:
    guard = HarmGuard()
    targets, weights = [], []
    for seed in range(12):
        decision = guard.decide(*_grainier(seed))
        targets.append(decision.target)
        weights.append(decision.weight)
    assert 0.3 < weights[-1] < 0.95  # a partial pull-back: a blend is shown
    assert np.ptp(targets[3:]) > 0.03  # each frame's own verdict moves …
    assert np.ptp(weights[3:]) < 0.4 * np.ptp(targets[3:])  # … the weight shown much less


def test_the_weight_follows_a_change_over_a_few_frames_not_in_one_jump() -> None:
    dark, grain = scene(30, 14, noise=4.0, seed=1)
    good = gamma(dark, 0.5)
    bad = np.asarray(np.clip(good + 5.0 * grain, 0, 255), np.uint8)
    guard = HarmGuard()
    assert guard.decide(dark, good).weight == 1.0  # the first frame starts at its own target
    # A step to a harmful output pulls back within a few frames, not in one jump.
    falling = [guard.decide(dark, bad).weight for _ in range(6)]
    assert falling[0] > 0.5
    assert falling[-1] < 0.1
    assert all(b < a for a, b in itertools.pairwise(falling))
    # Targets flipping every frame move the shown weight far less than they move themselves.
    flipping = [guard.decide(dark, good if i % 2 else bad).weight for i in range(20)]
    steps = np.abs(np.diff(flipping[4:]))
    assert steps.max() < 0.25
    # Trust comes back more slowly than it goes.
    guard.reset()
    guard.decide(dark, bad)
    rising = [guard.decide(dark, good).weight for _ in range(3)]
    assert rising[0] < 0.3
    assert rising[-1] < 0.6


def test_a_frame_narrower_than_the_thumbnail_is_measured_whole() -> None:
    small = to_bgr(clean_luma(30, 14, size=(45, 61)))
    guard = HarmGuard(GuardParams(thumb_width=80))
    guard.apply(small, gamma(small, 0.5))
    assert guard.last is not None
    assert guard.last.weight > 0.9


@pytest.mark.parametrize(
    ("image", "output", "words"),
    [
        (np.zeros((40, 60, 3), np.uint8), np.zeros((40, 61, 3), np.uint8), "differs from input"),
        (np.zeros((40, 60, 3), np.uint8), np.zeros((40, 60, 3), np.float32), "dtype is float32"),
        (np.zeros((40, 60), np.uint8), np.zeros((40, 60), np.uint8), "H×W×3"),
        ("not an image", np.zeros((40, 60, 3), np.uint8), "numpy array"),
    ],
)
def test_bad_frames_are_refused_with_the_reason(image: object, output: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        HarmGuard().apply(image, output)  # type: ignore[arg-type]


def test_parameters_that_make_an_empty_ramp_are_refused() -> None:
    with pytest.raises(ValueError, match="darken needs low < high"):
        GuardParams(darken_tolerance=10.0, darken_limit=5.0)


def _chain(
    models: Path, table: dict[str, str], guard: GuardParams | None = DEFAULT_GUARD
) -> EnhancerChain:
    """The scripted model (it halves the picture), then classical."""
    specs = [
        BackendSpec("scripted", ScriptedConfig(Script()), needs_model=True),
        BackendSpec("classical", ClassicalEnhancerConfig(), needs_model=False),
    ]
    return EnhancerChain(
        specs,
        Gate("tiny", table),
        ModelStore([models]),
        EnhanceHealthConfig(max_latency_ms=10_000.0),
        background=False,
        clock=FakeClock(),
        factory=factory,
        guard=guard,
    )


def test_the_default_runtime_guards_the_classical_backend_and_can_be_built_without(
    tmp_path: Path,
) -> None:
    good, _ = scene(115, 50, noise=1.5)
    config = EnhanceConfig(chain=[ClassicalEnhancerConfig()])
    runtime = build_enhancer(config, tmp_path / "state", background=False)
    runtime.load()
    # CLAHE changes a good frame; the guard, on unless asked otherwise, shows the frame instead.
    assert max_diff(ClassicalEnhancer().enhance(good), good) > 10
    assert max_diff(runtime.enhance(good), good) <= 2
    assert runtime.name == "classical"
    runtime.close()
    raw = build_enhancer(config, tmp_path / "state", background=False, guard=None)
    raw.load()
    assert np.array_equal(raw.enhance(good), ClassicalEnhancer().enhance(good))
    raw.close()


def test_the_chain_guards_a_model_output_and_can_be_built_without(models: Path) -> None:
    good, _ = scene(115, 50, noise=1.5)
    guarded = _chain(models, {})
    guarded.load()
    # The scripted model halves the picture: on a good frame the guard shows the input instead.
    assert max_diff(guarded.enhance(good), good) <= 2
    assert guarded.name == "scripted:tiny"  # the backend still gave the frame
    assert guarded.guard is not None
    assert guarded.guard.last is not None
    guarded.close()
    unguarded = _chain(models, {}, guard=None)
    unguarded.load()
    assert unguarded.guard is None
    assert max_diff(unguarded.enhance(good), halved(good)) <= 1
    unguarded.close()


def test_passthrough_frames_skip_the_guard(models: Path) -> None:
    chain = _chain(models, {"normal": "none"})
    chain.load()
    chain.set_condition("normal")
    good, _ = scene(115, 50)
    assert chain.enhance(good) is good
    assert chain.guard is not None
    assert chain.guard.last is None
    chain.close()
