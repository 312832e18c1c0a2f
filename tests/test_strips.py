"""Segmenter and detector on line-scan strips: tiling for training, sliding-window inference merged
back to strip coordinates, strip- and tile-level metrics; DefectFill on greyscale strips.

Strips are 1024x64 greyscale from the fabric simulator; the models train for 1 epoch (the figures
mean nothing: the tests check shapes, coordinates and the stitching arithmetic).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from defectfill.data.fabric import render_sample
from defectfill.data.sample import DefectSample
from defectfill.data.tiling import tile_image
from defectfill.downstream.config import DeepLabConfig, DownstreamConfig, EvaluationConfig, RTDETRConfig
from defectfill.downstream.deeplab import predict_probabilities
from defectfill.errors import DataError
from defectfill.realdata.strips import (
    StripTiling,
    predict_deeplab_strips,
    predict_rtdetr_strips,
    run_strip_arm,
    tile_test_set,
    tile_training_set,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STRIP = (64, 1024)  # H, W
TILING = StripTiling(tile=64, overlap=16, keep_good_ratio=0.25)


def _strip(texture: str, defect_type: str | None, seed: int, size=STRIP) -> DefectSample:
    image, mask = render_sample(texture, defect_type, seed, size=size, gray=True)
    return DefectSample(image, mask, defect_type or "good", is_gray=True,
                        meta={"name": f"{texture}_{defect_type or 'good'}_{seed}"})


@pytest.fixture(scope="module")
def strips() -> dict[str, list[DefectSample]]:
    train = [_strip("plain", "stain", 1), _strip("twill", "hole", 2), _strip("plain", "stain", 3)]
    test = [_strip("plain", "stain", 11), _strip("plain", None, 13)]
    return {"train": train, "test": test}


def test_training_tiles_are_strip_crops_with_clipped_boxes(strips):
    tiles, stats = tile_training_set(strips["train"], TILING, seed=0)
    assert stats.defect_tiles >= len(strips["train"])  # every strip has a defect
    assert 0 < stats.good_tiles < stats.good_tiles_seen  # a sampled share of the good tiles
    by_name = {s.meta["name"]: s for s in strips["train"]}
    for tile in tiles:
        x, y = tile.meta["tile_offset"]
        parent = by_name[tile.meta["parent"]]
        assert tile.image.shape == (64, 64, 3)
        assert np.array_equal(tile.image, parent.image[y : y + 64, x : x + 64])
        if tile.is_good:
            assert not tile.mask.any() and not parent.mask[y : y + 64, x : x + 64].any()
        else:
            assert len(tile.boxes) and (tile.boxes >= 0).all() and (tile.boxes[:, 2:] <= 64).all()
    test_tiles = tile_test_set(strips["test"], TILING)
    offsets = tile_image(strips["test"][0].image, 64, 16)[1]
    assert len(test_tiles) == 2 * len(offsets)  # every tile, nothing sampled
    # the test tiles together hold every defect pixel of the strips
    first = [t for t in test_tiles if t.meta["parent"] == strips["test"][0].meta["name"]]
    rebuilt = np.zeros(STRIP, bool)
    for t in first:
        x, y = t.meta["tile_offset"]
        rebuilt[y : y + 64, x : x + 64] |= t.mask
    assert np.array_equal(rebuilt, strips["test"][0].mask)


def test_strip_smaller_than_tile_is_refused(strips):
    with pytest.raises(DataError, match="smaller than the tile"):
        tile_training_set(strips["train"], StripTiling(tile=128, overlap=16))


@pytest.fixture(scope="module")
def strip_arm(strips, tmp_path_factory):
    torch.set_num_threads(1)  # 2 shared cores: more threads only contend
    config = DownstreamConfig(
        classes=["stain", "hole"], models=["deeplab", "rtdetr", "segboxes"], seed=0,
        deeplab=DeepLabConfig(epochs=1, batch_size=8, image_size=64, device="cpu"),
        rtdetr=RTDETRConfig(model=str(CONFIGS / "rtdetr_small.yaml"), epochs=1, batch=8, imgsz=64),
        evaluation=EvaluationConfig(generation_metrics=False),
    )
    out = tmp_path_factory.mktemp("strip-arm")
    return run_strip_arm("real_only", strips["train"], strips["test"], config, TILING, out), out, config


def test_strip_arm_reports_strip_and_tile_level_scores(strip_arm, strips):
    result, out, _ = strip_arm
    tile_level, strip_level = result["tile_level"], result["strip_level"]
    assert tile_level["test_images"] == len(tile_test_set(strips["test"], TILING))
    assert strip_level["strips"] == 2
    for level in (tile_level, strip_level):
        assert set(level["deeplab"]["per_class"]) == {"stain", "hole"}
        assert 0.0 <= level["rtdetr"]["mAP50"] <= 1.0 or level["rtdetr"]["mAP50"] == -1
    # the segmenter's boxes are scored on the stitched strip probabilities
    assert 0.0 <= strip_level["segboxes"]["mAP50"] <= 1.0 and strip_level["segboxes"]["pixel_recall"] is not None
    assert (out / "real_only" / "strip_results.json").is_file()
    # resumable: the second call reads the results back
    again = run_strip_arm("real_only", strips["train"], strips["test"], strip_arm[2], TILING, out)
    assert again == result


def test_deeplab_strip_maps_are_stitched_tile_probabilities(strip_arm, strips):
    from defectfill.downstream.deeplab import load_deeplab

    _, out, config = strip_arm
    model, _ = load_deeplab(out / "real_only" / "deeplab")
    strip = strips["test"][0].image
    maps = predict_deeplab_strips(model, [strip], TILING, config.deeplab.image_size)
    assert maps[0].shape == STRIP and maps[0].dtype == np.int64 and maps[0].max() <= 2
    # recompute the stitching by hand: mean of the overlapping tiles' probabilities, then argmax
    tiles, offsets = tile_image(strip, 64, 16)
    probabilities = predict_probabilities(model, tiles, 64)
    total, count = np.zeros((3, *STRIP)), np.zeros(STRIP)
    for p, (x, y) in zip(probabilities, offsets):
        total[:, y : y + 64, x : x + 64] += p
        count[y : y + 64, x : x + 64] += 1
    assert count.min() >= 1
    assert np.array_equal(maps[0], (total / count).argmax(0))
    # without overlap the stitched map is the per-tile argmax side by side
    no_overlap = StripTiling(tile=64, overlap=0)
    tiles0, _ = tile_image(strip, 64, 0)
    side_by_side = np.concatenate([p.argmax(0) for p in predict_probabilities(model, tiles0, 64)], axis=1)
    assert np.array_equal(predict_deeplab_strips(model, [strip], no_overlap, 64)[0], side_by_side)


def test_rtdetr_strip_boxes_are_in_strip_coordinates(strip_arm, strips):
    import json

    from defectfill.downstream.rtdetr import DONE_NAME, predict_rtdetr
    from defectfill.metrics.detection import box_iou

    _, out, _ = strip_arm
    weights = json.loads((out / "real_only" / "rtdetr" / DONE_NAME).read_text())["weights"]
    strip = strips["test"][0].image
    merged = predict_rtdetr_strips(weights, [strip], TILING, imgsz=64, conf=0.001)[0]
    assert len(merged.boxes) > 0
    h, w = STRIP
    assert (merged.boxes[:, [0, 2]] >= 0).all() and (merged.boxes[:, [0, 2]] <= w).all()
    assert (merged.boxes[:, [1, 3]] >= 0).all() and (merged.boxes[:, [1, 3]] <= h).all()
    assert merged.boxes[:, 0].max() >= 64  # boxes from later tiles are shifted into strip coordinates
    assert set(np.unique(merged.labels)) <= {0, 1}
    # the best-scored merged box is one of the per-tile boxes, shifted by its tile's offset
    tiles, offsets = tile_image(strip, 64, 16)
    per_tile = predict_rtdetr(weights, tiles, imgsz=64, conf=0.001)
    shifted = np.concatenate([p.boxes + [x, y, x, y] for p, (x, y) in zip(per_tile, offsets)])
    scores = np.concatenate([p.scores for p in per_tile])
    assert merged.scores[0] == pytest.approx(scores.max(), abs=1e-6)
    best = shifted[scores == scores.max()]
    # kept as is (NMS) or enclosing the fragments it was joined with: it contains the best tile box
    assert ((merged.boxes[0, :2] <= best[:, :2] + 1e-6).all(1) & (merged.boxes[0, 2:] >= best[:, 2:] - 1e-6).all(1)).any()
    assert box_iou(merged.boxes[:1], best).max() > 0


# ------------------------------------------------------------------------------ DefectFill on strips
@pytest.fixture(scope="module")
def tiny_defectfill(tmp_path_factory):
    """A DefectFill concept trained for 2 steps on a tiny random base (plumbing, not quality)."""
    from defectfill.data.writers import write_masks
    from defectfill.models.defectfill import DefectFill
    from defectfill.models.plugin import build_random_base
    from defectfill.training import load_train_config, train_defectfill

    root = tmp_path_factory.mktemp("strip-defectfill")
    base = build_random_base(root / "base")
    tiles, _ = tile_training_set([_strip("plain", "stain", 1), _strip("plain", "stain", 3)], TILING, seed=0)
    write_masks([t for t in tiles if not t.is_good], root / "data")
    config = load_train_config(
        CONFIGS / "defectfill_tiny.yaml", pretrained_model_name_or_path=str(base),
        train_data_dir=str(root / "data"), output_dir=str(root / "model"), max_train_steps=2, lr_warmup_steps=1,
        checkpointing_steps=1000, validation_steps=0, report_to="none")
    train_defectfill(config)
    return DefectFill.from_pretrained(root / "model", base_model=base, selection_metric="ms-ssim-distance")


def test_generated_defect_on_a_grey_strip_has_no_colour_cast(tiny_defectfill):
    strip = _strip("twill", None, 21)
    mask = np.zeros(STRIP, bool)
    mask[20:44, 500:540] = True
    result = tiny_defectfill.generate(strip.image, mask, defect_type="stain", num_candidates=2,
                                      num_inference_steps=2, seed=0)
    assert result.meta["is_gray"]
    for candidate in result.candidates:
        assert candidate.shape == strip.image.shape
        assert np.array_equal(candidate[..., 0], candidate[..., 1])
        assert np.array_equal(candidate[..., 1], candidate[..., 2])
        assert not np.array_equal(candidate[mask], strip.image[mask])  # something was generated


def test_generate_on_a_4096x256_strip_changes_only_the_mask(tiny_defectfill):
    strip = _strip("plain", None, 22, size=(256, 4096))
    yy, xx = np.mgrid[0:256, 0:4096]
    mask = (yy - 120) ** 2 / 25**2 + (xx - 3000) ** 2 / 22**2 <= 1  # ~50 x 44 px blob
    result = tiny_defectfill.generate(strip.image, mask, defect_type="stain", num_candidates=1,
                                      num_inference_steps=2, seed=1)
    out = result.image
    assert out.shape == (256, 4096, 3)
    assert np.array_equal(out[~mask], strip.image[~mask])  # bit-identical outside the mask
    assert (out[mask] != strip.image[mask]).any()
    assert np.array_equal(out[..., 0], out[..., 2])  # grey strip, grey defect
    assert result.changed_mask.shape == (256, 4096) and not (result.changed_mask & ~mask).any()
