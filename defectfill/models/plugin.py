"""DefectFill as a registered generator (`defectfill.generators.registry`, name "defectfill").

    build(ctx)  resolve the base model (a random tiny base only when allowed, said loudly) ->
                train one concept per defect type on the source defects (once; `train_done.json`
                in the work folder) -> load it with the sampling options bound
    load(dir)   a trained model folder (or Hub id) with the sampling options bound

Training data: the source folder as it is (`ctx.source_dir` with its layout), or the in-memory source
defects (`ctx.source_defects`, written to the work folder) when there is no folder or with
`concept_crops: true` (e.g. the source split of a folder whose other images are test images). Either way the
trainer cuts each defect's generation window (`training_crops: generation`, the training config's
default): the crop `DefectFill.generate` will work in, at the size it works at, so that training
and generation see the defects at one scale. `train_overrides: {training_crops: whole_image}` gives
the behaviour before (the whole image shrunk to the training resolution).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from defectfill.config import resolve_path
from defectfill.distributed import resolve_device
from defectfill.errors import ConfigError, ModelError
from defectfill.generators.context import GeneratorContext
from defectfill.generators.registry import GeneratorPlugin
from defectfill.io_utils import atomic_write_json

logger = logging.getLogger(__name__)

RANDOM_BASE_WARNING = (
    "DefectFill ran on a RANDOM tiny base model because the offline base model {base!r} was not found: "
    "its synthetic defects are noise and the defectfill figures are MEANINGLESS. Build the base "
    "(defectfill pretrain-base, into assets/base-fabric-inpaint) or point base_model at a "
    "diffusers inpainting model, then run the same command again: the defectfill generator ({folder}) is then "
    "recomputed on the real base."
)
TRAIN_DONE = "train_done.json"


@dataclass
class DefectFillOptions:
    """DefectFill: concepts trained on the source defects, generated into target good images."""

    base_model: str = "assets/base-fabric-inpaint"  # local folder or Hub id of the inpainting base
    allow_random_base: bool = True  # base folder missing: fall back to a random tiny base (results meaningless)
    train_config: str = "defectfill_tiny.yaml"
    train_overrides: dict[str, Any] = field(default_factory=dict)
    concept_crops: bool = False  # train on the in-memory source defects (ctx.source_defects), not the source folder
    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    selection_metric: str = "auto"  # LFS metric: auto (LPIPS when its weights are here, else ms-ssim-distance)
    early_selection: float = 0.0  # 0: LFS on finished candidates; f: rank on x0 at step f*T, finish the best only
    change_threshold: float = 0.1
    feather_px: float = 0.0
    device: str = "auto"  # auto: cuda when present
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    load_base_model: str | None = None  # load a trained model on this base (None: the one it records)

    def __post_init__(self) -> None:
        if self.num_inference_steps < 1:
            raise ConfigError(f"num_inference_steps must be >= 1, found {self.num_inference_steps}")
        if self.guidance_scale < 0:
            raise ConfigError(f"guidance_scale must be >= 0, found {self.guidance_scale}")
        if not 0.0 <= self.early_selection < 1.0:
            raise ConfigError(f"early_selection must lie in [0, 1) (0: off; else the fraction N/T of the steps), "
                              f"found {self.early_selection}")


class SampledDefectFill:
    """A DefectFill model with its sampling settings bound: the plain `DefectGenerator` call
    `generate(image, mask, defect_type=, num_candidates=, generator=)` the runner makes."""

    name = "defectfill"

    def __init__(self, model: Any, num_inference_steps: int, guidance_scale: float, early_selection: float = 0.0):
        self.model = model
        self.num_inference_steps = int(num_inference_steps)
        self.guidance_scale = float(guidance_scale)
        self.early_selection = float(early_selection)

    @property
    def defect_types(self) -> list[str]:
        return self.model.defect_types

    def generate(self, image: Any, mask: Any, *, defect_type: str, num_candidates: int = 1, generator: Any = None):
        return self.model.generate(image, mask, defect_type=defect_type, num_candidates=num_candidates,
                                   generator=generator, num_inference_steps=self.num_inference_steps,
                                   guidance_scale=self.guidance_scale, early_selection=self.early_selection)


def looks_like_hub_id(value: str) -> bool:
    """'owner/name' whose first part is not a local folder (so 'assets/x' is a path, not an id)."""
    parts = value.split("/")
    return len(parts) == 2 and all(parts) and not value.startswith((".", "/", "~")) and resolve_path(parts[0]) is None


def build_random_base(folder: Path, seed: int = 0) -> Path:
    """A tiny random diffusers inpainting model (64 px) written to `folder` (plumbing only)."""
    from defectfill.io_utils import apply_umask_modes
    from defectfill.models.components import build_inpaint_pipeline, get_dummy_components

    if not (folder / "model_index.json").is_file():
        pipe = build_inpaint_pipeline(get_dummy_components(seed=seed, sample_size=8))
        staging = folder.with_name(f".{folder.name}.partial")
        pipe.save_pretrained(staging)
        apply_umask_modes(staging)  # safetensors writes 0600 files; a teammate must be able to read them
        staging.replace(folder)
    return folder


def resolve_base_model(options: DefectFillOptions, work_dir: Path, config_dir: Path | None = None,
                       seed: int = 0, notes: list[str] | None = None) -> tuple[str, bool]:
    """(base model to use, whether it is the random fallback). Says loudly when it falls back."""
    local = resolve_path(options.base_model, config_dir)
    if local is not None and (local / "model_index.json").is_file():
        return str(local), False
    if local is None and looks_like_hub_id(options.base_model):
        return options.base_model, False
    if not options.allow_random_base:
        raise ModelError(
            f"base_model: {options.base_model!r} is not a diffusers model folder (no model_index.json) "
            "and allow_random_base is false; build the offline base (defectfill pretrain-base) or name a "
            "local folder / Hub id of a diffusers inpainting model")
    warning = RANDOM_BASE_WARNING.format(base=options.base_model, folder=work_dir)
    print(f"\n{'!' * 100}\nWARNING: {warning}\n{'!' * 100}\n", file=sys.stderr, flush=True)
    logger.warning(warning)
    if notes is not None:
        notes.append(warning)
    return str(build_random_base(work_dir / "random-base", seed)), True


def base_status(work_dir: Path) -> dict[str, Any] | None:
    """What base the concepts in `work_dir` were trained on (train_done.json), None before training."""
    done = Path(work_dir) / TRAIN_DONE
    return json.loads(done.read_text()) if done.is_file() else None


def train_config_for(options: DefectFillOptions, config_dir: Path | None = None, **fields: Any):
    """The training config: `train_config` (a YAML) + `train_overrides` + `fields`."""
    from defectfill.training.config import load_train_config

    path = resolve_path(options.train_config, config_dir)
    if path is None:
        raise ConfigError(f"train_config: {options.train_config!r} not found (looked next to the config, in the "
                          "working directory and in the repository root); pass an existing DefectFill training YAML")
    return load_train_config(path, **{**options.train_overrides, **fields})


def same_base(recorded: str, current: str) -> bool:
    """Whether a recorded base is the current one: the same name, or two local copies of one model
    (same model_index.json and the same weight files, by name and size), e.g. after moving the repository."""
    if recorded == current:
        return True
    a, b = Path(recorded), Path(current)
    if not ((a / "model_index.json").is_file() and (b / "model_index.json").is_file()):
        return False

    def fingerprint(root: Path) -> list[tuple[str, int]]:
        return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*")
                      if p.is_file() and p.suffix in (".json", ".safetensors", ".txt"))

    return (a / "model_index.json").read_bytes() == (b / "model_index.json").read_bytes() and \
        fingerprint(a) == fingerprint(b)


def train_concepts(ctx: GeneratorContext, base_model: str, random_base: bool) -> tuple[Path, dict[str, Any]]:
    """Train the concepts of `ctx.defect_types` on the source defects (skipped when already trained)."""
    from defectfill.data.writers import write_masks
    from defectfill.training.trainer import train_defectfill

    options: DefectFillOptions = ctx.options
    work, model_dir = ctx.work_dir, ctx.work_dir / "model"
    record = base_status(work)
    if record is not None:
        if not same_base(record["base_model"], base_model) and not record.get("random_base"):
            raise ModelError(f"{work}: the concepts were trained on base {record['base_model']!r}, the options now "
                             f"name {base_model!r}; delete {work} to retrain")
        return model_dir, record
    fields: dict[str, Any] = {"pretrained_model_name_or_path": base_model, "defect_types": list(ctx.defect_types),
                                  "output_dir": str(model_dir), "seed": ctx.seed, "resume_from_checkpoint": "latest"}
    if ctx.source_dir is not None and not options.concept_crops:
        fields.update(train_data_dir=str(ctx.source_dir), dataset_layout=ctx.source_layout or "auto")
    else:  # the in-memory source defects; the trainer cuts their generation windows (training_crops)
        defects = [s for s in ctx.source_defects if s.defect_type in ctx.defect_types]
        data_dir = work / "train_data"
        if not (data_dir / "defects.json").is_file():
            write_masks(defects, data_dir)
        fields.update(train_data_dir=str(data_dir), dataset_layout="folder")
    config = train_config_for(options, ctx.config_dir, **fields)
    started = time.perf_counter()
    train_defectfill(config)
    scale = json.loads((model_dir / "scale.json").read_text()) if (model_dir / "scale.json").is_file() else {}
    record = {"base_model": base_model, "random_base": random_base, "seconds": time.perf_counter() - started,
              "max_train_steps": config.max_train_steps, "resolution": config.resolution,
              "train_batch_size": config.train_batch_size, "training_crops": config.training_crops,
              "crops": sum(v["training_windows"] for v in scale.values()) or None}
    atomic_write_json(work / TRAIN_DONE, record)
    return model_dir, record


def load(path: Path, options: DefectFillOptions, device: str = "auto", base_model: str | None = None):
    """A trained DefectFill folder (or Hub id) with the sampling options bound; its base is
    `base_model`, else `options.load_base_model`, else the one the model records."""
    import torch

    from defectfill.models.defectfill import DefectFill
    from defectfill.selection import ensure_metric_available

    metric = ensure_metric_available(options.selection_metric)
    model = DefectFill.from_pretrained(
        path, base_model=base_model or options.load_base_model, device=resolve_device(options.device if options.device != "auto" else device),
        dtype=getattr(torch, options.dtype), selection_metric=metric, change_threshold=options.change_threshold,
        feather_px=options.feather_px)
    return SampledDefectFill(model, options.num_inference_steps, options.guidance_scale, options.early_selection)


def check(options: DefectFillOptions, config_dir: Path | None = None, training: bool = True) -> None:
    """The training config loads (when training) and the selection metric is one there is; whether
    its weights are here is checked when the model is built or loaded (a GPU config loads anywhere)."""
    from defectfill.selection import AUTO, check_metric

    if training:
        train_config_for(options, config_dir)
    if options.selection_metric != AUTO:
        check_metric(options.selection_metric)


def stale(work_dir: Path, options: DefectFillOptions, config_dir: Path | None = None) -> bool:
    """The concepts were trained on the random fallback base and the configured base exists now."""
    record = base_status(work_dir)
    if not record or not record.get("random_base"):
        return False
    local = resolve_path(options.base_model, config_dir)
    return local is not None and (local / "model_index.json").is_file()


def build(ctx: GeneratorContext):
    """Train the concepts (once) and load them."""
    from defectfill.selection import ensure_metric_available

    options: DefectFillOptions = ctx.options
    ensure_metric_available(options.selection_metric)  # fail before training, not after
    if stale(ctx.work_dir, options, ctx.config_dir):
        import shutil

        logger.warning("%s: concepts were trained on the random fallback base; the base exists now: retraining",
                       ctx.work_dir)
        shutil.rmtree(ctx.work_dir / "model", ignore_errors=True)
        (ctx.work_dir / TRAIN_DONE).unlink()
    base_model, random_base = resolve_base_model(options, ctx.work_dir, ctx.config_dir, ctx.seed, ctx.notes)
    model_dir, _ = train_concepts(ctx, base_model, random_base)
    return load(model_dir, options, ctx.device, base_model=base_model)


PLUGIN = GeneratorPlugin(build=build, options=DefectFillOptions, load=load, check=check, stale=stale,
                         help="DefectFill: SD-2-inpainting + LoRA + a learned [V*] token per defect type, with LFS")
