"""One generation runner: requests -> generated images, labels and the manifest.

`run_generation(generator, requests, out_dir, ...)` is what `defectfill generate`, the bench and the
real-data runs call, for every registered generator alike (only the `DefectGenerator` protocol is
used: `generate(image, mask, defect_type=, num_candidates=, generator=)`):

    requests not yet done -> shard over processes -> per request: load the good image, propose its
    mask (MaskPolicy) -> generate k candidates, keep the best -> [quality gate: the best candidate whose
    change reads as a defect, else retry with a new seed, else skip] -> write the three PNGs -> append
    one manifest line -> merge the shards -> contact sheet

Output folder:

    images/<name>            the selected candidate (a greyscale source gives a greyscale PNG)
    request_masks/<name>     the mask that was asked for
    changed_masks/<name>     the label: the pixels that really changed (∪ the source's own defect
                             with keep_source_labels: a real defect must never be taught as background)
    manifest.jsonl           one line per image (`defectfill.generators.manifest.MANIFEST_KEYS`)
    contact_sheet.png        the first results with their labels outlined
    rejected.jsonl           with a quality gate: the requests it skipped (`defectfill.generators.quality`)
    quality_gate.json        with a quality gate: its floors and, per defect type, accepted / rejected

Resumable: a request whose image is in the manifest, or in rejected.jsonl (or in a rank's shard of an
interrupted run), is skipped; the image is written last, so an image on disk means its masks are too. Sharding: request i
goes to rank i % num_processes; each rank appends to `manifest.rank<r>.jsonl`; after
`wait_for_everyone()` rank 0 merges them into `manifest.jsonl` (atomically, each image once).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from defectfill.data.images import load_image_with_info, load_mask, save_image, save_mask
from defectfill.data.sample import DefectSample
from defectfill.distributed import accelerate_state
from defectfill.errors import DataError, DefectfillError
from defectfill.generators.manifest import (
    MANIFEST_NAME,
    done_images,
    make_record,
    merge_manifests,
    shard_path,
)
from defectfill.generators.quality import (
    QualityGate,
    Verdict,
    merge_rejected,
    rejected_names,
    rejected_path,
    retry_seed,
    write_summary,
)
from defectfill.generators.requests import MaskPolicy, Request
from defectfill.io_utils import Manifest

CONTACT_SHEET_MAX = 64


def _state(num_processes: int | None, process_index: int | None):
    """(rank, world size, wait) from accelerate's PartialState, or the explicit values given."""
    if num_processes is not None:
        return int(process_index or 0), int(num_processes), lambda: None
    state = accelerate_state()
    return state.process_index, state.num_processes, state.wait_for_everyone


def _load_source(request: Request) -> tuple[np.ndarray, bool, np.ndarray | None]:
    """(image (H, W, 3) uint8, is grey, the source's own defect mask or None)."""
    source = request.source
    if isinstance(source, DefectSample):
        return source.image, source.is_gray, (source.mask if source.mask.any() else None)
    image, is_gray = load_image_with_info(source)
    return image, is_gray, None


def _gated_choice(result: Any, request: Request, gate: QualityGate) -> tuple[int | None, Verdict]:
    """The first candidate, in selection order (score, then index), whose change passes the gate."""
    from defectfill.selection import select

    verdict = None
    for index in select(result.scores, len(result.scores)):
        verdict = gate.check(result.candidates[index], result.changed_masks[index] & result.request_mask,
                             request.defect_type)
        if verdict.passed:
            return index, verdict
    return None, verdict


def generate_request(generator: Any, request: Request, out_dir: Path, *, num_candidates: int, masks: MaskPolicy,
                     model_name: str = "", keep_source_labels: bool = False, gate: QualityGate | None = None,
                     rejected: Manifest | None = None) -> dict[str, Any] | None:
    """Generate one request and write its three PNGs; returns its manifest record. With a gate: the
    first candidate that passes, retrying with new seeds (`defectfill.generators.quality`); a
    request that never passes is appended to `rejected` and None is returned."""
    import torch

    image, is_gray, existing = _load_source(request)
    attempts = 1 + (gate.config.max_retries if gate is not None and gate.config.enabled else 0)
    verdicts = []
    try:
        mask = masks.propose(request, image.shape[:2], existing, image)
        for attempt in range(attempts):
            seed = retry_seed(request.seed, attempt)
            result = generator.generate(image, mask, defect_type=request.defect_type, num_candidates=num_candidates,
                                        generator=torch.Generator().manual_seed(seed))
            best, verdict = (result.selected[0], None) if gate is None else _gated_choice(result, request, gate)
            if verdict is not None:
                verdicts.append(verdict.as_dict())
            if best is not None:
                break
    except DefectfillError as exc:
        raise type(exc)(f"{request.source_name}: {exc}") from exc
    if best is None:
        if rejected is not None:
            rejected.append({"name": request.name, "defect_type": request.defect_type, "source_image": request.source_name,
                             "seed": request.seed, "attempts": attempts, "verdicts": verdicts})
        return None
    label = result.changed_masks[best]
    boxes = result.boxes[best]
    if keep_source_labels and existing is not None:
        from defectfill.masks import mask_to_boxes

        label = label | existing
        boxes = mask_to_boxes(label)
    selected = result.candidates[best]
    save_mask(out_dir / "request_masks" / request.name, result.request_mask)
    save_mask(out_dir / "changed_masks" / request.name, label)
    save_image(out_dir / "images" / request.name, selected[..., 0] if is_gray else selected)  # last: see docstring
    record = make_record(
        image=f"images/{request.name}", changed_mask=f"changed_masks/{request.name}",
        request_mask=f"request_masks/{request.name}", defect_type=request.defect_type,
        source_image=request.source_name, boxes=boxes, score=result.scores[best], seed=request.seed,
        generator=str(result.meta.get("generator") or getattr(generator, "name", type(generator).__name__)),
        model=model_name, selection_metric=result.selection_metric)
    if gate is not None:
        record["quality"] = {"attempts": len(verdicts), "seed": seed, "candidate": int(best), **verdicts[-1]}
    return record


