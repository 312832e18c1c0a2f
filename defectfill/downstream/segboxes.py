"""Boxes from the segmenter: the box detector that learns on a CPU (model name `segboxes`).

RT-DETR from random init stays near mAP 0 on a CPU budget (no ImageNet weights offline), while
the small U-Net segmenter learns real stains from a dozen images. This detector has no weights of
its own: each connected component of the segmenter's arg-max class map is a box,

    box_k   = the enclosing rectangle of component k (x0, y0, x1, y1, exclusive),
    label_k = the component's class c (the arg-max class is constant on a component),
    score_k = mean over the component's pixels of p_c, the segmenter's softmax probability of c,

so it is scored with the same box mAP as RT-DETR (faster_coco_eval) and the same image-level
rates. Which of the two is the CPU default was measured (benchmarks/detector_choice.py, README).
"""

from __future__ import annotations

import numpy as np

from defectfill.masks import connected_components
from defectfill.metrics.detection import ImageBoxes


def boxes_from_probabilities(probabilities: np.ndarray, min_pixels: int = 1) -> ImageBoxes:
    """ImageBoxes of one image from its (C, H, W) class probabilities (class 0 = background);
    labels are 0..C-2 (the defect classes), components smaller than `min_pixels` are dropped."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    class_map = probabilities.argmax(0)
    boxes, labels, scores = [], [], []
    for c in range(1, probabilities.shape[0]):
        components, count = connected_components(class_map == c)
        for k in range(1, count + 1):
            ys, xs = np.nonzero(components == k)
            if len(ys) < min_pixels:
                continue
            boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
            labels.append(c - 1)
            scores.append(float(probabilities[c][ys, xs].mean()))
    return ImageBoxes(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(labels, dtype=np.int64),
                      np.asarray(scores, dtype=np.float64))
