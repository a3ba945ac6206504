"""Training, the networks: the generators the seeds describe, a fast one for the vehicle, and
their discriminators. Chosen by name (`ARCHITECTURES`) from the training config.

Every generator maps float32 N×3×H×W RGB in [0, 1] to the same, H and W multiples of its
`stride`, and starts as (nearly) the identity: a good frame comes out as it went in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, TypeAlias

import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from torch import Tensor, nn

Architecture: TypeAlias = Literal["fast", "enlighten", "resblock", "dense_unet", "restore"]
ARCHITECTURES: tuple[Architecture, ...] = ("fast", "enlighten", "resblock", "dense_unet", "restore")

LUMA = (0.299, 0.587, 0.114)


def luma(x: Tensor) -> Tensor:
    """N×1×H×W luma of an RGB batch."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return LUMA[0] * r + LUMA[1] * g + LUMA[2] * b


def _act() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.2, inplace=True)


def _zero(module: nn.Conv2d | nn.Linear) -> None:
    nn.init.zeros_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def dead_zone(v: Tensor, threshold: float, *, training: bool, gate: float = 0.0) -> Tensor:
    """Soft-shrink: exactly 0 within ±threshold, so a frame that needs nothing gets exactly the
    identity. While training, 5 % of the gradient leaks through the dead zone (the forward value
    is unchanged), so a parameter that sits at 0 can still learn to leave it.

    `gate` (> threshold, set after training by `FastCurveGenerator.calibrate`) widens the zone
    without biasing large values: 0 below `gate`, a linear ramp up to 2·`gate`, the trained
    soft-shrink beyond. Continuous and monotonic, so no frame-to-frame jump."""
    out = F.softshrink(v, threshold)
    if training:
        out = out + 0.05 * (v - v.detach())
    if gate > threshold:
        out = out * torch.clamp((v.abs() - gate) / gate, 0.0, 1.0)
    return out


class Generator(nn.Module):
    """What every generator offers: the stride its input is padded to, and a hook the trainer
    calls with the fraction of training done (for schedules inside the model)."""

    stride: int = 1

    def set_progress(self, fraction: float) -> None:
        """Called before every generator step with the share of training done, 0 to 1."""


# -- the fast generator: parameters at low resolution, applied per pixel at full resolution ----


