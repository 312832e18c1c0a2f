"""The two training stages of the offline base inpainting model, and its export.

Stage 1 (VAE): AutoencoderKL on small crops, z = posterior mean,
    L = |x̂ - x|₁ + |x̂ - x|²₂ + w_c·|c(x̂) - c(x)|₁ + w_kl·½·mean(μ²),   c(x) = x - mean_rgb(x)
(means over elements). The chroma term keeps colour: the real crops are exactly grey and without it
the decoder learns to output grey (notes/feasibility.md §9b, cause 4). The KL is kept on the mean
only; the log-variance is fixed at ~0 variance on export so that the pipelines' posterior
`.sample()` equals the mean. Then the latent scaling factor is measured: 1 / std(z) over crops.

Stage 2 (UNet): SD-2-inpainting's objective on the frozen VAE: ε-prediction MSE with SD's betas,
    x_t = √ᾱ_t·z + √(1-ᾱ_t)·ε,   L = |ε_θ(cat[x_t, m, E(x ⊙ (1-m))], t, τ(prompt)) - ε|²
with random masks m, prompts "a photo of <texture> fabric" (empty with probability p for CFG) and
a frozen, seeded random CLIP text encoder τ (DefectFill trains its own token and LoRA on top).
With `unet.train_text_encoder` τ trains with the UNet on descriptive prompts ("a photo of
<colour> <texture> fabric", "... with a <defect>" over windows masked around simulated defects), so
that the conditional and the unconditional model differ by what the words say and classifier-free
guidance, ε̂ = ε(∅) + w·(ε(c) - ε(∅)), pushes towards it; `unet.init_from` continues a trained base.

Both stages: AdamW, linear warm-up then linear decay to a fraction of the lr, grad clipping,
accelerate for device and logging (TensorBoard), checkpoints every N steps and at the time budget,
data and noise seeded by (seed, stage, step) so resumed runs are identical to uninterrupted ones.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from defectfill import checkpoints as ckpt
from defectfill.config import to_dict
from defectfill.errors import ConfigError
from defectfill.io_utils import atomic_write_json
from defectfill.losses import NonFiniteLossError
from defectfill.models import base_model
from defectfill.pretrain import data as pdata
from defectfill.pretrain.config import PretrainConfig

STAGE_IDS = {"vae": 1, "unet": 2, "scale": 3, "eval": 4}


# ----------------------------------------------------------------------------------------- math
def chroma(x: torch.Tensor) -> torch.Tensor:
    """x - its per-pixel channel mean: the colour part of (B, 3, H, W)."""
    return x - x.mean(dim=1, keepdim=True)


def vae_loss(recon: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, kl_weight: float, chroma_weight: float):
    """L1 + L2 + chroma_weight·L1(chroma) + kl_weight·½·mean(μ²); returns (loss, parts)."""
    l1 = (recon - x).abs().mean()
    l2 = (recon - x).pow(2).mean()
    lc = (chroma(recon) - chroma(x)).abs().mean()
    kl = 0.5 * mean.pow(2).mean()
    return l1 + l2 + chroma_weight * lc + kl_weight * kl, {"l1": l1.item(), "l2": l2.item(), "chroma": lc.item(), "kl": kl.item()}


def lr_factor(step: int, warmup: int, total: int, final_fraction: float) -> float:
    """Linear warm-up over `warmup` steps, then linear decay to `final_fraction` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 1.0 - (1.0 - final_fraction) * progress


def step_rng(seed: int, stage: str, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, STAGE_IDS[stage], step])


