"""Box detection metrics: COCO mAP50 / mAP50-95 (through faster_coco_eval) and image-level rates.

mAP is computed by faster_coco_eval's COCO-style evaluator (101-point interpolated AP, averaged
over classes; mAP50-95 averaged over IoU 0.50:0.05:0.95), not by our own code. Boxes at this API
are pixel `x0, y0, x1, y1` with exclusive ends, so a box's COCO width is `x1 - x0`.

Image-level rates (own code, simple counting, at score threshold t and IoU 0.5, class ignored):
    detection rate   = #defective images with >= 1 prediction (score >= t) overlapping one of its
                       ground-truth boxes at IoU >= 0.5  /  #defective images
    false-alarm rate = #good images (no ground-truth box) with >= 1 prediction (score >= t)
                       /  #good images
Each is None when its denominator is 0.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from defectfill.errors import DataError


@dataclass
class ImageBoxes:
    """Boxes of one image: (N, 4) x0, y0, x1, y1 (exclusive), (N,) class indices 0..K-1, (N,) scores."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
            if len(self.scores) != len(self.boxes):
                raise DataError(f"{len(self.boxes)} boxes but {len(self.scores)} scores; pass one score per box")
        if len(self.labels) != len(self.boxes):
            raise DataError(f"{len(self.boxes)} boxes but {len(self.labels)} labels; pass one label per box")


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of x0, y0, x1, y1 boxes with exclusive ends."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _coco_dicts(
    ground_truth: Sequence[ImageBoxes],
    predictions: Sequence[ImageBoxes],
    image_sizes: Sequence[tuple[int, int]],
    class_names: Sequence[str],
) -> tuple[dict, list[dict]]:
    images, annotations, results = [], [], []
    for image_id, (gt, pred, (height, width)) in enumerate(zip(ground_truth, predictions, image_sizes), start=1):
        images.append({"id": image_id, "width": int(width), "height": int(height), "file_name": f"{image_id}.png"})
        for box, label in zip(gt.boxes, gt.labels):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label) + 1,  # COCO ids start at 1
                    "bbox": [float(box[0]), float(box[1]), w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        scores = pred.scores if pred.scores is not None else np.ones(len(pred.boxes))
        for box, label, score in zip(pred.boxes, pred.labels, scores):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(label) + 1,
                    "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                    "score": float(score),
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def coco_map(
    ground_truth: Sequence[ImageBoxes],
    predictions: Sequence[ImageBoxes],
    image_sizes: Sequence[tuple[int, int]],
    class_names: Sequence[str],
) -> dict:
    """COCO box mAP50 and mAP50-95 (faster_coco_eval); None where no ground-truth box exists."""
    from faster_coco_eval import COCO, COCOeval_faster

    if not (len(ground_truth) == len(predictions) == len(image_sizes)):
        raise DataError(
            f"{len(ground_truth)} ground-truth images, {len(predictions)} prediction lists and "
            f"{len(image_sizes)} sizes; pass one of each per test image, in the same order"
        )
    gt_dict, results = _coco_dicts(ground_truth, predictions, image_sizes, class_names)
    if not gt_dict["annotations"]:
        return {"mAP50": None, "mAP50_95": None, "evaluator": "faster_coco_eval"}
    if not results:  # nothing predicted at all: every AP is 0 by definition
        return {"mAP50": 0.0, "mAP50_95": 0.0, "evaluator": "faster_coco_eval"}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_dict)
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval_faster(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    # COCO reports -1 where a quantity is undefined; map to 0 (ground truth exists, so AP is 0)
    map50_95, map50 = (max(float(stats[0]), 0.0), max(float(stats[1]), 0.0))
    # interpolated precision at the 101 recall points, IoU 0.5, all areas, 100 detections;
    # -1 (class without ground truth) -> None
    precision = np.asarray(evaluator.eval["precision"])[0, :, :, 0, -1]
    pr_curves = {
        name: (None if (precision[:, k] < 0).all() else np.clip(precision[:, k], 0, None).round(4).tolist())
        for k, name in enumerate(class_names)
    }
    return {"mAP50": map50, "mAP50_95": map50_95, "evaluator": "faster_coco_eval", "pr_curve_iou50": pr_curves}


def image_level_rates(
    ground_truth: Sequence[ImageBoxes],
    predictions: Sequence[ImageBoxes],
    score_threshold: float = 0.5,
    iou_threshold: float = 0.5,
) -> dict:
    """Image-level detection rate and false-alarm rate; see the module docstring."""
    detected = defective = alarms = good = 0
    for gt, pred in zip(ground_truth, predictions, strict=True):
        keep = np.ones(len(pred.boxes), bool) if pred.scores is None else pred.scores >= score_threshold
        boxes = pred.boxes[keep]
        if len(gt.boxes):
            defective += 1
            if len(boxes) and (box_iou(gt.boxes, boxes) >= iou_threshold).any():
                detected += 1
        else:
            good += 1
            alarms += int(len(boxes) > 0)
    return {
        "detection_rate": detected / defective if defective else None,
        "false_alarm_rate": alarms / good if good else None,
        "score_threshold": score_threshold,
        "iou_threshold": iou_threshold,
    }


def mask_coverage(masks: Sequence[np.ndarray], predictions: Sequence[ImageBoxes], score_threshold: float = 0.5) -> dict:
    """Box predictions scored against the defect *masks*, favouring no box labelling:

        pixel_recall  = |M ∩ U| / |M|,   box_precision = |M ∩ U| / |U|,

    summed over the images, M the true defect pixels, U the union of the predicted boxes with a
    score >= `score_threshold` (None where a denominator is 0)."""
    from defectfill.masks import boxes_to_mask

    covered = defect = boxed = 0
    for mask, pred in zip(masks, predictions, strict=True):
        mask = np.asarray(mask, bool)
        keep = np.ones(len(pred.boxes), bool) if pred.scores is None else pred.scores >= score_threshold
        union = boxes_to_mask(pred.boxes[keep].round().astype(np.int64), mask.shape)
        covered += int((mask & union).sum())
        defect += int(mask.sum())
        boxed += int(union.sum())
    return {"pixel_recall": covered / defect if defect else None, "box_precision": covered / boxed if boxed else None,
            "coverage_score_threshold": score_threshold}


def detection_scores(
    ground_truth: Sequence[ImageBoxes],
    predictions: Sequence[ImageBoxes],
    image_sizes: Sequence[tuple[int, int]],
    class_names: Sequence[str],
    score_threshold: float = 0.5,
) -> dict:
    """mAP50, mAP50-95 and the image-level rates in one dict."""
    result = coco_map(ground_truth, predictions, image_sizes, class_names)
    result.update(image_level_rates(ground_truth, predictions, score_threshold))
    return result
