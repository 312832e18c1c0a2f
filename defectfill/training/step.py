"""One DefectFill training step: the defect pass and the object pass in one UNet batch.

For a batch of B defect images the two passes share the noisy latent x_t (same noise, same
timestep) and differ in the conditioning:

- defect pass (rows 0..B-1): prompt "A photo of [V*]", inpainting mask = the defect mask M,
  masked image = the image with M blanked;
- object pass (rows B..2B-1): prompt "A [object] with [V*]", inpainting mask = random boxes
  M_rand, masked image = the image with M_rand blanked; the [V*] cross-attention maps of the
  decoder are captured in this pass.

The UNet input is diffusers' `cat([x_t, mask, masked_image_latent], dim=1)` (4 + 1 + 4 channels),
with the mask downsampled to latent size as `StableDiffusionInpaintPipeline.prepare_mask_latents`
does (nearest), and latents scaled by `vae.config.scaling_factor`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from defectfill.errors import ModelError
from defectfill.losses import (
    LossWeights,
    attention_loss,
    check_finite,
    defect_loss,
    object_loss,
    total_loss,
)
from defectfill.models.attention import aggregate_attention_maps, capture_cross_attention
from defectfill.models.concepts import concept_token_positions


@dataclass
class StepOutput:
    total: torch.Tensor
    defect: torch.Tensor
    object: torch.Tensor
    attention: torch.Tensor | None
    attention_map: torch.Tensor | None = None  # (B, h, w), with grad
    captured_layers: list[str] = field(default_factory=list)
    noise_pred: torch.Tensor | None = None  # (2B, C, h, w) detached: defect rows, then object rows
    target: torch.Tensor | None = None  # (B, C, h, w) the regression target (noise for epsilon models)

    def scalars(self) -> dict[str, float]:
        out = {"loss": float(self.total.detach()), "loss_defect": float(self.defect.detach()),
               "loss_object": float(self.object.detach())}
        if self.attention is not None:
            out["loss_attention"] = float(self.attention.detach())
        return out


def build_unet_input(noisy_latents: torch.Tensor, mask: torch.Tensor, masked_latents: torch.Tensor) -> torch.Tensor:
    """diffusers' inpainting order: cat([x_t (4), mask (1), masked-image latent (4)], dim=1)."""
    return torch.cat([noisy_latents, mask, masked_latents], dim=1)


def encode_latents(vae, pixel_values: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> scaled latents z = E(x) · scaling_factor (a posterior sample)."""
    return vae.encode(pixel_values).latent_dist.sample(generator=generator) * vae.config.scaling_factor


def prediction_target(noise_scheduler, latents, noise, timesteps) -> torch.Tensor:
    kind = noise_scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return noise_scheduler.get_velocity(latents, noise, timesteps)
    raise ModelError(f"noise scheduler prediction_type {kind!r} is not supported; use epsilon or v_prediction")


def defectfill_step(
    unet,
    vae,
    text_encoder,
    noise_scheduler,
    batch: dict[str, torch.Tensor],
    concept_ids: list[int],
    *,
    weights: LossWeights,
    object_alpha: float,
    generator: torch.Generator | None = None,
    weight_dtype: torch.dtype = torch.float32,
    backward: Callable[[torch.Tensor], None] | None = None,
    step: int | None = None,
) -> StepOutput:
    """Losses of one batch (and their backward, when `backward` is given).

    batch: pixel_values (B,3,H,W) in [-1,1]; defect_mask, box_mask (B,1,H,W) in {0,1};
    defect_mask_latent (B,1,h,w); input_ids_defect, input_ids_object (B, 77).
    With weights.attention > 0 the capturing processors are installed on the decoder
    cross-attention layers for the forward AND the backward (gradient checkpointing recomputes
    the forward in backward), then the original processors are restored.
    Raises NonFiniteLossError on a NaN/inf loss term.
    """
    device = batch["pixel_values"].device
    pixel_values = batch["pixel_values"].to(weight_dtype)
    defect_mask, box_mask = batch["defect_mask"], batch["box_mask"]
    loss_mask = batch["defect_mask_latent"].float()
    batch_size = pixel_values.shape[0]

    with torch.no_grad():  # one VAE call: the image, the image without M, the image without M_rand
        masked = torch.cat([pixel_values * (defect_mask < 0.5), pixel_values * (box_mask < 0.5)])
        encoded = encode_latents(vae, torch.cat([pixel_values, masked.to(weight_dtype)]), generator)
        latents, masked_latents = encoded[:batch_size], encoded[batch_size:]
    latent_size = latents.shape[-2:]
    mask_latent = F.interpolate(torch.cat([defect_mask, box_mask]).float(), size=latent_size)
    noise = torch.randn(latents.shape, generator=generator, device="cpu" if generator is None else generator.device)
    noise = noise.to(device=device, dtype=latents.dtype)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch_size,),
                              generator=generator, device="cpu" if generator is None else generator.device)
    timesteps = timesteps.to(device).long()
    noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
    target = prediction_target(noise_scheduler, latents, noise, timesteps).float()

    unet_input = build_unet_input(
        torch.cat([noisy_latents, noisy_latents]), mask_latent.to(weight_dtype), masked_latents
    ).to(weight_dtype)
    input_ids = torch.cat([batch["input_ids_defect"], batch["input_ids_object"]]).to(device)
    capture = weights.attention > 0

    def forward(store=None) -> StepOutput:
        encoder_hidden_states = text_encoder(input_ids, return_dict=False)[0].to(weight_dtype)
        noise_pred = unet(unet_input, torch.cat([timesteps, timesteps]), encoder_hidden_states,
                          return_dict=False)[0]
        pred_defect, pred_object = noise_pred.float().chunk(2)
        l_def = defect_loss(pred_defect, target, loss_mask)
        l_obj = object_loss(pred_object, target, loss_mask, object_alpha)  # M' from the DEFECT mask
        l_attn, attention_map, layers = None, None, []
        if store is not None:
            store.recording = False  # nothing more to record (backward may re-run the forward)
            layers = sorted(store.maps)
            attention_map = aggregate_attention_maps(store, tuple(latent_size))
            l_attn = attention_loss(attention_map, loss_mask)
        total = total_loss(l_def, l_obj, l_attn, weights)
        terms = {"loss_defect": l_def, "loss_object": l_obj, **({"loss_attention": l_attn} if l_attn is not None else {})}
        check_finite({**terms, "loss": total}, step=step)
        return StepOutput(total, l_def, l_obj, l_attn, attention_map, layers, noise_pred.detach(), target)

    if not capture:
        out = forward()
        if backward is not None:
            backward(out.total)
        return out
    token_index = concept_token_positions(batch["input_ids_object"].to(device), concept_ids)
    rows = torch.arange(batch_size, 2 * batch_size, device=device)
    with capture_cross_attention(unet, rows, token_index) as store:
        out = forward(store)
        if backward is not None:
            backward(out.total)
    return out
