"""Train the ICPR'20 conditional pix2pix through the shared GAN loop (`gan_baselines.training.GanTrainer`);
the library side of `defectfill train --generator icpr20`, `train_scripts/train_icpr20.py` and the
`icpr20` generator plug-in.

Per step (all randomness from `step_generator(seed, step)`): a batch of real defect crops (flipped
when `augment`), one G update on L_G (optimizer "gen"), one D update on L_D (optimizer "disc").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from defectfill.data.sample import DefectSample
from gan_baselines.data import few_shot_batches
from gan_baselines.icpr20.config import ICPR20Config
from gan_baselines.icpr20.model import ICPR20, flip_pairs, icpr20_losses, icpr20_optimizers
from gan_baselines.networks import discriminator_loss
from gan_baselines.plugin_support import check_same_types, model_is_complete
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


class ICPR20Trainer(GanTrainer):
    """One ICPR'20 run: `train()` runs to `max_train_steps` and writes `<output_dir>/model`."""

    method = "icpr20"
    desc = "ICPR'20 steps"

    def __init__(self, config: ICPR20Config, samples: Sequence[DefectSample], output_dir: str | Path,
                 resume_from_checkpoint: str | None = None, good_images: Sequence[np.ndarray] | None = None):
        c = config
        self.data = few_shot_batches(c.model, samples, good_images or [], need_good=False)  # trains on defects only
        torch.manual_seed(c.seed)
        self.model = ICPR20.from_config(c.model)
        self.optimizers = icpr20_optimizers(self.model, c.learning_rate, (c.adam_beta1, c.adam_beta2))
        self._setup(config, output_dir, resume_from_checkpoint)

    def train_step(self, step: int) -> dict[str, float]:
        c, m = self.config, self.unwrapped
        m.train()
        rng = step_generator(c.seed, step)
        batch = self.data.sample(c.train_batch_size, rng)
        if c.augment:
            batch = flip_pairs(batch, rng)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        loss_g, terms, x, cond = icpr20_losses(m, batch, rng, c.l1_weight)
        self.update(self.optimizers["gen"], loss_g, step, {"generator": loss_g, **terms})
        loss_d = discriminator_loss(m.discriminator(torch.cat([cond, batch["defect"]], 1)),
                                    m.discriminator(torch.cat([cond, x.detach()], 1)))
        self.update(self.optimizers["disc"], loss_d, step, {"disc": loss_d})
        return {"loss/generator": float(loss_g.detach()), "loss/disc": float(loss_d.detach()),
                **{f"loss/{k}": float(v.detach()) for k, v in terms.items()}}

    @torch.no_grad()
    def validate(self, step: int, log: TrainLog | None = None, num_windows: int = 4,
                 num_noise: int = 4) -> dict[str, float]:
        """Sample grid (a real defect crop, then G's fills of its mask for `num_noise` noises) and the
        batch-diversity check."""
        m = self.unwrapped.eval()
        rng = step_generator(self.config.seed, _VALIDATION_STEP)
        batch = {k: v.to(self.device) for k, v in self.data.sample(max(num_windows, 2), rng).items()}
        rows, fake_div = [], []
        for i in range(num_windows):
            real, mask, label = (repeat_row(batch[k], i, num_noise) for k in ("defect", "mask", "label"))
            fakes = m(real, mask, label, rng)
            fake_div.append(batch_diversity(fakes, mask))
            rows.append((batch["defect"][i], fakes, batch["mask"][i], m.defect_types[int(label[0])]))
        values = {"diversity/fake_same_condition": sum(fake_div) / len(fake_div),
                  "diversity/real": batch_diversity(batch["defect"], batch["mask"])}
        warn_if_collapsed(values["diversity/fake_same_condition"], values["diversity/real"],
                          self.config.collapse_ratio, step)
        write_sample_grid(self.output_dir, step, rows, log)
        if log is not None:
            log.scalars(values, step)
        return values


def train_icpr20(config: ICPR20Config, samples: Sequence[DefectSample], output_dir: str | Path,
                 resume_from_checkpoint: str | None = "latest") -> ICPR20:
    """Train (resuming from `<output_dir>/checkpoints`) or load a finished `<output_dir>/model`."""
    folder = Path(output_dir) / "model"
    if model_is_complete(folder):
        model = ICPR20.from_pretrained(str(folder)).to(config.device).eval()
        check_same_types(model, config.model.defect_types, folder)
        return model
    trainer = ICPR20Trainer(config, samples, output_dir, resume_from_checkpoint)
    trainer.train()
    return trainer.unwrapped.eval()
