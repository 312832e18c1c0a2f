"""The `dgt` generator plug-in: DGT's generator G painting a defect of a known type into a mask.

Registered as `"dgt": "gan_baselines.dgt.plugin:PLUGIN"`; options `{config: configs/dgt_tiny.yaml,
overrides: {...}}` (`GanOptions`, as R3GAN's). `build` trains DGT + DIS + DFC on the context's source
defects and target good images (cached in `ctx.work_dir/model`, resumable from
`ctx.work_dir/checkpoints`), fits DFC's Weibulls, and returns a `DGTGenerator`; the trained DIS +
DFC + Weibulls are on it as `.model` / `.openset` for `detect_defects`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from defectfill.data.images import load_image
from defectfill.distributed import resolve_device
from defectfill.generators.context import GeneratorContext
from defectfill.generators.registry import GeneratorPlugin
from defectfill.generators.shared import WindowedGenerator
from gan_baselines.data import defect_free_backgrounds, to_tensor_images, to_uint8_images
from gan_baselines.dgt.config import DGTConfig
from gan_baselines.dgt.model import DGT
from gan_baselines.dgt.openset import WeibullOpenSet
from gan_baselines.plugin_support import (
    GanOptions,
    config_check,
    model_folder,
    model_is_complete,
    train_for_context,
)

DEFAULT_CONFIG = "configs/dgt_tiny.yaml"


class DGTGenerator(WindowedGenerator):
    """DGT's G as a `DefectGenerator`: [Ẽ_fore, Ẽ_back, N] -> X_fake inside a window around the mask."""

    name = "dgt"

    def __init__(self, model: DGT, openset: WeibullOpenSet | None = None, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.openset = openset
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
        good = to_tensor_images(window[None]).repeat(k, 1, 1, 1)
        m = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None].repeat(k, 1, 1, 1)
        labels = torch.full((k,), self.model.defect_types.index(defect_type), dtype=torch.long)
        fore, back = self.model.codes(m, labels, rng)
        out = self.model.generate(good.to(self.device), fore.to(self.device), back.to(self.device))
        return to_uint8_images(out)


def load(path: Path, options: GanOptions | None = None, device: str = "cpu") -> DGTGenerator:
    """A trained model folder (`<work_dir>/model`, or the work_dir holding it)."""
    folder = model_folder(path)
    openset = WeibullOpenSet.load(folder) if (folder / "openset.json").is_file() else None
    return DGTGenerator(DGT.from_pretrained(str(folder)), openset, resolve_device(device))


def build(ctx: GeneratorContext) -> DGTGenerator:
    """Train on the source defects and the target's good images (or load the finished work_dir)."""
    from gan_baselines.dgt.train import DGTTrainer

    if model_is_complete(ctx.work_dir / "model"):
        return load(ctx.work_dir / "model", ctx.options, ctx.device)
    good = [load_image(p) for p in ctx.target_good]
    if not good:  # one fabric, no good image (e.g. the real-stain bench): the defects inpainted away
        good = defect_free_backgrounds([s for s in ctx.source_defects if s.defect_type in ctx.defect_types])
        ctx.notes.append(f"dgt: no good image given; its good cloth is the {len(good)} training images with their "
                         "defects inpainted away (OpenCV Telea)")
    model, trainer = train_for_context(ctx, DGTConfig, DGTTrainer, DEFAULT_CONFIG, good_images=good)
    c = trainer.config
    ctx.notes.append(f"dgt: trained {trainer.step} steps at {c.model.resolution} px, batch {c.train_batch_size} "
                     f"({trainer.cpu_seconds / 60:.1f} CPU-min this run)")
    return DGTGenerator(model, trainer.openset, resolve_device(ctx.device))


PLUGIN = GeneratorPlugin(build=build, options=GanOptions, load=load, check=config_check(DGTConfig, DEFAULT_CONFIG),
                         help="DGT (TIM 2025): stochastic-Gaussian class/mask codes -> U-Net generator, trained "
                              "with DIS + DFC (open-set classifier); configs/dgt_tiny.yaml")
