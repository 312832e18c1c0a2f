"""Train DGT + DIS + DFC jointly, then fit DFC's Weibull models (the library side of
`train_scripts/train_dgt.py` and of the `dgt` generator plug-in)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from defectfill.data.sample import DefectSample
from gan_baselines.dgt.config import DGTConfig
from gan_baselines.dgt.model import DGT, dgt_optimizers, dgt_step_fn
from gan_baselines.dgt.openset import WeibullOpenSet, choose_threshold
from gan_baselines.fewshot_training import (
    MODEL_DIR,
    FewShotBatches,
    check_same_types,
    model_is_complete,
    step_generator,
    to_tensor,
    train_loop,
)


def train_dgt(config: DGTConfig, defects: Sequence[DefectSample], good_images: Sequence[np.ndarray],
              defect_types: Sequence[str], output_dir: str | Path, device: str = "cpu") -> tuple[DGT, WeibullOpenSet]:
    """Train (or load a finished `<output_dir>/model`) and fit the open-set layer."""
    output_dir = Path(output_dir)
    args = config.train
    batches = FewShotBatches(defects, good_images, defect_types, args.resolution)
    folder = output_dir / MODEL_DIR
    if model_is_complete(folder):
        model = DGT.from_pretrained(str(folder)).to(device).eval()
        check_same_types(model, defect_types, folder)
        if (folder / "openset.json").is_file():
            return model, WeibullOpenSet.load(folder)
    else:  # train (resuming from <output_dir>/checkpoints when there are some)
        torch.manual_seed(args.seed)
        model = DGT.from_config(list(defect_types), args.resolution, config.model).to(device)
        optimizers = dgt_optimizers(model, args.learning_rate, (args.adam_beta1, args.adam_beta2),
                                    config.model.classifier_lr_scale)
        model = train_loop(model, optimizers, dgt_step_fn(batches, args.train_batch_size, config.loss), args,
                           output_dir, desc="dgt", device=device)
    openset = fit_openset(model, batches, config, seed=args.seed)
    openset.save(folder)
    return model, openset


@torch.no_grad()
def fit_set(model: DGT, batches: FewShotBatches, fakes_per_type: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DFC logits and labels of every real defect crop plus `fakes_per_type` generated defects per
    known type (good crops, real masks of that type, fresh stochastic codes)."""
    model.eval()
    generator = step_generator(seed, 10**9)  # a stream no training step uses
    logits, labels = [], []
    for index in range(len(batches.defects)):
        image, mask, label = batches.defect_crop(index, generator)
        region = torch.from_numpy(mask.astype(np.float32))[None, None]
        logits.append(model.classify(to_tensor(image)[None], region))
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
        good = torch.stack([to_tensor(batches.good_crop(i, generator)) for i in goods])
        fore, back = model.codes(mask, y, generator)
        fake = model.generate(good, fore, back)
        logits.append(model.classify(fake, mask))
        labels += [label] * fakes_per_type
    return torch.cat(logits), torch.tensor(labels, dtype=torch.long)


def fit_openset(model: DGT, batches: FewShotBatches, config: DGTConfig, seed: int = 0) -> WeibullOpenSet:
    """Weibulls on the fit set; threshold = the unknown score accepting 95 % of the fit set (no
    validation data in the plug-in; the leave-one-type-out study chooses it on validation data)."""
    logits, labels = fit_set(model, batches, config.openmax.fakes_per_type, seed)
    openset = WeibullOpenSet(config.openmax).fit(logits, labels)
    openset.threshold = choose_threshold(openset.unknown_score(logits))
    return openset
