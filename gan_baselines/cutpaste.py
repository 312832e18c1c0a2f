"""Cut-paste: the naive baseline every learned defect generator must beat.

`fit(samples)` keeps, per defect type, the real defect crops (the bounding box of each defective
sample's mask) with their masks. `generate(image, mask)` picks one
crop of the requested type at random, flips it and rotates it by a multiple of 90° at random,
resizes it to the bounding box of the request mask, and pastes the crop's *defect pixels* there:

    alpha = request_mask ∩ resized_defect_mask      (the request mask itself if they do not overlap)
    out   = alpha · patch + (1 − alpha) · image      (alpha optionally feathered inside the request)

Feathering blurs alpha with a Gaussian of `feather` px and then cuts it back to the request mask,
so every pixel outside the request mask is bit-identical to the input. `blend: poisson` (registered
as the generator `cutpaste_poisson`) replaces the alpha blend by Poisson image editing (Pérez et al.
2003, OpenCV `seamlessClone`, normal cloning): inside alpha > 0 the output solves
Δout = Δpatch with out = image on the boundary, so the seam carries no step in intensity (a mask of
a few pixels that OpenCV cannot clone is alpha-blended instead). The label is the changed
pixels (`defectfill.masks.changed_mask`), as for every generator. Score (for selection among
candidates): the mean absolute difference from the good image inside the request mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from defectfill.data.sample import DefectSample
from defectfill.errors import GenerationError
from defectfill.generators.context import GeneratorContext
from defectfill.generators.interface import GenerationResult
from defectfill.generators.registry import GeneratorPlugin
from defectfill.generators.shared import (
    MEAN_ABS_DIFF,
    build_result,
    check_request,
    input_is_gray,
    mean_abs_diff_scores,
    numpy_rng,
)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """y0, y1, x0, x1 (exclusive) of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


