"""Train the ICPR'20 conditional pix2pix (the library side of `train_scripts/train_icpr20.py` and of
the `icpr20` generator plug-in)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from defectfill.data.sample import DefectSample
from gan_baselines.fewshot_training import (
    MODEL_DIR,
    FewShotBatches,
    check_same_types,
    model_is_complete,
    train_loop,
)
from gan_baselines.icpr20.config import ICPR20Config
from gan_baselines.icpr20.model import ICPR20, icpr20_optimizers, icpr20_step_fn


def train_icpr20(config: ICPR20Config, defects: Sequence[DefectSample], good_images: Sequence[np.ndarray],
                 defect_types: Sequence[str], output_dir: str | Path, device: str = "cpu") -> ICPR20:
    """Train (or load a finished `<output_dir>/model`)."""
    output_dir = Path(output_dir)
    folder = output_dir / MODEL_DIR
    if model_is_complete(folder):
        model = ICPR20.from_pretrained(str(folder)).to(device).eval()
        check_same_types(model, defect_types, folder)
        return model
    args = config.train
    batches = FewShotBatches(defects, good_images, defect_types, args.resolution)
    torch.manual_seed(args.seed)
    m = config.model
    model = ICPR20(list(defect_types), args.resolution, m.base_channels, m.depth, m.discriminator_channels).to(device)
    optimizers = icpr20_optimizers(model, args.learning_rate, (args.adam_beta1, args.adam_beta2))
    step = icpr20_step_fn(batches, args.train_batch_size, config.l1_weight, config.augment)
    return train_loop(model, optimizers, step, args, output_dir, desc="icpr20", device=device)
