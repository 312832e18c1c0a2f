"""Masks -> labels: binarise, clean, connected components, boxes, changed pixels, resizing.

This is where a generated image gets its labels (DESIGN §1 step 4): the label of a synthetic
defect is the set of pixels that really changed inside the inpainting region,
`region ∩ (|out − in| > τ)`, cleaned of specks, and its boxes are the minimal axis-aligned
rectangle of each connected component.

Conventions (docs/DEVELOPING.md): masks are (H, W) bool; boxes are (N, 4) int64 arrays of
`x0, y0, x1, y1` with exclusive ends, so a one-pixel defect at (x, y) has box (x, y, x+1, y+1)
and a box's area is (x1 − x0)·(y1 − y0).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from defectfill.errors import DataError

__all__ = [
    "ResizeStats",
    "binarize",
    "boxes_to_mask",
    "changed_mask",
    "clean_mask",
    "connected_components",
    "dilate",
    "erode",
    "mask_to_boxes",
    "merge_boxes",
    "resize_mask",
]


def _as_2d(mask: Any, name: str = "mask") -> np.ndarray:
    """Array-like (numpy, torch, PIL) -> 2-D numpy array; a trailing or leading singleton axis is dropped."""
    if hasattr(mask, "detach"):  # torch tensor
        mask = mask.detach().cpu().numpy()
    arr = np.asarray(mask)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3:  # colour mask: a pixel is "on" when any channel is
        arr = arr.max(axis=2)
    if arr.ndim != 2:
        raise DataError(f"{name}: expected a 2-D (H, W) mask, found shape {arr.shape}; pass one mask per call")
    return arr


def binarize(mask: Any, threshold: float = 127) -> np.ndarray:
    """Any mask -> (H, W) bool.

    bool stays as is; float masks with values in [0, 1] compare against threshold/255 (so the
    same `threshold` means the same grey level for 0-1 and 0-255 masks); other numbers compare
    against `threshold` directly (strictly greater).
    """
    arr = _as_2d(mask)
    if arr.dtype == bool:
        return arr.copy()
    if np.issubdtype(arr.dtype, np.floating) and arr.size and float(arr.max()) <= 1.0:
        return arr > threshold / 255.0
    return arr > threshold


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def dilate(mask: Any, radius: int) -> np.ndarray:
    """Grow a mask by a disk of `radius` pixels (radius 0: unchanged copy)."""
    m = binarize(mask)
    if radius <= 0:
        return m
    return cv2.dilate(m.astype(np.uint8), _disk(int(radius))).astype(bool)


def erode(mask: Any, radius: int) -> np.ndarray:
    """Shrink a mask by a disk of `radius` pixels (radius 0: unchanged copy)."""
    m = binarize(mask)
    if radius <= 0:
        return m
    return cv2.erode(m.astype(np.uint8), _disk(int(radius))).astype(bool)


def connected_components(mask: Any, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """Label image (int32, 0 = background, 1..n = components) and the number n of components."""
    if connectivity not in (4, 8):
        raise DataError(f"connectivity must be 4 or 8, found {connectivity}")
    m = binarize(mask).astype(np.uint8)
    count, labels = cv2.connectedComponents(m, connectivity=connectivity, ltype=cv2.CV_32S)
    return labels, int(count) - 1


def component_masks(mask: Any, min_area: int = 1, connectivity: int = 8) -> list[np.ndarray]:
    """The connected components of `mask` with at least `min_area` pixels, each as an (H, W) bool mask,
    in label order (top-to-bottom, then left-to-right, of their first pixel)."""
    labels, n = connected_components(mask, connectivity)
    out = [labels == k for k in range(1, n + 1)]
    return [m for m in out if int(m.sum()) >= min_area]


def clean_mask(mask: Any, min_area: int = 4, open_radius: int = 0, close_radius: int = 1) -> np.ndarray:
    """Opening (removes thin noise) then closing (fills pin-holes, joins near pixels), then drops
    8-connected components smaller than `min_area` pixels.

    Closing comes after opening so that a defect made of nearly touching pixels is first joined
    only when the speckle that opening removes is gone.
    """
    m = binarize(mask).astype(np.uint8)
    if open_radius > 0:
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, _disk(int(open_radius)))
    if close_radius > 0:
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, _disk(int(close_radius)))
    if min_area > 1:
        count, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        keep = np.zeros(count, dtype=bool)
        keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
        return keep[labels]
    return m.astype(bool)


def _sort_boxes(boxes: np.ndarray) -> np.ndarray:
    """Sort boxes top-to-bottom, then left-to-right (y0, x0, y1, x1) so outputs are deterministic."""
    if len(boxes) == 0:
        return boxes.reshape(0, 4).astype(np.int64)
    order = np.lexsort((boxes[:, 2], boxes[:, 3], boxes[:, 0], boxes[:, 1]))
    return boxes[order].astype(np.int64)


def mask_to_boxes(mask: Any, min_area: int = 1, connectivity: int = 8) -> np.ndarray:
    """(N, 4) int64 boxes x0, y0, x1, y1 (exclusive ends): the minimal rectangle of each connected
    component of at least `min_area` pixels, sorted by (y0, x0)."""
    if connectivity not in (4, 8):
        raise DataError(f"connectivity must be 4 or 8, found {connectivity}")
    m = binarize(mask).astype(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=connectivity)
    stats = stats[1:]
    stats = stats[stats[:, cv2.CC_STAT_AREA] >= max(1, min_area)]
    x0 = stats[:, cv2.CC_STAT_LEFT]
    y0 = stats[:, cv2.CC_STAT_TOP]
    boxes = np.stack([x0, y0, x0 + stats[:, cv2.CC_STAT_WIDTH], y0 + stats[:, cv2.CC_STAT_HEIGHT]], axis=1)
    return _sort_boxes(boxes.reshape(-1, 4))


def _as_boxes(boxes: Any, name: str = "boxes") -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.int64) if len(boxes) else np.zeros((0, 4), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise DataError(f"{name}: expected an (N, 4) array of x0, y0, x1, y1, found shape {arr.shape}")
    return arr


def merge_boxes(boxes: Any, gap: int) -> np.ndarray:
    """Merge boxes separated by at most `gap` pixels (0: overlapping or touching boxes) into their
    enclosing box, repeatedly, until no two boxes are that close. Sorted like `mask_to_boxes`.

    The separation of two boxes is the larger of their horizontal and vertical gaps (0 when they
    overlap along that axis); e.g. the pieces of a broken yarn 2 px apart merge with gap >= 2.
    """
    merged = [list(map(int, b)) for b in _as_boxes(boxes)]
    changed = True
    while changed:  # a merged box may now be close to a box it was not close to before
        changed = False
        out: list[list[int]] = []
        for box in merged:
            for other in out:
                dx = max(0, max(box[0], other[0]) - min(box[2], other[2]))
                dy = max(0, max(box[1], other[1]) - min(box[3], other[3]))
                if max(dx, dy) <= gap:
                    other[0], other[1] = min(other[0], box[0]), min(other[1], box[1])
                    other[2], other[3] = max(other[2], box[2]), max(other[3], box[3])
                    changed = True
                    break
            else:
                out.append(box)
        merged = out
    return _sort_boxes(np.asarray(merged, dtype=np.int64).reshape(-1, 4))


def split_long_boxes(mask: Any, boxes: Any, max_aspect: float) -> np.ndarray:
    """Split each box whose long side exceeds `max_aspect` × its short side into n = ⌈aspect /
    max_aspect⌉ equal bands along the long side; each band's box is the tight box of the mask pixels
    inside it (bands without any are dropped), split again while still too long. A thin broken yarn
    becomes a chain of squarer boxes."""
    m = binarize(mask)
    out = []
    for x0, y0, x1, y1 in _as_boxes(boxes):
        width, height = x1 - x0, y1 - y0
        aspect = max(width, height) / max(1, min(width, height))
        if aspect <= max_aspect:
            out.append([x0, y0, x1, y1])
            continue
        pieces = int(np.ceil(aspect / max_aspect))
        along_x = width >= height
        edges = np.linspace(x0 if along_x else y0, x1 if along_x else y1, pieces + 1).round().astype(int)
        for a, b in itertools.pairwise(edges):
            window = np.zeros_like(m)
            if along_x:
                window[y0:y1, a:b] = m[y0:y1, a:b]
            else:
                window[a:b, x0:x1] = m[a:b, x0:x1]
            ys, xs = np.nonzero(window)
            if len(ys):
                piece = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
                # a diagonal piece's tight box can still be too long: split it again (it is shorter)
                out += split_long_boxes(m, [piece], max_aspect).tolist() if b - a < max(width, height) else [piece]
    return _sort_boxes(np.asarray(out, dtype=np.int64).reshape(-1, 4))


def label_boxes(mask: Any, mode: str = "component", *, instance_gap: int = 8, max_aspect: float = 4.0) -> np.ndarray:
    """The box labels of a defect mask: `component` one per connected component (the default),
    `instance` components within `instance_gap` px merged (`merge_boxes`), `split` long components
    cut into boxes of bounded aspect ratio (`split_long_boxes`)."""
    boxes = mask_to_boxes(mask)
    if mode == "component":
        return boxes
    if mode == "instance":
        return merge_boxes(boxes, instance_gap)
    if mode == "split":
        return split_long_boxes(mask, boxes, max_aspect)
    raise DataError(f"box labelling {mode!r} is unknown; use component, instance or split")


def fill_ratios(mask: Any, boxes: Any) -> np.ndarray:
    """Per box, the share of its area that is mask (1: the box is all defect)."""
    m = binarize(mask)
    return np.array([m[y0:y1, x0:x1].mean() if (y1 > y0 and x1 > x0) else 0.0 for x0, y0, x1, y1 in _as_boxes(boxes)])


def boxes_to_mask(boxes: Any, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool mask with every box filled; boxes are clipped to the image."""
    h, w = int(shape[0]), int(shape[1])
    out = np.zeros((h, w), dtype=bool)
    for x0, y0, x1, y1 in _as_boxes(boxes):
        out[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)] = True
    return out