class CutPaste:
    """Cut-paste defect generator (implements `defectfill.generators.interface.DefectGenerator`)."""

    name = "cutpaste"

    def __init__(self, feather: float = 1.0, flip: bool = True, rotate: bool = True, change_threshold: float = 0.1,
                 blend: str = "alpha"):
        if blend not in ("alpha", "poisson"):
            raise GenerationError(f"cut-paste: blend must be 'alpha' or 'poisson', found {blend!r}")
        self.blend = blend
        self.name = "cutpaste" if blend == "alpha" else "cutpaste_poisson"
        self.feather = float(feather)
        self.flip = flip
        self.rotate = rotate
        self.change_threshold = change_threshold
        self.patches: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}

    @property
    def defect_types(self) -> list[str]:
        return sorted(self.patches)

    def fit(self, samples: Sequence[DefectSample]) -> CutPaste:
        """Store the defect crop (image, mask) of every defective sample, per defect type."""
        self.patches = {}
        for sample in samples:
            if sample.is_good or not sample.mask.any():
                continue
            y0, y1, x0, x1 = _bbox(sample.mask)
            self.patches.setdefault(sample.defect_type, []).append(
                (sample.image[y0:y1, x0:x1].copy(), sample.mask[y0:y1, x0:x1].copy())
            )
        if not self.patches:
            raise GenerationError("CutPaste.fit: no defective sample with a non-empty mask; pass real defects")
        return self

    def _transformed_patch(self, defect_type: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        patches = self.patches[defect_type]
        patch, patch_mask = patches[int(rng.integers(len(patches)))]
        if self.flip and rng.random() < 0.5:
            patch, patch_mask = patch[:, ::-1], patch_mask[:, ::-1]
        if self.flip and rng.random() < 0.5:
            patch, patch_mask = patch[::-1], patch_mask[::-1]
        if self.rotate:
            k = int(rng.integers(4))
            patch, patch_mask = np.rot90(patch, k), np.rot90(patch_mask, k)
        return np.ascontiguousarray(patch), np.ascontiguousarray(patch_mask)

    def _paste(self, image: np.ndarray, request: np.ndarray, rng: np.random.Generator, defect_type: str) -> np.ndarray:
        y0, y1, x0, x1 = _bbox(request)
        height, width = y1 - y0, x1 - x0
        patch, patch_mask = self._transformed_patch(defect_type, rng)
        patch = cv2.resize(patch, (width, height), interpolation=cv2.INTER_LINEAR)
        patch_mask = cv2.resize(patch_mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
        inside = request[y0:y1, x0:x1]
        alpha = (inside & patch_mask).astype(np.float32)
        if not alpha.any():  # shapes do not overlap: fill the request region with the patch
            alpha = inside.astype(np.float32)
        if self.blend == "poisson":
            try:
                return _poisson_paste(image, patch, alpha > 0, (y0, x0))
            except cv2.error:  # OpenCV cannot clone some masks of a few pixels: those are alpha-blended
                pass
        if self.feather > 0:
            alpha = cv2.GaussianBlur(alpha, (0, 0), self.feather) * inside  # stays inside the request
        out = image.copy()
        region = image[y0:y1, x0:x1].astype(np.float32)
        blended = alpha[..., None] * patch.astype(np.float32) + (1 - alpha[..., None]) * region
        # pixels with alpha 0 are copied, not recomputed, so they stay bit-identical
        out[y0:y1, x0:x1] = np.where(alpha[..., None] > 0, np.clip(blended + 0.5, 0, 255).astype(np.uint8), image[y0:y1, x0:x1])
        return out

    def generate(
        self,
        image: Any,
        mask: Any,
        *,
        defect_type: str,
        num_candidates: int = 1,
        generator: Any = None,
    ) -> GenerationResult:
        """Paste `num_candidates` random real defect crops of `defect_type` into `mask` on `image`."""
        gray = input_is_gray(image)
        image, request = check_request(image, mask, defect_type=defect_type, known_types=self.defect_types,
                                       num_candidates=num_candidates)
        rng = numpy_rng(generator)
        candidates = [self._paste(image, request, rng, defect_type) for _ in range(num_candidates)]
        return build_result(image, request, candidates, mean_abs_diff_scores(image, candidates, request),
                            defect_type=defect_type, selection_metric=MEAN_ABS_DIFF, change_threshold=self.change_threshold,
                            top_k=num_candidates, gray=gray,
                            meta={"generator": self.name, "feather": self.feather, "blend": self.blend})


def _poisson_paste(image: np.ndarray, patch: np.ndarray, inside: np.ndarray, corner: tuple[int, int]) -> np.ndarray:
    """Poisson-blend `patch` (placed at `corner` = y0, x0) into `image` where `inside`; pixels outside
    are copied. Padded by reflection so that a mask touching the border still has a boundary."""
    pad = 4
    y0, x0 = corner
    height, width = inside.shape
    source = image.copy()
    source[y0 : y0 + height, x0 : x0 + width] = patch
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[y0 : y0 + height, x0 : x0 + width] = inside * 255
    padded = [cv2.copyMakeBorder(np.ascontiguousarray(a), pad, pad, pad, pad, cv2.BORDER_REFLECT) for a in (source, image)]
    mask = cv2.copyMakeBorder(mask, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    ys, xs = np.nonzero(mask)
    # seamlessClone centres the mask's bounding box on `center`: this centre keeps it in place
    center = (int(xs.min() + (xs.max() - xs.min() + 1) // 2), int(ys.min() + (ys.max() - ys.min() + 1) // 2))
    cloned = cv2.seamlessClone(padded[0], padded[1], mask, center, cv2.NORMAL_CLONE)[pad:-pad, pad:-pad]
    return np.where(mask[pad:-pad, pad:-pad, None] > 0, cloned, image)


# ------------------------------------------------------------------------------ plug-in
@dataclass
class CutPasteOptions:
    feather: float = 1.0  # px of Gaussian feathering of the pasted defect, inside the request mask
    flip: bool = True
    rotate: bool = True
    change_threshold: float = 0.1
    blend: Literal["alpha", "poisson"] = "alpha"


@dataclass
class PoissonOptions(CutPasteOptions):
    blend: Literal["alpha", "poisson"] = "poisson"


def _cutpaste(o: CutPasteOptions) -> CutPaste:
    return CutPaste(feather=o.feather, flip=o.flip, rotate=o.rotate, change_threshold=o.change_threshold, blend=o.blend)


def build(ctx: GeneratorContext) -> CutPaste:
    """Cut-paste needs no training: it keeps the source defects' crops."""
    defects = [s for s in ctx.source_defects if s.defect_type in ctx.defect_types]
    return _cutpaste(ctx.options).fit(defects)


def load(path: Path, options: CutPasteOptions, device: str = "cpu") -> CutPaste:
    """Cut-paste's "model" is a folder of real labelled defects (any layout the readers know)."""
    from defectfill.data.readers import read_dataset

    return _cutpaste(options).fit(read_dataset(path))


PLUGIN = GeneratorPlugin(build=build, options=CutPasteOptions, load=load,
                         help="cut-paste: real defect crops pasted into the mask (the floor every generator must beat)")
POISSON_PLUGIN = GeneratorPlugin(build=build, options=PoissonOptions, load=load,
                                 help="cut-paste with Poisson blending (seamlessClone): no intensity step at the seam")
