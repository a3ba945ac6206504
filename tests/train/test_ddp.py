"""Distributed training: `torchrun` with 2 CPU processes (gloo) keeps the replicas identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="training needs the train extra (torch)")
pytest.importorskip("skimage", reason="the photos come from the train extra (scikit-image)")

ROOT = Path(__file__).resolve().parents[2]


def test_two_gloo_processes_train_on_different_data_and_stay_identical(tmp_path: Path) -> None:
    config = {
        "name": "ddp-check",
        "arch": "fast",
        "width": 4,
        "d_width": 4,
        "height": 32,
        "frame_width": 32,
        "batch_size": 2,
        "epochs": 1,
        "steps_per_epoch": 3,
        "d_pretrain_steps": 1,
        "local_patches": 2,
        "local_size": 16,
        "data": "photos",
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "tools.gan",
        "train",
        "--config",
        str(tmp_path / "config.json"),
        "--out",
        str(tmp_path / "run"),
        "--quiet",
    ]
    done = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=90, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    replicas = [json.loads((tmp_path / "run" / f"replica-{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in replicas] == [2, 2]
    assert {r["backend"] for r in replicas} == {"gloo"}
    assert replicas[0]["generator_sha256"] == replicas[1]["generator_sha256"]
    assert replicas[0]["discriminator_sha256"] == replicas[1]["discriminator_sha256"]
    assert replicas[0]["first_batch_sha256"] != replicas[1]["first_batch_sha256"]
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
