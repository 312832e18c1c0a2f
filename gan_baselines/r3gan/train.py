"""R3GAN training loop: one D step then one G step per iteration, each on a fresh real batch.

Per iteration n (images seen = step · batch), every hyper-parameter follows its cosine schedule:
lr, Adam β2 (β1 = 0, eps 1e-8), γ, the EMA half-life of G and the D-augmentation probability.

    D:  L_D = E[f(−(D(aug(x_r)) − D(aug(x̂))))] + γ/2·(R1 + R2)   (x̂ = m ⊙ G(...) + (1 − m) ⊙ x_r)
    G:  L_G = E[f(−(D(aug(x̂)) − D(aug(x_r))))]
    G_ema ← β·G_ema + (1 − β)·G,  β = 0.5^(batch / half-life in images)

With `lazy_reg_every = k > 1` R1/R2 are computed every k-th D step with weight k·γ/2 (faster, but
it voids the paper's convergence guarantee). Checkpoints every `checkpointing_steps`, resumable
exactly (`resume_from_checkpoint="latest"`); a NaN/inf loss stops with the step number, keeping the
last good checkpoint; sample grids and the batch-diversity (mode collapse) check every
`validation_steps`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from defectfill.data.sample import DefectSample
from gan_baselines.data import DefectWindows, augment_pairs
from gan_baselines.r3gan.config import R3GANConfig
from gan_baselines.r3gan.losses import discriminator_loss, rpgan_g_loss
from gan_baselines.r3gan.model import R3GAN, composite
from gan_baselines.training import (
    GanTrainer,
    TrainLog,
    batch_diversity,
    cosine_schedule,
    repeat_row,
    step_generator,
    warn_if_collapsed,
    write_sample_grid,
)

_VALIDATION_STEP = 2**31 - 1  # the fixed validation batch's RNG key (no training step has it)


class R3GANTrainer(GanTrainer):
    """Holds the model, optimizers and data of one run; `train()` runs until `max_train_steps`."""

    method = "r3gan"
    desc = "R3GAN steps"

    def __init__(self, config: R3GANConfig, samples: Sequence[DefectSample], output_dir: str | Path,
                 resume_from_checkpoint: str | None = None):
        c = config
        self.data = DefectWindows.from_samples(samples, c.model.resolution, c.train_batch_size,
                                               c.model.defect_types or None)
        c.model.defect_types = list(self.data.defect_types)
        torch.manual_seed(c.seed)  # the initial weights
        self.model = R3GAN(c.model)
        betas = (0.0, c.beta2_start)
        self.optimizers = {"g": torch.optim.Adam(self.model.generator.parameters(), lr=c.lr_start, betas=betas, eps=1e-8),
                           "d": torch.optim.Adam(self.model.discriminator.parameters(), lr=c.lr_start, betas=betas,
                                                 eps=1e-8)}
        self._setup(config, output_dir, resume_from_checkpoint)

    def schedules(self, step: int) -> dict[str, float]:
        c, n = self.config, step * self.config.train_batch_size
        return {name: cosine_schedule(n, c.schedule_images, getattr(c, f"{name}_start"), getattr(c, f"{name}_end"))
                for name in ("lr", "beta2", "gamma", "ema_halflife_images", "aug_p")}

    def _batch(self, rng: torch.Generator):
        images, masks, types = self.data.batch(self.config.train_batch_size, rng)
        return images.to(self.device), masks.to(self.device), types.to(self.device)

    def _noise(self, rng: torch.Generator) -> torch.Tensor:
        return torch.randn(self.config.train_batch_size, self.config.model.noise_dim, generator=rng).to(self.device)

    def train_step(self, step: int) -> dict[str, float]:
        """One D step and one G step; returns the logged values."""
        c, m = self.config, self.unwrapped
        opt_g, opt_d = self.optimizers["g"], self.optimizers["d"]
        s = self.schedules(step)
        rng = step_generator(c.seed, step)
        for opt in (opt_g, opt_d):
            for group in opt.param_groups:
                group["lr"], group["betas"] = s["lr"], (0.0, s["beta2"])
        regularise = step % c.lazy_reg_every == 0
        gamma = s["gamma"] * c.lazy_reg_every if regularise else 0.0

        # D step: real vs composited fake, penalties on the un-augmented inputs
        real, mask, types = self._batch(rng)
        with torch.no_grad():
            fake = composite(m.generator(real, mask, self._noise(rng), types), real, mask)
        real.requires_grad_(regularise)
        fake.requires_grad_(regularise)
        d_real = m.discriminator(*augment_pairs(real, mask, s["aug_p"], rng), types)
        d_fake = m.discriminator(*augment_pairs(fake, mask, s["aug_p"], rng), types)
        d_loss, terms = discriminator_loss(d_real, d_fake, real, fake, gamma)
        self.update(opt_d, d_loss, step, {"d_loss": d_loss, **terms})

        # G step on a fresh real batch
        real, mask, types = self._batch(rng)
        fake = composite(m.generator(real, mask, self._noise(rng), types), real, mask)
        m.discriminator.requires_grad_(False)
        d_real = m.discriminator(*augment_pairs(real, mask, s["aug_p"], rng), types)
        d_fake = m.discriminator(*augment_pairs(fake, mask, s["aug_p"], rng), types)
        g_loss = rpgan_g_loss(d_real, d_fake)
        m.discriminator.requires_grad_(True)
        self.update(opt_g, g_loss, step, {"g_loss": g_loss})

        beta = 0.5 ** (c.train_batch_size / s["ema_halflife_images"]) if s["ema_halflife_images"] > 0 else 0.0
        with torch.no_grad():
            for p_ema, p in zip(m.generator_ema.parameters(), m.generator.parameters()):
                p_ema.lerp_(p, 1.0 - beta)
        return {"loss/d": float(d_loss.detach()), "loss/g": float(g_loss.detach()),
                **{f"loss/{k}": float(v.detach()) for k, v in terms.items() if k != "d_adv"},
                **{f"schedule/{k}": v for k, v in s.items()}, "schedule/ema_beta": beta}

    @torch.no_grad()
    def validate(self, step: int, log: TrainLog | None = None, num_windows: int = 4, num_noise: int = 4) -> dict[str, float]:
        """Sample grid (a real window, then G_ema's fills for `num_noise` noises) and the diversity check."""
        m = self.unwrapped
        rng = step_generator(self.config.seed, _VALIDATION_STEP)
        real, mask, types = self.data.batch(max(num_windows, 2), rng)
        real, mask, types = real.to(self.device), mask.to(self.device), types.to(self.device)
        rows, fake_div = [], []
        for i in range(num_windows):
            same = [repeat_row(x, i, num_noise) for x in (real, mask, types)]
            fakes = m.sample(*same, rng)
            fake_div.append(batch_diversity(fakes, same[1]))
            rows.append((real[i], fakes, mask[i], self.data.defect_types[int(types[i])]))
        values = {"diversity/fake_same_condition": sum(fake_div) / len(fake_div), "diversity/real": batch_diversity(real, mask)}
        warn_if_collapsed(values["diversity/fake_same_condition"], values["diversity/real"], self.config.collapse_ratio, step)
        write_sample_grid(self.output_dir, step, rows, log)
        if log is not None:
            log.scalars(values, step)
        return values


def train_r3gan(config: R3GANConfig, samples: Sequence[DefectSample], output_dir: str | Path,
                resume_from_checkpoint: str | None = "latest") -> R3GAN:
    """Train (or resume) and return the trained model (its EMA generator is what `fill` uses)."""
    trainer = R3GANTrainer(config, samples, output_dir, resume_from_checkpoint)
    trainer.train()
    return trainer.accelerator.unwrap_model(trainer.model).eval()
