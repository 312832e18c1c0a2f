"""Shared pieces of the DefectFill training tests: a tiny base model folder and a tiny dataset.

The base model is diffusers' StableDiffusionInpaintPipeline built from
`defectfill.models.components.get_dummy_components` and written with `save_pretrained`, exactly
what a user's local model folder looks like. The dataset is an MVTec-AD category folder with a
few 64-px "fabric" images per defect type, each with a blob or line defect and its mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
