"""The model format shared with training: manifest schema, store lookup, sha256 and input checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.enhance.helpers import frame, model_dir
from vehicle_agent.config import EnhanceConfig
from vehicle_agent.enhance.chain import EnhancerChain, build_enhancer
from vehicle_agent.enhance.manifest import (
    InputSpec,
    Manifest,
    ManifestError,
    read_manifest,
)
from vehicle_agent.enhance.store import ModelNotFoundError, ModelStore


def test_a_written_manifest_reads_back_and_keeps_extra_training_keys(models: Path) -> None:
    path = models / "tiny" / "manifest.json"
    data = json.loads(path.read_text())
    data["training"]["epochs"] = 40
    data["metrics"]["lpips"] = 0.12
    path.write_text(json.dumps(data))
    manifest = read_manifest(path)
    assert manifest.label == "tiny@1.0.0"
    assert manifest.training.model_extra == {"epochs": 40}
    assert manifest.metrics["lpips"] == pytest.approx(0.12)
    assert manifest.input.stride == 8


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"colour": "RGB"}, "colour: Extra inputs are not permitted"),
        ({"sha256": "ABC"}, "sha256"),
        ({"name": "none"}, "reserved"),
        ({"input": {"layout": "NHWC"}}, "input.layout"),
        ({"input": {"stride": 8, "min_size": 12}}, "multiple of stride"),
        ({"input": {"range": [1.0, 0.0]}}, "range must increase"),
        ({"version": "latest"}, "version"),
    ],
)
def test_a_bad_manifest_is_refused_naming_the_key(
    models: Path, change: dict[str, object], words: str
) -> None:
    path = models / "tiny" / "manifest.json"
    data = json.loads(path.read_text()) | change
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=words) as info:
        read_manifest(path)
    assert str(path) in str(info.value)


def test_the_newest_version_wins_across_folders_and_ties_go_to_the_first(tmp_path: Path) -> None:
    updates, shipped = tmp_path / "state", tmp_path / "shipped"
    model_dir(shipped, "night", "2.0.0")
    model_dir(updates, "night", "1.5.0")
    store = ModelStore([updates, shipped])
    assert store.resolve("night").manifest.version == "2.0.0"
    model_dir(updates, "night", "3")
    assert store.resolve("night").directory == updates / "night"
    assert store.names() == ["night"]
    with pytest.raises(ModelNotFoundError, match="'day' not found in"):
        store.resolve("day")


def test_a_model_whose_folder_and_name_disagree_is_refused(models: Path) -> None:
    (models / "tiny").rename(models / "other")
    with pytest.raises(ManifestError, match="name is 'tiny' but the folder is 'other'"):
        ModelStore([models]).resolve("other")


def _chain_for(models: Path, tmp_path: Path) -> EnhancerChain:
    config = EnhanceConfig.model_validate(
        {
            "chain": [{"type": "onnxruntime"}, {"type": "classical"}],
            "model": "tiny",
            "model_dirs": [models],
        }
    )
    return build_enhancer(config, tmp_path / "state", background=False)


def test_a_sha256_mismatch_is_refused_before_the_first_frame_and_the_chain_falls_back(
    models: Path, tmp_path: Path
) -> None:
    onnx_path = models / "tiny" / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes() + b"\0")
    chain = _chain_for(models, tmp_path)
    chain.load()
    events = chain.drain_events()
    demoted = [e for e in events if e.type == "enhancer_demoted"]
    assert [(e.data["backend"], e.data["model"], e.data["kind"]) for e in demoted] == [
        ("onnxruntime", "tiny", "load")
    ]
    assert "sha256 mismatch" in str(demoted[0].data["reason"])
    out = chain.enhance(frame())
    assert out.shape == frame().shape
    assert chain.name == "classical"
    chain.close()


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"in_channels": 1}, "1 channels, expected 3"),
        ({"fixed_hw": (32, 32)}, "fixed at 32×32 but the manifest says dynamic_hw"),
        ({"input_spec": InputSpec(dynamic_hw=False)}, "needs it"),
    ],
)
def test_a_model_that_does_not_match_its_input_spec_is_refused(
    tmp_path: Path, kwargs: dict[str, object], words: str
) -> None:
    models = tmp_path / "models"
    model_dir(models, "tiny", **kwargs)  # type: ignore[arg-type]
    chain = _chain_for(models, tmp_path)
    chain.load()
    demoted = [e for e in chain.drain_events() if e.type == "enhancer_demoted"]
    assert len(demoted) == 1
    assert "input spec mismatch" in str(demoted[0].data["reason"])
    assert words in str(demoted[0].data["reason"])
    assert chain.name == "classical"
    chain.close()


def test_the_schema_is_what_training_tools_import() -> None:
    fields = set(Manifest.model_fields)
    assert {
        "name",
        "version",
        "file",
        "sha256",
        "task",
        "input",
        "output",
        "opset",
        "training",
        "metrics",
        "created",
    } <= fields
    assert set(InputSpec.model_fields) == {
        "layout",
        "color",
        "range",
        "dtype",
        "stride",
        "min_size",
        "dynamic_hw",
    }
