"""The extra methods under `torchrun` (2 gloo processes): their own loops keep the replicas
identical, the transfer runs finish on both with rank 0 reporting, and the burst benchmark's
shares come back whole on every process."""

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

SCRIPT = """
import json, sys
from pathlib import Path
import numpy as np
from tools.gan import bursts, noise_gan, transfer, unpaired
from tools.gan.data import Sample, photo
from tools.gan.runtime import Runtime
from tools.gan.train import parameter_digest

out = Path(sys.argv[1])
rt = Runtime.start(1, progress=False)
names = ("astronaut", "coffee", "chelsea", "rocket")
imgs = [np.ascontiguousarray(photo(n)[50:98, 60:124]) for n in names]
ng = noise_gan.NoiseGanConfig(
    real_scenes=2, captures=2, crop=16, batch_size=2, gan_steps=2, width=4, d_width=4
)
gen, _ = noise_gan.train_gan(noise_gan.real_captures(imgs[:2], ng), ng, rt)
up = unpaired.UnpairedConfig(
    width=4, d_width=4, height=32, frame_width=32, batch_size=2, steps=2,
    steps_per_epoch=2, local_patches=2, local_size=16,
)
ugen, _ = unpaired.train_unpaired(up, imgs, None, rt)
sensor = bursts.SensorConfig(frames=4, dark_frames=2, flicker_frames=1)
rows = bursts.benchmark([Sample(n, i) for n, i in zip(names, imgs)], sensor, rt)
tf = transfer.TransferConfig(
    width=4, d_width=4, height=32, frame_width=32, batch_size=2, pretrain_steps=2, steps=2,
    steps_per_epoch=2, d_pretrain_steps=1,
)
done = transfer.run(tf, out / "transfer", rt, images=imgs, held_out=[Sample("x", imgs[0])])
report = {
    "world": rt.env.world,
    "transfer_result": done is not None,
    "noise": parameter_digest(gen),
    "unpaired": parameter_digest(ugen),
    "burst_scenes": list(rows),
}
(out / f"rank-{rt.env.rank}.json").write_text(json.dumps(report))
rt.close()
"""


def test_two_gloo_processes_keep_the_methods_replicas_identical(tmp_path: Path) -> None:
    script = tmp_path / "methods_ddp.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
        str(tmp_path),
    ]
    done = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert [r["transfer_result"] for r in ranks] == [True, False]  # rank 0 scores and writes
    assert (tmp_path / "transfer" / "transfer.json").is_file()
    assert ranks[0]["noise"] == ranks[1]["noise"]
    assert ranks[0]["unpaired"] == ranks[1]["unpaired"]
    assert (
        ranks[0]["burst_scenes"]
        == ranks[1]["burst_scenes"]
        == [
            "astronaut",
            "coffee",
            "chelsea",
            "rocket",
        ]
    )
