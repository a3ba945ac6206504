"""The restoration model: a tiny version trains on the bank's train renderers and learns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs the train extra (torch)")

from tools.footage import degradations  # noqa: E402
from tools.gan import data  # noqa: E402
from tools.gan.bench import psnr  # noqa: E402
from tools.gan.models import RestoreGenerator  # noqa: E402
from tools.gan.train import TrainConfig, train  # noqa: E402


def tiny_restore(epochs: int) -> TrainConfig:
    return TrainConfig(
        name="tiny-restore",
        arch="restore",
        width=4,
        d_width=4,
        height=48,
        frame_width=64,
        batch_size=4,
        epochs=epochs,
        steps_per_epoch=25,
        d_pretrain_steps=2,
        lr_g=3e-3,
        data="bank",
        tone=0.0,
        mix={"low_light": 1.0},
    )


def restored(generator: RestoreGenerator, image: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return data.to_image(generator.eval()(data.to_tensor([image])))


def test_the_restore_generator_starts_as_the_identity_at_any_padded_size() -> None:
    generator = RestoreGenerator(width=4).eval()
    x = torch.rand(1, 3, 32, 48)
    with torch.inference_mode():
        assert torch.equal(generator(x), x)
    assert generator.stride == 16


def test_a_tiny_restore_model_learns_to_lift_low_light(tmp_path: Path) -> None:
    samples = data.bank_training_images(limit=4)
    images = [
        data.random_view(s.image, 48, 64, np.random.default_rng(i)) for i, s in enumerate(samples)
    ]
    result = train(tiny_restore(3), tmp_path, images=images, progress=False)
    rec = [h["rec"] for h in result.history]
    assert rec[-1] < 0.7 * rec[0], f"reconstruction loss did not fall: {rec}"
    generator = result.generator
    assert isinstance(generator, RestoreGenerator)
    gains = []
    for i, clean in enumerate(images):
        dark = degradations.degrade(clean, "low_light", "sensor", 10_000 + i)
        gains.append(psnr(clean, restored(generator, dark)) - psnr(clean, dark))
    assert float(np.mean(gains)) > 2.0, f"PSNR gain over the dark input: {gains}"


def test_calibration_gates_the_restore_models_tone_stage_on_its_training_frames(
    tmp_path: Path,
) -> None:
    from tools.gan.ship import calibrate  # noqa: PLC0415
    from tools.gan.train import CALIBRATION  # noqa: PLC0415

    torch.manual_seed(0)
    generator = RestoreGenerator(width=4, tone_dead_zone=0.02).eval()
    with torch.no_grad():
        for p in generator.tone.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    rng = np.random.default_rng(0)
    samples = [
        data.Sample(f"frame{i}", rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
        for i in range(4)
    ]
    frames = [data.to_tensor([s.image[:32, :48]]) for s in samples]
    with torch.inference_mode():
        assert any(not torch.equal(generator.tone(x), x) for x in frames)  # nudged before
    gate = calibrate(generator, samples, tmp_path)
    assert gate is not None
    assert gate >= generator.tone.zone
    assert generator.tone.gate == gate
    assert (tmp_path / CALIBRATION).is_file()
    with torch.inference_mode():
        for x in frames:  # the tone stage of a training frame is now the identity
            assert torch.equal((generator.tone(x) * 255).round(), (x * 255).round())


def test_train_refuses_an_init_from_file_that_does_not_exist(tmp_path: Path) -> None:
    from tools.gan.__main__ import main  # noqa: PLC0415

    missing = tmp_path / "nope.onnx"
    with pytest.raises(SystemExit, match=r"--init-from .*nope\.onnx: no such file"):
        main(["train", "--shipped", "restore", "--init-from", str(missing), "--out", str(tmp_path)])
    assert not (tmp_path / "checkpoint.pt").exists()
