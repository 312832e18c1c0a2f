"""The `icpr20` generator plug-in: the conditional pix2pix writing a defect into a mask.

Registered as `"icpr20": "gan_baselines.icpr20.plugin:PLUGIN"`; options `{config:
configs/icpr20_tiny.yaml, overrides: {...}}` (`GanOptions`, as R3GAN's). `build` trains on the context's
source defects (cached in `ctx.work_dir/model`, resumable from `ctx.work_dir/checkpoints`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from defectfill.distributed import resolve_device
from defectfill.generators.context import GeneratorContext
from defectfill.generators.registry import GeneratorPlugin
from defectfill.generators.shared import WindowedGenerator
from gan_baselines.data import to_tensor_images, to_uint8_images
from gan_baselines.icpr20.config import ICPR20Config
from gan_baselines.icpr20.model import ICPR20
from gan_baselines.plugin_support import (
    GanOptions,
    config_check,
    model_folder,
    model_is_complete,
    train_for_context,
)

DEFAULT_CONFIG = "configs/icpr20_tiny.yaml"


class ICPR20Generator(WindowedGenerator):
    """ICPR'20 as a `DefectGenerator`: the window blanked inside the mask, filled by the U-Net."""

    name = "icpr20"

    def __init__(self, model: ICPR20, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.device = device
        self.resolution = model.resolution
        self.size_multiple = 2 ** model.generator.depth

    @property
    def defect_types(self) -> list[str]:
        return list(self.model.defect_types)

    @torch.no_grad()
    def fill(self, window: np.ndarray, mask: np.ndarray, *, num_candidates: int, defect_type: str,
             rng: torch.Generator) -> np.ndarray:
        k = num_candidates
        image = to_tensor_images(window[None]).repeat(k, 1, 1, 1).to(self.device)
        m = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None].repeat(k, 1, 1, 1).to(self.device)
        labels = torch.full((k,), self.model.defect_types.index(defect_type), dtype=torch.long, device=self.device)
        return to_uint8_images(self.model(image, m, labels, rng))


def load(path: Path, options: GanOptions | None = None, device: str = "cpu") -> ICPR20Generator:
    """A trained model folder (`<work_dir>/model`, or the work_dir holding it)."""
    folder = model_folder(path)
    return ICPR20Generator(ICPR20.from_pretrained(str(folder)), resolve_device(device))


def build(ctx: GeneratorContext) -> ICPR20Generator:
    """Train on the source defects (or load the finished work_dir)."""
    from gan_baselines.icpr20.train import ICPR20Trainer

    if model_is_complete(ctx.work_dir / "model"):
        return load(ctx.work_dir / "model", ctx.options, ctx.device)
    model, trainer = train_for_context(ctx, ICPR20Config, ICPR20Trainer, DEFAULT_CONFIG)
    c = trainer.config
    ctx.notes.append(f"icpr20: trained {trainer.step} steps at {c.model.resolution} px, batch {c.train_batch_size} "
                     f"({trainer.cpu_seconds / 60:.1f} CPU-min this run)")
    return ICPR20Generator(model, resolve_device(ctx.device))


PLUGIN = GeneratorPlugin(build=build, options=GanOptions, load=load, check=config_check(ICPR20Config, DEFAULT_CONFIG),
                         help="ICPR'20 reading: mask- and class-conditioned pix2pix (U-Net + PatchGAN, L1 + "
                              "adversarial); configs/icpr20_tiny.yaml")
