"""Mask outlines and contact sheets."""

from __future__ import annotations

import numpy as np
import pytest

from defectfill.data.images import load_image
from defectfill.errors import DataError
from defectfill.viz import contact_sheet, draw_mask_outline, mask_outline, save_contact_sheet


def _square_mask(shape=(20, 30), box=(5, 4, 15, 12)):
    mask = np.zeros(shape, bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def test_outline_is_the_border_of_the_mask():
    mask = _square_mask()
    ring = mask_outline(mask, 1)
    assert ring.sum() == 2 * (10 + 8) - 4  # perimeter of a 10 x 8 rectangle
    assert not ring[5:11, 6:14].any()  # interior untouched
    thick = mask_outline(mask, 2)
    assert thick.sum() > ring.sum() and np.array_equal(thick & ring, ring)
    edge = np.zeros((10, 10), bool)
    edge[:, :3] = True  # touching the image border: outlined there too
    assert mask_outline(edge, 1)[:, 0].all()


def test_draw_mask_outline_colours_only_the_outline():
    image = np.full((20, 30, 3), 100, np.uint8)
    mask = _square_mask()
    out = draw_mask_outline(image, mask, color=(0, 255, 0))
    assert out is not image and np.all(image == 100)
    green = np.all(out == (0, 255, 0), axis=2)
    assert np.array_equal(green, mask_outline(mask, 1))
    assert np.all(out[~green] == 100)
    with pytest.raises(DataError, match="shape"):
        draw_mask_outline(image, np.zeros((5, 5), bool))


def test_contact_sheet_grid_outlines_and_captions(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 200, size=(64, 48, 3), dtype=np.uint8) for _ in range(5)]
    images.append(rng.integers(0, 200, size=(40, 40), dtype=np.uint8))  # greyscale accepted
    masks = [None, _square_mask((64, 48), (10, 10, 30, 40)), None, None, None, np.ones((40, 40), bool)]
    plain = contact_sheet(images, ncols=4, tile=32)
    assert plain.dtype == np.uint8 and plain.ndim == 3
    assert plain.shape[1] == 4 * 34 + 2 and plain.shape[0] == 2 * 34 + 2  # 2 rows of 4 tiles + padding
    assert not np.all(plain == (255, 0, 0), axis=2).any()
    sheet = contact_sheet(images, masks, captions=["a", "b", "", "d", "e", "long caption that is clipped"],
                          ncols=4, tile=32)
    assert sheet.shape[0] > plain.shape[0]  # caption rows added
    red = np.all(sheet == (255, 0, 0), axis=2)
    assert red[:, : 34 * 2].any() and not red[:34, 34 * 2 + 2:].any()  # outline only in tiles with masks
    # caption text lies in the strip below the first tile
    strip = sheet[34:34 + 8, 2:34]
    assert (strip.max(axis=2) > 150).any()
    path = save_contact_sheet(tmp_path / "sub" / "sheet.png", images, masks, ncols=4, tile=32)
    assert np.array_equal(load_image(path), contact_sheet(images, masks, ncols=4, tile=32))
    assert not list((tmp_path / "sub").glob(".*"))  # no temporary left behind


def test_contact_sheet_rejects_bad_input():
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(DataError, match="at least one"):
        contact_sheet([])
    with pytest.raises(DataError, match="masks: 1 given for 2"):
        contact_sheet([img, img], masks=[None])
    with pytest.raises(DataError, match=r"masks\[0\]"):
        contact_sheet([img], masks=[np.zeros((4, 4), bool)])
