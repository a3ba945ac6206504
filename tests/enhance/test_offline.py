"""`vehicle-agent enhance` runs the same runtime: a model by name from a model folder."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.enhance.helpers import frame, reference
from vehicle_agent.cli import main


def test_enhance_an_image_with_a_named_model(
    tmp_path: Path, models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    image = frame(7, (45, 61))
    cv2.imwrite(str(src), image)
    args = ["enhance", str(src), "--out", str(out), "--model", "tiny", "--model-dir", str(models)]
    # The raw model output: the guard would keep the input here (the test model greys a frame).
    assert main([*args, "--no-guard"]) == 0
    written = cv2.imread(str(out))
    assert written is not None
    assert np.abs(written.astype(int) - reference(image).astype(int)).max() <= 1
    assert "with onnxruntime:tiny" in capsys.readouterr().out


def test_enhance_a_folder_with_one_backend_only(
    tmp_path: Path, models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        cv2.imwrite(str(src / f"{i}.png"), frame(i))
    args = ["enhance", str(src), "--out", str(tmp_path / "out"), "--backend", "onnxruntime"]
    assert main([*args, "--model", "tiny", "--model-dir", str(models)]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png", "2.png"]
    assert "enhanced 3 frame(s) with onnxruntime:tiny" in capsys.readouterr().out


def test_a_missing_model_falls_back_to_passthrough_with_one_backend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    cv2.imwrite(str(src), frame())
    args = ["enhance", str(src), "--out", str(out), "--backend", "onnxruntime", "--model", "nope"]
    assert main(args) == 0
    written = cv2.imread(str(out))
    assert written is not None
    assert np.array_equal(written, frame())
    assert "with passthrough" in capsys.readouterr().out


def test_a_bad_model_name_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.png"
    cv2.imwrite(str(src), frame())
    assert main(["enhance", str(src), "--out", str(tmp_path / "o.png"), "--model", "Bad Name"]) == 2
    assert "--model" in capsys.readouterr().err
