"""Dataset readers: MVTec-AD, image+mask folders, COCO, YOLO (and AITEX via `aitex`) -> DefectSamples.

Every reader returns `list[DefectSample]` and fills an optional `ReadReport` with what it met:
conversions (greyscale, RGBA, palette, 16-bit, anti-aliased or index masks), skipped images
(missing or empty mask where a defect is declared) and clipped labels, each counted with example
files. Convertible quirks are converted and warned once per kind (with the count); broken input
(unreadable or truncated image, mask of another size, duplicate names, labels outside the image,
malformed label files) raises a `DataError` naming the file, what was found and the fix.

Sample metadata written by the readers: `meta["name"]` (a file stem, unique within its split and
type), `meta["split"]`, `meta["layout"]`; YOLO and box-only COCO samples carry
`meta["mask_from_boxes"] = True` (their masks are filled boxes, not pixel labels); multi-instance
samples carry `meta["box_classes"]`, the class of each row of `sample.boxes`.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from defectfill.data.aitex import GOOD_CODE, parse_name
from defectfill.data.images import IMAGE_SUFFIXES, list_images
from defectfill.data.reading import (
    QUIRKS,
    UNLABELLED_POLICIES,
    ReadReport,
    check_policy,
    read_image,
    read_mask,
    unlabelled_sample,
)
from defectfill.data.sample import DefectSample
from defectfill.errors import DataError
from defectfill.safe_load import check_inside

__all__ = [
    "FOLDER_DEFECT_TYPE",
    "LAYOUTS",
    "QUIRKS",
    "UNLABELLED_POLICIES",
    "ReadReport",
    "detect_layout",
    "read_coco",
    "read_dataset",
    "read_good_images",
    "read_image_mask_folder",
    "read_mvtec",
    "read_yolo",
]

LAYOUTS = ("mvtec", "folder", "coco", "yolo", "aitex", "good")
# The class of an image + mask folder that does not name it (no defect_type=, no defects.json):
# neutral, never a guess such as "stain"; the reader warns how to name it.
FOLDER_DEFECT_TYPE = "defect"

MASK_DIRS = ("annotations", "masks", "ground_truth", "mask", "gt")
YOLO_YAML = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")


def _unique_stems(paths: list[Path], where: Path) -> dict[str, Path]:
    """stem -> path; two images with the same stem (x.png and x.jpg) are ambiguous."""
    by_stem: dict[str, Path] = {}
    for p in paths:
        if p.stem in by_stem:
            raise DataError(
                f"{where}: duplicate image name {p.stem!r} ({by_stem[p.stem].name} and {p.name}); "
                f"names must be unique (their masks and labels are found by name): rename or remove one"
            )
        by_stem[p.stem] = p
    return by_stem


def _find_mask(folder: Path, stem: str, beside_image: bool = False) -> Path | None:
    """`<stem>_mask.*`, or `<stem>.*` in a mask folder; never the image itself when the masks lie
    beside the images (`beside_image`): there an image without a mask must read as one."""
    for name in (f"{stem}_mask",) if beside_image else (f"{stem}_mask", stem):
        for suffix in (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".webp"):
            p = folder / f"{name}{suffix}"
            if p.is_file():
                return p
    return None


# --------------------------------------------------------------------------------------------
# MVTec-AD
# --------------------------------------------------------------------------------------------


def read_mvtec(
    root: str | Path, split: str = "train", report: ReadReport | None = None, unlabelled: str = "skip"
) -> list[DefectSample]:
    """One MVTec-AD category folder: `train/good`, `test/<type>`, `ground_truth/<type>/<stem>_mask.png`.

    split: "train", "test" or "all". Defect folders under train/ (some MVTec-like sets keep a
    few defects there) are read like test/, with masks from ground_truth/<type>/.
    unlabelled: what to do with a defect image whose mask is missing or empty: "skip" (counted
    in the report, warned), "good" (kept as a good image) or "error" (DataError).
    """
    root = Path(root)
    check_policy(unlabelled)
    report = report if report is not None else ReadReport()
    report.layout, report.root = report.layout or "mvtec", report.root or root
    splits = ("train", "test") if split == "all" else (split,)
    if split not in ("train", "test", "all"):
        raise DataError(f"read_mvtec: split must be 'train', 'test' or 'all', found {split!r}")
    if not any((root / s).is_dir() for s in ("train", "test")):
        raise DataError(
            f"{root}: not an MVTec-AD category folder (no train/ or test/); expected train/good/*.png, "
            f"test/<type>/*.png and ground_truth/<type>/<stem>_mask.png"
        )
    samples: list[DefectSample] = []
    for split_name in splits:
        split_dir = root / split_name
        if not split_dir.is_dir():
            continue
        for type_dir in sorted(d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")):
            defect_type = type_dir.name
            for stem, image_path in _unique_stems(list_images(type_dir), type_dir).items():
                image, is_gray = read_image(image_path, report)
                meta = {"name": stem, "split": split_name, "layout": "mvtec"}
                mask = np.zeros(image.shape[:2], dtype=bool)
                mask_path = None
                kind = defect_type
                if defect_type != "good":
                    mask_path = _find_mask(root / "ground_truth" / defect_type, stem)
                    if mask_path is None:
                        kind = unlabelled_sample(
                            "missing_mask", image_path, unlabelled, report,
                            f"expected {root / 'ground_truth' / defect_type / (stem + '_mask.png')}",
                        )
                    else:
                        mask = read_mask(mask_path, image.shape[:2], report)
                        if not mask.any():
                            kind = unlabelled_sample(
                                "empty_mask", mask_path, unlabelled, report,
                                "draw the defect in the mask or move the image to test/good",
                            )
                    if kind == "skip":
                        continue
                samples.append(
                    DefectSample(image, mask if kind != "good" else np.zeros_like(mask), kind,
                                 source=image_path, mask_source=mask_path if kind != "good" else None,
                                 is_gray=is_gray, meta=meta)
                )
    report.raise_unlabelled()
    report.warn_new()
    return samples


# --------------------------------------------------------------------------------------------
# image + mask folders
# --------------------------------------------------------------------------------------------


def _folder_pairs(root: Path) -> tuple[dict[str, Path], Path | None, bool]:
    """stem -> image path, the mask folder (None: masks beside the images as <stem>_mask.*),
    and whether the layout is images/ + <mask dir>/."""
    if (root / "images").is_dir():
        images = [p for p in list_images(root / "images") if not p.stem.endswith("_mask")]
        mask_dir = next((root / d for d in MASK_DIRS if (root / d).is_dir()), None)
        if mask_dir is None:
            raise DataError(
                f"{root}: images/ found but no mask folder; expected one of {[d + '/' for d in MASK_DIRS]} "
                f"holding <stem>.png masks (or the masks beside the images as <stem>_mask.png)"
            )
        return _unique_stems(images, root / "images"), mask_dir, True
    images = [p for p in list_images(root) if not p.stem.endswith("_mask")]
    return _unique_stems(images, root), None, False


def read_image_mask_folder(
    root: str | Path,
    defect_type: str | None = None,
    report: ReadReport | None = None,
    unlabelled: str = "skip",
) -> list[DefectSample]:
    """Images with masks of the same name, in one of two layouts:

    - `x.png` + `x_mask.png` side by side in `root`;
    - `images/<stem>.jpg|png` + `annotations/<stem>.png` (or masks/, ground_truth/; also
      `<stem>_mask.png` there), the layout of the hsst-stains set.

    Every image is declared a defect of `defect_type`, unless `defects.json` (written by
    `writers.write_masks`) names each stem's type ("good" allowed). Neither given: the class is
    FOLDER_DEFECT_TYPE ("defect"), counted as the quirk `unnamed_class` and warned with how to name
    it (`defect_type=`, `data --defect-type`, the training config's `folder_defect_type`). Masks of any binary encoding
    (0/255, 0/1, class indices) are read; an image without a mask, or with an all-black one, follows
    `unlabelled` ("skip", "good", "error"), counted in the report.
    """
    root = Path(root)
    check_policy(unlabelled)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; pass the folder holding the images and masks")
    report = report if report is not None else ReadReport()
    report.layout, report.root = report.layout or "folder", report.root or root
    types: dict[str, str] = {}
    if (root / "defects.json").is_file():
        types = _read_json(root / "defects.json").get("types", {})
    images, mask_dir, nested = _folder_pairs(root)
    if not images:
        raise DataError(f"{root}: no images found ({', '.join(IMAGE_SUFFIXES)}); check the folder")
    samples = []
    for stem, image_path in images.items():
        image, is_gray = read_image(image_path, report)
        kind = types.get(stem, defect_type)
        if kind is None:
            report.note("unnamed_class", image_path)
            kind = FOLDER_DEFECT_TYPE
        mask = np.zeros(image.shape[:2], dtype=bool)
        mask_path = _find_mask(mask_dir if nested else root, stem, beside_image=not nested) if kind != "good" else None
        if kind != "good":
            if mask_path is None:
                kind = unlabelled_sample(
                    "missing_mask", image_path, unlabelled, report,
                    f"expected {(mask_dir or root) / (stem + ('.png' if nested else '_mask.png'))}",
                )
            else:
                mask = read_mask(mask_path, image.shape[:2], report)
                if not mask.any():
                    kind = unlabelled_sample("empty_mask", mask_path, unlabelled, report,
                                       "draw the defect in the mask or remove the image")
            if kind == "skip":
                continue
            if kind == "good":
                mask, mask_path = np.zeros_like(mask), None
        samples.append(DefectSample(image, mask, kind, source=image_path, mask_source=mask_path,
                                    is_gray=is_gray, meta={"name": stem, "layout": "folder"}))
    report.raise_unlabelled()
    report.warn_new()
    return samples


def read_good_images(root: str | Path, report: ReadReport | None = None) -> list[DefectSample]:
    """A folder of defect-free images (the new fabric's good images): every image is "good".

    Names of the AITEX form nnnn_ddd_ff keep their codes in meta ("fabric", "code"); a defect code
    (ddd != 000) there means a defect strip whose mask is missing: still read as good, but counted
    (`defect_code_no_mask`) and warned with the fix."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; pass the folder holding the good images")
    report = report if report is not None else ReadReport()
    report.layout, report.root = report.layout or "good", report.root or root
    paths = _unique_stems(list_images(root), root)
    if not paths:
        raise DataError(f"{root}: no images found ({', '.join(IMAGE_SUFFIXES)}); check the folder")
    samples = []
    for stem, image_path in paths.items():
        image, is_gray = read_image(image_path, report)
        meta: dict[str, Any] = {"name": stem, "layout": "good"}
        parsed = parse_name(stem)
        if parsed is not None:
            meta.update(parsed)
            if parsed["code"] != GOOD_CODE:  # a defect strip without its mask, read as good: say so loudly
                meta["declared_code"] = parsed["code"]
                report.note("defect_code_no_mask", image_path)
        samples.append(DefectSample(image, np.zeros(image.shape[:2], dtype=bool), "good", source=image_path,
                                    is_gray=is_gray, meta=meta))
    report.warn_new()
    return samples


# --------------------------------------------------------------------------------------------
# COCO
# --------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc}); re-export the file") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object at the top level, found {type(data).__name__}")
    return data


def _clip_box(
    x0: float, y0: float, x1: float, y1: float, w: int, h: int, where: str, report: ReadReport, tol: float
) -> tuple[int, int, int, int]:
    """Float box -> int box with exclusive ends inside the image. Overshoot up to `tol` pixels is
    clipped and counted; more is a DataError (a label for another image size)."""
    if x0 < -tol or y0 < -tol or x1 > w + tol or y1 > h + tol:
        raise DataError(
            f"{where}: label box ({x0:.1f}, {y0:.1f}, {x1:.1f}, {y1:.1f}) lies outside the image "
            f"{w}x{h}; the label belongs to another image size or is corrupt: fix or remove it"
        )
    eps = 0.01  # rounding of normalised labels (6 decimals x 4096 px = 0.004 px) is not clipping
    if x0 < -eps or y0 < -eps or x1 > w + eps or y1 > h + eps:
        report.note("clipped_label", where)
    ix0, iy0 = max(0, math.floor(x0 + 1e-6)), max(0, math.floor(y0 + 1e-6))
    ix1, iy1 = min(w, math.ceil(x1 - 1e-6)), min(h, math.ceil(y1 - 1e-6))
    return ix0, iy0, max(ix1, min(w, ix0 + 1)), max(iy1, min(h, iy0 + 1))


def _round_box(x0: float, y0: float, x1: float, y1: float, w: int, h: int) -> tuple[int, int, int, int]:
    """Normalised-then-scaled box -> nearest pixel edges inside the image, at least 1 px wide.

    Rounding (not floor/ceil) makes the round trip exact for labels written from integer boxes,
    whose scaled edges land within a hair of an integer."""
    ix0, iy0 = min(w - 1, max(0, round(x0))), min(h - 1, max(0, round(y0)))
    ix1, iy1 = min(w, max(ix0 + 1, round(x1))), min(h, max(iy0 + 1, round(y1)))
    return ix0, iy0, ix1, iy1


def _decode_segmentation(segm: Any, h: int, w: int, where: str) -> np.ndarray | None:
    """COCO segmentation (polygons, RLE, compressed RLE) -> (H, W) bool, pycocotools-compatible."""
    from faster_coco_eval.core import mask as coco_mask

    if not segm:
        return None
    try:
        if isinstance(segm, list):
            polygons = [p for p in segm if len(p) >= 6]
            if not polygons:
                return None
            rle = coco_mask.merge(coco_mask.frPyObjects(polygons, h, w))
        elif isinstance(segm, dict):
            if list(segm.get("size", [])) != [h, w]:
                raise DataError(
                    f"{where}: RLE size {segm.get('size')} differs from the image {h}x{w} (H x W); "
                    f"the annotation belongs to another image"
                )
            rle = coco_mask.frPyObjects(segm, h, w) if isinstance(segm.get("counts"), list) else segm
        else:
            raise DataError(f"{where}: segmentation must be a polygon list or an RLE dict, found {type(segm).__name__}")
        return coco_mask.decode(rle).astype(bool)
    except DataError:
        raise
    except Exception as exc:  # the C decoder raises plain ValueError/TypeError on malformed input
        raise DataError(f"{where}: malformed segmentation ({exc}); re-export the annotation") from exc


def _labelled_sample(image, mask, boxes, classes, area_by_class, from_boxes: bool, image_path: Path,
                     is_gray: bool, meta: dict, report) -> DefectSample:
    """A COCO/YOLO image with labels: its type is the class covering the largest area; the per-box
    classes stay in meta["box_classes"]; box-only labels (mask = filled boxes) are flagged."""
    if from_boxes:
        meta["mask_from_boxes"] = True
        report.note("mask_from_boxes", image_path)
    meta["box_classes"] = classes
    kind = max(sorted(area_by_class), key=lambda c: area_by_class[c])
    return DefectSample(image, mask, kind, source=image_path, boxes=np.asarray(boxes, dtype=np.int64),
                        is_gray=is_gray, meta=meta)


def _coco_image_path(file_name: Any, json_path: Path, images_dir: Path) -> Path:
    """Where a COCO `file_name` lives. Exporters disagree: plain `a.png` (relative to the images
    folder), `images/a.png` (CVAT, Label Studio: relative to the dataset root, i.e. the JSON's
    folder or the images folder's parent) or an absolute / foreign path (the base name is then
    looked up in the images folder). The first existing candidate wins."""
    if not isinstance(file_name, str) or not file_name.strip():
        raise DataError(f"{json_path}: image entry with file_name {file_name!r}; every image needs a file name")
    relative = Path(file_name.replace("\\", "/"))
    candidates = [images_dir / relative, json_path.parent / relative, images_dir.parent / relative,
                  images_dir / relative.name]
    tried = list(dict.fromkeys(candidates))
    found = next((p for p in tried if p.is_file()), None)
    if found is None:
        raise DataError(
            f"{json_path}: image file_name {file_name!r} not found; looked for "
            f"{', '.join(str(p) for p in tried)}; put the images there or pass images_dir= "
            f"(`--images-dir`) the folder holding them"
        )
    return found


def read_coco(
    json_path: str | Path,
    images_dir: str | Path | None = None,
    report: ReadReport | None = None,
    unlabelled: str = "skip",
) -> list[DefectSample]:
    """COCO instances JSON: boxes and polygon / RLE segmentations -> one sample per image.

    images_dir: where `file_name`s live (default: `images/` beside the JSON, else its folder); a
    `file_name` that already holds a folder (`images/a.png`, as CVAT and Label Studio write it) is
    also looked up relative to the JSON's folder, and by its base name (see `_coco_image_path`).
    An image without annotations is a good image. Its mask is the union of its instances'
    segmentations (filled boxes where an instance has none: meta["mask_from_boxes"]); its boxes are
    the instances' bboxes; its defect_type the category with the largest total area.
    """
    json_path = Path(json_path)
    check_policy(unlabelled)
    report = report if report is not None else ReadReport()
    report.layout, report.root = report.layout or "coco", report.root or json_path
    data = _read_json(json_path)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{json_path}: not a COCO instances file (no '{key}' list); export COCO detection JSON")
    if images_dir is None:
        images_dir = json_path.parent / "images" if (json_path.parent / "images").is_dir() else json_path.parent
    images_dir = Path(images_dir)
    categories = {c["id"]: str(c["name"]) for c in data["categories"]}
    by_image: dict[Any, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann.get("image_id"), []).append(ann)
    seen_ids, seen_names = set(), set()
    samples = []
    for entry in data["images"]:
        file_name, image_id = entry.get("file_name"), entry.get("id")
        if file_name in seen_names or image_id in seen_ids:
            raise DataError(
                f"{json_path}: duplicate image entry (id {image_id}, file {file_name}); each image must be listed once"
            )
        seen_names.add(file_name)
        seen_ids.add(image_id)
        image_path = check_inside(_coco_image_path(file_name, json_path, images_dir),  # no ../, links out
                                  [images_dir, json_path.parent, images_dir.parent], source=json_path,
                                  what="file_name", name=file_name)
        image, is_gray = read_image(image_path, report)
        h, w = image.shape[:2]
        if (entry.get("width"), entry.get("height")) not in ((w, h), (None, None)):
            raise DataError(
                f"{json_path}: image {file_name} is listed as {entry.get('width')}x{entry.get('height')} "
                f"but the file is {w}x{h}; the annotations were made for another version of the image"
            )
        anns = by_image.get(image_id, [])
        meta: dict[str, Any] = {"name": Path(file_name).stem, "layout": "coco", "coco_id": image_id}
        if not anns:
            report.note("no_annotations", image_path)
            samples.append(DefectSample(image, np.zeros((h, w), bool), "good", source=image_path,
                                        is_gray=is_gray, meta=meta))
            continue
        mask = np.zeros((h, w), dtype=bool)
        boxes, classes, area_by_class = [], [], Counter()
        from_boxes = False
        for ann in anns:
            where = f"{json_path} (annotation {ann.get('id')}, image {file_name})"
            if ann.get("category_id") not in categories:
                raise DataError(f"{where}: category_id {ann.get('category_id')} is not in 'categories'")
            bbox = ann.get("bbox")
            segm = _decode_segmentation(ann.get("segmentation"), h, w, where)
            if bbox is None or len(bbox) != 4:
                if segm is None or not segm.any():
                    raise DataError(f"{where}: annotation has neither a bbox nor a segmentation")
                ys, xs = np.nonzero(segm)
                bbox = [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
            x, y, bw, bh = (float(v) for v in bbox)
            if bw <= 0 or bh <= 0:
                raise DataError(f"{where}: bbox {bbox} has no area; fix or remove the annotation")
            box = _clip_box(x, y, x + bw, y + bh, w, h, where, report, tol=1.0)
            if segm is None:
                from_boxes = True
                segm = np.zeros((h, w), dtype=bool)
                segm[box[1] : box[3], box[0] : box[2]] = True
            elif not segm.any():
                report.note("empty_mask", where)
                continue
            mask |= segm
            boxes.append(box)
            name = categories[ann["category_id"]]
            classes.append(name)
            area_by_class[name] += int(segm.sum())
        if not boxes:
            kind = unlabelled_sample("empty_mask", image_path, unlabelled, report, "every segmentation is empty")
            if kind == "skip":
                continue
            samples.append(DefectSample(image, np.zeros((h, w), bool), "good", source=image_path,
                                        is_gray=is_gray, meta=meta))
            continue
        samples.append(_labelled_sample(image, mask, boxes, classes, area_by_class, from_boxes, image_path,
                                        is_gray, meta, report))
    report.raise_unlabelled()
    report.warn_new()
    return samples


# --------------------------------------------------------------------------------------------
# YOLO
# --------------------------------------------------------------------------------------------


def _yolo_yaml(root: Path) -> tuple[Path | None, dict[str, Any]]:
    for name in YOLO_YAML:
        p = root / name
        if p.is_file():
            try:
                data = yaml.safe_load(p.read_text()) or {}
            except yaml.YAMLError as exc:
                raise DataError(f"{p}: not valid YAML ({exc}); fix the dataset file") from exc
            if not isinstance(data, dict):
                raise DataError(f"{p}: expected a mapping with 'names', found {type(data).__name__}")
            return p, data
    return None, {}


def yolo_class_names(root: str | Path) -> list[str] | None:
    """Class names from data.yaml (`names:` list or {id: name}) or classes.txt; None when absent."""
    root = Path(root)
    path, data = _yolo_yaml(root)
    names = data.get("names")
    if isinstance(names, dict):
        try:
            return [str(names[i]) for i in range(len(names))]
        except KeyError as exc:
            raise DataError(f"{path}: names must be numbered 0..{len(names) - 1}, missing {exc}") from exc
    if isinstance(names, list):
        return [str(n) for n in names]
    if (root / "classes.txt").is_file():
        return [line.strip() for line in (root / "classes.txt").read_text().splitlines() if line.strip()]
    return None


def _yolo_image_dirs(root: Path, split: str | None) -> list[tuple[str, Path]]:
    if not (root / "images").is_dir():
        raise DataError(f"{root}: no images/ folder; a YOLO dataset holds images/<split>/ and labels/<split>/")
    images = root / "images"
    if split is not None:
        _, data = _yolo_yaml(root)
        entry = data.get(split)
        candidate = (root / entry) if isinstance(entry, str) else images / split
        if not candidate.is_dir():
            raise DataError(f"{root}: split {split!r} not found (looked for {candidate}); pass an existing split")
        return [(split, candidate)]
    if list_images(images):
        return [("", images)]
    subdirs = sorted(d for d in images.iterdir() if d.is_dir() and not d.name.startswith("."))
    return [(d.name, d) for d in subdirs]


def _label_path(image_path: Path) -> Path:
    """images/<split>/x.jpg -> labels/<split>/x.txt (the last 'images' part replaced, as ultralytics does)."""
    parts = list(image_path.parts)
    i = len(parts) - 1 - parts[::-1].index("images")
    parts[i] = "labels"
    return Path(*parts).with_suffix(".txt")


def read_yolo(
    root: str | Path, split: str | None = None, report: ReadReport | None = None
) -> list[DefectSample]:
    """YOLO detection (or segmentation) dataset: `images/[<split>/]`, `labels/[<split>/]` txt files
    (`class cx cy w h` normalised; or `class x1 y1 x2 y2 ...` polygons) and data.yaml names.

    Box labels give filled-box masks (meta["mask_from_boxes"]); polygons are rasterised. An image
    without a label file, or with an empty one, is a good image. split: one split (default: all).
    """
    root = Path(root)
    report = report if report is not None else ReadReport()
    report.layout, report.root = report.layout or "yolo", report.root or root
    names = yolo_class_names(root)
    samples = []
    for split_name, folder in _yolo_image_dirs(root, split):
        for stem, image_path in _unique_stems(list_images(folder), folder).items():
            image, is_gray = read_image(image_path, report)
            h, w = image.shape[:2]
            meta: dict[str, Any] = {"name": stem, "layout": "yolo"}
            if split_name:
                meta["split"] = split_name
            label_path = _label_path(image_path)
            if not label_path.is_file():
                report.note("no_label_file", image_path)
                lines = []
            else:
                lines = [ln.split() for ln in label_path.read_text().splitlines() if ln.strip()]
            mask = np.zeros((h, w), dtype=bool)
            boxes, classes, areas = [], [], Counter()
            from_boxes = False
            for lineno, values in enumerate(lines, 1):
                where = f"{label_path}:{lineno}"
                try:
                    cls = int(values[0])
                    coords = [float(v) for v in values[1:]]
                except ValueError as exc:
                    raise DataError(f"{where}: not a YOLO label line ({' '.join(values)}); expected 'class cx cy w h'") from exc
                if cls < 0 or (names is not None and cls >= len(names)):
                    raise DataError(
                        f"{where}: class {cls} is not in the {len(names or [])} names of data.yaml; "
                        f"add the class name or fix the label"
                    )
                name = names[cls] if names is not None else f"class_{cls}"
                if len(coords) == 4:
                    cx, cy, bw, bh = coords
                    if bw <= 0 or bh <= 0:
                        raise DataError(f"{where}: box width/height must be positive, found {bw}, {bh}")
                    x0, y0, x1, y1 = (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h
                    _clip_box(x0, y0, x1, y1, w, h, where, report, tol=max(1.0, 1e-3 * max(w, h)))
                    box = _round_box(x0, y0, x1, y1, w, h)
                    region = np.zeros((h, w), dtype=bool)
                    region[box[1] : box[3], box[0] : box[2]] = True
                    from_boxes = True
                elif len(coords) >= 6 and len(coords) % 2 == 0:
                    pts = np.asarray(coords, dtype=np.float64).reshape(-1, 2) * [w, h]
                    tol = max(1.0, 1e-3 * max(w, h))
                    if pts.min() < -tol or (pts[:, 0] > w + tol).any() or (pts[:, 1] > h + tol).any():
                        raise DataError(f"{where}: polygon lies outside the image {w}x{h}; fix or remove the label")
                    region = np.zeros((h, w), dtype=np.uint8)
                    cv2.fillPoly(region, [np.round(pts).astype(np.int32)], 1)
                    region = region.astype(bool)
                    ys, xs = np.nonzero(region)
                    if len(xs) == 0:
                        continue
                    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
                else:
                    raise DataError(
                        f"{where}: {len(coords)} coordinates; expected 4 (cx cy w h) or an even number >= 6 (polygon)"
                    )
                mask |= region
                boxes.append(box)
                classes.append(name)
                areas[name] += (box[2] - box[0]) * (box[3] - box[1])
            if not boxes:
                samples.append(DefectSample(image, mask, "good", source=image_path, is_gray=is_gray, meta=meta))
                continue
            samples.append(_labelled_sample(image, mask, boxes, classes, areas, from_boxes, image_path,
                                            is_gray, meta, report))
    report.warn_new()
    return samples


# --------------------------------------------------------------------------------------------
# layout detection
# --------------------------------------------------------------------------------------------


def _is_coco_json(path: Path) -> bool:
    try:
        head = path.read_text(encoding="utf-8", errors="ignore")[:100_000]
    except OSError:
        return False
    return '"annotations"' in head and '"images"' in head


def detect_layout(path: str | Path) -> str:
    """Guess the layout of `path`: one of LAYOUTS, or a DataError listing what was looked for."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco"
        raise DataError(f"{path}: a file; pass a dataset folder or a COCO .json file")
    if not path.is_dir():
        raise DataError(f"{path}: no such folder; check the path")
    if (path / "Defect_images").is_dir() or (path / "NoDefect_images").is_dir():
        return "aitex"
    if any((path / n).is_file() for n in YOLO_YAML) or ((path / "images").is_dir() and (path / "labels").is_dir()):
        return "yolo"
    if (path / "ground_truth").is_dir() or (path / "train" / "good").is_dir() or (path / "test" / "good").is_dir():
        return "mvtec"
    if _coco_json_in(path) is not None:
        return "coco"
    images = list_images(path)
    if (path / "images").is_dir() or any(p.stem.endswith("_mask") for p in images):
        return "folder"
    if images:
        return "good"
    raise DataError(f"{path}: unknown dataset layout; found {_found_in(path)}. Expected one of: {LAYOUT_HELP}. "
                    f"Fix: arrange the folder as one of these (or pass the subfolder that is one), "
                    f"or name the layout with layout= / `--layout`")


LAYOUT_HELP = (
    "MVTec-AD (train/good, test/<type>, ground_truth/), image+mask folder (x.png + x_mask.png, or images/ + "
    "annotations/), COCO (.json + images/), YOLO (images/, labels/, data.yaml), AITEX (Defect_images/, "
    "Mask_images/, NoDefect_images/), or a folder of good images"
)


def _found_in(folder: Path) -> str:
    """What a folder holds, in a few words, for the unknown-layout error."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    files = [p.name for p in entries if p.is_file()]
    dirs = [p for p in entries if p.is_dir()]
    with_images = [d.name + "/" for d in dirs if list_images(d)]
    parts = [f"{len(files)} file(s)" + (f" (e.g. {', '.join(files[:3])})" if files else "") + ", no image"]
    parts.append(f"{len(dirs)} subfolder(s)" + (f" (e.g. {', '.join(d.name + '/' for d in dirs[:3])})" if dirs else ""))
    if with_images:
        parts.append(f"images in the subfolder(s) {', '.join(with_images[:5])}")
    return "; ".join(parts)


def _coco_json_in(folder: Path) -> Path | None:
    candidates = sorted(folder.glob("*.json")) + sorted(folder.glob("annotations/*.json"))
    return next((p for p in candidates if _is_coco_json(p)), None)


def read_dataset(
    path: str | Path, layout: str = "auto", report: ReadReport | None = None, **kwargs: Any
) -> list[DefectSample]:
    """Read any supported dataset; `layout` "auto" detects it (see `detect_layout`).

    kwargs go to the layout's reader (e.g. `defect_type=` for folders, `unlabelled=`). MVTec reads
    both splits unless `split=` is given.
    """
    path = Path(path)
    if layout == "auto":
        layout = detect_layout(path)
    if layout not in LAYOUTS:
        raise DataError(f"layout {layout!r}: expected 'auto' or one of {list(LAYOUTS)}")
    report = report if report is not None else ReadReport()
    report.layout = layout
    if layout == "mvtec":
        return read_mvtec(path, kwargs.pop("split", "all"), report=report, **kwargs)
    if layout == "folder":
        return read_image_mask_folder(path, report=report, **kwargs)
    if layout == "coco":
        json_path = path if path.is_file() else _coco_json_in(path)
        if json_path is None:
            raise DataError(f"{path}: no COCO .json found (looked in the folder and annotations/)")
        if path.is_dir() and "images_dir" not in kwargs and (path / "images").is_dir():
            kwargs["images_dir"] = path / "images"
        return read_coco(json_path, report=report, **kwargs)
    if layout == "yolo":
        return read_yolo(path, report=report, **kwargs)
    if layout == "good":
        return read_good_images(path, report=report, **kwargs)
    from defectfill.data.aitex import read_aitex

    return read_aitex(path, report=report, **kwargs)
