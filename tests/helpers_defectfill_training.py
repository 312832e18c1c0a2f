"""Shared pieces of the DefectFill training tests: a tiny base model folder and a tiny dataset.

The base model is diffusers' StableDiffusionInpaintPipeline built from
`defectfill.models.components.get_dummy_components` and written with `save_pretrained`, exactly
what a user's local model folder looks like. The dataset is an MVTec-AD category folder with a
few 64-px "fabric" images per defect type, each with a blob or line defect and its mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from defectfill.data.images import save_image, save_mask


def make_base_model(out_dir: Path, seed: int = 0) -> Path:
    from defectfill.models.components import build_inpaint_pipeline, get_dummy_components

    out_dir = Path(out_dir)
    if not (out_dir / "model_index.json").is_file():
        pipe = build_inpaint_pipeline(get_dummy_components(seed=seed, sample_size=8))
        pipe.save_pretrained(out_dir)
    return out_dir


def fabric_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A plain-weave-like texture: crossing stripes, a random colour, a little noise."""
    y, x = np.mgrid[0:size, 0:size]
    weave = 0.5 + 0.25 * np.sin(x * 1.3) * np.sin(y * 1.3)
    colour = rng.uniform(0.3, 0.9, size=3)
    img = weave[..., None] * colour[None, None] + rng.normal(0, 0.03, (size, size, 3))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def add_defect(rng: np.random.Generator, image: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    size = image.shape[0]
    y, x = np.mgrid[0:size, 0:size]
    cy, cx = rng.integers(size // 4, 3 * size // 4, size=2)
    if kind == "line":
        mask = np.abs(x - cx) <= 1
        mask &= np.abs(y - cy) < size // 3
    else:
        ry, rx = rng.integers(4, size // 5, size=2)
        mask = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1
    out = image.copy()
    out[mask] = (out[mask] * 0.35).astype(np.uint8)
    return out, mask


def make_mvtec_dataset(root: Path, types: dict[str, int], size: int = 64, seed: int = 0) -> Path:
    """root/train/good, root/test/<type>/NNN.png, root/ground_truth/<type>/NNN_mask.png."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    save_image(root / "train" / "good" / "000.png", fabric_image(rng, size))
    for t_index, (defect_type, count) in enumerate(types.items()):
        for i in range(count):
            image, mask = add_defect(rng, fabric_image(rng, size), "line" if t_index % 2 else "blob")
            save_image(root / "test" / defect_type / f"{i:03d}.png", image)
            save_mask(root / "ground_truth" / defect_type / f"{i:03d}_mask.png", mask)
    return root


def tiny_config(base_model: Path, data_dir: Path, output_dir: Path, **overrides):
    """The tiny config (configs/defectfill_tiny.yaml) pointed at the test's model and data."""
    from defectfill.training import load_train_config

    repo = Path(__file__).resolve().parents[1]
    values = {"pretrained_model_name_or_path": str(base_model), "train_data_dir": str(data_dir),
              "output_dir": str(output_dir), "report_to": "none", "validation_steps": 0}
    values.update(overrides)
    return load_train_config(repo / "configs" / "defectfill_tiny.yaml", **values)


def in_memory_samples(types: dict[str, int], size: int = 64, seed: int = 0):
    """defect type -> list of DefectSample, built in memory (no files)."""
    from defectfill.data.sample import DefectSample

    rng = np.random.default_rng(seed)
    out = {}
    for t_index, (defect_type, count) in enumerate(types.items()):
        out[defect_type] = []
        for _ in range(count):
            image, mask = add_defect(rng, fabric_image(rng, size), "line" if t_index % 2 else "blob")
            out[defect_type].append(DefectSample(image, mask, defect_type))
    return out


def tiny_step_setup(train_text_encoder: bool = False, types: dict[str, int] | None = None, batch_size: int = 2):
    """Tiny models made trainable + a dataset and one collated batch: what one training step needs."""
    import torch
    from diffusers import DDPMScheduler

    from defectfill.models.components import get_dummy_components
    from defectfill.models.concepts import default_token
    from defectfill.training.data import DefectFillDataset
    from defectfill.training.model import DefectFillModels, make_trainable

    c = get_dummy_components(seed=0, sample_size=8)
    models = DefectFillModels(c["unet"], c["vae"], c["text_encoder"], c["tokenizer"],
                              DDPMScheduler.from_config(c["scheduler"].config))
    samples = in_memory_samples(types or {"stain": 2, "broken_end": 2})
    concepts = {t: default_token(t) for t in samples}
    tokens, guard = make_trainable(models, concepts, {}, rank=4, lora_alpha=8, lora_dropout=0.0,
                                   unet_targets=["to_q", "to_k", "to_v", "to_out.0"],
                                   train_text_encoder=train_text_encoder,
                                   text_encoder_targets=["q_proj", "k_proj", "v_proj", "out_proj"])
    models.unet.train()
    models.text_encoder.train()
    dataset = DefectFillDataset(samples, models.tokenizer, concepts, resolution=64, seed=0)
    # one example of each type first, so that every concept is in the batch
    first_of_type = [next(i for i, (t, _) in enumerate(dataset.items) if t == name) for name in dataset.types]
    picks = (first_of_type + [i for i in range(len(dataset)) if i not in first_of_type])[:batch_size]
    batch = torch.utils.data.default_collate([dataset[(i, draw)] for draw, i in enumerate(picks)])
    return models, tokens, guard, dataset, batch


@pytest.fixture(autouse=False)
def single_torch_thread():
    """One torch thread while a test runs (restored after): on a shared 2-core machine a 2-thread
    op waits for its descheduled twin, and the tiny training steps got ~8x slower under load."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
