"""Generate a synthetic defect dataset: good images x mask proposals -> images, labels, manifest.

`generate_dataset(model, image_paths, out_dir, job)` is what `defectfill generate` runs:

    plan work items (image, j) -> shard them over processes -> for each item not yet done:
    propose a mask -> generator.generate (k candidates + LFS) -> write image, request mask,
    changed-pixel mask -> append one manifest line -> merge the shards -> contact sheet

Output folder:

    images/<stem>__<type>_<j>.png         the selected candidate (grey input -> grey PNG)
    request_masks/<same name>.png         the mask that was asked for
    changed_masks/<same name>.png         the pixels that really changed (the label)
    manifest.jsonl                        one line per generated image (MANIFEST_KEYS)
    contact_sheet.png                     the first results with their changed masks outlined

The job is resumable: an item whose image is already in the manifest (or a rank's shard of an
interrupted run) is skipped. Item i uses seed `job.seed + i` for both its mask and its
generation, so the output does not depend on how many processes ran it or how often it resumed.
Sharding: item i goes to rank i % num_processes; each rank appends to `manifest.rank<r>.jsonl`;
after `wait_for_everyone()` rank 0 merges every shard into `manifest.jsonl` (atomically, each
image once) and removes the shards.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from defectfill.data.images import list_images, load_image_with_info, load_mask, save_image, save_mask
from defectfill.errors import DataError, DefectfillError
from defectfill.io_utils import Manifest, atomic_write_text
from defectfill.mask_proposals import MODES, propose_masks

MANIFEST_KEYS = ("image", "changed_mask", "request_mask", "defect_type", "source_image", "boxes", "score",
                 "seed", "generator", "model", "selection_metric")
MANIFEST_NAME = "manifest.jsonl"
CONTACT_SHEET_MAX = 64


@dataclass
class GenerationJob:
    """What to generate. Defaults: DefectFill's (8 candidates, DDIM 50 steps, guidance 7.5)."""

    defect_type: str
    per_image: int = 1
    num_candidates: int = 8
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    seed: int = 0
    selection_metric: str | None = None  # None: the generator's own
    masks: str = "auto"  # "real" | "procedural" | "auto"
    allow_border: bool = False
    model_name: str = ""
    contact_sheet: bool = True
    extra_generate_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkItem:
    index: int
    source: Path
    repeat: int
    name: str  # file name of the outputs

    @property
    def image_rel(self) -> str:
        return f"images/{self.name}"


def plan_items(image_paths: list[Path], defect_type: str, per_image: int) -> list[WorkItem]:
    """Every (image, repeat) pair in a fixed order; names unique even for equal stems in different folders."""
    if per_image < 1:
        raise DataError(f"--per-image must be >= 1, found {per_image}")
    stems: dict[str, int] = {}
    items = []
    for path in image_paths:
        stem = Path(path).stem
        count = stems.get(stem, 0)
        stems[stem] = count + 1
        unique = stem if count == 0 else f"{stem}-{count}"
        for j in range(per_image):
            items.append(WorkItem(len(items), Path(path), j, f"{unique}__{defect_type}_{j}.png"))
    return items


def load_real_masks(folder: str | Path | None, defect_type: str) -> list[np.ndarray]:
    """Masks of `defect_type` from `folder/<defect_type>/` when it exists (MVTec ground_truth layout),
    else every image in `folder`."""
    if folder is None:
        return []
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--real-masks {folder}: not a folder; pass the folder of real {defect_type} masks")
    typed = folder / defect_type
    masks = [load_mask(p) for p in list_images(typed if typed.is_dir() else folder)]
    masks = [m for m in masks if m.any()]
    if not masks:
        raise DataError(f"--real-masks {folder}: no non-empty mask images found for {defect_type!r}")
    return masks


def _record(item: WorkItem, result: Any, source: Path, seed: int, job: GenerationJob) -> dict[str, Any]:
    record = {
        "image": item.image_rel,
        "changed_mask": f"changed_masks/{item.name}",
        "request_mask": f"request_masks/{item.name}",
        "defect_type": job.defect_type,
        "source_image": str(source),
        "boxes": [[int(v) for v in box] for box in result.best_boxes],
        "score": float(result.scores[result.selected[0]]),
        "seed": int(seed),
        "generator": getattr(result, "meta", {}).get("generator", "defectfill"),
        "model": job.model_name,
        "selection_metric": result.selection_metric,
    }
    assert tuple(record) == MANIFEST_KEYS
    return record


