"""Open-set labels in `defectfill evaluate --openset-model`: the region matching on hand-made cases, the
summary's arithmetic, and the whole path at tiny size (a segmenter and a DGT model trained here)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from defectfill.masks import component_masks
from defectfill.metrics.openset import UNKNOWN, match_regions, openset_summary


def _box(shape, y0, y1, x0, x1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_component_masks_split_and_drop_small():
    mask = _box((20, 20), 2, 6, 2, 6) | _box((20, 20), 10, 12, 10, 11) | _box((20, 20), 15, 19, 0, 20)
    parts = component_masks(mask, min_area=3)
    assert [int(p.sum()) for p in parts] == [16, 80]  # the 2-px blob is dropped
    assert not (parts[0] & parts[1]).any()


def test_match_regions_by_overlap_coefficient():
    shape = (40, 40)
    truth = _box(shape, 5, 15, 5, 15) | _box(shape, 25, 27, 25, 35)  # a 10x10 blob and a thin 2x10 line
    regions = [
        _box(shape, 6, 12, 6, 12),      # inside the blob: |P∩G| / |P| = 1
        _box(shape, 0, 40, 0, 20),      # over-segments the blob: |P∩G| / |G| = 1
        _box(shape, 14, 24, 14, 24),    # touches the blob's corner: 1 px / min(100, 100) < 0.5
        _box(shape, 24, 30, 24, 36),    # around the line: 20 / min(72, 20) = 1
        _box(shape, 30, 40, 30, 40),    # nowhere near: no match
        _box(shape, 10, 20, 10, 20),    # a quarter of the blob: 25 / 100 = 0.25
    ]
    assert match_regions(regions, truth, "hole") == ["hole", "hole", None, "hole", None, None]
    assert match_regions(regions[5:], truth, "hole", min_overlap=0.2) == ["hole"]
    # a good image (empty mask) matches nothing, whatever the region
    assert match_regions(regions[:2], np.zeros(shape, bool), "good") == [None, None]


def test_summary_counts_accuracies_and_unknown_rates():
    records = [  # known types: stain, hole; "oil" is a type the classifier does not know
        {"label": "stain", "closed_set_type": "stain", "truth": "stain"},      # right
        {"label": UNKNOWN, "closed_set_type": "stain", "truth": "stain"},      # right type, flagged unknown
        {"label": "stain", "closed_set_type": "stain", "truth": "hole"},       # wrong
        {"label": UNKNOWN, "closed_set_type": "hole", "truth": "oil"},         # novel, flagged
        {"label": "hole", "closed_set_type": "hole", "truth": "oil"},          # novel, missed
        {"label": "hole", "closed_set_type": "hole", "truth": "oil"},          # novel, missed
        {"label": UNKNOWN, "closed_set_type": "stain", "truth": None},         # false region
    ]
    s = openset_summary(records, ["stain", "hole"])
    assert s["regions"] == 7 and s["counts"] == {"stain": 2, "hole": 2, UNKNOWN: 3}
    assert s["unmatched_regions"] == 1 and s["unmatched_counts"] == {"stain": 0, "hole": 0, UNKNOWN: 1}
    assert s["matched_known_regions"] == 3
    assert s["closed_set_accuracy"] == pytest.approx(2 / 3)   # argmax right on 2 of 3
    assert s["label_accuracy"] == pytest.approx(1 / 3)        # "unknown defect" on a stain counts as wrong
    assert s["known_flagged_unknown"] == pytest.approx(1 / 3)
    assert s["matched_novel_regions"] == 3 and s["novel_types"] == ["oil"]
    assert s["novel_flagged_unknown"] == pytest.approx(1 / 3)
    assert s["by_truth"] == {"hole": {"stain": 1, "hole": 0, UNKNOWN: 0}, "oil": {"stain": 0, "hole": 2, UNKNOWN: 1},
                             "stain": {"stain": 1, "hole": 0, UNKNOWN: 1}}
    empty = openset_summary([], ["stain"])
    assert empty["regions"] == 0 and empty["closed_set_accuracy"] is None and empty["novel_flagged_unknown"] is None


TYPES = ["stain", "hole", "oil"]
KNOWN = ["hole", "stain"]  # the DGT model never sees oil


def test_evaluate_labels_the_segmenters_regions_end_to_end(tmp_path):
    """A tiny segmenter (3 types) and a tiny DGT model (2 of them) trained here; `defectfill evaluate
    --openset-model` labels each segmented region, results.json / openset_regions.jsonl / the report agree."""
    import torch

    from defectfill.cli import main
    from defectfill.config import save_config
    from defectfill.data.fabric import simulate_dataset
    from defectfill.data.readers import read_mvtec
    from defectfill.downstream.arm import run_arm
    from defectfill.downstream.config import load_downstream_config
    from defectfill.downstream.deeplab import load_deeplab, predict_deeplab
    from gan_baselines.dgt.config import DGTConfig, DGTModelConfig, OpenMaxConfig

    torch.set_num_threads(1)
    source = simulate_dataset(tmp_path / "source", ["plain"], TYPES, 0, 0, 3, size=64, seed=1)
    target = simulate_dataset(tmp_path / "target", ["twill"], TYPES, 3, 1, 2, size=64, seed=2)
    overrides = {"classes": TYPES, "models": ["deeplab"], "deeplab.epochs": 2, "deeplab.image_size": 64,
                 "deeplab.unet_depth": 2, "deeplab.unet_base_width": 8, "evaluation.generation_metrics": False}
    config = load_downstream_config("configs/downstream_tiny.yaml", overrides)
    cfg_path = tmp_path / "downstream.yaml"
    save_config(config, cfg_path)
    test = read_mvtec(target, "test")
    arm = tmp_path / "arms"
    run_arm("real_only", read_mvtec(source, "test") + read_mvtec(target, "train"), test, config, arm)

    dgt_config = DGTConfig(model=DGTModelConfig(resolution=32, base_channels=4, depth=2, classifier_channels=8,
                                                discriminator_channels=4, defect_types=KNOWN),
                           openmax=OpenMaxConfig(tailsize=3, fakes_per_type=4), train_batch_size=2, max_train_steps=3,
                           checkpointing_steps=0, validation_steps=0, report_to="none")
    save_config(dgt_config, tmp_path / "dgt.yaml")
    assert main(["train", "--generator", "dgt", "--config", str(tmp_path / "dgt.yaml"), "--train_data_dir",
                 str(source), "--good_data_dir", str(target / "train" / "good"), "--output_dir", str(tmp_path / "dgt")]) == 0
    dgt_model = tmp_path / "dgt" / "model"

    run = arm / "real_only"
    argv = ["evaluate", "--run", str(run), "--data", str(run / "data"), "--test", str(target), "--config", str(cfg_path),
            "--models", "deeplab", "--openset-model", str(dgt_model), "--openset-min-area", "1"]
    assert main(argv) == 0
    o = json.loads((run / "results.json").read_text())["openset"]
    records = [json.loads(line) for line in (run / "openset_regions.jsonl").read_text().splitlines()]
    # the regions are the connected components of the segmenter's prediction, every one labelled
    model, info = load_deeplab(run / "deeplab")
    predicted = predict_deeplab(model, [s.image for s in test], info["config"]["image_size"])
    assert o["regions"] == len(records) == sum(len(component_masks(p > 0, 1)) for p in predicted) > 0
    assert o["known_types"] == KNOWN and sum(o["counts"].values()) == o["regions"]
    assert all(r["label"] in [*KNOWN, UNKNOWN] and r["closed_set_type"] in KNOWN for r in records)
    assert all(r["truth"] in (None, *TYPES) for r in records)
    assert any(r["truth"] is not None for r in records)  # some region lies on a real defect
    # results.json's numbers are the summary of the per-region file (oil = a type the model does not know)
    for key, value in openset_summary(records, KNOWN).items():
        assert o[key] == value, key
    assert o["region_source"].startswith("connected components") and o["min_overlap"] == 0.5
    # the report shows them
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Open-set labels of the segmented regions" in page and "<th>unknown defect</th>" in page
    # a folder without the fitted Weibulls is refused with the fix
    assert main([*argv[:-4], "--openset-model", str(tmp_path / "dgt")]) == 1
