"""The `icpr20` generator plug-in: the conditional pix2pix writing a defect into a mask.

Registered as `"icpr20": "gan_baselines.icpr20.plugin:PLUGIN"`. `build` trains on the context's
source defects (cached in `ctx.work_dir/model`, resumable from `ctx.work_dir/checkpoints`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from defectfill.data.images import load_image
from defectfill.distributed import resolve_device
from defectfill.generators.context import GeneratorContext
from defectfill.generators.registry import GeneratorPlugin
from defectfill.generators.shared import WindowedGenerator
from gan_baselines.fewshot_training import MODEL_DIR, to_tensor, to_uint8
from gan_baselines.icpr20.config import ICPR20Config
from gan_baselines.icpr20.model import ICPR20
from gan_baselines.icpr20.train import train_icpr20


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
        image = to_tensor(window)[None].repeat(k, 1, 1, 1).to(self.device)
        m = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None].repeat(k, 1, 1, 1).to(self.device)
        labels = torch.full((k,), self.model.defect_types.index(defect_type), dtype=torch.long, device=self.device)
        return to_uint8(self.model(image, m, labels, rng))


def build(ctx: GeneratorContext) -> ICPR20Generator:
    options: ICPR20Config = ctx.options
    options = dataclasses.replace(options, train=dataclasses.replace(options.train, seed=ctx.seed))
    good = [load_image(p) for p in ctx.target_good]
    defects = [s for s in ctx.source_defects if s.defect_type in ctx.defect_types]
    return ICPR20Generator(train_icpr20(options, defects, good, ctx.defect_types, ctx.work_dir, resolve_device(ctx.device)),
                           resolve_device(ctx.device))


def load(path: Path, options: ICPR20Config, device: str = "cpu") -> ICPR20Generator:
    """A trained model folder (`<work_dir>/model`, or the work_dir holding it)."""
    path = Path(path)
    folder = path / MODEL_DIR if (path / MODEL_DIR / "config.json").is_file() else path
    return ICPR20Generator(ICPR20.from_pretrained(str(folder)), resolve_device(device))


PLUGIN = GeneratorPlugin(build=build, options=ICPR20Config, load=load,
                         help="ICPR'20 reading: mask- and class-conditioned pix2pix (U-Net + PatchGAN, L1 + adversarial)")
