"""Dataset writers: DefectSamples -> MVTec-AD, YOLO, COCO, or image + mask folders.

Every file is written atomically (temp file + rename, `defectfill.io_utils`). Images are written
as PNG (lossless: a JPEG source is not re-compressed). Sample names come from `meta["name"]`, else
the source file's stem, else `sample_<index>`; names that collide in one folder get `_<k>`.

Labels: a sample's boxes are `sample.boxes` when set, else the minimal box of each connected
component of its mask (`masks.mask_to_boxes`); the class of each box is `meta["box_classes"]`
when it matches the boxes, else the sample's `defect_type`. COCO segmentations are the mask inside
each box as compressed RLE; samples whose masks are filled boxes (`meta["mask_from_boxes"]`) get
an empty segmentation, so a reader knows they carry boxes only. YOLO keeps boxes only.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from defectfill.data.images import save_image, save_mask
from defectfill.data.sample import DefectSample
from defectfill.errors import DataError
from defectfill.io_utils import atomic_write_json, atomic_write_text
from defectfill.masks import boxes_to_mask, mask_to_boxes, merge_boxes

__all__ = [
    "class_index_mask", "class_names_of", "coco_annotations", "coco_categories", "hold_out_good", "sample_labels",
    "tidy_boxes", "write_coco",
    "write_masks", "write_mvtec", "write_yolo", "yolo_line",
]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _base_name(sample: DefectSample, index: int) -> str:
    name = sample.meta.get("name") or (Path(sample.source).stem if sample.source else f"sample_{index:05d}")
    return _UNSAFE.sub("_", str(name)).strip("._") or f"sample_{index:05d}"


class _NameBook:
    """Unique file names per folder: a repeated name gets `_1`, `_2`, ... appended."""

    def __init__(self) -> None:
        self.used: dict[str, set[str]] = {}

    def take(self, folder: str, name: str) -> str:
        used = self.used.setdefault(folder, set())
        candidate, k = name, 1
        while candidate in used:
            candidate, k = f"{name}_{k}", k + 1
        used.add(candidate)
        return candidate


def sample_labels(sample: DefectSample) -> tuple[np.ndarray, list[str]]:
    """(N, 4) boxes and their class names for one sample (empty for a good image)."""
    if sample.is_good:
        return np.zeros((0, 4), dtype=np.int64), []
    boxes = sample.boxes if sample.boxes is not None else mask_to_boxes(sample.mask)
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    classes = sample.meta.get("box_classes")
    if not isinstance(classes, (list, tuple)) or len(classes) != len(boxes):
        classes = [sample.defect_type] * len(boxes)
    return boxes, [str(c) for c in classes]


MIN_BOX_PX = 4  # like masks.clean_mask's min_area: 1-3 px specks are mask residue (anti-aliased edges)


def tidy_boxes(
    sample: DefectSample, min_box_px: int = MIN_BOX_PX, merge_gap: int | None = None
) -> tuple[DefectSample | None, int, int]:
    """A defect sample's labels made fit to write: boxes holding fewer than `min_box_px` defect
    pixels are dropped (their pixels cleared from the mask), then boxes of one class separated by at
    most `merge_gap` px are merged into their enclosing box (`masks.merge_boxes`; None: no merging).

    Returns (the sample, a copy when changed, or None when no box is left: the caller leaves it out;
    the number of boxes dropped; the number removed by merging). A box-only sample keeps its mask =
    the filled boxes. Good samples pass unchanged.
    """
    if min_box_px < 1:
        raise DataError(f"min_box_px must be >= 1, found {min_box_px}")
    if merge_gap is not None and merge_gap < 0:
        raise DataError(f"merge_gap must be >= 0 (or None: no merging), found {merge_gap}")
    if sample.is_good:
        return sample, 0, 0
    boxes, classes = sample_labels(sample)
    pixels = np.asarray([sample.mask[y0:y1, x0:x1].sum() for x0, y0, x1, y1 in boxes.tolist()], dtype=np.int64)
    keep = pixels >= min_box_px
    dropped = int((~keep).sum())
    boxes, classes = boxes[keep], [c for c, k in zip(classes, keep) if k]
    merged = 0
    if merge_gap is not None and len(boxes) > 1:
        new_boxes, new_classes = [], []
        for name in sorted(set(classes)):
            group = merge_boxes(boxes[[c == name for c in classes]], merge_gap)
            new_boxes.append(group)
            new_classes += [name] * len(group)
        merged = len(boxes) - len(new_classes)
        boxes, classes = np.concatenate(new_boxes).reshape(-1, 4), new_classes
    if dropped == 0 and merged == 0:
        return sample, 0, 0
    if len(boxes) == 0:
        return None, dropped, merged
    inside = boxes_to_mask(boxes, sample.mask.shape)
    mask = inside if sample.meta.get("mask_from_boxes") else sample.mask & inside
    meta = {**sample.meta, "box_classes": classes}
    return dataclasses.replace(sample, mask=mask, boxes=boxes, meta=meta), dropped, merged


def class_names_of(samples: Sequence[DefectSample]) -> list[str]:
    """Sorted defect class names present in `samples` ("good" excluded)."""
    names = set()
    for s in samples:
        names.update(sample_labels(s)[1])
    return sorted(names)


def _class_index(class_names: Sequence[str], name: str, where: str) -> int:
    try:
        return list(class_names).index(name)
    except ValueError:
        raise DataError(
            f"{where}: defect class {name!r} is not in class_names {list(class_names)}; "
            f"add it to class_names (or leave class_names unset to take the classes found)"
        ) from None


def hold_out_good(
    samples: Sequence[DefectSample], fraction: float, seed: int = 0
) -> tuple[list[DefectSample], int]:
    """Mark a seeded `fraction` of the good images as the test split (MVTec-AD's `test/good`, what
    an anomaly detector is scored on besides the defects); the rest of them as train.

    Only good samples without a `meta["split"]` are touched (an MVTec source keeps its own split).
    They are drawn in whole groups: the tiles of one strip (`meta["parent"]`) stay together, so that
    no test tile overlaps a training tile. round(fraction x groups) groups go to test, at least one
    when fraction > 0, never all of them (train/good keeps one group). Returns (samples with the
    split set, copies where changed; the number of good samples held out).
    """
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"test-good fraction must be in [0, 1), found {fraction}")
    free = [i for i, s in enumerate(samples) if s.is_good and not s.meta.get("split")]
    groups: dict[str, list[int]] = {}
    for i in free:
        meta = samples[i].meta
        groups.setdefault(str(meta.get("parent") or meta.get("name") or f"sample_{i}"), []).append(i)
    keys = sorted(groups)
    n_test = min(len(keys) - 1, max(1, round(fraction * len(keys)))) if fraction > 0 and keys else 0
    rng = np.random.default_rng(seed)
    test_keys = {keys[k] for k in rng.choice(len(keys), size=n_test, replace=False)} if n_test > 0 else set()
    out = list(samples)
    held_out = 0
    for key in keys:
        for i in groups[key]:
            split = "test" if key in test_keys else "train"
            held_out += split == "test"
            out[i] = dataclasses.replace(samples[i], meta={**samples[i].meta, "split": split})
    return out, held_out


def write_mvtec(samples: Sequence[DefectSample], root: str | Path, split: str | None = None) -> Path:
    """MVTec-AD layout: good images in `<split>/good/` (split: argument, else meta["split"], else
    "train"; `hold_out_good` sets a test share), defects in `test/<type>/` with masks
    `ground_truth/<type>/<name>_mask.png` (MVTec-AD keeps no defects in train/)."""
    root = Path(root)
    names = _NameBook()
    for i, sample in enumerate(samples):
        base = _base_name(sample, i)
        if sample.is_good:
            folder = f"{split or sample.meta.get('split') or 'train'}/good"
            name = names.take(folder, base)
            save_image(root / folder / f"{name}.png", sample.image)
            continue
        folder = f"test/{sample.defect_type}"
        name = names.take(folder, base)
        save_image(root / folder / f"{name}.png", sample.image)
        save_mask(root / "ground_truth" / sample.defect_type / f"{name}_mask.png", sample.mask)
    return root


def yolo_line(class_index: int, box: Sequence[float], width: int, height: int) -> str:
    """One YOLO label line: `class cx cy w h`, normalised to the image, 6 decimals."""
    x0, y0, x1, y1 = box
    return f"{class_index} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} {(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}"


def _yolo_yaml_text(root: Path, class_names: Sequence[str]) -> str:
    splits = {s: f"images/{s}" for s in ("train", "val", "test") if (root / "images" / s).is_dir()}
    if not splits:
        raise DataError(f"{root}: no images/<split>/ folder written")
    data: dict[str, Any] = {"path": str(root.resolve())}
    data["train"] = splits.get("train") or next(iter(splits.values()))
    # ultralytics requires a val entry: without a val split, validate on the first split written
    data["val"] = splits.get("val") or data["train"]
    if "test" in splits:
        data["test"] = splits["test"]
    data["nc"] = len(class_names)
    data["names"] = {i: n for i, n in enumerate(class_names)}
    return yaml.safe_dump(data, sort_keys=False)


def write_yolo(
    samples: Sequence[DefectSample],
    root: str | Path,
    class_names: Sequence[str] | None = None,
    split: str = "train",
) -> Path:
    """YOLO detection layout: `images/<split>/<name>.png`, `labels/<split>/<name>.txt`
    (`class cx cy w h`, normalised, 6 decimals; an empty file for a good image) and `data.yaml`
    with the absolute `path:` and the names. Pixel masks are not kept (boxes only).

    Writing a second split into the same root adds it to data.yaml; the class names must match.
    Returns the data.yaml path.
    """
    root = Path(root)
    class_names = list(class_names) if class_names is not None else class_names_of(samples)
    existing = root / "data.yaml"
    if existing.is_file():
        old = (yaml.safe_load(existing.read_text()) or {}).get("names")
        old_names = [old[k] for k in sorted(old)] if isinstance(old, dict) else old
        if old_names is not None and list(old_names) != class_names:
            raise DataError(
                f"{existing}: holds names {old_names} but this split has {class_names}; "
                f"pass the same class_names for every split, or write to a new folder"
            )
    names = _NameBook()
    for i, sample in enumerate(samples):
        name = names.take(split, _base_name(sample, i))
        h, w = sample.size
        boxes, classes = sample_labels(sample)
        lines = []
        for (x0, y0, x1, y1), cls in zip(boxes, classes):
            lines.append(yolo_line(_class_index(class_names, cls, f"sample {name}"), (x0, y0, x1, y1), w, h))
        save_image(root / "images" / split / f"{name}.png", sample.image)
        atomic_write_text(root / "labels" / split / f"{name}.txt", "".join(line + "\n" for line in lines))
    atomic_write_text(existing, _yolo_yaml_text(root, class_names))
    return existing


def _rle(mask: np.ndarray) -> dict[str, Any]:
    from faster_coco_eval.core import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    counts = rle["counts"]
    return {"size": [int(v) for v in rle["size"]], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def coco_annotations(
    mask: np.ndarray, boxes: np.ndarray, category_ids: Sequence[int], image_id: int, first_id: int,
    box_only: bool = False,
) -> list[dict[str, Any]]:
    """COCO annotations of one image: bbox [x, y, w, h] in pixels, segmentation = the mask inside the
    box as compressed RLE (empty when `box_only`: the mask is only the filled boxes), area = its pixel
    count (the box area when box-only); ids count up from `first_id`."""
    h, w = mask.shape
    out = []
    for k, ((x0, y0, x1, y1), category_id) in enumerate(zip(np.asarray(boxes).tolist(), category_ids)):
        inside = np.zeros((h, w), dtype=bool)
        inside[y0:y1, x0:x1] = mask[y0:y1, x0:x1]
        out.append({
            "id": first_id + k, "image_id": image_id, "category_id": int(category_id),
            "bbox": [int(x0), int(y0), int(x1 - x0), int(y1 - y0)],
            "area": int((x1 - x0) * (y1 - y0)) if box_only else int(inside.sum()),
            "iscrowd": 0, "segmentation": [] if box_only else _rle(inside),
        })
    return out


def coco_categories(class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Category ids 1..K in the order of `class_names`."""
    return [{"id": k + 1, "name": n, "supercategory": "defect"} for k, n in enumerate(class_names)]


