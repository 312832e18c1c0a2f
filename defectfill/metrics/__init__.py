"""Metrics: pixel F-measure (segmentation), box mAP and image-level rates (detection), KID and
IC-LPIPS (generation). Each module's docstring states its definitions."""

from defectfill.metrics.detection import ImageBoxes, box_iou, coco_map, detection_scores, image_level_rates
from defectfill.metrics.segmentation import PixelCounts, f_measure, scores_from_counts, segmentation_scores

__all__ = [
    "ImageBoxes",
    "PixelCounts",
    "box_iou",
    "coco_map",
    "detection_scores",
    "f_measure",
    "image_level_rates",
    "scores_from_counts",
    "segmentation_scores",
]
