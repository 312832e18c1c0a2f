"""The fabric simulator: determinism, exact masks, greyscale, dataset layout and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from defectfill.cli import main
from defectfill.data.fabric import (
    COMPLEX_TEXTURES,
    DEFECT_TYPES,
    SIMPLE_TEXTURES,
    TEXTURES,
    render_fabric,
    render_sample,
    simulate_dataset,
)
from defectfill.data.images import load_image, load_mask
from defectfill.errors import DataError


def test_texture_sets_hold_the_required_names():
    assert {"plain", "twill", "satin", "rib"} <= set(SIMPLE_TEXTURES)
    assert {"check", "print", "herringbone", "jacquard"} <= set(COMPLEX_TEXTURES)
    assert TEXTURES == SIMPLE_TEXTURES + COMPLEX_TEXTURES
    assert DEFECT_TYPES == ("stain", "oil", "knot", "broken_end", "broken_yarn", "white_stripe", "hole")


@pytest.mark.parametrize("texture", TEXTURES)
def test_same_seed_same_image_and_different_seeds_differ(texture):
    a = render_fabric(texture, seed=11, size=96)
    b = render_fabric(texture, seed=11, size=96)
    c = render_fabric(texture, seed=12, size=96)
    assert a.shape == (96, 96, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert np.mean(a != c) > 0.5  # a different seed is a different fabric, not a few pixels off
    # a woven/knitted structure, not a flat colour: strong local contrast
    assert a.astype(np.float32).std() > 5


def test_render_sample_is_deterministic_and_good_matches_render_fabric():
    img1, m1 = render_sample("twill", "oil", seed=5, size=(80, 120))
    img2, m2 = render_sample("twill", "oil", seed=5, size=(80, 120))
    assert img1.shape == (80, 120, 3) and m1.shape == (80, 120) and m1.dtype == bool
    assert np.array_equal(img1, img2) and np.array_equal(m1, m2)
    good, empty = render_sample("twill", None, seed=5, size=(80, 120))
    assert np.array_equal(good, render_fabric("twill", 5, size=(80, 120)))
    assert not empty.any()


@pytest.mark.parametrize("defect_type", DEFECT_TYPES)
@pytest.mark.parametrize("texture", ["plain", "satin", "rib", "check", "jacquard"])
def test_mask_is_exactly_the_changed_pixels(texture, defect_type):
    for seed in (0, 1):
        good = render_fabric(texture, seed, size=128)
        image, mask = render_sample(texture, defect_type, seed, size=128)
        changed = np.any(image != good, axis=2)
        assert mask.any(), f"{texture}/{defect_type}: empty mask"
        assert np.array_equal(changed, mask), f"{texture}/{defect_type}: mask != changed pixels"
        # a defect, not the whole image, and not a speck
        assert 6 <= mask.sum() < 0.5 * mask.size


def test_defects_are_visible_not_just_one_grey_level():
    # mean absolute change inside the mask: a real defect, not a rounding-level nudge
    for defect_type in DEFECT_TYPES:
        good = render_fabric("plain", 3, size=256).astype(np.int16)
        image, mask = render_sample("plain", defect_type, 3, size=256)
        delta = np.abs(image.astype(np.int16) - good).max(axis=2)[mask]
        assert delta.mean() > 12, f"{defect_type}: mean in-mask change {delta.mean():.1f} grey levels"


def test_defect_extents_fit_256px_images():
    for defect_type in DEFECT_TYPES:
        for seed in range(3):
            _, mask = render_sample("twill", defect_type, seed, size=256)
            ys, xs = np.nonzero(mask)
            extent = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
            assert 6 <= extent <= 256, (defect_type, seed, extent)
            if defect_type in ("broken_end", "broken_yarn"):
                # a thin line: long along one axis, on average a yarn or two (<= 16 px) across
                along_axis = 0 if defect_type == "broken_end" else 1
                length = np.ptp(ys if along_axis == 0 else xs) + 1
                assert length >= 30 and mask.sum() / length <= 16, (defect_type, seed, length, mask.sum())
            if defect_type in ("stain", "oil", "knot", "hole"):
                assert extent <= 90, (defect_type, seed, extent)


def test_gray_mode_has_equal_channels_and_exact_masks():
    for texture, defect_type in [("plain", None), ("print", "stain"), ("rib", "broken_end"), ("herringbone", "hole")]:
        image, mask = render_sample(texture, defect_type, 4, size=96, gray=True)
        assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
        good = render_fabric(texture, 4, size=96, gray=True)
        assert np.array_equal(np.any(image != good, axis=2), mask)
    colour = render_fabric("check", 4, size=96)
    assert not np.array_equal(colour[..., 0], colour[..., 1])


def test_unknown_names_raise_data_error_listing_valid_names():
    with pytest.raises(DataError, match="velvet.*plain.*jacquard"):
        render_fabric("velvet", 0)
    with pytest.raises(DataError, match="scratch.*stain.*hole"):
        render_sample("plain", "scratch", 0)
    with pytest.raises(DataError, match="size"):
        render_fabric("plain", 0, size=4)


def test_simulate_dataset_writes_mvtec_layout_and_manifest(tmp_path):
    out = simulate_dataset(tmp_path / "ds", ["plain", "check"], ["hole", "broken_yarn"], n_good_train=2,
                           n_good_test=1, n_defect_per_type=2, size=64, seed=7)
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 2 * (2 + 1 + 2 * 2)
    assert len(list((out / "train" / "good").glob("*.png"))) == 4
    assert len(list((out / "test" / "good").glob("*.png"))) == 2
    for rec in lines:
        image = load_image(out / rec["image"])
        assert image.shape == (64, 64, 3)
        if rec["defect_type"] == "good":
            assert rec["mask"] is None and rec["boxes"] == []
            continue
        assert rec["image"].startswith(f"test/{rec['defect_type']}/")
        assert rec["mask"] == f"ground_truth/{rec['defect_type']}/{rec['image'].split('/')[-1][:-4]}_mask.png"
        mask = load_mask(out / rec["mask"], shape=(64, 64))
        # the stored image is reproducible from the manifest's seed, mask included
        again, again_mask = render_sample(rec["texture"], rec["defect_type"], rec["seed"], size=64)
        assert np.array_equal(again, image) and np.array_equal(again_mask, mask)
        boxes = np.array(rec["boxes"])
        assert boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) >= 1
        ys, xs = np.nonzero(mask)
        assert boxes[:, 0].min() == xs.min() and boxes[:, 1].min() == ys.min()
        assert boxes[:, 2].max() == xs.max() + 1 and boxes[:, 3].max() == ys.max() + 1  # exclusive ends
    # a rerun resumes: nothing is written twice
    simulate_dataset(out, ["plain", "check"], ["hole", "broken_yarn"], 2, 1, 2, size=64, seed=7)
    assert len((out / "manifest.jsonl").read_text().splitlines()) == len(lines)


def test_cli_fabric_tiny_run(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["fabric", "--out", str(out), "--textures", "twill", "rib", "--defects", "stain", "knot",
               "--n-good", "2", "--n-defect", "1", "--size", "64", "--seed", "3", "--gray"])
    assert rc == 0
    assert "wrote 12 images" in capsys.readouterr().out
    for folder in ("train/good", "test/good", "test/stain", "test/knot", "ground_truth/stain", "ground_truth/knot"):
        assert any((out / folder).glob("*.png")), folder
    sheet = load_image(out / "contact_sheet.png")
    assert sheet.shape[0] > 128 and sheet.shape[1] > 128
    assert (np.all(sheet == (255, 0, 0), axis=2)).any()  # mask outlines drawn
    records = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert {r["texture"] for r in records} == {"twill", "rib"} and all(r["gray"] for r in records)
    assert {r["defect_type"] for r in records} == {"good", "stain", "knot"}


def test_cli_fabric_unknown_defect_fails_with_message(tmp_path, capsys):
    rc = main(["fabric", "--out", str(tmp_path / "x"), "--defects", "tear", "--size", "64"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "tear" in err and "broken_end" in err


@pytest.mark.benchmark
def test_render_speed_at_least_50_images_per_cpu_second(request):
    """The issue's speed target: >= 50 images/s at 256 px on one core (CPU time, so other jobs on
    the machine do not count; `benchmarks/bench_fabric.py` prints the full figures)."""
    import time

    if "benchmark" not in (request.config.getoption("-m") or ""):
        pytest.skip("timing check: run with -m benchmark")

    def batch(seed0: int) -> int:
        n = 0
        for k, texture in enumerate(TEXTURES):
            for d, defect in enumerate((None, *DEFECT_TYPES)):
                render_sample(texture, defect, seed0 + 10 * k + d, 256)
                n += 1
        return n

    batch(10_000)  # warm-up
    rates = []
    for r in range(3):
        start = time.process_time()
        n = batch(r * 1000)
        rates.append(n / (time.process_time() - start))
    assert sorted(rates)[1] >= 50, f"median {sorted(rates)[1]:.1f} images per CPU-second"


def test_resume_with_other_settings_is_refused(tmp_path):
    from defectfill.data.fabric import simulate_dataset
    from defectfill.errors import DataError

    simulate_dataset(tmp_path, ["plain"], ["stain"], 1, 0, 1, size=32, seed=0)
    simulate_dataset(tmp_path, ["plain"], ["stain"], 1, 0, 1, size=32, seed=0)  # same settings: resumes
    with pytest.raises(DataError, match="new --out folder"):
        simulate_dataset(tmp_path, ["plain"], ["stain"], 1, 0, 1, size=48, seed=0)
