"""The lens adhesion detector on real street footage: drops are flagged within a second, and
clean footage, still scenes, uniform skies, night and passing trucks never raise the alarm."""

from __future__ import annotations

import numpy as np
import pytest

from tests.quality.footage import (
    FPS,
    darkened,
    first_alarm,
    looped,
    noisy,
    panning,
    run,
    soiled,
    street,
    truck,
)
from vehicle_agent.quality.adhesion import AdhesionDetector, TileGrid
from vehicle_agent.quality.metrics import prepare
from vehicle_agent.quality.settings import AdhesionConfig
from vehicle_agent.records import Image
from vehicle_agent.sim.lens import AdhesionLayer, SimulatedLens, parse_inject


@pytest.mark.parametrize(("seed", "onset_s"), [(1, 8.0), (5, 14.0), (9, 21.0)])
def test_drops_covering_2_percent_are_detected_within_a_second(seed: int, onset_s: float) -> None:
    layer = AdhesionLayer("drops", coverage=0.02, seed=seed)
    onset = round(onset_s * FPS)
    alarm = first_alarm(soiled(looped, layer, onset), onset + 20)
    assert alarm is not None, "drops were never detected"
    assert onset_s <= alarm <= onset_s + 1.0


@pytest.mark.parametrize("kind", ["mud", "mist", "dust"])
def test_mud_mist_and_dust_are_detected(kind: str) -> None:
    layer = AdhesionLayer(kind, seed=2)  # type: ignore[arg-type]
    alarm = first_alarm(soiled(looped, layer, 100), 140)
    assert alarm is not None
    assert 10.0 <= alarm <= 12.0


def test_clean_footage_looped_never_alarms() -> None:
    """Three passes of the clip, seams included: people walk, stop, leave; nothing is flagged."""
    worst = max(e.covered_fraction for _, e in run(looped, 3 * len(street())))
    assert worst < AdhesionConfig().alarm_fraction


def test_a_still_scene_never_alarms() -> None:
    """Standing still with nothing moving (one frame repeated): no onset, no alarm."""
    frame = street()[120]
    assert not any(e.detected or e.covered_fraction for _, e in run(lambda _: frame, 400))


def test_a_uniform_sky_or_road_is_not_judged_and_never_alarms() -> None:
    gradient = np.linspace(200, 110, 576).astype(np.uint8)[:, None, None]
    sky = np.ascontiguousarray(np.broadcast_to(gradient, (576, 768, 3)))

    def frame(i: int) -> Image:
        return noisy(sky, i, 3.0)

    estimates = [e for _, e in run(frame, 300)]
    assert not any(e.detected for e in estimates)
    assert estimates[-1].observable_fraction < 0.05


@pytest.mark.parametrize("gain", [0.12, 0.05])
def test_night_footage_never_alarms(gain: float) -> None:
    assert first_alarm(darkened(gain), 400) is None


@pytest.mark.parametrize(("period", "width"), [(30, 0.45), (80, 0.5), (200, 0.6)])
def test_a_passing_truck_never_alarms(period: int, width: float) -> None:
    """A big dark rectangle crossing the frame, fast or slowly, over and over."""
    assert first_alarm(truck(period, width), 450) is None


def test_a_moving_camera_does_not_alarm_on_clean_footage() -> None:
    assert first_alarm(panning, 500) is None


def test_mud_stays_detected_until_the_fan_blows_the_lens_clean() -> None:
    lens = SimulatedLens(parse_inject("mud@6s"))
    detector = AdhesionDetector()
    states: list[tuple[float, bool]] = []
    for i in range(300):
        t = i / FPS
        if 15.0 <= t < 30.0:
            lens.blow(1.0, 1.0 / FPS)  # the fan at full duty from 15 s
        image, _ = lens.apply(looped(i), t)
        states.append((t, detector.update(prepare(image, 320).grey, t).detected))
    detected_at = next(t for t, d in states if d)
    assert 6.0 <= detected_at <= 7.0
    assert all(d for t, d in states if 8.0 <= t < 15.0)
    assert lens.ground_truth()[0]["gone_reason"] == "blown_clear"
    assert not any(d for t, d in states if t >= 30.0)


def test_the_estimate_carries_a_read_only_tile_mask_and_bounded_numbers() -> None:
    layer = AdhesionLayer("mud", coverage=0.08, seed=4)
    *_, (_, estimate) = run(soiled(looped, layer, 40), 70)
    mask = estimate.tile_mask
    assert mask is not None
    assert mask.dtype == np.bool_
    assert mask.shape == (30, 40)  # 768×576 shrunk to 320×240, 8-pixel tiles
    assert not mask.flags.writeable
    assert estimate.detected
    assert estimate.covered_fraction == pytest.approx(mask.mean())
    assert 0.5 < estimate.score < 1.0
    assert 0.0 < estimate.observable_fraction <= 1.0


def test_the_grid_fits_square_tiles_and_maps_a_full_size_mask() -> None:
    grid = TileGrid.fit(180, 320, 40)
    assert (grid.rows, grid.cols, grid.tile, grid.top, grid.left) == (22, 40, 8, 2, 0)
    mask = np.zeros((720, 1280), np.bool_)
    mask[:360, :640] = True
    coverage = grid.coverage(mask)
    assert coverage.shape == (22, 40)
    assert coverage[0, 0] == pytest.approx(1.0)
    assert coverage[-1, -1] == pytest.approx(0.0)


def test_time_going_back_or_a_new_frame_size_starts_learning_again() -> None:
    detector = AdhesionDetector()
    layer = AdhesionLayer("mud", coverage=0.08, seed=4)
    for i in range(70):
        image = looped(i) if i < 40 else layer.render(looped(i))[0]
        detector.update(prepare(image, 320).grey, i / FPS)
    assert detector.update(prepare(layer.render(looped(70))[0], 320).grey, 7.0).detected
    # A new recording starts at t = 0: everything is learnt again, nothing flagged meanwhile.
    assert not detector.update(prepare(looped(0), 320).grey, 0.0).detected
    assert not detector.update(prepare(looped(1), 256).grey, 0.1).detected


def test_a_frame_that_is_not_grey_is_refused() -> None:
    with pytest.raises(ValueError, match="grey"):
        AdhesionDetector().update(np.zeros((8, 8, 3), np.uint8), 0.0)
