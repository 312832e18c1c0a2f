"""Box labels from masks (study 1, box-label noise): one per component, per instance, split long
components; fill ratios; the mask-aware coverage score; the labelling reaches the assembled set."""

from __future__ import annotations

import numpy as np
import pytest

from defectfill.data.sample import DefectSample
from defectfill.downstream.assemble import assemble
from defectfill.downstream.config import AssembleConfig
from defectfill.errors import DataError
from defectfill.masks import fill_ratios, label_boxes
from defectfill.metrics.detection import ImageBoxes, mask_coverage


def _yarn() -> np.ndarray:
    """A broken yarn: a diagonal 2-px line 40 px long, in two pieces 3 px apart, and a round spot."""
    mask = np.zeros((64, 64), bool)
    for t in range(40):
        if 18 <= t < 21:
            continue
        mask[10 + t, 5 + t // 4 : 7 + t // 4] = True
    yy, xx = np.mgrid[:64, :64]
    mask |= (yy - 50) ** 2 + (xx - 50) ** 2 <= 9
    return mask


def test_component_instance_and_split_boxes():
    mask = _yarn()
    component = label_boxes(mask, "component")
    assert component.tolist() == [[5, 10, 11, 28], [10, 31, 16, 50], [47, 47, 54, 54]]
    # the two yarn pieces (3 px apart) merge into one instance; the spot 20+ px away stays apart
    assert label_boxes(mask, "instance", instance_gap=8).tolist() == [[5, 10, 16, 50], [47, 47, 54, 54]]
    assert label_boxes(mask, "instance", instance_gap=2).tolist() == component.tolist()
    split = label_boxes(mask, "split", max_aspect=2.0)
    assert len(split) > len(component)
    for x0, y0, x1, y1 in split:  # every piece is squarer and still tight on mask pixels
        assert max(x1 - x0, y1 - y0) / min(x1 - x0, y1 - y0) <= 2.0
        assert mask[y0:y1, x0:x1].any()
    covered = np.zeros_like(mask)
    for x0, y0, x1, y1 in split:
        covered[y0:y1, x0:x1] = True
    assert (mask <= covered).all()  # no defect pixel lost by splitting
    with pytest.raises(DataError, match="component, instance or split"):
        label_boxes(mask, "polygon")


def test_fill_ratio_is_the_defect_share_of_each_box():
    mask = _yarn()
    component = label_boxes(mask, "component")
    ratios = fill_ratios(mask, component)
    x0, y0, x1, y1 = component[0]
    assert ratios[0] == pytest.approx(mask[y0:y1, x0:x1].sum() / ((x1 - x0) * (y1 - y0)))
    assert ratios[2] == pytest.approx(29 / 49)  # the disc of radius 3 in its 7x7 box
    assert fill_ratios(mask, label_boxes(mask, "instance"))[0] < ratios[:2].min()  # merging adds cloth
    assert fill_ratios(mask, label_boxes(mask, "split", max_aspect=2.0)).mean() > ratios[:2].mean()


def test_mask_coverage_counts_pixels_not_boxes():
    mask = np.zeros((10, 10), bool)
    mask[2:4, 2:8] = True  # 12 defect pixels
    boxes = ImageBoxes([[2, 2, 5, 4], [0, 8, 2, 10], [6, 2, 8, 4]], [0, 0, 0], [0.9, 0.9, 0.2])
    scores = mask_coverage([mask], [boxes], score_threshold=0.5)
    assert scores["pixel_recall"] == pytest.approx(6 / 12)   # the low-score box does not count
    assert scores["box_precision"] == pytest.approx(6 / 10)  # 6 + 4 px boxed, 6 of them defect
    assert mask_coverage([np.zeros((4, 4), bool)], [ImageBoxes(np.zeros((0, 4)), [])])["pixel_recall"] is None


def test_the_assembled_set_carries_the_chosen_labelling(tmp_path):
    image = np.full((64, 64, 3), 128, np.uint8)
    sample = DefectSample(image, _yarn(), "broken_end")
    for mode, count in (("component", 3), ("instance", 2)):
        data = assemble([sample], [], tmp_path / mode, ["broken_end"], AssembleConfig(boxes=mode))
        labels = (tmp_path / mode / "labels" / "train").iterdir()
        assert sum(len(p.read_text().splitlines()) for p in labels) == count
        assert data.recipe["config"]["boxes"] == mode
