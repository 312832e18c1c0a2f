"""The generation manifest: what every generator writes, and what dataset assembly reads.

A generation folder holds `manifest.jsonl`, one JSON object per generated image:

    {"image":          "images/00000.png",        rel. path of the generated image (H, W, 3)
     "changed_mask":   "changed/00000.png",       rel. path of the changed-pixel mask PNG (0/255)
     "request_mask":   "requests/00000.png",      rel. path of the mask the generator was asked to fill
     "defect_type":    "stain",                   class name
     "source_image":   "/data/good/017.png",      the good image it was put into (path or name)
     "boxes":          [[x0, y0, x1, y1], ...],   per changed-pixel component, exclusive ends
     "score":          0.42,                      the selection score of the kept candidate
     "seed":           1234,                      the seed of this generation call
     "generator":      "cutpaste"}                the generator's name

Paths are relative to the folder holding manifest.jsonl. Labels come from `changed_mask` (the
pixels that really changed), not from `request_mask`. The file is append-only (io_utils.Manifest),
so a killed generation job resumes where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from defectfill.data.images import load_image, load_mask, save_image, save_mask, to_mask_array, to_rgb_array
from defectfill.errors import DataError, GenerationError
from defectfill.io_utils import Manifest

MANIFEST_NAME = "manifest.jsonl"
REQUIRED_KEYS = ("image", "changed_mask", "request_mask", "defect_type", "source_image", "boxes", "score", "seed", "generator")


@dataclass
class GeneratedItem:
    """One manifest line with absolute paths."""

    image: Path
    changed_mask: Path
    request_mask: Path
    defect_type: str
    source_image: str
    boxes: np.ndarray
    score: float
    seed: int
    generator: str

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """(image (H, W, 3) uint8, changed mask (H, W) bool), checked to match in size."""
        image = load_image(self.image)
        return image, load_mask(self.changed_mask, shape=image.shape[:2])


def manifest_path(folder: str | Path) -> Path:
    folder = Path(folder)
    return folder if folder.name == MANIFEST_NAME else folder / MANIFEST_NAME


def read_generation_manifest(folder: str | Path, *, check_files: bool = True) -> list[GeneratedItem]:
    """Read a generation manifest; bad lines and every missing file are listed in one DataError."""
    path = manifest_path(folder)
    if not path.is_file():
        raise DataError(f"{path}: generation manifest not found; pass a folder written by a generator (manifest.jsonl)")
    root = path.parent
    items, problems, missing = [], [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            problems.append(f"line {number}: not JSON")
            continue
        absent = [k for k in REQUIRED_KEYS if k not in record]
        if absent:
            problems.append(f"line {number}: missing key(s) {absent}")
            continue
        item = GeneratedItem(
            image=root / record["image"],
            changed_mask=root / record["changed_mask"],
            request_mask=root / record["request_mask"],
            defect_type=str(record["defect_type"]),
            source_image=str(record["source_image"]),
            boxes=np.asarray(record["boxes"], dtype=np.int64).reshape(-1, 4),
            score=float(record["score"]),
            seed=int(record["seed"]),
            generator=str(record["generator"]),
        )
        if check_files:
            missing += [str(p) for p in (item.image, item.changed_mask, item.request_mask) if not p.is_file()]
        items.append(item)
    if problems:
        raise DataError(f"{path}: malformed line(s): {'; '.join(problems)}; each line needs keys {list(REQUIRED_KEYS)}")
    if missing:
        raise DataError(
            f"{path}: {len(missing)} file(s) named in the manifest do not exist: {missing}; "
            "re-run the generation (it resumes) or remove those lines"
        )
    return items


def write_generation_manifest(
    generator: Any,
    good_images: Sequence[Any],
    masks: Sequence[Any],
    defect_types: Sequence[str],
    out_dir: str | Path,
    seed: int = 0,
    *,
    num_candidates: int = 1,
    source_names: Sequence[str] | None = None,
) -> Path:
    """Run `generator` (a DefectGenerator) on each (good image, mask, defect type) and write the manifest.

    good_images: (H, W, 3) arrays, DefectSamples or image paths; masks: (H, W) bool request masks.
    Request i uses seed `seed + i`, so the output does not depend on how the job was resumed; requests
    already in the manifest are skipped.
    """
    import torch

    if not (len(good_images) == len(masks) == len(defect_types)):
        raise GenerationError(
            f"write_generation_manifest: {len(good_images)} images, {len(masks)} masks and "
            f"{len(defect_types)} defect types; pass one of each per request"
        )
    out_dir = Path(out_dir)
    manifest = Manifest(out_dir / MANIFEST_NAME, key="image")
    for index, (good, request, defect_type) in enumerate(zip(good_images, masks, defect_types)):
        rel_image = f"images/{index:05d}.png"
        if manifest.done(rel_image):
            continue
        if hasattr(good, "image") and hasattr(good, "mask"):  # a DefectSample
            source = str(good.source) if good.source is not None else f"good[{index}]"
            image = good.image
        else:
            source = str(good) if isinstance(good, (str, Path)) else f"good[{index}]"
            image = to_rgb_array(good, name=f"good_images[{index}]")
        if source_names is not None:
            source = source_names[index]
        request_mask = to_mask_array(request, name=f"masks[{index}]")
        request_seed = seed + index
        result = generator.generate(
            image, request_mask, defect_type=defect_type, num_candidates=num_candidates,
            generator=torch.Generator().manual_seed(request_seed),
        )
        best = result.selected[0]
        rel_changed, rel_request = f"changed/{index:05d}.png", f"requests/{index:05d}.png"
        save_image(out_dir / rel_image, result.candidates[best])
        save_mask(out_dir / rel_changed, result.changed_masks[best])
        save_mask(out_dir / rel_request, result.request_mask)
        manifest.append(
            {
                "image": rel_image,
                "changed_mask": rel_changed,
                "request_mask": rel_request,
                "defect_type": defect_type,
                "source_image": source,
                "boxes": np.asarray(result.boxes[best]).reshape(-1, 4).astype(int).tolist(),
                "score": float(result.scores[best]),
                "seed": request_seed,
                "generator": getattr(generator, "name", type(generator).__name__),
            }
        )
    return manifest.path