def _as_image(image: Any, name: str) -> np.ndarray:
    from defectfill.data.images import to_rgb_array  # late: images.py must not depend on masks

    return to_rgb_array(image, name=name)


def changed_mask(
    original: Any,
    generated: Any,
    region: Any,
    threshold: float = 0.1,
    min_area: int = 4,
    close_radius: int = 1,
) -> np.ndarray:
    """The pixels of `region` that really changed: region ∩ (d > threshold), cleaned.

    d is the per-pixel colour difference in [0, 1], the largest over the channels of
    |generated − original| / 255, so a change in one channel only (a coloured stain on grey
    cloth) counts fully. Cleaning: closing by `close_radius`, components < `min_area` dropped,
    and the result is cut back to `region` (closing may grow it by a pixel at the edge).
    """
    before = _as_image(original, "original").astype(np.int16)
    after = _as_image(generated, "generated").astype(np.int16)
    inside = binarize(region)
    if before.shape != after.shape:
        raise DataError(
            f"changed_mask: original {before.shape[1]}x{before.shape[0]} and generated "
            f"{after.shape[1]}x{after.shape[0]} differ in size; pass the image the generator was given"
        )
    if inside.shape != before.shape[:2]:
        raise DataError(
            f"changed_mask: region {inside.shape[1]}x{inside.shape[0]} does not match the image "
            f"{before.shape[1]}x{before.shape[0]}; pass the inpainting mask at image size"
        )
    difference = np.abs(after - before).max(axis=2) / 255.0
    changed = inside & (difference > threshold)
    return clean_mask(changed, min_area=min_area, open_radius=0, close_radius=close_radius) & inside


