"""Dataset assembly: real samples + generation manifests -> one training set with its recipe.

Input: real samples (a list of `DefectSample`, or an MVTec-AD category folder whose train split
is read) and any number of generation folders. A generation folder is what every generator
writes (defined in `defectfill.generators.manifest`): `manifest.jsonl` with one JSON line per
generated image, {"image", "changed_mask", "request_mask", "defect_type", "source_image",
"boxes": [[x0, y0, x1, y1], ...], "score", "seed", "generator"}, paths relative to the folder.

Labels: a real sample's label is its defect mask; a generated image's label is its
*changed-pixel* mask (what really changed, not what was asked for). Boxes are the minimal
rectangle of each connected component (`assemble.boxes`: component, the default; or instance /
split, `defectfill.masks.label_boxes`); zero-area boxes are
dropped and counted; a generated image whose changed mask is empty carries no defect and is
dropped and counted.

Output folder (all files written atomically):

    images/{train,val}/<name>.png        RGB images
    labels/{train,val}/<name>.txt        YOLO labels: `class cx cy w h`, normalised (ultralytics)
    masks/{train,val}/<name>.png         class-index masks: 0 background, i+1 = classes[i] (DeepLabV3)
    coco_{train,val}.json                COCO boxes + RLE masks (category id i+1 = classes[i])
    data.yaml                            ultralytics dataset file (absolute `path`)
    index.jsonl                          one line per image: split, origin (real|synthetic), source
    recipe.json                          sources, counts per class, real:synthetic ratio, seeds

Before anything is written, every manifest is checked (all missing files listed in one DataError)
and every class found in the data must be one of the configured classes (DataError listing the
others).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from defectfill.config import to_dict
from defectfill.data.images import save_image
from defectfill.data.sample import DefectSample
from defectfill.data.writers import class_index_mask, coco_annotations, coco_categories, yolo_line
from defectfill.downstream.config import AssembleConfig
from defectfill.errors import DataError
from defectfill.generators.manifest import GeneratedItem, read_generation_manifest
from defectfill.io_utils import atomic_write_json, atomic_write_text

RECIPE_NAME = "recipe.json"


@dataclass
class _Entry:
    """One image to write, before it is loaded (synthetic images are loaded lazily)."""

    origin: str  # "real" | "synthetic"
    defect_type: str
    source: str
    sample: DefectSample | None = None
    item: GeneratedItem | None = None
    manifest: str | None = None


@dataclass
class AssembledDataset:
    """An assembled training set on disk."""

    root: Path
    classes: list[str]
    recipe: dict[str, Any]

    @property
    def data_yaml(self) -> Path:
        return self.root / "data.yaml"

    def images(self, split: str) -> list[Path]:
        return sorted((self.root / "images" / split).glob("*.png"))

    def mask_path(self, image_path: Path) -> Path:
        return self.root / "masks" / image_path.parent.name / image_path.name


def load_assembled(root: str | Path) -> AssembledDataset:
    """Open a folder written by `assemble` (checked by its recipe.json)."""
    root = Path(root)
    recipe_path = root / RECIPE_NAME
    if not recipe_path.is_file():
        raise DataError(f"{root}: no {RECIPE_NAME}; this is not an assembled dataset, run `defectfill assemble` first")
    recipe = json.loads(recipe_path.read_text())
    return AssembledDataset(root=root, classes=list(recipe["classes"]), recipe=recipe)


def _read_real(real: Sequence[DefectSample] | str | Path) -> tuple[list[DefectSample], str]:
    if isinstance(real, (str, Path)):
        from defectfill.data.readers import read_mvtec

        return read_mvtec(real, "train"), str(Path(real).resolve())
    return list(real), describe_sources(real)


def describe_sources(samples: Sequence[DefectSample], limit: int = 5) -> str:
    """Where in-memory samples came from, for the recipe: their files' folders (at most `limit`, with
    counts), or "<in-memory samples>" for samples made in memory."""
    from collections import Counter

    folders = Counter(str(Path(s.source).resolve().parent) for s in samples if s.source is not None)
    if not folders:
        return "<in-memory samples>"
    parts = [f"{folder} ({count})" for folder, count in folders.most_common(limit)]
    more = len(folders) - limit
    made = sum(s.source is None for s in samples)
    return "; ".join(parts) + (f"; {more} more folders" if more > 0 else "") + (f"; {made} made in memory" if made else "")


def _check_classes(entries: Sequence[_Entry], classes: Sequence[str]) -> None:
    unknown = Counter(e.defect_type for e in entries if e.defect_type != "good" and e.defect_type not in classes)
    if unknown:
        raise DataError(
            f"the data holds defect types {dict(unknown)} (type: image count) that the config does not name; "
            f"configured classes are {list(classes)}; add them to `classes` or remove those images"
        )


def _split_real(real: list[_Entry], fraction: float, rng: np.random.Generator) -> tuple[list[_Entry], list[_Entry]]:
    if fraction <= 0:
        return real, []
    if fraction >= 1:
        raise DataError(f"assemble.val_fraction is {fraction}; expected a value in [0, 1)")
    # stratified by class, so that each class keeps real training images
    train, val = [], []
    for defect_type in sorted({e.defect_type for e in real}):
        group = [e for e in real if e.defect_type == defect_type]
        order = rng.permutation(len(group))
        n_val = round(len(group) * fraction) if len(group) > 1 else 0
        val += [group[i] for i in order[:n_val]]
        train += [group[i] for i in order[n_val:]]
    return train, val


def assemble(
    real: Sequence[DefectSample] | str | Path,
    manifests: Sequence[str | Path],
    out_dir: str | Path,
    classes: Sequence[str],
    config: AssembleConfig | None = None,
    seed: int = 0,
) -> AssembledDataset:
    """Write the training set (layout in the module docstring) and return it."""
    config = config or AssembleConfig()
    out_dir = Path(out_dir)
    classes = list(classes)
    if (out_dir / RECIPE_NAME).exists():
        raise DataError(f"{out_dir}: already holds an assembled dataset ({RECIPE_NAME}); choose a new folder or delete it")
    rng = np.random.default_rng(seed)

    samples, real_source = _read_real(real)
    real_entries = [
        _Entry("real", s.defect_type, str(s.source) if s.source else f"real[{i}]", sample=s)
        for i, s in enumerate(samples)
        if config.include_good or not s.is_good
    ]
    synthetic_entries: list[_Entry] = []
    sources: list[dict[str, Any]] = [{"kind": "real", "path": real_source, "images": len(real_entries)}]
    missing_errors = []
    for folder in manifests:
        try:
            items = read_generation_manifest(folder)
        except DataError as exc:
            missing_errors.append(str(exc))
            continue
        generators = sorted({it.generator for it in items})
        sources.append({"kind": "generated", "path": str(Path(folder).resolve()), "generators": generators,
                        "images": len(items),
                        "seed_range": [min(it.seed for it in items), max(it.seed for it in items)] if items else None})
        synthetic_entries += [
            _Entry("synthetic", it.defect_type, it.source_image, item=it, manifest=str(folder)) for it in items
        ]
    if missing_errors:  # every manifest's problems at once, before anything is written
        raise DataError(" | ".join(missing_errors))
    _check_classes(real_entries + synthetic_entries, classes)

    capped = 0
    if config.max_synthetic_per_class is not None:
        kept = []
        for defect_type in classes:
            group = [e for e in synthetic_entries if e.defect_type == defect_type]
            order = rng.permutation(len(group))[: config.max_synthetic_per_class]
            kept += [group[i] for i in sorted(order)]
        capped = len(synthetic_entries) - len(kept)
        synthetic_entries = kept

    train_real, val_real = _split_real(real_entries, config.val_fraction, rng)
    splits = {"train": train_real + synthetic_entries, "val": val_real or train_real}
    stats = Counter()
    counts: dict[str, dict[str, Counter]] = {s: {"real": Counter(), "synthetic": Counter()} for s in splits}
    index_lines = []
    names = {"real": 0, "synthetic": 0}
    written: dict[int, str] = {}  # one name per image, also when val repeats the real training images
    for split, entries in splits.items():
        coco = {"images": [], "annotations": [], "categories": coco_categories(classes)}
        for entry in entries:
            if entry.sample is not None:
                image, mask = entry.sample.image, entry.sample.mask
            else:
                image, mask = entry.item.load()
                if not mask.any():
                    stats["synthetic_dropped_empty_changed_mask"] += 1
                    continue
            if id(entry) not in written:
                prefix = "real" if entry.origin == "real" else "syn"
                written[id(entry)] = f"{prefix}_{names[entry.origin]:05d}"
                names[entry.origin] += 1
            name = written[id(entry)]
            height, width = mask.shape
            is_defect = entry.defect_type != "good"
            class_index = classes.index(entry.defect_type) if is_defect else -1
            boxes = config.label_boxes(mask) if is_defect else np.zeros((0, 4), np.int64)
            if is_defect and entry.sample is not None and entry.sample.boxes is not None and not mask.any():
                boxes = np.asarray(entry.sample.boxes, np.int64).reshape(-1, 4)  # box-only real labels
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            stats["zero_area_boxes_dropped"] += int((area <= 0).sum())
            boxes = boxes[area > 0]
            class_mask = class_index_mask(mask, boxes, [class_index] * len(boxes))

            save_image(out_dir / "images" / split / f"{name}.png", image)
            save_image(out_dir / "masks" / split / f"{name}.png", class_mask)
            atomic_write_text(out_dir / "labels" / split / f"{name}.txt",
                              "".join(yolo_line(class_index, box, width, height) + "\n" for box in boxes))
            image_id = len(coco["images"]) + 1
            coco["images"].append({"id": image_id, "file_name": f"images/{split}/{name}.png", "width": width, "height": height})
            box_only = entry.sample is not None and bool(entry.sample.meta.get("mask_from_boxes"))
            coco["annotations"] += coco_annotations(mask, boxes, [class_index + 1] * len(boxes), image_id,
                                                    len(coco["annotations"]) + 1, box_only=box_only or not mask.any())
            counts[split][entry.origin][entry.defect_type] += 1
            index_lines.append(json.dumps({
                "file": f"images/{split}/{name}.png", "split": split, "origin": entry.origin,
                "defect_type": entry.defect_type, "source": entry.source, "boxes": boxes.tolist(),
                **({"manifest": entry.manifest, "seed": entry.item.seed} if entry.item is not None else {}),
            }))
        atomic_write_json(out_dir / f"coco_{split}.json", coco)

    data = {"path": str(out_dir.resolve()), "train": "images/train", "val": "images/val",
            "names": {i: c for i, c in enumerate(classes)}}
    atomic_write_text(out_dir / "data.yaml", yaml.safe_dump(data, sort_keys=False))
    atomic_write_text(out_dir / "index.jsonl", "".join(line + "\n" for line in index_lines))

    n_real = sum(counts["train"]["real"].values())
    n_synthetic = sum(counts["train"]["synthetic"].values())
    recipe = {
        "classes": classes,
        "sources": sources,
        "counts": {split: {origin: dict(sorted(c.items())) for origin, c in by.items()} for split, by in counts.items()},
        "train_images": {"real": n_real, "synthetic": n_synthetic},
        "ratio_real_to_synthetic": f"1:{n_synthetic / n_real:.3g}" if n_real else f"0:{n_synthetic}",
        "val_from": "held-out real images" if val_real else "the real training images (val_fraction 0)",
        "dropped": {"zero_area_boxes": stats["zero_area_boxes_dropped"],
                    "synthetic_empty_changed_mask": stats["synthetic_dropped_empty_changed_mask"],
                    "synthetic_over_cap": capped},
        "seed": seed,
        "config": to_dict(config),
    }
    atomic_write_json(out_dir / RECIPE_NAME, recipe)  # last: its presence marks a complete folder
    return AssembledDataset(root=out_dir, classes=classes, recipe=recipe)
