"""The fleet learning loop end to end against the real broker (`python -m tools.loop`): vehicle A
uploads real footage, the collector builds the data set, a few fine-tuning steps from the active
model make a challenger, the gate judges it against the champion on held-out frames, and only a
challenger that passes is signed, published to vehicle B, verified, health-checked and swapped in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.uplink.broker import Broker, Certs
from tests.uplink.conftest import loop_access
from tools.loop import decide, run_loop

pytest.importorskip("torch", reason="the loop trains a model: install the train extra")


async def test_uploads_become_a_model_that_another_vehicle_swaps_in(
    broker: Broker, certs: Certs, tmp_path: Path
) -> None:
    access = loop_access(broker, certs, ("veh-1", "veh-2"))
    out = tmp_path / "loop"
    report = await run_loop(
        access,
        out,
        seconds=8.0,
        steps=3,
        crop=64,
        bench_frames=2,
        vehicles=("veh-1", "veh-2"),
        progress=False,
        log=lambda _: None,
    )
    assert report.dataset["frames"] >= 2
    assert report.dataset["vehicles"] == ["veh-1"]
    assert report.new_version != report.previous_version
    assert set(report.quality) == {"identity", "previous", "new"}
    assert set(report.quality["new"]) >= {"low_light", "fog", "clean"}
    assert (out / "report.md").read_text().startswith("# Fleet learning loop")
    saved = json.loads((out / "report.json").read_text())
    assert saved["new_version"] == report.new_version
    assert saved["gate"]["passed"] == report.published
    # The gate's verdict is the one its own figures give; published or not follows from it.
    again = decide(report.quality, targets=("low_light", "fog"), margin_db=0.2)
    assert again.passed == report.published
    active = out / "state-b" / "models" / "fast-enhance"
    if report.published:
        assert report.swap["outcome"] == "swapped"
        # Vehicle B runs the new version, whose manifest says where its data came from.
        manifest = json.loads((active / "manifest.json").read_text())
        assert manifest["version"] == report.new_version
        assert manifest["training"]["dataset"]["vehicles"] == ["veh-1"]
        assert manifest["training"]["dataset"]["frames"] == report.dataset["frames"]
        assert manifest["training"]["fine_tuned_from"] == "fast-enhance"
    else:
        assert report.swap["outcome"] == "not published"
        assert report.gate["reasons"]
        assert not (out / "offer.json").exists()  # nothing was signed


def scores(**new: tuple[float, float]) -> dict[str, dict[str, dict[str, float]]]:
    """Champion at 20 dB mean / 15 dB worst everywhere; the challenger as given (else the same)."""
    kinds = ("low_light", "fog", "rain", "clean")
    old = {k: {"mean": 20.0, "worst": 15.0} for k in kinds}
    return {
        "previous": old,
        "new": {
            k: dict(zip(("mean", "worst"), new.get(k, (20.0, 15.0)), strict=True)) for k in kinds
        },
    }


def test_the_gate_publishes_a_challenger_that_improves_its_target_and_harms_nothing() -> None:
    decision = decide(scores(fog=(20.6, 15.1), rain=(19.9, 14.85)), targets=("low_light", "fog"))
    assert decision.passed
    assert decision.improved == ["fog"]
    assert decision.reasons == []


@pytest.mark.parametrize(
    ("new", "words"),
    [
        ({"fog": (21.0, 15.0), "rain": (19.5, 15.0)}, "rain: mean 19.50 dB against 20.00"),
        ({"fog": (21.0, 15.0), "clean": (20.0, 14.0)}, "clean: worst 14.00 dB against 15.00"),
        ({"rain": (20.5, 15.0)}, "no target condition improved"),
        (
            {"low_light": (27.8, 9.0)},
            "low_light: worst 9.00",
        ),  # a better mean hides a wrecked frame
    ],
)
def test_the_gate_stops_a_regression_and_names_the_condition(
    new: dict[str, tuple[float, float]], words: str
) -> None:
    decision = decide(scores(**new), targets=("low_light", "fog"), margin_db=0.2)
    assert not decision.passed
    assert any(words in reason for reason in decision.reasons), decision.reasons
