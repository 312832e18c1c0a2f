"""One request planner: which good image each synthetic defect goes into, where, and with which seed.

Every user of generation plans its requests here, so that every synthetic arm of a comparison gets
the same requests (the same image, mask and seed for request i) and only the generator differs:

    per_image=n   n requests into every source image (`defectfill generate`, the real-data run);
                  request (image i, repeat j) has type defect_types[(i * n + j) % T]
    per_type=n    n requests per defect type (the bench), good images taken in turn, type-interleaved
                  so that each type sees every target texture: (type t, k) -> image (k * T + t) % N

The mask of a request is proposed when it is generated (the image's size is known then), from a
numpy generator seeded by the request's `mask_key`, by `MaskPolicy.propose` (`mask_proposals`:
shapes of the real masks of the type, or procedural shapes); the request's `seed` seeds its
generation. Both depend only on the plan, never on how many processes ran it or how often it resumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from defectfill.data.images import list_images, load_mask
from defectfill.data.sample import DefectSample
from defectfill.errors import DataError

Source = Path | DefectSample


@dataclass(frozen=True)
class Request:
    """One synthetic defect to make."""

    index: int
    name: str  # output file name (images/<name>)
    defect_type: str
    source: Source  # the good image: a path, or an in-memory sample (whose own defects are kept)
    seed: int  # the seed of its generation
    mask_key: tuple[int, ...]  # the seed of its mask proposal
    mask: np.ndarray | None = field(default=None, compare=False)  # explicit mask; None: proposed

    @property
    def source_name(self) -> str:
        if isinstance(self.source, DefectSample):
            return str(self.source.meta.get("name") or self.source.source or f"good[{self.index}]")
        return str(self.source)


def _stem(source: Source, position: int) -> str:
    if isinstance(source, DefectSample):
        name = source.meta.get("name") or (Path(source.source).stem if source.source else f"img{position}")
        return Path(str(name)).stem
    return Path(source).stem


def _unique_stems(sources: Sequence[Source]) -> list[str]:
    """Stems, with -1, -2, ... appended to repeats (equal stems in different folders)."""
    seen: dict[str, int] = {}
    out = []
    for position, source in enumerate(sources):
        stem = _stem(source, position)
        count = seen.get(stem, 0)
        seen[stem] = count + 1
        out.append(stem if count == 0 else f"{stem}-{count}")
    return out


def plan_requests(sources: Sequence[Source], defect_types: Sequence[str], *, per_image: int | None = None,
                  per_type: int | None = None, seed: int = 0, generation_seed: int | None = None,
                  own_type: bool = False) -> list[Request]:
    """The requests (module docstring); request i is generated with seed `generation_seed + i`
    (default `seed + i`). own_type (per_image): a source that is a defect sample of one of
    `defect_types` gets requests of its own type (its real defect stays labelled as what it is)."""
    if (per_image is None) == (per_type is None):
        raise DataError("plan_requests: give exactly one of per_image (requests per image) and per_type")
    count = per_image if per_image is not None else per_type
    if count is None or count < 1:
        raise DataError(f"requests per {'image' if per_image is not None else 'type'} must be >= 1, found {count}")
    if not sources:
        raise DataError("no good images to put defects into: pass at least one good image")
    if not defect_types:
        raise DataError("no defect type to generate: pass at least one")
    base = seed if generation_seed is None else generation_seed
    stems = _unique_stems(sources)
    types = list(defect_types)
    slots = []  # (position of source, defect type, mask key, name)
    if per_image is not None:
        for i, source in enumerate(sources):
            for j in range(per_image):
                defect_type = types[(i * per_image + j) % len(types)]
                if own_type and isinstance(source, DefectSample) and source.defect_type in types:
                    defect_type = source.defect_type
                slots.append((i, defect_type, (seed, i, j), f"{stems[i]}__{defect_type}_{j}.png"))
    else:
        for k in range(per_type):
            for t, defect_type in enumerate(types):
                position = (k * len(types) + t) % len(sources)
                slots.append((position, defect_type, (seed, t, k), f"{stems[position]}__{defect_type}_{k}.png"))
        slots.sort(key=lambda slot: (types.index(slot[1]), slot[2][2]))  # type-major, as the bench always had
    return [Request(index, name, defect_type, sources[position], base + index, key)
            for index, (position, defect_type, key, name) in enumerate(slots)]


@dataclass
class MaskPolicy:
    """How a request's mask is proposed (`defectfill.mask_proposals.propose_masks`).

    mode: "real" (shapes of the real masks of the type), "procedural", "auto" (real when there are some).
    real_masks: {defect_type: [real masks]}.
    clearance_px: keep this many pixels away from a defect already in the source image (an
        in-memory sample with a mask); None: the whole image is allowed.
    allow_blank: also propose on blank or saturated areas of the image (default: only on fabric,
        `mask_proposals.fabric_region`, when the image is passed to `propose`).
    """

    mode: str = "auto"
    real_masks: dict[str, list[np.ndarray]] = field(default_factory=dict)
    allow_border: bool = False
    clearance_px: int | None = None
    allow_blank: bool = False

    def propose(self, request: Request, shape: tuple[int, int], existing: np.ndarray | None = None,
                image: np.ndarray | None = None) -> np.ndarray:
        """The request's mask (its own, or proposed on an image of `shape`; on `image`'s fabric when given)."""
        from defectfill.mask_proposals import propose_masks
        from defectfill.masks import dilate

        if request.mask is not None:
            return np.asarray(request.mask, bool)
        region = None
        if self.clearance_px is not None and existing is not None and existing.any():
            region = ~dilate(existing, self.clearance_px)
        rng = np.random.default_rng(list(request.mask_key))
        return propose_masks(shape, request.defect_type, 1, rng, real_masks=self.real_masks.get(request.defect_type, []),
                             mode=self.mode, allow_border=self.allow_border, region=region,
                             image=None if self.allow_blank else image)[0]


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


def masks_by_type(samples: Sequence[DefectSample]) -> dict[str, list[np.ndarray]]:
    """{defect type: the non-empty masks of its samples}: the shapes `MaskPolicy` proposes from."""
    out: dict[str, list[np.ndarray]] = {}
    for sample in samples:
        if not sample.is_good and sample.mask.any():
            out.setdefault(sample.defect_type, []).append(sample.mask)
    return out
