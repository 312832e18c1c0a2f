"""The "simulator only" arm: the segmenter trained on procedural fabric renders alone, no real image.

It answers whether the simulator by itself teaches the segmenter anything about the user's cloth
(zero-shot on the real test set), and its weights can start other arms (`deeplab.init_weights`).

Renders: `defectfill.data.fabric.render_sample` at the segmenter's size; image i uses seed
`seed * 1_000_003 + i` (held-out renders: offset by 500_000), texture i-th of `textures` in turn,
every second image grey, every `good_every`-th defect-free, the bench's classes each drawn from the
simulator types `render` maps it to (default: the type of the same name). Photometric
augmentation (on by default) draws per image a contrast gain in [0.6, 1.4], a brightness offset in
[-40, 40] grey levels and Gaussian noise of sigma in [0, 6], so that the renders' clean colours do not
become the only cloth the model knows. The held-out renders choose the epoch (never the test set).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from defectfill.data.sample import DefectSample
from defectfill.downstream.config import DownstreamConfig
from defectfill.errors import ConfigError

RESULTS_NAME = "results.json"


@dataclass
class SimulatorOnlyConfig:
    """The renders and budget of the simulator-only arm (the segmenter's own recipe comes from the
    downstream config's `deeplab` section, with `epochs` below)."""

    renders: int = 480
    heldout: int = 60
    epochs: int = 5
    textures: list[str] = field(default_factory=list)  # empty: every simulator texture not a target fabric
    render: dict[str, list[str]] = field(default_factory=dict)  # class -> simulator types (default: same name)
    good_every: int = 10
    photometric: bool = True
    # start every other arm's segmenter from this seed's simulator-only weights (deeplab.init_weights)
    start_arms: bool = False

    def check(self, classes: Sequence[str], where: str = "simulator_only") -> None:
        from defectfill.data.fabric import DEFECT_TYPES, TEXTURES

        problems = []
        if self.renders < 1 or self.heldout < 1 or self.epochs < 1 or self.good_every < 2:
            problems.append("renders, heldout and epochs must be >= 1 and good_every >= 2")
        bad = [t for t in self.textures if t not in TEXTURES]
        if bad:
            problems.append(f"textures {bad} are not simulator textures ({list(TEXTURES)})")
        for name in classes:
            types = self.render.get(name, [name])
            unknown = [t for t in types if t not in DEFECT_TYPES]
            if unknown or not types:
                problems.append(f"class {name!r} renders as {types}, not simulator defect types; map it with "
                                f"`{where}.render: {{{name}: [one of {list(DEFECT_TYPES)}]}}`")
        extra = sorted(set(self.render) - set(classes))
        if extra:
            problems.append(f"render names classes {extra} that the bench does not have ({list(classes)})")
        if problems:
            raise ConfigError(f"{where}: " + "; ".join(problems))


def _photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gain, offset, sigma = rng.uniform(0.6, 1.4), rng.uniform(-40, 40), rng.uniform(0, 6)
    mean = image.mean()
    out = (image.astype(np.float32) - mean) * gain + mean + offset + rng.normal(0, sigma, image.shape)
    return out.clip(0, 255).astype(np.uint8)


def render_set(config: SimulatorOnlyConfig, classes: Sequence[str], textures: Sequence[str], n: int,
               first_seed: int, size: int) -> list[DefectSample]:
    """`n` labelled renders (see the module docstring for the schedule)."""
    from defectfill.data.fabric import render_sample

    samples = []
    for i in range(n):
        seed = first_seed + i
        gray = i % 2 == 0
        name = None if i % config.good_every == config.good_every - 1 else classes[i % len(classes)]
        types = config.render.get(name, [name]) if name else [None]
        image, mask = render_sample(textures[(i // 2) % len(textures)], types[(i // len(classes)) % len(types)],
                                    seed, size, gray=gray)
        if config.photometric:
            image = _photometric(image, np.random.default_rng(seed))
        samples.append(DefectSample(image, mask, name or "good", is_gray=gray))
    return samples


def pretraining_textures(config: SimulatorOnlyConfig, exclude: Sequence[str] = ()) -> list[str]:
    from defectfill.data.fabric import TEXTURES

    textures = list(config.textures) or [t for t in TEXTURES if t not in set(exclude)]
    if not textures:
        raise ConfigError(f"simulator_only: no texture left to render (all of {list(TEXTURES)} excluded)")
    return textures


def _write_val(root: Path, heldout: Sequence[DefectSample], classes: Sequence[str]) -> None:
    """Replace the val split of an assembled folder by `heldout` (images + class-index masks)."""
    import shutil

    from defectfill.data.images import save_image
    from defectfill.downstream.datasets import class_map

    for kind in ("images", "masks"):
        shutil.rmtree(root / kind / "val", ignore_errors=True)
    for k, sample in enumerate(heldout):
        save_image(root / "images" / "val" / f"heldout_{k:05d}.png", sample.image)
        save_image(root / "masks" / "val" / f"heldout_{k:05d}.png",
                   class_map(sample.mask, sample.defect_type, classes).astype(np.uint8))


def pretrain_segmenter(config: SimulatorOnlyConfig, downstream: DownstreamConfig, out_dir: str | Path, *,
                       seed: int, exclude_textures: Sequence[str] = ()) -> dict[str, Any]:
    """Render, assemble (held-out renders as validation) and train the downstream segmenter in
    `out_dir` (resumable: the renders and a finished training are kept); returns best.json."""
    import shutil
    from dataclasses import replace

    from defectfill.downstream.assemble import RECIPE_NAME, assemble
    from defectfill.downstream.deeplab import train_deeplab

    classes = list(downstream.classes)
    config.check(classes)
    out_dir = Path(out_dir)
    size = downstream.deeplab.image_size
    if not (out_dir / "renders" / RECIPE_NAME).is_file():
        shutil.rmtree(out_dir / "renders.partial", ignore_errors=True)  # what a killed run left
        textures = pretraining_textures(config, exclude_textures)
        base = seed * 1_000_003
        train = render_set(config, classes, textures, config.renders, base, size)
        heldout = render_set(config, classes, textures, config.heldout, base + 500_000, size)
        assemble(train, [], out_dir / "renders.partial", classes,
                 replace(downstream.assemble, val_fraction=0.0, max_synthetic_per_class=None), seed=seed)
        _write_val(out_dir / "renders.partial", heldout, classes)
        (out_dir / "renders.partial").rename(out_dir / "renders")
    return train_deeplab(out_dir / "renders", classes, replace(downstream.deeplab, epochs=config.epochs),
                         out_dir / "deeplab", seed=seed, if_exists="skip")


def run_simulator_arm(name: str, test_samples: Sequence[DefectSample], config: SimulatorOnlyConfig,
                      downstream: DownstreamConfig, out_dir: str | Path, *, exclude_textures: Sequence[str] = (),
                      evaluate=None) -> dict[str, Any]:
    """Pretrain (once) and evaluate on the real test set; results.json like `downstream.arm.run_arm`
    (the segmenter and its boxes only: no RT-DETR is trained on renders). `evaluate(run_dir, config)`
    replaces the image-level evaluation (strips use it)."""
    from dataclasses import replace

    from defectfill.config import to_dict
    from defectfill.downstream.arm import evaluate_models
    from defectfill.io_utils import atomic_write_json

    arm_dir = Path(out_dir) / name
    results_path = arm_dir / RESULTS_NAME
    if results_path.is_file():
        return json.loads(results_path.read_text())
    started = time.perf_counter()
    info = pretrain_segmenter(config, downstream, arm_dir, seed=downstream.seed, exclude_textures=exclude_textures)
    scored = replace(downstream, models=[m for m in downstream.models if m in ("deeplab", "segboxes")] or ["deeplab"])
    metrics = evaluate(arm_dir, scored) if evaluate else evaluate_models(arm_dir, test_samples, scored)
    results = {
        "arm": name,
        "dataset": {"train_images": {"real": 0, "synthetic": config.renders},
                    "simulator": {"renders": config.renders, "heldout": config.heldout, "epochs": config.epochs,
                                  "textures": pretraining_textures(config, exclude_textures),
                                  "photometric": config.photometric, "kept_epoch": info["best_epoch"],
                                  "heldout_f": info.get("best_val", {}).get("mean_f_measure")}},
        "test_images": len(test_samples),
        "test_defect_images": sum(not s.is_good for s in test_samples),
        **metrics,
        "generation": None,
        "config": to_dict(scored),
        "wall_seconds": time.perf_counter() - started,
    }
    atomic_write_json(results_path, results)
    return results
