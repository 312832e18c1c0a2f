"""The real-data run: real stains on woven fabric (hsst-stains), real vs + cut-paste vs + DefectFill.

    defectfill real --config configs/bench_real_stains.yaml [--out runs/real-stains]

Protocol (fixed, so any two runs compare):

1. data: the folder of `images/` + `annotations/` (26 greyscale 512x512 photographs, one class,
   stain); an all-zero mask makes a good image. Stems sorted; `split: alternate` puts positions
   0, 2, 4, ... in training and 1, 3, 5, ... in test (both capture days in both halves; 13/13 for
   the 26 images), `split: halves` the first half / the second. Every image is resized to
   `data.image_size` (area interpolation; masks by `defectfill.masks.resize_mask`) to fit a CPU.
2. generators, trained on the training half only: cut-paste (the real stain crops) and a DefectFill
   stain concept on the offline base (`defectfill.base_model`; a random tiny base when it is
   missing and `allow_random_base`, said loudly: its stains are noise). DefectFill trains on the
   *generation windows* of the real stains (`concept_training_crops`): the crop that
   `DefectFill.generate` will work in, at the size it works at, so training and generation see
   stains at one scale.
3. requests, per seed, the same for every synthetic arm: `generation.per_image` stains into every
   training image, each mask proposed from the real training masks (`mask_proposals`, mode real)
   inside the defect-free region (`clearance_px` away from the real stains). The generated image
   still shows its real stain, so its label is the new stain's changed pixels ∪ the real stain
   (`KeepRealLabels`); a real stain must never be taught as background.
4. arms: `real_only`, `cutpaste`, `defectfill`, each `defectfill.downstream.arm.run_arm`
   (assemble -> fine-tune DeepLabV3 and/or RT-DETR -> evaluate on the test half), per seed.
5. summary: mean, sample standard deviation, min and max over the seeds per arm (`summary.json`,
   `table.md`) and `contact_sheet.png`: real stain crops beside generated ones.

Resumable: finished arms (results.json), generations (manifest) and the trained concept are read
back. A concept trained on another base than the config names is refused (delete it to retrain).
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from defectfill.bench.config import CutPasteArmConfig, DefectFillArmConfig, DownstreamRef, resolve_path
from defectfill.config import load_config, to_dict
from defectfill.data.sample import DefectSample
from defectfill.errors import ConfigError, DataError, ModelError
from defectfill.generator import GenerationResult
from defectfill.io_utils import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

REAL_ONLY = "real_only"
ARMS = (REAL_ONLY, "cutpaste", "defectfill")
SUMMARY_NAME = "summary.json"


# ------------------------------------------------------------------------------ config
@dataclass
class RealDataConfig:
    """The real folder and its fixed split (module docstring, step 1)."""

    data_dir: str = "../shared/data/hsst-stains"  # looked up next to the config, in the cwd, in the repo root
    defect_type: str = "stain"
    split: Literal["alternate", "halves"] = "alternate"
    image_size: int = 128  # every image resized to this square side (the originals are 512 px)
    max_train_images: int | None = None  # the first N of the training half (tests); None: all
    max_test_images: int | None = None


@dataclass
class RealGenerationConfig:
    """Synthetic stains per seed: `per_image` into every training image (same requests per arm)."""

    per_image: int = 2
    num_candidates: int = 2  # each generator keeps its best (DefectFill: Low-Fidelity Selection)
    clearance_px: int = 4  # proposed masks keep this distance from the real stains
    masks: Literal["real", "procedural", "auto"] = "real"


@dataclass
class RealStainsConfig:
    name: str = "real-stains"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    data: RealDataConfig = field(default_factory=RealDataConfig)
    generation: RealGenerationConfig = field(default_factory=RealGenerationConfig)
    defectfill: DefectFillArmConfig = field(default_factory=DefectFillArmConfig)
    cutpaste: CutPasteArmConfig = field(default_factory=CutPasteArmConfig)
    downstream: DownstreamRef = field(default_factory=DownstreamRef)
    concept_seed: int = 0  # the DefectFill concept is trained once (CPU budget), with this seed
    source: str = ""  # the YAML this config was read from (set by load_real_stains_config)

    def validate(self) -> RealStainsConfig:
        problems = []
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms or len(set(self.arms)) != len(self.arms):
            problems.append(f"arms: {self.arms} must be distinct names out of {list(ARMS)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            problems.append(f"seeds: {self.seeds} must be a non-empty list of distinct integers")
        size = self.data.image_size
        if size < 32 or size % 8:
            problems.append(f"data.image_size must be a multiple of 8 and >= 32, found {size}")
        for name in ("max_train_images", "max_test_images"):
            value = getattr(self.data, name)
            if value is not None and value < 1:
                problems.append(f"data.{name} must be >= 1 or null, found {value}")
        g = self.generation
        if g.per_image < 1 or g.num_candidates < 1 or g.clearance_px < 0:
            problems.append("generation: per_image and num_candidates must be >= 1, clearance_px >= 0")
        if problems:
            raise ConfigError(f"{self.source or 'real-stains config'}: " + "; ".join(problems))
        return self


def _base_dir(config: RealStainsConfig) -> Path | None:
    return Path(config.source).parent if config.source else None


def _require(value: str, config: RealStainsConfig, what: str) -> Path:
    path = resolve_path(value, _base_dir(config))
    if path is None:
        raise ConfigError(f"{what}: {value!r} not found (looked next to the config, in the working directory and "
                          "in the repository root); pass an existing path")
    return path


def downstream_config_for(config: RealStainsConfig, seed: int):
    """The downstream config: `downstream.config` + overrides, one class (the stain), the run's seed."""
    from defectfill.downstream.config import load_downstream_config

    path = _require(config.downstream.config, config, "downstream.config")
    overrides = {**config.downstream.overrides, "classes": [config.data.defect_type], "seed": int(seed)}
    return load_downstream_config(path, overrides=overrides)


