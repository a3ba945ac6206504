"""Training data, camera noise: a GAN that learns a camera's noise from a few real noisy/clean
pairs and then makes many more, to train the denoiser (seed 001, FIG. 5A, FIGS. 6–7, claim 8).

    python -m tools.gan noise-gan --out build/gan/noise-gan
    torchrun --nproc_per_node=2 -m tools.gan noise-gan --out build/gan/noise-gan

1. **The camera** (`CameraModel`, synthetic, documented as such): we have no real low-light
   captures with their gains, so a physically motivated sensor stands in for one: photon shot
   noise (Poisson in electrons, exposure cut by the total gain), read noise and a per-row offset
   before the analog gain, ADC noise and 10-bit quantisation between the analog and the digital
   gain (so the digital gain amplifies them), clipping, the sRGB curve, 8 bits. Its "real"
   captures are a small fixed set: `captures` frames of each of `real_scenes` clean training
   frames at random analog (1–16×) and digital (1–4×) gains, as a lab would shoot them.
2. **The GAN**: a U-Net generator takes the clean frame, the analog and digital gain as two
   constant maps (log-scaled) and 3 channels of normally distributed noise (8 channels, as in
   FIG. 6) and returns the noisy frame. A U-Net discriminator with one output per pixel sees
   the condition (clean frame and gain maps) and two noisy frames in a given order
   (11 channels); the least-squares losses of the seed are
   L_D = E[(D(N_c, N_r, N_f) − 1)²] + E[D(N_c, N_f, N_r)²],
   L_G = E[D(N_c, N_r, N_f)²] + E[(D(N_c, N_f, N_r) − 1)²],
   plus, for the generator, `moment_weight` × `residual_moments` (see there and the classes
   for why the networks differ from a plain U-Net pair).
3. **The denoiser** (the seed's U-Net + residual + dense network, `DenseUNet`) is trained twice
   with the same steps: on the real pairs alone, and on the real pairs plus pairs the generator
   makes from every other training frame at random gains (half of each batch). Also, for
   reference: on pairs from the camera model itself on all those frames (what a perfect noise
   GAN would give), and on the generic Gaussian-plus-signal noise of `degrade.noise`.
4. Held-out frames (never trained on) captured by the same camera at random gains: PSNR / SSIM
   of the noisy frame and of each denoiser's output against the clean frame.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from tools.gan import data, losses
from tools.gan.degrade import RGB, linear_to_srgb, noise, srgb_to_linear
from tools.gan.models import DenseUNet, _zero
from tools.gan.runtime import Runtime, Scores, run_image, score, unwrap

# -- the camera -----------------------------------------------------------------------------------


class CameraModel(BaseModel):
    """A synthetic sensor with analog and digital gain (the held-out "real" noise)."""

    model_config = ConfigDict(extra="forbid")

    full_well: float = Field(8000.0, gt=0, description="Electrons for white at gain 1.")
    read_noise: float = Field(4.0, ge=0, description="Read noise σ, electrons.")
    row_noise: float = Field(2.0, ge=0, description="Per-row offset σ, electrons.")
    adc_bits: int = Field(10, ge=6, le=16, description="ADC resolution.")
    adc_noise: float = Field(0.6, ge=0, description="ADC noise σ, in ADC steps.")
    analog: tuple[float, float] = Field((1.0, 16.0), description="Analog gain range.")
    digital: tuple[float, float] = Field((1.0, 4.0), description="Digital gain range.")

    def gains(self, rng: np.random.Generator) -> tuple[float, float]:
        """Random analog and digital gains, log-uniform in their ranges."""
        a = math.exp(rng.uniform(math.log(self.analog[0]), math.log(self.analog[1])))
        d = math.exp(rng.uniform(math.log(self.digital[0]), math.log(self.digital[1])))
        return a, d

    def capture(self, clean: RGB, analog: float, digital: float, seed: int) -> RGB:
        """`clean` as this camera shows it with these gains, the exposure cut by their product
        so the output is as bright as `clean` (auto-exposure at low light)."""
        rng = np.random.default_rng(seed)
        linear = srgb_to_linear(clean.astype(np.float32) / np.float32(255.0)).astype(np.float64)
        total = analog * digital
        electrons = rng.poisson(linear * self.full_well / total).astype(np.float64)
        electrons += rng.normal(0.0, self.read_noise, linear.shape)
        electrons += rng.normal(0.0, self.row_noise, (linear.shape[0], 1, 1))
        steps = 2**self.adc_bits - 1
        # Before the digital gain: the ADC sees the signal after the analog gain.
        adc = electrons * total / self.full_well / digital
        adc = np.round(adc * steps + rng.normal(0.0, self.adc_noise, adc.shape)) / steps
        out = linear_to_srgb(np.clip(adc * digital, 0.0, 1.0).astype(np.float32))
        return np.asarray(np.clip(out * 255.0 + 0.5, 0, 255), np.uint8)


def gain_maps(analog: Tensor, digital: Tensor, height: int, width: int) -> Tensor:
    """N×2×H×W constant maps: log2 analog / 4, log2 digital / 2 (0 to 1 over the ranges)."""
    a = (torch.log2(analog) / 4.0).reshape(-1, 1, 1, 1)
    d = (torch.log2(digital) / 2.0).reshape(-1, 1, 1, 1)
    return torch.cat([a, d], 1).expand(-1, 2, height, width)


# -- the networks ---------------------------------------------------------------------------------


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, 1, 1),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(cout, cout, 3, 1, 1),
        nn.LeakyReLU(0.2, inplace=True),
    )


class UNet(nn.Module):
    """Plain U-Net: `depth` max-pool levels, double 3×3 convs, skip joins, a 1×1 output."""

    def __init__(self, cin: int, cout: int, width: int = 16, depth: int = 2) -> None:
        super().__init__()
        self.stride = 2**depth
        chans = [width * 2**i for i in range(depth + 1)]
        self.inc = _block(cin, chans[0])
        self.downs = nn.ModuleList(_block(chans[i], chans[i + 1]) for i in range(depth))
        self.ups = nn.ModuleList(
            _block(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(depth))
        )
        self.out = nn.Conv2d(chans[0], cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.inc(x)
        skips: list[Tensor] = []
        for down in self.downs:
            skips.append(h)
            h = down(F.max_pool2d(h, 2))
        for up in self.ups:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear")
            h = up(torch.cat([h, skip], 1))
        out: Tensor = self.out(h)
        return out


class NoiseGenerator(nn.Module):
    """[clean (3), gain maps (2), N(0, 1) noise z (3)] → noisy frame = clean + s·z + r, where the
    U-Net's 6 output channels give the per-pixel noise scale s (softplus, ~1 grey level at the
    start) and a correction r (zero at the start: spatially correlated parts such as row
    noise, bias, clipping). Without the s·z path the plain residual U-Net learned one noise
    level for every gain within our CPU budget: the discriminator won and the generator's
    noise stayed flat."""

    inputs = 8

    def __init__(self, width: int = 16, depth: int = 2) -> None:
        super().__init__()
        self.net = UNet(self.inputs, 6, width, depth)
        self.stride = self.net.stride
        _zero(self.net.out)

    def forward(self, x: Tensor) -> Tensor:
        h = self.net(x)
        scale = F.softplus(h[:, :3] - 5.5)  # softplus(−5.5) ≈ 0.004: about one grey level
        return torch.clamp(x[:, :3] + scale * x[:, 5:8] + h[:, 3:6], 0.0, 1.0)


class NoiseDiscriminator(nn.Module):
    """[clean (3), gain maps (2), first noisy (3), second noisy (3)] → one score per pixel:
    high when the first noisy frame is the real capture.

    The noisy frames go in as their residuals from the clean frame, ×`residual_scale`: the same
    information, but noise of a few grey levels is ~0.01 in [0, 1], too small beside the picture
    for the first layer to see (with raw frames the discriminator stayed at 0.5 for both
    orders and the generator never learned the gain)."""

    inputs = 11

    def __init__(self, width: int = 16, depth: int = 2, residual_scale: float = 10.0) -> None:
        super().__init__()
        self.net = UNet(self.inputs, 1, width, depth)
        self.residual_scale = residual_scale

    def forward(self, x: Tensor) -> Tensor:
        clean, k = x[:, :3], self.residual_scale
        first, second = (x[:, 5:8] - clean) * k, (x[:, 8:11] - clean) * k
        out: Tensor = self.net(torch.cat([x[:, :5], first, second], 1))
        return out


def lsgan_d(real_first: Tensor, fake_first: Tensor) -> Tensor:
    """Seed 001: L_D = E[(D(N_c, N_r, N_f) − 1)²] + E[D(N_c, N_f, N_r)²]."""
    return ((real_first - 1.0) ** 2).mean() + (fake_first**2).mean()


def lsgan_g(real_first: Tensor, fake_first: Tensor) -> Tensor:
    """Seed 001: L_G = E[D(N_c, N_r, N_f)²] + E[(D(N_c, N_f, N_r) − 1)²]."""
    return (real_first**2).mean() + ((fake_first - 1.0) ** 2).mean()


def residual_moments(fake: Tensor, real: Tensor, clean: Tensor, cell: int = 8) -> Tensor:
    """L1 between the local mean and standard deviation (over cell×cell blocks) of the
    generated and the real residual from the same clean frame at the same gains: a direct
    pull towards the right noise strength for each signal level and gain, which the
    adversarial terms alone did not give within our CPU budget (the generator's noise drifted
    to 20–70 grey levels at every gain). ×10 so it weighs like the adversarial terms."""

    def moments(x: Tensor) -> tuple[Tensor, Tensor]:
        mean = F.avg_pool2d(x, cell)
        var = (F.avg_pool2d(x * x, cell) - mean * mean).clamp_min(0.0)
        return mean, torch.sqrt(var + 1e-8)

    mf, sf = moments(fake - clean)
    mr, sr = moments(real - clean)
    return 10.0 * (F.l1_loss(mf, mr) + F.l1_loss(sf, sr))


# -- configuration and data -------------------------------------------------------------------------


class NoiseGanConfig(BaseModel):
    """Everything a camera-noise GAN run depends on."""

    model_config = ConfigDict(extra="forbid")

    camera: CameraModel = Field(default_factory=CameraModel, description="The synthetic camera.")
    real_scenes: int = Field(2, ge=1, le=64, description="Training frames with real captures.")
    captures: int = Field(4, ge=1, le=256, description="Real captures per scene.")
    crop: int = Field(48, ge=16, le=256, description="Training crop side (native resolution).")
    batch_size: int = Field(8, ge=1, le=256, description="Crops per step per process.")
    gan_steps: int = Field(400, ge=1, le=1_000_000, description="GAN steps (D then G).")
    denoise_steps: int = Field(250, ge=1, le=1_000_000, description="Steps per denoiser.")
    width: int = Field(16, ge=4, le=256, description="Generator base channels.")
    d_width: int = Field(16, ge=4, le=256, description="Discriminator base channels.")
    denoiser_width: int = Field(8, ge=4, le=256, description="Denoiser base channels.")
    moment_weight: float = Field(
        1.0, ge=0, description="Residual mean/σ matching (0: the seed's adversarial terms alone)."
    )
    lr_g: float = Field(2e-4, gt=0, le=1, description="Generator learning rate (Adam).")
    lr_d: float = Field(2e-4, gt=0, le=1, description="Discriminator learning rate (Adam).")
    lr_denoise: float = Field(1e-3, gt=0, le=1, description="Denoiser learning rate (Adam).")
    synthetic_share: float = Field(
        0.5, gt=0, lt=1, description="Share of each batch the generator makes (with run)."
    )
    references: bool = Field(
        default=True, description="Also train the camera-model and Gaussian reference denoisers."
    )
    seed: int = Field(0, ge=0, description="Seeds weights, captures and crops.")
    threads: int = Field(1, ge=1, le=256, description="CPU threads per process.")


@dataclass(frozen=True, slots=True)
class Capture:
    clean: RGB
    noisy: RGB
    analog: float
    digital: float


def real_captures(scenes: Sequence[RGB], config: NoiseGanConfig) -> list[Capture]:
    """The fixed "lab" set: `captures` frames of every scene at random gains."""
    rng = np.random.default_rng([config.seed, 11])
    out = []
    for scene in scenes:
        for _ in range(config.captures):
            a, d = config.camera.gains(rng)
            noisy = config.camera.capture(scene, a, d, int(rng.integers(1 << 31)))
            out.append(Capture(scene, noisy, a, d))
    return out


def _crop(images: Sequence[RGB], size: int, rng: np.random.Generator) -> list[RGB]:
    """The same random size×size crop (and mirror) of every image (all the same size)."""
    h, w = images[0].shape[:2]
    if h < size or w < size:
        raise ValueError(f"frame {w}×{h} is smaller than the crop {size}")
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    flip = rng.random() < 0.5
    out = []
    for image in images:
        c = image[y : y + size, x : x + size]
        out.append(np.ascontiguousarray(c[:, ::-1] if flip else c))
    return out


@dataclass(frozen=True, slots=True)
class NoiseBatch:
    clean: Tensor
    noisy: Tensor
    gains: Tensor
    """N×2: analog, digital."""

    def condition(self) -> Tensor:
        h, w = self.clean.shape[-2:]
        return torch.cat([self.clean, gain_maps(self.gains[:, 0], self.gains[:, 1], h, w)], 1)


def real_batch(
    captures: Sequence[Capture], size: int, n: int, rng: np.random.Generator
) -> NoiseBatch:
    picks = [captures[int(i)] for i in rng.integers(0, len(captures), n)]
    crops = [_crop([c.clean, c.noisy], size, rng) for c in picks]
    return NoiseBatch(
        data.to_tensor([c[0] for c in crops]),
        data.to_tensor([c[1] for c in crops]),
        torch.tensor([[c.analog, c.digital] for c in picks], dtype=torch.float32),
    )


def clean_batch(
    frames: Sequence[RGB], camera: CameraModel, size: int, n: int, rng: np.random.Generator
) -> tuple[Tensor, Tensor]:
    """Clean crops of `frames` and random gains (N×2) for the generator to make noisy."""
    crops = [_crop([frames[int(i)]], size, rng)[0] for i in rng.integers(0, len(frames), n)]
    gains = torch.tensor([camera.gains(rng) for _ in range(n)], dtype=torch.float32)
    return data.to_tensor(crops), gains


def generate(generator: nn.Module, clean: Tensor, gains: Tensor, seed: int) -> Tensor:
    """Noisy frames from the generator: clean, gain maps and fresh N(0, 1) noise."""
    h, w = clean.shape[-2:]
    z = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))
    x = torch.cat([clean, gain_maps(gains[:, 0], gains[:, 1], h, w), z.to(clean)], 1)
    out: Tensor = generator(x)
    return out


# -- training ---------------------------------------------------------------------------------------


def train_gan(
    captures: Sequence[Capture], config: NoiseGanConfig, runtime: Runtime
) -> tuple[NoiseGenerator, list[dict[str, float]]]:
    """The noise GAN on the real captures: one discriminator step, then one generator step."""
    torch.manual_seed(config.seed)
    g_module = NoiseGenerator(config.width)
    d_module = NoiseDiscriminator(config.d_width)
    g, d = runtime.wrap(g_module), runtime.wrap(d_module)
    opt_g = torch.optim.Adam(g_module.parameters(), lr=config.lr_g, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d_module.parameters(), lr=config.lr_d, betas=(0.5, 0.999))
    rng = np.random.default_rng([config.seed, runtime.env.rank, 1])
    dev = runtime.device
    history: list[dict[str, float]] = []
    with runtime.bar("noise GAN", config.gan_steps) as advance:
        for step in range(config.gan_steps):
            batch = real_batch(captures, config.crop, config.batch_size, rng)
            cond, real = batch.condition().to(dev), batch.noisy.to(dev)
            seed = config.seed * 1_000_003 + runtime.env.rank * 100_003 + step
            z = torch.randn(real.shape, generator=torch.Generator().manual_seed(seed)).to(dev)
            with torch.no_grad():
                fake = g(torch.cat([cond, z], 1))
            # One forward per backward: both orders in one batch.
            out = d(torch.cat([torch.cat([cond, real, fake], 1), torch.cat([cond, fake, real], 1)]))
            n = real.shape[0]
            loss_d = lsgan_d(out[:n], out[n:])
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()  # type: ignore[no-untyped-call]
            opt_d.step()
            fake = g(torch.cat([cond, z], 1))
            out = d(torch.cat([torch.cat([cond, real, fake], 1), torch.cat([cond, fake, real], 1)]))
            loss_g = lsgan_g(out[:n], out[n:])
            moments = residual_moments(fake, real, cond[:, :3])
            loss_g = loss_g + config.moment_weight * moments
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()  # type: ignore[no-untyped-call]
            opt_g.step()
            stats = {
                "d": float(loss_d.detach()),
                "g": float(loss_g.detach()),
                "moments": float(moments.detach()),
            }
            history.append(stats)
            advance(f"d {stats['d']:.3f} g {stats['g']:.3f} moments {stats['moments']:.3f}")
    g_module.eval()
    return g_module, history


PairSource = Callable[[np.random.Generator, int], tuple[Tensor, Tensor]]
"""(rng, step) → (noisy, clean) batch."""


def train_denoiser(
    name: str, source: PairSource, config: NoiseGanConfig, runtime: Runtime
) -> tuple[DenseUNet, float]:
    """The seed's denoiser on pairs from `source`, L1 + ½L2, cosine-decayed Adam."""
    torch.manual_seed(config.seed + 1)
    module = DenseUNet(config.denoiser_width)
    net = runtime.wrap(module)
    opt = torch.optim.Adam(module.parameters(), lr=config.lr_denoise)
    total = config.denoise_steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    rng = np.random.default_rng([config.seed, runtime.env.rank, 2])
    loss = torch.zeros(())
    with runtime.bar(f"denoiser: {name}", total) as advance:
        for step in range(total):
            noisy, clean = source(rng, step)
            out = net(noisy.to(runtime.device))
            loss = losses.reconstruction(out, clean.to(runtime.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            advance(f"loss {float(loss.detach()):.4f}")
    module.eval()
    return module, float(loss.detach())


# -- the whole method -------------------------------------------------------------------------------


@dataclass
class NoiseGanResult:
    scores: dict[str, Scores]
    """Method → held-out PSNR / SSIM; "noisy input" is the frame as captured."""
    noise_sigma: dict[str, dict[str, float]]
    """Gain setting → residual σ (grey levels) of the camera and of the generator."""
    seconds: dict[str, float]
    gan_history: list[dict[str, float]]


def held_out_captures(camera: CameraModel, samples: Sequence[data.Sample]) -> list[Capture]:
    out = []
    for i, s in enumerate(samples):
        rng = np.random.default_rng([900_000, i])
        a, d = camera.gains(rng)
        out.append(
            Capture(s.image, camera.capture(s.image, a, d, int(rng.integers(1 << 31))), a, d)
        )
    return out


def noise_levels(
    generator: NoiseGenerator, camera: CameraModel, frames: Sequence[RGB]
) -> dict[str, dict[str, float]]:
    """Residual σ (noisy − clean, grey levels) of the camera and the generator at low, middle and
    high total gain, over `frames`: how close the learned noise is in strength."""
    settings = {"1×1": (1.0, 1.0), "4×2": (4.0, 2.0), "16×4": (16.0, 4.0)}
    out: dict[str, dict[str, float]] = {}
    for label, (a, d) in settings.items():
        cam, gen = [], []
        for i, f in enumerate(frames):
            real = camera.capture(f, a, d, 5000 + i)
            h, w = f.shape[:2]
            gains = torch.tensor([[a, d]], dtype=torch.float32)
            z = torch.randn((1, 3, h, w), generator=torch.Generator().manual_seed(7000 + i))
            fake = run_image(
                generator, f, generator.stride, gain_maps(gains[:, 0], gains[:, 1], h, w), z
            )
            cam.append(float((real.astype(np.float64) - f).std()))
            gen.append(float((fake.astype(np.float64) - f).std()))
        out[label] = {"camera": float(np.mean(cam)), "generator": float(np.mean(gen))}
    return out


def run(
    config: NoiseGanConfig,
    out: Path,
    runtime: Runtime,
    *,
    train_frames: Sequence[RGB] | None = None,
    held_out: Sequence[data.Sample] | None = None,
) -> NoiseGanResult | None:
    """GAN, denoisers, evaluation; writes `out/noise-gan.json` and the generator. Returns the
    result on the main process (None elsewhere)."""
    frames = (
        [s.image for s in data.training_images()] if train_frames is None else list(train_frames)
    )
    if len(frames) <= config.real_scenes:
        raise ValueError(
            f"need more than real_scenes={config.real_scenes} training frames, got {len(frames)}"
        )
    # Real scenes spread evenly over the list, first and last included (the packaged list has
    # the video's frames first and the photos last).
    last, k = len(frames) - 1, config.real_scenes
    real_idx = sorted({round(i * last / (k - 1)) for i in range(k)} if k > 1 else {0})
    scenes = [frames[i] for i in real_idx]
    others = [f for i, f in enumerate(frames) if i not in real_idx]
    captures = real_captures(scenes, config)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    generator, history = train_gan(captures, config, runtime)
    seconds["gan"] = time.perf_counter() - t0
    cam, n, size = config.camera, config.batch_size, config.crop

    def real_only(rng: np.random.Generator, _step: int) -> tuple[Tensor, Tensor]:
        b = real_batch(captures, size, n, rng)
        return b.noisy, b.clean

    def with_gan(rng: np.random.Generator, step: int) -> tuple[Tensor, Tensor]:
        k = max(1, round(n * config.synthetic_share))
        b = real_batch(captures, size, n - k, rng)
        clean, gains = clean_batch(others, cam, size, k, rng)
        with torch.no_grad():
            fake = generate(generator, clean, gains, 10_000_000 + step)
        return torch.cat([b.noisy, fake]), torch.cat([b.clean, clean])

    def with_camera(rng: np.random.Generator, _step: int) -> tuple[Tensor, Tensor]:
        k = max(1, round(n * config.synthetic_share))
        b = real_batch(captures, size, n - k, rng)
        clean, gains = clean_batch(others, cam, size, k, rng)
        images = [data.to_image(c) for c in clean]
        noisy = [
            cam.capture(im, float(g[0]), float(g[1]), int(rng.integers(1 << 31)))
            for im, g in zip(images, gains, strict=True)
        ]
        return torch.cat([b.noisy, data.to_tensor(noisy)]), torch.cat([b.clean, clean])

    def with_gaussian(rng: np.random.Generator, _step: int) -> tuple[Tensor, Tensor]:
        k = max(1, round(n * config.synthetic_share))
        b = real_batch(captures, size, n - k, rng)
        clean, _ = clean_batch(others, cam, size, k, rng)
        noisy = [noise(data.to_image(c), rng) for c in clean]
        return torch.cat([b.noisy, data.to_tensor(noisy)]), torch.cat([b.clean, clean])

    sources: dict[str, PairSource] = {
        "real pairs only": real_only,
        "real + GAN pairs": with_gan,
    }
    if config.references:
        sources["real + camera-model pairs (reference)"] = with_camera
        sources["real + Gaussian-noise pairs (reference)"] = with_gaussian
    denoisers: dict[str, DenseUNet] = {}
    for name, source in sources.items():
        t0 = time.perf_counter()
        denoisers[name], _ = train_denoiser(name, source, config, runtime)
        seconds[name] = time.perf_counter() - t0
    if not runtime.env.main:
        return None
    samples = data.held_out_images() if held_out is None else list(held_out)
    tests = held_out_captures(cam, samples)
    scores = {"noisy input": score([(c.clean, c.noisy) for c in tests])}
    with runtime.bar("held-out frames", len(denoisers)) as advance:
        for name, net in denoisers.items():
            scores[name] = score([(c.clean, run_image(net, c.noisy, net.stride)) for c in tests])
            advance(name)
    sigma = noise_levels(generator, cam, [s.image for s in samples[:3]])
    result = NoiseGanResult(scores, sigma, seconds, history)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"config": config.model_dump(mode="json"), "generator": unwrap(generator).state_dict()},
        out / "noise-generator.pt",
    )
    report: dict[str, Any] = {
        "config": config.model_dump(mode="json"),
        "real_scene_indices": real_idx,
        "held_out_frames": len(tests),
        "scores": {k: {"psnr": v.psnr, "ssim": v.ssim} for k, v in scores.items()},
        "noise_sigma": sigma,
        "seconds": seconds,
        "gan_last": history[-1] if history else {},
    }
    (out / "noise-gan.json").write_text(json.dumps(report, indent=1) + "\n")
    return result


def table(result: NoiseGanResult) -> str:
    lines = ["| denoiser trained on | held-out PSNR / SSIM |", "|---|---:|"]
    best = max(s.psnr for s in result.scores.values())
    for name, s in result.scores.items():
        cell = s.cell()
        lines.append(f"| {name} | {f'**{cell}**' if s.psnr == best else cell} |")
    lines.append("")
    lines.append("| gain (analog×digital) | residual σ camera | residual σ generator |")
    lines.append("|---|---:|---:|")
    for label, v in result.noise_sigma.items():
        lines.append(f"| {label} | {v['camera']:.2f} | {v['generator']:.2f} |")
    return "\n".join(lines)
