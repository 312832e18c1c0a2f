"""`defectfill train` at the scale of generation: a wide strip's defects are learned in the windows
`DefectFill.generate` paints them in, at the size it paints at, not in the whole strip shrunk to
the training resolution (where they vanish at latent size).

The strip is 128x1024 greyscale from the fabric simulator with 12x12 dark "knots"; the model is the
tiny random one of the training tests (VAE factor 8, sides multiples of 16), resolution 32: the
whole-image shrink is x0.25 (a knot 3x3 px, under one 8x8 latent cell), a generation window
32x32 at x1 (the knot covers a latent cell).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from helpers_defectfill_training import make_base_model, single_torch_thread, tiny_config  # noqa: F401

from defectfill.data.fabric import render_sample
from defectfill.data.sample import DefectSample
from defectfill.data.writers import write_masks
from defectfill.errors import ConfigError, DataError
from defectfill.generators.window import windows_for_mask
from defectfill.training import DefectFillTrainer
from defectfill.training.data import concept_training_crops

pytestmark = pytest.mark.usefixtures("single_torch_thread")

REPO = Path(__file__).resolve().parents[1]
STRIP = (128, 1024)  # H, W
KNOTS = [(40, 100), (70, 600), (20, 900)]  # (y, x) of each strip's 12x12 knot


def _strip(seed: int, y: int, x: int) -> DefectSample:
    image, _ = render_sample("plain", None, seed, size=STRIP, gray=True)
    image = image.copy()
    mask = np.zeros(STRIP, bool)
    mask[y : y + 12, x : x + 12] = True
    image[mask] = image[mask] // 4
    return DefectSample(image, mask, "knot", is_gray=True, meta={"name": f"strip_{seed}"})


@pytest.fixture(scope="module")
def strips(tmp_path_factory):
    samples = [_strip(seed, y, x) for seed, (y, x) in enumerate(KNOTS)]
    return samples, write_masks(samples, tmp_path_factory.mktemp("strips") / "knots")


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    return make_base_model(tmp_path_factory.mktemp("base") / "tiny-inpaint")


def test_train_on_a_strip_learns_the_defects_in_the_generation_windows(strips, base_model, tmp_path, caplog):
    from defectfill.cli import main

    samples, folder = strips
    out = tmp_path / "model"
    with caplog.at_level(logging.INFO, logger="defectfill.training.trainer"):
        assert main(["train", "--config", str(REPO / "configs" / "defectfill_tiny.yaml"),
                     "--pretrained_model_name_or_path", str(base_model), "--train_data_dir", str(folder),
                     "--output_dir", str(out), "--resolution", "32", "--max_train_steps", "2",
                     "--report_to", "none", "--validation_steps", "0"]) == 0
    scale = json.loads((out / "scale.json").read_text())["knot"]
    assert scale == {"images": 3, "training_windows": 3, "vanished_at_latent_size": 0, "scale_median": 1.0,
                     "training_crops": "generation"}
    assert "vanish" not in caplog.text  # no mask is below a latent cell at this scale

    # the examples are the generation windows themselves, pixel for pixel (scale 1: no resize)
    config = tiny_config(base_model, folder, tmp_path / "probe", resolution=32, scale_min=1.0, scale_max=1.0,
                         random_flip=False)
    trainer = DefectFillTrainer(config)
    for k, sample in enumerate(samples):
        ((window, _),) = windows_for_mask(sample.mask, 32, trainer.size_multiple)
        assert (window.width, window.height, window.gen_width) == (32, 32, 32)
        item = trainer.dataset[(k, 0)]
        pixels = ((item["pixel_values"].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        crop = sample.image[window.y0 : window.y1, window.x0 : window.x1]
        assert np.array_equal(pixels, crop)
        assert int(item["defect_mask"].sum()) == 144  # the whole knot, at full size
        assert not bool(item["mask_rescued"]) and int(item["defect_mask_latent"].sum()) >= 1


def test_whole_image_shrink_says_the_masks_vanish_and_what_to_change(strips, base_model, tmp_path, caplog):
    _, folder = strips
    config = tiny_config(base_model, folder, tmp_path / "old", resolution=32, training_crops="whole_image")
    with caplog.at_level(logging.WARNING, logger="defectfill.training.trainer"):
        trainer = DefectFillTrainer(config)
    report = trainer.scale_report["knot"]
    assert report["vanished_at_latent_size"] == 3 and report["scale_median"] == pytest.approx(0.25)
    assert "3 of 3 training masks cover less than one 8x8 latent cell" in caplog.text
    assert "set training_crops: generation" in caplog.text
    item = trainer.dataset[(0, 0)]
    assert bool(item["mask_rescued"])  # at x0.25 the knot is under one latent cell


def test_defects_too_small_at_the_generation_scale_say_to_upsample(base_model, tmp_path, caplog):
    image, _ = render_sample("twill", None, 7, size=STRIP, gray=True)
    mask = np.zeros(STRIP, bool)
    mask[50:52, 300:302] = True  # 2x2 px: below an 8x8 latent cell even at full size
    folder = write_masks([DefectSample(image, mask, "nep", is_gray=True, meta={"name": "nep"})], tmp_path / "neps")
    with caplog.at_level(logging.WARNING, logger="defectfill.training.trainer"):
        trainer = DefectFillTrainer(tiny_config(base_model, folder, tmp_path / "out", resolution=32))
    assert trainer.scale_report["nep"]["vanished_at_latent_size"] == 1
    assert "this is the scale `generate` paints them at" in caplog.text and "upsample" in caplog.text
    assert "set window_zoom: 4" in caplog.text  # 8 px cell / sqrt(4 px area)


def test_window_zoom_trains_and_generates_in_enlarged_windows(strips, base_model, tmp_path):
    from defectfill.models.defectfill import DefectFill

    samples, folder = strips
    out = tmp_path / "zoom"
    trainer = DefectFillTrainer(tiny_config(base_model, folder, out, resolution=32, window_zoom=2.0,
                                            max_train_steps=1, scale_min=1.0, scale_max=1.0, random_flip=False))
    # a 12-px knot + 4 px of context (8 generated px) each side: a 20-px window generated at 32 px
    ((window, _),) = windows_for_mask(samples[0].mask, 32, trainer.size_multiple, zoom=2.0)
    assert (window.width, window.gen_width) == (20, 32)
    assert trainer.scale_report["knot"]["scale_median"] == pytest.approx(32 / 20)
    item = trainer.dataset[(0, 0)]
    assert int(item["defect_mask"].sum()) >= 2 * 144  # the knot enlarged 1.6x
    trainer.train()
    model = DefectFill.from_pretrained(out)
    assert model.window_zoom == 2.0
    result = model.generate(samples[0].image, samples[0].mask, defect_type="knot", num_candidates=1, seed=0,
                            num_inference_steps=2)
    assert result.meta["windows"] == [window.as_dict()]  # generate paints in the very window trained on
    assert np.array_equal(result.image[~samples[0].mask], samples[0].image[~samples[0].mask])
    with pytest.raises(ConfigError, match="window_zoom 2.0 needs training_crops: generation"):
        tiny_config(base_model, folder, tmp_path / "w", window_zoom=2.0, training_crops="whole_image")


def test_bad_input_gives_clear_errors(strips, base_model, tmp_path):
    samples, folder = strips
    with pytest.raises(ConfigError, match=r"training_crops must be one of \['generation', 'whole_image'\], "
                                          r"found 'tiles'"):
        tiny_config(base_model, folder, tmp_path / "a", training_crops="tiles")
    with pytest.raises(DataError, match="smaller than the training size 256x256"):
        DefectFillTrainer(tiny_config(base_model, folder, tmp_path / "b", resolution=256))
    # a line along the whole strip: generate paints it in a window 8 px high at resolution 64
    line = samples[0].mask.copy()
    line[:] = False
    line[60, 10:1000] = True
    skipped: list[str] = []
    with pytest.raises(DataError, match=r"no defect crop of at least 32 px on its short side.*1 windows too narrow"):
        concept_training_crops([DefectSample(samples[0].image, line, "yarn")], 64, skipped=skipped)
    assert len(skipped) == 1 and skipped[0].startswith("img window") and "generated at 64x8" in skipped[0]
