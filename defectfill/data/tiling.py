"""Strip tiling: cut long fabric strips (AITEX 4096x256) into model-sized tiles and merge back.

Training: `tile_sample` cuts a labelled strip into overlapping tiles, keeps every tile holding a
defect and a sampled fraction of the good ones, and clips the boxes to each tile. Inference:
`tile_image` cuts, the model predicts per tile, `merge_boxes_from_tiles` brings boxes back to strip
coordinates (joining the pieces of a defect cut by a tile border, removing duplicates seen by
two overlapping tiles) and `stitch_masks` averages overlapping per-pixel predictions.

Tile positions: along each axis, starts at multiples of the stride `tile − overlap`, the last one
moved back so that the tiles end exactly at the image border (no padding unless the image is
smaller than a tile; then it is padded with black at the bottom/right, recorded in meta).

Sliver rule (a box cut by a tile border): the piece inside a tile is DROPPED when it keeps less
than `min_keep` (30 %) of the box's area AND its length across a border that cut it is less than
`min_side` (4 px): a 2-px strip of a defect at the edge of a tile is not a defect the model can
see, while a long thin defect crossing the whole tile (a broken pick) keeps its full length along
the cut axis and stays. Pixel masks are cropped as they are (the pixels stay true); a tile whose
only defect pixels are slivers is neither a defect tile nor a good tile and is left out (counted
in `TilingStats.sliver_only_tiles`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from defectfill.data.sample import DefectSample
from defectfill.errors import DataError
from defectfill.masks import mask_to_boxes

__all__ = [
    "TilingStats",
    "clip_boxes_to_tile",
    "merge_boxes_from_tiles",
    "stitch_masks",
    "tile_image",
    "tile_offsets",
    "tile_positions",
    "tile_sample",
]

MIN_KEEP = 0.3
MIN_SIDE = 4


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    h, w = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if h <= 0 or w <= 0:
        raise DataError(f"{name} must be positive, found {value}")
    return int(h), int(w)


def tile_offsets(length: int, tile: int, overlap: int) -> list[int]:
    """Start positions of tiles of size `tile` with at least `overlap` pixels shared between
    neighbours, covering [0, length); the last tile ends at `length` (one tile at 0 if the length
    is at most the tile size)."""
    if not 0 <= overlap < tile:
        raise DataError(f"overlap must be in [0, tile) = [0, {tile}), found {overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def tile_positions(
    shape: tuple[int, int], tile: int | tuple[int, int], overlap: int | tuple[int, int] = 0
) -> list[tuple[int, int]]:
    """Top-left (x, y) of every tile over an image of `shape` = (H, W), row by row."""
    th, tw = _pair(tile, "tile")
    oh, ow = (overlap, overlap) if isinstance(overlap, (int, np.integer)) else overlap
    ys = tile_offsets(int(shape[0]), th, int(oh))
    xs = tile_offsets(int(shape[1]), tw, int(ow))
    return [(x, y) for y in ys for x in xs]


def _crop(array: np.ndarray, x: int, y: int, th: int, tw: int) -> tuple[np.ndarray, bool]:
    """Crop with black padding where the image is smaller than the tile."""
    piece = array[y : y + th, x : x + tw]
    if piece.shape[0] == th and piece.shape[1] == tw:
        return piece.copy(), False
    padded = np.zeros((th, tw) + array.shape[2:], dtype=array.dtype)
    padded[: piece.shape[0], : piece.shape[1]] = piece
    return padded, True


def tile_image(
    image: np.ndarray, tile: int | tuple[int, int], overlap: int | tuple[int, int] = 0
) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Cut an (H, W[, C]) array into tiles; returns the tiles and their (x, y) offsets."""
    th, tw = _pair(tile, "tile")
    offsets = tile_positions(image.shape[:2], (th, tw), overlap)
    return [_crop(image, x, y, th, tw)[0] for x, y in offsets], offsets


