"""The `r3gan` generator plug-in: R3GAN as one end-to-end windowed defect generator.

Registered as `r3gan` (`BUILTIN_GENERATORS["r3gan"] = "gan_baselines.r3gan.plugin:PLUGIN"`); bench arm
options: `generator_options: {r3gan: {config: configs/r3gan_tiny.yaml, overrides: {...}}}`.
"""

from __future__ import annotations

from pathlib import Path

from defectfill.distributed import resolve_device
from defectfill.generators.registry import GeneratorPlugin
from gan_baselines.plugin_support import (
    GanOptions,
    SquareWindowGenerator,
    config_check,
    model_folder,
    model_is_complete,
    train_for_context,
)
from gan_baselines.r3gan.config import R3GANConfig
from gan_baselines.r3gan.model import R3GAN

DEFAULT_CONFIG = "configs/r3gan_tiny.yaml"


class R3GANGenerator(SquareWindowGenerator):
    """Paints inside the mask of a `resolution` window with the EMA generator of a trained R3GAN."""

    name = "r3gan"


def load(path: Path, options: GanOptions | None = None, device: str = "cpu") -> R3GANGenerator:
    return R3GANGenerator(R3GAN.from_pretrained(model_folder(path)), resolve_device(device))


def build(ctx) -> R3GANGenerator:
    from gan_baselines.r3gan.train import R3GANTrainer

    if model_is_complete(ctx.work_dir / "model"):
        return load(ctx.work_dir / "model", ctx.options, ctx.device)
    model, trainer = train_for_context(ctx, R3GANConfig, R3GANTrainer, DEFAULT_CONFIG)
    c = trainer.config
    ctx.notes.append(f"r3gan: trained {trainer.step} steps at {c.model.resolution} px, batch {c.train_batch_size}, "
                     f"R1/R2 every {c.lazy_reg_every} step(s) ({trainer.cpu_seconds / 60:.1f} CPU-min this run)")
    return R3GANGenerator(model, resolve_device(ctx.device))


PLUGIN = GeneratorPlugin(
    build=build, options=GanOptions, load=load, check=config_check(R3GANConfig, DEFAULT_CONFIG),
    help="R3GAN (NeurIPS 2024): one end-to-end GAN conditioned on the good window, the mask and the defect type; "
         "trained from the few source defects (configs/r3gan_tiny.yaml on CPU, configs/r3gan_gpu.yaml on a GPU)",
)
