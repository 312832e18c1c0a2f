"""What both GAN plug-ins share: options, the cached/resumable build in `ctx.work_dir`, the load.

A plug-in's `build(ctx)` trains on `ctx.source_defects` into `ctx.work_dir` (checkpoints resumable:
a rerun continues where it stopped) and returns the windowed generator; a rerun that finds a complete
`ctx.work_dir/model` (config.json + model.safetensors) loads it instead of training again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class GanOptions:
    """`generator_options: {r3gan: {config: ..., overrides: {...}}}` in a bench config."""

    config: str = ""                                          # YAML under configs/ (default: the CPU-tiny one)
    overrides: dict[str, Any] = field(default_factory=dict)   # dotted config keys, e.g. {train_batch_size: 4}


def model_is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def train_for_context(ctx: Any, config_cls: type, trainer_cls: type, default_config: str):
    """Load the options' config (ctx.seed and ctx.device win), train on ctx.source_defects of
    ctx.defect_types in ctx.work_dir (resuming), and return (trained model in eval mode, notes)."""
    from defectfill.bench.config import resolve_path
    from defectfill.config import load_config
    from defectfill.errors import ConfigError

    name = ctx.options.config or default_config
    path = resolve_path(name)
    if path is None:
        raise ConfigError(f"generator_options.{ctx.name}.config: {name!r} not found (looked in the working "
                          "directory and the repository root); pass an existing YAML file (see configs/)")
    config = load_config(config_cls, path, {**ctx.options.overrides, "seed": ctx.seed, "device": ctx.device})
    config.model.defect_types = list(ctx.defect_types)
    samples = [s for s in ctx.source_defects if s.defect_type in ctx.defect_types]
    trainer = trainer_cls(config, samples, ctx.work_dir, "latest")
    trainer.train()
    return trainer.unwrapped.eval(), trainer
