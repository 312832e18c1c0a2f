"""The segmenter (issue 20): a U-Net that learns from random init, its loss, honest epoch selection,
the no-defect warning; real training on tiny data, no mocks."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from defectfill.data.sample import DefectSample
from defectfill.downstream.arm import ground_truth_boxes
from defectfill.downstream.assemble import assemble
from defectfill.downstream.config import AssembleConfig, DeepLabConfig, load_downstream_config
from defectfill.downstream.deeplab import (
    build_deeplab,
    load_deeplab,
    predict_deeplab,
    predict_probabilities,
    segmentation_loss,
    train_deeplab,
)
from defectfill.downstream.segboxes import boxes_from_probabilities
from defectfill.downstream.unet import UNet
from defectfill.errors import ConfigError, ModelError
from defectfill.metrics.detection import detection_scores

SIZE = 32


def blob_samples(n: int, seed: int) -> list[DefectSample]:
    """Grey noise cloth with one dark square stain (4-8 px) per image: learnable in a few steps,
    small like the real stains (0.5-5 % of the image)."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        image = rng.normal(150, 12, (SIZE, SIZE, 1)).clip(0, 255).repeat(3, 2).astype(np.uint8)
        side = int(rng.integers(4, 9))
        y, x = rng.integers(0, SIZE - side, 2)
        mask = np.zeros((SIZE, SIZE), bool)
        mask[y : y + side, x : x + side] = True
        image[mask] = (image[mask] * 0.45).astype(np.uint8)
        samples.append(DefectSample(image, mask, "stain"))
    return samples


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """16 training images, of which 25 % are held out for validation."""
    root = tmp_path_factory.mktemp("blobs") / "data"
    return assemble(blob_samples(16, 0), [], root, ["stain"], AssembleConfig(val_fraction=0.25), seed=0)


def test_unet_shapes_parameters_and_size_check():
    model = UNet(num_classes=3)
    assert 0.45e6 < sum(p.numel() for p in model.parameters()) < 0.5e6  # depth 4, widths 16..128
    assert model(torch.zeros(2, 3, 64, 96))["out"].shape == (2, 3, 64, 96)  # full resolution out
    with pytest.raises(ValueError, match="multiples of 8"):
        model(torch.zeros(1, 3, 60, 64))
    with pytest.raises(ConfigError, match="multiple of 8 for a U-Net of depth 4"):
        DeepLabConfig(arch="unet", image_size=100)
    with pytest.raises(ConfigError, match="class weights must be > 0"):
        DeepLabConfig(defect_weight=0)
    with pytest.raises(ModelError, match="ImageNet backbone fits DeepLabV3 only"):
        build_deeplab(DeepLabConfig(arch="unet", backbone_weights="x.pth"), 2)


def test_loss_is_weighted_cross_entropy_plus_soft_dice():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 8, 8)
    target = (torch.rand(2, 8, 8) < 0.2).long()
    weights = torch.tensor([1.0, 9.0])
    log_p = logits.log_softmax(1)
    per_pixel = -log_p.gather(1, target[:, None])[:, 0]
    w = weights[target]
    expected_ce = (w * per_pixel).sum() / w.sum()  # Σ w_y CE / Σ w_y, the paper's α1 = 1, α2 = 9
    assert torch.allclose(segmentation_loss(logits, target, weights, dice=False), expected_ce)
    p = logits.softmax(1)[:, 1]
    y = target.float()
    expected_dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
    assert torch.allclose(segmentation_loss(logits, target, weights, dice=True), expected_ce + expected_dice)
    # with weight 1 / 1 it is plain cross-entropy
    assert torch.allclose(segmentation_loss(logits, target, torch.ones(2), dice=False), F.cross_entropy(logits, target))


def test_unet_leaves_the_all_background_phase_from_random_init(blobs, tmp_path, caplog):
    """The regression issue 20 was about: a segmenter that, from random init on a small CPU budget,
    never predicts a defect pixel. The U-Net recipe must find held-out stains within 12 epochs (48 steps)."""
    config = DeepLabConfig(arch="unet", epochs=12, batch_size=4, image_size=SIZE, loss="ce_dice", device="cpu")
    with caplog.at_level(logging.WARNING):
        info = train_deeplab(blobs.root, ["stain"], config, tmp_path / "unet", seed=0)
    assert info["val_images"] == 4 and info["train_images"] == 12
    assert info["selection"].startswith("best epoch on held-out validation")
    history = info["history"]
    assert [h["epoch"] for h in history] == list(range(1, 13))
    best = max(history, key=lambda h: h["val_mean_f"])  # the kept epoch is the best on validation
    assert info["best_epoch"] == best["epoch"] and info["best_val"]["mean_f_measure"] == pytest.approx(best["val_mean_f"])
    assert info["best_val"]["mean_f_measure"] > 0.5, history
    # the per-epoch validation also scores the segmenter's boxes (mAP50), and they are learned too
    assert history[0]["val_boxes_map50"] is not None and max(h["val_boxes_map50"] for h in history) > 0.5, history
    assert info["warnings"] == []
    # scored again on fresh images it never saw: it finds stains there too
    model, _ = load_deeplab(tmp_path / "unet")
    fresh = blob_samples(8, 99)
    maps = predict_deeplab(model, [s.image for s in fresh], SIZE)
    tp = sum(int(((m > 0) & s.mask).sum()) for m, s in zip(maps, fresh))
    predicted, present = sum(int((m > 0).sum()) for m in maps), sum(int(s.mask.sum()) for s in fresh)
    assert tp > 0.5 * present and tp > 0.4 * predicted, (tp, predicted, present)
    # and its components as boxes (the CPU box detector `segboxes`) find the fresh stains' boxes
    boxes = detection_scores([ground_truth_boxes(s, ["stain"]) for s in fresh],
                             [boxes_from_probabilities(p) for p in predict_probabilities(model, [s.image for s in fresh], SIZE)],
                             [s.size for s in fresh], ["stain"])
    assert boxes["mAP50"] > 0.5, boxes
    # one console line per epoch names what was scored and how many defect pixels were predicted
    tb = list((tmp_path / "unet" / "tensorboard").iterdir())
    assert tb


