"""What both GAN plug-ins share: options, the config check, the cached/resumable build in
`ctx.work_dir`, and the square-window `fill` of the WindowedGenerator API.

A plug-in's `build(ctx)` trains on `ctx.source_defects` into `ctx.work_dir` (checkpoints resumable:
a rerun continues where it stopped) and returns the windowed generator; a rerun that finds a complete
`ctx.work_dir/model` (config.json + model.safetensors) loads it instead of training again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from defectfill.distributed import resolve_device
from defectfill.generators.shared import WindowedGenerator


@dataclass
class GanOptions:
    """`generator_options: {r3gan: {config: ..., overrides: {...}}}` in a bench config."""

    config: str = ""                                          # YAML under configs/ ("" = the CPU-tiny one)
    overrides: dict[str, Any] = field(default_factory=dict)   # dotted config keys, e.g. {train_batch_size: 4}


def model_is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def model_folder(path: str | Path) -> Path:
    """A trained model folder given either itself or the work_dir holding it (`<work_dir>/model`)."""
    path = Path(path)
    return path / "model" if model_is_complete(path / "model") else path


def config_check(config_cls: type, default_config: str):
    """The plug-in `check(options, config_dir, training)` of a GAN: its YAML + overrides load
    (unknown keys and bad values refused) before anything trains; loading a model needs no config."""

    def check(options: GanOptions, config_dir: Path | None = None, training: bool = True) -> None:
        if training:
            load_gan_config(options, config_cls, default_config, config_dir)

    return check


def check_same_types(model: Any, defect_types: list[str], folder: Path) -> None:
    """A finished model found in `folder` must have been trained for `defect_types` (when given)."""
    from defectfill.errors import ModelError

    if defect_types and list(model.defect_types) != list(defect_types):
        raise ModelError(f"{folder}: holds a model trained for the defect types {list(model.defect_types)}, this "
                         f"run asks for {list(defect_types)}; use another output folder or delete this one")


def load_gan_config(options: GanOptions, config_cls: type, default_config: str, config_dir: Path | None = None,
                    **fields: Any):
    """The options' YAML (next to the bench config, in the working directory or the repository) +
    its overrides + `fields`; ConfigError when it does not exist or does not validate."""
    from defectfill.config import load_config, resolve_path
    from defectfill.errors import ConfigError

    name = options.config or default_config
    path = resolve_path(name, config_dir)
    if path is None:
        raise ConfigError(f"generator_options.config: {name!r} not found (looked next to the config, in the working "
                          "directory and in the repository root); pass an existing YAML file (see configs/)")
    return load_config(config_cls, path, {**options.overrides, **fields})


def train_for_context(ctx: Any, config_cls: type, trainer_cls: type, default_config: str, **trainer_kwargs: Any):
    """Train on ctx.source_defects of ctx.defect_types in ctx.work_dir (resuming; ctx.seed and
    ctx.device win over the config) and return (trained model in eval mode, trainer).
    `trainer_kwargs` go to the trainer (DGT: `good_images`)."""
    config = load_gan_config(ctx.options, config_cls, default_config, ctx.config_dir, seed=ctx.seed,
                             device=resolve_device(ctx.device))
    config.model.defect_types = list(ctx.defect_types)
    samples = [s for s in ctx.source_defects if s.defect_type in ctx.defect_types]
    trainer = trainer_cls(config, samples, ctx.work_dir, "latest", **trainer_kwargs)
    trainer.train()
    return trainer.unwrapped.eval(), trainer


def fill_square(model: Any, window: np.ndarray, mask: np.ndarray, *, num_candidates: int, defect_type: str,
                rng: Any) -> np.ndarray:
    """WindowedGenerator.fill for a model that works on resolution × resolution windows: a window of
    another shape (a strip narrower than the resolution) is resized to the square and back.
    window (h, w, 3) uint8, mask (h, w) bool -> (num_candidates, h, w, 3) uint8."""
    r = model.config.resolution
    h, w = window.shape[:2]
    square = (h, w) == (r, r)
    windows = window if square else cv2.resize(window, (r, r), interpolation=cv2.INTER_AREA)
    masks = mask if square else cv2.resize(mask.astype(np.uint8), (r, r), interpolation=cv2.INTER_NEAREST) > 0
    painted = model.fill(np.stack([windows] * num_candidates), np.stack([masks] * num_candidates),
                         defect_type=defect_type, rng=rng)
    if square:
        return painted
    return np.stack([cv2.resize(p, (w, h), interpolation=cv2.INTER_CUBIC) for p in painted])


class SquareWindowGenerator(WindowedGenerator):
    """A trained GAN that paints r x r windows (`model.config.resolution`) as a `DefectGenerator`:
    the window around the mask, `fill_square`, the paste-back and the labels of `WindowedGenerator`."""

    def __init__(self, model: Any, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.resolution = model.config.resolution

    @property
    def defect_types(self) -> list[str]:
        return self.model.defect_types

    def fill(self, window: np.ndarray, mask: np.ndarray, *, num_candidates: int, defect_type: str,
             rng: Any) -> np.ndarray:
        return fill_square(self.model, window, mask, num_candidates=num_candidates, defect_type=defect_type, rng=rng)