def class_index_mask(mask: np.ndarray, boxes: np.ndarray, class_indices: Sequence[int]) -> np.ndarray:
    """(H, W) uint8: 0 background, k + 1 where the mask is set inside a box of class k."""
    if len(class_indices) and max(class_indices) > 253:
        raise DataError(f"class-index masks: {max(class_indices) + 1} classes do not fit in 8 bits (at most 254)")
    index = np.zeros(mask.shape, dtype=np.uint8)
    for (x0, y0, x1, y1), k in zip(np.asarray(boxes).tolist(), class_indices):
        index[y0:y1, x0:x1][mask[y0:y1, x0:x1]] = k + 1
    return index


def write_coco(
    samples: Sequence[DefectSample],
    json_path: str | Path,
    images_dir: str | Path | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """COCO instances JSON (+ the images as PNG in `images_dir`, default `images/` beside the JSON).

    One annotation per box (see `sample_labels`): bbox [x, y, w, h] in pixels, segmentation = the
    mask inside the box as compressed RLE (empty for box-only samples), area = its pixel count.
    Category ids are 1..K in the order of `class_names`. Good images are listed without
    annotations. Returns the JSON path.
    """
    json_path = Path(json_path)
    images_dir = Path(images_dir) if images_dir is not None else json_path.parent / "images"
    class_names = list(class_names) if class_names is not None else class_names_of(samples)
    names = _NameBook()
    images, annotations = [], []
    for i, sample in enumerate(samples):
        name = names.take("images", _base_name(sample, i))
        h, w = sample.size
        file_name = f"{name}.png"
        save_image(images_dir / file_name, sample.image)
        try:
            file_ref = str((images_dir / file_name).relative_to(json_path.parent / "images"))
        except ValueError:
            file_ref = file_name
        image_id = i + 1
        images.append({"id": image_id, "file_name": file_ref, "width": w, "height": h})
        boxes, classes = sample_labels(sample)
        ids = [_class_index(class_names, cls, f"sample {name}") + 1 for cls in classes]
        annotations += coco_annotations(sample.mask, boxes, ids, image_id, len(annotations) + 1,
                                        box_only=bool(sample.meta.get("mask_from_boxes")))
    categories = coco_categories(class_names)
    atomic_write_json(json_path, {"images": images, "annotations": annotations, "categories": categories})
    return json_path


def write_masks(
    samples: Sequence[DefectSample],
    root: str | Path,
    class_names: Sequence[str] | None = None,
    index_masks: bool = False,
) -> Path:
    """Image + mask folder: `images/<name>.png`, `masks/<name>.png` and `defects.json`
    ({"classes": [...], "types": {name: defect_type}}), readable by `read_image_mask_folder`.

    Masks are 0/255 by default; `index_masks=True` writes class indices instead (0 background,
    k + 1 for class_names[k], per box when `meta["box_classes"]` says so), the input of a
    multi-class segmenter.
    """
    root = Path(root)
    class_names = list(class_names) if class_names is not None else class_names_of(samples)
    names = _NameBook()
    types = {}
    for i, sample in enumerate(samples):
        name = names.take("images", _base_name(sample, i))
        types[name] = sample.defect_type
        save_image(root / "images" / f"{name}.png", sample.image)
        if not index_masks:
            save_mask(root / "masks" / f"{name}.png", sample.mask)
            continue
        boxes, classes = sample_labels(sample)
        indices = [_class_index(class_names, cls, f"sample {name}") for cls in classes]
        save_image(root / "masks" / f"{name}.png", class_index_mask(sample.mask, boxes, indices))
    atomic_write_json(root / "defects.json", {"classes": class_names, "types": types})
    return root
