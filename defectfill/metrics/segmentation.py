"""Pixel-level segmentation metrics: per-class precision, recall and F-measure.

Definitions (pixel level, pooled over the whole test set per class c):

    TP_c = #pixels with prediction c and ground truth c      (summed over all test images)
    FP_c = #pixels with prediction c and ground truth != c
    FN_c = #pixels with prediction != c and ground truth c
    P_c = TP_c / (TP_c + FP_c)      R_c = TP_c / (TP_c + FN_c)      F_c = 2 P_c R_c / (P_c + R_c)

The mean F-measure is the plain mean of F_c over the defect classes that have a value.
The multistage-GAN paper (Liu et al., IEEE TIP 2020) reports an "F-measure" per defect class but
its exact definition (pixel vs region level, pooled vs per image) was not retrievable here; this
module uses the pooled pixel-level definition above and says so in every result
(`definition` field).

Edge cases, never a division by zero:
- a class absent from the ground truth of the whole test set reports P, R, F = None ("n/a"),
  because recall is undefined and a zero would be a made-up number;
- a class present but never predicted has P = None (no predictions), R = 0 and F = 0;
- P + R = 0 gives F = 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from defectfill.errors import DataError

F_MEASURE_DEFINITION = "pixel-level F = 2PR/(P+R), TP/FP/FN pooled over the test set per class"


@dataclass
class PixelCounts:
    """Running TP / FP / FN pixel counts per class index (0 = background)."""

    num_classes: int
    tp: np.ndarray = field(init=False)
    fp: np.ndarray = field(init=False)
    fn: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.tp = np.zeros(self.num_classes, dtype=np.int64)
        self.fp = np.zeros(self.num_classes, dtype=np.int64)
        self.fn = np.zeros(self.num_classes, dtype=np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add one image: `pred`, `target` are (H, W) integer class maps of the same shape."""
        pred = np.asarray(pred)
        target = np.asarray(target)
        if pred.shape != target.shape:
            raise DataError(
                f"prediction shape {pred.shape} differs from ground-truth shape {target.shape}; "
                "resize the prediction to the ground truth before scoring"
            )
        for name, arr in (("prediction", pred), ("ground truth", target)):
            if arr.size and (arr.min() < 0 or arr.max() >= self.num_classes):
                raise DataError(
                    f"{name} holds class index {int(arr.max())} outside 0..{self.num_classes - 1}; "
                    "check the class list given to the metric"
                )
        # confusion matrix in one bincount: rows = truth, columns = prediction
        k = self.num_classes
        confusion = np.bincount(target.ravel().astype(np.int64) * k + pred.ravel().astype(np.int64), minlength=k * k)
        confusion = confusion.reshape(k, k)
        tp = np.diag(confusion)
        self.tp += tp
        self.fp += confusion.sum(axis=0) - tp
        self.fn += confusion.sum(axis=1) - tp


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else float(num) / float(den)


def f_measure(precision: float | None, recall: float | None) -> float | None:
    """F = 2PR/(P+R); None when recall is undefined; 0 when P + R = 0 or P is undefined."""
    if recall is None:
        return None
    p = 0.0 if precision is None else precision
    return 0.0 if p + recall == 0 else 2.0 * p * recall / (p + recall)


def scores_from_counts(counts: PixelCounts, class_names: Sequence[str]) -> dict:
    """Per-class precision / recall / F (None = n/a) and the mean F over defect classes.

    class_names: the names of classes 1..K (index 0 is background and is not scored).
    """
    if len(class_names) != counts.num_classes - 1:
        raise DataError(
            f"{len(class_names)} class names given for {counts.num_classes - 1} defect classes; "
            "pass one name per defect class (background excluded)"
        )
    per_class = {}
    for index, name in enumerate(class_names, start=1):
        tp, fp, fn = int(counts.tp[index]), int(counts.fp[index]), int(counts.fn[index])
        precision = _ratio(tp, tp + fp)
        recall = _ratio(tp, tp + fn)
        per_class[name] = {
            "precision": precision if recall is not None else None,
            "recall": recall,
            "f_measure": f_measure(precision, recall),
            "tp": tp,
            "fp": fp,
            "fn": fn,
        }
    values = [v["f_measure"] for v in per_class.values() if v["f_measure"] is not None]
    return {
        "per_class": per_class,
        "mean_f_measure": float(np.mean(values)) if values else None,
        "definition": F_MEASURE_DEFINITION,
    }


def segmentation_scores(
    predictions: Iterable[np.ndarray], targets: Iterable[np.ndarray], class_names: Sequence[str]
) -> dict:
    """Score (H, W) class-index maps against ground truth; see the module docstring.

    Also returns `per_image_counts`: per test image and defect class [TP, FP, FN] (N x K x 3), what
    `defectfill.metrics.intervals` resamples for paired bootstrap intervals between arms."""
    counts = PixelCounts(len(class_names) + 1)
    per_image = []
    for pred, target in zip(predictions, targets, strict=True):
        single = PixelCounts(len(class_names) + 1)
        single.update(pred, target)
        counts.tp += single.tp
        counts.fp += single.fp
        counts.fn += single.fn
        per_image.append(np.stack([single.tp[1:], single.fp[1:], single.fn[1:]], axis=-1).tolist())
    return {**scores_from_counts(counts, class_names), "per_image_counts": per_image}