def train_config_for(config: RealStainsConfig, **fields: Any):
    from defectfill.training.config import load_train_config

    path = _require(config.defectfill.train_config, config, "defectfill.train_config")
    return load_train_config(path, **{**config.defectfill.train_overrides, **fields})


def load_real_stains_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RealStainsConfig:
    """Read the YAML (unknown keys rejected) and check the configs it names load too."""
    path = Path(path)
    config = load_config(RealStainsConfig, path, overrides)
    config.source = str(path.resolve())
    config.validate()
    downstream_config_for(config, config.seeds[0])
    if "defectfill" in config.arms:
        train_config_for(config)
    return config


# ------------------------------------------------------------------------------ data
def _resize(sample: DefectSample, size: int) -> DefectSample:
    from defectfill.masks import resize_mask

    if sample.size == (size, size):
        return sample
    shrink = size < min(sample.size)
    image = cv2.resize(sample.image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    if sample.is_gray:  # keep grey exactly grey
        image = np.repeat(image[..., :1], 3, axis=2)
    mask = resize_mask(sample.mask, (size, size), mode="area", keep_nonempty=True) if sample.mask.any() \
        else np.zeros((size, size), bool)
    return DefectSample(image, mask, sample.defect_type, source=sample.source, mask_source=sample.mask_source,
                        is_gray=sample.is_gray, meta=dict(sample.meta))


def load_split(config: RealStainsConfig) -> tuple[list[DefectSample], list[DefectSample]]:
    """(train, test) samples of the fixed split, resized to `data.image_size`."""
    from defectfill.data.readers import read_image_mask_folder

    d = config.data
    folder = resolve_path(d.data_dir, _base_dir(config))
    if folder is None or not folder.is_dir():
        raise DataError(f"data.data_dir: {d.data_dir!r} is not a folder (looked next to the config, in the working "
                        "directory and in the repository root); pass the folder holding images/ + annotations/")
    samples = sorted(read_image_mask_folder(folder, defect_type=d.defect_type, unlabelled="good"),
                     key=lambda s: s.meta["name"])
    if len(samples) < 2:
        raise DataError(f"{folder}: {len(samples)} image(s); need at least 2 (one to train, one to test)")
    if d.split == "alternate":
        train, test = samples[0::2], samples[1::2]
    else:
        half = (len(samples) + 1) // 2
        train, test = samples[:half], samples[half:]
    train, test = train[: d.max_train_images], test[: d.max_test_images]
    if not any(not s.is_good for s in train):
        raise DataError(f"{folder}: the training half holds no labelled stain; nothing to learn")
    return [_resize(s, d.image_size) for s in train], [_resize(s, d.image_size) for s in test]


def concept_training_crops(samples: list[DefectSample], resolution: int, multiple: int = 8,
                           context: float = 0.25) -> list[DefectSample]:
    """One crop per group of nearby stains: the window `DefectFill.generate` works in for it
    (`windows_for_mask` at `resolution`), resized to the generation size, with the mask inside it;
    training on these shows the concept its stains at the scale it generates them."""
    from defectfill.models.window import crop_image, crop_mask, windows_for_mask

    crops = []
    for sample in samples:
        if sample.is_good or not sample.mask.any():
            continue
        for k, (window, group) in enumerate(windows_for_mask(sample.mask, resolution, multiple, context=context), 1):
            mask = crop_mask(group, window)
            if min(window.gen_height, window.gen_width) < resolution:
                continue  # image smaller than the model resolution on one side
            crops.append(DefectSample(crop_image(sample.image, window), mask, sample.defect_type, source=sample.source,
                                      is_gray=sample.is_gray,
                                      meta={"name": f"{sample.meta.get('name', 'img')}_c{k}"}))
    if not crops:
        raise DataError(f"no stain crop of at least {resolution} px could be cut; lower the DefectFill resolution "
                        "or raise data.image_size")
    return crops


@dataclass(frozen=True)
class Request:
    index: int
    sample: DefectSample  # the training image the stain goes into
    mask: np.ndarray  # (H, W) bool, inside its defect-free region


def plan_requests(train: list[DefectSample], config: RealStainsConfig, seed: int) -> list[Request]:
    """`per_image` requests per training image; mask k of image i from a generator seeded (seed, i, k)."""
    from defectfill.mask_proposals import propose_masks
    from defectfill.masks import dilate

    g = config.generation
    real_masks = [s.mask for s in train if not s.is_good]
    requests = []
    for i, sample in enumerate(train):
        region = ~dilate(sample.mask, g.clearance_px) if sample.mask.any() else None
        for k in range(g.per_image):
            rng = np.random.default_rng([seed, i, k])
            mask = propose_masks(sample.size, config.data.defect_type, 1, rng, real_masks=real_masks,
                                 mode=g.masks, region=region)[0]
            requests.append(Request(len(requests), sample, mask))
    return requests


def _key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


class KeepRealLabels:
    """Wraps a generator: the label of a result is its changed pixels ∪ the real defect already in
    the image (looked up by the image's content), so the real stain stays labelled as a stain."""

    def __init__(self, generator: Any, samples: list[DefectSample]):
        self.generator = generator
        self.name = getattr(generator, "name", type(generator).__name__)
        self.real = {_key(s.image): s.mask for s in samples if s.mask.any()}

    @property
    def defect_types(self) -> list[str]:
        return self.generator.defect_types

    def generate(self, image: Any, mask: Any, **kwargs: Any) -> GenerationResult:
        from defectfill.masks import mask_to_boxes

        result = self.generator.generate(image, mask, **kwargs)
        real = self.real.get(_key(np.asarray(image)))
        if real is not None:
            result.changed_masks = [changed | real for changed in result.changed_masks]
            result.boxes = [mask_to_boxes(m) for m in result.changed_masks]
        return result


# ------------------------------------------------------------------------------ generators
def _resolve_base(config: RealStainsConfig, work: Path) -> tuple[str, bool]:
    """(base model, whether it is the random tiny fallback)."""
    from defectfill.bench.arms import RANDOM_BASE_WARNING, _looks_like_hub_id, build_random_base

    cfg = config.defectfill
    local = resolve_path(cfg.base_model, _base_dir(config))
    if local is not None and (local / "model_index.json").is_file():
        return str(local), False
    if local is None and _looks_like_hub_id(cfg.base_model):
        return cfg.base_model, False
    if not cfg.allow_random_base:
        raise ModelError(f"defectfill.base_model: {cfg.base_model!r} is not a diffusers model folder and "
                         "allow_random_base is false; build the offline base (defectfill pretrain-base) or name one")
    warning = RANDOM_BASE_WARNING.format(base=cfg.base_model, folder=work)
    print(f"\n{'!' * 100}\nWARNING: {warning}\n{'!' * 100}\n", file=sys.stderr, flush=True)
    logger.warning(warning)
    return str(build_random_base(work / "random-base", config.concept_seed)), True


def train_stain_concept(config: RealStainsConfig, train: list[DefectSample], out_dir: Path) -> tuple[Path, dict]:
    """Train (once) the DefectFill stain concept on the training half; returns (model dir, record)."""
    from defectfill.data.writers import write_masks
    from defectfill.training import train_defectfill

    work = out_dir / "defectfill"
    done = work / "train_done.json"
    base, random_base = _resolve_base(config, work)
    if done.is_file():
        record = json.loads(done.read_text())
        if record["base_model"] != base:
            raise ModelError(f"{work}: the stain concept was trained on base {record['base_model']!r}, the config now "
                             f"names {base!r}; delete {work} (and the defectfill arm folders) to retrain")
        return work / "model", record
    probe = train_config_for(config)
    crops = concept_training_crops(train, probe.resolution)
    data_dir = work / "crops"
    if not (data_dir / "defects.json").is_file():
        write_masks(crops, data_dir)
    train_config = train_config_for(
        config, pretrained_model_name_or_path=base, train_data_dir=str(data_dir), dataset_layout="folder",
        folder_defect_type=config.data.defect_type, defect_types=[config.data.defect_type],
        output_dir=str(work / "model"), seed=config.concept_seed, resume_from_checkpoint="latest")
    started = time.perf_counter()
    train_defectfill(train_config)
    record = {"base_model": base, "random_base": random_base, "seconds": time.perf_counter() - started,
              "crops": len(crops), "max_train_steps": train_config.max_train_steps,
              "resolution": train_config.resolution, "train_batch_size": train_config.train_batch_size}
    atomic_write_json(done, record)
    return work / "model", record


def build_generator(arm: str, config: RealStainsConfig, train: list[DefectSample], out_dir: Path) -> tuple[Any, dict]:
    """The generator of a synthetic arm, trained/fitted on the training half; and its notes."""
    if arm == "cutpaste":
        from gan_baselines.cutpaste import CutPaste

        return CutPaste(feather=config.cutpaste.feather).fit(train), {}
    import torch

    from defectfill.bench.arms import BoundDefectFill, _device
    from defectfill.models.defectfill import DefectFill
    from defectfill.selection import ensure_metric_available

    cfg = config.defectfill
    ensure_metric_available(cfg.selection_metric)
    model_dir, record = train_stain_concept(config, train, out_dir)
    model = DefectFill.from_pretrained(
        model_dir, base_model=record["base_model"], device=_device(cfg.device), dtype=getattr(torch, cfg.dtype),
        selection_metric=cfg.selection_metric, change_threshold=cfg.change_threshold, feather_px=cfg.feather_px)
    return BoundDefectFill(model, cfg.num_inference_steps, cfg.guidance_scale), record


def generate_requests(generator: Any, requests: list[Request], train: list[DefectSample], folder: Path,
                      config: RealStainsConfig, seed: int) -> Path:
    """Write the arm's generation folder (manifest + images + labels + contact sheet), resumable."""
    from defectfill.downstream.manifest import write_generation_manifest
    from defectfill.generation import write_contact_sheet

    write_generation_manifest(
        KeepRealLabels(generator, train), [r.sample.image for r in requests], [r.mask for r in requests],
        [config.data.defect_type] * len(requests), folder, seed=seed * 100_003,
        num_candidates=config.generation.num_candidates,
        source_names=[str(r.sample.meta.get("name", r.index)) for r in requests])
    write_contact_sheet(folder)
    return folder


def _generation_complete(folder: Path, expected: int) -> bool:
    from defectfill.bench.arms import generation_complete

    return generation_complete(folder, expected)


# ------------------------------------------------------------------------------ summary
METRICS = {  # name -> path in an arm's results.json
    "deeplab_f": ("deeplab", "per_class", "{cls}", "f_measure"),
    "deeplab_precision": ("deeplab", "per_class", "{cls}", "precision"),
    "deeplab_recall": ("deeplab", "per_class", "{cls}", "recall"),
    "rtdetr_map50": ("rtdetr", "mAP50"),
    "rtdetr_map50_95": ("rtdetr", "mAP50_95"),
    "kid_x1000": ("generation", "kid", "kid_x1000"),
    "contrast": ("generation", "contrast", "generated", "{cls}"),
}


def _lookup(results: dict, path: tuple[str, ...], cls: str) -> float | None:
    node: Any = results
    for key in path:
        key = key.format(cls=cls)
        if not isinstance(node, dict) or key not in node or node[key] is None:
            return None
        node = node[key]
    return float(node) if isinstance(node, (int, float)) else None


def summarise(per_seed: dict[int, dict[str, dict]], cls: str) -> dict[str, dict[str, dict]]:
    """{arm: {metric: {mean, std (sample), min, max, n, values}}} over the seeds."""
    arms = sorted({a for results in per_seed.values() for a in results}, key=lambda a: (a != REAL_ONLY, a))
    out: dict[str, dict[str, dict]] = {}
    for arm in arms:
        out[arm] = {}
        for metric, path in METRICS.items():
            values = [v for s in sorted(per_seed) if arm in per_seed[s]
                      if (v := _lookup(per_seed[s][arm], path, cls)) is not None]
            if not values:
                continue
            out[arm][metric] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
                                "min": min(values), "max": max(values), "n": len(values), "values": values}
    return out


