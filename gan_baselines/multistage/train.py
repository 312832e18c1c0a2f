"""Multistage GAN training: stage 1 (texture-conditioned cGAN) for `stage1_steps`, then stage 2
(defect-fusing network T, stage-1 G frozen) for `stage2_steps`; one global step counter, so a run
resumes into the right stage.

Stage-1 data: p = the real defect patch (the square box around the defect mask, resized to
patch_size), Gφ = the Gram matrices of the window's fabric outside that box.
Stage-2 data: x = the real window y with the box replaced by a fresh stage-1 patch drawn for y's own
texture (hard seams), target y. Losses in `gan_baselines.multistage.losses`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from defectfill.data.sample import DefectSample
from gan_baselines.data import DefectWindows
from gan_baselines.multistage.config import MultistageConfig
from gan_baselines.multistage.losses import cgan_d_loss, cgan_g_loss, fusion_loss
from gan_baselines.multistage.model import MultistageGAN, box_masks, crop_patches, patch_boxes
from gan_baselines.training import (
    GanTrainer,
    TrainLog,
    batch_diversity,
    repeat_row,
    step_generator,
    warn_if_collapsed,
    write_sample_grid,
)

_VALIDATION_STEP = 2**31 - 1


def build_multistage(config: MultistageConfig, defect_types: list[str]) -> tuple[MultistageGAN, str]:
    """A fresh model with its VGG weights set as the config says; returns (model, VGG name for results)."""
    config.model.defect_types = list(defect_types)
    torch.manual_seed(config.seed)
    model = MultistageGAN(config.model)
    vgg_name = model.vgg.load_weights(config.model.vgg_weights, config.model.vgg_seed)
    return model, vgg_name


class MultistageTrainer(GanTrainer):
    method = "multistage"
    desc = "multistage steps"

    def __init__(self, config: MultistageConfig, samples: Sequence[DefectSample], output_dir: str | Path,
                 resume_from_checkpoint: str | None = None):
        c = config
        self.data = DefectWindows.from_samples(samples, c.model.resolution, c.train_batch_size,
                                               c.model.defect_types or None)
        self.model, self.vgg_name = build_multistage(c, self.data.defect_types)
        m = self.model

        def adam(module: torch.nn.Module) -> torch.optim.Adam:
            return torch.optim.Adam(module.parameters(), lr=c.learning_rate, betas=(c.adam_beta1, c.adam_beta2))

        self.optimizers = {"g": adam(m.generator), "d_s": adam(m.patch_discriminator), "t": adam(m.fusion),
                           "d_t": adam(m.fusion_discriminator)}
        self._setup(config, output_dir, resume_from_checkpoint)

    def _batch(self, rng: torch.Generator):
        images, masks, types = self.data.batch(self.config.train_batch_size, rng)
        return images.to(self.device), masks.to(self.device), types.to(self.device)

    def train_step(self, step: int) -> dict[str, float]:
        rng = step_generator(self.config.seed, step)
        if step < self.config.stage1_steps:
            return self._stage1_step(step, rng)
        return self._stage2_step(step, rng)

    def _stage1_step(self, step: int, rng: torch.Generator) -> dict[str, float]:
        c, m, opt = self.config, self.unwrapped, self.optimizers
        real, mask, types = self._batch(rng)
        boxes = patch_boxes(mask)
        patches = crop_patches(real, boxes, c.model.patch_size)
        grams = m.texture_grams(real, box_masks(boxes, real))
        noise = torch.randn(len(types), c.model.noise_dim, generator=rng).to(self.device)
        fake = m.generator(noise, grams, types)
        d_loss = cgan_d_loss(m.patch_discriminator(patches, grams, types),
                             m.patch_discriminator(fake.detach(), grams, types))
        self.update(opt["d_s"], d_loss, step, {"d_s_loss": d_loss})
        m.patch_discriminator.requires_grad_(False)
        g_loss = cgan_g_loss(m.patch_discriminator(fake, grams, types))
        m.patch_discriminator.requires_grad_(True)
        self.update(opt["g"], g_loss, step, {"g_loss": g_loss})
        return {"loss/d_s": float(d_loss.detach()), "loss/g": float(g_loss.detach())}

    def _stage2_step(self, step: int, rng: torch.Generator) -> dict[str, float]:
        c, m, opt = self.config, self.unwrapped, self.optimizers
        real, mask, types = self._batch(rng)
        with torch.no_grad():
            composite, box, _ = m.compose(real, mask, types, rng)
        output = m.fusion(composite, box)
        d_loss = cgan_d_loss(m.fusion_discriminator(real), m.fusion_discriminator(output.detach()))
        self.update(opt["d_t"], d_loss, step, {"d_t_loss": d_loss})
        m.fusion_discriminator.requires_grad_(False)
        with torch.no_grad():
            target_features = m.vgg(real)
        t_loss, terms = fusion_loss(real, output, m.fusion_discriminator(output), target_features, m.vgg(output),
                                    c.model.perceptual_layers, c.hinge_margin, c.lambda_hinge, c.lambda_perceptual,
                                    c.lambda_adversarial)
        m.fusion_discriminator.requires_grad_(True)
        self.update(opt["t"], t_loss, step, {"t_loss": t_loss, **terms})
        return {"loss/d_t": float(d_loss.detach()), "loss/t": float(t_loss.detach()),
                **{f"loss/{k}": float(v.detach()) for k, v in terms.items()}}

    @torch.no_grad()
    def validate(self, step: int, log: TrainLog | None = None, num_windows: int = 4, num_noise: int = 4) -> dict[str, float]:
        """Sample grid (real window, then the composites: stage-1 patches pasted, after T from stage 2 on)
        and the diversity of the stage-1 patches for one texture and different noises."""
        m = self.unwrapped
        rng = step_generator(self.config.seed, _VALIDATION_STEP)
        real, mask, types = self.data.batch(max(num_windows, 2), rng)
        real, mask, types = real.to(self.device), mask.to(self.device), types.to(self.device)
        stage2 = step > self.config.stage1_steps
        rows, fake_div = [], []
        for i in range(num_windows):
            same = [repeat_row(x, i, num_noise) for x in (real, mask, types)]
            composite, box, patches = m.compose(*same, rng)
            fake_div.append(batch_diversity(patches))
            shown = m.fusion(composite, box) if stage2 else composite
            rows.append((real[i], shown, mask[i], self.data.defect_types[int(types[i])]))
        real_patches = crop_patches(real, patch_boxes(mask), self.config.model.patch_size)
        values = {"diversity/fake_same_condition": sum(fake_div) / len(fake_div),
                  "diversity/real": batch_diversity(real_patches)}
        warn_if_collapsed(values["diversity/fake_same_condition"], values["diversity/real"], self.config.collapse_ratio, step)
        write_sample_grid(self.output_dir, step, rows, log)
        if log is not None:
            log.scalars(values, step)
        return values


def train_multistage(config: MultistageConfig, samples: Sequence[DefectSample], output_dir: str | Path,
                     resume_from_checkpoint: str | None = "latest") -> MultistageGAN:
    """Train (or resume) both stages and return the trained model."""
    trainer = MultistageTrainer(config, samples, output_dir, resume_from_checkpoint)
    trainer.train()
    return trainer.unwrapped.eval()
