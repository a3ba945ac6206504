"""GAN training: each architecture trains a few steps on tiny crops, checkpoints, and resumes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs the train extra (torch)")

from tools.gan import losses  # noqa: E402
from tools.gan.models import (  # noqa: E402
    ARCHITECTURES,
    FastCurveGenerator,
    attention_map,
    build_generator,
    dead_zone,
)
from tools.gan.train import TrainConfig, train  # noqa: E402


def photos() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = np.linspace(40, 220, 64)[None, :, None] * np.ones((48, 64, 3))
    return [
        np.asarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255), np.uint8)
        for _ in range(3)
    ]


def tiny(arch: str, epochs: int = 1) -> TrainConfig:
    return TrainConfig(
        name=f"tiny-{arch}",
        arch=arch,  # type: ignore[arg-type]
        width=4,
        d_width=4,
        height=32,
        frame_width=32,
        batch_size=2,
        epochs=epochs,
        steps_per_epoch=2,
        d_pretrain_steps=1,
        local_patches=2,
        local_size=16,
        mix={"low_light": 1.0, "fog": 1.0, "clean": 0.5},
    )


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_each_architecture_trains_a_few_steps_and_checkpoints(arch: str, tmp_path: Path) -> None:
    result = train(tiny(arch), tmp_path, images=photos(), progress=False)
    assert len(result.history) == 1
    assert all(math.isfinite(v) for v in result.history[0].values())
    assert {"d", "g", "adv", "rec", "bright", "tex"} <= set(result.history[0])
    assert (tmp_path / "checkpoint.pt").is_file()
    assert json.loads((tmp_path / "history.json").read_text())[0]["epoch"] == 1
    with torch.inference_mode():
        out = result.generator.eval()(torch.rand(1, 3, 32, 32))
    assert out.shape == (1, 3, 32, 32)
    assert float(out.min()) >= 0.0
    assert float(out.max()) <= 1.0


def test_training_resumes_from_its_checkpoint_where_it_stopped(tmp_path: Path) -> None:
    config = tiny("fast", epochs=2)
    first = train(config, tmp_path, images=photos(), progress=False, stop_after=1)
    assert len(first.history) == 1
    second = train(config, tmp_path, images=photos(), progress=False)
    assert [h["epoch"] for h in second.history] == [1.0, 2.0]
    assert second.history[0] == first.history[0]
    straight = train(config, tmp_path / "straight", images=photos(), progress=False)
    assert straight.digest == second.digest  # resuming is the same as never stopping


def test_a_checkpoint_from_another_config_is_refused(tmp_path: Path) -> None:
    train(tiny("fast"), tmp_path, images=photos(), progress=False)
    other = tiny("fast").model_copy(update={"seed": 5})
    with pytest.raises(ValueError, match="different config"):
        train(other, tmp_path, images=photos(), progress=False)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_generators_start_as_the_identity(arch: str) -> None:
    gen = build_generator(arch, 4).eval()  # type: ignore[arg-type]
    x = torch.rand(1, 3, 32, 48)
    with torch.inference_mode():
        assert float((gen(x) - x).abs().max()) < 1e-6


def test_fast_generator_leaves_a_frame_bit_exact_when_its_parameters_sit_in_the_dead_zone() -> None:
    gen = FastCurveGenerator(width=4).eval()
    with torch.no_grad():
        gen.curve.bias.fill_(0.01)  # inside ±0.02: no curve, no gain
    x = torch.randint(0, 256, (1, 3, 32, 32)).float() / 255
    with torch.inference_mode():
        y = gen(x)
    assert torch.equal((y * 255).round(), (x * 255).round())


def test_attention_is_one_minus_normalised_brightness() -> None:
    x = torch.zeros(1, 3, 2, 2)
    x[..., 0, 0] = 1.0
    att = attention_map(x)
    assert float(att[0, 0, 0, 0]) == pytest.approx(0.0)
    assert float(att[0, 0, 1, 1]) == pytest.approx(1.0)


def test_region_losses_look_only_inside_the_region() -> None:
    ref = torch.rand(1, 3, 32, 32)
    out = ref.clone()
    out[..., :16, :] = 0.0  # damage the top half only
    top = torch.zeros(1, 1, 32, 32)
    top[..., :16, :] = 1.0
    bottom = 1.0 - top
    assert float(losses.brightness_difference(out, ref, bottom)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.brightness_difference(out, ref, top)) > 0.1
    assert float(losses.texture_difference(out, ref, top)) > float(
        losses.texture_difference(out, ref, bottom)
    )


def test_the_calibrated_gate_is_zero_below_continuous_and_exact_far_above() -> None:
    v = torch.tensor([0.01, 0.03, 0.05, 0.0999, 0.1, 0.2, -0.2])
    out = dead_zone(v, 0.02, training=False, gate=0.05)
    assert out[:3].abs().max() == 0.0  # inside the widened zone
    assert 0.0 < float(out[3]) < float(out[4])  # the ramp rises monotonically
    assert torch.allclose(out[4:], torch.tensor([0.08, 0.18, -0.18]))  # the trained shrink


def test_calibration_widens_the_zone_from_training_frames_only() -> None:
    torch.manual_seed(0)
    gen = FastCurveGenerator(width=4).eval()
    with torch.no_grad():
        for p in gen.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    frames = [torch.rand(1, 3, 32, 48) for _ in range(5)]
    gate = gen.calibrate(frames, quantile=1.0)
    assert gate >= gen.zone
    assert gen.gate == gate
    with torch.inference_mode():
        for x in frames:
            assert torch.equal((gen(x) * 255).round(), (x * 255).round())
