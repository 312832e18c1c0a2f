"""An image + mask folder does not name its class: it is read as the neutral `defect` (never a guess
such as `stain`), with a warning that says how to name it; every caller that knows the class passes it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from defectfill.cli import main
from defectfill.data.images import DataWarning
from defectfill.data.readers import FOLDER_DEFECT_TYPE, ReadReport, read_dataset
from defectfill.training.config import DefectFillTrainConfig
from defectfill.training.data import load_defect_samples


def _pairs(root, n=2, size=64):
    rng = np.random.default_rng(3)
    for i in range(n):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(90, 160, (size, size, 3), dtype=np.uint8)).save(root / "images" / f"p{i}.png")
        mask = np.zeros((size, size), np.uint8)
        mask[20:30, 10 + 10 * i : 24 + 10 * i] = 255
        Image.fromarray(mask).save(root / "annotations" / f"p{i}.png")
    return root


def test_unnamed_folder_is_defect_and_says_how_to_name_it(tmp_path):
    _pairs(tmp_path)
    report = ReadReport()
    with pytest.warns(DataWarning, match=r"2 file\(s\): .*labelled 'defect'.*defect_type=.*--defect-type"):
        samples = read_dataset(tmp_path, report=report)
    assert FOLDER_DEFECT_TYPE == "defect" and {s.defect_type for s in samples} == {"defect"}
    assert report.counts["unnamed_class"] == 2
    named = ReadReport()
    assert {s.defect_type for s in read_dataset(tmp_path, defect_type="stain", report=named)} == {"stain"}
    assert "unnamed_class" not in named.counts
    (tmp_path / "defects.json").write_text(json.dumps({"types": {"p0": "hole", "p1": "oil"}}))
    assert sorted(s.defect_type for s in read_dataset(tmp_path)) == ["hole", "oil"]


def test_training_default_is_defect_and_folder_defect_type_names_it(tmp_path):
    _pairs(tmp_path)
    assert DefectFillTrainConfig().folder_defect_type == ""
    with pytest.warns(DataWarning, match="labelled 'defect'"):
        assert list(load_defect_samples(str(tmp_path))) == ["defect"]
    assert list(load_defect_samples(str(tmp_path), folder_defect_type="oil")) == ["oil"]


def test_data_info_help_and_summary_name_the_default(tmp_path, capsys):
    _pairs(tmp_path)
    assert main(["data", "info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "defect" in out.split("classes:")[1] and "unnamed_class" in out and "--defect-type" in out
    with pytest.raises(SystemExit):
        main(["data", "info", "--help"])
    assert "default: 'defect'" in " ".join(capsys.readouterr().out.split())


def test_generate_train_data_folder_holds_the_asked_type(tmp_path):
    """`generate --train-data FOLDER --defect-type oil`: the folder's pairs are the oil defects."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    _pairs(tmp_path / "real")
    goods = tmp_path / "good"
    goods.mkdir()
    from defectfill.data.fabric import render_fabric

    # good cloth (a flat grey square has no fabric for the proposals: refused, see test_mask_proposals)
    Image.fromarray(render_fabric("plain", 0, 64)).save(goods / "g.png")
    out = tmp_path / "out"
    assert main(["generate", "--generator", "cutpaste", "--train-data", str(tmp_path / "real"), "--images",
                 str(goods), "--defect-type", "oil", "--out", str(out), "--num-candidates", "1",
                 "--masks", "procedural", "--no-contact-sheet"]) == 0
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert records and {r["defect_type"] for r in records} == {"oil"}
