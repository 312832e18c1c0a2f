"""The two network families the mask-conditioned GAN baselines share: a U-Net and a PatchGAN.

- `UNet(in_channels, out_channels, base_channels, depth)`: encoder-decoder with skip connections
  (pix2pix's generator, Isola et al. CVPR 2017, at a configurable depth): each encoder stage is
  conv3x3(stride 2) -> InstanceNorm -> LeakyReLU(0.2), each decoder stage upsamples ×2 (nearest),
  concatenates the encoder feature of the same size and applies conv3x3 -> InstanceNorm -> ReLU.
  Input sides must be multiples of 2**depth.
- `PatchDiscriminator(in_channels, base_channels, num_layers)`: pix2pix's PatchGAN, 4x4 convs with
  stride 2, one real/fake logit per receptive-field patch, (B, 1, H / 2**num_layers, W / 2**num_layers).

Tensors: images (B, 3, H, W) in [-1, 1]; masks and codes (B, k, H, W) in [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn


def _down(cin: int, cout: int, norm: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride=2, padding=1)]
    if norm:
        layers.append(nn.InstanceNorm2d(cout, affine=True))
    layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.InstanceNorm2d(cout, affine=True), nn.ReLU())


class UNet(nn.Module):
    """(B, in_channels, H, W) -> (B, out_channels, H, W) raw outputs (apply tanh / sigmoid outside)."""

    def __init__(self, in_channels: int, out_channels: int, base_channels: int = 16, depth: int = 3):
        super().__init__()
        widths = [base_channels * 2 ** min(i, 3) for i in range(depth + 1)]
        self.depth = depth
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1), nn.LeakyReLU(0.2))
        self.down = nn.ModuleList(_down(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(_up(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = 2**self.depth
        if x.shape[-1] % side or x.shape[-2] % side:
            raise ValueError(f"UNet: input sides {tuple(x.shape[-2:])} must be multiples of 2**depth = {side}")
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        h = skips.pop()
        for block in self.up:
            h = nn.functional.interpolate(h, scale_factor=2, mode="nearest")
            h = block(torch.cat([h, skips.pop()], dim=1))
        return self.head(h)


class PatchDiscriminator(nn.Module):
    """PatchGAN: (B, in_channels, H, W) -> (B, 1, H / 2**num_layers, W / 2**num_layers) logits."""

    def __init__(self, in_channels: int, base_channels: int = 16, num_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i in range(num_layers):
            cout = base_channels * 2 ** min(i, 3)
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1)]
            if i > 0:
                layers.append(nn.InstanceNorm2d(cout, affine=True))
            layers.append(nn.LeakyReLU(0.2))
            cin = cout
        layers.append(nn.Conv2d(cin, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN loss for the generator: L_adv = E[softplus(−D(x_fake))]."""
    return nn.functional.softplus(-fake_logits).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """L_D = E[softplus(−D(x_real))] + E[softplus(D(x_fake))]."""
    return nn.functional.softplus(-real_logits).mean() + nn.functional.softplus(fake_logits).mean()
