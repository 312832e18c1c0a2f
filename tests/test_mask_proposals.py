"""Mask proposals: procedural per-type shapes and transformed real masks."""

from __future__ import annotations

import numpy as np
import pytest

from defectfill.errors import DataError
from defectfill.mask_proposals import PROCEDURAL_SHAPES, propose_masks
from defectfill.masks import connected_components, mask_to_boxes


def _box(mask):
    x0, y0, x1, y1 = mask_to_boxes(mask).min(axis=0)[:2].tolist() + mask_to_boxes(mask).max(axis=0)[2:].tolist()
    return x0, y0, x1, y1


@pytest.mark.parametrize("defect_type", sorted(PROCEDURAL_SHAPES))
def test_procedural_masks_are_inside_and_away_from_the_border(defect_type):
    masks = propose_masks((256, 256), defect_type, 8, rng=0)
    assert len(masks) == 8
    for m in masks:
        assert m.shape == (256, 256) and m.dtype == bool and m.any()
        x0, y0, x1, y1 = _box(m)
        assert x0 >= 5 and y0 >= 5 and x1 <= 251 and y1 <= 251  # 2 % margin = 5 px


def test_line_orientation_follows_warp_or_weft():
    for m in propose_masks((256, 256), "broken_end", 6, rng=1):
        x0, y0, x1, y1 = _box(m)
        assert (y1 - y0) > 3 * (x1 - x0)  # vertical, along the warp
    for m in propose_masks((256, 256), "broken_pick", 6, rng=1):
        x0, y0, x1, y1 = _box(m)
        assert (x1 - x0) > 3 * (y1 - y0)  # horizontal, along the weft


def test_sizes_cover_small_and_large_defects_and_tiny_ones_on_strips():
    sides = []
    for t in ("knot", "stain", "white_stripe", "broken_end"):
        for m in propose_masks((256, 256), t, 10, rng=2):
            x0, y0, x1, y1 = _box(m)
            sides.append(max(x1 - x0, y1 - y0))
    assert min(sides) <= 12 and max(sides) >= 150
    knots = propose_masks((256, 4096), "knot", 10, rng=3)
    assert all(m.sum() < 2000 and connected_components(m)[1] == 1 for m in knots)


