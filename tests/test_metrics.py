"""Metrics on hand-made cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from defectfill.errors import DataError
from defectfill.metrics.detection import ImageBoxes, box_iou, coco_map, detection_scores, image_level_rates
from defectfill.metrics.generation import (
    defect_contrast,
    defect_crop,
    ic_lpips,
    inception_feature_extractor,
    kid,
    kid_from_features,
    lpips_network,
    polynomial_mmd2,
    random_conv_feature_extractor,
)
from defectfill.metrics.segmentation import f_measure, segmentation_scores

# --- pixel F-measure -------------------------------------------------------------------------

def test_f_measure_pooled_over_images_matches_hand_count():
    # class 1: image A has 2 true pixels, predicted 3 (2 right); image B has 2 true, predicted 0
    # pooled: TP 2, FP 1, FN 2 -> P 2/3, R 1/2, F = 2PR/(P+R) = 4/7
    target_a = np.array([[1, 1, 0], [0, 0, 0]])
    pred_a = np.array([[1, 1, 1], [0, 0, 0]])
    target_b = np.array([[0, 0, 0], [1, 1, 0]])
    pred_b = np.zeros((2, 3), int)
    scores = segmentation_scores([pred_a, pred_b], [target_a, target_b], ["stain", "hole"])
    stain = scores["per_class"]["stain"]
    assert (stain["tp"], stain["fp"], stain["fn"]) == (2, 1, 2)
    assert stain["precision"] == pytest.approx(2 / 3)
    assert stain["recall"] == pytest.approx(1 / 2)
    assert stain["f_measure"] == pytest.approx(4 / 7)
    # hole is absent from the ground truth and never predicted: n/a, not 0, and not in the mean
    assert scores["per_class"]["hole"]["f_measure"] is None
    assert scores["mean_f_measure"] == pytest.approx(4 / 7)
    assert "pixel-level" in scores["definition"]


def test_f_measure_edge_cases_never_divide_by_zero():
    assert f_measure(None, None) is None
    assert f_measure(None, 0.0) == 0.0  # present but never predicted
    assert f_measure(0.0, 0.0) == 0.0
    assert f_measure(1.0, 1.0) == 1.0
    # present class, never predicted; absent class predicted (false positives only): F n/a
    scores = segmentation_scores([np.array([[0, 2]])], [np.array([[1, 0]])], ["a", "b"])
    assert scores["per_class"]["a"] == {"precision": None, "recall": 0.0, "f_measure": 0.0, "tp": 0, "fp": 0, "fn": 1}
    assert scores["per_class"]["b"]["f_measure"] is None and scores["per_class"]["b"]["fp"] == 1
    assert scores["mean_f_measure"] == 0.0


def test_segmentation_scores_reject_bad_input():
    with pytest.raises(DataError, match="differs from ground-truth shape"):
        segmentation_scores([np.zeros((2, 2), int)], [np.zeros((3, 2), int)], ["a"])
    with pytest.raises(DataError, match="outside 0..1"):
        segmentation_scores([np.full((2, 2), 5)], [np.zeros((2, 2), int)], ["a"])


# --- boxes -------------------------------------------------------------------------------------

def _gt():
    return [
        ImageBoxes([[10, 10, 30, 30]], [0]),
        ImageBoxes([[50, 50, 70, 90], [0, 0, 10, 10]], [1, 0]),
        ImageBoxes(np.zeros((0, 4)), []),
    ]


SIZES = [(100, 100)] * 3


def test_box_iou_exclusive_ends():
    assert box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10]])[0, 0] == pytest.approx(50 / 150)
    assert box_iou([[0, 0, 10, 10]], [[10, 0, 20, 10]])[0, 0] == 0.0  # touching, no overlap


def test_map_is_one_for_perfect_predictions():
    predictions = [ImageBoxes(g.boxes, g.labels, np.linspace(0.9, 0.8, len(g.boxes))) for g in _gt()]
    result = coco_map(_gt(), predictions, SIZES, ["a", "b"])
    assert result["mAP50"] == pytest.approx(1.0)
    assert result["mAP50_95"] == pytest.approx(1.0)


def test_map_of_a_constructed_case():
    # class a: 2 ground-truth boxes; ranked predictions FP (0.95), TP (0.9), FP (0.7).
    # Interpolated precision is 0.5 for recall 0..0.5 and 0 beyond, so the 101-point AP is
    # 51 * 0.5 / 101; class b is found exactly (AP 1). Exact boxes: AP equal at every IoU.
    predictions = [
        ImageBoxes([[10, 10, 30, 30]], [0], [0.9]),
        ImageBoxes([[50, 50, 70, 90], [40, 40, 60, 60]], [1, 0], [0.8, 0.7]),
        ImageBoxes([[1, 1, 5, 5]], [0], [0.95]),
    ]
    expected = (51 * 0.5 / 101 + 1.0) / 2
    result = coco_map(_gt(), predictions, SIZES, ["a", "b"])
    assert result["mAP50"] == pytest.approx(expected, abs=1e-6)
    assert result["mAP50_95"] == pytest.approx(expected, abs=1e-6)
    curve = result["pr_curve_iou50"]["a"]
    assert curve[50] == pytest.approx(0.5) and curve[51] == 0.0


def test_map_without_predictions_or_ground_truth():
    empty = [ImageBoxes(np.zeros((0, 4)), [], []) for _ in range(3)]
    assert coco_map(_gt(), empty, SIZES, ["a", "b"])["mAP50"] == 0.0
    assert coco_map(empty, empty, SIZES, ["a", "b"])["mAP50"] is None


def test_image_level_rates():
    predictions = [
        ImageBoxes([[10, 10, 30, 30]], [1], [0.9]),  # right place, wrong class: still detected (class ignored)
        ImageBoxes([[50, 50, 70, 90]], [1], [0.3]),  # below the score threshold
        ImageBoxes([[0, 0, 5, 5]], [0], [0.6]),  # false alarm on the good image
    ]
    rates = image_level_rates(_gt(), predictions, score_threshold=0.5)
    assert rates["detection_rate"] == pytest.approx(1 / 2)
    assert rates["false_alarm_rate"] == 1.0
    assert detection_scores(_gt(), predictions, SIZES, ["a", "b"])["detection_rate"] == pytest.approx(1 / 2)


# --- KID ---------------------------------------------------------------------------------------

def test_polynomial_mmd2_matches_the_unbiased_formula():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))

    def k(a, b):
        return (a @ b / 3 + 1) ** 3

    m = 4
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    assert polynomial_mmd2(x, y) == pytest.approx(xx + yy - 2 * xy)


def test_kid_near_zero_for_one_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(300, 16))
    same = rng.normal(size=(300, 16))
    shifted = rng.normal(size=(300, 16)) + 1.0
    near = kid_from_features(real, same, num_subsets=20, subset_size=100)
    far = kid_from_features(real, shifted, num_subsets=20, subset_size=100)
    assert abs(near["kid_x1000"]) < 3 * near["kid_std_x1000"] + 1e-9
    assert far["kid_x1000"] > 10 * max(abs(near["kid_x1000"]), near["kid_std_x1000"])
    with pytest.raises(DataError, match="subsets of >= 2"):
        kid_from_features(real[:1], same, num_subsets=2)


def test_kid_on_images_names_its_feature_extractor():
    rng = np.random.default_rng(2)
    crops = [rng.integers(60, 120, (24, 24, 3), dtype=np.uint8) for _ in range(12)]
    brighter = [np.clip(c.astype(int) + 90, 0, 255).astype(np.uint8) for c in crops]
    extractor = random_conv_feature_extractor(seed=0, input_size=32)
    same = kid(crops[:6], crops[6:], extractor, num_subsets=10)
    shifted = kid(crops[:6], brighter[6:], extractor, num_subsets=10)
    assert "offline substitute" in same["feature_extractor"]
    assert shifted["kid_x1000"] > same["kid_x1000"] + 1.0


def test_inception_without_cached_weights_is_a_named_substitute():
    # conftest points TORCH_HOME to an empty temporary folder: no ImageNet weights there
    extractor = inception_feature_extractor()
    assert "random-init inception_v3" in extractor.name and "not comparable" in extractor.name
    from defectfill.errors import ModelError

    with pytest.raises(ModelError, match="place inception_v3_google"):
        inception_feature_extractor(allow_substitute=False)


# --- IC-LPIPS ----------------------------------------------------------------------------------

def test_ic_lpips_clusters_and_drops_singletons():
    rng = np.random.default_rng(3)
    ref_a = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    ref_b = np.full((32, 32, 3), 128, np.uint8)
    network = lpips_network("alex", input_size=32)  # alex: the cheapest LPIPS to build on CPU
    assert "random-init backbone" in network.name
    # two copies of ref_a (identical: LPIPS 0) and one of ref_b (a singleton cluster: dropped)
    result = ic_lpips([ref_a, ref_a.copy(), ref_b], [ref_a, ref_b], network)
    assert result["cluster_sizes"] == [2, 1]
    assert result["num_clusters_used"] == 1
    assert result["ic_lpips"] == pytest.approx(0.0, abs=1e-6)
    noisy = [np.clip(ref_a.astype(int) + rng.integers(-60, 60, ref_a.shape), 0, 255).astype(np.uint8) for _ in range(3)]
    diverse = ic_lpips(noisy, [ref_a, ref_b], network)
    assert diverse["ic_lpips"] > 0.0
    assert diverse["lpips_network"] == network.name


def test_defect_crop_is_square_around_the_mask():
    image = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
    mask = np.zeros((64, 64), bool)
    mask[30:34, 10:30] = True
    crop = defect_crop(image, mask, margin=0.25)
    assert crop.shape == (30, 30, 3)  # longest side 20, grown by 2 * 25 %
    assert defect_crop(image, np.zeros((64, 64), bool)) is None


def test_defect_contrast_is_signed_and_uses_only_the_ring():
    image = np.full((40, 40, 3), 120, np.uint8)
    image[:5] = 0  # far from the defect: outside the ring, must not count
    mask = np.zeros((40, 40), bool)
    mask[16:24, 16:24] = True
    dark = image.copy()
    dark[mask] = 80
    assert defect_contrast(dark, mask) == pytest.approx(-40.0)
    light = image.copy()
    light[mask] = 200
    assert defect_contrast(light, mask) == pytest.approx(80.0)
    assert defect_contrast(image[..., 0], mask) == pytest.approx(0.0)  # greyscale input
    assert defect_contrast(image, np.zeros((40, 40), bool)) is None
    assert defect_contrast(image, np.ones((40, 40), bool)) is None  # no ring left
