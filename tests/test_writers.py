"""defectfill.data.writers: MVTec, YOLO, COCO, mask folders; round trips through the readers."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from defectfill.data.readers import (
    ReadReport,
    read_coco,
    read_dataset,
    read_image_mask_folder,
    read_mvtec,
    read_yolo,
)
from defectfill.data.sample import DefectSample
from defectfill.data.writers import hold_out_good, write_coco, write_masks, write_mvtec, write_yolo
from defectfill.errors import DataError
from defectfill.masks import mask_to_boxes


def _samples(seed=0):
    """Two good images, three defects (one with two components, one a thin 1-px line)."""
    rng = np.random.default_rng(seed)
    h, w = 30, 40

    def img():
        return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)

    out = [DefectSample(img(), np.zeros((h, w), bool), "good", meta={"name": f"g{i}"}) for i in range(2)]
    m1 = np.zeros((h, w), bool)
    m1[3:9, 4:12] = True
    m1[20:25, 30:38] = True
    m1[21, 31] = False  # a hole: COCO RLE keeps it, boxes do not care
    m2 = np.zeros((h, w), bool)
    m2[10, 0:40] = True  # thin line across the full width
    m3 = np.zeros((h, w), bool)
    yy, xx = np.ogrid[:h, :w]
    m3[(yy - 15) ** 2 + (xx - 20) ** 2 <= 16] = True  # disc: not a box
    out += [
        DefectSample(img(), m1, "hole", meta={"name": "d1"}),
        DefectSample(img(), m2, "broken_end", meta={"name": "d2"}),
        DefectSample(img(), m3, "hole", meta={"name": "d3"}),
    ]
    return out


def _by_name(samples):
    return {s.meta["name"]: s for s in samples}


def _no_temp_files(root):
    leftovers = [p for p in root.rglob("*") if ".tmp" in p.name]
    assert not leftovers, leftovers


def test_mvtec_round_trip(tmp_path):
    originals = _samples()
    write_mvtec(originals, tmp_path)
    assert (tmp_path / "train" / "good" / "g0.png").is_file()
    assert (tmp_path / "ground_truth" / "broken_end" / "d2_mask.png").is_file()
    back = _by_name(read_mvtec(tmp_path, "all"))
    assert sorted(back) == ["d1", "d2", "d3", "g0", "g1"]
    for s in originals:
        r = back[s.meta["name"]]
        assert r.defect_type == s.defect_type
        np.testing.assert_array_equal(r.image, s.image)
        np.testing.assert_array_equal(r.mask, s.mask)
    _no_temp_files(tmp_path)


def test_coco_round_trip_keeps_pixel_masks(tmp_path):
    originals = _samples()
    json_path = write_coco(originals, tmp_path / "coco" / "instances.json")
    back = _by_name(read_coco(json_path))
    for s in originals:
        r = back[s.meta["name"]]
        np.testing.assert_array_equal(r.image, s.image)
        np.testing.assert_array_equal(r.mask, s.mask)
        if s.is_good:
            assert r.is_good
        else:
            assert r.defect_type == s.defect_type
            assert r.boxes.tolist() == mask_to_boxes(s.mask).tolist()
    assert read_dataset(tmp_path / "coco")[0].meta["layout"] == "coco"
    _no_temp_files(tmp_path)


def test_mvtec_to_coco_to_yolo_boxes_survive(tmp_path):
    """MVTec -> COCO -> YOLO -> read: boxes equal the components of the original masks."""
    originals = _samples(1)
    write_mvtec(originals, tmp_path / "mvtec")
    from_mvtec = read_mvtec(tmp_path / "mvtec", "all")
    write_coco(from_mvtec, tmp_path / "coco" / "instances.json")
    from_coco = read_coco(tmp_path / "coco" / "instances.json")
    data_yaml = write_yolo(from_coco, tmp_path / "yolo", class_names=["hole", "broken_end"], split="val")
    config = yaml.safe_load(data_yaml.read_text())
    assert config["path"] == str((tmp_path / "yolo").resolve())
    assert config["names"] == {0: "hole", 1: "broken_end"} and config["val"] == "images/val"
    report = ReadReport()
    back = _by_name(read_yolo(tmp_path / "yolo", report=report))
    assert report.counts["clipped_label"] == 0  # d2 ends at the right border: rounding is not clipping
    for s in originals:
        r = back[s.meta["name"]]
        np.testing.assert_array_equal(r.image, s.image)
        if s.is_good:
            assert r.is_good and not r.mask.any()
            continue
        assert r.defect_type == s.defect_type and r.meta["mask_from_boxes"]
        assert r.boxes.tolist() == mask_to_boxes(s.mask).tolist()
    # and YOLO -> COCO keeps boxes, marking the masks as boxes only
    write_coco(list(back.values()), tmp_path / "coco2" / "instances.json")
    again = _by_name(read_coco(tmp_path / "coco2" / "instances.json"))
    assert again["d1"].meta["mask_from_boxes"] and again["d1"].boxes.tolist() == back["d1"].boxes.tolist()


def test_yolo_second_split_and_class_checks(tmp_path):
    samples = _samples()
    write_yolo(samples[:3], tmp_path, class_names=["hole", "broken_end"], split="train")
    write_yolo(samples[3:], tmp_path, class_names=["hole", "broken_end"], split="val")
    config = yaml.safe_load((tmp_path / "data.yaml").read_text())
    assert config["train"] == "images/train" and config["val"] == "images/val" and config["nc"] == 2
    assert (tmp_path / "labels" / "train" / "g0.txt").read_text() == ""  # background image
    line = (tmp_path / "labels" / "val" / "d2.txt").read_text().split()
    assert line == ["1", "0.500000", "0.350000", "1.000000", "0.033333"]
    with pytest.raises(DataError, match="holds names"):
        write_yolo(samples, tmp_path, class_names=["broken_end", "hole"], split="test")
    with pytest.raises(DataError, match="'broken_end' is not in class_names"):
        write_yolo(samples, tmp_path / "other", class_names=["hole"])


def test_write_masks_binary_and_index(tmp_path):
    originals = _samples(2)
    write_masks(originals, tmp_path / "binary")
    back = _by_name(read_image_mask_folder(tmp_path / "binary"))
    for s in originals:
        assert back[s.meta["name"]].defect_type == s.defect_type
        np.testing.assert_array_equal(back[s.meta["name"]].mask, s.mask)
    write_masks(originals, tmp_path / "index", class_names=["hole", "broken_end"], index_masks=True)
    from PIL import Image

    d2 = np.asarray(Image.open(tmp_path / "index" / "masks" / "d2.png"))
    assert set(np.unique(d2)) == {0, 2} and (d2 == 2).sum() == 40
    back = _by_name(read_image_mask_folder(tmp_path / "index"))
    np.testing.assert_array_equal(back["d1"].mask, originals[2].mask)


def test_name_collisions_get_suffixes(tmp_path):
    s = _samples()
    for sample in s:
        sample.meta["name"] = "same"
    write_mvtec(s, tmp_path)
    assert sorted(p.name for p in (tmp_path / "test" / "hole").iterdir()) == ["same.png", "same_1.png"]
    assert sorted(p.name for p in (tmp_path / "train" / "good").iterdir()) == ["same.png", "same_1.png"]


def test_yolo_boxes_at_the_border_are_exact_and_not_clipped(tmp_path):
    """6-decimal labels overshoot the border by a hair (0.969727 + 0.060547 / 2 > 1): not clipping."""
    mask = np.zeros((64, 512), bool)
    mask[0:3, 481:512] = True
    mask[61:64, 7:40] = True
    sample = DefectSample(np.zeros((64, 512, 3), np.uint8), mask, "nep", meta={"name": "edge"})
    write_yolo([sample], tmp_path, class_names=["nep"])
    report = ReadReport()
    back = read_yolo(tmp_path, report=report)[0]
    assert back.boxes.tolist() == mask_to_boxes(mask).tolist()
    assert report.counts["clipped_label"] == 0


def test_hold_out_good_keeps_strips_together_and_existing_splits():
    rng = np.random.default_rng(4)

    def good(name, **meta):
        return DefectSample(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), np.zeros((8, 8), bool), "good",
                            meta={"name": name, **meta})

    tiles = [good(f"s{k}_x{x}", parent=f"s{k}") for k in range(5) for x in range(3)]  # 5 strips, 3 tiles each
    mvtec_test = good("t0", split="test")
    defect = _samples()[2]
    samples = tiles + [mvtec_test, defect]
    marked, held_out = hold_out_good(samples, 0.4, seed=1)
    by_parent: dict = {}
    for s in marked[:15]:
        by_parent.setdefault(s.meta["parent"], set()).add(s.meta["split"])
    assert all(len(splits) == 1 for splits in by_parent.values())  # a strip's tiles never straddle
    assert sorted(next(iter(v)) for v in by_parent.values()) == ["test", "test", "train", "train", "train"]
    assert held_out == 6 and marked[15] is mvtec_test and marked[16] is defect
    assert all("split" not in s.meta for s in tiles)  # the inputs are not changed
    again = hold_out_good(samples, 0.4, seed=1)[0]  # the same seed draws the same strips
    assert [s.meta.get("split") for s in again] == [s.meta.get("split") for s in marked]
    one, n = hold_out_good([good("only")], 0.5)
    assert n == 0 and one[0].meta["split"] == "train"  # never every good image: train/good keeps one
    assert hold_out_good(tiles, 0.0)[1] == 0
    with pytest.raises(DataError, match=r"test-good fraction must be in \[0, 1\), found 1.0"):
        hold_out_good(tiles, 1.0)


def test_tidy_boxes_drops_specks_and_merges_near_boxes():
    from defectfill.data.writers import tidy_boxes

    image = np.zeros((40, 60, 3), np.uint8)
    mask = np.zeros((40, 60), bool)
    mask[5:15, 5:10] = True  # 50 px
    mask[5:15, 12:14] = True  # 20 px, 2 px right of the first: a broken yarn's second piece
    mask[30, 50] = True  # a 1-px speck
    mask[30:32, 40:42] = True  # 4 px: kept at the default
    sample = DefectSample(image, mask, "broken_yarn", meta={"name": "s"})
    kept, dropped, merged = tidy_boxes(sample)
    assert (dropped, merged) == (1, 0) and kept.boxes.tolist() == [[5, 5, 10, 15], [12, 5, 14, 15], [40, 30, 42, 32]]
    assert not kept.mask[30, 50] and kept.mask.sum() == 74 and sample.mask[30, 50]  # the input is untouched
    joined, dropped, merged = tidy_boxes(sample, min_box_px=1, merge_gap=2)
    assert (dropped, merged) == (0, 1) and joined.boxes.tolist() == [[5, 5, 14, 15], [40, 30, 42, 32], [50, 30, 51, 31]]
    assert joined.mask.sum() == mask.sum()  # merging changes boxes, not pixel labels
    assert tidy_boxes(sample, min_box_px=1) == (sample, 0, 0)
    speck_only = DefectSample(image, mask & (np.arange(60) == 50)[None, :], "broken_yarn")
    assert tidy_boxes(speck_only) == (None, 1, 0)
    # two classes side by side stay apart; a box-only sample keeps mask = its filled boxes
    two = DefectSample(image, mask, "hole", boxes=np.array([[5, 5, 10, 15], [12, 5, 14, 15]]),
                       meta={"box_classes": ["hole", "knot"], "mask_from_boxes": True})
    out, _, merged = tidy_boxes(two, merge_gap=5)
    assert merged == 0 and out is two
    same = DefectSample(image, mask, "hole", boxes=np.array([[5, 5, 10, 15], [12, 5, 14, 15]]),
                        meta={"mask_from_boxes": True})
    out, _, merged = tidy_boxes(same, merge_gap=5)
    assert merged == 1 and out.boxes.tolist() == [[5, 5, 14, 15]] and out.mask.sum() == 90
    assert out.meta["box_classes"] == ["hole"]
    with pytest.raises(DataError, match="min_box_px must be >= 1"):
        tidy_boxes(sample, min_box_px=0)
