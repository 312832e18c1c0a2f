"""R3GAN as a defect generator: losses on a toy D with a known input gradient, the architecture's
init, shapes, training steps, checkpoints (save/load, resume), the alarms and the bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from defectfill.config import load_config
from defectfill.data.fabric import render_sample
from defectfill.data.sample import DefectSample
from defectfill.errors import ConfigError, DataError, GenerationError
from defectfill.losses import NonFiniteLossError
from gan_baselines.data import augment_pairs
from gan_baselines.r3gan.config import R3GANConfig, R3GANModelConfig
from gan_baselines.r3gan.losses import discriminator_loss, gradient_penalty, rpgan_d_loss, rpgan_g_loss
from gan_baselines.r3gan.model import LEAKY_GAIN, R3GAN, ResidualBlock, composite
from gan_baselines.r3gan.train import R3GANTrainer
from gan_baselines.training import ModeCollapseWarning, batch_diversity, cosine_schedule, warn_if_collapsed


def tiny_model_config(**kw) -> R3GANModelConfig:
    return R3GANModelConfig(**{"resolution": 16, "channels": [16, 16], "noise_dim": 8, "embed_dim": 16,
                               "defect_types": ["stain", "hole"], **kw})


def tiny_config(**kw) -> R3GANConfig:
    fields = {"model": tiny_model_config(defect_types=[]), "train_batch_size": 2, "max_train_steps": 4,
              "schedule_images": 8, "checkpointing_steps": 2, "validation_steps": 0, "report_to": "none", **kw}
    return R3GANConfig(**fields)


@pytest.fixture(scope="module")
def samples() -> list[DefectSample]:
    out = []
    for defect_type in ("stain", "hole"):
        for seed in range(2):
            image, mask = render_sample("plain", defect_type, seed, 32)
            out.append(DefectSample(image, mask, defect_type))
    return out


# ---- losses on a toy D whose input gradient is known -------------------------------------------


def test_rpgan_losses_are_softplus_of_the_paired_difference():
    d_real, d_fake = torch.tensor([1.0, -0.5]), torch.tensor([0.25, 2.0])
    expected_d = np.mean([math.log1p(math.exp(-(1.0 - 0.25))), math.log1p(math.exp(-(-0.5 - 2.0)))])
    expected_g = np.mean([math.log1p(math.exp(-(0.25 - 1.0))), math.log1p(math.exp(-(2.0 + 0.5)))])
    assert float(rpgan_d_loss(d_real, d_fake)) == pytest.approx(expected_d, rel=1e-6)
    assert float(rpgan_g_loss(d_real, d_fake)) == pytest.approx(expected_g, rel=1e-6)


def test_r1_r2_on_a_linear_toy_d_and_the_gamma_half_scaling():
    # D(x) = <w, x>: ∇ₓD = w for every sample, so R1 = R2 = ‖w‖²
    w = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]]]])
    real = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0)).requires_grad_()
    fake = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(1)).requires_grad_()
    d_real, d_fake = (w * real).sum((1, 2, 3)), (w * fake).sum((1, 2, 3))
    norm2 = float(w.square().sum())  # 1 + 4 + 0.25 + 9
    gamma = 0.7
    total, terms = discriminator_loss(d_real, d_fake, real, fake, gamma)
    assert float(terms["r1"]) == pytest.approx(norm2) and float(terms["r2"]) == pytest.approx(norm2)
    adv = F.softplus(-(d_real - d_fake)).mean()
    assert float(total.detach()) == pytest.approx(float(adv.detach()) + gamma / 2 * 2 * norm2, rel=1e-6)
    no_penalty, _ = discriminator_loss(d_real, d_fake, real, fake, 0.0)
    assert float((total - no_penalty).detach()) == pytest.approx(gamma / 2 * (norm2 + norm2), rel=1e-6)


def test_penalty_is_per_sample_squared_norm_averaged_and_trains_d():
    # D(x) = a·½‖x‖²: ∇ₓD = a·x, R = a² E‖x‖²; create_graph lets the penalty's gradient reach a
    a = torch.tensor(1.5, requires_grad=True)
    x = torch.tensor([[1.0, 2.0], [0.0, 3.0]]).view(2, 1, 1, 2).requires_grad_()
    penalty = gradient_penalty(a * 0.5 * x.square().sum((1, 2, 3)), x)
    expected = 1.5**2 * (5.0 + 9.0) / 2
    assert float(penalty) == pytest.approx(expected)
    (grad_a,) = torch.autograd.grad(penalty, a)
    assert float(grad_a) == pytest.approx(2 * 1.5 * (5.0 + 9.0) / 2)


def test_cosine_schedule_endpoints_midpoint_and_hold():
    assert cosine_schedule(0, 100, 2.0, 0.2) == pytest.approx(2.0)
    assert cosine_schedule(50, 100, 2.0, 0.2) == pytest.approx(1.1)
    assert cosine_schedule(100, 100, 2.0, 0.2) == pytest.approx(0.2)
    assert cosine_schedule(1000, 100, 2.0, 0.2) == pytest.approx(0.2)


# ---- architecture ---------------------------------------------------------------------------------


def test_residual_block_is_identity_at_init_with_the_fixup_gain():
    torch.manual_seed(0)
    block = ResidualBlock(64, expansion=2, channels_per_group=16, total_blocks=16)
    x = torch.randn(2, 64, 8, 8)
    assert torch.equal(block(x), x)
    assert block.project.weight.abs().sum() == 0
    assert block.spatial.groups == 128 // 16
    expected_std = LEAKY_GAIN * 16 ** (-1 / 4) / math.sqrt(64)
    assert float(block.expand.weight.std()) == pytest.approx(expected_std, rel=0.05)


def test_shapes_and_composite_outside_the_mask():
    torch.manual_seed(0)
    model = R3GAN(tiny_model_config())
    good = torch.rand(3, 3, 16, 16) * 2 - 1
    mask = torch.zeros(3, 1, 16, 16)
    mask[:, :, 4:9, 5:12] = 1
    types = torch.tensor([0, 1, 0])
    out = model.generator(good, mask, torch.randn(3, 8), types)
    assert out.shape == (3, 3, 16, 16)
    assert model.discriminator(out, mask, types).shape == (3,)
    mixed = composite(out, good, mask)
    assert torch.equal(mixed[:, :, :4], good[:, :, :4]) and torch.equal(mixed[:, :, 4:9, 5:12], out[:, :, 4:9, 5:12])
    # the blanked region really is blanked: G cannot see the pixels it replaces
    other = good.clone()
    other[:, :, 4:9, 5:12] = 0.9
    z = torch.randn(3, 8)
    assert torch.equal(model.generator(good, mask, z, types), model.generator(other, mask, z, types))


def test_d_augmentation_p0_is_identity_p1_moves_mask_with_image_and_is_differentiable():
    rng = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 16, 16, requires_grad=True)
    masks = torch.zeros(4, 1, 16, 16)
    masks[:, :, 6:10, 6:10] = 1
    same, same_masks = augment_pairs(images, masks, 0.0, rng)
    assert same is images and same_masks is masks
    moved, moved_masks = augment_pairs(images, masks, 1.0, rng)
    assert moved.shape == images.shape and moved_masks.sum((1, 2, 3)).eq(16).all()
    (grad,) = torch.autograd.grad(moved.sum(), images)
    assert grad.abs().sum() > 0


# ---- training ------------------------------------------------------------------------------------


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_one_step_changes_g_d_and_ema(samples, tmp_path):
    trainer = R3GANTrainer(tiny_config(), samples, tmp_path)
    model = trainer.unwrapped
    before = {name: _params(getattr(model, name)) for name in ("generator", "discriminator", "generator_ema")}
    values = trainer.train_step(0)
    for name, old in before.items():
        new = getattr(model, name).state_dict()
        assert any(not torch.equal(old[k], new[k]) for k in old), f"{name} did not change"
    assert values["loss/r1"] > 0 and values["loss/r2"] > 0
    assert values["schedule/gamma"] == pytest.approx(2.0) and values["schedule/lr"] == pytest.approx(2e-4)


def test_lazy_regularisation_skips_penalties_between_steps(samples, tmp_path):
    trainer = R3GANTrainer(tiny_config(lazy_reg_every=2), samples, tmp_path)
    assert "loss/r1" in trainer.train_step(0)
    assert "loss/r1" not in trainer.train_step(1)


def test_save_load_identical_outputs_and_resume_same_state(samples, tmp_path):
    straight = R3GANTrainer(tiny_config(), samples, tmp_path / "a")
    straight.train()
    interrupted = R3GANTrainer(tiny_config(), samples, tmp_path / "b")
    interrupted.train(until=2)
    assert (tmp_path / "b" / "checkpoints" / "step-000002" / "config.json").is_file()
    resumed = R3GANTrainer(tiny_config(), samples, tmp_path / "b", resume_from_checkpoint="latest")
    assert resumed.step == 2
    resumed.train()
    a, b = straight.unwrapped.state_dict(), resumed.unwrapped.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for name in ("g", "d"):
        sa, sb = straight.optimizers[name].state_dict()["state"], resumed.optimizers[name].state_dict()["state"]
        assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)

    loaded = R3GAN.from_pretrained(tmp_path / "a" / "model")
    assert loaded.config.defect_types == ["hole", "stain"]
    windows = np.stack([samples[0].image[:16, :16], samples[1].image[8:24, 8:24]])
    masks = np.zeros((2, 16, 16), bool)
    masks[:, 5:11, 4:12] = True
    original = straight.unwrapped.eval().fill(windows, masks, defect_type="stain", rng=torch.Generator().manual_seed(3))
    again = loaded.eval().fill(windows, masks, defect_type="stain", rng=torch.Generator().manual_seed(3))
    assert original.dtype == np.uint8 and original.shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(original, again)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(samples, tmp_path):
    trainer = R3GANTrainer(tiny_config(checkpointing_steps=1), samples, tmp_path)
    trainer.train(until=1)
    good = tmp_path / "checkpoints" / "step-000001"
    saved = (good / "model.safetensors").read_bytes()
    with torch.no_grad():
        trainer.unwrapped.discriminator.psi.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"at step 2;.*step-000001 is kept"):
        trainer.train()
    assert trainer.store.list() == [good] and (good / "model.safetensors").read_bytes() == saved


def test_mode_collapse_warning():
    same = torch.ones(4, 3, 8, 8)
    assert batch_diversity(same) == 0.0
    with pytest.warns(ModeCollapseWarning, match="step 7"):
        assert warn_if_collapsed(batch_diversity(same), 0.5, 0.05, step=7)
    assert not warn_if_collapsed(0.2, 0.5, 0.05, step=7)


# ---- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("field,value", [("gamma_start", 0.0), ("gamma_end", -1.0), ("schedule_images", 0),
                                         ("max_train_steps", 0)])
def test_non_positive_gamma_or_schedule_is_a_config_error(field, value):
    with pytest.raises(ConfigError, match=field.split("_")[0]):
        tiny_config(**{field: value})


def test_configs_load_and_unknown_keys_are_rejected(tmp_path):
    for name in ("r3gan_tiny.yaml", "r3gan_gpu.yaml"):
        config = load_config(R3GANConfig, f"configs/{name}")
        R3GAN(config.model)  # the architecture builds
    bad = tmp_path / "bad.yaml"
    bad.write_text("gama_start: 1.0\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(R3GANConfig, bad)
    with pytest.raises(ConfigError, match="channels_per_group"):
        R3GANModelConfig(channels=[12, 16])


def test_type_with_fewer_samples_than_the_batch_is_a_data_error(samples, tmp_path):
    with pytest.raises(DataError, match=r"fewer samples than the batch size 3"):
        R3GANTrainer(tiny_config(train_batch_size=3), samples, tmp_path)


def test_fill_rejects_unknown_type_and_mismatched_masks():
    model = R3GAN(tiny_model_config()).eval()
    windows = np.zeros((1, 16, 16, 3), np.uint8)
    with pytest.raises(GenerationError, match="knot"):
        model.fill(windows, np.ones((1, 16, 16), bool), defect_type="knot", rng=torch.Generator())
    with pytest.raises(GenerationError, match="windows/masks"):
        model.fill(windows, np.ones((1, 20, 20), bool), defect_type="stain", rng=torch.Generator())


def test_train_command_writes_a_loadable_model(tmp_path):
    from defectfill.cli import main as defectfill_main
    from defectfill.config import save_config
    from defectfill.data.fabric import simulate_dataset

    data = simulate_dataset(tmp_path / "source", ["plain"], ["stain", "hole"], n_good_train=0, n_good_test=0,
                            n_defect_per_type=2, size=32)
    save_config(tiny_config(max_train_steps=1, checkpointing_steps=1), tmp_path / "r3gan.yaml")
    code = defectfill_main(["train", "--generator", "r3gan", "--config", str(tmp_path / "r3gan.yaml"),
                            "--train_data_dir", str(data), "--output_dir", str(tmp_path / "run")])
    assert code == 0
    model = R3GAN.from_pretrained(tmp_path / "run" / "model")
    assert model.defect_types == ["hole", "stain"] and model.config.resolution == 16


def test_plugin_through_the_registry_runner_and_downstream_stage(tmp_path):
    from helpers_gan_plugins import run_plugin_through_downstream

    config = tiny_config(max_train_steps=2, checkpointing_steps=2)
    config.model = tiny_model_config(resolution=32, defect_types=[])
    run_plugin_through_downstream("r3gan", config, tmp_path)
