"""Guided upsampling: a generator run at a reduced resolution, its change brought back to full
resolution by a guided filter in the graph (`GuidedUpsampled`), exported and shipped as such."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the models need the train extra (torch)")
pytest.importorskip("onnx", reason="export needs onnx")
pytest.importorskip("onnxruntime", reason="the check runs onnxruntime")

import torch.nn.functional as F  # noqa: E402, N812
from torch import Tensor  # noqa: E402

from tools.gan import speed  # noqa: E402
from tools.gan.export import check_onnx, export_onnx, load_onnx_weights  # noqa: E402
from tools.gan.models import Generator, GuidedUpsampled, RestoreGenerator  # noqa: E402
from tools.gan.ship import RESTORE, ship, trained_inside, weights_provenance  # noqa: E402
from tools.gan.train import TrainConfig, make_generator, train  # noqa: E402
from vehicle_agent.enhance.manifest import InputSpec, build_manifest, write_manifest  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "restore"


class Lambda(Generator):
    """A stand-in inner generator: any tensor function, stride 8."""

    stride = 8

    def __init__(self, fn: object) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)  # type: ignore[operator, no-any-return]


def textured(height: int = 96, width: int = 144, seed: int = 0) -> Tensor:
    """A picture with edges and texture, in (0.1, 0.9)."""
    rng = np.random.default_rng(seed)
    base = rng.random((1, 3, height // 8, width // 8), dtype=np.float32)
    x = F.interpolate(torch.from_numpy(base), size=(height, width), mode="nearest")
    return 0.1 + 0.8 * x


def test_an_inner_model_that_changes_nothing_leaves_the_frame_bit_for_bit() -> None:
    x = textured()
    wrapped = GuidedUpsampled(Lambda(lambda t: t), scale=3, radius=2, eps=1e-3).eval()
    with torch.inference_mode():
        assert torch.equal(wrapped(x), x)
    assert wrapped.stride == 24


def test_a_brightening_carries_over_to_full_resolution() -> None:
    x = textured()
    wrapped = GuidedUpsampled(Lambda(lambda t: t + 0.05), scale=2, radius=2, eps=1e-3).eval()
    with torch.inference_mode():
        out = wrapped(x)
    assert torch.allclose(out, x + 0.05, atol=1e-5)


def test_full_resolution_detail_survives_where_a_plain_upsampling_loses_it() -> None:
    """An inner model that only brightens by a gain: the guided output keeps the full frame's
    edges, where shrinking, brightening and upsampling would blur them."""
    x = textured(seed=1)
    inner = Lambda(lambda t: torch.clamp(t * 1.1, 0.0, 1.0))
    wrapped = GuidedUpsampled(inner, scale=3, radius=2, eps=1e-4).eval()
    with torch.inference_mode():
        out = wrapped(x)
        truth = inner(x)
        plain = F.interpolate(inner(F.avg_pool2d(x, 3)), size=x.shape[2:], mode="bilinear")
    guided_error = float((out - truth).abs().mean())
    plain_error = float((plain - truth).abs().mean())
    assert guided_error < 0.3 * plain_error, (guided_error, plain_error)


def test_noise_an_inner_model_flattens_goes_at_full_resolution_too() -> None:
    """On a flat noisy patch, an inner model that smooths makes the full-resolution output
    smoother than the input (the fitted gain goes towards −1)."""
    rng = np.random.default_rng(2)
    x = torch.from_numpy(0.5 + 0.05 * rng.standard_normal((1, 3, 96, 96)).astype(np.float32))
    inner = Lambda(lambda t: F.avg_pool2d(t, 5, 1, 2, count_include_pad=False))
    wrapped = GuidedUpsampled(inner, scale=2, radius=2, eps=1e-4).eval()
    with torch.inference_mode():
        out = wrapped(x)
    assert float(out.std()) < 0.5 * float(x.std())


def test_settings_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValueError, match="must be ≥ 1"):
        GuidedUpsampled(Lambda(lambda t: t), scale=0)
    with pytest.raises(ValueError, match="eps"):
        GuidedUpsampled(Lambda(lambda t: t), eps=0.0)


def trained_like_restore() -> RestoreGenerator:
    torch.manual_seed(0)
    generator = RestoreGenerator(width=4)
    with torch.no_grad():
        for p in generator.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return generator.eval()


def test_a_wrapped_restore_model_exports_and_its_weights_load_back(tmp_path: Path) -> None:
    inner = trained_like_restore()
    wrapped = GuidedUpsampled(inner, scale=3, radius=2, eps=1e-3).eval()
    path = tmp_path / "model.onnx"
    export_onnx(wrapped, path)
    image = (np.random.default_rng(0).random((100, 150, 3)) * 255).astype(np.uint8)
    assert check_onnx(wrapped, path, images=[image]) < 1e-4
    again = RestoreGenerator(width=4)
    assert load_onnx_weights(again, path) == len(list(again.parameters()))
    for (name, a), (_, b) in zip(
        inner.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_speed_pads_each_size_to_the_stride_the_runtime_pads_to(tmp_path: Path) -> None:
    wrapped = GuidedUpsampled(Lambda(lambda t: t * 0.9), scale=3).eval()
    path = tmp_path / "model.onnx"
    export_onnx(wrapped, path)
    manifest = build_manifest(
        path, name="wrapped", version="0.0.1", task="denoise", opset=17,
        training={"data": "none (test)", "seed": 0, "command": "pytest", "architecture": "x0.9"},
        input_spec=InputSpec(stride=wrapped.stride, min_size=wrapped.stride),
    )  # fmt: skip
    write_manifest(tmp_path, manifest)
    # 100×60 is no multiple of 24: unpadded, the graph's shapes would not agree.
    (timing,) = speed.measure(path, sizes=((100, 60),), threads=1, runs=2)
    assert (timing.width, timing.height) == (100, 60)
    # A manifest the runtime would refuse is refused here too, saying where.
    (tmp_path / "manifest.json").write_text(json.dumps({"input": {"stride": wrapped.stride}}))
    with pytest.raises(ValueError, match=r"manifest\.json.*name"):
        speed.measure(path, sizes=((100, 60),), threads=1, runs=2)


def test_the_shipped_restore_model_is_the_spec_s_guided_generator() -> None:
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    c = RESTORE.config
    assert manifest["version"] == RESTORE.version
    assert manifest["training"]["guided"] == {
        "scale": c.guided_scale,
        "radius": c.guided_radius,
        "eps": c.guided_eps,
        "trained_inside": True,
    }
    generator = make_generator(c)
    assert isinstance(generator, GuidedUpsampled)
    assert manifest["input"]["stride"] == generator.stride
    load_onnx_weights(generator, SHIPPED / "model.onnx")
    image = (np.random.default_rng(0).random((96, 144, 3)) * 255).astype(np.uint8)
    assert check_onnx(generator.eval(), SHIPPED / "model.onnx", images=[image]) < 1e-4


def test_a_re_export_keeps_the_training_record_of_the_weights_it_takes() -> None:
    record = weights_provenance(SHIPPED / "model.onnx")
    assert len(record["sha256"]) == 64
    assert "guided" not in record["training"]
    assert "weights_from" not in record["training"]
    assert "torchrun" in record["training"]["command"]


def test_ship_refuses_weights_for_more_than_one_model_or_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one footage-bank model"):
        ship(names=None, weights_from=SHIPPED / "model.onnx", build_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no such model file"):
        ship(names=["restore"], weights_from=tmp_path / "none.onnx", build_dir=tmp_path)


def tiny_guided(**fields: object) -> TrainConfig:
    values: dict[str, object] = {
        "name": "tiny-guided",
        "arch": "restore",
        "width": 4,
        "d_width": 4,
        "height": 64,
        "frame_width": 64,
        "batch_size": 4,
        "epochs": 2,
        "steps_per_epoch": 20,
        "d_pretrain_steps": 2,
        "lr_g": 3e-3,
        "data": "bank",
        "tone": 0.0,
        "mix": {"low_light": 1.0},
        "guided_scale": 2,
    }
    values.update(fields)
    return TrainConfig.model_validate(values)


def test_a_generator_trained_inside_the_wrapper_learns(
    tmp_path: Path,
) -> None:
    from tools.gan import data  # noqa: PLC0415
    from tools.gan.bench import psnr  # noqa: PLC0415

    samples = data.bank_training_images(limit=4)
    images = [
        data.random_view(s.image, 64, 64, np.random.default_rng(i)) for i, s in enumerate(samples)
    ]
    result = train(tiny_guided(), tmp_path, images=images, progress=False)
    rec = [h["rec"] for h in result.history]
    assert rec[-1] < 0.8 * rec[0], f"reconstruction loss did not fall: {rec}"
    generator = result.generator
    assert isinstance(generator, GuidedUpsampled)
    assert generator.stride == 32
    # A dark copy of a training frame comes out brighter and closer to the frame.
    from tools.footage import degradations  # noqa: PLC0415

    clean = images[0]
    dark = degradations.degrade(clean, "low_light", "sensor", 10_000)
    with torch.inference_mode():
        out = data.to_image(generator.eval()(data.to_tensor([dark])))
    assert psnr(out, clean) > psnr(dark, clean)


def test_training_frames_that_the_wrapped_stride_does_not_divide_are_refused(
    tmp_path: Path,
) -> None:
    assert isinstance(make_generator(tiny_guided()), GuidedUpsampled)
    assert isinstance(make_generator(tiny_guided(guided_scale=1)), RestoreGenerator)
    with pytest.raises(ValueError, match="not multiples of the generator's stride 48"):
        train(tiny_guided(guided_scale=3), tmp_path, images=[], progress=False)


def test_the_manifest_says_whether_the_weights_were_trained_inside_the_wrapper() -> None:
    assert trained_inside({"config": {"guided_scale": 3}})
    assert not trained_inside({"config": {"guided_scale": 1}})
    assert not trained_inside({"config": {}})  # a record from before the option: full size
    assert not trained_inside({})