@dataclass
class ResizeStats:
    """Counts kept by `resize_mask` so that callers can log how often tiny masks were rescued."""

    resized: int = 0
    kept_nonempty: int = 0  # masks that downsampling would have emptied; their centroids kept


def resize_mask(
    mask: Any,
    shape: tuple[int, int],
    mode: str = "area",
    keep_nonempty: bool = True,
    stats: ResizeStats | None = None,
) -> np.ndarray:
    """Resize a mask to `shape` = (H, W) -> bool.

    mode "area": a target pixel is on when at least half of the source area it covers is on
    (cv2 INTER_AREA, the analogue of torch's `F.interpolate(mode="area")`); "nearest": nearest
    neighbour. With `keep_nonempty`, a non-empty mask that the resize empties (a 3-px defect at
    latent size 1/8) keeps the pixel under the centroid of each of its components, and
    `stats.kept_nonempty` counts it for the caller's log.
    """
    if mode not in ("area", "nearest"):
        raise DataError(f"resize_mask: mode must be 'area' or 'nearest', found {mode!r}")
    src = binarize(mask)
    h, w = int(shape[0]), int(shape[1])
    if h <= 0 or w <= 0:
        raise DataError(f"resize_mask: target shape must be positive (H, W), found {shape}")
    if stats is not None:
        stats.resized += 1
    if src.shape == (h, w):
        return src
    if mode == "area":
        coverage = cv2.resize(src.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
        out = coverage >= 0.5
    else:
        out = cv2.resize(src.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    if keep_nonempty and src.any() and not out.any():
        count, _, _, centroids = cv2.connectedComponentsWithStats(src.astype(np.uint8), connectivity=8)
        scale_x, scale_y = w / src.shape[1], h / src.shape[0]
        for cx, cy in centroids[1:count]:
            # centroid (pixel-centre coordinates) -> target pixel index
            out[min(h - 1, int((cy + 0.5) * scale_y)), min(w - 1, int((cx + 0.5) * scale_x))] = True
        if stats is not None:
            stats.kept_nonempty += 1
    return out
