"""Generation requests for a downstream arm: (good image, request mask, defect type) triples.

Until a dedicated mask-proposal model is used, a request mask is a real training mask of the
requested type (its bounding-box crop), flipped at random and placed at a random position on the
good image; a crop larger than the image is shrunk to fit. Types are assigned round-robin so
every class gets the same number of requests.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from defectfill.data.sample import DefectSample
from defectfill.errors import GenerationError


def place_mask(mask_crop: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Put a (h, w) bool crop at a random position of an all-False (H, W) mask."""
    height, width = shape
    crop = mask_crop
    if crop.shape[0] > height or crop.shape[1] > width:
        scale = min(height / crop.shape[0], width / crop.shape[1])
        new_size = (max(1, int(crop.shape[1] * scale)), max(1, int(crop.shape[0] * scale)))
        crop = cv2.resize(crop.astype(np.uint8), new_size, interpolation=cv2.INTER_NEAREST) > 0
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1]
    y = int(rng.integers(0, height - crop.shape[0] + 1))
    x = int(rng.integers(0, width - crop.shape[1] + 1))
    out = np.zeros((height, width), bool)
    out[y : y + crop.shape[0], x : x + crop.shape[1]] = crop
    return out


def plan_requests(
    good_images: Sequence[np.ndarray],
    real_defects: Sequence[DefectSample],
    defect_types: Sequence[str],
    num_requests: int,
    seed: int = 0,
) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """`num_requests` (good image, request mask, type) triples: types round-robin, images cycled."""
    if not good_images:
        raise GenerationError("plan_requests: no good images; pass the good images the defects go into")
    crops: dict[str, list[np.ndarray]] = {}
    for sample in real_defects:
        if not sample.is_good and sample.mask.any():
            ys, xs = np.nonzero(sample.mask)
            crops.setdefault(sample.defect_type, []).append(sample.mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
    absent = [t for t in defect_types if t not in crops]
    if absent:
        raise GenerationError(f"plan_requests: no real mask of type(s) {absent}; pass at least one real defect per type")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(good_images))
    images, masks, types = [], [], []
    for i in range(num_requests):
        defect_type = defect_types[i % len(defect_types)]
        image = good_images[order[i % len(good_images)]]
        crop = crops[defect_type][int(rng.integers(len(crops[defect_type])))]
        images.append(image)
        masks.append(place_mask(crop, image.shape[:2], rng))
        types.append(defect_type)
    return images, masks, types