def step_torch_generator(seed: int, stage: str, step: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(np.random.default_rng([seed, STAGE_IDS[stage], step, 1]).integers(2**62)))
    return g


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of (B, 3, H, W) tensors in [-1, 1] (peak-to-peak 2)."""
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(4.0 / mse)


# ------------------------------------------------------------------------------------------ data
@dataclass
class Pools:
    simulator: list[pdata.FabricImage]
    real: list[pdata.FabricImage]
    defects: list[pdata.FabricImage] | None = None  # simulator images with one defect each


def build_pools(cfg: PretrainConfig, split: str = "train", render=None, images_per_texture: int | None = None) -> Pools:
    """Simulator images (training or held-out seeds) and real images of `split`."""
    d = cfg.data
    textures = list(d.textures) if d.textures else pdata.all_textures()
    n = images_per_texture or d.images_per_texture
    start = 0 if split == "train" else d.eval_seed_start
    if split == "train" and n > d.eval_seed_start:
        raise ConfigError("data.images_per_texture must stay below data.eval_seed_start (held-out seeds)")
    simulator = pdata.render_simulator_images(textures, list(range(start, start + n)), d.image_size, d.gray_fraction, render)
    real = []
    if d.real_dir is not None:
        real = pdata.load_real_images(d.real_dir, split, d.real_eval_images, d.stain_margin)
    defects = None
    if d.defect_images_per_type > 0:
        from defectfill.data.fabric import DEFECT_TYPES

        types = list(d.defect_types) if d.defect_types else list(DEFECT_TYPES)
        defects = pdata.render_defect_images(textures, types, list(range(start, start + d.defect_images_per_type)),
                                             d.image_size)
    return Pools(simulator, real, defects)


def batch(cfg: PretrainConfig, pools: Pools, rng: np.random.Generator, n: int, size: int):
    images, words = pdata.sample_mixed_crops(pools.simulator, pools.real, cfg.data.real_fraction, rng, n, size,
                                             cfg.data.real_tint)
    return pdata.to_model_tensor(images), words


# ------------------------------------------------------------------------------------- helpers
def make_optimizer(params, lr: float, beta1: float, beta2: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, betas=(beta1, beta2), weight_decay=weight_decay)


def _deadline_passed(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


@dataclass
class StageResult:
    stage: str
    step: int
    finished: bool
    seconds: float


def _prepare_resume(root: Path, resume: str | None, stage: str) -> Path | None:
    existing = ckpt.list_checkpoints(root, stage)
    path = ckpt.resolve_resume(root, resume, stage)
    if resume is None and existing:
        raise ConfigError(
            f"{root} already holds {stage} checkpoints ({existing[-1].name}); pass --resume_from_checkpoint latest "
            "to continue, or choose an empty --output_dir"
        )
    return path


def _train_loop(
    accelerator, stage: str, model, optimizer, train_cfg, start_step: int, deadline: float | None,
    checkpoint_root: Path, total_limit: int, compute_loss, extra_state=None,
) -> StageResult:
    from tqdm.auto import tqdm

    t0 = time.monotonic()
    step = start_step
    # the schedule's peak per group (a group may carry its own "base_lr"), not the saved lr
    base_lrs = [group.get("base_lr", train_cfg.learning_rate) for group in optimizer.param_groups]
    bar = tqdm(total=train_cfg.max_train_steps, initial=step, desc=stage, disable=not accelerator.is_main_process,
               mininterval=5.0)
    model.train()
    while step < train_cfg.max_train_steps:
        if _deadline_passed(deadline):
            break
        factor = lr_factor(step, train_cfg.lr_warmup_steps, train_cfg.max_train_steps, train_cfg.lr_final_fraction)
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * factor
        loss, logs = compute_loss(step)
        if not torch.isfinite(loss):  # before the optimiser step: no checkpoint holds the bad step
            found = ckpt.list_checkpoints(checkpoint_root, stage)
            keep = (f"the last good checkpoint {found[-1]} is kept (--resume_from_checkpoint latest)" if found
                    else "no checkpoint of this stage was written yet")
            raise NonFiniteLossError(f"{stage} loss is {loss.item()} at step {step + 1}; training stopped instead of "
                                     f"skipping the step; {keep}. Lower the learning rate or check the data")
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), train_cfg.max_grad_norm)
        optimizer.step()
        step += 1
        logs = {f"{stage}/{k}": v for k, v in logs.items()}
        logs.update({f"{stage}/loss": loss.item(), f"{stage}/lr": optimizer.param_groups[0]["lr"],
                     f"{stage}/grad_norm": float(grad_norm)})
        accelerator.log(logs, step=step)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % train_cfg.checkpointing_steps == 0 and step < train_cfg.max_train_steps:
            _save(accelerator, checkpoint_root, stage, step, model, optimizer, total_limit, extra_state)
    bar.close()
    if step > start_step or step == 0:
        _save(accelerator, checkpoint_root, stage, step, model, optimizer, total_limit, extra_state)
    return StageResult(stage, step, step >= train_cfg.max_train_steps, time.monotonic() - t0)


def _save(accelerator, root, stage, step, model, optimizer, total_limit, extra_state):
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        ckpt.save_checkpoint(root, stage, step, accelerator.unwrap_model(model), optimizer,
                             extra=extra_state, total_limit=total_limit)


def _resume_stage(root: Path, resume: str | None, stage: str, model, optimizer, accelerator) -> int:
    """Load the stage's checkpoint named by `resume` into model + optimizer; the step to start at."""
    path = _prepare_resume(root, resume, stage)
    if path is None:
        return 0
    start = int(ckpt.load_checkpoint(path, model, optimizer)["step"])
    accelerator.print(f"resumed {stage} from {path} at step {start}")
    return start


