"""Paired bootstrap intervals between arms (metrics.intervals) and the verdict built on them."""

from __future__ import annotations

import numpy as np
import pytest

from defectfill.errors import DataError
from defectfill.metrics.intervals import mean_f_from_counts, paired_bootstrap
from defectfill.metrics.segmentation import segmentation_scores
from defectfill.report.seeds import compare_arms


def test_mean_f_from_counts_matches_the_pooled_definition():
    # class 1: TP 6, FP 2, FN 6 -> P 0.75, R 0.5, F 0.6; class 2 absent (no TP, no FN): not averaged
    counts = np.array([[6, 2, 6], [0, 3, 0]])
    assert mean_f_from_counts(counts) == pytest.approx(0.6)
    assert mean_f_from_counts(np.array([[0, 0, 4]])) == 0.0  # present, never predicted: F 0
    assert np.isnan(mean_f_from_counts(np.array([[0, 5, 0]])))  # no class present: undefined


def test_per_image_counts_sum_to_the_pooled_counts():
    rng = np.random.default_rng(0)
    preds = [rng.integers(0, 3, (8, 8)) for _ in range(4)]
    targets = [rng.integers(0, 3, (8, 8)) for _ in range(4)]
    scores = segmentation_scores(preds, targets, ["a", "b"])
    per_image = np.asarray(scores["per_image_counts"])
    assert per_image.shape == (4, 2, 3)
    assert per_image[:, 0].sum(0).tolist() == [scores["per_class"]["a"][k] for k in ("tp", "fp", "fn")]


def _images(n, tp, fp, fn):
    return np.tile(np.array([[tp, fp, fn]]), (n, 1, 1))


def test_identical_arms_hold_zero_and_a_clear_gap_does_not():
    rng = np.random.default_rng(1)
    base = np.stack([_images(30, 0, 0, 10) + rng.integers(0, 3, (30, 1, 3)) for _ in range(2)])  # (S, N, K, 3)
    same = paired_bootstrap(base, base.copy(), seed=0)
    assert same["diff"] == 0.0 and same["low"] == 0.0 and same["high"] == 0.0 and same["holds_zero"]
    better = base.copy()
    better[..., 0] += 8  # many more true positives on every image
    gap = paired_bootstrap(better, base, seed=0)
    assert gap["diff"] > 0.3 and gap["low"] > 0 and not gap["holds_zero"] and gap["num_seeds"] == 2
    # a gap carried by one image out of 30 is noise
    lucky = base.copy()
    lucky[:, 0, 0, 0] += 40
    noise = paired_bootstrap(lucky, base, seed=0)
    assert noise["diff"] > 0 and noise["holds_zero"]
    with pytest.raises(DataError, match="different test sets"):
        paired_bootstrap(base[:, :10], base)


def test_verdict_never_names_a_winner_inside_the_noise():
    def result(arm, counts):
        return {"arm": arm, "deeplab": {"mean_f_measure": float(mean_f_from_counts(np.asarray(counts).sum(0))),
                                        "per_image_counts": counts}}

    flat = _images(20, 1, 1, 9).tolist()
    strong = _images(20, 9, 1, 1).tolist()
    per_seed = {s: [result("real_only", flat), result("cutpaste", strong), result("defectfill", strong)] for s in (0, 1)}
    out = compare_arms(per_seed)
    by_pair = {(c["arm"], c["baseline"]): c for c in out["comparisons"]}
    assert not by_pair[("defectfill", "real_only")]["holds_zero"]
    assert by_pair[("defectfill", "cutpaste")]["holds_zero"]
    assert "defectfill ranks above real_only" in out["verdict"]
    assert "defectfill vs cutpaste" in out["verdict"] and "no ranking" in out["verdict"]
    assert "won" not in out["verdict"]