def _fmt(stat: dict | None) -> str:
    if not stat:
        return "n/a"
    spread = f" ± {stat['std']:.3f}" if stat["std"] is not None else ""
    return f"{stat['mean']:.3f}{spread} [{stat['min']:.3f}, {stat['max']:.3f}]"


def markdown_table(summary: dict[str, dict[str, dict]], notes: list[str]) -> str:
    metrics = [m for m in METRICS if any(m in s for s in summary.values())]
    lines = ["| arm | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for arm, stats in summary.items():
        lines.append(f"| {arm} | " + " | ".join(_fmt(stats.get(m)) for m in metrics) + " |")
    n = max((s["n"] for stats in summary.values() for s in stats.values()), default=0)
    lines += ["", f"mean ± sample std [min, max] over {n} seed(s)."] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def _crop_around(image: np.ndarray, mask: np.ndarray, min_side: int = 32) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    side = int(max(min_side, 2 * max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)))
    side = min(side, *image.shape[:2])
    y0 = int(np.clip(round(cy - side / 2), 0, image.shape[0] - side))
    x0 = int(np.clip(round(cx - side / 2), 0, image.shape[1] - side))
    return image[y0 : y0 + side, x0 : x0 + side]


def write_stain_contact_sheet(train: list[DefectSample], generated: dict[str, Path], path: Path,
                              per_row: int = 8) -> Path:
    """Rows of crops: real training stains, then each synthetic arm's stains (request masks); no
    outlines, so that the stains are seen as they are."""
    from defectfill.data.images import load_image, load_mask
    from defectfill.downstream.manifest import read_generation_manifest
    from defectfill.masks import connected_components
    from defectfill.viz import save_contact_sheet

    images, captions = [], []
    real = []
    for sample in train:
        if sample.mask.any():
            labels, count = connected_components(sample.mask)
            sizes = [(labels == k).sum() for k in range(1, count + 1)]
            real.append(_crop_around(sample.image, labels == 1 + int(np.argmax(sizes))))
    for crop in real[:per_row]:
        images.append(crop)
        captions.append("real")
    for arm, folder in generated.items():
        for item in read_generation_manifest(folder)[:per_row]:
            images.append(_crop_around(load_image(item.image), load_mask(item.request_mask)))
            captions.append(arm)
    return save_contact_sheet(path, images, captions=captions, ncols=per_row, tile=128)