def test_without_a_held_out_split_the_last_epoch_is_kept_not_the_best_on_training_images(tmp_path):
    data = assemble(blob_samples(8, 1), [], tmp_path / "data", ["stain"], AssembleConfig(val_fraction=0.0))
    config = DeepLabConfig(arch="unet", epochs=3, batch_size=4, image_size=SIZE, device="cpu")
    info = train_deeplab(data.root, ["stain"], config, tmp_path / "unet", seed=0)
    assert info["best_epoch"] == 3 and info["selection"].startswith("last epoch (no held-out validation")
    assert json.loads((tmp_path / "unet" / "best.json").read_text())["best_epoch"] == 3


def test_a_model_that_predicts_no_defect_is_said_loudly(blobs, tmp_path, caplog, capsys):
    # defect weight tiny and a few steps: the model stays on background everywhere
    config = DeepLabConfig(arch="unet", epochs=1, batch_size=4, image_size=SIZE, lr=1e-6, defect_weight=1e-3, device="cpu")
    with caplog.at_level(logging.WARNING):
        info = train_deeplab(blobs.root, ["stain"], config, tmp_path / "quiet", seed=0)
    assert info["best_val"]["predicted_defect_pixels"] == 0
    assert any("predicts NO defect pixel" in r.getMessage() for r in caplog.records)
    assert info["warnings"] and "all-background phase" in info["warnings"][0]
    assert "WARNING: the KEPT model" in capsys.readouterr().out


def test_init_weights_start_from_a_checkpoint_and_keep_a_new_head_random(blobs, tmp_path):
    from safetensors.torch import save_file

    source = build_deeplab(DeepLabConfig(arch="unet"), num_classes=3)
    path = tmp_path / "pretrained.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = build_deeplab(DeepLabConfig(arch="unet", init_weights=str(path)), num_classes=2)  # other head
    assert torch.equal(model.down[0][0].weight, source.down[0][0].weight)
    assert model.head.weight.shape[0] == 2
    with pytest.raises(ModelError, match="only 0 of the model's"):
        save_file({"unrelated": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
        build_deeplab(DeepLabConfig(arch="unet", init_weights=str(tmp_path / "bad.safetensors")), num_classes=2)
    with pytest.raises(ModelError, match="not found"):
        build_deeplab(DeepLabConfig(arch="unet", init_weights=str(tmp_path / "missing.safetensors")), num_classes=2)


def test_tiny_config_uses_the_cpu_segmenter():
    config = load_downstream_config("configs/downstream_tiny.yaml")
    assert config.deeplab.arch == "unet"
    assert load_downstream_config("configs/downstream_gpu.yaml").deeplab.arch == "resnet50"


def test_segmenter_boxes_are_its_components_scored_by_mean_probability():
    """Two classes on a hand-made probability map: one box per component, its class, its mean p."""
    p = np.zeros((3, 8, 10))
    p[0] = 1.0
    p[:, 1:3, 1:4] = np.array([0.2, 0.8, 0.0])[:, None, None]      # class 1 (label 0), p = 0.8
    p[:, 5:8, 6:7] = np.array([0.1, 0.3, 0.6])[:, None, None]      # class 2 (label 1), p = 0.6
    p[:, 5, 6] = [0.0, 0.0, 1.0]                                   # one pixel of it at p = 1.0
    p[:, 6:8, 0:2] = np.array([0.3, 0.0, 0.7])[:, None, None]      # a second, separate class-2 component
    boxes = boxes_from_probabilities(p)
    found = sorted(zip(boxes.boxes.tolist(), boxes.labels.tolist(), boxes.scores.tolist()))
    assert [(b, label) for b, label, _ in found] == [([0, 6, 2, 8], 1), ([1, 1, 4, 3], 0), ([6, 5, 7, 8], 1)]
    assert [score for *_, score in found] == pytest.approx([0.7, 0.8, (0.6 * 2 + 1.0) / 3])
    assert len(boxes_from_probabilities(np.stack([np.ones((4, 4)), np.zeros((4, 4))])).boxes) == 0


def test_segmenter_boxes_need_the_segmenter():
    with pytest.raises(ConfigError, match="add deeplab"):
        load_downstream_config("configs/downstream_tiny.yaml", {"models": ["rtdetr", "segboxes"]})
