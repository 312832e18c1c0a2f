"""The generation manifest: what the generation runner writes, and what dataset assembly reads.

A generation folder holds `manifest.jsonl`, one JSON object per generated image (MANIFEST_KEYS):

    {"image":            "images/017__stain_0.png",  rel. path of the generated image (grey input: grey PNG)
     "changed_mask":     "changed_masks/....png",    rel. path of the changed-pixel mask PNG (0/255): the label
     "request_mask":     "request_masks/....png",    rel. path of the mask the generator was asked to fill
     "defect_type":      "stain",                    class name
     "source_image":     "/data/good/017.png",       the good image it was put into (path or name)
     "boxes":            [[x0, y0, x1, y1], ...],    per changed-pixel component, exclusive ends
     "score":            0.42,                       the selection score of the kept candidate
     "seed":             1234,                       the seed of this request
     "generator":        "cutpaste",                 the registered generator name
     "model":            "runs/stain/model",         the trained model (folder, Hub id or "")
     "selection_metric": "ms-ssim-distance"}         the metric that produced `score`

Paths are relative to the folder holding manifest.jsonl. Labels come from `changed_mask` (the
pixels that really changed), not from `request_mask`. The file is append-only (io_utils.Manifest),
so a killed generation job resumes where it stopped; with several processes each appends to its
own `manifest.rank<r>.jsonl` and rank 0 merges them (`merge_manifests`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from defectfill.data.images import load_image, load_mask
from defectfill.errors import DataError
from defectfill.io_utils import Manifest, atomic_write_text
from defectfill.safe_load import path_inside

MANIFEST_NAME = "manifest.jsonl"
MANIFEST_KEYS = ("image", "changed_mask", "request_mask", "defect_type", "source_image", "boxes", "score", "seed",
                 "generator", "model", "selection_metric")
REQUIRED_KEYS = MANIFEST_KEYS[:9]  # what a reader needs (manifests of version 0.1 lack the last two)


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
    model: str = ""
    selection_metric: str = ""

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
        inside = {key: path_inside(root, record[key], source=f"{path} line {number}", what=key)  # no ../, links out
                  for key in ("image", "changed_mask", "request_mask")}
        item = GeneratedItem(
            image=inside["image"],
            changed_mask=inside["changed_mask"],
            request_mask=inside["request_mask"],
            defect_type=str(record["defect_type"]),
            source_image=str(record["source_image"]),
            boxes=np.asarray(record["boxes"], dtype=np.int64).reshape(-1, 4),
            score=float(record["score"]),
            seed=int(record["seed"]),
            generator=str(record["generator"]),
            model=str(record.get("model", "")),
            selection_metric=str(record.get("selection_metric", "")),
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


def make_record(*, image: str, changed_mask: str, request_mask: str, defect_type: str, source_image: str,
                boxes: Any, score: float, seed: int, generator: str, model: str = "",
                selection_metric: str = "") -> dict[str, Any]:
    """One manifest line, keys in MANIFEST_KEYS order, values JSON-safe."""
    record = {"image": image, "changed_mask": changed_mask, "request_mask": request_mask, "defect_type": defect_type,
              "source_image": str(source_image), "boxes": np.asarray(boxes).reshape(-1, 4).astype(int).tolist(),
              "score": float(score), "seed": int(seed), "generator": str(generator), "model": str(model),
              "selection_metric": str(selection_metric)}
    assert tuple(record) == MANIFEST_KEYS
    return record


def shard_path(out_dir: Path, rank: int) -> Path:
    return out_dir / f"manifest.rank{rank}.jsonl"


def done_images(out_dir: str | Path) -> set[str]:
    """Images already recorded, in the merged manifest or in any rank's shard."""
    out_dir = Path(out_dir)
    done: set[str] = set()
    for path in [out_dir / MANIFEST_NAME, *sorted(out_dir.glob("manifest.rank*.jsonl"))]:
        done.update(str(r.get("image")) for r in Manifest(path, key="image"))
    return done


def merge_manifests(out_dir: str | Path) -> Path:
    """Merge `manifest.jsonl` and every rank shard into `manifest.jsonl` (each image once, ordered by
    name), atomically; then delete the shards."""
    out_dir = Path(out_dir)
    target = out_dir / MANIFEST_NAME
    shards = sorted(out_dir.glob("manifest.rank*.jsonl"))
    records: dict[str, dict[str, Any]] = {}
    for path in [target, *shards]:
        for record in Manifest(path, key="image"):
            records.setdefault(str(record["image"]), record)
    lines = [json.dumps(records[k]) for k in sorted(records)]
    atomic_write_text(target, "".join(line + "\n" for line in lines))
    for shard in shards:
        shard.unlink(missing_ok=True)
    return target


def generation_complete(folder: str | Path, expected: int) -> bool:
    """Whether `folder` holds a merged manifest of at least `expected` requests: images, plus the
    requests a quality gate skipped (`rejected.jsonl`)."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    rejected = Manifest(folder / "rejected.jsonl", key="name")
    return path.is_file() and len(Manifest(path, key="image")) + len(rejected) >= expected