# ---------------------------------------------------------------------------------------- stage 1
def train_vae(cfg: PretrainConfig, accelerator, pools: Pools, output_dir: Path, resume: str | None,
              deadline: float | None) -> StageResult:
    root = output_dir / "checkpoints"
    tc = cfg.vae
    factor = base_model.vae_scale_factor(cfg.model.vae)
    if bad := [side for side in [tc.resolution, *(tc.resolutions or [])] if side % factor]:
        raise ConfigError(f"vae.resolution(s): crop sides {bad} are not multiples of the VAE factor {factor}; "
                          f"use multiples of {factor}")
    vae = base_model.build_vae(cfg.model.vae, seed=cfg.seed)
    if tc.init_from:
        init_vae_from(vae, Path(tc.init_from))
    if tc.train_decoder_only:
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
    params = [p for p in vae.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, tc.learning_rate, tc.adam_beta1, tc.adam_beta2, tc.adam_weight_decay)
    start = _resume_stage(root, resume, "vae", vae, optimizer, accelerator)
    vae, optimizer = accelerator.prepare(vae, optimizer)

    def compute_loss(step: int):
        rng = step_rng(cfg.seed, "vae", step)
        n, side = tc.crop_plan(rng)
        x, _ = batch(cfg, pools, rng, n, side)
        x = x.to(accelerator.device)
        model = accelerator.unwrap_model(vae)
        mean = model.encode(x).latent_dist.mean
        recon = model.decode(mean).sample
        loss, parts = vae_loss(recon, x, mean, tc.kl_weight, tc.chroma_weight)
        parts["psnr"] = psnr(recon.detach(), x).mean().item()
        return loss, parts

    result = _train_loop(accelerator, "vae", vae, optimizer, tc, start, deadline, root, cfg.checkpoints_total_limit,
                         compute_loss)
    if result.finished and accelerator.is_main_process:
        finish_vae(cfg, accelerator.unwrap_model(vae), pools, output_dir / "vae")
    accelerator.wait_for_everyone()
    return result


@torch.no_grad()
def measure_scaling_factor(vae, cfg: PretrainConfig, pools: Pools) -> dict[str, float]:
    """Encode `scale_samples` windows of the UNet's size; scaling factor = 1 / std of the latents."""
    rng = step_rng(cfg.seed, "scale", 0)
    zs = []
    remaining = cfg.vae.scale_samples
    while remaining > 0:
        n = min(32, remaining)
        x, _ = batch(cfg, pools, rng, n, cfg.unet.resolution)
        zs.append(vae.encode(x.to(vae.device)).latent_dist.mean.cpu())
        remaining -= n
    z = torch.cat(zs)
    std = float(z.std())
    return {"latent_mean": float(z.mean()), "latent_std": std, "scaling_factor": 1.0 / std}


def init_vae_from(vae, folder: Path) -> None:
    """Copy the weights of the trained VAE folder `folder` into `vae` (same architecture)."""
    source = load_vae(folder)
    try:
        vae.load_state_dict(source.state_dict())
    except RuntimeError as exc:
        raise ConfigError(
            f"vae.init_from={folder}: its architecture differs from model.vae ({str(exc).splitlines()[0]}); "
            "use the model.vae of the run that trained it"
        ) from exc


