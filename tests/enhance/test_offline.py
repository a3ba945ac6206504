"""`vehicle-agent enhance` runs the same runtime: a model by name from a model folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.enhance.helpers import frame, reference
from vehicle_agent.cli import main
from vehicle_agent.config import Config
from vehicle_agent.enhance.base import Enhancer
from vehicle_agent.enhance.offline import SceneGate


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


def test_a_missing_model_with_one_backend_is_an_error_not_an_unchanged_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 23: this used to write the input unchanged ("with passthrough") and exit 0.
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    cv2.imwrite(str(src), frame())
    args = ["enhance", str(src), "--out", str(out), "--backend", "onnxruntime", "--model", "nope"]
    assert main(args) == 2
    assert not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "--model nope: model 'nope' not found" in err[0]
    assert "fast-enhance" in err[0].partition("(installed: ")[2]


def test_a_named_model_does_not_fall_back_to_classical(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 21: `--model NAME` forces that model; a name that does not exist used to fall back
    # to passthrough with exit 0, which hid the typo.
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    cv2.imwrite(str(src), frame())
    assert main(["enhance", str(src), "--out", str(out), "--model", "nosuch"]) == 2
    assert not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("vehicle-agent: error: --model nosuch: model 'nosuch' not found")


def test_a_named_model_that_cannot_load_is_an_error(
    tmp_path: Path, models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (models / "tiny" / "model.onnx").write_bytes(b"not the model the manifest signed")
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    cv2.imwrite(str(src), frame())
    args = ["enhance", str(src), "--out", str(out), "--model", "tiny", "--model-dir", str(models)]
    assert main(args) == 2
    assert not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("vehicle-agent: error: --model tiny: onnxruntime:tiny: ")
    assert "sha256" in err[0]


def test_a_named_backend_that_is_unavailable_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    src = tmp_path / "in.png"
    cv2.imwrite(str(src), frame())
    folder = tmp_path / "in_folder"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), frame(i))
    for source, out in ((src, tmp_path / "out.png"), (folder, tmp_path / "out_folder")):
        assert main(["enhance", str(source), "--out", str(out), "--backend", "tensorrt"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert err[0].startswith("vehicle-agent: error: --backend tensorrt: ")
        assert "backend unavailable: tensorrt not importable" in err[0]
        assert not out.is_file()
        assert not out.is_dir() or not any(out.iterdir())


def test_a_bad_model_name_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.png"
    cv2.imwrite(str(src), frame())
    assert main(["enhance", str(src), "--out", str(tmp_path / "o.png"), "--model", "Bad Name"]) == 2
    assert "--model" in capsys.readouterr().err


def test_offline_gating_follows_the_scene_condition_as_the_daemon_does() -> None:
    gate = SceneGate(Config())
    dark = np.full((120, 160, 3), 12, np.uint8)
    assert gate.condition(dark) == "low_light"

    class Recorder(Enhancer):
        def __init__(self) -> None:
            self.seen: list[str | None] = []
            self.name = "recorder"

        def set_condition(self, condition: str | None) -> None:
            self.seen.append(condition)

        def _enhance(self, image: np.ndarray) -> np.ndarray:
            return image

    recorder = Recorder()
    gate.enhance(recorder, dark)  # a still image: given switch_after_frames times
    assert recorder.seen == ["low_light"] * Config().enhance.switch_after_frames
    recorder.seen.clear()
    gate.enhance(recorder, dark, t=0.0)  # a video frame: once, through the tracker
    assert recorder.seen == ["low_light"]
