"""DefectFill's losses (Song et al., arXiv 2503.13985, CVPR 2025, §3), one small function each.

Notation: ε the true noise, ε̂ = ε_θ(x_t, t, c) the UNet's prediction, both (B, C, h, w) at latent
size; M the DEFECT mask at latent size (B, 1, h, w) in {0, 1}; A the concept token's decoder
cross-attention map (B, h, w). Every loss is computed in float32 and averaged over the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from defectfill.errors import DefectfillError

_EPS = 1e-8


class NonFiniteLossError(DefectfillError, FloatingPointError):
    """A loss became NaN or infinite; training stops instead of skipping the step."""


def _per_sample_weighted_mean(squared_error: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """mean_b [ Σ_{c,h,w} w·e / (C · Σ_{h,w} w) ]"""
    channels = squared_error.shape[1]
    numerator = (weight * squared_error).sum(dim=(1, 2, 3))
    denominator = weight.sum(dim=(1, 2, 3)) * channels
    return (numerator / denominator.clamp_min(_EPS)).mean()


def defect_loss(noise_pred: torch.Tensor, noise: torch.Tensor, defect_mask: torch.Tensor) -> torch.Tensor:
    """Defect loss, prompt "A photo of [V*]", inpainting mask = the defect mask M:

        L_def = mean_b  Σ M ⊙ (ε − ε̂)²  /  (C · Σ M)

    i.e. the noise MSE inside the defect only, normalised by the mask area (pixels outside M do
    not count at all). noise_pred, noise: (B, C, h, w); defect_mask: (B, 1, h, w) in {0, 1}.
    """
    squared_error = (noise_pred.float() - noise.float()) ** 2
    return _per_sample_weighted_mean(squared_error, defect_mask.float())


def object_loss_weight(defect_mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """M' = M + α (1 − M), built from the DEFECT mask M (not the random inpainting boxes)."""
    defect_mask = defect_mask.float()
    return defect_mask + alpha * (1.0 - defect_mask)


def object_loss(
    noise_pred: torch.Tensor, noise: torch.Tensor, defect_mask: torch.Tensor, alpha: float = 0.3
) -> torch.Tensor:
    """Object loss, prompt "A [object] with [V*]", inpainting mask = random boxes M_rand:

        M' = M + α (1 − M)            (M the defect mask: weight 1 on the defect, α elsewhere)
        L_obj = mean_b  Σ M' ⊙ (ε − ε̂)²  /  (C · Σ M')

    The weight applies to the squared error (the paper's ‖M' ⊙ (ε − ε̂)‖² would square M'; this
    choice is unverified against the paper). noise_pred, noise: (B, C, h, w); defect_mask:
    (B, 1, h, w) in {0, 1}.
    """
    squared_error = (noise_pred.float() - noise.float()) ** 2
    return _per_sample_weighted_mean(squared_error, object_loss_weight(defect_mask, alpha))


def attention_loss(attention_map: torch.Tensor, defect_mask: torch.Tensor) -> torch.Tensor:
    """Attention loss: the [V*] cross-attention map A of the UNet decoder against the defect mask:

        L_attn = mean_{b,h,w} (A − M)²

    attention_map: (B, h, w), the concept token's probabilities averaged over heads and decoder
    layers (see defectfill.models.attention.aggregate_attention_maps); defect_mask: (B, 1, h, w)
    or (B, h, w) in {0, 1} at the same size.
    """
    if defect_mask.ndim == 4:
        defect_mask = defect_mask[:, 0]
    return ((attention_map.float() - defect_mask.float()) ** 2).mean()


@dataclass
class LossWeights:
    defect: float = 0.5
    object: float = 0.2
    attention: float = 0.05


def total_loss(
    l_def: torch.Tensor, l_obj: torch.Tensor, l_attn: torch.Tensor | None, weights: LossWeights
) -> torch.Tensor:
    """L = λ_def L_def + λ_obj L_obj + λ_attn L_attn   (L_attn omitted when None)."""
    total = weights.defect * l_def + weights.object * l_obj
    if l_attn is not None:
        total = total + weights.attention * l_attn
    return total


def check_finite(losses: dict[str, torch.Tensor | float], step: int | None = None) -> None:
    """Raise NonFiniteLossError naming the first NaN/inf term; never skip silently."""
    for name, value in losses.items():
        number = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
        if not math.isfinite(number):
            where = f" at step {step}" if step is not None else ""
            raise NonFiniteLossError(
                f"loss term {name!r} is {number}{where}; training stopped instead of skipping the step. "
                f"Fixes: lower the learning rate, use bf16 or fp32 instead of fp16 (mixed_precision), "
                f"check the inputs (images in [-1, 1], non-empty masks), resume from the last checkpoint"
            )
