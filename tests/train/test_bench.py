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
