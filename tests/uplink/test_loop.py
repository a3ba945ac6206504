"""The fleet learning loop end to end against the real broker (`python -m tools.loop`): vehicle A
uploads real footage, two shared collectors build the data set, the held-out suite takes the
fleet's held-out uploads, a few fine-tuning steps from the active model make a challenger, the
gate judges it against the champion on the suite, and only a challenger that passes is signed
and rolled out in stages (canary, then wave) to vehicles that verify, health-check and swap it.
A challenger trained on corrupted labels is held back; a canary that rolls back aborts the
rollout before the wave is offered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.uplink.broker import Broker, Certs
from tests.uplink.conftest import loop_access
from tools.loop import (
    SHIPPED,
    LoopBroker,
    LoopError,
    roll_out,
    run_loop,
)
from tools.rollout import Policy
from tools.suite import decide

pytest.importorskip("torch", reason="the loop trains a model: install the train extra")

VEHICLES = ("veh-1", "veh-2", "veh-3")
"""The uploader, the canary and the wave (the test broker's accounts)."""
QUICK = Policy(health_s=2.0, timeout_s=60.0, abort_share=0.0, abort_min=1)


def active_version(out: Path, vehicle: str) -> str | None:
    manifest = out / f"state-{vehicle}" / "models" / "fast-enhance" / "manifest.json"
    return json.loads(manifest.read_text())["version"] if manifest.is_file() else None


async def test_uploads_become_a_model_that_is_gated_then_rolled_out_canary_first(
    broker: Broker, certs: Certs, tmp_path: Path
) -> None:
    access = loop_access(broker, certs, VEHICLES)
    out = tmp_path / "loop"
    report = await run_loop(
        access,
        out,
        suite_dir=tmp_path / "suite",
        seconds=30.0,
        steps=3,
        crop=64,
        vehicles=VEHICLES,
        policy=QUICK,
        progress=False,
        log=lambda _: None,
    )
    assert report.dataset["frames"] >= 2
    assert report.dataset["vehicles"] == ["veh-1"]
    # Two shared collectors: both got messages, and each upload is in the data set once.
    assert all(n > 0 for n in report.collectors["instances"].values()), report.collectors
    lines = (out / "dataset" / "index.jsonl").read_text().splitlines()
    ids = [json.loads(line)["upload_id"] for line in lines]
    assert len(ids) == len(set(ids)) == report.dataset["frames"]
    # The suite took the held-out uploads (30 s of footage: the 10–15 and 25–30 s segments), and none of
    # them was trained on.
    assert report.suite["version"] == 2
    assert report.suite["fleet_frames"] >= 1
    suite = json.loads((tmp_path / "suite" / "suite.json").read_text())
    held = {f["upload_id"] for f in suite["fleet"]}
    assert held <= set(ids)
    assert report.new_version != report.previous_version
    assert set(report.quality) == {"identity", "previous", "new"}
    assert set(report.quality["new"]) >= {"low_light", "fog", "clean", "fleet low_light"}
    assert (out / "report.md").read_text().startswith("# Fleet learning loop")
    saved = json.loads((out / "report.json").read_text())
    assert saved["new_version"] == report.new_version
    assert saved["gate"]["passed"] == report.published
    assert [d["step"] for d in saved["decisions"]][:3] == ["collect", "suite", "gate"]
    # The gate's verdict is the one its own figures give; published or not follows from it.
    targets = ("low_light", "fog", "fleet low_light", "fleet fog")
    again = decide(report.quality, targets=targets, margin_db=0.2)
    assert again.passed == report.published
    if report.published:
        assert report.rolled_out, report.rollout
        assert report.swap["outcome"] == "swapped"
        assert report.swap["vehicles"] == {"veh-2": "swapped", "veh-3": "swapped"}
        # Each receiver runs the new version, whose manifest says where its data came from.
        for vehicle in ("veh-2", "veh-3"):
            assert active_version(out, vehicle) == report.new_version
        manifest = json.loads(
            (out / "state-veh-3" / "models" / "fast-enhance" / "manifest.json").read_text()
        )
        assert manifest["training"]["dataset"]["vehicles"] == ["veh-1"]
        assert manifest["training"]["fine_tuned_from"] == "fast-enhance"
    else:
        assert report.swap["outcome"] == "not published"
        assert report.gate["reasons"]
        assert report.rollout is None
        assert not (out / "offer.json").exists()  # nothing was signed


async def test_a_challenger_trained_on_corrupted_labels_is_held_back(
    broker: Broker, certs: Certs, tmp_path: Path
) -> None:
    out = tmp_path / "loop"
    report = await run_loop(
        loop_access(broker, certs, VEHICLES),
        out,
        scenario="broken-challenger",
        seconds=8.0,
        steps=40,
        crop=64,
        vehicles=VEHICLES,
        progress=False,
        log=lambda _: None,
    )
    assert report.training["corrupted_labels"]
    assert not report.published
    assert report.swap["outcome"] == "not published"
    assert any("low_light" in reason for reason in report.gate["reasons"]), report.gate
    assert [d["decision"] for d in report.decisions if d["step"] == "gate"] == ["hold back"]
    assert not (out / "offer.json").exists()
    assert active_version(out, "veh-2") is None  # no receiver was even started


async def test_a_canary_that_rolls_back_aborts_the_rollout_before_the_wave(
    broker: Broker, certs: Certs, tmp_path: Path
) -> None:
    out = tmp_path / "loop"
    report = await run_loop(
        loop_access(broker, certs, VEHICLES),
        out,
        scenario="canary-rollback",
        seconds=8.0,
        steps=40,
        crop=64,
        vehicles=VEHICLES,
        policy=QUICK,
        progress=False,
        log=lambda _: None,
    )
    assert not report.training["fine_tuned"]
    assert report.published, report.gate  # the champion's own weights: nothing falls
    summary = report.rollout
    assert summary is not None
    assert summary["status"] == "aborted", summary
    assert report.swap["outcome"] == "rolled back"
    assert report.swap["vehicles"] == {"veh-2": "rolled back", "veh-3": "never offered"}
    assert [(d["group"], d["decision"]) for d in summary["decisions"]] == [("canary", "abort")]
    wave = next(g for g in summary["groups"] if g["name"] == "wave-1")
    assert not wave["offered"]
    assert active_version(out, "veh-2") in {None, "1.0.0"}  # back on what it had
    assert active_version(out, "veh-3") is None
    assert [d["step"] for d in report.decisions] == ["collect", "suite", "gate", "rollout canary"]


async def test_a_healthy_rollout_reaches_the_canary_then_the_wave(
    broker: Broker, certs: Certs, tmp_path: Path
) -> None:
    summary, swap = await roll_out(
        loop_access(broker, certs, VEHICLES),
        tmp_path,
        SHIPPED,
        canary=["veh-2"],
        waves=[["veh-3"]],
        policy=QUICK,
        version="1.0.1",
        log=lambda _: None,
    )
    assert summary["status"] == "done", summary
    assert swap["vehicles"] == {"veh-2": "swapped", "veh-3": "swapped"}
    decisions = [(d["group"], d["decision"]) for d in summary["decisions"]]
    assert decisions == [("canary", "continue"), ("wave-1", "continue")]
    assert active_version(tmp_path, "veh-2") == active_version(tmp_path, "veh-3") == "1.0.1"


async def test_the_loop_refuses_an_unknown_scenario_or_too_few_vehicles(tmp_path: Path) -> None:
    broker = LoopBroker("mqtt://127.0.0.1:1")  # never reached: refused before anything starts
    with pytest.raises(LoopError, match="unknown scenario 'nope'"):
        await run_loop(broker, tmp_path, scenario="nope", log=lambda _: None)
    with pytest.raises(LoopError, match="at least one more"):
        await run_loop(broker, tmp_path, vehicles=("a", "b"), log=lambda _: None)


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
