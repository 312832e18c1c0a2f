"""One check for both GAN plug-ins: trained through the registry on simulator defects, generated
into good images of another fabric by the shared runner, and the results through the downstream
stage (assemble + DeepLabV3 1 epoch + evaluation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from defectfill.config import save_config
from defectfill.data.fabric import simulate_dataset
from defectfill.data.images import load_image, load_mask
from defectfill.data.readers import read_mvtec
from defectfill.downstream.arm import run_arm
from defectfill.downstream.config import load_downstream_config
from defectfill.generators.context import GeneratorContext
from defectfill.generators.manifest import read_generation_manifest
from defectfill.generators.registry import build_generator, check_options
from defectfill.generators.requests import MaskPolicy
from defectfill.generators.runner import generate_dataset

TYPES = ["stain", "hole"]
SIZE = 48


def run_plugin_through_downstream(name: str, config: Any, tmp_path: Path) -> dict:
    config_path = tmp_path / f"{name}.yaml"
    save_config(config, config_path)
    source = simulate_dataset(tmp_path / "source", ["plain"], TYPES, 0, 0, 2, size=SIZE, seed=1)
    target = simulate_dataset(tmp_path / "target", ["twill"], TYPES, 3, 1, 1, size=SIZE, seed=2)
    source_defects, target_good = read_mvtec(source, "test"), read_mvtec(target, "train")
    options = check_options(name, {"config": config_path.name}, config_dir=tmp_path)

    def context() -> GeneratorContext:
        return GeneratorContext(name=name, source_defects=source_defects, target_good=[s.source for s in target_good],
                                defect_types=TYPES, work_dir=tmp_path / "generator", options=options,
                                config_dir=tmp_path, device="auto")  # as the bench passes it

    first = context()
    generator = build_generator(first)
    assert first.notes and name in first.notes[0]
    assert sorted(generator.defect_types) == sorted(TYPES)
    again = context()
    reloaded = build_generator(again)  # a rerun finds the complete model and loads it
    assert type(reloaded) is type(generator) and "trained" not in " ".join(again.notes)

    real_masks = {t: [s.mask for s in source_defects if s.defect_type == t] for t in TYPES}
    generate_dataset(generator, [s.source for s in target_good], TYPES, tmp_path / "generated", per_type=2, seed=0,
                     masks=MaskPolicy(mode="real", real_masks=real_masks), num_candidates=2, progress=False)
    items = read_generation_manifest(tmp_path / "generated")
    assert len(items) == 4
    for item in items:
        image, request = load_image(item.image), load_mask(item.request_mask)
        source_image = load_image(item.source_image)
        assert item.generator == name
        assert np.array_equal(image[~request], source_image[~request])  # nothing changes outside the mask
        assert not (load_mask(item.changed_mask) & ~request).any()

    downstream = load_downstream_config("configs/downstream_tiny.yaml", {
        "models": ["deeplab"], "deeplab.epochs": 1, "deeplab.image_size": SIZE, "deeplab.batch_size": 4,
        "evaluation.generation_metrics": False})
    result = run_arm(name, source_defects + target_good, read_mvtec(target, "test"), downstream, tmp_path / "arms",
                     manifests=[tmp_path / "generated"])
    assert result["dataset"]["train_images"]["synthetic"] == 4
    assert set(result["deeplab"]["per_class"]) >= set(TYPES)
    return result