def finish_vae(cfg: PretrainConfig, vae, pools: Pools, target: Path) -> dict[str, float]:
    """Fix the posterior variance, measure the scaling factor, save the diffusers VAE folder."""
    vae = vae.eval()
    base_model.fix_posterior_variance(vae)
    stats = measure_scaling_factor(vae, cfg, pools)
    vae.register_to_config(scaling_factor=stats["scaling_factor"], sample_size=cfg.unet.resolution)

    def save(tmp: Path) -> None:
        vae.save_pretrained(str(tmp), safe_serialization=True)
        atomic_write_json(tmp / "latent_stats.json", stats)

    ckpt.atomic_save_dir(target, save)
    return stats


# ---------------------------------------------------------------------------------------- stage 2
def load_vae(folder: Path):
    from diffusers import AutoencoderKL

    from defectfill.errors import ModelError

    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder}: no trained VAE (config.json missing); run the VAE stage first")
    try:
        return AutoencoderKL.from_pretrained(str(folder)).eval()
    except Exception as exc:
        raise ModelError(f"{folder}: the trained VAE cannot be loaded ({exc}); delete it and rerun the VAE stage") from exc


def text_encoder_and_tokenizer(cfg: PretrainConfig, output_dir: Path):
    """The run's starting text encoder: the seeded random one, or `unet.init_from`'s (saved once in
    output_dir/text_encoder so every stage and every export of the run starts from the same)."""
    from transformers import CLIPTextModel

    from defectfill.models.components import build_clip_tokenizer

    folder = output_dir / "text_encoder"
    if (folder / "config.json").is_file():
        text_encoder = CLIPTextModel.from_pretrained(str(folder))
    else:
        if cfg.unet.init_from:
            text_encoder = CLIPTextModel.from_pretrained(str(Path(cfg.unet.init_from) / "text_encoder"))
        else:
            text_encoder = base_model.build_text_encoder(cfg.model.text_encoder, seed=cfg.seed)
        ckpt.atomic_save_dir(folder, lambda tmp: text_encoder.save_pretrained(str(tmp), safe_serialization=True))
    return text_encoder.float().eval().requires_grad_(False), build_clip_tokenizer()


class PromptEmbeddings:
    """Cached τ(prompt) of the frozen text encoder: (77, hidden) per prompt."""

    def __init__(self, text_encoder, tokenizer):
        self.text_encoder, self.tokenizer, self.cache = text_encoder, tokenizer, {}

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> torch.Tensor:
        missing = sorted({p for p in prompts if p not in self.cache})
        if missing:
            out = self.text_encoder(token_ids(self.tokenizer, missing).to(self.text_encoder.device))[0]
            self.cache.update(dict(zip(missing, out)))
        return torch.stack([self.cache[p] for p in prompts])


def token_ids(tokenizer, prompts: list[str]) -> torch.Tensor:
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


class TextConditionedUNet(torch.nn.Module):
    """The UNet and the text encoder trained together: one module, so one checkpoint
    (keys unet.* / text_encoder.*) and one DDP wrapper whose forward runs both."""

    def __init__(self, unet, text_encoder):
        super().__init__()
        self.unet, self.text_encoder = unet, text_encoder

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timesteps, self.text_encoder(input_ids)[0]).sample


def init_unet_from(unet, folder: Path) -> None:
    """Copy the UNet weights of the pipeline folder `folder` into `unet` (same architecture)."""
    from diffusers import UNet2DConditionModel

    if not (folder / "unet" / "config.json").is_file():
        raise ConfigError(f"unet.init_from={folder}: no unet/config.json; give a pipeline folder such as "
                          "assets/base-fabric-inpaint")
    try:
        unet.load_state_dict(UNet2DConditionModel.from_pretrained(str(folder / "unet")).state_dict())
    except RuntimeError as exc:
        raise ConfigError(
            f"unet.init_from={folder}: its UNet differs from model.unet ({str(exc).splitlines()[0]}); use the "
            "model section of the run that trained it") from exc


def copy_pipeline_vae(folder: Path, output_dir: Path) -> None:
    """`unet.init_from`'s VAE becomes the run's VAE: the UNet it continues was trained on its latents."""
    import shutil

    source = folder / "vae"
    if not (source / "config.json").is_file():
        raise ConfigError(f"unet.init_from={folder}: no vae/config.json; give a whole pipeline folder")
    ckpt.atomic_save_dir(output_dir / "vae", lambda tmp: shutil.copytree(source, tmp, dirs_exist_ok=True))


