"""The whole downstream stage on a tiny simulator dataset: real-only vs real + cut-paste, DeepLabV3
and RT-DETR really trained and evaluated, then the report (API and CLI)."""

from __future__ import annotations

import json

import pytest

from defectfill.cli import main as cli_main
from defectfill.data.fabric import simulate_dataset
from defectfill.data.readers import read_mvtec
from defectfill.downstream.arm import run_arm
from defectfill.downstream.config import load_downstream_config
from defectfill.generators.requests import MaskPolicy, masks_by_type
from defectfill.generators.runner import generate_dataset
from defectfill.report.html import write_report
from defectfill.report.table import verdict
from gan_baselines.cutpaste import CutPaste

TYPES = ["stain", "hole"]
SIZE = 96


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage")
    # source fabric: the few labelled defects; target fabric: good images to train, defects to test
    source = simulate_dataset(root / "source", ["plain"], TYPES, 0, 0, 3, size=SIZE, seed=1)
    target = simulate_dataset(root / "target", ["twill"], TYPES, 6, 2, 4, size=SIZE, seed=2)
    real = read_mvtec(source, "test") + read_mvtec(target, "train")
    test = read_mvtec(target, "test")
    config = load_downstream_config(
        "configs/downstream_tiny.yaml",
        {"models": ["deeplab", "rtdetr", "segboxes"], "deeplab.epochs": 3, "deeplab.image_size": SIZE, "rtdetr.epochs": 3, "rtdetr.imgsz": SIZE,
         "evaluation.kid_subsets": 10, "evaluation.lpips_size": 32},
    )
    goods = [s for s in real if s.is_good]
    generated = root / "gen"
    generate_dataset(CutPaste().fit(real), goods, TYPES, generated, per_type=4, seed=0,
                     masks=MaskPolicy("real", masks_by_type(real)), num_processes=1)
    arms = root / "arms"
    results = [
        run_arm("real_only", real, test, config, arms),
        run_arm("cutpaste", real, test, config, arms, manifests=[generated]),
    ]
    return {"root": root, "target": target, "source": source, "test": test, "config": config, "arms": arms,
            "results": results, "generated": generated, "real": real}


def test_stage_numbers_come_from_real_training_and_evaluation(stage):
    real_only, cutpaste = stage["results"]
    test = stage["test"]
    assert real_only["dataset"]["train_images"] == {"real": 12, "synthetic": 0}
    assert cutpaste["dataset"]["train_images"] == {"real": 12, "synthetic": 8}
    for result in (real_only, cutpaste):
        # pixel counts add up to the test set's ground truth, class by class
        for index, name in enumerate(TYPES, start=1):
            truth = sum(int(s.mask.sum()) for s in test if s.defect_type == name)
            counts = result["deeplab"]["per_class"][name]
            assert counts["tp"] + counts["fn"] == truth > 0
        assert len(result["deeplab"]["train"]["seconds_per_epoch"]) == 3
        detection = result["rtdetr"]
        assert 0.0 <= detection["mAP50_95"] <= detection["mAP50"] <= 1.0
        assert len(detection["train"]["seconds_per_epoch"]) == 3
        assert set(detection["pr_curve_iou50"]) == set(TYPES)
        boxes = result["segboxes"]  # the segmenter's components as boxes, scored the same way
        assert 0.0 <= boxes["mAP50_95"] <= boxes["mAP50"] <= 1.0 and boxes["source"] == "segmenter components"
        assert (stage["arms"] / result["arm"] / "rtdetr" / "weights" / "best.pt").is_file()
        assert (stage["arms"] / result["arm"] / "deeplab" / "best.safetensors").is_file()
    assert real_only["generation"] is None
    generation = cutpaste["generation"]
    assert generation["generated_crops"] == 8 and generation["real_test_crops"] == 8
    assert "offline substitute" in generation["kid"]["feature_extractor"]
    assert "lpips alex" in generation["ic_lpips"]["lpips_network"]
    assert set(generation["kid_per_class"]) == set(TYPES) and set(generation["ic_lpips_per_class"]) == set(TYPES)
    assert set(generation["contrast"]["real_test"]) == set(TYPES)
    assert set(generation["contrast"]["generated"]) <= set(TYPES) and generation["contrast"]["generated"]
    contrast = generation["contrast"]
    gaps = [abs(v - contrast["real_test"][t]) for t, v in contrast["generated"].items()]
    assert contrast["gap"] == pytest.approx(sum(gaps) / len(gaps))


def test_finished_arms_are_not_recomputed(stage):
    weights = stage["arms"] / "cutpaste" / "deeplab" / "best.safetensors"
    before = weights.stat().st_mtime_ns
    again = run_arm("cutpaste", stage["real"], stage["test"], stage["config"], stage["arms"])
    assert again == stage["results"][1]
    assert weights.stat().st_mtime_ns == before


def test_report_api_and_cli(stage, tmp_path):
    results = stage["results"]
    page = write_report(results, tmp_path / "report")
    html = page.read_text()
    sentence = verdict(results)
    assert sentence.replace("**", "") in html
    assert html.count("data:image/png;base64,") >= 3  # F bars, mAP bars / PR curves, contact sheet
    table = (tmp_path / "report" / "table.md").read_text()
    assert "| real_only | 12+0 |" in table and "| cutpaste | 12+8 |" in table
    assert f"{results[0]['deeplab']['mean_f_measure']:.3f}" in table
    assert "contrast gap (synthetic)" in table and f"{results[1]['generation']['contrast']['gap']:.3f}" in table
    assert (tmp_path / "report" / "sheets" / "cutpaste.png").is_file()
    assert not (tmp_path / "report" / "sheets" / "real_only.png").exists()
    assert json.loads((tmp_path / "report" / "results.json").read_text())[1]["arm"] == "cutpaste"

    arms = stage["arms"]
    assert cli_main(["report", str(arms / "real_only"), str(arms / "cutpaste"), "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "report.html").is_file()


def test_cli_assemble_finetune_evaluate(stage, tmp_path):
    config = "configs/downstream_tiny.yaml"
    data = tmp_path / "data"
    assert cli_main(["assemble", "--real", str(stage["source"]), "--real-split", "test",
                     "--generated", str(stage["generated"]), "--config", config, "--out", str(data)]) == 0
    recipe = json.loads((data / "recipe.json").read_text())
    assert recipe["train_images"] == {"real": 6, "synthetic": 8}
    # a trained arm folder: finetune skips its finished models; evaluate re-scores it from disk
    run = stage["arms"] / "cutpaste"
    assert cli_main(["finetune", "--data", str(run / "data"), "--config", config, "--out", str(run),
                     "--if-exists", "skip"]) == 0
    assert cli_main(["finetune", "--data", str(run / "data"), "--config", config, "--out", str(run)]) == 1
    copy = tmp_path / "copy"  # evaluate writes results.json into --run: keep the arm's own untouched
    copy.mkdir()
    (copy / "deeplab").symlink_to(run / "deeplab", target_is_directory=True)
    assert cli_main(["evaluate", "--run", str(copy), "--data", str(run / "data"), "--test", str(stage["target"]),
                     "--config", config, "--models", "deeplab", "--name", "again"]) == 0
    again = json.loads((copy / "results.json").read_text())
    assert again["arm"] == "again" and "rtdetr" not in again
    # same weights, same test images, scored at the size it was trained at (96 px, not the
    # CLI config's 128 px): the same pixel counts as the API run
    assert again["deeplab"]["per_class"] == stage["results"][1]["deeplab"]["per_class"]
