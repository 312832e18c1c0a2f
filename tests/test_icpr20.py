"""The ICPR'20 conditional pix2pix at tiny sizes: conditioning, composite, loss equation, training, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_gan_baselines import TYPES, tiny_data

from defectfill.config import load_config
from defectfill.errors import ConfigError, ModelError
from gan_baselines.data import FewShotBatches
from gan_baselines.icpr20.config import ICPR20Config, ICPR20ModelConfig
from gan_baselines.icpr20.model import ICPR20, icpr20_losses
from gan_baselines.icpr20.train import ICPR20Trainer, train_icpr20


def tiny_model() -> ICPR20:
    torch.manual_seed(0)
    return ICPR20(TYPES, resolution=32, base_channels=4, depth=2, discriminator_channels=4)


def test_input_channels_composite_and_noise():
    model = tiny_model()
    assert model.generator.stem[0].in_channels == 3 + 1 + len(TYPES) + 1
    image = torch.rand(2, 3, 32, 32) * 2 - 1
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:20, 10:18] = 1
    labels = torch.tensor([0, 1])
    out = model(image, mask, labels, torch.Generator().manual_seed(0))
    assert out.shape == image.shape and out.abs().max() <= 1
    outside = (1 - mask).bool().expand_as(image)
    assert torch.equal(out[outside], image[outside])          # pixels outside the mask are the input's
    again = model(image, mask, labels, torch.Generator().manual_seed(0))
    other = model(image, mask, labels, torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and not torch.equal(out, other)  # the noise makes candidates differ
    # the masked pixels of the input are never seen: changing them changes nothing
    changed = image.clone()
    changed[mask.bool().expand_as(image)] = 0.5
    assert torch.equal(out, model(changed, mask, labels, torch.Generator().manual_seed(0)))
    # the class matters
    assert not torch.equal(out, model(image, mask, 1 - labels, torch.Generator().manual_seed(0)))


def test_generator_loss_is_adversarial_plus_weighted_masked_l1():
    defects, good = tiny_data()
    batch = FewShotBatches(defects, good, TYPES, 32).sample(2, torch.Generator().manual_seed(0))
    model = tiny_model()
    loss, terms, x, _ = icpr20_losses(model, batch, torch.Generator().manual_seed(0), l1_weight=7.0)
    assert torch.allclose(loss, terms["adv"] + 7.0 * terms["l1"])
    m = batch["mask"]
    assert terms["l1"].item() == pytest.approx(((x - batch["defect"]).abs() * m).sum().item() / (3 * m.sum().item()),
                                               rel=1e-5)


def tiny_config(**fields) -> ICPR20Config:
    kwargs = {"model": ICPR20ModelConfig(resolution=32, base_channels=4, depth=2, discriminator_channels=4),
              "train_batch_size": 2, "max_train_steps": 2, "learning_rate": 1e-3, "checkpointing_steps":
              1, "validation_steps": 0, "report_to": "none"}
    kwargs.update(fields)
    return ICPR20Config(**kwargs)


def test_one_step_changes_generator_and_discriminator(tmp_path):
    defects, _ = tiny_data()
    trainer = ICPR20Trainer(tiny_config(), defects, tmp_path)  # no good image needed
    before = {k: v.clone() for k, v in trainer.unwrapped.state_dict().items()}
    logs = trainer.train_step(0)
    assert np.isfinite(logs["loss/generator"]) and np.isfinite(logs["loss/disc"])
    for part in ("generator.stem.0.weight", "discriminator.net.0.weight"):
        assert not torch.equal(before[part], trainer.unwrapped.state_dict()[part]), part


def test_train_save_load_identical(tmp_path):
    defects, _ = tiny_data()
    config = tiny_config(validation_steps=1)
    model = train_icpr20(config, defects, tmp_path)
    assert (tmp_path / "model" / "model.safetensors").is_file() and (tmp_path / "model" / "config.json").is_file()
    assert (tmp_path / "samples" / "step-000002.png").is_file()  # the validation sample grid
    loaded = ICPR20.from_pretrained(str(tmp_path / "model"))
    image, mask = torch.rand(1, 3, 32, 32) * 2 - 1, torch.zeros(1, 1, 32, 32)
    mask[..., 5:15, 5:15] = 1
    with torch.no_grad():
        a = model.eval()(image, mask, torch.tensor([1]), torch.Generator().manual_seed(3))
        b = loaded.eval()(image, mask, torch.tensor([1]), torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and loaded.defect_types == sorted(TYPES)
    with pytest.raises(ModelError, match="defect types"):  # a finished folder of other types is not reused
        train_icpr20(tiny_config(model=ICPR20ModelConfig(resolution=32, base_channels=4, depth=2,
                                                         discriminator_channels=4, defect_types=TYPES)),
                     defects, tmp_path)
    assert load_config(ICPR20Config, "configs/icpr20_tiny.yaml").model.resolution == 64


def test_train_command_writes_a_loadable_model(tmp_path):
    """`defectfill train --generator icpr20` (the cli path of R3GAN and multistage): config + --set, model out."""
    from defectfill.cli import main
    from defectfill.config import save_config
    from defectfill.data.fabric import simulate_dataset

    data = simulate_dataset(tmp_path / "source", ["plain"], ["stain", "hole"], n_good_train=0, n_good_test=0,
                            n_defect_per_type=2, size=32)
    save_config(tiny_config(), tmp_path / "icpr20.yaml")
    assert main(["train", "--generator", "icpr20", "--config", str(tmp_path / "icpr20.yaml"), "--train_data_dir",
                 str(data), "--output_dir", str(tmp_path / "out"), "--seed", "3"]) == 0
    model = ICPR20.from_pretrained(str(tmp_path / "out" / "model"))
    assert model.defect_types == ["hole", "stain"] and model.resolution == 32
    assert load_config(ICPR20Config, tmp_path / "out" / "train_config.yaml").seed == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("l1_wieght: 3\n")
    with pytest.raises(ConfigError, match="l1_wieght"):
        load_config(ICPR20Config, bad)


def test_resume_is_bit_exact(tmp_path):
    """4 straight steps == 3 steps + resume + 1 step (weights and both Adam states)."""
    defects, _ = tiny_data()
    straight = ICPR20Trainer(tiny_config(max_train_steps=4), defects, tmp_path / "a")
    straight.train()
    ICPR20Trainer(tiny_config(max_train_steps=4), defects, tmp_path / "b").train(until=3)
    resumed = ICPR20Trainer(tiny_config(max_train_steps=4), defects, tmp_path / "b", "latest")
    assert resumed.step == 3
    resumed.train()
    for k, v in straight.unwrapped.state_dict().items():
        assert torch.equal(v, resumed.unwrapped.state_dict()[k]), k
    for name in ("gen", "disc"):
        a, b = straight.optimizers[name].state_dict()["state"], resumed.optimizers[name].state_dict()["state"]
        assert all(torch.equal(torch.as_tensor(a[i][s]), torch.as_tensor(b[i][s])) for i in a for s in a[i])