def inpainting_inputs(vae, x: torch.Tensor, mask: torch.Tensor, scaling_factor: float):
    """Latents, latent mask and masked-image latents exactly as StableDiffusionInpaintPipeline makes them.

    x: (B, 3, H, W) in [-1, 1]; mask: (B, 1, H, W) in {0, 1}, 1 = inpaint.
    """
    with torch.no_grad():
        both = torch.cat([x, x * (mask < 0.5)])
        z = vae.encode(both).latent_dist.mean * scaling_factor
    latents, masked_latents = z.chunk(2)
    latent_mask = F.interpolate(mask, size=latents.shape[-2:])  # nearest, as the pipeline does
    return latents, latent_mask, masked_latents


def train_unet(cfg: PretrainConfig, accelerator, pools: Pools, output_dir: Path, resume: str | None,
               deadline: float | None) -> StageResult:
    from defectfill.training.step import prediction_target

    root = output_dir / "checkpoints"
    vae = load_vae(output_dir / "vae").to(accelerator.device).requires_grad_(False)
    factor = base_model.vae_scale_factor(cfg.model.vae)
    tc = cfg.unet
    if tc.resolution % factor or tc.resolution // factor != cfg.model.unet.sample_size:
        raise ConfigError(
            f"unet.resolution={tc.resolution} / VAE factor {factor} must equal model.unet.sample_size="
            f"{cfg.model.unet.sample_size}"
        )
    scaling_factor = float(vae.config.scaling_factor)
    text_encoder, tokenizer = text_encoder_and_tokenizer(cfg, output_dir)
    text_encoder.to(accelerator.device)
    # a frozen encoder's prompt embeddings are cached; a trained one runs inside the model every step
    embed = None if tc.train_text_encoder else PromptEmbeddings(text_encoder, tokenizer)
    unet = base_model.build_unet(cfg.model.unet, cfg.model.vae.latent_channels, cfg.model.text_encoder.hidden_size,
                                 seed=cfg.seed)
    if tc.init_from:
        init_unet_from(unet, Path(tc.init_from))
    groups = [{"params": list(unet.parameters()), "base_lr": tc.learning_rate}]
    model = unet
    if tc.train_text_encoder:
        model = TextConditionedUNet(unet, text_encoder.train().requires_grad_(True))
        groups.append({"params": list(text_encoder.parameters()), "base_lr": tc.text_encoder_learning_rate,
                       "weight_decay": 0.0})  # no decay: it would pull every unused token's row to 0
    optimizer = make_optimizer(groups, tc.learning_rate, tc.adam_beta1, tc.adam_beta2, tc.adam_weight_decay)
    start = _resume_stage(root, resume, "unet", model, optimizer, accelerator)
    model, optimizer = accelerator.prepare(model, optimizer)
    scheduler = unet_scheduler(cfg)
    alphas = scheduler.alphas_cumprod.to(accelerator.device)

    def compute_loss(step: int):
        rng = step_rng(cfg.seed, "unet", step)
        g = step_torch_generator(cfg.seed, "unet", step)
        x, masks, prompts = unet_batch(cfg, pools, rng)
        n = len(prompts)
        mask = torch.from_numpy(masks)[:, None].to(accelerator.device)
        latents, latent_mask, masked_latents = inpainting_inputs(vae, x.to(accelerator.device), mask, scaling_factor)
        noise = torch.randn(latents.shape, generator=g).to(accelerator.device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=g).to(accelerator.device)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        inputs = torch.cat([noisy, latent_mask, masked_latents], dim=1)
        if tc.train_text_encoder:
            pred = model(inputs, t, token_ids(tokenizer, prompts).to(accelerator.device))
        else:
            pred = model(inputs, t, embed(prompts)).sample
        loss = F.mse_loss(pred.float(), prediction_target(scheduler, latents, noise, t))
        return loss, {}

    result = _train_loop(accelerator, "unet", model, optimizer, tc, start, deadline, root, cfg.checkpoints_total_limit,
                         compute_loss)
    if accelerator.is_main_process and result.step > 0:
        trained = accelerator.unwrap_model(model)
        unet, text_encoder = (trained.unet, trained.text_encoder) if tc.train_text_encoder else (trained, text_encoder)
        from defectfill.models.components import build_clip_tokenizer

        # a fresh tokenizer: the fast one used for training keeps its padding in tokenizer.json
        export_pipeline(unet, vae, text_encoder, build_clip_tokenizer(), scheduler, output_dir / "pipeline",
                        info={"unet_steps": result.step, "unet_finished": result.finished,
                              "text_encoder_trained": tc.train_text_encoder, "init_from": tc.init_from})
    accelerator.wait_for_everyone()
    return result


