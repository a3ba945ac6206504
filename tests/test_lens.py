"""The simulated lens: the `--inject` spec, the soiling renderer's true mask, clearing by the fan,
and the frame source seen through the lens."""

from __future__ import annotations

import numpy as np
import pytest

from tests.fakes import Step, scripted_factory
from tests.quality.footage import street
from vehicle_agent.records import Actuation, Frame, FrameRecord
from vehicle_agent.sim.lens import (
    BLOW_SECONDS,
    KINDS,
    AdhesionLayer,
    Injection,
    InjectSpecError,
    LensFan,
    SimulatedLens,
    parse_inject,
    render_adhesion,
    through_lens,
)


def test_a_spec_lists_kinds_with_start_end_and_coverage() -> None:
    assert parse_inject("drops@20s-35s,mud@45s") == (
        Injection("drops", 20.0, 35.0, None, 0),
        Injection("mud", 45.0, None, None, 1),
    )
    (mist,) = parse_inject(" mist@1m30s:12% ", seed=2)
    assert (mist.kind, mist.start_s, mist.end_s, mist.seed) == ("mist", 90.0, None, 2000)
    assert mist.coverage == pytest.approx(0.12)
    assert parse_inject("dust@2.5")[0].start_s == 2.5


@pytest.mark.parametrize(
    ("spec", "part", "words"),
    [
        ("drops@20s,snow@3s", "snow@3s", "unknown kind 'snow'"),
        ("drops", "drops", "missing '@START'"),
        ("drops@20x", "drops@20x", "bad start time '20x'"),
        ("drops@20s-1y", "drops@20s-1y", "bad end time '1y'"),
        ("mud@30s-20s", "mud@30s-20s", "end time is not after the start"),
        ("mud@3s:lots", "mud@3s:lots", "bad coverage 'lots'"),
        ("mud@3s:95%", "mud@3s:95%", "out of range"),
        ("drops@1s,,mud@2s", "", "empty item"),
        ("", "", "empty spec"),
    ],
)
def test_a_bad_spec_error_names_the_bad_part(spec: str, part: str, words: str) -> None:
    with pytest.raises(InjectSpecError) as caught:
        parse_inject(spec)
    assert caught.value.part == part
    assert words in str(caught.value)


@pytest.mark.parametrize("kind", KINDS)
def test_the_renderer_returns_the_true_mask_near_the_asked_coverage(kind: str) -> None:
    frame = street()[0]
    image, mask = render_adhesion(frame, kind, coverage=0.05, seed=1)  # type: ignore[arg-type]
    assert mask.shape == frame.shape[:2]
    assert mask.dtype == np.bool_
    assert 0.025 < mask.mean() < 0.1
    changed = np.abs(image.astype(int) - frame.astype(int)).max(axis=2) > 12
    # The picture changes where the mask says, and hardly anywhere else.
    assert changed[mask].mean() > 0.5
    assert changed[~mask].mean() < 0.05


def test_the_renderer_is_deterministic_for_a_seed_and_leaves_the_input_alone() -> None:
    frame = street()[3]
    a, mask_a = render_adhesion(frame, "drops", seed=7)
    b, mask_b = render_adhesion(frame, "drops", seed=7)
    c, _ = render_adhesion(frame, "drops", seed=8)
    assert np.array_equal(a, b)
    assert np.array_equal(mask_a, mask_b)
    assert not np.array_equal(a, c)
    assert not frame.flags.writeable  # read-only input: the renderer returned a new image


def test_drops_keep_their_place_and_size_at_any_resolution() -> None:
    layer = AdhesionLayer("drops", 0.04, seed=3, aspect=4 / 3)
    _, big = layer.render(np.zeros((576, 768, 3), np.uint8))
    _, small = layer.render(np.zeros((240, 320, 3), np.uint8))
    assert big.mean() == pytest.approx(small.mean(), abs=0.005)


def test_injected_soiling_shows_from_its_start_and_goes_at_its_end() -> None:
    lens = SimulatedLens(parse_inject("drops@2s-4s"))
    frame = street()[0]
    image, mask = lens.apply(frame, 1.9)
    assert not mask.any()
    assert image is frame
    _, mask = lens.apply(frame, 2.0)
    assert mask.mean() > 0.02
    _, mask = lens.apply(frame, 4.0)
    assert not mask.any()
    truth = lens.ground_truth()[0]
    assert (truth["appeared_s"], truth["gone_s"], truth["gone_reason"]) == (2.0, 4.0, "ended")


def test_the_fan_clears_soiling_after_blowing_long_enough() -> None:
    lens = SimulatedLens(parse_inject("drops@0s,mud@0s"))
    frame = street()[0]
    _, before = lens.apply(frame, 0.0)
    lens.blow(0.1, 100.0)  # too weak to move anything
    _, mask = lens.apply(frame, 0.1)
    assert mask.mean() == pytest.approx(before.mean())
    lens.blow(0.5, BLOW_SECONDS["drops"])  # half duty: half the drops go
    _, half = lens.apply(frame, 0.2)
    assert 0 < half.mean() < before.mean()
    lens.blow(1.0, BLOW_SECONDS["drops"])
    _, after = lens.apply(frame, 0.3)
    truth = {t["kind"]: t for t in lens.ground_truth()}
    assert truth["drops"]["gone_reason"] == "blown_clear"
    assert truth["mud"]["gone_reason"] == "still_on_lens"  # mud needs much longer
    lens.blow(1.0, BLOW_SECONDS["mud"])
    _, clean = lens.apply(frame, 0.4)
    assert not clean.any()
    assert after.mean() > 0


def test_the_fan_duty_of_analysed_frames_blows_the_lens() -> None:
    lens = SimulatedLens(parse_inject("drops@0s"))
    fan = LensFan(lens)
    lens.apply(street()[0], 0.0)
    frame = street()[0]
    for i in range(40):
        t = i / 10
        fan(FrameRecord(Frame(i, 0.0, t, frame, "x"), actuation=Actuation(fan_duty=1.0)))
    _, mask = lens.apply(frame, 4.0)
    assert not mask.any()
    assert lens.ground_truth()[0]["blown_s"] == pytest.approx(BLOW_SECONDS["drops"], abs=0.2)


def test_a_source_seen_through_the_lens_gets_soiling_at_its_timestamps_and_across_loops() -> None:
    lens = SimulatedLens(parse_inject("mud@0.5s-1.5s"))
    factory, _ = scripted_factory([Step("frame", 100)] * 10, live=False, fps=10.0)
    source = through_lens(factory, lens)()
    source.open()
    soiled = []
    for _ in range(10):
        raw = source.read()
        assert raw is not None
        soiled.append(bool((raw.image != 100).any()))
    assert soiled == [False] * 5 + [True] * 5
    source.rewind()  # the recording loops: its time goes on from 1.0 s, past the end at 1.5 s
    raw = source.read()
    assert raw is not None
    assert (raw.image != 100).any()
    for _ in range(5):
        raw = source.read()
    assert raw is not None
    assert not (raw.image != 100).any()
    source.close()
