"""Dataset assembly: real + generated -> YOLO / COCO / class masks with a recipe (real files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from defectfill.data.fabric import render_sample
from defectfill.data.images import save_image, save_mask
from defectfill.data.sample import DefectSample
from defectfill.downstream.assemble import assemble, load_assembled
from defectfill.downstream.config import AssembleConfig
from defectfill.errors import DataError
from defectfill.generators.requests import MaskPolicy, masks_by_type
from defectfill.generators.runner import generate_dataset
from defectfill.masks import mask_to_boxes
from gan_baselines.cutpaste import CutPaste

TYPES = ["stain", "hole"]
SIZE = 64


@pytest.fixture(scope="module")
def real():
    defects = [DefectSample(*render_sample("plain", t, seed, SIZE), defect_type=t) for t in TYPES for seed in range(3)]
    goods = [DefectSample(render_sample("twill", None, 50 + s, SIZE)[0], np.zeros((SIZE, SIZE), bool)) for s in range(2)]
    return defects + goods


@pytest.fixture(scope="module")
def generated(real, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gen")
    goods = [s for s in real if s.is_good]
    generate_dataset(CutPaste().fit(real), goods, TYPES, folder, per_type=2, seed=0,
                     masks=MaskPolicy("real", masks_by_type(real)), num_processes=1)
    return folder


def _read_yolo(path, width, height):
    boxes, classes = [], []
    for line in path.read_text().splitlines():
        c, cx, cy, w, h = line.split()
        cx, cy, w, h = float(cx) * width, float(cy) * height, float(w) * width, float(h) * height
        boxes.append([round(cx - w / 2), round(cy - h / 2), round(cx + w / 2), round(cy + h / 2)])
        classes.append(int(c))
    return np.array(boxes, dtype=np.int64).reshape(-1, 4), classes


def test_assemble_writes_consistent_labels_and_recipe(real, generated, tmp_path):
    dataset = assemble(real, [generated], tmp_path / "data", TYPES, seed=3)
    recipe = json.loads((tmp_path / "data" / "recipe.json").read_text())
    assert recipe["train_images"] == {"real": 8, "synthetic": 4}
    assert recipe["ratio_real_to_synthetic"] == "1:0.5"
    assert recipe["counts"]["train"]["synthetic"] == {"hole": 2, "stain": 2}
    assert recipe["counts"]["train"]["real"] == {"good": 2, "hole": 3, "stain": 3}
    assert recipe["sources"][1]["generators"] == ["cutpaste"] and recipe["seed"] == 3
    data = yaml.safe_load((tmp_path / "data" / "data.yaml").read_text())
    assert data["names"] == {0: "stain", 1: "hole"} and data["path"] == str((tmp_path / "data").resolve())

    index = [json.loads(line) for line in (tmp_path / "data" / "index.jsonl").read_text().splitlines()]
    train = [row for row in index if row["split"] == "train"]
    assert len(train) == 12 and len(dataset.images("train")) == 12
    for row in train:
        image_path = tmp_path / "data" / row["file"]
        class_mask = np.asarray(Image.open(dataset.mask_path(image_path)))
        label_path = tmp_path / "data" / "labels" / "train" / (image_path.stem + ".txt")
        boxes, classes = _read_yolo(label_path, SIZE, SIZE)
        if row["defect_type"] == "good":
            assert not class_mask.any() and len(boxes) == 0
            continue
        index_plus_one = TYPES.index(row["defect_type"]) + 1
        assert set(np.unique(class_mask)) == {0, index_plus_one}
        # YOLO boxes are the components of the label mask (the changed pixels for synthetic images)
        assert np.array_equal(np.sort(boxes, axis=0), np.sort(mask_to_boxes(class_mask > 0), axis=0))
        assert set(classes) == {index_plus_one - 1}
    coco = json.loads((tmp_path / "data" / "coco_train.json").read_text())
    assert len(coco["images"]) == 12
    assert sum(len(row["boxes"]) for row in train) == len(coco["annotations"])
    # COCO segmentations are the label pixels of each box: their union is the class mask
    from faster_coco_eval.core import mask as coco_mask

    for image in coco["images"]:
        class_mask = np.asarray(Image.open(tmp_path / "data" / "masks" / "train" / Path(image["file_name"]).name))
        union = np.zeros_like(class_mask, dtype=bool)
        for ann in (a for a in coco["annotations"] if a["image_id"] == image["id"]):
            decoded = coco_mask.decode(ann["segmentation"]).astype(bool)
            assert ann["area"] == int(decoded.sum()) and (class_mask[decoded] == ann["category_id"]).all()
            union |= decoded
        assert np.array_equal(union, class_mask > 0)
    assert load_assembled(tmp_path / "data").classes == TYPES


def test_val_split_holds_out_real_images_only(real, generated, tmp_path):
    recipe = assemble(real, [generated], tmp_path / "d", TYPES, AssembleConfig(val_fraction=0.34)).recipe
    assert recipe["counts"]["val"]["synthetic"] == {}
    assert sum(recipe["counts"]["val"]["real"].values()) == 3  # one per class (stain, hole, good)
    assert recipe["train_images"]["real"] == 5


def test_unknown_classes_are_listed(real, tmp_path):
    with pytest.raises(DataError, match=r"'hole': 3.*configured classes are \['stain'\]"):
        assemble(real, [], tmp_path / "d", ["stain"])
    assert not (tmp_path / "d").exists()


def test_missing_manifest_files_stop_before_writing(real, generated, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(generated, broken)
    records = [json.loads(line) for line in (broken / "manifest.jsonl").read_text().splitlines()]
    (broken / records[0]["image"]).unlink()
    (broken / records[2]["request_mask"]).unlink()
    with pytest.raises(DataError, match="2 file") as info:
        assemble(real, [generated, broken], tmp_path / "d", TYPES)
    assert records[0]["image"] in str(info.value) and records[2]["request_mask"] in str(info.value)
    assert not (tmp_path / "d").exists()


def test_empty_changed_masks_are_dropped_and_counted(real, generated, tmp_path):
    import shutil

    folder = tmp_path / "gen"
    shutil.copytree(generated, folder)
    records = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    save_mask(folder / records[1]["changed_mask"], np.zeros((SIZE, SIZE), bool))
    recipe = assemble(real, [folder], tmp_path / "d", TYPES).recipe
    assert recipe["dropped"]["synthetic_empty_changed_mask"] == 1
    assert recipe["train_images"]["synthetic"] == 3
    with pytest.raises(DataError, match="already holds an assembled dataset"):
        assemble(real, [folder], tmp_path / "d", TYPES)


def test_mvtec_folder_as_real_input(tmp_path):
    root = tmp_path / "mvtec"
    image, mask = render_sample("plain", "stain", 1, SIZE)
    save_image(root / "train" / "good" / "000.png", render_sample("plain", None, 2, SIZE)[0])
    save_image(root / "train" / "stain" / "001.png", image)
    save_mask(root / "ground_truth" / "stain" / "001_mask.png", mask)
    recipe = assemble(root, [], tmp_path / "d", TYPES).recipe
    assert recipe["counts"]["train"]["real"] == {"good": 1, "stain": 1}
    assert recipe["sources"][0]["path"] == str(root.resolve())
