"""The `dgt` generator plug-in: DGT's generator G painting a defect of a known type into a mask.

Registered as `"dgt": "gan_baselines.dgt.plugin:PLUGIN"`. `build` trains DGT + DIS + DFC on the
context's source defects and target good images (cached in `ctx.work_dir/model`, resumable from
`ctx.work_dir/checkpoints`), fits DFC's Weibulls, and returns a `DGTGenerator`; the trained DIS +
DFC + Weibulls are on it as `.model` / `.openset` for `detect_defects`.
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
from gan_baselines.dgt.config import DGTConfig
from gan_baselines.dgt.model import DGT
from gan_baselines.dgt.openset import WeibullOpenSet
from gan_baselines.dgt.train import train_dgt
from gan_baselines.fewshot_training import MODEL_DIR, to_tensor, to_uint8


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
        good = to_tensor(window)[None].repeat(k, 1, 1, 1)
        m = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None].repeat(k, 1, 1, 1)
        labels = torch.full((k,), self.model.defect_types.index(defect_type), dtype=torch.long)
        fore, back = self.model.codes(m, labels, rng)
        out = self.model.generate(good.to(self.device), fore.to(self.device), back.to(self.device))
        return to_uint8(out)


def build(ctx: GeneratorContext) -> DGTGenerator:
    options: DGTConfig = ctx.options
    options = dataclasses.replace(options, train=dataclasses.replace(options.train, seed=ctx.seed))
    good = [load_image(p) for p in ctx.target_good]
    defects = [s for s in ctx.source_defects if s.defect_type in ctx.defect_types]
    model, openset = train_dgt(options, defects, good, ctx.defect_types, ctx.work_dir, device=resolve_device(ctx.device))
    return DGTGenerator(model, openset, resolve_device(ctx.device))


def load(path: Path, options: DGTConfig, device: str = "cpu") -> DGTGenerator:
    """A trained model folder (`<work_dir>/model`, or the work_dir holding it)."""
    path = Path(path)
    folder = path / MODEL_DIR if (path / MODEL_DIR / "config.json").is_file() else path
    openset = WeibullOpenSet.load(folder) if (folder / "openset.json").is_file() else None
    return DGTGenerator(DGT.from_pretrained(str(folder)), openset, resolve_device(device))


PLUGIN = GeneratorPlugin(build=build, options=DGTConfig, load=load,
                         help="DGT (TIM 2025): stochastic-Gaussian class/mask codes -> U-Net generator, trained "
                              "with DIS + DFC (open-set classifier)")
