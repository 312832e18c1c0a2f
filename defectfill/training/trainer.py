"""The DefectFill training loop, on accelerate (one or many processes, CPU or GPU).

`train_defectfill(config) -> Path` is the entry point the CLI (`defectfill train`), the script
(`train_scripts/train_defectfill.py`) and the demo call. It follows diffusers' training examples:
accelerate owns devices, mixed precision, gradient accumulation and checkpoints
(`output_dir/checkpoint-<step>` via `accelerator.save_state`, resumed with
`resume_from_checkpoint: latest`); frozen weights are cast to the mixed-precision dtype, the
trainable LoRA weights stay float32 (`cast_training_params`) and the text encoder stays float32
(its embedding matrix is trained, as in diffusers' textual inversion); losses and a sample grid go
to TensorBoard; a tqdm bar shows progress. The data, noise and timesteps of every step are pure
functions of (seed, step, rank), so a resumed run continues exactly where the first one stopped.

Outputs in `output_dir`: the trained concepts (see defectfill.models.weights), `config.yaml`,
`logs/` (TensorBoard), `losses.jsonl` (one line per step), `samples/step-*.png`,
`checkpoint-<step>/` (each one also a loadable model folder), `scale.json` (per type: the training
windows, their scale and how many masks vanish at latent size).

Training examples are cut from the windows `generate` paints in (`training_crops: generation`,
the default; see defectfill.training.data), so the concepts learn each defect at the scale they
will draw it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from defectfill.config import save_config, to_dict
from defectfill.errors import ConfigError, ModelError
from defectfill.io_utils import Manifest, apply_umask_modes, atomic_write_json
from defectfill.losses import LossWeights, NonFiniteLossError
from defectfill.models import weights as weights_io
from defectfill.models.concepts import check_defect_type_name, default_token
from defectfill.training.config import DefectFillTrainConfig
from defectfill.training.data import (
    DefectFillDataset,
    StepBatchSampler,
    check_image_sizes,
    concept_training_crops,
    latent_coverage,
    load_defect_samples,
    mixed_seed,
)
from defectfill.training.model import DefectFillModels, load_components, make_trainable
from defectfill.training.step import StepOutput, defectfill_step

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "training_state.json"


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints (`checkpoint-<step>` with a training_state.json), oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_checkpoint(output_dir: str | Path, value: str | None) -> Path | None:
    """'latest' -> newest checkpoint (None when there is none: a fresh start, as diffusers does);
    a name or path -> that folder, which must exist (ModelError otherwise)."""
    if not value:
        return None
    if value == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            logger.warning("resume_from_checkpoint=latest: no checkpoint in %s; starting a new run", output_dir)
            return None
        return found[-1]
    path = Path(value)
    if not path.is_absolute() and not path.exists():
        path = Path(output_dir) / value
    if not path.is_dir():
        available = [p.name for p in list_checkpoints(output_dir)]
        raise ModelError(
            f"resume_from_checkpoint: {value!r} not found (looked for {path}); available in {output_dir}: "
            f"{available or 'none'}; pass 'latest' or one of those"
        )
    return path


def load_models_state(unet, text_encoder, tokenizer, model_dir: Path) -> None:
    """Put a saved LoRA and concept rows back into models that already carry the adapters/tokens."""
    from diffusers.training_utils import _set_state_dict_into_text_encoder
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(model_dir / weights_io.LORA_WEIGHTS))
    unet_state = {k[len("unet."):]: v for k, v in state.items() if k.startswith("unet.")}
    result = set_peft_model_state_dict(_unwrap(unet), convert_unet_state_dict_to_peft(unet_state), adapter_name="default")
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ModelError(f"{model_dir}: LoRA keys {unexpected[:3]}... do not fit this UNet; resume with the same config")
    if any(k.startswith("text_encoder.") for k in state):
        _set_state_dict_into_text_encoder(state, "text_encoder.", _unwrap(text_encoder))
    embeds = weights_io.load_learned_embeds(model_dir)
    weight = _unwrap(text_encoder).get_input_embeddings().weight
    with torch.no_grad():
        for token, vector in embeds.items():
            weight[tokenizer.convert_tokens_to_ids(token)] = vector.to(weight.device, weight.dtype)


class DefectFillTrainer:
    """Sets up models, data, optimiser and accelerate from a config; `train()` runs the loop."""

    def __init__(self, config: DefectFillTrainConfig):
        from accelerate.utils import ProjectConfiguration, set_seed
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import cast_training_params

        self.config = config = config.validate()
        self.output_dir = Path(config.output_dir)
        from defectfill.distributed import new_accelerator

        self.accelerator = accelerator = new_accelerator(
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            mixed_precision=config.mixed_precision,
            log_with=None if config.report_to == "none" else config.report_to,
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir), logging_dir=str(self.output_dir / config.logging_dir)),
            cpu=config.cpu,
        )
        set_seed(config.seed)
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)

        # --- data first: bad data fails before the model loads ---
        self.samples = load_defect_samples(config.train_data_dir, config.defect_types or None,
                                           config.dataset_layout, config.folder_defect_type)
        for defect_type in self.samples:
            check_defect_type_name(defect_type, f"{config.train_data_dir}")
        unknown = sorted(set(config.concept_tokens) - set(self.samples))
        if unknown:
            raise ConfigError(f"concept_tokens: defect type(s) {unknown} are not trained (trained: {sorted(self.samples)})")
        self.concepts = {t: config.concept_tokens.get(t, default_token(t)) for t in self.samples}
        check_image_sizes(self.samples, config.resolution)

        # --- models ---
        self.models: DefectFillModels = load_components(config.pretrained_model_name_or_path, config.revision,
                                                        config.variant, frozen_dtype=self.weight_dtype)
        self.tokens, self.row_guard = make_trainable(
            self.models, self.concepts, config.initializer_words, rank=config.rank, lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout, unet_targets=config.unet_lora_targets,
            train_text_encoder=config.train_text_encoder, text_encoder_targets=config.text_encoder_lora_targets)
        m = self.models
        device = accelerator.device
        m.vae.to(device)  # loaded in weight_dtype (load_components)
        m.unet.to(device)
        m.text_encoder.to(device)  # float32: its embedding matrix is trained
        cast_training_params([m.unet, m.text_encoder], dtype=torch.float32)
        self.row_guard.to(device)
        if config.gradient_checkpointing:
            m.unet.enable_gradient_checkpointing()
            if config.train_text_encoder:
                m.text_encoder.gradient_checkpointing_enable()
        m.unet.train()
        m.text_encoder.train()

        self.vae_scale_factor = 2 ** (len(m.vae.config.block_out_channels) - 1)
        # the generated window's sides are multiples of this (DefectFill.size_multiple)
        self.size_multiple = self.vae_scale_factor * 2 ** (len(m.unet.config.block_out_channels) - 1)
        self.training_samples = self.samples
        skipped: list[str] = []
        if config.training_crops == "generation":
            self.training_samples = {
                t: concept_training_crops(items, config.resolution, self.size_multiple, skipped=skipped,
                                          zoom=config.window_zoom)
                for t, items in self.samples.items()}
            if skipped:
                logger.warning("%d defect windows left out: generate would paint them at under half the resolution "
                               "on their short side (a defect nearly as large as the image's short side), so "
                               "training cannot see them at the generation scale; e.g. %s. Raise `resolution` or "
                               "tile such images", len(skipped), skipped[:3])
        self.log_scale()
        self.dataset = DefectFillDataset(
            self.training_samples, m.tokenizer, self.concepts, resolution=config.resolution,
            vae_scale_factor=self.vae_scale_factor, object_word=config.object_word,
            defect_prompt=config.defect_prompt, object_prompt=config.object_prompt,
            scale_range=(config.scale_min, config.scale_max), center_crop=config.center_crop,
            random_flip=config.random_flip, num_random_boxes=config.num_random_boxes,
            box_fraction=(config.box_min_fraction, config.box_max_fraction), seed=config.seed,
            min_image_side=config.resolution // 2 if config.training_crops == "generation" else None)

        # --- optimiser ---
        unet_lora = [p for p in m.unet.parameters() if p.requires_grad]
        embedding = m.text_encoder.get_input_embeddings().weight
        text_lora = [p for p in m.text_encoder.parameters() if p.requires_grad and p is not embedding]
        groups = [{"params": unet_lora, "lr": config.learning_rate},
                  {"params": [embedding], "lr": config.embedding_lr}]
        if text_lora:
            groups.append({"params": text_lora, "lr": config.text_encoder_lr})
        self.params_to_clip = unet_lora + text_lora + [embedding]
        optimizer_cls = torch.optim.AdamW
        if config.use_8bit_adam:
            try:
                import bitsandbytes as bnb
            except ImportError as exc:
                raise ConfigError("use_8bit_adam: bitsandbytes is not installed; `pip install bitsandbytes` "
                                  "or set use_8bit_adam: false") from exc
            optimizer_cls = bnb.optim.AdamW8bit
        optimizer = optimizer_cls(groups, betas=(config.adam_beta1, config.adam_beta2),
                                  weight_decay=config.adam_weight_decay, eps=config.adam_epsilon)
        lr_scheduler = get_scheduler(
            config.lr_scheduler, optimizer=optimizer,
            num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
            num_training_steps=config.max_train_steps * accelerator.num_processes)
        m.unet, m.text_encoder, self.optimizer, self.lr_scheduler = accelerator.prepare(
            m.unet, m.text_encoder, optimizer, lr_scheduler)
        accelerator.register_save_state_pre_hook(self._save_hook)
        accelerator.register_load_state_pre_hook(self._load_hook)
        self.loss_weights = LossWeights(config.lambda_defect, config.lambda_object, config.lambda_attention)
        self.global_step = 0
        self.rescued_masks = 0

    def log_scale(self) -> dict[str, Any]:
        """Log, per type, the windows trained on, their scale, and the defects that cover less than one
        latent cell at that scale (with what to change); returns the figures (also in `scale.json`)."""
        c, f = self.config, self.vae_scale_factor
        coverage = latent_coverage(self.training_samples, c.resolution, f)
        self.scale_report = {}
        for defect_type, cov in coverage.items():
            scales = np.array(cov.scales)
            self.scale_report[defect_type] = {
                "images": len(self.samples[defect_type]), "training_windows": cov.defects,
                "vanished_at_latent_size": cov.vanished, "scale_median": float(np.median(scales)),
                "training_crops": c.training_crops}
            logger.info("%s: %d images -> %d training %s, image px -> training px x%.3g (median), latent cell "
                        "%dx%d training px", defect_type, len(self.samples[defect_type]), cov.defects,
                        "windows (the generation windows)" if c.training_crops == "generation" else "images (whole)",
                        float(np.median(scales)), f, f)
            if not cov.vanished:
                continue
            if c.training_crops == "whole_image":
                fix = ("these are the whole images shrunk to `resolution`, while `generate` paints in windows at "
                       "the image's own scale: set training_crops: generation (the default) so that training sees "
                       "the defects at the scale generate paints them")
            else:
                k = cov.upsample_needed(f)
                fix = ("this is the scale `generate` paints them at, so neither training nor generation can draw "
                       f"them finer than one latent cell: set window_zoom: {k * c.window_zoom:g} (about x{k} "
                       "finer windows, recorded in the model so generate uses them too), or upsample the defect "
                       "images and the good images alike, or use a base model with a smaller VAE factor")
            logger.warning("%s: %d of %d training masks cover less than one %dx%d latent cell at the training scale "
                           "(x%.3g) and vanish at latent size (each keeps one centroid cell); %s",
                           defect_type, cov.vanished, cov.defects, f, f, float(np.median(scales)), fix)
        return self.scale_report

    # ------------------------------------------------------------------ weights and checkpoints
    def model_meta(self) -> dict[str, Any]:
        c = self.config
        return {
            "base_model": c.pretrained_model_name_or_path,
            "object_word": c.object_word,
            "initializer_words": self.tokens.initializer_words,
            "resolution": c.resolution,
            "window_zoom": c.window_zoom if c.training_crops == "generation" else 1.0,
            "lora": {"rank": c.rank, "alpha": c.lora_alpha, "unet_targets": list(c.unet_lora_targets),
                     "text_encoder_targets": list(c.text_encoder_lora_targets) if c.train_text_encoder else []},
            "training": to_dict(c),
        }

    def save_model(self, out_dir: Path) -> Path:
        m = self.models
        return weights_io.save_concepts(out_dir, m.unet, m.text_encoder, m.tokenizer, self.concepts, self.model_meta())

    def _save_hook(self, models, weights, output_dir) -> None:
        if self.accelerator.is_main_process:
            self.save_model(Path(output_dir))
        weights.clear()  # only the LoRA and the concept rows are state; accelerate saves no full model

    def _load_hook(self, models, input_dir) -> None:
        models.clear()
        m = self.models
        load_models_state(m.unet, m.text_encoder, m.tokenizer, Path(input_dir))

    def save_checkpoint(self, step: int) -> Path:
        """`accelerator.save_state` into a hidden folder, renamed to checkpoint-<step> when complete."""
        acc = self.accelerator
        final = self.output_dir / f"checkpoint-{step}"
        partial = self.output_dir / f".checkpoint-{step}.partial"
        if acc.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
        acc.wait_for_everyone()
        try:
            acc.save_state(str(partial))
            acc.wait_for_everyone()
            if acc.is_main_process:
                atomic_write_json(partial / STATE_FILE, {"global_step": step, "num_processes": acc.num_processes,
                                                         "concepts": self.concepts})
        except Exception as exc:  # OSError, SafetensorError, torch.save RuntimeError (disk full): older ones are intact
            shutil.rmtree(partial, ignore_errors=True)
            previous = [p.name for p in list_checkpoints(self.output_dir)]
            raise ModelError(
                f"{final}: writing the checkpoint failed ({type(exc).__name__}: {exc}); nothing was replaced, the "
                f"previous checkpoint(s) {previous or 'none'} in {self.output_dir} are intact. Free disk space, then "
                "resume with resume_from_checkpoint=latest") from exc
        if acc.is_main_process:
            if final.exists():
                shutil.rmtree(final)
            apply_umask_modes(partial)  # readable by a teammate, as any file written with the umask
            os.replace(partial, final)
            limit = self.config.checkpoints_total_limit  # drop old checkpoints only once the new one is complete
            if limit is not None:
                existing = [p for p in list_checkpoints(self.output_dir) if p != final]
                for old in existing[: max(0, len(existing) - (limit - 1))]:
                    shutil.rmtree(old)
        acc.wait_for_everyone()
        return final

    def resume(self, checkpoint: Path) -> int:
        """Validate then load a checkpoint; returns its step. Nothing is written."""
        state_file = checkpoint / STATE_FILE
        try:
            state = json.loads(state_file.read_text())
            step = int(state["global_step"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{checkpoint}: unreadable {STATE_FILE} ({exc}); the checkpoint is incomplete or "
                             f"corrupted: resume from an earlier one or delete it") from exc
        info = weights_io.read_model_info(checkpoint, checkpoint=True)  # missing/corrupted safetensors -> ModelError
        if info["concepts"] != self.concepts:
            raise ModelError(f"{checkpoint}: trained concepts {info['concepts']} differ from this run's "
                             f"{self.concepts}; resume with the same data and defect_types")
        try:
            self.accelerator.load_state(str(checkpoint))
        except Exception as exc:
            raise ModelError(f"{checkpoint}: cannot be loaded ({type(exc).__name__}: {exc}); the checkpoint is "
                             f"corrupted or from another config: resume from an earlier one or delete it") from exc
        self.row_guard.restore()
        return step

    # ------------------------------------------------------------------ validation grid
    @torch.no_grad()
    def log_validation(self, step: int) -> np.ndarray:
        """Inpaint the defect masks of a few training crops with the object prompt; log the grid."""
        from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline
        from PIL import Image

        from defectfill.data.images import save_image

        c, m, acc = self.config, self.models, self.accelerator
        unet, text_encoder = _unwrap(m.unet), _unwrap(m.text_encoder)
        unet.eval()
        text_encoder.eval()
        pipe = StableDiffusionInpaintPipeline(
            vae=m.vae, text_encoder=text_encoder, tokenizer=m.tokenizer, unet=unet,
            scheduler=DDIMScheduler.from_config(m.noise_scheduler.config), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        rows = []
        for i in range(c.num_validation_images):
            item = self.dataset[(i % len(self.dataset), -(i + 1))]
            image = ((item["pixel_values"].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
            mask = item["defect_mask"][0].numpy() > 0.5
            defect_type = self.dataset.types[int(item["type_index"])]
            prompt = c.object_prompt.format(token=self.concepts[defect_type], object=c.object_word)
            generator = torch.Generator().manual_seed(c.seed + i)
            with torch.autocast(acc.device.type, dtype=self.weight_dtype, enabled=self.weight_dtype != torch.float32):
                out = pipe(prompt=prompt, image=Image.fromarray(image), mask_image=Image.fromarray(mask.astype(np.uint8) * 255),
                           height=c.resolution, width=c.resolution, num_inference_steps=c.validation_inference_steps,
                           guidance_scale=c.guidance_scale, generator=generator, output_type="np").images[0]
            sample = (out * 255).round().clip(0, 255).astype(np.uint8)
            shown = image.copy()
            shown[mask] = (0.5 * shown[mask] + 0.5 * np.array([255, 0, 0])).astype(np.uint8)
            rows.append(np.concatenate([image, shown, sample], axis=1))
        grid = np.concatenate(rows, axis=0)
        unet.train()
        text_encoder.train()
        if acc.is_main_process:
            save_image(self.output_dir / "samples" / f"step-{step:06d}.png", grid)
            for tracker in acc.trackers:
                if tracker.name == "tensorboard":
                    tracker.writer.add_images("validation", grid[None], step, dataformats="NHWC")
        return grid

    # ------------------------------------------------------------------ the loop
    def batch_generator(self, micro_step: int) -> torch.Generator:
        rank = self.accelerator.process_index
        return torch.Generator().manual_seed(mixed_seed(self.config.seed, 11, micro_step, rank))

    def training_step(self, batch: dict[str, torch.Tensor], micro_step: int) -> StepOutput:
        """Forward + backward (+ optimiser step when the accumulation is complete) of one micro-batch."""
        acc, m, c = self.accelerator, self.models, self.config
        batch = {k: v.to(acc.device) for k, v in batch.items()}
        with acc.accumulate(m.unet, m.text_encoder):
            out = defectfill_step(
                m.unet, m.vae, m.text_encoder, m.noise_scheduler, batch, self.tokens.ids,
                weights=self.loss_weights, object_alpha=c.object_alpha, generator=self.batch_generator(micro_step),
                weight_dtype=self.weight_dtype, backward=acc.backward, step=self.global_step + 1)
            if acc.sync_gradients and c.max_grad_norm > 0:
                acc.clip_grad_norm_(self.params_to_clip, c.max_grad_norm)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            if acc.sync_gradients:
                self.row_guard.restore()  # textual-inversion trick: only the concept rows may change
        self.rescued_masks += int(batch["mask_rescued"].sum())
        return out

    def train(self) -> Path:
        from tqdm.auto import tqdm

        c, acc = self.config, self.accelerator
        checkpoint = resolve_checkpoint(self.output_dir, c.resume_from_checkpoint)
        if checkpoint is not None:
            self.global_step = self.resume(checkpoint)
            logger.info("resumed from %s at step %d", checkpoint, self.global_step)
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            save_config(c, self.output_dir / "config.yaml")
            atomic_write_json(self.output_dir / "scale.json", self.scale_report)
            if acc.trackers == [] and c.report_to != "none":
                acc.init_trackers("defectfill", config={k: v for k, v in to_dict(c).items()
                                                        if isinstance(v, (int, float, str, bool))})
        accum = c.gradient_accumulation_steps
        sampler = StepBatchSampler(len(self.dataset), c.train_batch_size, c.seed, rank=acc.process_index,
                                   world_size=acc.num_processes, start=self.global_step * accum,
                                   stop=c.max_train_steps * accum)
        loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=sampler,
                                             num_workers=c.dataloader_num_workers)
        log = Manifest(self.output_dir / "losses.jsonl", key="step") if acc.is_main_process else None
        total_batch = c.train_batch_size * acc.num_processes * accum
        logger.info("***** Running DefectFill training *****  defect images: %s, concepts: %s, steps: %d, "
                    "batch per process: %d, total batch: %d, accumulation: %d, precision: %s",
                    {t: len(s) for t, s in self.samples.items()}, self.concepts, c.max_train_steps,
                    c.train_batch_size, total_batch, accum, acc.mixed_precision)
        progress = tqdm(total=c.max_train_steps, initial=self.global_step, desc="DefectFill steps",
                        disable=not acc.is_local_main_process)
        micro_step = self.global_step * accum
        first_step = self.global_step
        sums: dict[str, float] = {}
        started = time.perf_counter()
        for batch in loader:
            try:
                out = self.training_step(batch, micro_step)
            except NonFiniteLossError as exc:  # raised before the optimiser step: no checkpoint holds the bad step
                found = list_checkpoints(self.output_dir)
                keep = (f"the last good checkpoint {found[-1]} is kept (resume_from_checkpoint=latest)" if found
                        else "no checkpoint was written yet")
                raise NonFiniteLossError(f"{exc}; {keep}") from exc
            micro_step += 1
            for key, value in out.scalars().items():
                sums[key] = sums.get(key, 0.0) + value / accum
            if not acc.sync_gradients:
                continue
            self.global_step += 1
            logs = {**sums, "lr": self.lr_scheduler.get_last_lr()[0]}
            sums = {}
            progress.update(1)
            progress.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}")
            acc.log(logs, step=self.global_step)
            if log is not None:
                log.append({"step": self.global_step, **logs, "seconds": round(time.perf_counter() - started, 3)})
            if self.global_step % c.checkpointing_steps == 0:
                self.save_checkpoint(self.global_step)
            if c.validation_steps and self.global_step % c.validation_steps == 0:
                self.log_validation(self.global_step)
            if self.global_step >= c.max_train_steps:
                break
        progress.close()
        if self.rescued_masks:
            logger.warning("%d of %d training draws had a mask that the resize to latent size emptied; each kept its "
                           "centroid cell (defectfill.masks.resize_mask keep_nonempty). Per type and what to change: "
                           "the warnings at the start of training and %s", self.rescued_masks,
                           (self.global_step - first_step) * c.train_batch_size * accum,
                           self.output_dir / "scale.json")
        acc.wait_for_everyone()
        if acc.is_main_process:
            self.save_model(self.output_dir)
        acc.wait_for_everyone()
        acc.end_training()
        return self.output_dir


def train_defectfill(config: DefectFillTrainConfig) -> Path:
    """Train DefectFill concepts (one token + LoRA per defect type) on a few defect images.

    Returns `config.output_dir`, a model folder readable by `defectfill.models.weights`.
    """
    from defectfill.locks import output_lock

    with output_lock(config.output_dir, command="train"):  # a second run on the same folder refuses
        return DefectFillTrainer(config).train()


def read_loss_log(output_dir: str | Path) -> list[dict[str, Any]]:
    """The per-step records of `losses.jsonl` (the last record of each step wins after a resume)."""
    records: dict[int, dict[str, Any]] = {}
    for record in Manifest(Path(output_dir) / "losses.jsonl", key="step"):
        records[int(record["step"])] = record
    return [records[k] for k in sorted(records)]


__all__ = [
    "DefectFillTrainer",
    "list_checkpoints",
    "load_models_state",
    "read_loss_log",
    "resolve_checkpoint",
    "train_defectfill",
]
