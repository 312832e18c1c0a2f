"""The curation data set: the folder that the candidates a person accepts in `defectfill app` go into.

    <folder>/
      images/<name>.png           accepted candidates (the whole image, defect pasted in)
      changed_masks/<name>.png    their labels: the pixels that really changed (0/255)
      request_masks/<name>.png    the mask that was drawn or proposed
      sources/<digest>.png        each good image that defects went into, once
      manifest.jsonl              one line per accepted image (below)
      rejected.jsonl              one line per rejected candidate (no image kept)
      export/yolo/data.yaml ...   `export()`: YOLO through `defectfill.data.writers.write_yolo`
      export/coco/annotations.json              and COCO through `write_coco`

A manifest line holds the generation manifest's keys (`defectfill.generators.manifest`), so
the folder is a generation folder that `defectfill assemble` and the downstream stage read as they
read any generator's output, plus `request_id` (digest of the good image, the mask and the
settings) and `candidate` (its index among the k). A candidate is decided once: deciding the same
(request_id, candidate) again is a no-op, so a double click or a re-sent request writes nothing
twice. Writes are atomic and the manifest line comes last (after the three PNGs), so a folder
re-opened after a crash resumes with exactly the accepted images it lists. Each decision and export
holds the folder's lock (`defectfill.locks.output_lock`) and first re-reads the manifests, so two
pages (or two apps) curating into one folder add to it in turn and never reuse a name.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from defectfill.data.images import load_image, load_mask, save_image, save_mask
from defectfill.data.sample import DefectSample
from defectfill.errors import DataError
from defectfill.generators.interface import GenerationResult
from defectfill.generators.manifest import MANIFEST_KEYS, MANIFEST_NAME, make_record
from defectfill.io_utils import Manifest
from defectfill.locks import output_lock

REJECTED_NAME = "rejected.jsonl"
CURATION_KEYS = (*MANIFEST_KEYS, "request_id", "candidate", "accepted_at")


def digest(*arrays: np.ndarray, extra: str = "") -> str:
    """A short content digest (12 hex) of arrays (shape + bytes) and a string."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    h.update(extra.encode())
    return h.hexdigest()[:12]


@dataclass(frozen=True)
class CurationRequest:
    """What a set of candidates was generated from: enough to record it and to decide it once.

    image: (H, W, 3) uint8 good image; mask: (H, W) bool request; source_name: the good image's
    name as the user knows it (file name or "upload"); settings: generator options shown in the page.
    """

    image: np.ndarray
    mask: np.ndarray
    defect_type: str
    generator: str
    model: str
    seed: int
    source_name: str = "upload"
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def request_id(self) -> str:
        return digest(self.image, self.mask, extra=json.dumps(
            [self.defect_type, self.generator, self.model, self.seed, list(self.settings)], default=str))


