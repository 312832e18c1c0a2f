"""How sure a difference between two arms is: paired bootstrap intervals over test images.

Two arms are scored on the same test images, each with several seeds. Per arm, per test image and
per defect class the pixel counts (TP, FP, FN) of every seed are summed (the seeds pooled per image),
so an image's contribution carries the spread between seeds too. One bootstrap replicate draws the
test images with replacement (the same draw for both arms: the comparison is paired), sums their
counts, and computes each arm's mean pixel F over the defect classes (`metrics.segmentation`'s
pooled definition); the replicate's difference is F(arm) − F(baseline). The interval is the
percentile interval of the differences (95 % by default):

    diff = F_arm(all images) − F_base(all images),   [q_2.5, q_97.5] of the replicates' differences

A difference whose interval holds 0 ranks nothing: "no ranking".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from defectfill.errors import DataError

BOOTSTRAP_DEFINITION = ("paired bootstrap over test images (seeds pooled per image: pixel counts summed over "
                        "seeds), mean pixel F over defect classes, percentile interval")


def mean_f_from_counts(counts: np.ndarray) -> np.ndarray:
    """counts (..., K, 3) as TP, FP, FN per defect class -> (...) mean F over the classes whose
    recall is defined (TP + FN > 0); NaN when no class has one. Precision undefined counts as 0."""
    tp, fp, fn = counts[..., 0].astype(float), counts[..., 1].astype(float), counts[..., 2].astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        f = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    f = np.where(np.isnan(recall), np.nan, f)
    defined = ~np.isnan(f)
    total = np.where(defined, f, 0.0).sum(-1)
    count = defined.sum(-1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def stack_seed_counts(per_seed: Sequence[Any]) -> np.ndarray:
    """Per-seed per-image counts ([N][K][3] each) -> (S, N, K, 3) int64; all seeds on the same images."""
    arrays = [np.asarray(c, dtype=np.int64) for c in per_seed]
    if not arrays:
        raise DataError("no per-image counts to compare: run the arms first")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or arrays[0].ndim != 3 or arrays[0].shape[-1] != 3:
        raise DataError(f"per-image counts of the seeds differ in shape {sorted(shapes)}; every seed must be scored "
                        "on the same test images and classes")
    return np.stack(arrays)


def paired_bootstrap(arm: np.ndarray, baseline: np.ndarray, *, num_resamples: int = 2000, level: float = 0.95,
                     seed: int = 0) -> dict[str, Any]:
    """The difference of mean pixel F (arm − baseline) with its paired bootstrap interval.

    arm, baseline: (S, N, K, 3) or (N, K, 3) per-image counts on the same N test images.
    Returns {"diff", "low", "high", "level", "holds_zero", "num_images", "num_seeds", "arm_f", "baseline_f"}.
    """
    arm, baseline = np.asarray(arm), np.asarray(baseline)
    if arm.ndim == 3:
        arm = arm[None]
    if baseline.ndim == 3:
        baseline = baseline[None]
    if arm.shape[1:] != baseline.shape[1:]:
        raise DataError(f"the two arms were scored on different test sets: {arm.shape[1:]} vs {baseline.shape[1:]}")
    if not 0 < level < 1 or num_resamples < 100:
        raise DataError(f"level must lie in (0, 1) and num_resamples >= 100, found {level}, {num_resamples}")
    pooled_arm, pooled_base = arm.sum(0), baseline.sum(0)  # (N, K, 3): seeds pooled per image
    n = pooled_arm.shape[0]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(num_resamples, n))
    counts = np.stack([np.bincount(row, minlength=n) for row in draws])  # (B, N) how often each image was drawn
    arm_f = mean_f_from_counts(np.einsum("bn,nkc->bkc", counts, pooled_arm))
    base_f = mean_f_from_counts(np.einsum("bn,nkc->bkc", counts, pooled_base))
    diffs = arm_f - base_f
    diffs = diffs[~np.isnan(diffs)]
    point_arm = float(mean_f_from_counts(pooled_arm.sum(0)))
    point_base = float(mean_f_from_counts(pooled_base.sum(0)))
    low, high = (np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2]) if diffs.size else (np.nan, np.nan))
    return {"diff": point_arm - point_base, "low": float(low), "high": float(high), "level": level,
            "holds_zero": bool(not low > 0 and not high < 0), "num_images": int(n), "num_seeds": int(arm.shape[0]),
            "arm_f": point_arm, "baseline_f": point_base, "num_resamples": num_resamples,
            "definition": BOOTSTRAP_DEFINITION}