def generate_item(generator: Any, item: WorkItem, out_dir: Path, job: GenerationJob,
                  real_masks: list[np.ndarray]) -> dict[str, Any]:
    """Propose a mask on one good image, generate, write the three PNGs; returns the manifest record."""
    image, is_gray = load_image_with_info(item.source)
    seed = job.seed + item.index
    rng = np.random.default_rng(seed)
    kwargs = dict(defect_type=job.defect_type, num_candidates=job.num_candidates,
                  num_inference_steps=job.num_inference_steps, guidance_scale=job.guidance_scale, seed=seed,
                  **job.extra_generate_kwargs)
    if job.selection_metric is not None:
        kwargs["selection_metric"] = job.selection_metric
    try:
        request = propose_masks(image.shape[:2], job.defect_type, 1, rng, real_masks=real_masks, mode=job.masks,
                                allow_border=job.allow_border)[0]
        result = generator.generate(image, request, **kwargs)
    except DefectfillError as exc:
        raise type(exc)(f"{item.source}: {exc}") from exc
    selected = result.image[..., 0] if is_gray else result.image
    save_mask(out_dir / "request_masks" / item.name, result.request_mask)
    save_mask(out_dir / "changed_masks" / item.name, result.changed_mask)
    save_image(out_dir / item.image_rel, selected)  # last: an image on disk means its masks are too
    return _record(item, result, item.source, seed, job)


def _shard_path(out_dir: Path, rank: int) -> Path:
    return out_dir / f"manifest.rank{rank}.jsonl"


def done_images(out_dir: Path) -> set[str]:
    """Images already recorded, in the merged manifest or in any rank's shard."""
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


def write_contact_sheet(out_dir: Path, limit: int = CONTACT_SHEET_MAX) -> Path | None:
    """Contact sheet of the first `limit` manifest entries, changed masks outlined, scores as captions."""
    from defectfill.viz import save_contact_sheet

    records = list(Manifest(out_dir / MANIFEST_NAME, key="image"))[:limit]
    if not records:
        return None
    images = [load_image_with_info(out_dir / r["image"])[0] for r in records]
    masks = [load_mask(out_dir / r["changed_mask"]) for r in records]
    captions = [f"{r['defect_type']} {r['score']:.3f}" for r in records]
    return save_contact_sheet(out_dir / "contact_sheet.png", images, masks, captions)


def accelerate_state():
    """accelerate's PartialState; on a machine without CUDA (or with ACCELERATE_USE_CPU) in CPU mode,
    so that processes started by `accelerate launch` / `debug_launcher` form a MULTI_CPU group
    (without cpu=True accelerate sees one process per rank, and every rank would do all the work)."""
    import torch
    from accelerate import PartialState

    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    return PartialState(cpu=use_cpu)


def _state(num_processes: int | None, process_index: int | None):
    """(rank, world size, wait) from accelerate's PartialState, or the explicit values given."""
    if num_processes is not None:
        return int(process_index or 0), int(num_processes), lambda: None
    state = accelerate_state()
    return state.process_index, state.num_processes, state.wait_for_everyone


def generate_dataset(
    generator: Any,
    image_paths: list[str | Path],
    out_dir: str | Path,
    job: GenerationJob,
    real_masks: list[np.ndarray] | None = None,
    num_processes: int | None = None,
    process_index: int | None = None,
) -> dict[str, Any]:
    """Run `job` over `image_paths` into `out_dir`, sharded across accelerate processes.

    num_processes / process_index: explicit sharding (tests, custom launchers); None reads them from
    `accelerate.PartialState()` (1 process when not launched by accelerate).
    Returns {"manifest": path, "generated": n this process, "skipped": n already done, "rank": r}.
    """
    if job.masks not in MODES:
        raise DataError(f"--masks {job.masks!r} is not one of {list(MODES)}")
    out_dir = Path(out_dir)
    paths = [Path(p) for p in image_paths]
    if not paths:
        raise DataError("no good images given: pass --images DIR holding at least one image")
    rank, world, wait = _state(num_processes, process_index)
    if job.defect_type not in getattr(generator, "defect_types", [job.defect_type]):
        raise DataError(f"--defect-type {job.defect_type!r} is not known to the model; known: {generator.defect_types}")
    items = plan_items(paths, job.defect_type, job.per_image)
    done = done_images(out_dir)
    mine = [it for it in items if it.index % world == rank]
    shard = Manifest(out_dir / MANIFEST_NAME if world == 1 else _shard_path(out_dir, rank), key="image")
    generated = skipped = 0
    for item in mine:
        if item.image_rel in done:
            skipped += 1
            continue
        shard.append(generate_item(generator, item, out_dir, job, real_masks or []))
        generated += 1
    wait()
    manifest = out_dir / MANIFEST_NAME
    if rank == 0:
        manifest = merge_manifests(out_dir)
        if job.contact_sheet:
            write_contact_sheet(out_dir)
    wait()
    return {"manifest": manifest, "generated": generated, "skipped": skipped, "rank": rank,
            "num_processes": world, "pid": os.getpid()}
