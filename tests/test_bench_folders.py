"""`defectfill bench` on a user's own folder: line-scan strips whose file names carry the fabric code
(AITEX-style nnnn_ddd_ff), one folder split by fabric, every arm end to end on tiles with predictions
stitched back to strip coordinates; and the bad-input cases, each refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from defectfill.bench.config import load_bench_config
from defectfill.data.fabric import render_sample
from defectfill.data.sample import DefectSample
from defectfill.data.writers import write_masks
from defectfill.errors import DataError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STRIP = (64, 256)  # (H, W): a small line-scan strip
CODES = {"stain": "002", "hole": "006", None: "000"}


def _strip(fabric: str, texture: str, defect_type: str | None, seed: int) -> DefectSample:
    image, mask = render_sample(texture, defect_type, seed, size=STRIP, gray=True)
    return DefectSample(image, mask, defect_type or "good", is_gray=True,
                        meta={"name": f"{seed:04d}_{CODES[defect_type]}_{fabric}"})


@pytest.fixture(scope="module")
def strip_folder(tmp_path_factory) -> Path:
    """Fabric 01 (plain): the old fabric's labelled defects; fabric 02 (twill): the new one."""
    samples = [_strip("01", "plain", t, s) for t in ("stain", "hole") for s in (1, 2)]
    samples += [_strip("02", "twill", None, s) for s in range(10, 14)]
    samples += [_strip("02", "twill", t, s) for t in ("stain", "hole") for s in (20, 21)]
    return write_masks(samples, tmp_path_factory.mktemp("strips") / "all")


def _config(tmp_path: Path, folder: Path, base: Path | None, **data_overrides) -> Path:
    config = yaml.safe_load((CONFIGS / "bench_micro.yaml").read_text())
    config["data"] = {"kind": "folders", "folders": {
        "folder": str(folder), "split": {"rule": "fabric", "pattern": r"_(?P<fabric>\d{2})$", "source_fabrics": ["01"],
                                         "test_good_fraction": 0.25},
        "tile": 64, "tile_overlap": 16, "keep_good_ratio": 0.5, **data_overrides}}
    config["seeds"] = [0]
    if base is not None:
        config["generators"]["defectfill"].update(base_model=str(base), concept_crops=True)
    config["generators"]["defectfill"]["train_config"] = str(CONFIGS / "defectfill_tiny.yaml")
    config["downstream"]["config"] = str(CONFIGS / "downstream_tiny.yaml")
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_bench_on_a_folder_of_strips_split_by_fabric_code(strip_folder, tmp_path):
    from defectfill.bench.run import run_bench
    from defectfill.models.plugin import build_random_base

    base = build_random_base(tmp_path / "tiny-base")
    config = load_bench_config(_config(tmp_path, strip_folder, base))
    out = tmp_path / "run"
    summary = run_bench(config, out, echo=lambda _: None)
    assert summary["defect_types"] == ["hole", "stain"]  # from the data, not the config
    assert summary["protocol"]["fabrics"] == ["01", "02"] and summary["protocol"]["source_fabrics"] == ["01"]
    assert summary["protocol"]["counts"] == {"source_defects": 4, "target_good": 3, "test": 5, "test_defects": 4}
    assert set(summary["arms"]) == {"real_only", "cutpaste", "defectfill"}
    for arm in ("real_only", "cutpaste", "defectfill"):
        strip = json.loads((out / "seed-0" / "arms" / arm / "strip_results.json").read_text())
        assert strip["strip_level"]["strips"] == 5  # predictions stitched back: scored per whole strip
        counts = strip["strip_level"]["deeplab"]["per_image_counts"]
        assert len(counts) == 5 and len(counts[0]) == 2
        recipe = json.loads((out / "seed-0" / "arms" / arm / "data" / "recipe.json").read_text())
        assert str(strip_folder.resolve()) in recipe["sources"][0]["path"]  # the real source is named
    for arm in ("cutpaste", "defectfill"):  # generated into good 64-px tiles of the new fabric's strips
        records = (out / "seed-0" / "generated" / arm / "manifest.jsonl").read_text().splitlines()
        assert len(records) == 4 and all("_x" in json.loads(r)["source_image"] for r in records)
    assert {(c["arm"], c["baseline"]) for c in summary["comparisons"]} == {
        ("cutpaste", "real_only"), ("defectfill", "real_only"), ("defectfill", "cutpaste")}
    assert all(c["num_images"] == 5 for c in summary["comparisons"])


@pytest.mark.parametrize("overrides, message", [
    ({"split": {"rule": "fabric", "pattern": r"_(?P<fabric>\d{2})$", "source_fabrics": ["07"]}},
     r"source fabrics \['07'\] hold no labelled defect.*fabrics found: \['01', '02'\]"),
    ({"split": {"rule": "fabric", "pattern": r"_(?P<fabric>\d{2})$", "source_fabrics": ["01", "02"]}},
     "every fabric .* is a source fabric"),
    ({"split": {"rule": "fabric", "pattern": r"^(?P<fabric>x)", "source_fabrics": ["01"]}}, "finds no fabric in"),
    ({"tile": 128}, r"smaller than the tile \(128 px\)"),
])
def test_bad_folder_data_is_refused_before_anything_is_written(strip_folder, tmp_path, overrides, message):
    from defectfill.bench.run import run_bench

    config = load_bench_config(_config(tmp_path, strip_folder, None, **overrides))
    with pytest.raises(DataError, match=message):
        run_bench(config, tmp_path / "run", echo=lambda _: None)
    assert not (tmp_path / "run").exists()


def test_unknown_layout_unseen_test_class_and_missing_test_masks(tmp_path):
    from defectfill.bench.run import run_bench

    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("no images here")
    config = load_bench_config(_config(tmp_path, junk, None))
    with pytest.raises(DataError, match="junk"):
        run_bench(config, tmp_path / "run", echo=lambda _: None)
    # a test class no source defect has
    samples = [_strip("01", "plain", "stain", 1), _strip("02", "twill", None, 3), _strip("02", "twill", "hole", 4)]
    folder = write_masks(samples, tmp_path / "unseen")
    config = load_bench_config(_config(tmp_path, folder, None))
    with pytest.raises(DataError, match=r"defect type\(s\) \['hole'\] that no source defect has"):
        run_bench(config, tmp_path / "run", echo=lambda _: None)
    # separate folders: a test image whose mask is missing
    source = write_masks([_strip("01", "plain", "stain", 1)], tmp_path / "source")
    from defectfill.data.images import save_image

    for day, seed in (("day1", 3), ("day2", 6)):  # good images in subfolders, as a line saves them per day
        save_image(tmp_path / "good" / day / f"{seed:04d}_000_02.png", _strip("02", "twill", None, seed).image)
    test = write_masks([_strip("02", "twill", "stain", 4), _strip("02", "twill", "stain", 5)], tmp_path / "test")
    (test / "masks" / "0005_002_02.png").unlink()
    path = _config(tmp_path, tmp_path, None)
    raw = yaml.safe_load(path.read_text())
    raw["data"]["folders"] = {"source": str(source), "target_good": str(tmp_path / "good"), "target_test": str(test)}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(DataError, match="0005_002_02"):
        run_bench(load_bench_config(path), tmp_path / "run", echo=lambda _: None)
    assert not (tmp_path / "run").exists()
    from defectfill.bench.protocol import load_folder_data

    (test / "images" / "0005_002_02.png").unlink()
    data = load_folder_data(load_bench_config(path))
    assert sorted(s.meta["name"] for s in data.target_good) == ["day1/0003_000_02", "day2/0006_000_02"]
