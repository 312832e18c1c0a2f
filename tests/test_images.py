"""defectfill.data.images: decoding every image/mask mode, conversion notes, errors, atomic saves."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from defectfill.data.images import (
    DataWarning,
    decode_image,
    decode_mask,
    load_image,
    load_mask,
    save_image,
    save_mask,
    to_mask_array,
    to_rgb_array,
)
from defectfill.errors import DataError

RNG = np.random.default_rng(0)
GREY = RNG.integers(0, 256, size=(12, 16), dtype=np.uint8)
RGB = RNG.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "mode, make, conversions, is_gray",
    [
        ("L", lambda: Image.fromarray(GREY), ["grayscale"], True),
        ("LA", lambda: Image.fromarray(np.dstack([GREY, GREY]), mode="LA"), ["alpha_dropped", "grayscale"], True),
        ("RGB", lambda: Image.fromarray(RGB), [], False),
        ("RGBA", lambda: Image.fromarray(np.dstack([RGB, GREY])), ["alpha_dropped"], False),
        ("P", lambda: Image.fromarray(RGB).convert("P"), ["palette"], False),
        ("I;16", lambda: Image.fromarray(GREY.astype(np.uint16) * 257), ["high_bit_depth", "grayscale"], True),
        ("CMYK", lambda: Image.fromarray(RGB).convert("CMYK"), ["cmyk"], False),
    ],
)
def test_decode_image_modes(tmp_path, mode, make, conversions, is_gray):
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    img = make()
    img.save(path)
    arr, info = decode_image(path)
    assert arr.shape == (12, 16, 3) and arr.dtype == np.uint8
    assert info.conversions == conversions and info.is_gray == is_gray
    if mode in ("L", "LA", "I;16"):
        np.testing.assert_array_equal(arr[..., 0], GREY)
        np.testing.assert_array_equal(arr[..., 2], GREY)
    if mode in ("RGB", "RGBA"):
        np.testing.assert_array_equal(arr, RGB)


def test_load_image_warns_for_conversions_not_for_grey(tmp_path):
    Image.fromarray(np.dstack([RGB, GREY])).save(tmp_path / "a.png")
    Image.fromarray(GREY).save(tmp_path / "g.png")
    with pytest.warns(DataWarning, match=r"a\.png: alpha channel dropped"):
        load_image(tmp_path / "a.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image(tmp_path / "g.png")


def test_unreadable_truncated_missing_images(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "t.png")
    (tmp_path / "t.png").write_bytes((tmp_path / "t.png").read_bytes()[:60])
    (tmp_path / "n.png").write_text("not an image")
    for name in ("t.png", "n.png"):
        with pytest.raises(DataError, match=rf"{name}: not a readable image.*re-export"):
            decode_image(tmp_path / name)
    with pytest.raises(DataError, match="file not found"):
        load_image(tmp_path / "missing.png")


BOX = np.zeros((12, 16), dtype=bool)
BOX[3:8, 4:12] = True


def _mask_file(tmp_path, arr, mode=None, name="m.png"):
    Image.fromarray(arr, mode=mode).save(tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize(
    "make, conversions",
    [
        (lambda: (BOX * 255).astype(np.uint8), []),
        (lambda: BOX.astype(np.uint8), []),  # 0/1
        (lambda: (BOX * 38).astype(np.uint8), []),  # one odd level
        (lambda: np.where(BOX, np.where(np.arange(16) < 8, 1, 2)[None, :], 0).astype(np.uint8), ["index_mask"]),
        (lambda: np.dstack([np.zeros_like(GREY), BOX * 255]).astype(np.uint8), ["mask_in_alpha"]),
        (lambda: np.dstack([BOX * 255, np.full_like(GREY, 255)]).astype(np.uint8), ["mask_with_alpha"]),
        (lambda: np.dstack([BOX * 255, np.zeros_like(GREY), np.zeros_like(GREY)]).astype(np.uint8), ["colour_mask"]),
    ],
)
def test_decode_mask_encodings(tmp_path, make, conversions):
    arr = make()
    mode = "LA" if arr.ndim == 3 and arr.shape[2] == 2 else None
    mask, info = decode_mask(_mask_file(tmp_path, arr, mode), (12, 16))
    np.testing.assert_array_equal(mask, BOX)
    assert info.conversions == conversions


def test_decode_mask_antialiased_faint_16bit_and_bilevel(tmp_path):
    soft = (BOX * 255).astype(np.uint8)
    soft[2, 4:12] = 60  # faint edge -> background
    soft[8, 4:12] = 200  # strong edge -> defect
    mask, info = decode_mask(_mask_file(tmp_path, soft), (12, 16))
    expected = BOX.copy()
    expected[8, 4:12] = True
    np.testing.assert_array_equal(mask, expected)
    assert info.conversions == ["nonbinary_mask"] and info.values == 4
    faint = np.where(BOX, 100, 0).astype(np.uint8)
    faint[3, 4] = 40  # 3 levels, all below 127: halve the maximum instead of losing the mask
    mask, info = decode_mask(_mask_file(tmp_path, faint, name="f.png"))
    np.testing.assert_array_equal(mask, BOX & ~((np.arange(12)[:, None] == 3) & (np.arange(16)[None, :] == 4)))
    mask, _ = decode_mask(_mask_file(tmp_path, (BOX * 65535).astype(np.uint16), name="w.png"))
    np.testing.assert_array_equal(mask, BOX)
    Image.fromarray(BOX).save(tmp_path / "b.png")  # mode "1"
    np.testing.assert_array_equal(decode_mask(tmp_path / "b.png")[0], BOX)


def test_load_mask_size_and_empty_errors(tmp_path):
    path = _mask_file(tmp_path, (BOX * 255).astype(np.uint8))
    with pytest.raises(DataError, match=r"m\.png: mask size 16x12 \(WxH\) differs from its image 20x12"):
        load_mask(path, (12, 20))
    empty = _mask_file(tmp_path, np.zeros((12, 16), np.uint8), name="e.png")
    assert not load_mask(empty).any()
    with pytest.raises(DataError, match=r"e\.png: mask is empty but a defect is declared"):
        load_mask(empty, allow_empty=False)


def test_to_mask_array_and_to_rgb_array_inputs():
    soft = np.where(BOX, 0.8, 0.1).astype(np.float32)
    with pytest.warns(DataWarning, match="soft mask"):
        np.testing.assert_array_equal(to_mask_array(soft), BOX)
    np.testing.assert_array_equal(to_mask_array(torch.from_numpy(BOX.astype(np.float32))[None]), BOX)
    np.testing.assert_array_equal(to_mask_array(BOX.astype(np.uint8)), BOX)
    chw = torch.from_numpy(RGB).permute(2, 0, 1)
    np.testing.assert_array_equal(to_rgb_array(chw), RGB)
    np.testing.assert_array_equal(to_rgb_array(RGB.astype(np.float32) / 255.0), RGB)
    with pytest.raises(DataError, match=r"float image values must lie in \[0, 1\]"):
        to_rgb_array(RGB.astype(np.float32))


def test_save_image_and_mask_round_trip_atomically(tmp_path):
    save_image(tmp_path / "out" / "i.png", RGB)
    save_mask(tmp_path / "out" / "m.png", BOX)
    np.testing.assert_array_equal(load_image(tmp_path / "out" / "i.png"), RGB)
    assert set(np.unique(np.asarray(Image.open(tmp_path / "out" / "m.png")))) == {0, 255}
    np.testing.assert_array_equal(load_mask(tmp_path / "out" / "m.png"), BOX)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["i.png", "m.png"]


def test_unreadable_image_is_a_data_error_after_ultralytics_patched_pil(tmp_path):
    # ultralytics replaces PIL.Image.open on import; an unknown file then raised ModuleNotFoundError
    import ultralytics.utils.patches  # noqa: F401

    from defectfill.data.images import load_image
    from defectfill.errors import DataError

    bad = tmp_path / "noise.png"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(DataError, match="not a readable image"):
        load_image(bad)
