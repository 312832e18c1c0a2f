"""DGT → DIS → DFC at tiny sizes: codes, loss equation, shapes, training, save/load, resume."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from helpers_gan_baselines import TYPES, tiny_data

from defectfill.config import load_config
from defectfill.errors import ConfigError
from gan_baselines.dgt.codes import defect_codes, gaussian_kernel, generator_input
from gan_baselines.dgt.config import DGTConfig, DGTLossWeights
from gan_baselines.dgt.model import DGT, dgt_losses, dgt_optimizers, dgt_step_fn
from gan_baselines.dgt.openset import UNKNOWN, WeibullOpenSet, detect_defects
from gan_baselines.dgt.train import train_dgt
from gan_baselines.fewshot_training import FewShotBatches, TrainingArgs, step_generator, train_loop


def tiny_model(seed: int = 0) -> DGT:
    torch.manual_seed(seed)
    return DGT(TYPES, resolution=32, base_channels=4, depth=2, classifier_channels=8, discriminator_channels=4)


def test_gaussian_kernel_is_normalised_with_opencv_sigma():
    import cv2

    for k in (3, 7, 11):
        g = gaussian_kernel(k)
        assert g.shape == (k, k) and abs(float(g.sum()) - 1) < 1e-6
        ref = cv2.getGaussianKernel(k, 0.3 * ((k - 1) * 0.5 - 1) + 0.8)  # OpenCV's σ rule for ksize k
        np.testing.assert_allclose(g.numpy(), ref @ ref.T, atol=1e-6)
    with pytest.raises(ValueError):
        gaussian_kernel(4)


def test_codes_are_the_class_channel_smoothed_with_random_kernel_and_weight():
    mask = torch.zeros(6, 1, 32, 32)
    mask[:, :, 8:24, 8:24] = 1
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    fore, back = defect_codes(mask, labels, 2, torch.Generator().manual_seed(1), kernel_sizes=(3, 9),
                              weight_range=(0.7, 1.0))
    assert fore.shape == (6, 2, 32, 32) and back.shape == (6, 1, 32, 32)
    for i, y in enumerate(labels.tolist()):
        assert fore[i, 1 - y].abs().max() == 0          # only the class's own channel is set
        w_d, w_n = fore[i, y, 16, 16].item(), back[i, 0, 16, 16].item()  # the centre keeps the weight
        assert 0.7 <= w_d <= 1.0 and 0.7 <= w_n <= 1.0
        assert fore[i, y].max() <= w_d + 1e-6 and fore[i, y].min() >= 0
        assert fore[i, y, 0, 0] == 0                      # far outside the mask: zero
        edge = fore[i, y, 16, 8].item()                   # on the mask border: softened
        assert 0.1 * w_d < edge < 0.9 * w_d
    # random weights and kernels differ between samples; the same seed repeats them
    assert len({round(fore[i].max().item(), 5) for i in range(6)}) > 1
    edges = {round(fore[i, labels[i], 16, 7].item() / fore[i, labels[i], 16, 16].item(), 4) for i in range(6)}
    assert len(edges) == 2                               # two kernel sizes -> two edge profiles
    again = defect_codes(mask, labels, 2, torch.Generator().manual_seed(1), kernel_sizes=(3, 9))
    assert torch.equal(again[0], fore) and torch.equal(again[1], back)


def test_generator_input_has_s_plus_1_plus_3_channels():
    model = tiny_model()
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 4:12, 4:12] = 1
    fore, back = model.codes(mask, torch.tensor([0, 1]), torch.Generator().manual_seed(0))
    x = generator_input(fore, back, torch.zeros(2, 3, 32, 32))
    assert x.shape[1] == len(TYPES) + 1 + 3 == model.generator.stem[0].in_channels
    good = torch.rand(2, 3, 32, 32) * 1.6 - 0.8
    out = model.generate(good, fore, back)
    assert out.shape == (2, 3, 32, 32) and out.abs().max() <= 1
    assert torch.allclose(out, good, atol=1e-5)  # an untrained G is the identity on N
    assert model.segment(out).shape == (2, 1, 32, 32)
    assert model.classify(out, mask).shape == (2, len(TYPES))


def test_loss_is_the_weighted_sum_of_its_terms():
    defects, good = tiny_data()
    batch = FewShotBatches(defects, good, TYPES, 32).sample(2, torch.Generator().manual_seed(0))
    model = tiny_model()
    weights = DGTLossWeights(*np.random.default_rng(3).uniform(0.1, 5, 10).tolist())
    total, terms, _ = dgt_losses(model, batch, torch.Generator().manual_seed(5), weights)
    names = ["fore", "back", "mix", "seg_fake", "seg_real_fore", "seg_real_back", "cls_fake", "cls_real", "adv", "rec"]
    expected = sum(getattr(weights, f.name) * terms[n] for f, n in zip(dataclasses.fields(weights), names))
    assert torch.allclose(total, expected)
    assert all(v.item() >= 0 for v in terms.values())


def test_config_yaml_loads_and_rejects_unknown_keys(tmp_path):
    config = load_config(DGTConfig, "configs/dgt_tiny.yaml")
    assert config.loss.alpha1_fore > 0 and config.train.resolution % 2 ** config.model.depth == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss:\n  alpha9: 1.0\n")
    with pytest.raises(ConfigError, match="alpha9"):
        load_config(DGTConfig, bad)


def test_one_training_step_changes_every_network():
    defects, good = tiny_data()
    batches = FewShotBatches(defects, good, TYPES, 32)
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    step = dgt_step_fn(batches, 2, DGTLossWeights())
    logs = step(model, dgt_optimizers(model, 1e-3, (0.5, 0.999)), step_generator(0, 1), lambda loss: loss.backward())
    assert np.isfinite(logs["loss/total"])
    # G's last conv starts at zero (G starts as the identity on N), so its gradient reaches the head first
    assert torch.equal(before["generator.head.weight"], torch.zeros_like(before["generator.head.weight"]))
    for name in ("generator.head.weight", "reconstructor.stem.0.weight", "segmenter.stem.0.weight",
                 "classifier.features.0.weight", "discriminator.net.0.weight"):
        assert not torch.equal(before[name], model.state_dict()[name]), name


def test_resume_gives_the_same_weights_and_save_load_is_identical(tmp_path):
    defects, good = tiny_data()
    batches = FewShotBatches(defects, good, TYPES, 32)
    step = dgt_step_fn(batches, 2, DGTLossWeights())

    def run(folder, steps, resume):
        model = tiny_model()
        args = TrainingArgs(resolution=32, train_batch_size=2, max_train_steps=steps, checkpointing_steps=2,
                            resume_from_checkpoint=resume, log_every=1)
        return train_loop(model, dgt_optimizers(model, 1e-3, (0.5, 0.999)), step, args, folder)

    straight = run(tmp_path / "a", 4, None)
    # the interrupted run: 3 steps with a checkpoint at 2, then resumed to 4
    run(tmp_path / "c", 3, None)
    resumed = run(tmp_path / "c", 4, "latest")
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    loaded = DGT.from_pretrained(str(tmp_path / "a" / "model"))
    assert (tmp_path / "a" / "model" / "model.safetensors").is_file()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(straight.eval().segment(x), loaded.eval().segment(x))
        region = (x[:, :1] > 0).float()
        assert torch.equal(straight.classify(x, region), loaded.classify(x, region))
    assert loaded.defect_types == TYPES and loaded.resolution == 32


def test_train_dgt_fits_openset_and_detect_defects_labels_regions(tmp_path):
    defects, good = tiny_data()
    config = DGTConfig()
    config.model = dataclasses.replace(config.model, base_channels=4, depth=2, classifier_channels=8,
                                       discriminator_channels=4)
    config.train = TrainingArgs(resolution=32, train_batch_size=2, max_train_steps=2, checkpointing_steps=0)
    config.openmax = dataclasses.replace(config.openmax, tailsize=4, fakes_per_type=6, heat_threshold=0.0)
    model, openset = train_dgt(config, defects, good, TYPES, tmp_path)
    regions = detect_defects(model, openset, defects[0].image, heat_threshold=0.0, min_area=1)
    assert regions and all(r.label in TYPES + [UNKNOWN] for r in regions)
    assert all(0 <= r.unknown_score <= 1 and r.mask.shape == (40, 40) for r in regions)
    # a second call finds the finished model and loads it (same Weibulls, same scores)
    _, openset2 = train_dgt(config, defects, good, TYPES, tmp_path)
    logits = torch.randn(5, 2) * 3
    assert torch.allclose(openset.unknown_score(logits), openset2.unknown_score(logits))
    assert openset2.threshold == openset.threshold
    assert isinstance(WeibullOpenSet.load(tmp_path / "model"), WeibullOpenSet)
    # the CLI verb reports each region as a known type or "unknown defect"
    import json

    from defectfill.cli import main
    from defectfill.data.images import save_image

    save_image(tmp_path / "images" / "a.png", defects[0].image)
    assert main(["openset", str(tmp_path / "images"), "--model", str(tmp_path / "model"), "--out",
                 str(tmp_path / "pred"), "--heat_threshold", "0", "--min_area", "1"]) == 0
    (record,) = [json.loads(line) for line in (tmp_path / "pred" / "predictions.jsonl").read_text().splitlines()]
    assert record["regions"] and all(r["label"] in TYPES + [UNKNOWN] for r in record["regions"])
    assert (tmp_path / "pred" / "sheet.png").is_file()
