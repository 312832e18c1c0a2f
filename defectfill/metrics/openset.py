"""Open-set labels of predicted defect regions against the ground truth (what `defectfill evaluate
--openset-model` reports beside F and mAP).

A predicted region carries a label, a known defect type or `UNKNOWN`, and the classifier's closed-set
type (its argmax, whatever the open-set decision). Matching, per test image (one defect type per
image, its mask split into 8-connected ground-truth defects):

    a region P matches the ground-truth defect G of largest overlap when the overlap coefficient
    |P ∩ G| / min(|P|, |G|) >= min_overlap (default 0.5); otherwise it matches nothing.

The overlap coefficient, not IoU, so that a region that over- or under-segments a defect still
matches it. Summary (`openset_summary`), over all regions of all images:
- counts per label (known types and "unknown defect"), for all regions and for unmatched ones;
- on regions matched to a defect of a *known* type: closed-set accuracy (closed-set type == its type),
  label accuracy (label == its type; "unknown defect" counts as wrong) and the rate flagged unknown;
- on regions matched to a defect of a type *not* among the known types: the rate flagged unknown;
- the label counts per ground-truth type (a confusion table).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from defectfill.masks import component_masks

UNKNOWN = "unknown defect"


def match_regions(regions: Sequence[np.ndarray], truth_mask: np.ndarray, truth_type: str,
                  min_overlap: float = 0.5) -> list[str | None]:
    """For each predicted region (H, W) bool: `truth_type` when it matches a ground-truth defect of
    `truth_mask` (rule in the module docstring), else None. A good image (empty mask) matches nothing."""
    truths = component_masks(np.asarray(truth_mask, bool)) if truth_type != "good" else []
    out: list[str | None] = []
    for region in regions:
        region = np.asarray(region, bool)
        best = 0.0
        for truth in truths:
            inter = int(np.logical_and(region, truth).sum())
            if inter:
                best = max(best, inter / min(int(region.sum()), int(truth.sum())))
        out.append(truth_type if truths and best >= min_overlap else None)
    return out


def _rate(hits: int, n: int) -> float | None:
    return hits / n if n else None


def openset_summary(records: Iterable[dict], known_types: Sequence[str]) -> dict:
    """records: one per predicted region, {"label", "closed_set_type", "truth" (a type or None)}."""
    records = list(records)
    known = list(known_types)
    order = [*known, UNKNOWN]

    def counts(rs: list[dict]) -> dict[str, int]:
        c = Counter(r["label"] for r in rs)
        return {k: int(c.get(k, 0)) for k in order}

    matched_known = [r for r in records if r["truth"] is not None and r["truth"] in known]
    matched_novel = [r for r in records if r["truth"] is not None and r["truth"] not in known]
    unmatched = [r for r in records if r["truth"] is None]
    by_truth = {t: counts([r for r in records if r["truth"] == t])
                for t in sorted({r["truth"] for r in records if r["truth"] is not None})}
    return {
        "known_types": known,
        "regions": len(records),
        "counts": counts(records),
        "unmatched_regions": len(unmatched),
        "unmatched_counts": counts(unmatched),
        "matched_known_regions": len(matched_known),
        "closed_set_accuracy": _rate(sum(r["closed_set_type"] == r["truth"] for r in matched_known), len(matched_known)),
        "label_accuracy": _rate(sum(r["label"] == r["truth"] for r in matched_known), len(matched_known)),
        "known_flagged_unknown": _rate(sum(r["label"] == UNKNOWN for r in matched_known), len(matched_known)),
        "matched_novel_regions": len(matched_novel),
        "novel_types": sorted({r["truth"] for r in matched_novel}),
        "novel_flagged_unknown": _rate(sum(r["label"] == UNKNOWN for r in matched_novel), len(matched_novel)),
        "by_truth": by_truth,
    }