# ------------------------------------------------------------------------------ the run
def run_real_stains(config: RealStainsConfig, out_dir: str | Path) -> dict[str, Any]:
    """The whole run (module docstring); returns summary.json's content."""
    from defectfill.downstream.arm import run_arm

    config.validate()
    out_dir = Path(out_dir)
    started = time.perf_counter()
    train, test = load_split(config)
    cls = config.data.defect_type
    atomic_write_json(out_dir / "split.json", {
        "rule": config.data.split, "image_size": config.data.image_size,
        "train": [s.meta["name"] for s in train], "test": [s.meta["name"] for s in test],
        "train_good": [s.meta["name"] for s in train if s.is_good], "test_good": [s.meta["name"] for s in test if s.is_good],
    })
    generators: dict[str, Any] = {}
    notes: list[str] = [(f"{len(train)} training / {len(test)} test images ({config.data.split} split of sorted "
                         f"stems), resized to {config.data.image_size} px")]
    generator_records: dict[str, dict] = {}
    per_seed: dict[int, dict[str, dict]] = {}
    seconds: dict[str, float] = {}
    for seed in config.seeds:
        seed_dir = out_dir / f"seed-{seed}"
        requests = plan_requests(train, config, seed)
        per_seed[seed] = {}
        for arm in config.arms:
            manifests: list[Path] = []
            if arm != REAL_ONLY:
                folder = seed_dir / "generated" / arm
                if not _generation_complete(folder, len(requests)):
                    if arm not in generators:
                        t0 = time.perf_counter()
                        generators[arm], generator_records[arm] = build_generator(arm, config, train, out_dir)
                        seconds[f"build:{arm}"] = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    generate_requests(generators[arm], requests, train, folder, config, seed)
                    seconds[f"generate:{arm}:seed-{seed}"] = time.perf_counter() - t0
                manifests = [folder]
            t0 = time.perf_counter()
            per_seed[seed][arm] = run_arm(arm, train, test, downstream_config_for(config, seed), seed_dir,
                                          manifests=manifests)
            seconds[f"arm:{arm}:seed-{seed}"] = time.perf_counter() - t0
    done = out_dir / "defectfill" / "train_done.json"
    if "defectfill" in config.arms and done.is_file():
        record = json.loads(done.read_text())
        generator_records["defectfill"] = record
        if record["random_base"]:
            notes.append("DefectFill ran on a RANDOM tiny base (the offline base was missing): its stains are noise "
                         "and the defectfill row is plumbing, not a result")
        else:
            info_path = Path(record["base_model"]) / "training_info.json"  # written by the base's pretraining
            base_info = json.loads(info_path.read_text()) if info_path.is_file() else {}
            steps = f" (UNet trained {base_info['unet_steps']} steps)" if "unet_steps" in base_info else ""
            notes.append(f"DefectFill base: {record['base_model']}{steps}; concept trained once (seed "
                         f"{config.concept_seed}) for {record['max_train_steps']} steps on {record['crops']} stain windows")
    first = config.seeds[0]
    generated = {a: out_dir / f"seed-{first}" / "generated" / a for a in config.arms if a != REAL_ONLY}
    sheet = write_stain_contact_sheet(train, generated, out_dir / "contact_sheet.png") if train else None
    summary_stats = summarise(per_seed, cls)
    real_contrast = next((v for by_arm in per_seed.values() for result in by_arm.values()
                          if (v := _lookup(result, ("generation", "contrast", "real_test", "{cls}"), cls)) is not None),
                         None)
    if real_contrast is not None:
        notes.append(f"contrast: median grey level in the stain minus its 2-6 px ring (0-255); the real test "
                     f"stains: {real_contrast:.1f}")
    table = markdown_table(summary_stats, notes)
    atomic_write_text(out_dir / "table.md", table)
    summary = {"name": config.name, "summary": summary_stats, "notes": notes, "split": json.loads(
        (out_dir / "split.json").read_text()), "generators": generator_records, "contact_sheet": str(sheet),
        "seconds_this_call": time.perf_counter() - started, "stage_seconds_this_call": seconds,
        "config": to_dict(config)}
    atomic_write_json(out_dir / SUMMARY_NAME, summary)
    return summary
