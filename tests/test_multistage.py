"""Multistage GAN: the Gram matrix by hand, the VGG choices, the losses, shapes, both training stages,
checkpoints (save/load, resume), the alarms and the bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from defectfill.config import load_config
from defectfill.data.fabric import render_sample
from defectfill.data.sample import DefectSample
from defectfill.errors import ConfigError, DataError, GenerationError, ModelError
from defectfill.losses import NonFiniteLossError
from gan_baselines.multistage.config import MultistageConfig, MultistageModelConfig
from gan_baselines.multistage.losses import cgan_d_loss, cgan_g_loss, hinge_reconstruction
from gan_baselines.multistage.model import MultistageGAN, box_masks, paste_patches, patch_boxes
from gan_baselines.multistage.train import MultistageTrainer, build_multistage
from gan_baselines.multistage.vgg import VGGFeatures, gram_matrix, receptive_field, valid_positions


def tiny_model_config(**kw) -> MultistageModelConfig:
    fields = {"resolution": 32, "patch_size": 16, "gram_layers": ["relu1_1", "relu2_1"],
              "perceptual_layers": ["relu1_1"], "gram_rank": 4, "noise_dim": 8, "cond_dim": 16, "g_channels": 8,
              "d_channels": 8, "unet_channels": [8, 16], **kw}
    return MultistageModelConfig(**fields)


def tiny_config(**kw) -> MultistageConfig:
    fields = {"model": tiny_model_config(), "train_batch_size": 2, "stage1_steps": 2, "stage2_steps": 2,
              "checkpointing_steps": 2, "validation_steps": 0, "report_to": "none", **kw}
    return MultistageConfig(**fields)


@pytest.fixture(scope="module")
def samples() -> list[DefectSample]:
    out = []
    for defect_type in ("stain", "hole"):
        for seed in range(2):
            image, mask = render_sample("twill", defect_type, seed, 48)
            out.append(DefectSample(image, mask, defect_type))
    return out


# ---- Gram matrix and VGG ----------------------------------------------------------------------------


def test_gram_matrix_on_a_hand_computed_case():
    # ψ = [[1, 2], [3, 4]] (C = 2, H = 1, W = 2): ψψᵀ = [[5, 11], [11, 25]], / (C·H·W = 4)
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)
    expected = torch.tensor([[[1.25, 2.75], [2.75, 6.25]]])
    torch.testing.assert_close(gram_matrix(features), expected)
    # only the first position valid: ψ = [[1], [3]] -> [[1, 3], [3, 9]] / (C·1 = 2)
    valid = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    torch.testing.assert_close(gram_matrix(features, valid), torch.tensor([[[0.5, 1.5], [1.5, 4.5]]]))


def test_receptive_fields_and_valid_positions():
    assert [receptive_field(n) for n in ("relu1_1", "relu2_1", "relu3_1", "relu4_1")] == [3, 10, 24, 68]
    exclude = torch.zeros(1, 1, 8, 8)
    exclude[..., 0:2, 0:2] = 1
    valid = valid_positions(exclude, (4, 4))
    assert valid[0, 0, 0, 0] == 0 and valid.sum() == 15
    assert valid_positions(torch.ones(1, 1, 8, 8), (4, 4)).sum() == 16  # nothing left: every position


def test_vgg_random_weights_are_seeded_and_named_imagenet_missing_is_a_clear_error(tmp_path):
    a, b = VGGFeatures(["relu1_1"]), VGGFeatures(["relu1_1"])
    assert a.load_weights("random", seed=3) == "vgg19-random(seed=3)"
    b.load_weights("random", seed=3)
    assert torch.equal(a.body[0].weight, b.body[0].weight)
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        with pytest.raises(ModelError, match="vgg19-dcbb9e9d.pth.*vgg_weights: random"):
            a.load_weights("imagenet")
    finally:
        torch.hub.set_dir(old)


def test_texture_patch_smaller_than_the_receptive_field_is_an_error():
    vgg = VGGFeatures(["relu2_1"])
    with pytest.raises(DataError, match=r"smaller than the receptive field of VGG19 relu2_1 \(10 px\)"):
        vgg(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ConfigError, match=r"relu4_1 \(68 px\)"):
        MultistageModelConfig(resolution=64, gram_layers=["relu1_1", "relu4_1"])


# ---- losses -------------------------------------------------------------------------------------------


def test_losses_look_like_their_equations():
    d_real, d_fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 0.0])
    sigmoid = torch.sigmoid
    expected_d = -(torch.log(sigmoid(d_real)).mean() + torch.log(1 - sigmoid(d_fake)).mean())
    assert float(cgan_d_loss(d_real, d_fake)) == pytest.approx(float(expected_d), rel=1e-6)
    assert float(cgan_g_loss(d_fake)) == pytest.approx(float(-torch.log(sigmoid(d_fake)).mean()), rel=1e-6)
    target = torch.zeros(2, 3, 4, 4)
    output = torch.stack([torch.full((3, 4, 4), 0.3), torch.full((3, 4, 4), 0.04)])
    # per image ‖y − T(x)‖₁ = 0.3 and 0.04; margin 0.1 -> max(0, 0.2), max(0, −0.06) -> mean 0.1
    assert float(hinge_reconstruction(target, output, 0.1)) == pytest.approx(0.1)


# ---- architecture -------------------------------------------------------------------------------------


def test_shapes_and_the_hard_seamed_composite():
    torch.manual_seed(0)
    model, name = build_multistage(tiny_config(), ["stain", "hole"])
    assert name == "vgg19-random(seed=0)"
    windows = torch.rand(3, 3, 32, 32) * 2 - 1
    masks = torch.zeros(3, 1, 32, 32)
    masks[:, :, 10:14, 8:20] = 1
    types = torch.tensor([0, 1, 1])
    boxes = patch_boxes(masks)
    (y0, y1, x0, x1) = boxes[0]
    assert (y1 - y0, x1 - x0) == (8, 12 + 2 * math.ceil(0.25 * 12))  # bbox + context per side, min 8
    assert y0 <= 10 and y1 >= 14 and x0 <= 8 and x1 >= 20
    grams = model.texture_grams(windows, box_masks(boxes, windows))
    assert grams["relu1_1"].shape == (3, 64, 64) and grams["relu2_1"].shape == (3, 128, 128)
    patches = model.generator(torch.randn(3, 8), grams, types)
    assert patches.shape == (3, 3, 16, 16) and patches.abs().max() <= 1
    assert model.patch_discriminator(patches, grams, types).shape == (3,)
    composite, box, _ = model.compose(windows, masks, types, torch.Generator().manual_seed(0))
    outside = box == 0
    assert torch.equal(composite.masked_select(outside.expand_as(composite)), windows.masked_select(outside.expand_as(windows)))
    assert model.fusion(composite, box).shape == (3, 3, 32, 32)
    assert model.fusion_discriminator(windows).shape == (3, 1, 4, 4)
    pasted = paste_patches(windows, torch.ones(3, 3, 16, 16), boxes)
    assert torch.equal(pasted[0, :, y0:y1, x0:x1], torch.ones(3, y1 - y0, x1 - x0))


# ---- training -------------------------------------------------------------------------------------------


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_stage_one_step_changes_g_and_ds_stage_two_changes_t_and_dt_only(samples, tmp_path):
    trainer = MultistageTrainer(tiny_config(), samples, tmp_path)
    model = trainer.unwrapped
    names = ("generator", "patch_discriminator", "fusion", "fusion_discriminator", "vgg")

    def changed(before):
        return {n for n in names if any(not torch.equal(before[n][k], v) for k, v in getattr(model, n).state_dict().items())}

    before = {n: _state(getattr(model, n)) for n in names}
    trainer.train_step(0)
    assert changed(before) == {"generator", "patch_discriminator"}
    before = {n: _state(getattr(model, n)) for n in names}
    values = trainer.train_step(2)  # stage 2
    assert changed(before) == {"fusion", "fusion_discriminator"}
    assert {"loss/hinge", "loss/perceptual", "loss/t_adv"} <= set(values)


def test_save_load_identical_outputs_and_resume_same_state(samples, tmp_path):
    straight = MultistageTrainer(tiny_config(), samples, tmp_path / "a")
    straight.train()
    interrupted = MultistageTrainer(tiny_config(), samples, tmp_path / "b")
    interrupted.train(until=2)  # the end of stage 1
    resumed = MultistageTrainer(tiny_config(), samples, tmp_path / "b", resume_from_checkpoint="latest")
    assert resumed.step == 2
    resumed.train()
    a, b = straight.unwrapped.state_dict(), resumed.unwrapped.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    loaded = MultistageGAN.from_pretrained(tmp_path / "a" / "model")
    windows = np.stack([samples[0].image[:32, :32], samples[2].image[8:40, 8:40]])
    masks = np.zeros((2, 32, 32), bool)
    masks[:, 12:18, 6:20] = True
    original = straight.unwrapped.eval().fill(windows, masks, defect_type="hole", rng=torch.Generator().manual_seed(5))
    again = loaded.eval().fill(windows, masks, defect_type="hole", rng=torch.Generator().manual_seed(5))
    assert original.shape == (2, 32, 32, 3) and original.dtype == np.uint8
    np.testing.assert_array_equal(original, again)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(samples, tmp_path):
    trainer = MultistageTrainer(tiny_config(checkpointing_steps=1), samples, tmp_path)
    trainer.train(until=1)
    with torch.no_grad():
        trainer.unwrapped.generator.to_rgb.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"at step 2;.*step-000001 is kept"):
        trainer.train()
    assert [p.name for p in trainer.store.list()] == ["step-000001"]


# ---- bad input ----------------------------------------------------------------------------------------------


def test_mask_larger_than_the_patch_and_unknown_type_are_generation_errors():
    model, _ = build_multistage(tiny_config(), ["stain"])
    windows = np.zeros((1, 32, 32, 3), np.uint8)
    with pytest.raises(GenerationError, match="larger than its patch"):
        model.fill(windows, np.ones((1, 40, 40), bool), defect_type="stain", rng=torch.Generator())
    with pytest.raises(GenerationError, match="texture patches"):
        model.fill(np.zeros((1, 16, 16, 3), np.uint8), np.ones((1, 16, 16), bool), defect_type="stain",
                   rng=torch.Generator())
    with pytest.raises(GenerationError, match="'knot'"):
        model.fill(windows, np.ones((1, 32, 32), bool), defect_type="knot", rng=torch.Generator())


def test_type_with_fewer_samples_than_the_batch_and_bad_configs(samples, tmp_path):
    with pytest.raises(DataError, match="fewer samples than the batch size 4"):
        MultistageTrainer(tiny_config(train_batch_size=4), samples, tmp_path)
    with pytest.raises(ConfigError, match="stage2_steps"):
        tiny_config(stage2_steps=0)
    with pytest.raises(ConfigError, match="relu9_1"):
        tiny_model_config(gram_layers=["relu9_1"])
    for name in ("multistage_tiny.yaml", "multistage_gpu.yaml"):
        load_config(MultistageConfig, f"configs/{name}")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  gram_layer: [relu1_1]\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(MultistageConfig, bad)


def test_plugin_through_the_registry_runner_and_downstream_stage(tmp_path):
    from helpers_gan_plugins import run_plugin_through_downstream

    result = run_plugin_through_downstream("multistage", tiny_config(stage1_steps=1, stage2_steps=1), tmp_path)
    assert result["dataset"]["train_images"]["synthetic"] == 4
