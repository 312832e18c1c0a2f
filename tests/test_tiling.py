"""defectfill.data.tiling: tile grid, sliver rule, tile_sample, merge back, stitching."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from defectfill.data.sample import DefectSample
from defectfill.data.tiling import (
    TilingStats,
    clip_boxes_to_tile,
    merge_boxes_from_tiles,
    stitch_masks,
    tile_image,
    tile_offsets,
    tile_positions,
    tile_sample,
)
from defectfill.errors import DataError
from defectfill.masks import boxes_to_mask


def test_tile_offsets_cover_and_end_at_border():
    assert tile_offsets(4096, 256, 32) == list(range(0, 4096 - 256, 224)) + [3840]
    assert tile_offsets(3796, 256, 32)[-1] == 3540
    assert tile_offsets(256, 256, 32) == [0] and tile_offsets(100, 256, 0) == [0]
    assert tile_offsets(512, 256, 0) == [0, 256]
    offsets = tile_offsets(1000, 128, 16)
    assert all(b - a <= 112 for a, b in itertools.pairwise(offsets))  # overlap at least 16
    with pytest.raises(DataError):
        tile_offsets(1000, 128, 128)
    assert tile_positions((256, 4096), 256, 32)[:2] == [(0, 0), (224, 0)]
    assert len(tile_positions((512, 512), 256, 0)) == 4


def test_sliver_rule():
    tile = 256
    boxes = np.array([
        [250, 10, 260, 20],  # 6 px of 10 inside tile 0: 60 % -> kept
        [254, 30, 300, 40],  # 2 px of 46 inside tile 0: < 30 % and < 4 px -> dropped
        [0, 100, 4096, 103],  # a 3-px thin pick across the strip: full tile length -> kept
        [100, 250, 110, 300],  # cut vertically, 6 px left: kept
        [100, 254, 160, 300],  # cut vertically, 2 px of 46 rows: dropped
    ])
    kept, index, slivers = clip_boxes_to_tile(boxes, (0, 0), tile)
    assert index.tolist() == [0, 2, 3] and slivers == 2
    assert kept.tolist() == [[250, 10, 256, 20], [0, 100, 256, 103], [100, 250, 110, 256]]
    # in the next tile (offset 224) coordinates are tile-relative
    kept, index, _ = clip_boxes_to_tile(boxes, (224, 0), tile)
    assert kept[index.tolist().index(1)].tolist() == [30, 30, 76, 40]


def _strip(seed=0, h=64, w=512):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    boxes = np.array([[5, 5, 20, 20], [100, 40, 150, 50], [250, 2, 270, 30], [420, 10, 500, 12]])
    return DefectSample(image, boxes_to_mask(boxes, (h, w)), "broken_end", boxes=boxes,
                        meta={"name": "s1", "box_classes": ["a", "b", "a", "c"]})


def test_tile_sample_defect_and_good_tiles():
    sample = _strip()
    stats = TilingStats()
    tiles = tile_sample(sample, tile=64, overlap=16, keep_good_ratio=0.5, rng=0, stats=stats)
    offsets = tile_positions((64, 512), 64, 16)
    assert len(offsets) == 11  # 0, 48, ..., 432 and 448 (ends at the border)
    defect = [t for t in tiles if not t.is_good]
    good = [t for t in tiles if t.is_good]
    assert stats.defect_tiles == len(defect) and stats.good_tiles == len(good)
    assert stats.defect_tiles + stats.good_tiles_seen + stats.sliver_only_tiles == 11
    assert len(good) == round(0.5 * stats.good_tiles_seen)
    for t in tiles:
        x, y = t.meta["tile_offset"]
        assert t.image.shape == (64, 64, 3) and t.meta["parent"] == "s1"
        assert t.meta["name"] == f"s1_x{x}_y{y}"
        np.testing.assert_array_equal(t.image, sample.image[y : y + 64, x : x + 64])
        if t.is_good:
            assert not sample.mask[y : y + 64, x : x + 64].any()
        else:
            np.testing.assert_array_equal(t.mask, sample.mask[y : y + 64, x : x + 64])
            assert len(t.boxes) == len(t.meta["box_classes"]) > 0
            assert t.mask[boxes_to_mask(t.boxes, (64, 64))].all()  # every box is on defect pixels
    # deterministic with a seed, different good tiles with another seed (allowed to coincide rarely)
    again = tile_sample(sample, tile=64, overlap=16, keep_good_ratio=0.5, rng=0)
    assert [t.meta["name"] for t in again] == [t.meta["name"] for t in tiles]
    assert len(tile_sample(sample, tile=64, overlap=16, keep_good_ratio=0.0)) == len(defect)
    with pytest.raises(DataError):
        tile_sample(sample, tile=64, keep_good_ratio=1.5)


def test_tile_sample_pads_small_images_and_good_strip():
    rng = np.random.default_rng(1)
    good = DefectSample(rng.integers(0, 256, (40, 300, 3), dtype=np.uint8), np.zeros((40, 300), bool), "good")
    stats = TilingStats()
    tiles = tile_sample(good, tile=64, overlap=0, keep_good_ratio=1.0, rng=1, stats=stats)
    assert len(tiles) == len(tile_offsets(300, 64, 0)) == 5 and all(t.is_good for t in tiles)
    assert stats.padded_tiles == 5 and tiles[0].meta["padded"]
    assert (tiles[0].image[40:] == 0).all()


@pytest.mark.parametrize("tile, overlap", [(64, 16), (128, 32), (64, 4)])
def test_round_trip_boxes_through_tiles(tile, overlap):
    """Boxes in strip coordinates -> clipped per tile -> merged back = the original boxes."""
    sample = _strip()
    offsets = tile_positions(sample.size, tile, overlap)
    per_tile, per_scores, per_labels = [], [], []
    names = ["a", "b", "c"]
    classes = sample.meta["box_classes"]
    rng = np.random.default_rng(0)
    for offset in offsets:
        kept, index, _ = clip_boxes_to_tile(sample.boxes, offset, tile)
        per_tile.append(kept)
        per_scores.append(rng.uniform(0.5, 1.0, len(kept)))
        per_labels.append([names.index(classes[i]) for i in index])
    boxes, scores, labels = merge_boxes_from_tiles(per_tile, offsets, per_scores, tile=tile, labels=per_labels)
    got = sorted(zip(boxes.astype(int).tolist(), labels.tolist()))
    want = sorted(zip(sample.boxes.tolist(), [names.index(c) for c in classes]))
    assert got == want
    assert np.all(np.diff(scores) <= 0)


def test_merge_nms_without_fragments_and_labels_kept_apart():
    # the same defect seen by two overlapping tiles, plus a different class on top of it
    per_tile = [np.array([[40.0, 10, 50, 20]]), np.array([[8.0, 10, 18, 20], [8.0, 10, 18, 20]])]
    offsets = [(0, 0), (32, 0)]
    scores = [[0.9], [0.6, 0.8]]
    boxes, out_scores, labels = merge_boxes_from_tiles(per_tile, offsets, scores, labels=[[0], [0, 1]])
    assert boxes.tolist() == [[40, 10, 50, 20], [40, 10, 50, 20]]
    assert out_scores.tolist() == [0.9, 0.8] and labels.tolist() == [0, 1]
    # without `tile`, pieces cut by a border are not joined (only NMS)
    pieces = [np.array([[50.0, 0, 64, 5]]), np.array([[0.0, 0, 20, 5]])]
    assert len(merge_boxes_from_tiles(pieces, [(0, 0), (64, 0)])[0]) == 2
    assert merge_boxes_from_tiles(pieces, [(0, 0), (64, 0)], tile=64)[0].tolist() == [[50, 0, 84, 5]]
    assert merge_boxes_from_tiles([], [])[0].shape == (0, 4)


def test_stitch_masks_averages_overlaps():
    image = np.zeros((64, 200), dtype=np.float32)
    tiles, offsets = tile_image(image, 64, 16)
    probs = [np.full((64, 64), float(i)) for i in range(len(tiles))]
    out = stitch_masks(probs, offsets, (64, 200))
    assert out.shape == (64, 200)
    x1 = offsets[1][0]
    assert out[0, 0] == 0 and out[0, x1] == 0.5 and out[0, x1 + 16] == 1.0
    # a real map survives tiling exactly
    rng = np.random.default_rng(0)
    truth = rng.random((64, 200))
    tiles, offsets = tile_image(truth, 64, 16)
    np.testing.assert_allclose(stitch_masks(tiles, offsets, truth.shape), truth)


def test_round_trip_long_defects_on_a_2d_grid():
    """Defects longer than a tile, cut in x and y, on a grid of 64-px tiles over 160x1024."""
    boxes = np.array([[0, 100, 1024, 103], [300, 0, 305, 90], [500, 50, 700, 70], [900, 140, 960, 160]])
    offsets = tile_positions((160, 1024), 64, 8)
    per_tile = [clip_boxes_to_tile(boxes, offset, 64)[0] for offset in offsets]
    assert sum(len(b) for b in per_tile) > 3 * len(boxes)  # the long ones are cut many times
    merged, _, _ = merge_boxes_from_tiles(per_tile, offsets, tile=64)
    assert sorted(merged.astype(int).tolist()) == sorted(boxes.tolist())
