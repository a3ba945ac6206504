"""Training, the losses: adversarial (LSGAN, BCE, WGAN-GP), the patent's brightness and texture
differences over a region, reconstruction, perceptual and EnlightenGAN's self-feature-preserving
term.

No pretrained VGG19 is available offline (torchvision must not be installed next to our CPU
torch, and nothing is downloaded), so the perceptual and self-feature terms compare features of
`RandomFeatures`: a fixed, seeded, never-trained convolutional net. Random convolutional
features still measure local structure and texture (which is what these terms protect), not
semantics; the choice is written into every model card.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from torch import Tensor, nn

from tools.gan.models import luma

Adversarial: TypeAlias = Literal["lsgan", "bce", "wgan-gp"]


def d_loss(kind: Adversarial, real: Tensor, fake: Tensor) -> Tensor:
    """Discriminator loss on its outputs for good (real) and poor or generated (fake) images."""
    if kind == "lsgan":
        return 0.5 * (((real - 1.0) ** 2).mean() + (fake**2).mean())
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(
            real, torch.ones_like(real)
        ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
    critic: Tensor = fake.mean() - real.mean()  # the critic's Wasserstein estimate, negated
    return critic


def g_loss(kind: Adversarial, fake: Tensor) -> Tensor:
    """Generator's adversarial loss: make the discriminator call its output good."""
    if kind == "lsgan":
        return ((fake - 1.0) ** 2).mean()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    return -fake.mean()


def gradient_penalty(critic_out: Tensor, interpolates: Tensor) -> Tensor:
    """WGAN-GP: (‖∇ critic(x̂)‖₂ − 1)² on points between real and generated images."""
    (grad,) = torch.autograd.grad(
        critic_out.sum(), interpolates, create_graph=True, retain_graph=True
    )
    norm = grad.flatten(1).norm(2, dim=1)
    penalty: Tensor = ((norm - 1.0) ** 2).mean()
    return penalty


def _masked_mean(value: Tensor, region: Tensor) -> Tensor:
    """Mean of `value` (N×C×H×W) weighted by the region (N×1×H×W in [0, 1]), per image, then
    averaged over the batch."""
    weight = region.expand_as(value)
    return ((value * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1e-6)).mean()


def brightness_difference(out: Tensor, ref: Tensor, region: Tensor, cell: int = 8) -> Tensor:
    """Patent ¶84 (a): how far the brightness of the region is from the reference's, compared as
    local means over `cell`×`cell` blocks so a region is judged piece by piece, not on average."""
    a = F.avg_pool2d(luma(out), cell)
    b = F.avg_pool2d(luma(ref), cell)
    return _masked_mean((a - b).abs(), F.avg_pool2d(region, cell))


_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0


def texture(x: Tensor) -> Tensor:
    """N×2×H×W luma gradients (Sobel x and y): edges, strokes, symbols."""
    y = luma(x)
    kernel = torch.stack([_SOBEL, _SOBEL.t()]).unsqueeze(1).to(x)
    return F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), kernel)


def texture_difference(out: Tensor, ref: Tensor, region: Tensor) -> Tensor:
    """Patent ¶84 (b): L1 between the region's gradients in the output and the desired image."""
    return _masked_mean((texture(out) - texture(ref)).abs(), region)


def reconstruction(out: Tensor, ref: Tensor) -> Tensor:
    """L1 plus a little L2 against the good frame (the pair is aligned pixel for pixel)."""
    return F.l1_loss(out, ref) + 0.5 * F.mse_loss(out, ref)


class RandomFeatures(nn.Module):
    """A fixed, seeded, untrained 3-stage conv net; its activations feed the perceptual terms."""

    def __init__(self, seed: int = 1234, width: int = 16) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        w = width
        self.stages = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(3, w, 3, 1, 1), nn.ReLU(), nn.Conv2d(w, w, 3, 1, 1)),
                nn.Sequential(nn.AvgPool2d(2), nn.ReLU(), nn.Conv2d(w, 2 * w, 3, 1, 1), nn.ReLU()),
                nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(2 * w, 4 * w, 3, 1, 1), nn.ReLU()),
            ]
        )
        for p in self.parameters():
            with torch.no_grad():
                if p.ndim > 1:
                    fan_in = p[0].numel()
                    p.copy_(torch.randn(p.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                else:
                    p.zero_()
            p.requires_grad = False

    def forward(self, x: Tensor) -> list[Tensor]:
        feats: list[Tensor] = []
        h = x
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats


def perceptual(features: RandomFeatures, out: Tensor, ref: Tensor) -> Tensor:
    """Seed 002's perceptual loss (feature L2), on `RandomFeatures` instead of VGG19."""
    return sum(
        (F.mse_loss(a, b) for a, b in zip(features(out), features(ref), strict=True)),
        start=out.new_zeros(()),
    )


def self_feature_preserving(features: RandomFeatures, out: Tensor, poor: Tensor) -> Tensor:
    """EnlightenGAN's self-feature-preserving loss: features of the output and of its own input,
    instance-normalised first so brightness alone is not penalised, only lost structure."""
    total = out.new_zeros(())
    for a, b in zip(features(out), features(poor), strict=True):
        total = total + F.mse_loss(F.instance_norm(a), F.instance_norm(b))
    return total
