"""The models DefectFill trains, around diffusers' SD-2 inpainting components.

`load_components` reads the UNet (9 input channels), VAE, CLIP text encoder + tokenizer and a
DDPM noise scheduler from a diffusers inpainting model (hub id or local folder).
`make_trainable` freezes them, adds the concept tokens, LoRA on the UNet attention projections
(and optionally the text encoder) through peft, and makes the embedding matrix trainable (the
non-concept rows are put back after each step by `EmbeddingRowGuard`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from defectfill.errors import ModelError
from defectfill.models.concepts import ConceptTokens, EmbeddingRowGuard, add_concept_tokens


@dataclass
class DefectFillModels:
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    noise_scheduler: Any


def check_inpainting_unet(unet, source: str) -> None:
    if unet.config.in_channels != 9:
        raise ModelError(
            f"{source}: UNet has {unet.config.in_channels} input channels, DefectFill needs an inpainting UNet "
            f"with 9 (noisy latent 4 + mask 1 + masked-image latent 4); use e.g. "
            f"sd2-community/stable-diffusion-2-inpainting"
        )


def load_components(pretrained_model_name_or_path: str, revision: str | None = None,
                    variant: str | None = None, frozen_dtype: Any = None) -> DefectFillModels:
    """Load the training components of a diffusers inpainting model (no safety checker).

    frozen_dtype: dtype of the VAE and UNet weights (the mixed-precision dtype; None: as stored).
    They are loaded in it rather than cast with `.to(dtype)` afterwards, which diffusers 0.42 answers
    with a warning about modules to keep in float32 on every call (even when there are none).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    source = str(pretrained_model_name_or_path)
    if Path(source).exists() and not (Path(source) / "unet").is_dir():
        raise ModelError(f"{source}: no unet/ folder; expected a diffusers pipeline folder (model_index.json, unet/, vae/, ...)")
    kw = {"revision": revision}
    try:
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kw)
        text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **kw)
        weights = {"variant": variant, **({"dtype": frozen_dtype} if frozen_dtype is not None else {})}
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", **weights, **kw)
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", **weights, **kw)
        noise_scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler", **kw)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"{source}: cannot load the base inpainting model ({exc}); pass a local diffusers folder, or a hub id "
            f"with network access (HF_HUB_OFFLINE=1 allows only cached models)"
        ) from exc
    check_inpainting_unet(unet, source)
    return DefectFillModels(unet, vae, text_encoder, tokenizer, noise_scheduler)


def make_trainable(
    models: DefectFillModels,
    concepts: dict[str, str],
    initializer_words: dict[str, str],
    *,
    rank: int,
    lora_alpha: int,
    lora_dropout: float,
    unet_targets: list[str],
    train_text_encoder: bool,
    text_encoder_targets: list[str],
) -> tuple[ConceptTokens, EmbeddingRowGuard]:
    """Freeze every base weight, add the concept tokens and the LoRA adapters.

    Trainable afterwards: the UNet LoRA, the text-encoder LoRA (if asked), and the embedding
    matrix of the text encoder (only its concept rows are kept changed, see EmbeddingRowGuard).
    """
    from peft import LoraConfig, inject_adapter_in_model

    for module in (models.unet, models.vae, models.text_encoder):
        module.requires_grad_(False)
    tokens = add_concept_tokens(models.tokenizer, models.text_encoder, concepts, initializer_words)
    models.unet.add_adapter(LoraConfig(
        r=rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout, init_lora_weights="gaussian",
        target_modules=list(unet_targets)))
    if train_text_encoder:
        # peft directly, not transformers' `add_adapter`: transformers 5.24 demands peft >= 0.22 for
        # its integration, which does not exist yet; the adapter and its state dict are the same.
        inject_adapter_in_model(LoraConfig(
            r=rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout, init_lora_weights="gaussian",
            target_modules=list(text_encoder_targets)), models.text_encoder, adapter_name="default")
    embedding = models.text_encoder.get_input_embeddings()
    embedding.weight.requires_grad_(True)
    return tokens, EmbeddingRowGuard(embedding, tokens.ids)


def trainable_parameters(module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def lora_parameters(module) -> list[torch.nn.Parameter]:
    return [p for n, p in module.named_parameters() if p.requires_grad and "lora_" in n]
