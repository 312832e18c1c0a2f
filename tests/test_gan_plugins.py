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


@pytest.mark.parametrize("name", ["dgt", "icpr20"])
def test_one_fabric_without_good_images_still_trains(name, tmp_path):
    """The real-stain bench has no good image (new defects go into the training images): DGT takes
    its good cloth from the defect images with the defects inpainted away, ICPR'20 needs none."""
    defects, _ = tiny_data()
    ctx = GeneratorContext(name=name, source_defects=defects, target_good=[], defect_types=TYPES,
                           work_dir=tmp_path / "work", options=parse_options(name, TINY[name]), seed=0)
    generator = build_generator(ctx)
    assert sorted(generator.defect_types) == sorted(TYPES)
    assert (name == "dgt") == any("inpainted away" in note for note in ctx.notes)


def test_defect_free_backgrounds_fill_the_defect_from_the_cloth_around_it():
    from defectfill.data.sample import DefectSample
    from gan_baselines.data import defect_free_backgrounds

    image = np.full((32, 32, 3), 150, np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[10:16, 12:20] = True
    image[mask] = 20  # a dark defect on flat cloth
    (out,) = defect_free_backgrounds([DefectSample(image, mask, "stain")])
    assert np.abs(out[mask].astype(int) - 150).max() <= 3           # the defect is gone
    far = np.ones_like(mask)
    far[5:21, 7:25] = False
    assert np.array_equal(out[far], image[far])                      # cloth away from it untouched
