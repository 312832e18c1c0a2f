"""`defectfill data info` / `data convert` through the real CLI entry point."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from defectfill.cli import main
from defectfill.data.readers import read_mvtec, read_yolo


def _folder(root, n=3, h=64, w=512):
    rng = np.random.default_rng(0)
    for i in range(n):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(root / "images" / f"s{i}.png")
        mask = np.zeros((h, w), np.uint8)
        if i < n - 1:  # the last mask is all black: a quirk the summary must show
            mask[10:20, 100 * i + 30 : 100 * i + 60] = 255
        Image.fromarray(mask).save(root / "annotations" / f"s{i}.png")


def test_data_info_prints_and_writes_json(tmp_path, capsys):
    _folder(tmp_path / "src")
    assert main(["data", "info", str(tmp_path / "src"), "--defect-type", "oil", "--json", str(tmp_path / "i.json")]) == 0
    out = capsys.readouterr().out
    assert "layout:      folder" in out and "images:      2  (2 defect, 0 good)" in out
    assert "oil" in out and "greyscale:   2 of 2" in out and "512x64 x2" in out
    assert "empty_mask" in out and "s2.png" in out
    summary = json.loads((tmp_path / "i.json").read_text())
    assert summary["images_per_class"] == {"oil": 2} and summary["quirks"]["empty_mask"] == 1
    assert summary["quirks"]["grayscale"] == 3


def test_data_convert_with_tiles_to_yolo(tmp_path, capsys):
    _folder(tmp_path / "src")
    code = main(["data", "convert", str(tmp_path / "src"), "--to", "yolo", "--out", str(tmp_path / "yolo"),
                 "--tile", "64", "--overlap", "16", "--keep-good", "0"])
    assert code == 0
    tiles = read_yolo(tmp_path / "yolo")
    assert tiles and all(t.size == (64, 64) and not t.is_good for t in tiles)
    assert {t.defect_type for t in tiles} == {"defect"}  # the folder names no class: neutral, warned
    assert "tiles:" in capsys.readouterr().out


def test_data_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "missing")]) == 1
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["data", "convert", str(tmp_path / "empty"), "--to", "coco", "--out", str(tmp_path / "o")]) == 1
    assert "unknown dataset layout" in capsys.readouterr().err


def test_data_convert_to_mvtec_writes_held_out_good_images(tmp_path, capsys):
    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(tmp_path / f"g{i}.png")
    out = tmp_path / "mvtec"
    assert main(["data", "convert", str(tmp_path), "--to", "mvtec", "--out", str(out), "--test-good", "0.4"]) == 0
    assert len(list((out / "test" / "good").glob("*.png"))) == 2
    assert len(list((out / "train" / "good").glob("*.png"))) == 3
    assert "test/good: 2 good images (2 held out: a 0.4 share of the images" in capsys.readouterr().out
    read_back = read_mvtec(out, "test")
    assert len(read_back) == 2 and all(s.is_good for s in read_back)


def test_data_convert_tile_drops_specks_and_merges_boxes(tmp_path, capsys):
    """A strip with one defect in two pieces 3 px apart and two 1-px specks (mask residue)."""
    root = tmp_path / "src"
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 255, (64, 256), dtype=np.uint8)).save(root / "images" / "strip.png")
    mask = np.zeros((64, 256), np.uint8)
    mask[10:40, 20:24] = 255
    mask[10:40, 27:30] = 255
    mask[50, 100] = mask[20, 200] = 255
    Image.fromarray(mask).save(root / "annotations" / "strip.png")

    def convert(name, *extra):
        assert main(["data", "convert", str(root), "--to", "yolo", "--out", str(tmp_path / name), "--tile", "64",
                     "--overlap", "0", "--keep-good", "0", "--defect-type", "yarn", *extra]) == 0
        boxes = sorted(b.tolist() for t in read_yolo(tmp_path / name) for b in t.boxes)
        return boxes, capsys.readouterr().out

    boxes, out = convert("default")
    assert boxes == [[20, 10, 24, 40], [27, 10, 30, 40]]  # the specks are gone
    assert "boxes (images): 2 under 4 defect px dropped, no merging" in out
    everything, _ = convert("keep", "--min-box-px", "1")
    assert len(everything) == 4  # the old behaviour, on request: each speck is a 1x1 box in its tile
    merged, out = convert("merged", "--merge-boxes", "3")
    assert merged == [[20, 10, 30, 40]] and "merged 1 (gap 3 px)" in out


def test_data_info_unlabelled_error_lists_the_files(tmp_path, capsys):
    _folder(tmp_path / "src")
    (tmp_path / "src" / "annotations" / "s0.png").unlink()
    assert main(["data", "info", str(tmp_path / "src"), "--unlabelled", "error"]) == 1
    err = capsys.readouterr().err
    assert "2 defect image(s) without a usable mask" in err and "s0.png" in err and "s2.png: all-black" in err
