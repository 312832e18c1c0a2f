"""Per-arm synthetic data: the generator registry, the shared request plan, resumable generation.

Every synthetic arm gets the same budget (DESIGN §6): the same requests — the same target good
image, the same proposed defect mask and the same seed for request i — and the same number of
candidates per request; only the generator differs. Generators come from `ARM_GENERATORS`
(name -> builder(ArmContext) -> a `defectfill.generator.DefectGenerator`); a GAN baseline joins
the bench by registering a builder:

    from defectfill.bench.arms import ArmContext, register_arm_generator

    @register_arm_generator("r3gan")
    def build_r3gan(ctx: ArmContext):
        options = ctx.options          # bench YAML: generator_options: {r3gan: {...}}
        return R3GAN(...).fit(ctx.data.source_defects())

A builder is called only when its generation folder is not complete, so a finished generation
(and the training inside the builder) is not redone on resume.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from defectfill.bench.config import BenchConfig, resolve_path, train_config_for
from defectfill.bench.protocol import BenchData
from defectfill.errors import ModelError
from defectfill.io_utils import Manifest, atomic_write_json

logger = logging.getLogger(__name__)

RANDOM_BASE_WARNING = (
    "DefectFill ran on a RANDOM tiny base model because the offline base model {base!r} was not found: "
    "its synthetic defects are noise and the defectfill arm's figures are MEANINGLESS. Build the base "
    "(defectfill pretrain-base, into assets/base-fabric-inpaint) or point defectfill.base_model at a "
    "diffusers inpainting model, then run the same command again: the defectfill arm ({folder}) is then "
    "recomputed on the real base, the other arms are kept."
)


@dataclass
class ArmContext:
    """What a generator builder may use."""

    config: BenchConfig
    out_dir: Path  # the bench run folder
    data: BenchData
    options: dict[str, Any] = field(default_factory=dict)  # config.generator_options[name]
    notes: list[str] = field(default_factory=list)  # warnings shown in the report
    stages: StageLog | None = None

    def work_dir(self, name: str) -> Path:
        return self.out_dir / "generators" / name


ArmGeneratorBuilder = Callable[[ArmContext], Any]
ARM_GENERATORS: dict[str, ArmGeneratorBuilder] = {}


def register_arm_generator(name: str, builder: ArmGeneratorBuilder | None = None):
    """Register `builder` as the generator of arm `name` (usable as a decorator)."""

    def add(fn: ArmGeneratorBuilder) -> ArmGeneratorBuilder:
        ARM_GENERATORS[name] = fn
        return fn

    return add(builder) if builder is not None else add


class StageLog:
    """Seconds per stage, kept across resumed runs (`stages.jsonl`); `ran` lists this run's stages.

    A stage runs from `mark()` (or the previous record) to `record(stage)`. Each record holds the
    wall-clock seconds and the CPU seconds of this process (all threads): on a shared machine the
    wall clock says little, the CPU time stays comparable (an idle 2-core machine runs the stage
    in between cpu/2 and cpu seconds)."""

    def __init__(self, path: Path):
        self.manifest = Manifest(path, key="stage")
        self.ran: list[str] = []
        self.mark()

    def mark(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def done(self, stage: str) -> bool:
        return self.manifest.done(stage)

    def record(self, stage: str, **extra: Any) -> None:
        wall, cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu
        self.ran.append(stage)
        self.manifest.append({"stage": stage, "seconds": round(wall, 3), "cpu_seconds": round(cpu, 3), **extra})
        self.mark()

    def seconds(self, key: str = "seconds") -> dict[str, float]:
        """{stage: seconds} (key "seconds": wall clock, "cpu_seconds": CPU); the last record wins."""
        out: dict[str, float] = {}
        for record in self.manifest:
            if key in record:
                out[record["stage"]] = record[key]
        return out


# ------------------------------------------------------------------------------ request plan
@dataclass(frozen=True)
class Request:
    index: int
    defect_type: str
    source: Path  # the target good image
    mask: np.ndarray  # (H, W) bool, where the defect goes


def plan_requests(config: BenchConfig, data: BenchData) -> list[Request]:
    """`synthetic_per_class` requests per defect type, the same for every synthetic arm.

    Good images are taken in turn (type-interleaved, so each type sees every target texture);
    the mask of request (type t, k) is proposed from a generator seeded by (seed, t, k), with
    shapes from the source masks of the type (mode "auto"/"real") or procedural shapes.
    """
    from defectfill.data.images import load_image
    from defectfill.mask_proposals import propose_masks

    goods = data.target_good_paths()
    types = config.data.defect_types
    count = config.generation.synthetic_per_class
    shape = load_image(goods[0]).shape[:2]
    requests = []
    for t, defect_type in enumerate(types):
        real_masks = data.source_masks(defect_type) if config.generation.masks != "procedural" else []
        for k in range(count):
            rng = np.random.default_rng([config.seed, t, k])
            mask = propose_masks(shape, defect_type, 1, rng, real_masks=real_masks, mode=config.generation.masks)[0]
            source = goods[(k * len(types) + t) % len(goods)]
            requests.append(Request(len(requests), defect_type, source, mask))
    return requests


def generation_complete(folder: Path, expected: int) -> bool:
    from defectfill.downstream.manifest import MANIFEST_NAME

    path = folder / MANIFEST_NAME
    return path.is_file() and len(Manifest(path, key="image")) >= expected


def generate_arm(name: str, ctx: ArmContext, requests: list[Request]) -> Path:
    """Run arm `name`'s generator on every request into `out_dir/generated/<name>` (resumable)."""
    from defectfill.downstream.manifest import write_generation_manifest
    from defectfill.generation import write_contact_sheet

    folder = ctx.out_dir / "generated" / name
    if generation_complete(folder, len(requests)):
        return folder
    if ctx.stages is not None:
        ctx.stages.mark()
    generator = ARM_GENERATORS[name](ctx)  # DefectFill trains here (its own stage)
    write_generation_manifest(
        generator, [r.source for r in requests], [r.mask for r in requests], [r.defect_type for r in requests],
        folder, seed=ctx.config.seed, num_candidates=ctx.config.generation.num_candidates,
        source_names=[r.source.name for r in requests],
    )
    write_contact_sheet(folder)
    if ctx.stages is not None:
        ctx.stages.record(f"generate:{name}", images=len(requests))
    return folder


