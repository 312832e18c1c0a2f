"""R3GAN's objective: the relativistic pairing GAN (RpGAN) with zero-centred penalties on real AND
fake data, f = softplus:

    L_D = E[f(−(D(x_r) − D(x_f)))] + γ/2 · (R1 + R2)
    L_G = E[f(−(D(x_f) − D(x_r)))]
    R1  = E‖∇ₓD(x_r)‖²,   R2 = E‖∇ₓD(x_f)‖²

The gradients are taken with `create_graph=True` (the penalty trains D) with respect to the
un-augmented inputs (the augmentation sits between them and D, differentiably).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rpgan_d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """E[f(−(D(x_r) − D(x_f)))]"""
    return F.softplus(-(d_real - d_fake)).mean()


def rpgan_g_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """E[f(−(D(x_f) − D(x_r)))]"""
    return F.softplus(-(d_fake - d_real)).mean()


def gradient_penalty(d_out: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """E‖∇ₓD(x)‖² (R1 on real inputs, R2 on fake ones); `inputs` must require grad."""
    (grad,) = torch.autograd.grad(d_out.sum(), inputs, create_graph=True)
    return grad.square().flatten(1).sum(dim=1).mean()


def discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
                       gamma: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_D = E[f(−(D(x_r) − D(x_f)))] + γ/2·(R1 + R2); γ = 0 skips the penalties (lazy steps)."""
    adv = rpgan_d_loss(d_real, d_fake)
    if gamma == 0:
        return adv, {"d_adv": adv}
    r1, r2 = gradient_penalty(d_real, real), gradient_penalty(d_fake, fake)
    return adv + gamma / 2 * (r1 + r2), {"d_adv": adv, "r1": r1, "r2": r2}
