"""DGT's input codes: the class and mask of a defect, smoothed by stochastic Gaussian filtering.

    E_fore = one-hot(y) ∈ R^S broadcast to H×W×S,   E_back = ones(H×W×1)
    Ẽ_fore = w_d · (G(k_d) ∗ (M ⊗ E_fore)),          Ẽ_back = w_n · (G(k_n) ∗ (M ⊗ E_back))
    generator input = [Ẽ_fore, Ẽ_back, N]            (S + 1 + 3 channels, N the good image)

G(k) is a normalised k×k Gaussian; per sample, k_d and k_n are drawn from `kernel_sizes` and
w_d, w_n uniformly from `weight_range` (the "random kernel size and random weights" of the method
notes; σ follows OpenCV's rule for a k-tap kernel, σ = 0.3·((k − 1)/2 − 1) + 0.8). Smoothing
softens the mask edge by a random amount so that G learns defects with soft, varied borders.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def gaussian_kernel(size: int) -> torch.Tensor:
    """(size, size) normalised Gaussian with OpenCV's σ for that size."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel_sizes: each size must be odd and >= 1, found {size}")
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def _smooth(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Blur every channel of (C, H, W) with G(size) (zero padding: the mask fades at the border)."""
    c = maps.shape[0]
    kernel = gaussian_kernel(size).to(maps)[None, None].expand(c, 1, size, size)
    return F.conv2d(maps[None], kernel, padding=size // 2, groups=c)[0]


def defect_codes(
    mask: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    generator: torch.Generator,
    kernel_sizes: Sequence[int] = (3, 5, 7, 9, 11),
    weight_range: tuple[float, float] = (0.7, 1.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Ẽ_fore (B, S, H, W), Ẽ_back (B, 1, H, W)) from mask (B, 1, H, W) in {0, 1} and labels (B,)."""
    b = mask.shape[0]
    sizes = torch.tensor(list(kernel_sizes))
    k = sizes[torch.randint(0, len(sizes), (b, 2), generator=generator)]
    lo, hi = weight_range
    w = lo + (hi - lo) * torch.rand(b, 2, generator=generator)
    one_hot = F.one_hot(labels.long(), num_classes).to(mask)[:, :, None, None]
    fore, back = [], []
    for i in range(b):
        fore.append(w[i, 0] * _smooth(mask[i] * one_hot[i], int(k[i, 0])))
        back.append(w[i, 1] * _smooth(mask[i], int(k[i, 1])))
    return torch.stack(fore), torch.stack(back)


def generator_input(fore: torch.Tensor, back: torch.Tensor, good: torch.Tensor) -> torch.Tensor:
    """[Ẽ_fore, Ẽ_back, N]: (B, S + 1 + 3, H, W)."""
    return torch.cat([fore, back, good], dim=1)