# ------------------------------------------------------------------------------ cut-paste
@register_arm_generator("cutpaste")
def build_cutpaste(ctx: ArmContext):
    from gan_baselines.cutpaste import CutPaste

    return CutPaste(feather=ctx.config.cutpaste.feather).fit(ctx.data.source_defects())


# ------------------------------------------------------------------------------ DefectFill
class BoundDefectFill:
    """A DefectFill model with its sampling settings bound: the plain `DefectGenerator` call
    `generate(image, mask, defect_type=, num_candidates=, generator=)` that every arm gets."""

    name = "defectfill"

    def __init__(self, model: Any, num_inference_steps: int, guidance_scale: float):
        self.model = model
        self.num_inference_steps = int(num_inference_steps)
        self.guidance_scale = float(guidance_scale)

    @property
    def defect_types(self) -> list[str]:
        return self.model.defect_types

    def generate(self, image: Any, mask: Any, *, defect_type: str, num_candidates: int = 1, generator: Any = None):
        return self.model.generate(image, mask, defect_type=defect_type, num_candidates=num_candidates,
                                   generator=generator, num_inference_steps=self.num_inference_steps,
                                   guidance_scale=self.guidance_scale)


def _looks_like_hub_id(value: str) -> bool:
    """'owner/name' whose first part is not a local folder (so 'assets/x' is a path, not an id)."""
    parts = value.split("/")
    return len(parts) == 2 and all(parts) and not value.startswith((".", "/", "~")) and resolve_path(parts[0]) is None


def build_random_base(folder: Path, seed: int = 0) -> Path:
    """A tiny random diffusers inpainting model (64 px) written to `folder` (plumbing only)."""
    from defectfill.models.components import build_inpaint_pipeline, get_dummy_components

    if not (folder / "model_index.json").is_file():
        pipe = build_inpaint_pipeline(get_dummy_components(seed=seed, sample_size=8))
        staging = folder.with_name(f".{folder.name}.partial")
        pipe.save_pretrained(staging)
        staging.replace(folder)
    return folder