def unet_batch(cfg: PretrainConfig, pools: Pools, rng: np.random.Generator):
    """One UNet batch: (images (B, 3, H, W) in [-1, 1], masks (B, H, W) float32, prompts).

    Without descriptive prompts: fabric crops, random masks, "a photo of <texture> fabric". With them:
    a binomial(B, defect_probability) share of the windows is cut around a simulated defect and masked
    over it, and every prompt is `describe`d (colour of the crop, texture, defect); each prompt is
    empty with probability `empty_prompt_probability` (classifier-free guidance)."""
    tc = cfg.unet
    n, size = tc.train_batch_size, tc.resolution
    n_defect = int(rng.binomial(n, tc.defect_probability)) if tc.defect_probability > 0 else 0
    images, words, types, masks = [], [], [], []
    if n - n_defect:
        crops, words = pdata.sample_mixed_crops(pools.simulator, pools.real, cfg.data.real_fraction, rng, n - n_defect,
                                                size, cfg.data.real_tint)
        images.append(crops)
        types = [None] * len(words)
        masks = [pdata.random_inpaint_mask(rng, size, tc.mask_box_probability, tc.mask_stroke_probability,
                                           tc.mask_full_probability) for _ in words]
    if n_defect:
        crops, defect_masks, defect_words, defect_types = pdata.sample_defect_crops(pools.defects, rng, n_defect, size)
        images.append(crops)
        masks.extend(defect_masks)
        words, types = [*words, *defect_words], [*types, *defect_types]
    crops = np.concatenate(images)
    prompts = []
    for crop, word, defect_type in zip(crops, words, types):
        if rng.random() < tc.empty_prompt_probability:
            prompts.append("")
        elif tc.descriptive_prompts:
            prompts.append(pdata.describe(rng, word, pdata.colour_word(crop), defect_type, tc.word_dropout))
        else:
            prompts.append(pdata.prompt_for(word))
    return pdata.to_model_tensor(crops), np.stack(masks), prompts


def unet_scheduler(cfg: PretrainConfig):
    """The noise scheduler the UNet trains with and ships with (its parameterisation: `cfg.unet`)."""
    from defectfill.models.components import sd_ddim_scheduler

    return sd_ddim_scheduler(cfg.unet.prediction_type, cfg.unet.zero_terminal_snr)


# ----------------------------------------------------------------------------------------- export
def build_pipeline(unet, vae, text_encoder, tokenizer, scheduler):
    from defectfill.models.components import build_inpaint_pipeline

    return build_inpaint_pipeline({"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(),
                                   "tokenizer": tokenizer, "scheduler": scheduler})


def export_pipeline(unet, vae, text_encoder, tokenizer, scheduler, target: Path, info: dict | None = None,
                    fp16_weights: bool = True) -> Path:
    """Save a StableDiffusionInpaintPipeline folder (safetensors) atomically to `target`.

    scheduler: the one the UNet was trained with (`unet_scheduler(cfg)`).

    fp16_weights: store the UNet and VAE weights in float16 (half the size); diffusers'
    `from_pretrained` loads them back as float32 unless asked otherwise. The text encoder stays
    float32, because transformers would load float16 weights as float16 (then prompt embeddings
    and the float32 UNet disagree in dtype).
    """
    if fp16_weights:
        unet, vae = copy.deepcopy(unet).half(), copy.deepcopy(vae).half()
    pipe = build_pipeline(unet, vae, text_encoder.float(), tokenizer, scheduler)

    def save(tmp: Path) -> None:
        pipe.save_pretrained(str(tmp), safe_serialization=True)
        if info is not None:
            atomic_write_json(tmp / "training_info.json", info)

    return ckpt.atomic_save_dir(target, save)


