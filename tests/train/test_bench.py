"""`python -m tools.gan bench` on the footage bank: one table of conditions × methods with
mean, worst-frame and harm figures, written as JSON with the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.footage import splits
from tools.gan import bench, ship
from tools.gan.__main__ import main


def test_bench_on_held_out_footage_scores_every_method_per_condition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ship, "BUILD", tmp_path / "gan")  # the baselines' score cache
    out = tmp_path / "bench.json"
    argv = ["bench", "--scene", "home", "--kinds", "fog,clean", "--no-peer", "--json", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| fog (1; " in printed
    assert "| clean (vs input) (1; 1 ≥ 25 dB) | **∞ / 1.000 / ∞ / 0** |" in printed

    data = json.loads(out.read_text())
    assert data["command"] == "python -m tools.gan " + " ".join(argv)
    assert data["set"]["split"] == "held_out"
    assert data["set"]["images"] == 1
    assert data["kinds"] == ["fog", "clean"]
    assert data["methods"] == [
        "identity",
        "CLAHE",
        "auto-gamma",
        "fast-enhance (raw)",
        "restore (raw)",
        bench.CHAIN,
        bench.CHAIN_NO_GUARD,
    ]
    assert data["skipped"] == {bench.PEER: "--no-peer"}
    clean = data["results"]["clean"]["identity"]
    assert clean["psnr"] >= 99.0
    assert clean["worst_psnr"] >= 99.0
    assert clean["ssim"] == 1.0
    assert clean["harmed"] == 0
    for kind, row in data["results"].items():
        for method, cell in row.items():
            assert set(cell) >= {"psnr", "ssim", "worst_psnr", "harmed", "eligible", "frames"}
            assert cell["worst_psnr"] <= cell["psnr"] + 1e-9, (kind, method)
            assert 0 <= cell["harmed"] <= cell["eligible"] <= cell["frames"] == 1
    # Held-out renderers only, and the chain ran the shipped model on every frame.
    fog = data["frames"]["fog"]
    assert {f["family"] for f in fog["identity"]} <= set(splits.names("degradation", "held_out"))
    for name in (bench.CHAIN, bench.CHAIN_NO_GUARD):
        assert {f["backend"] for f in fog[name]} == {"onnxruntime:fast-enhance"}
    assert all(f["guard_weight"] is None for f in fog[bench.CHAIN_NO_GUARD])
    assert all(0.0 <= f["guard_weight"] <= 1.0 for f in fog[bench.CHAIN])
    # An input already at least 25 dB is harmed when an output loses more than 1 dB on it.
    assert bench.FrameScore("x", "", 26.0, 0.9, 27.5).harmed
    assert not bench.FrameScore("x", "", 26.6, 0.9, 27.5).harmed
    assert not bench.FrameScore("x", "", 10.0, 0.5, 24.0).harmed


def test_bench_quality_override_runs_a_candidate_chain_beside_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The low-light line is a [quality] setting: a candidate line runs as its own column, so a
    # sweep of it is a loop over this command, not a scratch script.
    monkeypatch.setattr(ship, "BUILD", tmp_path / "gan")
    out = tmp_path / "bench.json"
    argv = ["bench", "--scene", "home", "--kinds", "low_light", "--no-peer", "--no-ssim"]
    argv += ["--quality", "low_light_enter=1", "--quality", "low_light_exit=2", "--json", str(out)]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    column = bench.candidate_column(quality={"low_light_enter": 1.0, "low_light_exit": 2.0})
    assert column == "chain, low_light_enter=1, low_light_exit=2"
    assert data["methods"][-1] == column
    frames = data["frames"]["low_light"]
    assert {f["condition"] for f in frames[bench.CHAIN]} == {"low_light"}
    assert "low_light" not in {f["condition"] for f in frames[column]}


@pytest.mark.parametrize(
    ("entries", "says"),
    [
        (["low_light_enter"], "expected SETTING=NUMBER"),
        (["no_such=3"], "[quality] has no setting 'no_such'"),
        (["low_light_enter=dark"], "is not a number"),
        (["low_light_enter=120"], "low_light_exit (105.0) is below low_light_enter"),
        (["low_light_enter=0"], "low_light_enter"),
    ],
)
def test_bench_refuses_a_bad_quality_override_before_building_anything(
    entries: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "--no-peer"]
    for entry in entries:
        argv += ["--quality", entry]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert says in capsys.readouterr().err
