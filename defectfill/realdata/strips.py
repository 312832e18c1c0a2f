"""The segmenter and the detector on line-scan strips (AITEX-like 4096x256 greyscale fabric).

A strip is far wider than any model input, so both models work on square tiles of the model size
(`defectfill.data.tiling` cuts and merges; this module wires it to the downstream models):

- training set: each labelled strip -> every tile holding a defect + a sampled share of the good
  tiles, boxes clipped to each tile, slivers dropped (`tiling.tile_sample`);
- inference: the strip is cut into overlapping tiles; DeepLabV3's per-tile class probabilities
  are stitched back (mean where tiles overlap, `tiling.stitch_masks`) and arg-maxed; RT-DETR's
  per-tile boxes go back to strip coordinates with box NMS and fragment joining across tile
  borders (`tiling.merge_boxes_from_tiles`);
- metrics at two levels with `defectfill.metrics`: *strip level* (the stitched class maps and
  merged boxes against each whole strip) and *tile level* (every tile of the test strips scored as
  an image of its own, what `defectfill.downstream.arm.run_arm` reports).

`run_strip_arm` is one arm end to end: tile -> `run_arm` (assemble, fine-tune, tile-level
evaluation) -> strip-level evaluation, written to `<out>/<arm>/strip_results.json`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from defectfill.data.sample import DefectSample
from defectfill.data.tiling import TilingStats, merge_boxes_from_tiles, stitch_masks, tile_image, tile_sample
from defectfill.downstream.config import DownstreamConfig
from defectfill.errors import DataError
from defectfill.io_utils import atomic_write_json
from defectfill.metrics.detection import ImageBoxes

STRIP_RESULTS_NAME = "strip_results.json"


@dataclass
class StripTiling:
    """How strips are cut for the models.

    tile: square tile side (px) = the model input size (DeepLabV3 image_size, RT-DETR imgsz).
    overlap: pixels shared by neighbouring tiles (>= 4, the sliver side, so that a cut box is
        recovered exactly when merged).
    keep_good_ratio: share of the defect-free tiles kept in the training set.
    nms_iou: IoU above which two boxes of overlapping tiles are the same defect.
    """

    tile: int = 256
    overlap: int = 32
    keep_good_ratio: float = 0.25
    nms_iou: float = 0.5

    def __post_init__(self) -> None:
        if self.tile < 8 or not 0 <= self.overlap < self.tile:
            raise DataError(f"StripTiling: need tile >= 8 and 0 <= overlap < tile, found tile={self.tile}, "
                            f"overlap={self.overlap}")
        if not 0.0 <= self.keep_good_ratio <= 1.0:
            raise DataError(f"StripTiling.keep_good_ratio must lie in [0, 1], found {self.keep_good_ratio}")


def _check_strips(strips: Sequence[DefectSample], tiling: StripTiling, what: str) -> None:
    if not strips:
        raise DataError(f"{what}: no strips; pass at least one DefectSample")
    small = [s.meta.get("name", i) for i, s in enumerate(strips) if min(s.size) < tiling.tile]
    if small:
        raise DataError(f"{what}: strip(s) {small} are smaller than the tile ({tiling.tile} px) on one side; "
                        "lower `tile` to the strip height or pad the strips")


def tile_training_set(
    strips: Sequence[DefectSample], tiling: StripTiling, seed: int = 0
) -> tuple[list[DefectSample], TilingStats]:
    """Training tiles of all strips (defect tiles + sampled good tiles) and the tiling counts."""
    _check_strips(strips, tiling, "training strips")
    rng = np.random.default_rng(seed)
    stats = TilingStats()
    tiles: list[DefectSample] = []
    for strip in strips:
        tiles += tile_sample(strip, tiling.tile, tiling.overlap, tiling.keep_good_ratio, rng=rng, stats=stats)
    if not tiles:
        raise DataError("training strips gave no tile (no defect and keep_good_ratio too low); raise keep_good_ratio")
    return tiles, stats


def tile_test_set(strips: Sequence[DefectSample], tiling: StripTiling) -> list[DefectSample]:
    """Every tile of every strip with its exact mask crop (tile-level evaluation: nothing sampled,
    nothing dropped); a tile without defect pixels is "good"."""
    _check_strips(strips, tiling, "test strips")
    out = []
    for strip in strips:
        images, offsets = tile_image(strip.image, tiling.tile, tiling.overlap)
        masks, _ = tile_image(strip.mask, tiling.tile, tiling.overlap)
        parent = str(strip.meta.get("name") or "strip")
        for image, mask, (x, y) in zip(images, masks, offsets):
            kind = strip.defect_type if mask.any() and not strip.is_good else "good"
            out.append(DefectSample(image, mask if kind != "good" else np.zeros_like(mask), kind, source=strip.source,
                                    is_gray=strip.is_gray,
                                    meta={"name": f"{parent}_x{x}_y{y}", "parent": parent, "tile_offset": (x, y)}))
    return out


# ------------------------------------------------------------------------------ inference
def strip_probabilities(model: torch.nn.Module, strips: Sequence[np.ndarray], tiling: StripTiling,
                        image_size: int) -> list[np.ndarray]:
    """(C, H, W) float32 class probabilities in strip coordinates: the softmax of every tile
    (`downstream.deeplab.predict_probabilities`), overlapping tiles averaged (`stitch_masks`)."""
    from defectfill.downstream.deeplab import predict_probabilities

    out = []
    for strip in strips:
        tiles, offsets = tile_image(strip, tiling.tile, tiling.overlap)
        probabilities = predict_probabilities(model, tiles, image_size)
        out.append(np.stack([stitch_masks([p[c] for p in probabilities], offsets, strip.shape[:2])
                             for c in range(probabilities[0].shape[0])]))
    return out


def predict_deeplab_strips(model: torch.nn.Module, strips: Sequence[np.ndarray], tiling: StripTiling,
                           image_size: int) -> list[np.ndarray]:
    """(H, W) int64 class maps in strip coordinates: the arg-max of `strip_probabilities`."""
    return [p.argmax(0).astype(np.int64) for p in strip_probabilities(model, strips, tiling, image_size)]


def predict_rtdetr_strips(weights: str | Path, strips: Sequence[np.ndarray], tiling: StripTiling, *,
                          imgsz: int, conf: float = 0.001, device: str = "cpu") -> list[ImageBoxes]:
    """Boxes in strip coordinates (x0, y0, x1, y1, pixels of the strip), class indices and scores:
    RT-DETR on every tile, then `merge_boxes_from_tiles` (NMS at `tiling.nms_iou` + joining the
    pieces of a defect cut by a tile border)."""
    from defectfill.downstream.rtdetr import predict_rtdetr

    all_tiles, spans = [], []
    for strip in strips:
        tiles, offsets = tile_image(strip, tiling.tile, tiling.overlap)
        spans.append((len(all_tiles), offsets, strip.shape[:2]))
        all_tiles += tiles
    per_tile = predict_rtdetr(weights, all_tiles, imgsz=imgsz, conf=conf, device=device)  # one model load
    out = []
    for start, offsets, (height, width) in spans:
        predictions = per_tile[start : start + len(offsets)]
        boxes, scores, labels = merge_boxes_from_tiles(
            [p.boxes for p in predictions], offsets, [p.scores for p in predictions], iou=tiling.nms_iou,
            tile=tiling.tile, labels=[p.labels for p in predictions])
        boxes = np.clip(boxes, 0, [width, height, width, height]) if len(boxes) else boxes
        out.append(ImageBoxes(boxes, labels, scores))
    return out


# ------------------------------------------------------------------------------ evaluation
def evaluate_strips(run_dir: str | Path, strips: Sequence[DefectSample], config: DownstreamConfig,
                    tiling: StripTiling) -> dict[str, Any]:
    """Strip-level scores of the models trained in `run_dir` (same keys as `evaluate_models`)."""
    from defectfill.downstream.arm import ground_truth_boxes
    from defectfill.downstream.datasets import class_map
    from defectfill.metrics.detection import detection_scores, mask_coverage
    from defectfill.metrics.segmentation import segmentation_scores

    run_dir = Path(run_dir)
    classes = config.classes
    _check_strips(strips, tiling, "test strips")
    images = [s.image for s in strips]
    metrics: dict[str, Any] = {"strips": len(strips), "tiling": {"tile": tiling.tile, "overlap": tiling.overlap,
                                                                  "nms_iou": tiling.nms_iou}}
    if "deeplab" in config.models:
        from defectfill.downstream.arm import segboxes_scores
        from defectfill.downstream.deeplab import load_deeplab

        model, _ = load_deeplab(run_dir / "deeplab")
        started = time.perf_counter()
        probabilities = strip_probabilities(model, images, tiling, config.deeplab.image_size)
        targets = [class_map(s.mask, s.defect_type, classes) for s in strips]
        metrics["deeplab"] = {**segmentation_scores([p.argmax(0) for p in probabilities], targets, classes),
                              "predict_seconds": time.perf_counter() - started}
        if "segboxes" in config.models:
            metrics["segboxes"] = segboxes_scores(probabilities, strips, config)
    if "rtdetr" in config.models:
        from defectfill.downstream.rtdetr import DONE_NAME

        record = json.loads((run_dir / "rtdetr" / DONE_NAME).read_text())
        started = time.perf_counter()
        predictions = predict_rtdetr_strips(record["weights"], images, tiling, imgsz=config.rtdetr.imgsz,
                                            conf=config.rtdetr.predict_conf, device=config.rtdetr.device)
        truth = [ground_truth_boxes(s, classes, config.assemble) for s in strips]
        metrics["rtdetr"] = {
            **detection_scores(truth, predictions, [s.size for s in strips], classes, config.evaluation.score_threshold),
            **mask_coverage([s.mask for s in strips], predictions, config.evaluation.score_threshold),
            "predict_seconds": time.perf_counter() - started,
        }
    return metrics


def run_strip_arm(
    name: str,
    train_strips: Sequence[DefectSample],
    test_strips: Sequence[DefectSample],
    config: DownstreamConfig,
    tiling: StripTiling,
    out_dir: str | Path,
    *,
    manifests: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """One arm on strips: tile the training strips, `run_arm` on the tiles (tile-level scores on
    every tile of the test strips), then strip-level scores. Resumable (results files are reused).

    manifests: generation folders of tile-sized synthetic images to add to the training tiles.
    Returns {"arm", "tile_level": run_arm's results, "strip_level": evaluate_strips' scores}.
    """
    from defectfill.config import to_dict
    from defectfill.downstream.arm import run_arm

    arm_dir = Path(out_dir) / name
    strip_path = arm_dir / STRIP_RESULTS_NAME
    if strip_path.is_file():
        return json.loads(strip_path.read_text())
    if config.deeplab.image_size != tiling.tile or ("rtdetr" in config.models and config.rtdetr.imgsz != tiling.tile):
        raise DataError(f"tiles are {tiling.tile} px but deeplab.image_size={config.deeplab.image_size} / "
                        f"rtdetr.imgsz={config.rtdetr.imgsz}; set the model sizes to the tile size")
    train_tiles, stats = tile_training_set(train_strips, tiling, seed=config.seed)
    test_tiles = tile_test_set(test_strips, tiling)
    tile_level = run_arm(name, train_tiles, test_tiles, config, out_dir, manifests=manifests)
    result = {
        "arm": name,
        "tiling": to_dict(tiling),
        "train_tiles": {"defect": stats.defect_tiles, "good": stats.good_tiles, "good_seen": stats.good_tiles_seen,
                        "sliver_only_left_out": stats.sliver_only_tiles, "slivers_dropped": stats.slivers_dropped},
        "test_tiles": len(test_tiles),
        "tile_level": tile_level,
        "strip_level": evaluate_strips(arm_dir, test_strips, config, tiling),
    }
    atomic_write_json(strip_path, result)
    return result
