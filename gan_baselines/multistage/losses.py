"""Multistage GAN losses, f = softplus (so f(−a) = −log σ(a)).

Stage 1 (cGAN, non-saturating):
    L_Ds = E[f(−D_s(p, Gφ))] + E[f(D_s(G(z, Gφ), Gφ))]        = −E log σ(D(p)) − E log(1 − σ(D(p̂)))
    L_G  = E[f(−D_s(G(z, Gφ), Gφ))]
Stage 2 (defect-fusing network T, PatchGAN D_T):
    L_T  = λ_h E_i max(0, ‖y_i − T(x_i)‖₁ − m) + λ_p Σₗ E|φₗ(y) − φₗ(T(x))| + λ_a E[f(−D_T(T(x)))]
    L_DT = E[f(−D_T(y))] + E[f(D_T(T(x)))]
‖·‖₁ is the per-pixel mean absolute difference of one image (images in [−1, 1]), m the margin
inside which T is not pulled towards y (the pasted patch is not y's own defect).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cgan_d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """E[f(−D(x))] + E[f(D(x̂))]"""
    return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()


def cgan_g_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """E[f(−D(x̂))]"""
    return F.softplus(-d_fake).mean()


def hinge_reconstruction(target: torch.Tensor, output: torch.Tensor, margin: float) -> torch.Tensor:
    """E_i max(0, ‖y_i − T(x_i)‖₁ − m)"""
    return F.relu((target - output).abs().flatten(1).mean(dim=1) - margin).mean()


def perceptual_loss(target_features: dict[str, torch.Tensor], output_features: dict[str, torch.Tensor],
                    layers: list[str]) -> torch.Tensor:
    """Σₗ E|φₗ(y) − φₗ(T(x))|"""
    return sum((target_features[name] - output_features[name]).abs().mean() for name in layers)


def fusion_loss(target: torch.Tensor, output: torch.Tensor, d_output: torch.Tensor,
                target_features: dict[str, torch.Tensor], output_features: dict[str, torch.Tensor],
                layers: list[str], margin: float, lambda_hinge: float, lambda_perceptual: float,
                lambda_adversarial: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_T = λ_h·hinge + λ_p·perceptual + λ_a·E[f(−D_T(T(x)))]"""
    terms = {"hinge": hinge_reconstruction(target, output, margin),
             "perceptual": perceptual_loss(target_features, output_features, layers),
             "t_adv": cgan_g_loss(d_output)}
    total = lambda_hinge * terms["hinge"] + lambda_perceptual * terms["perceptual"] + lambda_adversarial * terms["t_adv"]
    return total, terms
