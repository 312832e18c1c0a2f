"""Faults while training, in every training loop of ours: a NaN/inf loss stops with the step (or epoch)
number and keeps the last good checkpoint; a failed checkpoint write (a file-size limit: a full disk)
keeps the previous checkpoint intact and says so.

Loops: DefectFill (training.trainer: in test_reliability_crash.py, beside its tiny-model fixture), the base-model
pretraining (pretrain.train._train_loop), the GAN
trainer (gan_baselines.training.GanTrainer: R3GAN, multistage), the segmenter (downstream.deeplab).
RT-DETR trains in ultralytics' own loop; DGT / ICPR'20 in gan_baselines.fewshot_training (see the note)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_reliability_crash import _files, _poison, file_size_limit

from defectfill.errors import ModelError
from defectfill.io_utils import is_temp_file
from defectfill.losses import NonFiniteLossError


# ------------------------------------------------------------------------------------------ pretraining
def test_pretrain_loop_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path):
    from defectfill.distributed import new_accelerator
    from defectfill.pretrain.config import VAETrainConfig
    from defectfill.pretrain.train import _train_loop

    model = torch.nn.Linear(8, 8)
    optimizer = torch.optim.AdamW(model.parameters())
    accelerator = new_accelerator(cpu=True, mixed_precision="no")
    cfg = VAETrainConfig(max_train_steps=6, checkpointing_steps=2, lr_warmup_steps=0)
    x = torch.ones(4, 8)

    def compute_loss(step):  # steps are 0-based here: the 4th step's loss is NaN
        loss = model(x).pow(2).mean()
        return (loss * float("nan") if step == 3 else loss), {}

    root = tmp_path / "checkpoints"
    with pytest.raises(NonFiniteLossError, match=r"vae loss is nan at step 4; .*vae-000002 is kept"):
        _train_loop(accelerator, "vae", model, optimizer, cfg, 0, None, root, 2, compute_loss)
    assert [p.name for p in sorted(root.iterdir())] == ["vae-000002"]


# ------------------------------------------------------------------------------------------ GAN trainer
@pytest.fixture(scope="module")
def gan_samples():
    from defectfill.data.fabric import render_sample
    from defectfill.data.sample import DefectSample

    return [DefectSample(*render_sample("plain", t, seed, 32), t) for t in ("stain", "hole") for seed in range(2)]


def _r3gan(output_dir: Path, samples, **kw):
    from gan_baselines.r3gan.config import R3GANConfig, R3GANModelConfig
    from gan_baselines.r3gan.train import R3GANTrainer

    model = R3GANModelConfig(resolution=16, channels=[16, 16], noise_dim=8, embed_dim=16, defect_types=[])
    config = R3GANConfig(model=model, train_batch_size=2, max_train_steps=4, schedule_images=8, checkpointing_steps=1,
                         validation_steps=0, report_to="none", **kw)
    return R3GANTrainer(config, samples, output_dir)


def test_gan_trainer_stops_on_a_nan_loss_even_when_the_method_does_not_check(gan_samples, tmp_path, monkeypatch):
    """GanTrainer.train checks the logged losses itself before any checkpoint is written: a method whose
    train_step updates without the NaN check (`GanTrainer.update`'s) still stops, with the step and the
    kept checkpoint named."""

    def unchecked_update(self, optimizer, loss, step, checked=None):
        optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        optimizer.step()

    trainer = _r3gan(tmp_path, gan_samples)
    trainer.train(until=1)
    good = tmp_path / "checkpoints" / "step-000001"
    saved = _files(good)
    monkeypatch.setattr(type(trainer), "update", unchecked_update)  # the method's own checks gone
    _poison(trainer.unwrapped.discriminator)
    with pytest.raises(NonFiniteLossError, match=r"'loss/\w+' is nan at step 2; .*step-000001 is kept"):
        trainer.train()
    assert trainer.store.list() == [good] and _files(good) == saved
    assert not (tmp_path / "model").exists()


def test_a_failed_gan_checkpoint_write_keeps_the_previous_checkpoint_and_says_so(gan_samples, tmp_path):
    from gan_baselines.training import CheckpointStore

    trainer = _r3gan(tmp_path, gan_samples, checkpoints_total_limit=1)
    trainer.train(until=1)
    good = tmp_path / "checkpoints" / "step-000001"
    saved = _files(good)
    original = trainer.store.save

    def full_disk_save(step, *args):
        with file_size_limit(4096):
            return original(step, *args)

    trainer.store.save = full_disk_save
    with pytest.raises(ModelError, match=r"step-000002: writing the checkpoint failed \(.*File too large.*\); "
                                         r"nothing was replaced, the previous checkpoint\(s\) \['step-000001'\] in "
                                         r".* are intact"):
        trainer.train()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000001"]  # no partial folder
    assert _files(good) == saved
    resumed = _r3gan(tmp_path / "again", gan_samples)
    state = CheckpointStore.load(good, resumed.unwrapped, resumed.optimizers)  # complete and loadable
    assert state["step"] == 1
    assert not [p for p in tmp_path.rglob("*") if is_temp_file(p) or p.name.startswith(".")]


# ------------------------------------------------------------------------------------------ segmenter
@pytest.fixture(scope="module")
def seg_data(tmp_path_factory):
    from test_segmenter import blob_samples

    from defectfill.downstream.assemble import assemble
    from defectfill.downstream.config import AssembleConfig

    root = tmp_path_factory.mktemp("seg") / "data"
    return assemble(blob_samples(8, 1), [], root, ["stain"], AssembleConfig(val_fraction=0.25), seed=0).root


def _seg_config():
    from defectfill.downstream.config import DeepLabConfig

    return DeepLabConfig(arch="unet", epochs=2, batch_size=4, image_size=32, device="cpu")


def test_segmenter_nan_loss_stops_with_the_epoch_and_keeps_the_last_state(seg_data, tmp_path, monkeypatch):
    from defectfill.downstream import deeplab

    out = tmp_path / "unet"
    original = deeplab._save_resume_state
    saved = {}

    def save_then_diverge(folder, model, *args):
        original(folder, model, *args)
        saved.update(best=(out / deeplab.CHECKPOINT).read_bytes(), last=_files(folder))
        _poison(model)  # epoch 2 diverges

    monkeypatch.setattr(deeplab, "_save_resume_state", save_then_diverge)
    with pytest.raises(NonFiniteLossError, match=r"segmenter loss is nan at epoch 2, step \d+; training stopped .*"
                                                 r"kept intact: .*best\.safetensors \(epoch 1\), .*last \(after epoch 1"):
        deeplab.train_deeplab(seg_data, ["stain"], _seg_config(), out, seed=0)
    assert (out / deeplab.CHECKPOINT).read_bytes() == saved["best"]
    assert _files(out / deeplab.RESUME_DIR) == saved["last"]
    assert not (out / deeplab.CHECKPOINT_INFO).exists()


def test_a_failed_segmenter_best_weights_write_keeps_the_previous_ones_and_says_so(seg_data, tmp_path, monkeypatch):
    """Epoch 2 is made a new best (its validation F raised; the scores are otherwise real) so that its
    best.safetensors replaces epoch 1's; that write hits the file-size limit."""
    from defectfill.downstream import deeplab

    out = tmp_path / "unet"
    validate, save = deeplab._validate, deeplab.atomic_save
    epochs = []

    def improving_validate(*args):
        scores = validate(*args)
        epochs.append(len(epochs) + 1)
        return {**scores, "mean_f_measure": 0.1 * epochs[-1]}

    def atomic_save(path, writer):
        if len(epochs) == 2:
            with file_size_limit(1024):
                return save(path, writer)
        return save(path, writer)

    monkeypatch.setattr(deeplab, "_validate", improving_validate)
    monkeypatch.setattr(deeplab, "atomic_save", atomic_save)
    original = deeplab._save_resume_state
    after_epoch_1 = {}

    def save_resume_state(folder, *args):
        original(folder, *args)
        after_epoch_1.setdefault("best", (out / deeplab.CHECKPOINT).read_bytes())

    monkeypatch.setattr(deeplab, "_save_resume_state", save_resume_state)
    with pytest.raises(ModelError, match=r"writing the segmenter's weights after epoch 2 failed \(.*File too large.*\); "
                                         r"nothing was replaced, kept intact: .*best\.safetensors \(epoch 1\), "
                                         r".*last \(after epoch 1; the next run resumes from it\)"):
        deeplab.train_deeplab(seg_data, ["stain"], _seg_config(), out, seed=0)
    assert (out / deeplab.CHECKPOINT).read_bytes() == after_epoch_1["best"]
    assert json.loads((out / deeplab.RESUME_DIR / "state.json").read_text())["epoch"] == 1
    assert not [p for p in out.rglob("*") if is_temp_file(p)], "a half-written file was left"
    monkeypatch.setattr(deeplab, "atomic_save", save)  # disk space freed: the next run resumes and finishes
    info = deeplab.train_deeplab(seg_data, ["stain"], _seg_config(), out, seed=0)
    assert info["best_epoch"] == 2 and len(info["history"]) == 2