def write_contact_sheet(out_dir: str | Path, limit: int = CONTACT_SHEET_MAX) -> Path | None:
    """Contact sheet of the first `limit` manifest entries, labels outlined, scores as captions."""
    from defectfill.viz import save_contact_sheet

    out_dir = Path(out_dir)
    records = list(Manifest(out_dir / MANIFEST_NAME, key="image"))[:limit]
    if not records:
        return None
    images = [load_image_with_info(out_dir / r["image"])[0] for r in records]
    labels = [load_mask(out_dir / r["changed_mask"]) for r in records]
    captions = [f"{r['defect_type']} {r['score']:.3f}" for r in records]
    return save_contact_sheet(out_dir / "contact_sheet.png", images, labels, captions)


def run_generation(
    generator: Any,
    requests: Sequence[Request],
    out_dir: str | Path,
    *,
    num_candidates: int = 1,
    masks: MaskPolicy | None = None,
    model_name: str = "",
    keep_source_labels: bool = False,
    contact_sheet: bool = True,
    progress: bool = True,
    num_processes: int | None = None,
    process_index: int | None = None,
    gate: QualityGate | None = None,
) -> dict[str, Any]:
    """Generate every request not yet done into `out_dir` (module docstring), sharded across processes.

    num_processes / process_index: explicit sharding (tests, custom launchers); None reads them from
    `accelerate.PartialState()` (1 process when not launched by accelerate).
    gate: a calibrated `QualityGate` (`defectfill.generators.quality`); None: every item enters.
    Returns {"manifest", "generated" (this process), "skipped" (already done), "rank", "num_processes",
    "quality_gate" (rank 0 with a gate: the `quality_gate.json` summary, per type accepted /
    accepted_after_retry / rejected; else None)}.
    """
    if num_candidates < 1:
        raise DataError(f"num_candidates must be >= 1, found {num_candidates}")
    unknown = sorted({r.defect_type for r in requests} - set(generator.defect_types))
    if unknown:
        raise DataError(f"defect type(s) {unknown} are not known to the generator "
                        f"{getattr(generator, 'name', '')!r}; known: {sorted(generator.defect_types)}")
    masks = masks or MaskPolicy()
    out_dir = Path(out_dir)
    rank, world, wait = _state(num_processes, process_index)
    done = done_images(out_dir) | {f"images/{name}" for name in rejected_names(out_dir)}
    mine = [r for r in requests if r.index % world == rank]
    todo = [r for r in mine if f"images/{r.name}" not in done]
    shard = Manifest(out_dir / MANIFEST_NAME if world == 1 else shard_path(out_dir, rank), key="image")
    rejected = Manifest(rejected_path(out_dir, None if world == 1 else rank), key="name")
    if todo:
        from tqdm.auto import tqdm

        name = getattr(generator, "name", type(generator).__name__)
        bar = tqdm(todo, desc=f"generate {name}", unit="img", file=sys.stderr, disable=not progress,
                   position=rank if world > 1 else None, leave=world == 1, dynamic_ncols=True)
        for request in bar:
            record = generate_request(generator, request, out_dir, num_candidates=num_candidates, masks=masks,
                                      model_name=model_name, keep_source_labels=keep_source_labels, gate=gate,
                                      rejected=rejected)
            if record is not None:
                shard.append(record)
    wait()
    manifest = out_dir / MANIFEST_NAME
    summary = None
    if rank == 0:
        manifest = merge_manifests(out_dir)
        merge_rejected(out_dir)
        if gate is not None:
            summary = write_summary(out_dir, gate)
        if contact_sheet:
            write_contact_sheet(out_dir)
    wait()
    return {"manifest": manifest, "generated": len(todo), "skipped": len(mine) - len(todo), "rank": rank,
            "num_processes": world, "pid": os.getpid(), "quality_gate": summary}


def generate_dataset(generator: Any, sources: Sequence[Path | DefectSample], defect_types: Sequence[str],
                     out_dir: str | Path, *, per_type: int | None = None, per_image: int | None = None, seed: int = 0,
                     masks: MaskPolicy | None = None, num_candidates: int = 1, **run_kwargs: Any) -> dict[str, Any]:
    """Plan (`plan_requests`) and run (`run_generation`) in one call: the Python API's shortcut."""
    from defectfill.generators.requests import plan_requests

    requests = plan_requests(sources, defect_types, per_type=per_type, per_image=per_image, seed=seed)
    return run_generation(generator, requests, out_dir, num_candidates=num_candidates, masks=masks, **run_kwargs)
