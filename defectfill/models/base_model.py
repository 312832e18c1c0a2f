"""Architectures of the offline base inpainting model: the diffusers classes SD-2-inpainting uses.

`AutoencoderKL` (factor 2**(len(blocks)-1), 4 latent channels), `UNet2DConditionModel` with 9 input
channels in diffusers' order cat([noisy_latent(4), mask(1), masked_image_latent(4)]) and
cross-attention in the decoder (DefectFill's attention loss reads `up_blocks.*.attn2`), and a
small `CLIPTextModel` over the real 49,408-token CLIP vocabulary, so that
`StableDiffusionInpaintPipeline` and DefectFill's code run unchanged on it.

Sizes come from the config (`VAEArch`, `UNetArch`, `TextEncoderArch`); the narrow VAE uses
`norm_num_groups=1` and no mid-block attention (notes/feasibility.md §9b: group norm over 32
channels in 32 groups is instance norm and cannot decode flat colours).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from defectfill.errors import ConfigError
from defectfill.models.components import CLIP_VOCAB_SIZE

# Posterior log-variance written into the exported VAE: the model is trained and encodes with the
# posterior mean; diffusers' pipelines *sample* the posterior, so its variance must be ~0.
FIXED_POSTERIOR_LOGVAR = -20.0


@dataclass
class VAEArch:
    block_out_channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 1


@dataclass
class UNetArch:
    block_out_channels: tuple[int, ...] = (64, 128, 128)
    layers_per_block: int = 1
    cross_attention_levels: tuple[bool, ...] = (True, True, False)  # per down level (mirrored up)
    attention_head_dim: tuple[int, ...] = (2, 4, 4)  # diffusers' name; used as heads per level
    sample_size: int = 16  # latent side of the training window


@dataclass
class TextEncoderArch:
    hidden_size: int = 32
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 64


def vae_scale_factor(arch: VAEArch) -> int:
    return 2 ** (len(arch.block_out_channels) - 1)


def build_vae(arch: VAEArch, seed: int = 0):
    from diffusers import AutoencoderKL

    channels = tuple(arch.block_out_channels)
    if any(c % arch.norm_num_groups for c in channels):
        raise ConfigError(
            f"model.vae: norm_num_groups={arch.norm_num_groups} does not divide block_out_channels={channels}; "
            "use 1 or a common divisor"
        )
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=arch.latent_channels,
        block_out_channels=channels, layers_per_block=arch.layers_per_block,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        norm_num_groups=arch.norm_num_groups, mid_block_add_attention=False,
        sample_size=32, scaling_factor=1.0,
    )


def build_unet(arch: UNetArch, latent_channels: int, cross_attention_dim: int, seed: int = 0):
    from diffusers import UNet2DConditionModel

    n = len(arch.block_out_channels)
    if not (len(arch.cross_attention_levels) == len(arch.attention_head_dim) == n):
        raise ConfigError(
            f"model.unet: block_out_channels, cross_attention_levels and attention_head_dim need the same "
            f"length, found {n}, {len(arch.cross_attention_levels)}, {len(arch.attention_head_dim)}"
        )
    if not any(arch.cross_attention_levels):
        raise ConfigError("model.unet.cross_attention_levels: at least one level needs cross-attention (prompts)")
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in arch.cross_attention_levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(arch.cross_attention_levels))
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=arch.sample_size, in_channels=2 * latent_channels + 1, out_channels=latent_channels,
        layers_per_block=arch.layers_per_block, block_out_channels=tuple(arch.block_out_channels),
        down_block_types=down, up_block_types=up, cross_attention_dim=cross_attention_dim,
        attention_head_dim=tuple(arch.attention_head_dim), use_linear_projection=True,
        norm_num_groups=min(32, min(arch.block_out_channels)),
    )


def build_text_encoder(arch: TextEncoderArch, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    return CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=49406, eos_token_id=49407, pad_token_id=0, hidden_size=arch.hidden_size,
            intermediate_size=arch.intermediate_size, num_attention_heads=arch.num_attention_heads,
            num_hidden_layers=arch.num_hidden_layers, vocab_size=CLIP_VOCAB_SIZE,
            projection_dim=arch.hidden_size, hidden_act="gelu", max_position_embeddings=77,
        )
    )


def fix_posterior_variance(vae, logvar: float = FIXED_POSTERIOR_LOGVAR) -> None:
    """Make the encoder's posterior (almost) deterministic: zero the log-variance half of quant_conv.

    We train and encode with the posterior mean; pipelines call `latent_dist.sample()`, which then
    returns the mean up to exp(logvar / 2) ~ 5e-5 instead of adding unit-variance noise.
    """
    c = vae.config.latent_channels
    with torch.no_grad():
        vae.quant_conv.weight[c:].zero_()
        vae.quant_conv.bias[c:].fill_(logvar)


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())
