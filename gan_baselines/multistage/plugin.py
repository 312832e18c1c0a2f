"""The `multistage` generator plug-in: stage-1 texture-conditioned patch + stage-2 fusion network T.

Registered as `multistage` (`BUILTIN_GENERATORS["multistage"] = "gan_baselines.multistage.plugin:PLUGIN"`);
bench arm options: `generator_options: {multistage: {config: configs/multistage_tiny.yaml, overrides: {...}}}`.
The VGG19 weights the model was trained with (`vgg19-random(seed=…)` or `vgg19-imagenet`) are named in
the notes of every run and in every result's meta.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from defectfill.distributed import resolve_device
from defectfill.generators.registry import GeneratorPlugin
from gan_baselines.multistage.config import MultistageConfig
from gan_baselines.multistage.model import MultistageGAN
from gan_baselines.plugin_support import (
    GanOptions,
    SquareWindowGenerator,
    config_check,
    model_folder,
    model_is_complete,
    train_for_context,
)

DEFAULT_CONFIG = "configs/multistage_tiny.yaml"


def vgg_name(model: MultistageGAN) -> str:
    c = model.config
    return f"vgg19-random(seed={c.vgg_seed})" if c.vgg_weights == "random" else "vgg19-imagenet"


class MultistageGenerator(SquareWindowGenerator):
    """Pastes a stage-1 patch (conditioned on the window's own fabric texture) and fuses it with T;
    the pixels inside the mask are kept."""

    name = "multistage"

    def generate(self, *args: Any, **kwargs: Any):
        result = super().generate(*args, **kwargs)
        result.meta["texture_features"] = vgg_name(self.model)
        return result


def load(path: Path, options: GanOptions | None = None, device: str = "cpu") -> MultistageGenerator:
    return MultistageGenerator(MultistageGAN.from_pretrained(model_folder(path)), resolve_device(device))


def build(ctx) -> MultistageGenerator:
    from gan_baselines.multistage.train import MultistageTrainer

    if model_is_complete(ctx.work_dir / "model"):
        generator = load(ctx.work_dir / "model", ctx.options, ctx.device)
        ctx.notes.append(f"multistage: loaded {ctx.work_dir / 'model'} (texture features {vgg_name(generator.model)})")
        return generator
    model, trainer = train_for_context(ctx, MultistageConfig, MultistageTrainer, DEFAULT_CONFIG)
    c = trainer.config
    ctx.notes.append(f"multistage: texture features {vgg_name(model)}; trained {c.stage1_steps} + {c.stage2_steps} "
                     f"steps at {c.model.resolution} px ({trainer.cpu_seconds / 60:.1f} CPU-min this run)")
    return MultistageGenerator(model, resolve_device(ctx.device))


PLUGIN = GeneratorPlugin(
    build=build, options=GanOptions, load=load, check=config_check(MultistageConfig, DEFAULT_CONFIG),
    help="Multistage GAN (IEEE TIP 2020): texture-conditioned cGAN patch (VGG19 Gram matrices) fused by a U-Net "
         "(configs/multistage_tiny.yaml on CPU, configs/multistage_gpu.yaml on a GPU)",
)
