"""defectfill.masks: binarise, clean, components, boxes, merging, changed pixels, resizing."""

from __future__ import annotations

import numpy as np
import pytest

from defectfill.errors import DataError
from defectfill.masks import (
    ResizeStats,
    binarize,
    boxes_to_mask,
    changed_mask,
    clean_mask,
    connected_components,
    dilate,
    mask_to_boxes,
    merge_boxes,
    resize_mask,
)


def test_binarize_uint8_float_bool():
    arr = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    assert binarize(arr).tolist() == [[False, False, True, True]]
    assert binarize(arr.astype(np.float32) / 255.0).tolist() == [[False, False, True, True]]
    assert binarize(np.array([[True, False]])).tolist() == [[True, False]]
    assert binarize(arr, threshold=0).tolist() == [[False, True, True, True]]


def test_mask_to_boxes_minimal_exclusive_and_sorted():
    mask = np.zeros((20, 30), dtype=bool)
    mask[12:15, 3:9] = True  # lower component
    mask[2, 20] = True  # single pixel, upper
    mask[5:7, 25:30] = True  # touches the right border
    boxes = mask_to_boxes(mask)
    assert boxes.dtype == np.int64
    assert boxes.tolist() == [[20, 2, 21, 3], [25, 5, 30, 7], [3, 12, 9, 15]]
    # each box is the minimal rectangle: filling it covers the component and nothing outside
    for (x0, y0, x1, y1) in boxes:
        assert mask[y0:y1, x0:x1].any(axis=0).all() and mask[y0:y1, x0:x1].any(axis=1).all()
    assert mask_to_boxes(mask, min_area=2).tolist() == [[25, 5, 30, 7], [3, 12, 9, 15]]
    assert mask_to_boxes(np.zeros((4, 4), bool)).shape == (0, 4)


def test_connectivity_diagonal_pixels():
    mask = np.zeros((5, 5), dtype=bool)
    mask[1, 1] = mask[2, 2] = True
    assert connected_components(mask, 8)[1] == 1
    labels, n = connected_components(mask, 4)
    assert n == 2 and set(np.unique(labels)) == {0, 1, 2}
    assert len(mask_to_boxes(mask, connectivity=4)) == 2
    with pytest.raises(DataError):
        connected_components(mask, 6)


def test_clean_mask_drops_small_and_closes_holes():
    mask = np.zeros((30, 30), dtype=bool)
    mask[5:15, 5:15] = True
    mask[9, 9] = False  # pin-hole: closing fills it
    mask[25, 25] = True  # speck: min_area drops it
    cleaned = clean_mask(mask, min_area=4, close_radius=1)
    assert cleaned[9, 9] and not cleaned[25, 25]
    assert cleaned[5:15, 5:15].all() and cleaned.sum() == 100
    # opening removes a 1-px wide line that min_area alone would keep
    line = np.zeros((30, 30), dtype=bool)
    line[3, 2:28] = True
    assert clean_mask(line, min_area=4, close_radius=0).sum() == 26
    assert clean_mask(line, min_area=4, open_radius=1, close_radius=0).sum() == 0


def test_merge_boxes_gap():
    boxes = np.array([[0, 0, 10, 10], [12, 0, 20, 10], [40, 40, 50, 50]])
    assert merge_boxes(boxes, gap=1).tolist() == boxes.tolist()
    assert merge_boxes(boxes, gap=2).tolist() == [[0, 0, 20, 10], [40, 40, 50, 50]]
    # chains: a merged box reaches a third one it was not close to on its own
    chain = np.array([[0, 0, 5, 5], [6, 0, 11, 5], [12, 0, 17, 5], [30, 0, 31, 1]])
    assert merge_boxes(chain, gap=1).tolist() == [[0, 0, 17, 5], [30, 0, 31, 1]]
    # touching (exclusive ends meet) merges with gap 0, overlapping too
    assert merge_boxes([[0, 0, 5, 5], [5, 0, 9, 5]], gap=0).tolist() == [[0, 0, 9, 5]]
    assert merge_boxes(np.zeros((0, 4)), gap=3).shape == (0, 4)


def test_boxes_to_mask_round_trip_and_clip():
    boxes = np.array([[2, 3, 7, 9], [10, 1, 12, 2]])
    mask = boxes_to_mask(boxes, (12, 15))
    assert mask.sum() == 5 * 6 + 2
    assert mask_to_boxes(mask).tolist() == [[10, 1, 12, 2], [2, 3, 7, 9]]
    assert boxes_to_mask([[-5, -5, 3, 3], [14, 10, 40, 40]], (12, 15)).sum() == 9 + 2


def test_changed_mask_region_threshold_and_cleaning():
    rng = np.random.default_rng(0)
    original = rng.integers(0, 200, size=(40, 40, 3), dtype=np.uint8)
    original[15, 30] = 200
    generated = original.copy()
    generated[10:20, 10:20, 0] = np.minimum(255, original[10:20, 10:20, 0].astype(int) + 60)  # red only
    generated[30:35, 30:35] = 255 - original[30:35, 30:35]  # changed but outside the region
    generated[15, 30] = 0  # a single changed pixel inside the region: a speck
    region = np.zeros((40, 40), dtype=bool)
    region[5:25, 5:35] = True
    changed = changed_mask(original, generated, region, threshold=0.1, min_area=4)
    assert changed[10:20, 10:20].all()
    assert not changed[~region].any()
    assert not changed[15, 30]  # the speck (a real change) is dropped by min_area
    assert changed_mask(original, generated, region, min_area=1, close_radius=0)[15, 30]
    assert changed.sum() == 100
    # a higher threshold than the change (60/255 = 0.235) finds nothing
    assert not changed_mask(original, generated, region, threshold=0.3).any()
    with pytest.raises(DataError, match="region"):
        changed_mask(original, generated, region[:, :30])


def test_dilate_grows_by_radius():
    mask = np.zeros((21, 21), dtype=bool)
    mask[10, 10] = True
    grown = dilate(mask, 3)
    assert grown[10, 7] and grown[10, 13] and not grown[10, 6] and not grown[3, 3]
    assert dilate(mask, 0).sum() == 1


def test_resize_mask_keeps_tiny_defects_and_counts():
    mask = np.zeros((64, 64), dtype=bool)
    mask[40:42, 20:22] = True  # 2x2 px: vanishes at 1/8 with area averaging
    stats = ResizeStats()
    small = resize_mask(mask, (8, 8), mode="area", stats=stats)
    assert small.sum() == 1 and small[5, 2]
    assert stats.kept_nonempty == 1 and stats.resized == 1
    assert not resize_mask(mask, (8, 8), keep_nonempty=False).any()
    big = np.zeros((64, 64), dtype=bool)
    big[0:32, 0:16] = True
    out = resize_mask(big, (8, 8), mode="area", stats=stats)
    assert out.sum() == 8 and out[:4, :2].all() and stats.kept_nonempty == 1
    assert resize_mask(big, (8, 8), mode="nearest").sum() == 8
    up = resize_mask(small, (64, 64), mode="nearest")
    assert up.sum() == 64
    with pytest.raises(DataError):
        resize_mask(mask, (8, 8), mode="bilinear")