class CurationSet:
    """The data set folder (created when missing, resumed when it holds a manifest)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise DataError(f"data set folder {self.folder}: exists and is not a folder; pass a folder path")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.reload()

    def reload(self) -> None:
        """Read the manifests again (another page or app may have added to the folder)."""
        self.accepted = Manifest(self.folder / MANIFEST_NAME, key="image")
        self.rejected = Manifest(self.folder / REJECTED_NAME, key="id")
        self._decided = {(r.get("request_id"), r.get("candidate")) for r in [*self.accepted, *self.rejected]}

    # ------------------------------------------------------------------------------------ state
    def __len__(self) -> int:
        return len(self.accepted)

    def counts(self) -> dict[str, int]:
        """Accepted images per defect type."""
        return dict(sorted(Counter(str(r["defect_type"]) for r in self.accepted).items()))

    def summary(self) -> str:
        per_type = ", ".join(f"{t} {n}" for t, n in self.counts().items()) or "none yet"
        return (f"Data set `{self.folder}`: {len(self.accepted)} accepted ({per_type}), "
                f"{len(self.rejected)} rejected")

    def is_decided(self, request_id: str, candidate: int) -> bool:
        return (request_id, int(candidate)) in self._decided

    # --------------------------------------------------------------------------------- decisions
    def _source_path(self, request: CurationRequest) -> str:
        """Keep one copy of the good image (the defect's context, and a negative for training)."""
        rel = f"sources/{digest(request.image)}.png"
        if not (self.folder / rel).is_file():
            save_image(self.folder / rel, request.image)
        return rel

    def _free_name(self, stem: str, defect_type: str) -> str:
        """`<stem>__<type>_<NNNNN>.png`, NNNNN counting on from the manifest's length, not yet listed."""
        listed = {str(r["image"]) for r in self.accepted}
        k = len(self.accepted)
        while f"images/{stem}__{defect_type}_{k:05d}.png" in listed:
            k += 1
        return f"{stem}__{defect_type}_{k:05d}.png"

    def decide(self, request: CurationRequest, result: GenerationResult, accept: list[int],
               reject: list[int]) -> dict[str, list[int]]:
        """Write each accepted candidate (image, changed mask, request mask, manifest line) and log
        each rejected one. Candidates decided before are skipped. Returns what was done."""
        k = len(result.candidates)
        both = set(accept) & set(reject)
        bad = [i for i in [*accept, *reject] if not 0 <= int(i) < k]
        if bad or both:
            raise DataError(f"candidates {sorted(set(bad) | both)}: not in 0..{k - 1} or both accepted and rejected; "
                            "pick each candidate once, from the ones shown")
        if result.request_mask.shape != request.mask.shape:
            raise DataError("the candidates were made for another mask; generate again before deciding")
        with output_lock(self.folder, command="app"):
            self.reload()
            return self._decide(request, result, accept, reject)

    def _decide(self, request: CurationRequest, result: GenerationResult, accept: list[int],
                reject: list[int]) -> dict[str, list[int]]:
        request_id = request.request_id
        done: dict[str, list[int]] = {"accepted": [], "rejected": [], "skipped": []}
        stem = Path(request.source_name).stem or "upload"
        source = None
        for index in sorted(set(accept)):
            if self.is_decided(request_id, index):
                done["skipped"].append(index)
                continue
            source = source or self._source_path(request)
            name = self._free_name(stem, request.defect_type)
            save_mask(self.folder / "request_masks" / name, request.mask)
            save_mask(self.folder / "changed_masks" / name, result.changed_masks[index])
            save_image(self.folder / "images" / name, result.candidates[index])
            record = make_record(
                image=f"images/{name}", changed_mask=f"changed_masks/{name}", request_mask=f"request_masks/{name}",
                defect_type=request.defect_type, source_image=source, boxes=result.boxes[index],
                score=result.scores[index], seed=request.seed, generator=request.generator, model=request.model,
                selection_metric=result.selection_metric)
            record.update(request_id=request_id, candidate=int(index), accepted_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
            assert tuple(record) == CURATION_KEYS
            self.accepted.append(record)
            self._decided.add((request_id, int(index)))
            done["accepted"].append(index)
        for index in sorted(set(reject)):
            if self.is_decided(request_id, index):
                done["skipped"].append(index)
                continue
            self.rejected.append({"id": f"{request_id}:{index}", "request_id": request_id, "candidate": int(index),
                                  "defect_type": request.defect_type, "generator": request.generator,
                                  "model": request.model, "seed": int(request.seed),
                                  "score": float(result.scores[index]), "source_name": request.source_name})
            self._decided.add((request_id, int(index)))
            done["rejected"].append(index)
        done["skipped"].sort()
        return done

    # ------------------------------------------------------------------------------------ export
    def samples(self) -> list[DefectSample]:
        """The accepted images as DefectSamples (image, changed mask, manifest boxes), in manifest order."""
        out = []
        for record in self.accepted:
            image = load_image(self.folder / record["image"])
            mask = load_mask(self.folder / record["changed_mask"], shape=image.shape[:2])
            boxes = np.asarray(record["boxes"], dtype=np.int64).reshape(-1, 4)
            out.append(DefectSample(image, mask, str(record["defect_type"]), source=self.folder / record["image"],
                                    boxes=boxes, meta={"name": Path(record["image"]).stem}))
        return out

    def export(self) -> dict[str, Path]:
        """Write export/yolo (data.yaml, images/train, labels/train) and export/coco/annotations.json
        from every accepted image; returns the two paths. Re-exporting overwrites both."""
        with output_lock(self.folder, command="app"):
            self.reload()
            return self._export()

    def _export(self) -> dict[str, Path]:
        samples = self.samples()
        if not samples:
            raise DataError(f"{self.folder}: nothing accepted yet; accept a candidate before exporting")
        from defectfill.data.writers import class_names_of, write_coco, write_yolo

        names = class_names_of(samples)
        # a new defect type changes the class list, which write_yolo refuses to mix into an old data.yaml
        shutil.rmtree(self.folder / "export" / "yolo", ignore_errors=True)
        yolo = write_yolo(samples, self.folder / "export" / "yolo", class_names=names)
        coco = write_coco(samples, self.folder / "export" / "coco" / "annotations.json", class_names=names)
        return {"yolo": yolo, "coco": coco}