def resolve_base_model(ctx: ArmContext) -> tuple[str, bool]:
    """(base model to use, whether it is the random fallback). Says loudly when it falls back."""
    cfg = ctx.config.defectfill
    base_dir = Path(ctx.config.source).parent if ctx.config.source else None
    local = resolve_path(cfg.base_model, base_dir)
    if local is not None and (local / "model_index.json").is_file():
        return str(local), False
    if local is None and _looks_like_hub_id(cfg.base_model):
        return cfg.base_model, False
    if not cfg.allow_random_base:
        raise ModelError(
            f"defectfill.base_model: {cfg.base_model!r} is not a diffusers model folder (no model_index.json) "
            "and allow_random_base is false; build the offline base (defectfill pretrain-base) or name a "
            "local folder / Hub id of a diffusers inpainting model")
    folder = ctx.work_dir("defectfill") / "random-base"
    warning = RANDOM_BASE_WARNING.format(base=cfg.base_model, folder=ctx.work_dir("defectfill"))
    banner = "!" * 100
    print(f"\n{banner}\nWARNING: {warning}\n{banner}\n", file=sys.stderr, flush=True)
    logger.warning(warning)
    ctx.notes.append(warning)
    return str(build_random_base(folder, ctx.config.seed)), True


def drop_random_base_results(ctx: ArmContext) -> bool:
    """When the defectfill arm was computed on the random fallback base and a real base is now
    available, delete what depends on it (trained concepts, generated images, the arm's results),
    so that this run recomputes them on the real base. Returns whether anything was deleted."""
    import shutil

    status = defectfill_base_status(ctx.out_dir)
    if not status or not status.get("random_base"):
        return False
    cfg = ctx.config.defectfill
    local = resolve_path(cfg.base_model, Path(ctx.config.source).parent if ctx.config.source else None)
    if local is None or not (local / "model_index.json").is_file():
        return False
    print(f"[bench] the defectfill arm was computed on the random fallback base; {local} exists now: "
          "recomputing its training, generation and downstream arm", file=sys.stderr, flush=True)
    for folder in (ctx.work_dir("defectfill"), ctx.out_dir / "generated" / "defectfill",
                   ctx.out_dir / "arms" / "defectfill"):
        shutil.rmtree(folder, ignore_errors=True)
    return True


def train_concepts(ctx: ArmContext, base_model: str, random_base: bool) -> Path:
    """Train the DefectFill concepts on the source defects (skipped when already trained)."""
    from defectfill.training.trainer import train_defectfill

    work = ctx.work_dir("defectfill")
    model_dir = work / "model"
    done = work / "train_done.json"
    if done.is_file():
        return model_dir
    config = train_config_for(
        ctx.config, pretrained_model_name_or_path=base_model, train_data_dir=str(ctx.data.source_dir),
        dataset_layout="mvtec", defect_types=list(ctx.config.data.defect_types), output_dir=str(model_dir),
        seed=ctx.config.seed, resume_from_checkpoint="latest")
    started = time.perf_counter()
    train_defectfill(config)
    seconds = time.perf_counter() - started
    atomic_write_json(done, {"base_model": base_model, "random_base": random_base, "seconds": seconds,
                             "max_train_steps": config.max_train_steps, "resolution": config.resolution,
                             "train_batch_size": config.train_batch_size})
    if ctx.stages is not None:
        ctx.stages.record("train:defectfill", steps=config.max_train_steps)
    return model_dir


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@register_arm_generator("defectfill")
def build_defectfill(ctx: ArmContext):
    import torch

    from defectfill.models.defectfill import DefectFill
    from defectfill.selection import ensure_metric_available

    cfg = ctx.config.defectfill
    ensure_metric_available(cfg.selection_metric)  # fail before training, not after
    base_model, random_base = resolve_base_model(ctx)
    model_dir = train_concepts(ctx, base_model, random_base)
    model = DefectFill.from_pretrained(
        model_dir, base_model=base_model, device=_device(cfg.device), dtype=getattr(torch, cfg.dtype),
        selection_metric=cfg.selection_metric, change_threshold=cfg.change_threshold, feather_px=cfg.feather_px)
    return BoundDefectFill(model, cfg.num_inference_steps, cfg.guidance_scale)


def defectfill_base_status(out_dir: Path) -> dict[str, Any] | None:
    """What base the defectfill arm trained on (train_done.json), None before it trained."""
    import json

    done = out_dir / "generators" / "defectfill" / "train_done.json"
    return json.loads(done.read_text()) if done.is_file() else None
