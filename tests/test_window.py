"""The generation window: placement, sizes, paste-back exactness."""

from __future__ import annotations

import numpy as np
import pytest

from defectfill.errors import GenerationError
from defectfill.generators.window import (
    crop_image,
    crop_mask,
    feather_weights,
    paste_back,
    window_around_mask,
    windows_for_mask,
)


def _mask(shape, y0, y1, x0, x1):
    m = np.zeros(shape, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_small_mask_gets_a_resolution_window_centred_on_it():
    mask = _mask((256, 256), 100, 110, 120, 140)
    w = window_around_mask(mask, resolution=64, multiple=16)
    assert (w.width, w.height) == (64, 64) and (w.gen_width, w.gen_height) == (64, 64)
    # the mask centre (130, 105) lies in the middle of the window
    assert abs((w.x0 + w.x1) / 2 - 130) <= 1 and abs((w.y0 + w.y1) / 2 - 105) <= 1


def test_window_is_clamped_inside_the_image_for_a_border_mask():
    mask = _mask((256, 256), 0, 5, 250, 256)
    w = window_around_mask(mask, resolution=64, multiple=16)
    assert (w.x0, w.y0, w.x1, w.y1) == (192, 0, 256, 64)


def test_large_mask_gets_a_larger_window_resized_to_the_resolution():
    mask = _mask((512, 512), 100, 300, 50, 250)  # 200 px > 64 px resolution
    w = window_around_mask(mask, resolution=64, multiple=16)
    assert w.width > 200 and w.height > 200
    assert max(w.gen_width, w.gen_height) == 64 and w.scale < 1
    assert w.x0 <= 50 and w.x1 >= 250 and w.y0 <= 100 and w.y1 >= 300


def test_strip_window_is_limited_by_the_strip_height():
    mask = _mask((256, 4096), 100, 150, 3000, 3050)
    w = window_around_mask(mask, resolution=512, multiple=64)
    assert w.height == 256 and w.width == 512
    assert (w.gen_height, w.gen_width) == (256, 512)


def test_empty_mask_is_refused():
    with pytest.raises(GenerationError, match="empty"):
        window_around_mask(np.zeros((32, 32), bool), resolution=64)


@pytest.mark.parametrize("feather", [0.0, 3.0])
def test_paste_back_changes_only_mask_pixels(feather):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    mask = _mask((300, 200), 40, 160, 30, 170)
    w = window_around_mask(mask, resolution=64, multiple=16)
    crop = crop_image(image, w)
    assert crop.shape == (w.gen_height, w.gen_width, 3)
    assert crop_mask(mask, w).shape == (w.gen_height, w.gen_width)
    generated = np.full_like(crop, 7)
    out = paste_back(image, generated, w, mask, feather_px=feather)
    assert np.array_equal(out[~mask], image[~mask])
    inner = _mask((300, 200), 50, 150, 40, 160)
    assert (out[inner] == 7).all()


def test_crop_mask_covers_every_request_pixel_when_shrinking():
    mask = np.zeros((400, 400), bool)
    mask[200, 10:390] = True  # a 1-px line, shrunk ~6x
    w = window_around_mask(mask, resolution=64, multiple=16)
    small = crop_mask(mask, w)
    assert small.any() and small.sum() >= 60


def test_feather_weights_are_zero_outside_and_one_inside():
    mask = _mask((40, 40), 5, 35, 5, 35)
    weights = feather_weights(mask, 4)
    assert weights[~mask].max() == 0 and weights[20, 20] == 1 and 0 < weights[5, 20] < 1


def test_paste_back_refuses_a_mask_outside_the_window():
    mask = _mask((200, 200), 10, 20, 10, 20)
    w = window_around_mask(mask, resolution=64, multiple=16)
    other = _mask((200, 200), 150, 160, 150, 160)
    with pytest.raises(GenerationError, match="outside the generation window"):
        paste_back(np.zeros((200, 200, 3), np.uint8), np.zeros((64, 64, 3), np.uint8), w, mask | other)


def test_far_apart_defects_get_one_full_resolution_window_each():
    mask = _mask((256, 4096), 100, 130, 40, 70) | _mask((256, 4096), 20, 40, 3900, 3930)
    one = window_around_mask(mask, resolution=64, multiple=8)
    assert one.scale < 0.1  # a single window would shrink each defect to a few generated pixels
    groups = windows_for_mask(mask, resolution=64, multiple=8)
    assert len(groups) == 2
    for (w, part), (y0, x0) in zip(groups, [(20, 3900), (100, 40)]):  # row-major order
        assert w.scale == 1.0 and (w.width, w.height) == (64, 64)
        assert part[y0, x0] and not (part & ~mask).any() and part[w.y0 : w.y1, w.x0 : w.x1].sum() == part.sum()
    assert np.array_equal(groups[0][1] | groups[1][1], mask) and not (groups[0][1] & groups[1][1]).any()


def test_nearby_components_share_a_window_and_windows_never_overlap():
    rng = np.random.default_rng(0)
    mask = np.zeros((256, 1024), bool)
    mask[50:54, 100:104] = mask[60:64, 120:124] = True  # 16 px apart: one group
    for _ in range(12):
        y, x = rng.integers(0, 250), rng.integers(0, 1018)
        mask[y : y + 5, x : x + 5] = True
    groups = windows_for_mask(mask, resolution=64, multiple=8)
    assert np.array_equal(np.logical_or.reduce([g for _, g in groups]), mask)
    together = [g for _, g in groups if g[50, 100]]
    assert len(together) == 1 and together[0][60, 120]
    for i, (a, _) in enumerate(groups):
        for b, _ in groups[i + 1 :]:
            assert not (a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1)
    speckle = rng.random((256, 1024)) < 0.02  # hundreds of groups: one request, one window
    assert len(windows_for_mask(speckle, resolution=64, multiple=8)) == 1
    with pytest.raises(GenerationError, match="mask is empty"):
        windows_for_mask(np.zeros((64, 64), bool), resolution=64)


def test_zoom_paints_a_small_defect_in_a_smaller_window_enlarged():
    mask = _mask((256, 4096), 100, 106, 2000, 2005)  # a 5x6 px nep on a strip
    w = window_around_mask(mask, resolution=64, multiple=16, zoom=2)
    assert (w.width, w.height) == (32, 32) and (w.gen_width, w.gen_height) == (64, 64) and w.scale == 2
    ((grouped, _),) = windows_for_mask(mask, 64, 16, zoom=2)
    assert grouped == w
    big = _mask((256, 256), 50, 150, 50, 150)  # larger than resolution / zoom: its own size decides, as before
    assert window_around_mask(big, 64, 16, zoom=2) == window_around_mask(big, 64, 16)
    with pytest.raises(GenerationError, match="zoom must be >= 1"):
        window_around_mask(mask, 64, 16, zoom=0.5)
