"""The dgt and icpr20 generator plug-ins through the registry: build (train) from a context,
generate, reload the trained folder; tiny sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers_gan_baselines import TYPES, tiny_data

from defectfill.data.images import save_image
from defectfill.generators.context import GeneratorContext
from defectfill.generators.registry import build_generator, load_generator, parse_options

TINY = {  # GanOptions {config, overrides}, as R3GAN's
    "dgt": {"config": "configs/dgt_tiny.yaml", "overrides": {
        "model.resolution": 32, "model.base_channels": 4, "model.depth": 2, "model.classifier_channels": 8,
        "model.discriminator_channels": 4, "openmax.tailsize": 4, "openmax.fakes_per_type": 4,
        "train_batch_size": 2, "max_train_steps": 2, "checkpointing_steps": 0, "validation_steps": 0,
        "report_to": "none"}},
    "icpr20": {"config": "configs/icpr20_tiny.yaml", "overrides": {
        "model.resolution": 32, "model.base_channels": 4, "model.depth": 2, "model.discriminator_channels": 4,
        "train_batch_size": 2, "max_train_steps": 2, "checkpointing_steps": 0, "validation_steps": 0,
        "report_to": "none"}},
}


@pytest.mark.parametrize("name", ["dgt", "icpr20"])
def test_plugin_builds_generates_and_reloads(name, tmp_path):
    defects, good = tiny_data()
    good_paths = []
    for k, image in enumerate(good):
        save_image(tmp_path / "good" / f"{k}.png", image)
        good_paths.append(tmp_path / "good" / f"{k}.png")
    ctx = GeneratorContext(name=name, source_defects=defects, target_good=good_paths, defect_types=TYPES,
                           work_dir=tmp_path / "work", options=parse_options(name, TINY[name]), seed=0)
    generator = build_generator(ctx)
    assert sorted(generator.defect_types) == sorted(TYPES)
    image = np.full((48, 56, 3), 120, np.uint8)
    mask = np.zeros((48, 56), bool)
    mask[10:22, 20:30] = True
    result = generator.generate(image, mask, defect_type="hole", num_candidates=2, generator=3)
    assert len(result.candidates) == 2 and result.image.shape == image.shape
    for candidate in result.candidates:
        assert np.array_equal(candidate[~mask], image[~mask])  # outside the mask: bit-identical
    reloaded = load_generator(name, Path(ctx.work_dir), TINY[name])
    again = reloaded.generate(image, mask, defect_type="hole", num_candidates=2, generator=3)
    assert all(np.array_equal(a, b) for a, b in zip(result.candidates, again.candidates))