def clip_boxes_to_tile(
    boxes: np.ndarray,
    offset: tuple[int, int],
    tile: int | tuple[int, int],
    min_keep: float = MIN_KEEP,
    min_side: int = MIN_SIDE,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Boxes in image coordinates -> the pieces inside one tile, in tile coordinates.

    Returns (kept boxes (K, 4) int64, the indices of the input boxes they come from, the number of
    slivers dropped by the rule in the module docstring).
    """
    th, tw = _pair(tile, "tile")
    x, y = offset
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    kept, index, slivers = [], [], 0
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        cx0, cy0, cx1, cy1 = max(x0, x), max(y0, y), min(x1, x + tw), min(y1, y + th)
        if cx1 <= cx0 or cy1 <= cy0:
            continue  # not in this tile
        fraction = (cx1 - cx0) * (cy1 - cy0) / max(1, (x1 - x0) * (y1 - y0))
        cut_x, cut_y = (cx0, cx1) != (x0, x1), (cy0, cy1) != (y0, y1)
        thin = (cut_x and cx1 - cx0 < min_side) or (cut_y and cy1 - cy0 < min_side)
        if fraction < min_keep and thin:
            slivers += 1
            continue
        kept.append((cx0 - x, cy0 - y, cx1 - x, cy1 - y))
        index.append(i)
    return np.asarray(kept, dtype=np.int64).reshape(-1, 4), np.asarray(index, dtype=np.int64), slivers


@dataclass
class TilingStats:
    """Counts over `tile_sample` calls, for the caller's log."""

    defect_tiles: int = 0
    good_tiles: int = 0  # kept after sampling
    good_tiles_seen: int = 0
    sliver_only_tiles: int = 0
    slivers_dropped: int = 0
    padded_tiles: int = 0


def tile_sample(
    sample: DefectSample,
    tile: int | tuple[int, int] = 256,
    overlap: int | tuple[int, int] = 32,
    keep_good_ratio: float = 0.25,
    rng: np.random.Generator | int | None = None,
    min_keep: float = MIN_KEEP,
    min_side: int = MIN_SIDE,
    stats: TilingStats | None = None,
) -> list[DefectSample]:
    """Cut one strip into tiles: every tile with a defect box, plus round(keep_good_ratio × the
    good tiles) good tiles drawn with `rng` (a good strip gives only sampled good tiles).

    Each tile is a DefectSample with the crop of image and mask, its boxes clipped to the tile
    (sample.boxes if set, else the mask's components), meta["tile_offset"] = (x, y) in the strip,
    meta["parent"] and meta["name"] = "<parent>_x<x>_y<y>".
    """
    if not 0.0 <= keep_good_ratio <= 1.0:
        raise DataError(f"keep_good_ratio must be in [0, 1], found {keep_good_ratio}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    stats = stats if stats is not None else TilingStats()
    th, tw = _pair(tile, "tile")
    boxes = np.zeros((0, 4), np.int64)
    if not sample.is_good:
        boxes = np.asarray(sample.boxes if sample.boxes is not None else mask_to_boxes(sample.mask), np.int64)
    box_classes = sample.meta.get("box_classes")
    if not isinstance(box_classes, (list, tuple)) or len(box_classes) != len(boxes):
        box_classes = None
    parent = str(sample.meta.get("name") or (sample.source.stem if sample.source else "strip"))
    defect_tiles: list[DefectSample] = []
    good_offsets: list[tuple[int, int]] = []
    for x, y in tile_positions(sample.size, (th, tw), overlap):
        kept, index, slivers = clip_boxes_to_tile(boxes, (x, y), (th, tw), min_keep, min_side)
        stats.slivers_dropped += slivers
        if len(kept):
            meta = _tile_meta(sample, parent, x, y)
            if box_classes is not None:
                meta["box_classes"] = [box_classes[i] for i in index]
            defect_tiles.append(_make_tile(sample, x, y, th, tw, sample.defect_type, kept, meta, stats))
        elif sample.mask[y : y + th, x : x + tw].any():
            stats.sliver_only_tiles += 1
        else:
            good_offsets.append((x, y))
    stats.defect_tiles += len(defect_tiles)
    stats.good_tiles_seen += len(good_offsets)
    n_good = round(keep_good_ratio * len(good_offsets))
    chosen = sorted(rng.choice(len(good_offsets), size=n_good, replace=False).tolist()) if n_good else []
    good_tiles = [
        _make_tile(sample, x, y, th, tw, "good", np.zeros((0, 4), np.int64), _tile_meta(sample, parent, x, y), stats)
        for x, y in (good_offsets[i] for i in chosen)
    ]
    stats.good_tiles += len(good_tiles)
    return sorted(defect_tiles + good_tiles, key=lambda t: (t.meta["tile_offset"][1], t.meta["tile_offset"][0]))


def _tile_meta(sample: DefectSample, parent: str, x: int, y: int) -> dict[str, Any]:
    meta = {k: v for k, v in sample.meta.items() if k not in ("name", "box_classes")}
    meta.update({"name": f"{parent}_x{x}_y{y}", "parent": parent, "tile_offset": (x, y)})
    return meta


def _make_tile(
    sample: DefectSample, x: int, y: int, th: int, tw: int, kind: str, boxes: np.ndarray,
    meta: dict[str, Any], stats: TilingStats,
) -> DefectSample:
    image, padded = _crop(sample.image, x, y, th, tw)
    mask, _ = _crop(sample.mask, x, y, th, tw)
    if padded:
        meta["padded"] = True
        stats.padded_tiles += 1
    if kind == "good":
        mask = np.zeros_like(mask)
    return DefectSample(image, mask, kind, source=sample.source, mask_source=sample.mask_source,
                        boxes=boxes if kind != "good" else None, is_gray=sample.is_gray, meta=meta)


def merge_boxes_from_tiles(
    per_tile_boxes: list[Any],
    offsets: list[tuple[int, int]],
    scores: list[Any] | None = None,
    iou: float = 0.5,
    *,
    tile: int | tuple[int, int] | None = None,
    labels: list[Any] | None = None,
    edge_tol: float = 2.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-tile boxes (tile coordinates) -> boxes in strip coordinates, without duplicates.

    Boxes of the same label are grouped when their IoU >= `iou` (the same defect seen by two
    overlapping tiles), or when one of them is a *fragment* (it touches, within `edge_tol` px, a
    tile border that lies inside the strip; needs `tile`) and they overlap or touch (the pieces of
    a defect cut by a border). A group without fragments keeps its best-scored box (NMS); a group
    with fragments becomes the box enclosing its members. Scores: the group's maximum.
    Limits: two defects of one label that touch or cross inside a tile where one of them is cut
    become one box; exact recovery of cut boxes needs overlap >= the sliver `min_side` (4 px),
    so that a dropped sliver lies inside the neighbouring tile.

    Returns (boxes (N, 4) float64 x0, y0, x1, y1, scores (N,), labels (N,) int64), by score.
    """
    if len(per_tile_boxes) != len(offsets):
        raise DataError(f"merge_boxes_from_tiles: {len(per_tile_boxes)} box lists for {len(offsets)} offsets")
    all_boxes, all_scores, all_labels, fragment = [], [], [], []
    size = _pair(tile, "tile") if tile is not None else None
    strip_w = max((x + size[1] for x, _ in offsets), default=0) if size else 0
    strip_h = max((y + size[0] for _, y in offsets), default=0) if size else 0
    for t, ((x, y), boxes) in enumerate(zip(offsets, per_tile_boxes)):
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        s = np.ones(len(b)) if scores is None else np.asarray(scores[t], dtype=np.float64).reshape(-1)
        lab = np.zeros(len(b), np.int64) if labels is None else np.asarray(labels[t], dtype=np.int64).reshape(-1)
        if len(s) != len(b) or len(lab) != len(b):
            raise DataError(f"merge_boxes_from_tiles: tile {t} has {len(b)} boxes, {len(s)} scores, {len(lab)} labels")
        for (x0, y0, x1, y1), score, label in zip(b, s, lab):
            frag = False
            if size is not None:
                th, tw = size
                frag = (
                    (x > 0 and x0 <= edge_tol)
                    or (y > 0 and y0 <= edge_tol)
                    or (x + tw < strip_w and x1 >= tw - edge_tol)
                    or (y + th < strip_h and y1 >= th - edge_tol)
                )
            all_boxes.append((x0 + x, y0 + y, x1 + x, y1 + y))
            all_scores.append(score)
            all_labels.append(label)
            fragment.append(frag)
    n = len(all_boxes)
    if n == 0:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)
    boxes, scores_arr, labels_arr = np.asarray(all_boxes), np.asarray(all_scores), np.asarray(all_labels)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    fragment_arr = np.asarray(fragment)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for i in range(n - 1):  # one row at a time: O(n) memory for the thousands of boxes of raw detections
        rest = slice(i + 1, n)
        ix = np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0])
        iy = np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1])
        inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
        union = areas[i] + areas[rest] - inter
        overlap_iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0) >= iou
        pieces = (fragment_arr[i] | fragment_arr[rest]) & (ix >= 0) & (iy >= 0)
        joined = (labels_arr[rest] == labels_arr[i]) & (overlap_iou | pieces)
        for j in np.nonzero(joined)[0] + i + 1:
            parent[find(i)] = find(int(j))
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    out_boxes, out_scores, out_labels = [], [], []
    for members in groups.values():
        best = max(members, key=lambda k: scores_arr[k])
        if any(fragment[k] for k in members):
            m = boxes[members]
            out_boxes.append((m[:, 0].min(), m[:, 1].min(), m[:, 2].max(), m[:, 3].max()))
        else:
            out_boxes.append(tuple(boxes[best]))
        out_scores.append(scores_arr[best])
        out_labels.append(labels_arr[best])
    order = np.argsort(-np.asarray(out_scores), kind="stable")
    return np.asarray(out_boxes)[order], np.asarray(out_scores)[order], np.asarray(out_labels, np.int64)[order]


def stitch_masks(per_tile_probs: list[Any], offsets: list[tuple[int, int]], shape: tuple[int, int]) -> np.ndarray:
    """Per-tile (th, tw) predictions -> one (H, W) float map, the mean where tiles overlap
    (parts of padded tiles beyond the image are dropped; pixels no tile covers are 0)."""
    if len(per_tile_probs) != len(offsets):
        raise DataError(f"stitch_masks: {len(per_tile_probs)} tiles for {len(offsets)} offsets")
    h, w = int(shape[0]), int(shape[1])
    total = np.zeros((h, w), dtype=np.float64)
    count = np.zeros((h, w), dtype=np.float64)
    for probs, (x, y) in zip(per_tile_probs, offsets):
        p = np.asarray(probs.detach().cpu().numpy() if hasattr(probs, "detach") else probs, dtype=np.float64)
        if p.ndim == 3 and p.shape[0] == 1:
            p = p[0]
        if p.ndim != 2:
            raise DataError(f"stitch_masks: each tile must be (H, W), found {p.shape}")
        ph, pw = min(p.shape[0], h - y), min(p.shape[1], w - x)
        total[y : y + ph, x : x + pw] += p[:ph, :pw]
        count[y : y + ph, x : x + pw] += 1
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)