def export_from_checkpoint(cfg: PretrainConfig, output_dir: Path, checkpoint: Path, target: Path) -> Path:
    """Build the pipeline from a UNet checkpoint (of `output_dir`, e.g. a better earlier one, or of a
    run trained on the same latents) with `output_dir`'s VAE and text encoder."""
    state = ckpt.read_state(checkpoint)
    unet = base_model.build_unet(cfg.model.unet, cfg.model.vae.latent_channels, cfg.model.text_encoder.hidden_size)
    text_encoder, tokenizer = text_encoder_and_tokenizer(cfg, output_dir)
    weights = ckpt.load_safetensors(checkpoint / "model.safetensors")
    if any(k.startswith("text_encoder.") for k in weights):  # trained with the UNet (TextConditionedUNet)
        TextConditionedUNet(unet, text_encoder).load_state_dict(weights)
    else:
        unet.load_state_dict(weights)
    vae = load_vae(output_dir / "vae")
    return export_pipeline(unet, vae, text_encoder, tokenizer, unet_scheduler(cfg), target,
                           info={"unet_steps": state["step"]})


def export_latest(cfg: PretrainConfig, output_dir: str | Path, target: str | Path) -> Path:
    """Export the newest UNet checkpoint of `output_dir` (with its VAE and text encoder) to `target`."""
    from defectfill.errors import ModelError

    output_dir = Path(output_dir)
    found = ckpt.list_checkpoints(output_dir / "checkpoints", "unet")
    if not found or ckpt.read_state(found[-1])["step"] == 0:
        raise ModelError(f"{output_dir}: no trained UNet checkpoint to export; train first")
    return export_from_checkpoint(cfg, output_dir, found[-1], Path(target))


# ------------------------------------------------------------------------------------------- run
def flat_config(cfg: PretrainConfig) -> dict:
    out = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)

    walk("", to_dict(cfg))
    return out


def run_pretraining(cfg: PretrainConfig, output_dir: str | Path, resume: str | None = None,
                    max_minutes: float | None = None, accelerator=None, render=None) -> dict:
    """Train (or continue) both stages within `max_minutes`; returns a summary (also in summary.json)."""
    from accelerate.utils import set_seed

    from defectfill.config import save_config
    from defectfill.distributed import new_accelerator

    start = time.monotonic()
    deadline = start + 60 * max_minutes if max_minutes else None
    output_dir = Path(output_dir)
    if resume is None and (ckpt.list_checkpoints(output_dir / "checkpoints") or (output_dir / "vae").exists()):
        raise ConfigError(
            f"--output_dir {output_dir} already holds a run (checkpoints/ or vae/); pass --resume_from_checkpoint "
            "latest to continue it, or choose an empty folder"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    accelerator = accelerator or new_accelerator(log_with="tensorboard", project_dir=str(output_dir / "logs"))
    set_seed(cfg.seed)
    accelerator.init_trackers("pretrain_base", config=flat_config(cfg))
    if accelerator.is_main_process:
        save_config(cfg, output_dir / "config.yaml")
    pools = build_pools(cfg, "train", render=render)
    summary: dict = {"output_dir": str(output_dir)}
    vae_done = (output_dir / "vae" / "config.json").is_file()
    if not vae_done and cfg.unet.init_from and accelerator.is_main_process:
        copy_pipeline_vae(Path(cfg.unet.init_from), output_dir)
    accelerator.wait_for_everyone()
    vae_done = (output_dir / "vae" / "config.json").is_file()
    if vae_done and cfg.unet.init_from:
        summary["vae"] = {"finished": True, "from": str(Path(cfg.unet.init_from) / "vae")}
    elif not vae_done:
        r = train_vae(cfg, accelerator, pools, output_dir, resume, deadline)
        summary["vae"] = {"step": r.step, "finished": r.finished, "seconds": round(r.seconds, 1)}
        vae_done = r.finished
    else:
        summary["vae"] = {"finished": True, "skipped": "output_dir/vae exists"}
    if vae_done and not _deadline_passed(deadline):
        r = train_unet(cfg, accelerator, pools, output_dir, resume, deadline)
        summary["unet"] = {"step": r.step, "finished": r.finished, "seconds": round(r.seconds, 1)}
    summary["finished"] = bool(summary.get("unet", {}).get("finished"))
    summary["seconds"] = round(time.monotonic() - start, 1)
    accelerator.end_training()
    if accelerator.is_main_process:
        atomic_write_json(output_dir / "summary.json", summary)
    return summary


def seconds_to_str(seconds: float) -> str:
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m" if math.isfinite(seconds) else "?"
