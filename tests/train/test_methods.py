"""The extra training methods run a few steps on tiny crops of real photos and report their
comparison: camera-noise GAN (with/without its pairs), blur→rain transfer (vs scratch) and
unpaired EnlightenGAN (vs paired)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs the train extra (torch)")
pytest.importorskip("skimage", reason="the photos come from the train extra (scikit-image)")

from tools.gan import noise_gan, transfer, unpaired  # noqa: E402
from tools.gan.data import Sample, photo  # noqa: E402
from tools.gan.runtime import Runtime  # noqa: E402


def crops(count: int, height: int = 48, width: int = 64) -> list[np.ndarray]:
    """Small crops of real photos (different places of astronaut and coffee)."""
    out = []
    for i in range(count):
        image = photo(("astronaut", "coffee")[i % 2])
        y, x = 60 + 37 * i, 90 + 23 * i
        out.append(np.ascontiguousarray(image[y : y + height, x : x + width]))
    return out


def held_out() -> list[Sample]:
    image = photo("chelsea")
    return [
        Sample("chelsea#a", image[80:128, 120:184]),
        Sample("chelsea#b", image[150:198, 40:104]),
    ]


def tiny_unpaired(**changes: object) -> unpaired.UnpairedConfig:
    """Two steps of EnlightenGAN on 32-pixel views: seconds on a CPU."""
    values: dict[str, object] = {
        "width": 4,
        "d_width": 4,
        "height": 32,
        "frame_width": 32,
        "batch_size": 2,
        "steps": 2,
        "steps_per_epoch": 2,
        "local_patches": 2,
        "local_size": 16,
    }
    return unpaired.UnpairedConfig.model_validate(values | changes)


@pytest.fixture
def runtime() -> Runtime:
    return Runtime.start(threads=1, progress=False)


def test_camera_model_noise_grows_with_gain() -> None:
    cam = noise_gan.CameraModel()
    clean = crops(1, 64, 64)[0]
    low = cam.capture(clean, 1.0, 1.0, seed=0).astype(float) - clean
    high = cam.capture(clean, 16.0, 4.0, seed=0).astype(float) - clean
    assert high.std() > 3 * low.std()
    assert abs(high.mean()) < 3  # the exposure is cut as the gain rises: same brightness


def test_seed_least_squares_losses_reward_telling_real_from_generated() -> None:
    right, wrong = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    assert float(noise_gan.lsgan_d(right, wrong)) == 0.0  # D: 1 when real comes first
    assert float(noise_gan.lsgan_g(wrong, right)) == 0.0  # G: the reverse
    assert float(noise_gan.lsgan_d(wrong, right)) == 2.0


def test_noise_gan_trains_and_compares_denoisers_with_and_without_its_pairs(
    tmp_path: Path, runtime: Runtime
) -> None:
    config = noise_gan.NoiseGanConfig(
        real_scenes=2,
        captures=2,
        crop=16,
        batch_size=2,
        gan_steps=2,
        denoise_steps=2,
        width=4,
        d_width=4,
        denoiser_width=4,
    )
    result = noise_gan.run(config, tmp_path, runtime, train_frames=crops(4), held_out=held_out())
    assert result is not None
    assert set(result.scores) == {
        "noisy input",
        "real pairs only",
        "real + GAN pairs",
        "real + camera-model pairs (reference)",
        "real + Gaussian-noise pairs (reference)",
    }
    assert all(math.isfinite(s.psnr) and s.frames == 2 for s in result.scores.values())
    assert set(result.noise_sigma) == {"1×1", "4×2", "16×4"}
    report = json.loads((tmp_path / "noise-gan.json").read_text())
    assert report["held_out_frames"] == 2
    assert (tmp_path / "noise-generator.pt").is_file()
    assert "| real + GAN pairs |" in noise_gan.table(result)


def test_noise_generator_takes_eight_channels_and_starts_with_faint_noise() -> None:
    gen = noise_gan.NoiseGenerator(width=4).eval()
    clean = torch.rand(1, 3, 32, 32) * 0.5 + 0.25
    gains = torch.tensor([[4.0, 2.0]])
    with torch.no_grad():
        out = noise_gan.generate(gen, clean, gains, seed=0)
    assert 0.5 < float((out - clean).std()) * 255 < 2.0  # about one grey level


def test_transfer_pretrains_on_blur_then_fine_tunes_on_rain(
    tmp_path: Path, runtime: Runtime
) -> None:
    config = transfer.TransferConfig(
        width=4,
        d_width=4,
        height=32,
        frame_width=32,
        batch_size=2,
        pretrain_steps=2,
        steps=2,
        steps_per_epoch=2,
        d_pretrain_steps=1,
    )
    result = transfer.run(config, tmp_path, runtime, images=crops(3), held_out=held_out())
    assert result is not None
    assert result.report.methods == (
        "identity",
        "blur model, no fine-tuning",
        "rain from scratch (2 steps)",
        "blur → rain transfer (2 steps)",
    )
    for name in ("blur", "transfer", "scratch"):
        assert (tmp_path / name / "checkpoint.pt").is_file()
    saved = json.loads((tmp_path / "transfer.json").read_text())
    assert set(saved["scores"]["identity"]) == {"rain", "blur"}


def test_step_counts_that_are_not_whole_epochs_are_refused() -> None:
    with pytest.raises(ValueError, match="whole number of epochs"):
        transfer.TransferConfig(steps=75, steps_per_epoch=50)
    with pytest.raises(ValueError, match="whole number of epochs"):
        unpaired.UnpairedConfig(steps=75, steps_per_epoch=50)


def test_unpaired_training_never_pairs_and_is_compared_with_paired(
    tmp_path: Path, runtime: Runtime
) -> None:
    images = crops(4)
    (poor, _), (good, _) = unpaired.split(images, None)
    assert not {id(a) for a in poor} & {id(b) for b in good}
    config = tiny_unpaired()
    result = unpaired.run(config, tmp_path, runtime, images=images, held_out=held_out())
    assert result is not None
    assert result.report.methods == (
        "identity",
        "auto-gamma",
        "unpaired (EnlightenGAN)",
        "paired (core recipe)",
    )
    assert (tmp_path / "unpaired-generator.pt").is_file()
    assert (tmp_path / "paired" / "checkpoint.pt").is_file()


def test_relativistic_losses_prefer_outputs_judged_more_real_than_good_frames() -> None:
    real, fake = torch.full((4,), 0.5), torch.full((4,), -0.5)
    assert float(unpaired.ra_lsgan_d(real, fake)) == 0.0  # good scored 1 above the outputs
    assert float(unpaired.ra_lsgan_g(fake, real)) == 0.0  # the generator wants the reverse
    assert float(unpaired.ra_lsgan_g(real, fake)) > 0.0
