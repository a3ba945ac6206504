"""The fleet learning loop end to end against the real broker (`python -m tools.loop`): vehicle A
uploads real footage, the collector builds the data set, a few training steps make a new model,
which is signed, published to vehicle B, verified, health-checked and swapped in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.uplink.broker import Broker, Certs
from tests.uplink.conftest import loop_access
from tools.loop import run_loop

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
    assert report.swap["outcome"] == "swapped"
    assert report.dataset["frames"] >= 2
    assert report.dataset["vehicles"] == ["veh-1"]
    assert report.new_version != report.previous_version
    # Vehicle B runs the new version, whose manifest says where its data came from.
    active = out / "state-b" / "models" / "fast-enhance"
    manifest = json.loads((active / "manifest.json").read_text())
    assert manifest["version"] == report.new_version
    assert manifest["training"]["dataset"]["vehicles"] == ["veh-1"]
    assert manifest["training"]["dataset"]["frames"] == report.dataset["frames"]
    assert set(report.quality) == {"identity", "previous", "new"}
    assert (out / "report.md").read_text().startswith("# Fleet learning loop")
    assert json.loads((out / "report.json").read_text())["new_version"] == report.new_version