def test_same_seed_same_masks_and_different_seed_different_masks():
    a = propose_masks((128, 128), "stain", 3, rng=7)
    b = propose_masks((128, 128), "stain", 3, rng=7)
    c = propose_masks((128, 128), "stain", 3, rng=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_real_masks_are_transformed_and_placed_inside_the_region():
    real = np.zeros((256, 256), bool)
    real[100:110, 50:200] = True  # a 150x10 horizontal bar
    region = np.zeros((256, 512), bool)
    region[:, 256:] = True  # only the right half is fabric
    masks = propose_masks((256, 512), "stain", 12, rng=4, real_masks=[real], mode="real", region=region)
    areas = []
    for m in masks:
        assert not m[:, :256].any()
        areas.append(int(m.sum()))
    assert min(areas) >= 0.4 * 1500 and max(areas) <= 2.2 * 1500
    assert len(set(areas)) > 3  # scaled / rotated differently


def test_oriented_real_masks_keep_their_direction():
    real = np.zeros((256, 256), bool)
    real[40:200, 100:103] = True  # vertical broken end
    for m in propose_masks((256, 256), "broken_end", 8, rng=5, real_masks=[real], mode="real"):
        x0, y0, x1, y1 = _box(m)
        assert (y1 - y0) > 10 * (x1 - x0)


def test_auto_uses_real_when_given_else_procedural():
    real = np.zeros((64, 64), bool)
    real[10:16, 10:16] = True
    real[10:16, 26:32] = True  # two spots: every procedural shape is one component
    auto_real = propose_masks((64, 64), "stain", 4, rng=6, real_masks=[real], mode="auto")
    assert all(connected_components(m)[1] == 2 for m in auto_real)
    procedural = propose_masks((64, 64), "stain", 4, rng=6, mode="auto")
    assert all(connected_components(m)[1] == 1 for m in procedural)


def test_border_allowed_on_request():
    touched = False
    for m in propose_masks((32, 32), "stain", 30, rng=9, allow_border=True):
        x0, y0, x1, y1 = _box(m)
        touched |= x0 == 0 or y0 == 0 or x1 == 32 or y1 == 32
    assert touched


def test_bad_requests_are_refused_with_the_fix():
    with pytest.raises(DataError, match="known:"):
        propose_masks((64, 64), "scratch", 1, rng=0, mode="procedural")
    with pytest.raises(DataError, match="real_masks="):
        propose_masks((64, 64), "stain", 1, rng=0, mode="real")
    with pytest.raises(DataError, match="mode"):
        propose_masks((64, 64), "stain", 1, rng=0, mode="magic")
    with pytest.raises(DataError, match="region"):
        propose_masks((64, 64), "stain", 1, rng=0, region=np.ones((32, 32), bool))


# ------------------------------------------------------------------ fabric only: no blank lead-in, no clipping
LEAD_IN = 300  # px of blank lead-in at the start of the strip


@pytest.fixture(scope="module")
def strip_with_lead_in():
    """A 256x2048 greyscale strip: blank lead-in (grey 40 with sensor noise, std 1.5), fabric, and a
    band saturated at 255 at its end."""
    from defectfill.data.fabric import render_fabric

    image = render_fabric("twill", 3, size=(256, 2048), gray=True).copy()
    noise = np.random.default_rng(0).normal(40, 1.5, (256, LEAD_IN, 1))
    image[:, :LEAD_IN] = np.clip(noise, 0, 255).astype(np.uint8)
    image[:, 1900:] = 255
    return image


def test_fabric_region_excludes_the_blank_lead_in_and_saturated_bands(strip_with_lead_in):
    from defectfill.mask_proposals import fabric_region

    fabric = fabric_region(strip_with_lead_in)
    columns = np.flatnonzero(fabric.any(axis=0))
    assert columns.min() >= LEAD_IN and columns.max() < 1900
    assert fabric[:, LEAD_IN + 20 : 1880].all()  # all of the cloth away from the bands
    assert fabric_region(strip_with_lead_in[..., 0]).sum() == fabric.sum()  # (H, W) input too


@pytest.mark.parametrize("defect_type", ["knot", "hole", "stain", "broken_end"])
def test_proposals_on_a_strip_land_on_fabric_only(strip_with_lead_in, defect_type):
    masks = propose_masks(strip_with_lead_in.shape[:2], defect_type, 40, rng=1, image=strip_with_lead_in)
    assert all(m.any() for m in masks)
    first = min(int(np.flatnonzero(m.any(axis=0)).min()) for m in masks)
    last = max(int(np.flatnonzero(m.any(axis=0)).max()) for m in masks)
    assert first >= LEAD_IN and last < 1900
    # without the image (the shape only), the lead-in is as likely as anywhere: the test can fail
    anywhere = propose_masks(strip_with_lead_in.shape[:2], defect_type, 40, rng=1)
    assert any(np.flatnonzero(m.any(axis=0)).min() < LEAD_IN for m in anywhere)


def test_mask_policy_passes_the_image_unless_blank_is_allowed(strip_with_lead_in):
    from defectfill.generators.requests import MaskPolicy, Request

    requests = [Request(i, f"r{i}", "knot", None, i, (0, i)) for i in range(30)]
    shape = strip_with_lead_in.shape[:2]
    on_fabric = [MaskPolicy().propose(r, shape, None, strip_with_lead_in) for r in requests]
    assert all(np.flatnonzero(m.any(axis=0)).min() >= LEAD_IN for m in on_fabric)
    anywhere = [MaskPolicy(allow_blank=True).propose(r, shape, None, strip_with_lead_in) for r in requests]
    assert any(np.flatnonzero(m.any(axis=0)).min() < LEAD_IN for m in anywhere)


def test_an_image_without_fabric_is_refused_with_the_fix():
    blank = np.full((64, 256, 3), 40, np.uint8)
    with pytest.raises(DataError, match=r"no fabric in the 256x64 image.*--allow-blank"):
        propose_masks(blank.shape[:2], "knot", 1, rng=0, image=blank)
    with pytest.raises(DataError, match="image is 256x64, image_shape 128x64"):
        propose_masks((64, 128), "knot", 1, rng=0, image=blank)
