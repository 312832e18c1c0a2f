"""DGT → DIS → DFC at tiny sizes: codes, loss equation, shapes, training (the shared GanTrainer loop),
save/load, resume, the non-finite alarm."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from helpers_gan_baselines import TYPES, tiny_data

from defectfill.config import load_config
from defectfill.errors import ConfigError
from defectfill.losses import NonFiniteLossError
from gan_baselines.data import FewShotBatches
from gan_baselines.dgt.codes import defect_codes, gaussian_kernel, generator_input
from gan_baselines.dgt.config import DGTConfig, DGTLossWeights, DGTModelConfig, OpenMaxConfig
from gan_baselines.dgt.model import DGT, dgt_losses
from gan_baselines.dgt.openset import UNKNOWN, WeibullOpenSet, detect_defects
from gan_baselines.dgt.train import DGTTrainer, train_dgt


def tiny_model(seed: int = 0) -> DGT:
    torch.manual_seed(seed)
    return DGT(TYPES, resolution=32, base_channels=4, depth=2, classifier_channels=8, discriminator_channels=4)


def tiny_config(**fields) -> DGTConfig:
    model = DGTModelConfig(resolution=32, base_channels=4, depth=2, classifier_channels=8, discriminator_channels=4)
    kwargs = {"model": model, "openmax": OpenMaxConfig(tailsize=4, fakes_per_type=6), "train_batch_size": 2,
              "max_train_steps": 4, "learning_rate": 1e-3, "checkpointing_steps": 2,
              "checkpoints_total_limit": 10, "validation_steps": 0, "report_to": "none"}
    kwargs.update(fields)
    return DGTConfig(**kwargs)


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
    assert config.loss.alpha1_fore > 0 and config.model.resolution % 2 ** config.model.depth == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss:\n  alpha9: 1.0\n")
    with pytest.raises(ConfigError, match="alpha9"):
        load_config(DGTConfig, bad)
    with pytest.raises(ConfigError, match="multiple of 2"):
        DGTModelConfig(resolution=36, depth=3)


def test_one_training_step_changes_every_network(tmp_path):
    defects, good = tiny_data()
    trainer = DGTTrainer(tiny_config(), defects, tmp_path, good_images=good)
    before = {k: v.clone() for k, v in trainer.unwrapped.state_dict().items()}
    logs = trainer.train_step(0)
    assert np.isfinite(logs["loss/total"]) and np.isfinite(logs["loss/disc"])
    # G's last conv starts at zero (G starts as the identity on N), so its gradient reaches the head first
    assert torch.equal(before["generator.head.weight"], torch.zeros_like(before["generator.head.weight"]))
    after = trainer.unwrapped.state_dict()
    for name in ("generator.head.weight", "reconstructor.stem.0.weight", "segmenter.stem.0.weight",
                 "classifier.features.0.weight", "discriminator.net.0.weight"):
        assert not torch.equal(before[name], after[name]), name
    # DFC learns at classifier_lr_scale x the learning rate (the "main" optimizer's second group)
    assert [g["lr"] for g in trainer.optimizers["main"].param_groups] == [1e-3, 5e-3]


def _state(trainer: DGTTrainer) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": v for k, v in trainer.unwrapped.state_dict().items()}
    for name, opt in trainer.optimizers.items():
        for index, state in opt.state_dict()["state"].items():
            out.update({f"{name}.{index}.{k}": torch.as_tensor(v) for k, v in state.items()})
    return out


def test_resume_gives_the_same_weights_and_save_load_is_identical(tmp_path):
    """N straight steps == k steps + resume + N − k steps (bit-identical weights and Adam state), for a
    resume from the checkpoint at the stop and from an older one."""
    defects, good = tiny_data()
    straight = DGTTrainer(tiny_config(), defects, tmp_path / "a", good_images=good)
    straight.train()
    expected = _state(straight)
    # interrupted after 3 steps (checkpoints at 2 and 3), resumed from the latest and from step 2
    DGTTrainer(tiny_config(), defects, tmp_path / "c", good_images=good).train(until=3)
    assert not (tmp_path / "c" / "model").exists()
    for resume in ("latest", str(tmp_path / "c" / "checkpoints" / "step-000002")):
        resumed = DGTTrainer(tiny_config(), defects, tmp_path / "c", resume, good_images=good)
        assert resumed.step == (3 if resume == "latest" else 2)
        resumed.train()
        got = _state(resumed)
        assert got.keys() == expected.keys()
        for k, v in expected.items():
            assert torch.equal(v, got[k]), (resume, k)
    folder = tmp_path / "a" / "model"
    assert {"config.json", "model.safetensors", "openset.json", "openset.safetensors"} <= {p.name for p in folder.iterdir()}
    loaded = DGT.from_pretrained(str(folder))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    model = straight.unwrapped.eval()
    with torch.no_grad():
        assert torch.equal(model.segment(x), loaded.eval().segment(x))
        region = (x[:, :1] > 0).float()
        assert torch.equal(model.classify(x, region), loaded.classify(x, region))
    assert loaded.defect_types == sorted(TYPES) and loaded.resolution == 32  # types found, sorted


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    defects, good = tiny_data()
    trainer = DGTTrainer(tiny_config(), defects, tmp_path, good_images=good)
    trainer.train(until=2)
    kept = tmp_path / "checkpoints" / "step-000002"
    saved = (kept / "model.safetensors").read_bytes()
    with torch.no_grad():
        trainer.unwrapped.classifier.head.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"at step 3;.*step-000002 is kept"):
        trainer.train()
    assert trainer.store.list() == [kept] and (kept / "model.safetensors").read_bytes() == saved
    assert not (tmp_path / "model").exists()


def test_train_dgt_fits_openset_and_detect_defects_labels_regions(tmp_path):
    defects, good = tiny_data()
    config = tiny_config(max_train_steps=2, checkpointing_steps=0)
    config.openmax = dataclasses.replace(config.openmax, heat_threshold=0.0)
    model, openset = train_dgt(config, defects, tmp_path, good)
    regions = detect_defects(model, openset, defects[0].image, heat_threshold=0.0, min_area=1)
    assert regions and all(r.label in TYPES + [UNKNOWN] for r in regions)
    assert all(0 <= r.unknown_score <= 1 and r.mask.shape == (40, 40) for r in regions)
    # a second call finds the finished model and loads it (same Weibulls, same scores)
    _, openset2 = train_dgt(config, defects, tmp_path, good)
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
