"""DefectFill training loop: learning, exact resume, checkpoints, outputs, bad input, CLI/script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers_defectfill_training import (  # noqa: F401
    make_base_model,
    make_mvtec_dataset,
    single_torch_thread,
    tiny_config,
    tiny_step_setup,
)

from defectfill.errors import ConfigError, DataError, ModelError
from defectfill.losses import LossWeights, NonFiniteLossError
from defectfill.models import weights as W
from defectfill.training import DefectFillTrainer, read_loss_log
from defectfill.training.data import DefectFillDataset, StepBatchSampler
from defectfill.training.step import defectfill_step

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    return make_base_model(tmp_path_factory.mktemp("base") / "tiny-inpaint")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    return make_mvtec_dataset(tmp_path_factory.mktemp("data") / "fabric", {"stain": 3, "broken_end": 2})


def _state(trainer):
    """Every trainable tensor (LoRA + concept rows) and the optimiser state, as plain tensors."""
    unet, te = trainer.models.unet, trainer.models.text_encoder
    out = {f"unet.{n}": p.detach().clone() for n, p in unet.named_parameters() if p.requires_grad}
    out.update({f"te.{n}": p.detach().clone() for n, p in te.named_parameters() if "lora_" in n})
    weight = te.get_input_embeddings().weight
    out["rows"] = weight[trainer.tokens.ids].detach().clone()
    for i, (_, s) in enumerate(sorted(trainer.optimizer.state_dict()["state"].items())):
        for k, v in s.items():
            out[f"opt.{i}.{k}"] = torch.as_tensor(v).clone()
    return out


@pytest.mark.slow
def test_tiny_run_lowers_the_loss_and_writes_the_model(base_model, dataset_dir, tmp_path):
    """50 steps of the tiny config (learning rates raised: the base model here is random, so the
    LoRA has to move far to change its predictions)."""
    out_dir = tmp_path / "run"
    config = tiny_config(base_model, dataset_dir, out_dir, max_train_steps=50, checkpointing_steps=25,
                         checkpoints_total_limit=1, validation_steps=50, num_validation_images=2,
                         report_to="tensorboard", learning_rate=3e-2, text_encoder_lr=6e-3, embedding_lr=0.15)
    trainer = DefectFillTrainer(config)
    m = trainer.models
    base_before = {n: p.detach().clone() for n, p in m.unet.named_parameters() if "lora_" not in n}
    # a fixed evaluation: 4 batches x 4 (noise, timestep) draws, the same before and after training
    batches = [torch.utils.data.default_collate([trainer.dataset[(i % len(trainer.dataset), 10**6 + 2 * j + i)]
                                                 for i in range(2)]) for j in range(4)]

    def evaluate() -> float:
        with torch.no_grad():
            return float(np.mean([
                float(defectfill_step(m.unet, m.vae, m.text_encoder, m.noise_scheduler, b, trainer.tokens.ids,
                                      weights=trainer.loss_weights, object_alpha=0.3,
                                      generator=torch.Generator().manual_seed(100 + 4 * j + k)).total)
                for j, b in enumerate(batches) for k in range(4)]))

    eval_before = evaluate()
    assert trainer.train() == out_dir
    eval_after = evaluate()
    log = read_loss_log(out_dir)
    assert [r["step"] for r in log] == list(range(1, 51))
    total = [r["loss"] for r in log]
    first, last = float(np.mean(total[:10])), float(np.mean(total[-10:]))
    print(f"mean total loss, steps 1-10: {first:.4f}, steps 41-50: {last:.4f}; "
          f"fixed evaluation before: {eval_before:.4f}, after: {eval_after:.4f}")
    assert last < first
    assert eval_after < eval_before
    for record in log:
        assert {"loss_defect", "loss_object", "loss_attention", "lr"} <= set(record)
    # outputs: the model, one checkpoint kept (limit 1), config, sample grid, TensorBoard events
    info = W.read_model_info(out_dir)
    assert info["concepts"] == {"broken_end": "<broken_end>", "stain": "<stain>"}
    assert info["training"]["max_train_steps"] == 50 and info["lora"]["rank"] == 4
    assert [p.name for p in out_dir.glob("checkpoint-*")] == ["checkpoint-50"]
    assert (out_dir / "samples" / "step-000050.png").is_file()
    assert list((out_dir / "logs").rglob("events.out.tfevents.*"))
    assert yaml.safe_load((out_dir / "config.yaml").read_text())["train_data_dir"] == str(dataset_dir)
    for name, p in trainer.models.unet.named_parameters():
        if "lora_" not in name:
            assert torch.equal(p, base_before[name]), f"frozen weight {name} changed"


def test_resume_continues_exactly(base_model, dataset_dir, tmp_path):
    straight_dir, resumed_dir = tmp_path / "straight", tmp_path / "resumed"
    common = {"max_train_steps": 4, "checkpointing_steps": 2, "lr_warmup_steps": 2}
    straight = DefectFillTrainer(tiny_config(base_model, dataset_dir, straight_dir, **common))
    straight.train()
    # an interrupted run: only its step-2 checkpoint exists; resume it with the same config
    shutil.copytree(straight_dir / "checkpoint-2", resumed_dir / "checkpoint-2")
    resumed = DefectFillTrainer(tiny_config(base_model, dataset_dir, resumed_dir, resume_from_checkpoint="latest",
                                            **common))
    resumed.train()
    assert resumed.global_step == straight.global_step == 4
    a, b = _state(straight), _state(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resume"
    assert straight.lr_scheduler.state_dict() == resumed.lr_scheduler.state_dict()
    steps_straight = {r["step"]: r["loss"] for r in read_loss_log(straight_dir)}
    steps_resumed = {r["step"]: r["loss"] for r in read_loss_log(resumed_dir)}
    assert sorted(steps_resumed) == [3, 4]
    assert all(steps_resumed[s] == steps_straight[s] for s in (3, 4))


def test_resume_from_missing_or_corrupted_checkpoint_fails_and_writes_nothing(base_model, dataset_dir, tmp_path):
    out = tmp_path / "run"
    DefectFillTrainer(tiny_config(base_model, dataset_dir, out, max_train_steps=1, checkpointing_steps=1)).train()
    with pytest.raises(ModelError, match="checkpoint-7.*not found.*checkpoint-1"):
        DefectFillTrainer(tiny_config(base_model, dataset_dir, out, resume_from_checkpoint="checkpoint-7")).train()
    for victim in (W.LORA_WEIGHTS, "optimizer.bin"):
        broken = tmp_path / f"broken-{victim}"
        shutil.copytree(out, broken)
        path = broken / "checkpoint-1" / victim
        path.write_bytes(path.read_bytes()[:100])
        before = {p: p.stat().st_mtime_ns for p in broken.rglob("*")}
        config = tiny_config(base_model, dataset_dir, broken, resume_from_checkpoint="latest", max_train_steps=3,
                             checkpointing_steps=1)
        with pytest.raises(ModelError, match="corrupted"):
            DefectFillTrainer(config).train()
        assert {p: p.stat().st_mtime_ns for p in broken.rglob("*")} == before, "a failed resume wrote files"


def test_bad_input_is_refused_with_clear_errors(base_model, dataset_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"\['hole'\] not found.*broken_end.*stain"):
        DefectFillTrainer(tiny_config(base_model, dataset_dir, tmp_path / "a", defect_types=["hole"]))
    with pytest.raises(DataError, match="smaller than the training size 128x128"):
        DefectFillTrainer(tiny_config(base_model, dataset_dir, tmp_path / "b", resolution=128))
    with pytest.raises(ConfigError, match="already in the tokenizer vocabulary"):
        DefectFillTrainer(tiny_config(base_model, dataset_dir, tmp_path / "c", concept_tokens={"stain": "photo"}))
    with pytest.raises(ConfigError, match=r"not trained"):
        DefectFillTrainer(tiny_config(base_model, dataset_dir, tmp_path / "d", concept_tokens={"oil": "<oil>"}))
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("resolution: 64\nlearning_rte: 0.1\n")
    from defectfill.training import load_train_config

    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['learning_rte'\].*valid keys are.*learning_rate"):
        load_train_config(bad_yaml)
    with pytest.raises(ModelError, match="no unet/ folder"):
        DefectFillTrainer(tiny_config(tmp_path, dataset_dir, tmp_path / "e"))
    assert not any((tmp_path / n).exists() for n in "abcde")


def test_masks_emptied_at_latent_size_keep_their_centroid():
    from defectfill.data.sample import DefectSample
    from defectfill.models.components import build_clip_tokenizer

    image = np.full((64, 64, 3), 128, np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[30:32, 40] = True  # 2 pixels: nothing survives an area resize to 8x8
    tokenizer = build_clip_tokenizer()
    dataset = DefectFillDataset({"knot": [DefectSample(image, mask, "knot")]}, tokenizer, {"knot": "a"},
                                resolution=64, scale_range=(1.0, 1.0), random_flip=False)
    item = dataset[(0, 0)]
    assert bool(item["mask_rescued"]) and int(item["defect_mask_latent"].sum()) == 1
    assert item["defect_mask_latent"][0, 30 // 8, 40 // 8] == 1


def test_step_batches_are_a_function_of_seed_step_and_rank():
    full = list(StepBatchSampler(5, 2, seed=3, stop=6))
    assert full == list(StepBatchSampler(5, 2, seed=3, stop=6))
    assert full[2:] == list(StepBatchSampler(5, 2, seed=3, start=2, stop=6))  # resume = the suffix
    rank0 = list(StepBatchSampler(5, 2, seed=3, rank=0, world_size=2, stop=4))
    rank1 = list(StepBatchSampler(5, 2, seed=3, rank=1, world_size=2, stop=4))
    draws0 = {d for batch in rank0 for _, d in batch}
    draws1 = {d for batch in rank1 for _, d in batch}
    assert not draws0 & draws1 and len(draws0 | draws1) == 16
    epoch0 = sorted(i for batch in full[:2] for i, _ in batch) + [full[2][0][0]]
    assert sorted(epoch0) == [0, 1, 2, 3, 4]  # every image once per epoch
    assert full != list(StepBatchSampler(5, 2, seed=4, stop=6))


def test_nan_loss_raises_instead_of_skipping():
    models, tokens, _, _, batch = tiny_step_setup()
    batch = dict(batch)
    batch["pixel_values"] = batch["pixel_values"].clone()
    batch["pixel_values"][0, :, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="loss_defect.*is nan"):
        defectfill_step(models.unet, models.vae, models.text_encoder, models.noise_scheduler, batch, tokens.ids,
                        weights=LossWeights(), object_alpha=0.3, generator=torch.Generator().manual_seed(0),
                        backward=lambda loss: loss.backward())


def test_step_losses_use_the_defect_mask_for_both_terms():
    """L_def and L_obj of a step are the loss functions applied with the DEFECT mask (M' from M,
    not from the random boxes M_rand that the object pass inpaints)."""
    import torch.nn.functional as F

    from defectfill.losses import defect_loss, object_loss

    models, tokens, _, _, batch = tiny_step_setup()
    out = defectfill_step(models.unet, models.vae, models.text_encoder, models.noise_scheduler, batch, tokens.ids,
                          weights=LossWeights(), object_alpha=0.3, generator=torch.Generator().manual_seed(0))
    b = batch["pixel_values"].shape[0]
    pred_defect, pred_object = out.noise_pred[:b], out.noise_pred[b:]
    defect_latent = batch["defect_mask_latent"]
    boxes_latent = F.interpolate(batch["box_mask"], size=defect_latent.shape[-2:])
    assert torch.allclose(out.defect, defect_loss(pred_defect, out.target, defect_latent))
    assert torch.allclose(out.object, object_loss(pred_object, out.target, defect_latent, 0.3))
    assert not torch.allclose(out.object, object_loss(pred_object, out.target, boxes_latent, 0.3))
    assert not torch.equal(defect_latent, boxes_latent)


def test_bf16_mixed_precision_keeps_trainable_weights_in_float32(base_model, dataset_dir, tmp_path):
    trainer = DefectFillTrainer(tiny_config(base_model, dataset_dir, tmp_path / "bf16", mixed_precision="bf16",
                                            max_train_steps=1))
    assert trainer.weight_dtype == torch.bfloat16
    unet = trainer.models.unet.module if hasattr(trainer.models.unet, "module") else trainer.models.unet
    dtypes = {("lora" if "lora_" in n else "base"): p.dtype for n, p in unet.named_parameters()}
    assert dtypes == {"lora": torch.float32, "base": torch.bfloat16}
    assert trainer.models.text_encoder.get_input_embeddings().weight.dtype == torch.float32
    assert next(trainer.models.vae.parameters()).dtype == torch.bfloat16
    trainer.train()
    assert all(np.isfinite(r["loss"]) for r in read_loss_log(tmp_path / "bf16"))


def test_cli_and_script_train_with_the_same_flags(base_model, dataset_dir, tmp_path):
    from defectfill.cli import main

    flags = ["--config", str(REPO / "configs" / "defectfill_tiny.yaml"), "--pretrained_model_name_or_path",
             str(base_model), "--train_data_dir", str(dataset_dir), "--max_train_steps", "1",
             "--report_to", "none", "--validation_steps", "0", "--defect_types", "stain"]
    assert main(["train", *flags, "--output_dir", str(tmp_path / "cli")]) == 0
    assert W.read_model_info(tmp_path / "cli")["concepts"] == {"stain": "<stain>"}
    assert main(["train", *flags, "--output_dir", str(tmp_path / "x"), "--resolution", "12"]) == 1  # ConfigError
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, str(REPO / "train_scripts" / "train_defectfill.py"), *flags,
                             "--output_dir", str(tmp_path / "script"), "--seed", "5"],
                            capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    info = json.loads((tmp_path / "script" / W.INFO_FILE).read_text())
    assert info["training"]["seed"] == 5 and info["training"]["max_train_steps"] == 1


def test_prediction_target_follows_the_base_schedulers_parameterisation():
    from diffusers import DDPMScheduler

    from defectfill.training.step import prediction_target

    latents, noise = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    t = torch.tensor([0, 500, 999])
    eps = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    assert torch.equal(prediction_target(eps, latents, noise, t), noise)
    v = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                      prediction_type="v_prediction", rescale_betas_zero_snr=True)
    a = v.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = a.sqrt() * noise - (1 - a).sqrt() * latents
    assert torch.allclose(prediction_target(v, latents, noise, t), expected, atol=1e-6)
    # zero terminal SNR: at t = 999 the input is pure noise and the target is -x0
    assert torch.allclose(prediction_target(v, latents, noise, t)[2], -latents[2], atol=1e-6)
    sample = DDPMScheduler(prediction_type="sample")
    with pytest.raises(ModelError, match="epsilon or v_prediction"):
        prediction_target(sample, latents, noise, t)
