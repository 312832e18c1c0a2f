"""The studies (DESIGN §8) on hand-made cases and end to end on tiny bench runs: fusion (seam
statistics, the classifier two-sample test, Poisson cut-paste) and labels (box-label noise)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from defectfill.studies.fusion import FusionStudyConfig, run_fusion_study, seam_statistics, two_sample_auc

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _cloth(seed: int, size: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.repeat(rng.normal(120, 6, (size, size, 1)), 3, 2).clip(0, 255).astype(np.uint8)


def _square(size: int = 48) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[16:32, 16:32] = True
    return mask


def test_a_hard_seam_has_a_high_seam_ratio_and_a_soft_one_does_not():
    mask = _square()
    hard = _cloth(0)
    hard[mask] = 200  # a flat bright square pasted: an intensity step all along the boundary
    soft = _cloth(0).astype(np.float64)
    yy, xx = np.mgrid[:48, :48]
    soft += 80 * np.exp(-((yy - 24) ** 2 + (xx - 24) ** 2) / (2 * 6.0**2))[..., None]  # a smooth blob
    plain = seam_statistics(_cloth(0), mask)
    assert seam_statistics(hard, mask)["seam_ratio"] > 20 * plain["seam_ratio"]
    assert seam_statistics(soft.clip(0, 255).astype(np.uint8), mask)["seam_ratio"] < 5 * plain["seam_ratio"]
    assert plain["seam_ratio"] == pytest.approx(1.0, abs=0.35)  # cloth alone: band like ring
    assert seam_statistics(_cloth(0), np.zeros((48, 48), bool)) is None


def test_c2st_auc_is_half_for_one_distribution_and_one_for_separable_sets():
    rng = np.random.default_rng(0)
    same = rng.uniform(0, 1, (80, 3, 16, 16)).astype(np.float32)
    identical = two_sample_auc(same[:40], same[40:], repeats=3, epochs=40, seed=0)["auc"]
    assert abs(identical - 0.5) < 0.15, identical
    small = [two_sample_auc(same[:12], same[40:52], repeats=5, epochs=40, seed=s)["auc"] for s in range(3)]
    assert abs(np.mean(small) - 0.5) < 0.15, small  # a dozen items per side: still near chance
    dark, bright = same[:40] * 0.3, same[40:] * 0.3 + 0.7
    assert two_sample_auc(dark, bright, repeats=2, epochs=40, seed=0)["auc"] > 0.95
    assert two_sample_auc(dark[:3], bright[:3])["auc"] is None  # too few to test


def test_poisson_cutpaste_leaves_no_intensity_step_at_the_seam():
    from defectfill.data.sample import DefectSample
    from gan_baselines.cutpaste import CutPaste

    source = _cloth(1)
    source_mask = _square()
    source[source_mask] = 220  # a bright defect on the source cloth
    good, request = _cloth(2), _square()
    scores = {}
    for blend in ("alpha", "poisson"):
        result = CutPaste(blend=blend, feather=0.0, flip=False, rotate=False).fit(
            [DefectSample(source, source_mask, "stain")]).generate(good, request, defect_type="stain")
        out = result.candidates[0]
        assert np.array_equal(out[~request], good[~request])  # nothing outside the request changes
        scores[blend] = seam_statistics(out, request)["seam_ratio"]
    assert scores["poisson"] < 0.2 * scores["alpha"], scores
    # a request of 3 scattered pixels (OpenCV's clone refuses it) is alpha-blended, not an error
    tiny = np.zeros_like(request)
    tiny[5, [3, 20, 40]] = True
    out = CutPaste(blend="poisson").fit([DefectSample(source, source_mask, "stain")]).generate(
        good, tiny, defect_type="stain").candidates[0]
    assert np.array_equal(out[~tiny], good[~tiny])


def test_fusion_study_end_to_end_on_a_tiny_bench(tmp_path):
    from defectfill.bench.config import load_bench_config
    from defectfill.bench.run import run_bench

    config = load_bench_config(CONFIGS / "bench_micro.yaml", {"arms": ["real_only", "cutpaste", "cutpaste_poisson"],
                                                               "seeds": [0, 1]})
    run_bench(config, tmp_path / "bench", echo=lambda line: None)
    study = FusionStudyConfig(repeats=1, epochs=5)
    summary = run_fusion_study(tmp_path / "bench", tmp_path / "study", study, echo=lambda line: None)
    assert set(summary["arms"]) == {"cutpaste", "cutpaste_poisson"}
    for arm in summary["arms"].values():
        assert arm["seeds"] == [0, 1] and arm["seam_gap"]["n"] == 2
        assert arm["downstream_mean_f"]["mean"] is not None
    for name in ("results.json", "table.md", "report.html", "plots/fusion.png", "sheets/seams.png"):
        assert (tmp_path / "study" / name).is_file(), name
    assert "C2ST AUC" in (tmp_path / "study" / "table.md").read_text()
    parts = sorted(p.name for p in (tmp_path / "study" / "parts").iterdir())
    assert parts == ["seed-0-cutpaste.json", "seed-0-cutpaste_poisson.json", "seed-1-cutpaste.json",
                     "seed-1-cutpaste_poisson.json"]
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "study" / "parts").iterdir()}
    # the CLI resumes the same folder (configs/study_fusion.yaml differs only in cost: the parts are kept)
    from defectfill.cli import main as cli_main

    assert cli_main(["study", "fusion", "--run", str(tmp_path / "bench"), "--out", str(tmp_path / "study")]) == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "study" / "parts").iterdir()} == before  # resumed
    again = json.loads((tmp_path / "study" / "results.json").read_text())
    assert again["arms"] == json.loads(json.dumps(summary))["arms"]


def test_labels_study_end_to_end_on_a_tiny_bench(tmp_path):
    """Study 1 on a 1-seed micro bench: RT-DETR trained per labelling, fill ratios per type, the
    mask-aware scores, outputs written, resumed without retraining."""
    from defectfill.bench.config import load_bench_config
    from defectfill.bench.run import run_bench
    from defectfill.studies.labels import LabelsStudyConfig, run_labels_study

    config = load_bench_config(CONFIGS / "bench_micro.yaml", {"arms": ["cutpaste"], "seeds": [0]})
    run_bench(config, tmp_path / "bench", echo=lambda line: None)
    study = LabelsStudyConfig(modes=["component", "split"], epochs=1, split_max_aspect=2.0)
    summary = run_labels_study(tmp_path / "bench", tmp_path / "study", study, echo=lambda line: None)
    assert [(r["seed"], r["mode"]) for r in summary["runs"]] == [(0, "component"), (0, "split")]
    for run in summary["runs"]:
        assert 0.0 <= run["mAP50"] <= 1.0 and set(run["per_type"]) == {"stain", "hole"}
    fill = summary["fill_ratio"]["synthetic"]
    assert set(fill) == {"component", "split"} and set(fill["component"]) == {"stain", "hole"}
    for kind in ("stain", "hole"):  # splitting never makes boxes emptier
        assert fill["split"][kind]["median"] >= fill["component"][kind]["median"] - 1e-9
        assert 0 < fill["component"][kind]["median"] <= 1
    assert (tmp_path / "study" / "seed-0" / "cutpaste-split" / "data" / "recipe.json").is_file()
    assert "| split |" in (tmp_path / "study" / "table.md").read_text()
    assert (tmp_path / "study" / "report.html").is_file() and (tmp_path / "study" / "plots" / "labels.png").is_file()
    weights = tmp_path / "study" / "seed-0" / "cutpaste-split" / "rtdetr" / "weights" / "best.pt"
    before = weights.stat().st_mtime_ns
    again = run_labels_study(tmp_path / "bench", tmp_path / "study", study, echo=lambda line: None)
    assert weights.stat().st_mtime_ns == before and again["runs"] == summary["runs"]


def test_recall_difference_interval_on_hand_made_counts():
    from defectfill.studies.unknown import recall_difference

    rng = np.random.default_rng(0)
    truth = rng.integers(5, 20, (2, 12))
    base = np.stack([truth // 2, truth], -1)                    # recalls half of every mask
    same = recall_difference(base, base, num_resamples=500, level=0.95)
    assert same["diff"] == 0 and same["holds_zero"]
    better = recall_difference(np.stack([truth, truth], -1), base, num_resamples=500, level=0.95)
    assert better["diff"] == pytest.approx(1 - (truth // 2).sum() / truth.sum()) and not better["holds_zero"]
    assert better["low"] > 0 and better["num_images"] == 12 and better["num_seeds"] == 2


def test_unknown_study_end_to_end_on_a_tiny_bench(tmp_path):
    """Study 2 with the micro bench: hole held out of everything, then found (or not) on new renders."""
    import yaml

    from defectfill.studies.unknown import UnknownStudyConfig, run_unknown_study

    bench = yaml.safe_load((CONFIGS / "bench_micro.yaml").read_text())
    bench.update({"arms": ["real_only", "cutpaste"], "seeds": [0, 1]})
    bench["downstream"]["config"] = str(CONFIGS / "downstream_tiny.yaml")
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(bench))
    config = UnknownStudyConfig(bench=str(tmp_path / "bench.yaml"), held_out=["hole"], unknown_per_texture=3,
                                num_resamples=200)
    summary = run_unknown_study(tmp_path / "study", config, echo=lambda line: None)
    hole = summary["types"]["hole"]
    assert hole["known"] == ["stain"] and hole["images"] == 3 and hole["seeds"] == [0, 1]
    # nothing of the held-out type reached any training set
    recipe = json.loads((tmp_path / "study" / "without-hole" / "seed-0" / "arms" / "cutpaste" / "data" / "recipe.json").read_text())
    assert "hole" not in json.dumps(recipe["counts"])
    for arm in ("real_only", "cutpaste"):
        assert 0.0 <= hole["arms"][arm]["pixel_recall"]["mean"] <= 1.0
        assert len(hole["arms"][arm]["pixel_recall"]["per_seed"]) == 2
    assert "holds_zero" in hole["arms"]["cutpaste"]["vs_real_only"]
    assert hole["dfc_unknown_rate"] == {"held_out": None, "known_test": None}  # no dgt arm in this bench
    assert summary["answer"].endswith(".") and "cutpaste on hole" in summary["answer"]
    for name in ("results.json", "table.md", "report.html", "plots/unknown.png"):
        assert (tmp_path / "study" / name).is_file(), name


def test_study_cli_says_which_studies_take_a_run(tmp_path, capsys):
    from defectfill.cli import main as cli_main

    assert cli_main(["study", "unknown", "--run", str(tmp_path), "--out", str(tmp_path / "u")]) != 0
    assert "takes no --run" in capsys.readouterr().err
    assert cli_main(["study", "labels", "--out", str(tmp_path / "l")]) != 0
    assert "pass --run" in capsys.readouterr().err
    assert not (tmp_path / "u").exists() and not (tmp_path / "l").exists()  # nothing written
