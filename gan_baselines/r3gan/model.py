"""R3GAN networks (Huang, Gokaslan, Kuleshov, Tompkin, "The GAN is dead; long live the GAN!",
NeurIPS 2024), written from the paper (the official code has no licence; nothing copied).

Architecture as the paper describes it: ResNet G and D, `blocks_per_stage` residual blocks per
stage, each an inverted bottleneck

    x + W₃ φ(W₂ φ(W₁ x))     W₁: 1×1, C → eC   W₂: grouped 3×3 (16 channels per group)   W₃: 1×1, eC → C

with φ = LeakyReLU(0.2) after a separate learned bias, no normalisation, binomial [1, 2, 1]
resampling between stages, W₁ and W₂ initialised with gain √(2/1.04)·L^(−1/4) (L residual blocks in
the network, the fix-up scaling for 3 layers per block) and W₃ initialised to zero, so every block
is the identity at init. Output conv without tanh; data in [−1, 1].

As a defect generator here it is ONE end-to-end generator: G sees the good window with the defect
region blanked, the mask, the defect type and noise, and its output is composited inside the mask:

    x̂ = m ⊙ G(x ⊙ (1 − m), m, z, t) + (1 − m) ⊙ x

D judges (image, mask) pairs with a projection on the defect type: D(y, m, t) = ψ(h) + ⟨e_t, h⟩,
h = the ResNet features of [y, m]. G is a U-Net made of the same residual stages (encoder, the noise
and type injected at the lowest resolution, decoder with additive skips).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from defectfill.errors import GenerationError
from gan_baselines.data import to_tensor_images, to_uint8_images
from gan_baselines.r3gan.config import R3GANModelConfig

LEAKY_GAIN = math.sqrt(2 / (1 + 0.2**2))  # √(2/1.04), He gain of LeakyReLU(0.2)


class BiasedLeakyReLU(nn.Module):
    """φ(x + b) with φ = LeakyReLU(0.2) and b a learned per-channel bias (the convs have none)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.bias.view(1, -1, 1, 1), 0.2)


def _variance_scaling(conv: nn.Conv2d, gain: float) -> None:
    fan_in = conv.weight[0].numel()
    nn.init.normal_(conv.weight, 0.0, gain / math.sqrt(fan_in))


class ResidualBlock(nn.Module):
    """x + W₃ φ(W₂ φ(W₁ x)); W₃ = 0 at init (the block starts as the identity)."""

    def __init__(self, channels: int, expansion: int, channels_per_group: int, total_blocks: int):
        super().__init__()
        hidden = channels * expansion
        self.expand = nn.Conv2d(channels, hidden, 1, bias=False)
        self.act1 = BiasedLeakyReLU(hidden)
        self.spatial = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden // channels_per_group, bias=False)
        self.act2 = BiasedLeakyReLU(hidden)
        self.project = nn.Conv2d(hidden, channels, 1, bias=False)
        scale = LEAKY_GAIN * total_blocks ** (-1 / 4)
        _variance_scaling(self.expand, scale)
        _variance_scaling(self.spatial, scale)
        nn.init.zeros_(self.project.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.act2(self.spatial(self.act1(self.expand(x)))))


def _binomial(channels: int, like: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 2.0, 1.0], dtype=like.dtype, device=like.device)
    return (torch.outer(k, k) / 16).expand(channels, 1, 3, 3)


def downsample(x: torch.Tensor) -> torch.Tensor:
    """Binomial [1, 2, 1]² low-pass, then keep every second pixel: (B, C, H, W) -> (B, C, H/2, W/2)."""
    c = x.shape[1]
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), _binomial(c, x), stride=2, groups=c)


def upsample(x: torch.Tensor) -> torch.Tensor:
    """Zero insertion, then the binomial filter ×4: (B, C, H, W) -> (B, C, 2H, 2W)."""
    c = x.shape[1]
    return F.conv_transpose2d(x, 4 * _binomial(c, x), stride=2, padding=1, output_padding=1, groups=c)


def _conv1x1(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 1, bias=False)
    _variance_scaling(conv, 1.0)
    return conv


def _stage(channels: int, config: R3GANModelConfig, total_blocks: int) -> nn.Sequential:
    return nn.Sequential(*[ResidualBlock(channels, config.expansion, config.channels_per_group, total_blocks)
                           for _ in range(config.blocks_per_stage)])


