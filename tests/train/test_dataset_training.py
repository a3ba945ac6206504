"""The training tools take a fleet data set (`tools.fleet collect`) directly: paired training on
its good frames with the data's provenance in the exported manifest, and unpaired training on its
real poor frames against its good ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="training needs the train extra (torch)")
pytest.importorskip("skimage", reason="the photos come from the train extra (scikit-image)")

from tests.train.test_methods import held_out, tiny_unpaired
from tests.uplink.helpers import record
from tools.dataset import DatasetWriter, load_images, read_dataset
from tools.gan import unpaired
from tools.gan.__main__ import main
from tools.gan.data import photo
from tools.gan.runtime import Runtime
from vehicle_agent.config import UploadConfig
from vehicle_agent.enhance.manifest import read_manifest
from vehicle_agent.records import Frame
from vehicle_agent.uplink.topics import Topics
from vehicle_agent.uplink.uploads import UploadPolicy, encode_upload

SETTINGS = UploadConfig(chunk_kib=16, max_width=128, jpeg_quality=92)


def collect(root: Path, vehicle: str, count: int, *, dark: bool) -> None:
    """Uploads of real photo crops from `vehicle` written to the data set, as the collector
    would (dark ones score poor on brightness)."""
    writer = DatasetWriter(root)
    for i in range(count):
        image = photo(("astronaut", "coffee", "rocket")[i % 3])[40 + 20 * i :][:96, :128]
        image = np.ascontiguousarray(image[..., ::-1])  # the daemon's frames are BGR
        if dark:
            image = (image * 0.15).astype(np.uint8)
        rec = record(i)
        rec = rec.replace(
            frame=Frame(i, 0.0, float(i), image, "test://"),
            quality=rec.quality.__class__(
                brightness=float(image.mean()), contrast=40.0, sharpness=300.0
            )
            if rec.quality is not None
            else None,
        )
        policy = UploadPolicy(SETTINGS, clock=lambda: 0.0)
        policy.request(1, "raw", None)
        (job,) = policy.on_frame(rec)
        upload_id = f"{vehicle}-{'d' if dark else 'g'}{i}"
        _, messages = encode_upload(
            job, Topics("fleet", vehicle, "front"), vehicle, SETTINGS, upload_id
        )
        for message in messages:
            writer.add(message.topic, message.payload)


def test_paired_training_on_a_data_set_records_where_the_data_came_from(tmp_path: Path) -> None:
    dataset = tmp_path / "dataset"
    collect(dataset, "veh-7", 4, dark=False)
    collect(dataset, "veh-8", 2, dark=True)
    assert {e.label for e in read_dataset(dataset)} == {"good", "poor"}
    out = tmp_path / "run"
    common = ["--arch", "fast", "--width", "4", "--epochs", "1", "--steps", "2", "--quiet"]
    train = ["train", *common, "--batch-size", "2", "--dataset", str(dataset), "--out", str(out)]
    assert main(train) == 0
    model = tmp_path / "model" / "model.onnx"
    checkpoint = str(out / "checkpoint.pt")
    assert main(["export", checkpoint, "--out", str(model), "--version", "2.0.1"]) == 0
    manifest = read_manifest(model.parent)
    assert manifest.version == "2.0.1"
    provenance = manifest.model_dump(mode="json")["training"]["dataset"]
    assert provenance["vehicles"] == ["veh-7", "veh-8"]
    assert (provenance["good"], provenance["poor"]) == (4, 2)
    assert provenance["time_from"] <= provenance["time_to"]
    assert json.loads((out / "dataset.json").read_text()) == provenance


def test_unpaired_training_takes_the_real_poor_frames_as_they_are(tmp_path: Path) -> None:
    dataset = tmp_path / "dataset"
    collect(dataset, "veh-7", 3, dark=False)
    collect(dataset, "veh-8", 3, dark=True)
    good = [e for e in read_dataset(dataset) if e.label == "good"]
    poor = [e for e in read_dataset(dataset) if e.label == "poor"]
    config = tiny_unpaired(paired_baseline=False)
    runtime = Runtime.start(threads=1, progress=False)
    result = unpaired.run(
        config,
        tmp_path / "unpaired",
        runtime,
        images=load_images(dataset, good),
        poor_frames=load_images(dataset, poor),
        held_out=held_out(),
    )
    assert result is not None
    assert (tmp_path / "unpaired" / "unpaired-generator.pt").is_file()
    with pytest.raises(ValueError, match="one poor and one good"):
        unpaired.train_unpaired(config, load_images(dataset, good), None, runtime, [])
