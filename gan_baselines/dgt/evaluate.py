"""DFC's open-set labels on the regions a downstream segmenter predicted (`defectfill evaluate
--openset-model`): every connected component (8-connected, >= `min_area` px) of the segmenter's
defect pixels (any defect class) is classified by a trained DGT model's DFC + OpenMax as a known
type or "unknown defect", then matched to the ground truth (`defectfill.metrics.openset`).

The regions are the segmenter's, not DIS's: the question is how the product's detector output
would be labelled; DIS's own regions are what `defectfill openset` reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from defectfill.data.sample import DefectSample
from defectfill.masks import component_masks
from defectfill.metrics.openset import match_regions, openset_summary
from gan_baselines.dgt.model import DGT
from gan_baselines.dgt.openset import WeibullOpenSet, classify_regions

REGION_SOURCE = "connected components (8-connected) of the segmenter's predicted defect pixels, any class"


def evaluate_openset(model_dir: str | Path, test_samples: Sequence[DefectSample], predicted_maps: Sequence[np.ndarray],
                     min_area: int | None = None, min_overlap: float = 0.5,
                     device: str = "cpu") -> tuple[dict, list[dict]]:
    """(summary for results.json, one record per region). predicted_maps: (H, W) int class maps of the
    segmenter (0 = background), one per test sample, at the sample's size."""
    model_dir = Path(model_dir)
    model = DGT.from_pretrained(str(model_dir)).to(device).eval()
    openset = WeibullOpenSet.load(model_dir)
    min_area = openset.config.min_region_area if min_area is None else int(min_area)
    records = []
    for sample, predicted in zip(test_samples, predicted_maps, strict=True):
        regions = component_masks(np.asarray(predicted) > 0, min_area)
        labelled = classify_regions(model, openset, sample.image, regions)
        truths = match_regions(regions, sample.mask, sample.defect_type, min_overlap)
        records += [{"image": str(sample.source) if sample.source else None, "box": list(r.box), "label": r.label,
                     "closed_set_type": r.closed_set_type, "unknown_score": round(r.unknown_score, 4),
                     "truth": truth} for r, truth in zip(labelled, truths)]
    summary = openset_summary(records, model.defect_types)
    summary.update(model=str(model_dir), region_source=REGION_SOURCE, min_area=min_area, min_overlap=min_overlap,
                   unknown_threshold=openset.threshold)
    return summary, records