class Generator(nn.Module):
    """G(x ⊙ (1 − m), m, z, t) -> (B, 3, r, r), no tanh (the caller composites inside m)."""

    def __init__(self, config: R3GANModelConfig):
        super().__init__()
        ch, n = config.channels, len(config.channels)
        total = (2 * n - 1) * config.blocks_per_stage
        self.low = config.resolution // 2 ** (n - 1)
        self.stem = _conv1x1(4, ch[0])
        self.encoder = nn.ModuleList([_stage(c, config, total) for c in ch])
        self.down = nn.ModuleList([_conv1x1(ch[s], ch[s + 1]) for s in range(n - 1)])
        self.type_embed = nn.Embedding(max(1, len(config.defect_types)), config.embed_dim)
        self.condition = nn.Linear(config.noise_dim + config.embed_dim, ch[-1] * self.low**2)
        self.up = nn.ModuleList([_conv1x1(ch[s + 1], ch[s]) for s in range(n - 1)])
        self.decoder = nn.ModuleList([_stage(ch[s], config, total) for s in range(n - 1)])
        self.out = _conv1x1(ch[0], 3)

    def forward(self, good: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """good (B, 3, r, r) in [-1, 1]; mask (B, 1, r, r) in {0, 1}; noise (B, noise_dim); types (B,)."""
        h = self.stem(torch.cat([good * (1 - mask), 2 * mask - 1], dim=1))
        skips = []
        for s, stage in enumerate(self.encoder):
            if s > 0:
                skips.append(h)
                h = self.down[s - 1](downsample(h))
            if s == len(self.encoder) - 1:
                cond = self.condition(torch.cat([noise, self.type_embed(types)], dim=1))
                h = h + cond.view(h.shape[0], -1, self.low, self.low)
            h = stage(h)
        for s in reversed(range(len(self.decoder))):
            h = self.decoder[s](upsample(self.up[s](h)) + skips[s])
        return self.out(h)


class Discriminator(nn.Module):
    """D(y, m, t) = ψ(h) + ⟨e_t, h⟩, h = ResNet features of [y, 2m − 1] -> (B,) logits."""

    def __init__(self, config: R3GANModelConfig):
        super().__init__()
        ch, n = config.channels, len(config.channels)
        total = n * config.blocks_per_stage
        low = config.resolution // 2 ** (n - 1)
        self.stem = _conv1x1(4, ch[0])
        self.stages = nn.ModuleList([_stage(c, config, total) for c in ch])
        self.down = nn.ModuleList([_conv1x1(ch[s], ch[s + 1]) for s in range(n - 1)])
        self.features = nn.Linear(ch[-1] * low * low, config.embed_dim)
        self.act = BiasedLeakyReLU(config.embed_dim)
        self.psi = nn.Linear(config.embed_dim, 1)
        self.type_embed = nn.Embedding(max(1, len(config.defect_types)), config.embed_dim)

    def forward(self, image: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        h = self.stem(torch.cat([image, 2 * mask - 1], dim=1))
        for s, stage in enumerate(self.stages):
            if s > 0:
                h = self.down[s - 1](downsample(h))
            h = stage(h)
        h = self.act(self.features(h.flatten(1))[..., None, None]).flatten(1)
        return self.psi(h).squeeze(1) + (self.type_embed(types) * h).sum(dim=1)


def composite(generated: torch.Tensor, good: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x̂ = m ⊙ G(...) + (1 − m) ⊙ x."""
    return mask * generated + (1 - mask) * good


class R3GAN(nn.Module, PyTorchModelHubMixin, library_name="defectfill", tags=["r3gan", "defect-generation", "gan"]):
    """G, D and the EMA of G, saved together (config.json + model.safetensors) with `save_pretrained`."""

    def __init__(self, config: R3GANModelConfig | dict):
        super().__init__()
        if isinstance(config, dict):  # from_pretrained passes config.json's fields
            from defectfill.config import from_dict

            config = from_dict(R3GANModelConfig, config, where="config.json")
        self.config = config
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)

    @property
    def defect_types(self) -> list[str]:
        return list(self.config.defect_types)

    def sample(self, good: torch.Tensor, mask: torch.Tensor, types: torch.Tensor, rng: torch.Generator,
               use_ema: bool = True) -> torch.Tensor:
        """Composited defect windows (B, 3, r, r) in [-1, 1] (pixels outside the mask: `good`'s)."""
        net = self.generator_ema if use_ema else self.generator
        noise = torch.randn(good.shape[0], self.config.noise_dim, generator=rng).to(good.device)
        return composite(net(good, mask, noise, types), good, mask)

    @torch.no_grad()
    def fill(self, windows: np.ndarray, masks: np.ndarray, *, defect_type: str, rng: torch.Generator) -> np.ndarray:
        """windows (k, r, r, 3) uint8 good crops, masks (k, r, r) bool -> (k, r, r, 3) uint8 filled windows."""
        r = self.config.resolution
        if defect_type not in self.config.defect_types:
            raise GenerationError(f"defect_type: {defect_type!r} unknown to this R3GAN; known: {self.config.defect_types}")
        if windows.ndim != 4 or windows.shape[1:] != (r, r, 3) or masks.shape != windows.shape[:3]:
            raise GenerationError(f"windows/masks: expected (k, {r}, {r}, 3) uint8 and (k, {r}, {r}) bool, found "
                                  f"{windows.shape} and {masks.shape}; crop windows at the model resolution")
        device = next(self.parameters()).device
        good = to_tensor_images(windows).to(device)
        mask = torch.from_numpy(np.asarray(masks, bool)).float()[:, None].to(device)
        types = torch.full((len(windows),), self.config.defect_types.index(defect_type), dtype=torch.long, device=device)
        return to_uint8_images(self.sample(good, mask, types, rng))