class FastCurveGenerator(Generator):
    """Real-time enhancement: a small CNN looks at a 64×64 thumbnail and predicts
    (1) a per-channel global tone curve y = x·(a/(x + k) + b), which brightens shadows more than
    highlights (like a gamma, but with a finite slope at black, so dark noise is not blown up),
    and (2) a 16×16 grid of local gains g around a per-channel airlight A, applied as
    (y − A)·g + A: the inverse of the scattering model, so haze is removed where the grid says
    it is thick.

    Full-resolution work is what costs on a CPU (ONNX `Resize` ~9 ms per channel at 720p here,
    `Pow` 34 ms), so per pixel there are 7 element-wise operations (add, divide, add, multiply
    for the curve; multiply, add for the gain; clip) and no full-size map: the grid goes
    bilinearly to a quarter of the frame, 4× wider by repetition, and 4× taller by broadcasting
    over groups of 4 rows. About 100 000 parameters, all working at thumbnail size.

    Curve strength, gain and the gain grid pass through a dead zone (`dead_zone`): a frame that
    needs nothing comes out bit for bit as it went in, instead of almost.
    """

    stride = 4

    def __init__(self, width: int = 24, thumb: int = 64, dead_zone: float = 0.02) -> None:
        super().__init__()
        self.thumb = thumb
        self.zone = dead_zone
        w = width
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w, 3, 2, 1),  # 32
            _act(),
            nn.Conv2d(w, w, 3, 1, 1),
            _act(),
            nn.Conv2d(w, 2 * w, 3, 2, 1),  # 16
            _act(),
            nn.Conv2d(2 * w, 2 * w, 3, 1, 1),
            _act(),
        )
        self.context = nn.Sequential(
            nn.Conv2d(2 * w, 2 * w, 3, 2, 1),  # 8
            _act(),
            nn.Conv2d(2 * w, 2 * w, 3, 2, 1),  # 4
            _act(),
        )
        self.to_global = nn.Linear(4 * w, 2 * w)
        self.curve = nn.Linear(2 * w, 13)
        self.local = nn.Sequential(nn.Conv2d(2 * w, 2 * w, 3, 1, 1), _act())
        self.gain = nn.Conv2d(2 * w, 1, 3, 1, 1)
        _zero(self.curve)
        _zero(self.gain)
        self.threshold = dead_zone
        self.gate = 0.0

    @torch.no_grad()
    def calibrate(self, images: list[Tensor], quantile: float = 0.99) -> float:
        """Widen the dead zone to the `quantile` of the largest raw parameter each *training*
        frame, untouched, produces: the trained ±threshold turns out narrower than the spread of
        the CNN's outputs on good full-size frames, so most of them would still be nudged by a
        fraction of a grey level. Held-out frames play no part. Returns the gate."""
        was_training, self.gate = self.training, 0.0
        self.eval()
        peaks: list[float] = []
        for x in images:
            q = self.curve(self._global(x)[1])
            raw = torch.cat([q[:, 0:3], q[:, 6:9], q[:, 12:13]], 1).abs().amax()
            local = (q[:, 12:13, None, None] + self.gain(self._local(x))).abs().amax()
            peaks.append(max(float(raw), float(local)))
        self.gate = max(float(torch.tensor(peaks).quantile(quantile)), self.zone)
        self.train(was_training)
        return self.gate

    def set_progress(self, fraction: float) -> None:
        # No dead zone for the first 30 % of training: with it from the start the gain grid,
        # starting at 0, sees only the leaked gradient and can stay stuck there for good.
        self.threshold = self.zone * min(1.0, max(0.0, (fraction - 0.3) / 0.2))

    def _global(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Thumbnail features (N×2w×16×16) and the global feature vector."""
        size = 4 * self.thumb
        # Bilinear to 4× the thumbnail, then a 4×4 mean: close to an area resize, which the
        # TorchScript ONNX exporter cannot write with antialiasing.
        thumb = F.avg_pool2d(F.interpolate(x, size=(size, size), mode="bilinear"), 4)
        features = self.encoder(thumb)
        context = self.context(features)
        pooled = torch.cat([context.mean(dim=(2, 3)), context.amax(dim=(2, 3))], dim=1)
        return features, F.leaky_relu(self.to_global(pooled), 0.2)

    def _local(self, x: Tensor) -> Tensor:
        features, glob = self._global(x)
        out: Tensor = self.local(features + glob[:, :, None, None])
        return out

    def parameters_for(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(a, k, b, A) per channel, N×3×1×1 each, and the log-gain grid N×1×16×16."""
        features, glob = self._global(x)
        q = self.curve(glob)
        p = q[:, :12].reshape(-1, 4, 3, 1, 1)
        gate = self.gate
        a = dead_zone(p[:, 0], self.threshold, training=self.training, gate=gate)  # 0: no curve
        k = torch.exp(p[:, 1] - 1.0)  # knee ≈ 0.37 at the start
        b = 1.0 + dead_zone(p[:, 2], self.threshold, training=self.training, gate=gate)
        airlight = torch.sigmoid(p[:, 3] + 1.5)
        # The gain is global (learned fast, from the whole thumbnail) times local (the grid).
        local = self.local(features + glob[:, :, None, None])
        log_gain = q[:, 12:13, None, None] + self.gain(local)
        log_gain = dead_zone(log_gain, self.threshold, training=self.training, gate=gate)
        return a, k, b, airlight, log_gain

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2], x.shape[-1]
        a, k, b, airlight, log_gain = self.parameters_for(x)
        # (y − A)·g + A = y·g + A·(1 − g). The gain grid goes bilinearly to a quarter of the
        # frame, then 4× wider by repetition; the 4× taller happens by broadcasting over
        # groups of 4 rows, so no full-size gain map is ever written.
        gain = F.interpolate(torch.exp(log_gain), size=(height // 4, width // 4), mode="bilinear")
        gain = F.interpolate(gain, scale_factor=(1.0, 4.0), mode="nearest")
        offset = airlight * (1.0 - gain)
        y = x * (a / (x + k) + b)
        y = y.unflatten(2, (height // 4, 4)) * gain.unsqueeze(3) + offset.unsqueeze(3)  # type: ignore[no-untyped-call]
        return torch.clamp(y.flatten(2, 3), 0.0, 1.0)


# -- EnlightenGAN: attention-guided U-Net (seeds 003/004) ----------------------------------------


def attention_map(x: Tensor) -> Tensor:
    """Self-regularised attention: 1 − luma normalised by the frame's maximum (dark → 1)."""
    grey = luma(x)
    peak = grey.amax(dim=(2, 3), keepdim=True).clamp_min(1e-3)
    return 1.0 - grey / peak


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, 1, 1), _act(), nn.Conv2d(cout, cout, 3, 1, 1), _act()
        )


class EnlightenUNet(Generator):
    """U-Net whose input is the frame plus its attention map; the attention map, resized, scales
    every skip connection and the output residual: out = x + residual · attention. Dark regions
    get the most change, bright ones the least (seeds 003/004, no batch norm: small batches)."""

    def __init__(self, width: int = 16, depth: int = 3) -> None:
        super().__init__()
        self.stride = 2**depth
        chans = [width * 2**i for i in range(depth + 1)]
        self.inc = _DoubleConv(4, chans[0])
        self.downs = nn.ModuleList(_DoubleConv(chans[i], chans[i + 1]) for i in range(depth))
        self.ups = nn.ModuleList(
            nn.Conv2d(chans[i + 1], chans[i], 1) for i in reversed(range(depth))
        )
        self.up_convs = nn.ModuleList(
            _DoubleConv(2 * chans[i], chans[i]) for i in reversed(range(depth))
        )
        self.out = nn.Conv2d(chans[0], 3, 1)
        _zero(self.out)

    def forward(self, x: Tensor) -> Tensor:
        att = attention_map(x)
        h = self.inc(torch.cat([x, att], dim=1))
        skips: list[Tensor] = []
        for down in self.downs:
            skips.append(h)
            h = down(F.max_pool2d(h, 2))
        for up, conv in zip(self.ups, self.up_convs, strict=True):
            skip = skips.pop()
            h = up(F.interpolate(h, scale_factor=2.0, mode="bilinear"))
            a = F.interpolate(att, size=skip.shape[-2:], mode="bilinear")
            h = conv(torch.cat([h, skip * a], dim=1))
        return torch.clamp(x + self.out(h) * att, 0.0, 1.0)


# -- ResBlock generator of the deblur/derain paper (seed 002) ------------------------------------


class ResBlock(nn.Module):
    """Three 3×3 convolutions, LeakyReLU after the first two, dropout 0.5 between the first and
    second, and the identity skip (seed 002, §3.1)."""

    def __init__(self, channels: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1),
            _act(),
            nn.Dropout(dropout),
            nn.Conv2d(channels, channels, 3, 1, 1),
            _act(),
            nn.Conv2d(channels, channels, 3, 1, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = x + self.body(x)
        return out


class ResBlockGenerator(Generator):
    """7×7 conv, two stride-2 convs, `blocks` ResBlocks, two stride-2 transposed convs, a 7×7 conv
    with tanh, and the global skip from input to output (seed 002, §3.3.1). The paper uses 256
    channels in the blocks; `width` × 4 here (64 by default) so it trains on a CPU."""

    stride = 4

    def __init__(self, width: int = 16, blocks: int = 6, dropout: float = 0.5) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(3, w, 7, 1, 3),
            nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, 2, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 4 * w, 3, 2, 1),
            nn.ReLU(inplace=True),
            *(ResBlock(4 * w, dropout) for _ in range(blocks)),
            nn.ConvTranspose2d(4 * w, 2 * w, 3, 2, 1, output_padding=1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * w, w, 3, 2, 1, output_padding=1),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Conv2d(w, 3, 7, 1, 3)
        _zero(self.head)

    def forward(self, x: Tensor) -> Tensor:
        return torch.clamp(x + torch.tanh(self.head(self.net(x))), 0.0, 1.0)


# -- U-Net + residual + dense denoiser (seed 001) ------------------------------------------------


class DenseResidual(nn.Module):
    """Dense residual submodule (seed 001, FIG. 3): conv4 on the input; conv5 on [input, c4];
    conv6 on [input, c4, c5]; conv7 on [input, c4, c5, c6] (channel joins); output = input + c7."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        c, g = channels, growth
        self.c4 = nn.Conv2d(c, g, 3, 1, 1)
        self.c5 = nn.Conv2d(c + g, g, 3, 1, 1)
        self.c6 = nn.Conv2d(c + 2 * g, g, 3, 1, 1)
        self.c7 = nn.Conv2d(c + 3 * g, c, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        o4 = F.leaky_relu(self.c4(x), 0.2)
        o5 = F.leaky_relu(self.c5(torch.cat([x, o4], 1)), 0.2)
        o6 = F.leaky_relu(self.c6(torch.cat([x, o4, o5], 1)), 0.2)
        out: Tensor = x + self.c7(torch.cat([x, o4, o5, o6], 1))
        return out


class DenseUNet(Generator):
    """Input conv, `depth` dense residual modules (submodule + stride-2 conv), a dense residual
    block at the bottom, `depth` upsampling modules (upsample + submodule) each adding the output
    of the matching down submodule, two convs and the output layer; the whole predicts a residual
    added to the input (seed 001, FIG. 2). The skip is added after upsampling so shapes agree."""

    def __init__(self, width: int = 16, depth: int = 3, channels: int = 3) -> None:
        super().__init__()
        self.stride = 2**depth
        chans = [width * 2**i for i in range(depth + 1)]
        self.first = nn.Conv2d(channels, chans[0], 3, 1, 1)
        self.down_blocks = nn.ModuleList(
            DenseResidual(chans[i], chans[i] // 2) for i in range(depth)
        )
        self.down_convs = nn.ModuleList(
            nn.Conv2d(chans[i], chans[i + 1], 3, 2, 1) for i in range(depth)
        )
        self.bottom = DenseResidual(chans[depth], chans[depth] // 2)
        self.up_convs = nn.ModuleList(
            nn.Conv2d(chans[i + 1], chans[i], 1) for i in reversed(range(depth))
        )
        self.up_blocks = nn.ModuleList(
            DenseResidual(chans[i], chans[i] // 2) for i in reversed(range(depth))
        )
        self.second = nn.Conv2d(chans[0], chans[0], 3, 1, 1)
        self.third = nn.Conv2d(chans[0], chans[0], 3, 1, 1)
        self.output = nn.Conv2d(chans[0], channels, 3, 1, 1)
        _zero(self.output)

    def forward(self, x: Tensor) -> Tensor:
        h = F.leaky_relu(self.first(x), 0.2)
        skips: list[Tensor] = []
        for block, down in zip(self.down_blocks, self.down_convs, strict=True):
            h = block(h)
            skips.append(h)
            h = F.leaky_relu(down(h), 0.2)
        h = self.bottom(h)
        for up, block in zip(self.up_convs, self.up_blocks, strict=True):
            h = up(F.interpolate(h, scale_factor=2.0, mode="bilinear")) + skips.pop()
            h = block(h)
        h = F.leaky_relu(self.second(h), 0.2)
        h = F.leaky_relu(self.third(h), 0.2)
        return torch.clamp(x + self.output(h), 0.0, 1.0)


# -- the restoration generator: tone, then the dense U-Net at half resolution ---------------------


class RestoreGenerator(Generator):
    """Restoration for the conditions a curve cannot fix (sensor noise in low light, motion blur
    with noise): a global stage and a local one, both starting at the identity.

    1. Tone: the fast generator's thumbnail CNN, per-channel curve and airlight gain grid, so
       brightness and colour cast are judged from the whole frame, which a U-Net's receptive
       field cannot see. The shipped model's has no dead zone (`tone_dead_zone` 0), so it nudges
       every well-exposed frame: on the train split a blurred frame loses 1.2 dB to the tone
       stage alone and a clean one comes out at 35 dB. With `tone_dead_zone` > 0 it gets the
       fast generator's dead zone, widened after training the same way (`ship.calibrate`).
    2. Detail: seed 001's U-Net + residual + dense network on the toned frame folded 2×2 into
       12 channels (pixel unshuffle, as FFDNet does): it sees every pixel but convolves at half
       resolution, a quarter of the cost, and its residual is unfolded back to full resolution.
    """

    def __init__(
        self, width: int = 16, tone_width: int = 12, depth: int = 3, tone_dead_zone: float = 0.0
    ) -> None:
        super().__init__()
        self.tone = FastCurveGenerator(width=tone_width, dead_zone=tone_dead_zone)
        self.detail = DenseUNet(width=width, depth=depth, channels=12)
        self.stride = 2 * self.detail.stride

    def set_progress(self, fraction: float) -> None:
        self.tone.set_progress(fraction)

    def forward(self, x: Tensor) -> Tensor:
        toned = self.tone(x)
        restored = self.detail(F.pixel_unshuffle(toned, 2))
        return torch.clamp(F.pixel_shuffle(restored, 2), 0.0, 1.0)


def _box(x: Tensor, radius: int) -> Tensor:
    """Mean over a (2·radius + 1)² window, the border averaging only what lies inside."""
    return F.avg_pool2d(x, 2 * radius + 1, 1, radius, count_include_pad=False)


class GuidedUpsampled(Generator):
    """Any generator run on the frame shrunk `scale` times, its change brought back to full
    resolution by a guided filter in the graph (He et al.'s guided filter as the fast
    guided-filter upsampling of Wu et al., 2018), so a 720p frame costs what a 360p one does.

    At the low resolution each channel's change `d = inner(low) − low` is fitted, in every
    (2·radius + 1)² window, as a linear function of `low`: `d ≈ a·low + b`, ridge-regularised by
    `eps` towards `a = 0`. The fitted `a` and `b` are smooth, so they are upsampled bilinearly and
    applied to the full-resolution frame: `out = x + a·x + b`. What follows:
    - where the inner model changes nothing, `a = b = 0` and the frame comes out bit for bit;
    - a brightening or colour change carries over exactly (`b`, and `a` for a gain);
    - where the inner model flattens a noisy patch, `a` tends to −1 and the full-resolution
      noise goes too, while edges the input shows keep their full-resolution sharpness.
    Detail the inner model would add finer than the low resolution (deblurring beyond it) is
    lost: the price of the speed."""

    def __init__(
        self, inner: Generator, scale: int = 2, radius: int = 2, eps: float = 1e-3
    ) -> None:
        super().__init__()
        if scale < 1 or radius < 1 or eps <= 0:
            raise ValueError(f"scale {scale} and radius {radius} must be ≥ 1 and eps {eps} > 0")
        self.inner = inner
        self.scale = scale
        self.radius = radius
        self.eps = eps
        self.stride = scale * inner.stride

    def set_progress(self, fraction: float) -> None:
        self.inner.set_progress(fraction)

    def forward(self, x: Tensor) -> Tensor:
        low = x if self.scale == 1 else F.avg_pool2d(x, self.scale)
        change = self.inner(low) - low
        r = self.radius
        mean_i = _box(low, r)
        mean_d = _box(change, r)
        cov = _box(low * change, r) - mean_i * mean_d
        var = _box(low * low, r) - mean_i * mean_i
        a = cov / (var + self.eps)
        b = mean_d - a * mean_i
        a = _box(a, r)
        b = _box(b, r)
        if self.scale > 1:
            size = (x.shape[2], x.shape[3])
            a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
            b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
        return torch.clamp(x + a * x + b, 0.0, 1.0)


def tone_gate_stage(generator: Generator) -> FastCurveGenerator | None:
    """The stage whose dead zone `FastCurveGenerator.calibrate` widens: the fast generator
    itself, a restore model's tone stage where it was trained with a dead zone, else None."""
    if isinstance(generator, GuidedUpsampled):
        return tone_gate_stage(generator.inner)
    if isinstance(generator, RestoreGenerator):
        return generator.tone if generator.tone.zone > 0 else None
    return generator if isinstance(generator, FastCurveGenerator) else None


# -- discriminators --------------------------------------------------------------------------------


class PatchDiscriminator(nn.Module):
    """PatchGAN (Markovian) discriminator: one logit per overlapping patch, no normalisation.
    Used whole-frame as the global discriminator and on random crops as the local one."""

    def __init__(self, width: int = 16, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(3, width, 4, 2, 1), _act()]
        c = width
        for _ in range(layers - 1):
            mods += [nn.Conv2d(c, min(2 * c, 8 * width), 4, 2, 1), _act()]
            c = min(2 * c, 8 * width)
        mods += [nn.Conv2d(c, c, 3, 1, 1), _act(), nn.Conv2d(c, 1, 3, 1, 1)]
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        return out


class DenseCritic(nn.Module):
    """WGAN critic of seed 002 (Table 1): PatchGAN convolutions without batch norm, then two dense
    layers on a 4×4 pooled map (pooled so any crop size works). One score per image."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 4, 2, 1),
            _act(),
            nn.Conv2d(w, 2 * w, 4, 2, 1),
            _act(),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1),
            _act(),
            nn.Conv2d(4 * w, 8 * w, 3, 1, 1),
            _act(),
            nn.Conv2d(8 * w, 8 * w, 3, 1, 1),
            _act(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )
        self.dense = nn.Sequential(nn.Linear(16 * 8 * w, 64), _act(), nn.Linear(64, 1))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.dense(self.features(x))
        return out


@dataclass(frozen=True, slots=True)
class ArchitectureDefaults:
    """How each architecture is trained unless the config says otherwise."""

    adversarial: Literal["lsgan", "bce", "wgan-gp"]
    local_discriminator: bool
    perceptual: float
    self_feature: float


DEFAULTS: dict[Architecture, ArchitectureDefaults] = {
    "fast": ArchitectureDefaults(
        "lsgan", local_discriminator=True, perceptual=0.0, self_feature=0.0
    ),
    "enlighten": ArchitectureDefaults(
        "lsgan", local_discriminator=True, perceptual=0.1, self_feature=0.1
    ),
    "resblock": ArchitectureDefaults(
        "wgan-gp", local_discriminator=False, perceptual=0.1, self_feature=0.0
    ),
    "dense_unet": ArchitectureDefaults(
        "bce", local_discriminator=False, perceptual=0.05, self_feature=0.0
    ),
    "restore": ArchitectureDefaults(
        "bce", local_discriminator=False, perceptual=0.05, self_feature=0.0
    ),
}


def build_generator(arch: Architecture, width: int) -> Generator:
    if arch == "fast":
        return FastCurveGenerator(width=width)
    if arch == "enlighten":
        return EnlightenUNet(width=width)
    if arch == "resblock":
        return ResBlockGenerator(width=width)
    if arch == "dense_unet":
        return DenseUNet(width=width)
    if arch == "restore":
        return RestoreGenerator(width=width)
    raise ValueError(f"unknown architecture {arch!r}, expected one of {ARCHITECTURES}")


def build_discriminator(arch: Architecture, width: int) -> nn.Module:
    if DEFAULTS[arch].adversarial == "wgan-gp":
        return DenseCritic(width)
    return PatchDiscriminator(width)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def padded_size(height: int, width: int, stride: int) -> tuple[int, int]:
    """The size the runtime pads a frame to: both sides rounded up to a multiple of `stride`."""
    return math.ceil(height / stride) * stride, math.ceil(width / stride) * stride
