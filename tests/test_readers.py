"""defectfill.data.readers: MVTec, image+mask folders, COCO, YOLO, layout detection, validation."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from defectfill.data.images import DataWarning
from defectfill.data.readers import (
    ReadReport,
    detect_layout,
    read_coco,
    read_dataset,
    read_image_mask_folder,
    read_mvtec,
    read_yolo,
)
from defectfill.errors import DataError


def _image(rng, h=24, w=32, value=None):
    if value is not None:
        return np.full((h, w, 3), value, dtype=np.uint8)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _box_mask(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 255
    return m


def make_mvtec(root, rng):
    """train/good x2, test/good x1, test/hole x2 with masks. Returns {name: mask}."""
    for i in range(2):
        _save(root / "train" / "good" / f"{i:03d}.png", _image(rng))
    _save(root / "test" / "good" / "000.png", _image(rng))
    masks = {}
    for i, box in enumerate([(2, 3, 10, 9), (20, 10, 30, 20)]):
        _save(root / "test" / "hole" / f"{i:03d}.png", _image(rng))
        masks[f"{i:03d}"] = _box_mask(24, 32, *box)
        _save(root / "ground_truth" / "hole" / f"{i:03d}_mask.png", masks[f"{i:03d}"])
    return masks


def test_read_mvtec_splits_and_masks(tmp_path):
    rng = np.random.default_rng(0)
    masks = make_mvtec(tmp_path, rng)
    train = read_mvtec(tmp_path, "train")
    assert [s.defect_type for s in train] == ["good", "good"]
    assert all(not s.mask.any() and s.meta["split"] == "train" for s in train)
    test = read_mvtec(tmp_path, "test")
    assert sorted(s.defect_type for s in test) == ["good", "hole", "hole"]
    for s in test:
        if s.defect_type == "hole":
            np.testing.assert_array_equal(s.mask, masks[s.meta["name"]] > 0)
            assert s.mask_source.name == f"{s.meta['name']}_mask.png"
            np.testing.assert_array_equal(s.image, np.asarray(Image.open(s.source)))
    assert len(read_mvtec(tmp_path, "all")) == 5
    assert detect_layout(tmp_path) == "mvtec"
    assert len(read_dataset(tmp_path)) == 5


def test_mvtec_missing_and_empty_masks_policies(tmp_path):
    rng = np.random.default_rng(1)
    make_mvtec(tmp_path, rng)
    (tmp_path / "ground_truth" / "hole" / "001_mask.png").unlink()
    _save(tmp_path / "test" / "hole" / "002.png", _image(rng))
    _save(tmp_path / "ground_truth" / "hole" / "002_mask.png", np.zeros((24, 32), np.uint8))
    report = ReadReport()
    with pytest.warns(DataWarning) as caught:
        samples = read_mvtec(tmp_path, "test", report=report)
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2 and "all-black mask" in messages[0] and "without a mask" in messages[1]
    assert sorted(s.meta["name"] for s in samples if s.defect_type == "hole") == ["000"]
    assert report.counts["missing_mask"] == 1 and report.counts["empty_mask"] == 1
    assert len(report.skipped) == 2 and any("001.png" in line for line in report.skipped)
    with pytest.raises(DataError, match=r"001\.png.*001_mask\.png"):
        read_mvtec(tmp_path, "test", unlabelled="error")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        kept = read_mvtec(tmp_path, "test", unlabelled="good")
    assert sorted(s.defect_type for s in kept) == ["good", "good", "good", "hole"]


def test_mask_of_other_size_is_an_error(tmp_path):
    rng = np.random.default_rng(2)
    make_mvtec(tmp_path, rng)
    _save(tmp_path / "ground_truth" / "hole" / "000_mask.png", np.zeros((12, 16), np.uint8))
    with pytest.raises(DataError, match=r"000_mask\.png.*16x12.*32x24"):
        read_mvtec(tmp_path, "test")


def test_truncated_image_is_an_error(tmp_path):
    rng = np.random.default_rng(3)
    make_mvtec(tmp_path, rng)
    path = tmp_path / "train" / "good" / "001.png"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=r"001\.png.*not a readable image"):
        read_mvtec(tmp_path, "train")


def test_duplicate_names_are_an_error(tmp_path):
    rng = np.random.default_rng(4)
    make_mvtec(tmp_path, rng)
    _save(tmp_path / "train" / "good" / "000.jpg", _image(rng))
    with pytest.raises(DataError, match="duplicate image name '000'"):
        read_mvtec(tmp_path, "train")


def test_folder_flat_layout_with_conversions(tmp_path):
    """16-bit, palette, RGBA, greyscale images and anti-aliased / 0-1 / index / LA masks."""
    rng = np.random.default_rng(5)
    h, w = 24, 32
    box = _box_mask(h, w, 4, 4, 14, 12)
    grey16 = (rng.integers(0, 65536, size=(h, w))).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "a16.png")
    _save(tmp_path / "a16_mask.png", box)
    Image.fromarray(_image(rng)).convert("P").save(tmp_path / "bpal.png")
    _save(tmp_path / "bpal_mask.png", (box > 0).astype(np.uint8))  # 0/1 mask
    rgba = np.dstack([_image(rng), np.full((h, w), 200, np.uint8)])
    _save(tmp_path / "crgba.png", rgba)
    soft = box.astype(np.float32)
    soft[4:12, 3] = 100  # anti-aliased edge below the threshold
    soft[4:12, 14] = 180  # above the threshold
    _save(tmp_path / "crgba_mask.png", soft.astype(np.uint8))
    _save(tmp_path / "dgrey.png", _image(rng)[..., 0])
    index = (box > 0).astype(np.uint8)
    index[4:8, 4:14] = 2  # two classes in one index map
    _save(tmp_path / "dgrey_mask.png", index)
    la = np.dstack([np.zeros((h, w), np.uint8), box])  # mask drawn in the alpha channel only
    Image.fromarray(la, mode="LA").save(tmp_path / "egrey_mask.png")
    _save(tmp_path / "egrey.png", _image(rng)[..., 1])

    report = ReadReport()
    with pytest.warns(DataWarning) as caught:
        samples = read_image_mask_folder(tmp_path, defect_type="spot", report=report)
    assert detect_layout(tmp_path) == "folder"
    by_name = {s.meta["name"]: s for s in samples}
    assert sorted(by_name) == ["a16", "bpal", "crgba", "dgrey", "egrey"]
    for name in ("a16", "bpal", "dgrey", "egrey"):
        np.testing.assert_array_equal(by_name[name].mask, box > 0, err_msg=name)
    expected = box > 0
    expected[4:12, 14] = True
    np.testing.assert_array_equal(by_name["crgba"].mask, expected)
    assert by_name["a16"].is_gray and by_name["dgrey"].is_gray and not by_name["crgba"].is_gray
    assert by_name["a16"].image.dtype == np.uint8 and by_name["a16"].image.shape == (h, w, 3)
    np.testing.assert_array_equal(by_name["a16"].image[..., 0], (grey16 / 65535.0 * 255 + 0.5).astype(np.uint8))
    np.testing.assert_array_equal(by_name["crgba"].image, rgba[..., :3])
    for quirk in ("high_bit_depth", "palette", "alpha_dropped", "nonbinary_mask", "index_mask", "mask_in_alpha"):
        assert report.counts[quirk] == 1, quirk
    assert report.counts["grayscale"] == 3  # 16-bit, two L images
    messages = " ".join(str(c.message) for c in caught)
    assert "alpha channel dropped" in messages and "thresholded at > 127" in messages
    assert "greyscale image" not in messages  # normal for fabric: counted, not warned


def test_folder_images_annotations_layout(tmp_path):
    rng = np.random.default_rng(6)
    masks = {}
    for i in range(3):
        _save(tmp_path / "images" / f"s{i}.jpg", _image(rng, 32, 32))
        masks[f"s{i}"] = _box_mask(32, 32, i, i, 10 + i, 12 + i)
        _save(tmp_path / "annotations" / f"s{i}.png", masks[f"s{i}"])
    samples = read_dataset(tmp_path, defect_type="oil")
    assert detect_layout(tmp_path) == "folder"
    assert [s.meta["name"] for s in samples] == ["s0", "s1", "s2"]
    assert {s.defect_type for s in samples} == {"oil"}
    for s in samples:
        np.testing.assert_array_equal(s.mask, masks[s.meta["name"]] > 0)
    (tmp_path / "annotations" / "s1.png").unlink()
    with pytest.raises(DataError, match=r"s1\.jpg.*annotations/s1\.png"):
        read_image_mask_folder(tmp_path, unlabelled="error")


def _coco_fixture(tmp_path, rng, annotations, images=None):
    _save(tmp_path / "images" / "a.png", _image(rng, 20, 30))
    _save(tmp_path / "images" / "b.png", _image(rng, 20, 30))
    data = {
        "images": images or [
            {"id": 1, "file_name": "a.png", "width": 30, "height": 20},
            {"id": 2, "file_name": "b.png", "width": 30, "height": 20},
        ],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "hole"}, {"id": 7, "name": "stain"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_read_coco_polygon_rle_and_box_only(tmp_path):
    rng = np.random.default_rng(7)
    # uncompressed RLE (column-major runs): column 20..22, rows 5..9 -> 3 columns x 5 rows
    counts = [20 * 20 + 5, 5, 15, 5, 15, 5, 20 * 30 - (20 * 20 + 5) - 5 - 15 - 5 - 15 - 5]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 6, 4],
         "segmentation": [[2, 3, 8, 3, 8, 7, 2, 7]]},
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [20, 5, 3, 5],
         "segmentation": {"size": [20, 30], "counts": counts}},
        {"id": 3, "image_id": 2, "category_id": 7, "bbox": [10.5, 4.0, 5.0, 2.0]},
    ]
    path = _coco_fixture(tmp_path, rng, anns)
    report = ReadReport()
    samples = read_coco(path, report=report)
    a, b = samples
    expected = np.zeros((20, 30), bool)
    expected[3:7, 2:8] = True
    expected[5:10, 20:23] = True
    np.testing.assert_array_equal(a.mask, expected)
    assert a.boxes.tolist() == [[2, 3, 8, 7], [20, 5, 23, 10]]
    assert a.meta["box_classes"] == ["hole", "stain"] and a.defect_type == "hole"  # 24 px vs 15 px
    assert b.defect_type == "stain" and b.meta["mask_from_boxes"]
    assert b.boxes.tolist() == [[10, 4, 16, 6]]  # half-pixel start: floor / ceil cover it
    assert b.mask.sum() == 12 and report.counts["mask_from_boxes"] == 1
    assert detect_layout(path) == "coco" and detect_layout(tmp_path) == "coco"
    assert len(read_dataset(tmp_path)) == 2


def test_read_coco_validation(tmp_path):
    rng = np.random.default_rng(8)
    outside = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [25, 3, 10, 4]}]
    with pytest.raises(DataError, match=r"annotation 1, image a\.png.*outside the image 30x20"):
        read_coco(_coco_fixture(tmp_path, rng, outside))
    slight = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [25, 3, 5.6, 4]}]
    report = ReadReport()
    with pytest.warns(DataWarning, match="clipped"):
        s = read_coco(_coco_fixture(tmp_path, rng, slight), report=report)
    assert s[0].boxes.tolist() == [[25, 3, 30, 7]] and report.counts["clipped_label"] == 1
    assert s[1].is_good and report.counts["no_annotations"] == 1
    wrong_size = [{"id": 1, "file_name": "a.png", "width": 64, "height": 20}]
    with pytest.raises(DataError, match=r"a\.png is listed as 64x20 but the file is 30x20"):
        read_coco(_coco_fixture(tmp_path, rng, [], images=wrong_size))
    dup = [{"id": 1, "file_name": "a.png", "width": 30, "height": 20}, {"id": 2, "file_name": "a.png"}]
    with pytest.raises(DataError, match="duplicate image entry"):
        read_coco(_coco_fixture(tmp_path, rng, [], images=dup))
    bad_cat = [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 2, 2]}]
    with pytest.raises(DataError, match="category_id 3"):
        read_coco(_coco_fixture(tmp_path, rng, bad_cat))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataError, match=r"broken\.json.*not readable JSON"):
        read_coco(tmp_path / "broken.json")


def _yolo_fixture(root, rng, lines_by_name, names=("hole", "stain")):
    for name, lines in lines_by_name.items():
        _save(root / "images" / "train" / f"{name}.png", _image(rng, 40, 80))
        if lines is not None:
            (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
            (root / "labels" / "train" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text(
        f"path: {root}\ntrain: images/train\nval: images/train\nnames:\n"
        + "".join(f"  {i}: {n}\n" for i, n in enumerate(names))
    )


def test_read_yolo_boxes_polygons_and_good(tmp_path):
    rng = np.random.default_rng(9)
    _yolo_fixture(tmp_path, rng, {
        "a": ["1 0.25 0.5 0.25 0.5", "0 0.8125 0.25 0.125 0.25"],
        "b": ["0 0.1 0.1 0.2 0.1 0.2 0.3 0.1 0.3"],  # polygon
        "c": [],  # empty file: background
        "d": None,  # no label file: background
    })
    report = ReadReport()
    samples = {s.meta["name"]: s for s in read_yolo(tmp_path, report=report)}
    a = samples["a"]
    assert a.boxes.tolist() == [[10, 10, 30, 30], [60, 5, 70, 15]]
    assert a.meta["box_classes"] == ["stain", "hole"] and a.defect_type == "stain"
    assert a.meta["mask_from_boxes"] and a.mask.sum() == 400 + 100 and a.meta["split"] == "train"
    b = samples["b"]
    assert b.defect_type == "hole" and "mask_from_boxes" not in b.meta
    assert b.boxes.tolist() == [[8, 4, 17, 13]] and b.mask[5:12, 9:16].all()
    assert samples["c"].is_good and samples["d"].is_good
    assert report.counts["no_label_file"] == 1 and report.counts["mask_from_boxes"] == 1
    assert detect_layout(tmp_path) == "yolo"


@pytest.mark.parametrize(
    "line, match",
    [
        ("5 0.5 0.5 0.1 0.1", "class 5 is not in the 2 names"),
        ("0 0.95 0.5 0.2 0.1", "outside the image 80x40"),
        ("0 0.5 0.5 0.1", "3 coordinates"),
        ("x 0.5 0.5 0.1 0.1", "not a YOLO label line"),
        ("0 0.5 0.5 0.0 0.1", "must be positive"),
    ],
)
def test_read_yolo_bad_labels(tmp_path, line, match):
    _yolo_fixture(tmp_path, np.random.default_rng(10), {"a": [line]})
    with pytest.raises(DataError, match=match) as info:
        read_yolo(tmp_path)
    assert "a.txt:1" in str(info.value)


def test_unknown_layout_names_the_expected_ones(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="unknown dataset layout.*MVTec-AD.*YOLO.*AITEX.*good images"):
        read_dataset(tmp_path)
    with pytest.raises(DataError, match="no such folder"):
        read_dataset(tmp_path / "missing")


def test_real_hsst_stains(hsst_stains_dir):
    """The 26 real stains: 25 with masks, one all-black mask reported and skipped."""
    report = ReadReport()
    with pytest.warns(DataWarning, match="all-black mask"):
        samples = read_dataset(hsst_stains_dir, report=report, defect_type="stain")
    assert report.layout == "folder"
    assert len(samples) == 25 and report.counts["empty_mask"] == 1
    assert "2024_12_10_13_41_18_407_256_256" in report.skipped[0]
    assert {s.defect_type for s in samples} == {"stain"}
    assert {s.size for s in samples} == {(512, 512)}
    assert all(s.is_gray for s in samples)
    fractions = [s.mask.mean() for s in samples]
    assert all(s.mask.any() for s in samples)
    assert 0.0005 < min(fractions) and max(fractions) < 0.08  # README: 0.1-7.6 % of the image
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        assert len(read_dataset(hsst_stains_dir, unlabelled="good", defect_type="stain")) == 26


def test_folder_of_good_images(tmp_path):
    rng = np.random.default_rng(11)
    for i in range(3):
        _save(tmp_path / f"g{i}.jpg", _image(rng))
    assert detect_layout(tmp_path) == "good"
    samples = read_dataset(tmp_path)
    assert [s.meta["name"] for s in samples] == ["g0", "g1", "g2"]
    assert all(s.is_good and not s.mask.any() and s.image.shape == (24, 32, 3) for s in samples)


@pytest.mark.parametrize("json_in", [".", "annotations"])
def test_coco_file_name_with_a_folder_is_found(tmp_path, json_in):
    """CVAT / Label Studio write `file_name: images/a.png`, relative to the dataset root, not to images/."""
    rng = np.random.default_rng(12)
    _save(tmp_path / "images" / "a.png", _image(rng, 20, 30))
    _save(tmp_path / "images" / "b.png", _image(rng, 20, 30))
    data = {
        "images": [{"id": 1, "file_name": "images/a.png", "width": 30, "height": 20},
                   {"id": 2, "file_name": "C:\\export\\job_3\\b.png", "width": 30, "height": 20}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 6, 4]}],
        "categories": [{"id": 1, "name": "hole"}],
    }
    path = tmp_path / json_in / "instances.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(data))
    a, b = read_dataset(tmp_path)
    assert a.source == tmp_path / "images" / "a.png" and a.defect_type == "hole" and a.meta["name"] == "a"
    assert b.source == tmp_path / "images" / "b.png" and b.is_good  # a foreign path: found by its base name
    data["images"][1]["file_name"] = "images/missing.png"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"instances\.json: image file_name 'images/missing\.png' not found; "
                                        r"looked for .*images/images/missing\.png.*images_dir="):
        read_dataset(tmp_path)


def test_unknown_layout_says_what_was_found_and_what_to_do(tmp_path):
    rng = np.random.default_rng(13)
    (tmp_path / "notes.txt").write_text("hello")
    _save(tmp_path / "fabric_01" / "0001_000_01.png", _image(rng))  # good strips one level down
    _save(tmp_path / "fabric_02" / "0002_000_02.png", _image(rng))
    with pytest.raises(DataError) as info:
        read_dataset(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path}: unknown dataset layout")
    assert "1 file(s) (e.g. notes.txt), no image" in message
    assert "images in the subfolder(s) fabric_01/, fabric_02/" in message
    for layout in ("MVTec-AD", "image+mask folder", "COCO", "YOLO", "AITEX", "good images"):
        assert layout in message
    assert "Fix: arrange the folder as one of these (or pass the subfolder that is one)" in message
    assert "--layout" in message


def test_missing_masks_error_names_every_file(tmp_path):
    """unlabelled='error': one error listing every defect image without a usable mask, not the first only."""
    rng = np.random.default_rng(14)
    make_mvtec(tmp_path / "mvtec", rng)
    for name in ("000", "001"):
        (tmp_path / "mvtec" / "ground_truth" / "hole" / f"{name}_mask.png").unlink()
    _save(tmp_path / "mvtec" / "test" / "hole" / "002.png", _image(rng))
    _save(tmp_path / "mvtec" / "ground_truth" / "hole" / "002_mask.png", np.zeros((24, 32), np.uint8))
    with pytest.raises(DataError) as info:
        read_mvtec(tmp_path / "mvtec", "test", unlabelled="error")
    message = str(info.value)
    assert "3 defect image(s) without a usable mask" in message
    for line in ("test/hole/000.png: defect image without a mask file; expected", "ground_truth/hole/000_mask.png",
                 "test/hole/001.png", "002_mask.png: all-black mask"):
        assert line in message
    assert "Fix: add (or draw) the masks, or read with unlabelled='skip'" in message
    for i in range(3):
        _save(tmp_path / "folder" / f"p{i}.png", _image(rng))
    _save(tmp_path / "folder" / "p0_mask.png", _box_mask(24, 32, 1, 1, 5, 5))
    # masks beside the images: p1.png must not be taken as its own mask (it was, before)
    with pytest.raises(DataError, match=r"2 defect image\(s\).*\n  .*p1\.png.*p1_mask\.png\n  .*p2\.png"):
        read_dataset(tmp_path / "folder", defect_type="hole", unlabelled="error")
