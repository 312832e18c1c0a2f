"""Train DGT + DIS + DFC jointly through the shared GAN loop (`gan_baselines.training.GanTrainer`),
then fit DFC's Weibull models; the library side of `defectfill train --generator dgt`,
`train_scripts/train_dgt.py` and the `dgt` generator plug-in.

Per step (all randomness from `step_generator(seed, step)`): a batch of real defect crops and good
crops, one update of G + DIS + DFC on L (`model.dgt_losses`, optimizer "main"), then one of D_adv
(optimizer "disc"). The finished `<output_dir>/model/` holds the weights (PyTorchModelHubMixin:
config.json + model.safetensors) and the fitted Weibulls (openset.json + openset.safetensors),
written together, atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from defectfill.data.sample import DefectSample
from gan_baselines.data import FewShotBatches, few_shot_batches, to_tensor_images
from gan_baselines.dgt.config import DGTConfig
from gan_baselines.dgt.model import DGT, dgt_losses, dgt_optimizers
from gan_baselines.dgt.openset import WeibullOpenSet, choose_threshold
from gan_baselines.networks import discriminator_loss
from gan_baselines.plugin_support import check_same_types, model_is_complete
from gan_baselines.training import (
    GanTrainer,
    TrainLog,
    batch_diversity,
    step_generator,
    warn_if_collapsed,
    write_sample_grid,
)

_FIT_STEP = 10**9              # the RNG key of the Weibull fit set (no training step uses it)
_VALIDATION_STEP = 2**31 - 1   # the fixed validation batch's RNG key


class DGTTrainer(GanTrainer):
    """One DGT run: `train()` runs to `max_train_steps`, then writes the model and its Weibulls."""

    method = "dgt"
    desc = "DGT steps"

    def __init__(self, config: DGTConfig, samples: Sequence[DefectSample], output_dir: str | Path,
                 resume_from_checkpoint: str | None = None, good_images: Sequence[np.ndarray] | None = None):
        c = config
        self.data = few_shot_batches(c.model, samples, good_images)
        torch.manual_seed(c.seed)  # the initial weights
        self.model = DGT.from_config(c.model)
        self.optimizers = dgt_optimizers(self.model, c.learning_rate, (c.adam_beta1, c.adam_beta2),
                                         c.classifier_lr_scale)
        self.openset: WeibullOpenSet | None = None
        self._setup(config, output_dir, resume_from_checkpoint)

    def train_step(self, step: int) -> dict[str, float]:
        c, m = self.config, self.unwrapped
        m.train()
        rng = step_generator(c.seed, step)
        batch = {k: v.to(self.device) for k, v in self.data.sample(c.train_batch_size, rng).items()}
        total, terms, x_fake = dgt_losses(m, batch, rng, c.loss)
        self.update(self.optimizers["main"], total, step, {"total": total, **terms})
        cond = m.condition(batch["mask"], batch["label"])
        d_loss = discriminator_loss(m.discriminator(torch.cat([batch["defect"], cond], 1)),
                                    m.discriminator(torch.cat([x_fake.detach(), cond], 1)))
        self.update(self.optimizers["disc"], d_loss, step, {"disc": d_loss})
        return {"loss/total": float(total.detach()), "loss/disc": float(d_loss.detach()),
                **{f"loss/{k}": float(v.detach()) for k, v in terms.items()}}

    @torch.no_grad()
    def validate(self, step: int, log: TrainLog | None = None, num_windows: int = 4,
                 num_noise: int = 4) -> dict[str, float]:
        """Sample grid (a real defect crop, then G's defects of its type and mask painted into good
        crops under `num_noise` draws of the codes) and the batch-diversity check."""
        m = self.unwrapped.eval()
        rng = step_generator(self.config.seed, _VALIDATION_STEP)
        batch = {k: v.to(self.device) for k, v in self.data.sample(max(num_windows, 2), rng).items()}
        rows, fake_div = [], []
        for i in range(num_windows):
            mask = batch["mask"][i : i + 1].expand(num_noise, -1, -1, -1)
            label = batch["label"][i : i + 1].expand(num_noise)
            fakes = m.generate(batch["good"][i : i + 1].expand(num_noise, -1, -1, -1), *m.codes(mask, label, rng))
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

    def save_model(self, folder: Path) -> None:
        """The weights and, beside them, the Weibulls fitted on the trained DFC."""
        model = self.unwrapped.eval()
        model.save_pretrained(folder)
        self.openset = fit_openset(model, self.data, self.config)
        self.openset.save(folder)


def train_dgt(config: DGTConfig, samples: Sequence[DefectSample], output_dir: str | Path,
              good_images: Sequence[np.ndarray] | None = None,
              resume_from_checkpoint: str | None = "latest") -> tuple[DGT, WeibullOpenSet]:
    """Train (resuming from `<output_dir>/checkpoints`), or load a finished `<output_dir>/model`
    (refitting the Weibulls when they are missing); returns (model in eval mode, open-set layer)."""
    folder = Path(output_dir) / "model"
    if model_is_complete(folder):
        model = DGT.from_pretrained(str(folder)).to(config.device).eval()
        check_same_types(model, config.model.defect_types, folder)
        if (folder / "openset.json").is_file():
            return model, WeibullOpenSet.load(folder)
        config.model.defect_types = list(model.defect_types)
        openset = fit_openset(model, few_shot_batches(config.model, samples, good_images), config)
        openset.save(folder)
        return model, openset
    trainer = DGTTrainer(config, samples, output_dir, resume_from_checkpoint, good_images)
    trainer.train()
    return trainer.unwrapped.eval(), trainer.openset


@torch.no_grad()
def fit_set(model: DGT, batches: FewShotBatches, fakes_per_type: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DFC logits and labels of every real defect crop plus `fakes_per_type` generated defects per
    known type (good crops, real masks of that type, fresh stochastic codes)."""
    model.eval()
    device = next(model.parameters()).device
    generator = step_generator(seed, _FIT_STEP)
    logits, labels = [], []
    for index in range(len(batches.defects)):
        image, mask, label = batches.defect_crop(index, generator)
        region = torch.from_numpy(mask.astype(np.float32))[None, None]
        logits.append(model.classify(to_tensor_images(image[None]).to(device), region.to(device)).cpu())
        labels.append(label)
    for label in range(model.num_classes):
        if fakes_per_type <= 0:
            break
        own = [i for i, d in enumerate(batches.defects) if d[2] == label]
        if not own:
            continue
        picks = torch.randint(0, len(own), (fakes_per_type,), generator=generator).tolist()
        crops = [batches.defect_crop(own[i], generator) for i in picks]
        mask = torch.stack([torch.from_numpy(np.ascontiguousarray(c[1])).float()[None] for c in crops])
        flips = torch.rand(fakes_per_type, 2, generator=generator) < 0.5  # vary the masks a little
        mask = torch.stack([m.flip(-1) if f[0] else m for m, f in zip(mask, flips)])
        mask = torch.stack([m.flip(-2) if f[1] else m for m, f in zip(mask, flips)])
        y = torch.full((fakes_per_type,), label, dtype=torch.long)
        goods = torch.randint(0, len(batches.good), (fakes_per_type,), generator=generator).tolist()
        good = to_tensor_images(np.stack([batches.good_crop(i, generator) for i in goods]))
        fore, back = model.codes(mask, y, generator)
        fake = model.generate(good.to(device), fore.to(device), back.to(device))
        logits.append(model.classify(fake, mask.to(device)).cpu())
        labels += [label] * fakes_per_type
    return torch.cat(logits), torch.tensor(labels, dtype=torch.long)


def fit_openset(model: DGT, batches: FewShotBatches, config: DGTConfig) -> WeibullOpenSet:
    """Weibulls on the fit set; threshold = the unknown score accepting 95 % of the fit set (no
    validation data in training; the leave-one-type-out study chooses it on validation data)."""
    logits, labels = fit_set(model, batches, config.openmax.fakes_per_type, config.seed)
    openset = WeibullOpenSet(config.openmax).fit(logits, labels)
    openset.threshold = choose_threshold(openset.unknown_score(logits))
    return openset
