"""Pictures for people: mask outlines and captioned contact sheets of images.

Used for generated-defect sheets, dataset previews and reports. Images are (H, W, 3) uint8 RGB
(greyscale (H, W) is accepted and replicated), masks (H, W) bool. Captions use PIL's built-in
default font, so nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from defectfill.data.images import to_mask_array, to_rgb_array
from defectfill.errors import DataError
from defectfill.io_utils import atomic_save

_BACKGROUND = (32, 32, 32)
_TEXT = (235, 235, 235)
_PAD = 2


def mask_outline(mask: np.ndarray, thickness: int = 1) -> np.ndarray:
    """(H, W) bool: the pixels of `mask` within `thickness` px of its border (inner outline)."""
    mask = np.asarray(mask, bool)
    if thickness < 1:
        raise DataError(f"thickness: must be >= 1 pixel, found {thickness}")
    # pad with False so that a mask touching the image border still gets an outline there
    inner = ndimage.binary_erosion(np.pad(mask, 1), iterations=thickness)[1:-1, 1:-1]
    return mask & ~inner


def draw_mask_outline(
    image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 0, 0), thickness: int = 1
) -> np.ndarray:
    """A copy of `image` (H, W, 3) uint8 with the outline of `mask` (H, W) drawn in `color`."""
    rgb = to_rgb_array(image, "image")
    m = to_mask_array(mask, "mask")
    if m.shape != rgb.shape[:2]:
        raise DataError(
            f"mask: shape {m.shape} differs from image {rgb.shape[:2]}; pass the mask of this image"
        )
    out = rgb.copy()
    out[mask_outline(m, thickness)] = np.asarray(color, np.uint8)
    return out


def _fit_tile(image: np.ndarray, mask: np.ndarray | None, tile: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize to fit a tile x tile square (aspect kept), mask with nearest neighbour, then pad."""
    h, w = image.shape[:2]
    scale = tile / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST
    small = np.asarray(Image.fromarray(image).resize((nw, nh), resample))
    canvas = np.zeros((tile, tile, 3), np.uint8)
    canvas[:] = _BACKGROUND
    top, left = (tile - nh) // 2, (tile - nw) // 2
    canvas[top : top + nh, left : left + nw] = small
    if mask is None:
        return canvas, None
    # max-pooling style resize (via "L" + threshold > 0) keeps thin defects visible when shrunk
    m_small = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((nw, nh), Image.Resampling.BOX)) > 0
    m_canvas = np.zeros((tile, tile), bool)
    m_canvas[top : top + nh, left : left + nw] = m_small
    return canvas, m_canvas


def _font():
    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1: bitmap font without sizes
        return ImageFont.load_default()


def contact_sheet(
    images: list[np.ndarray],
    masks: list[np.ndarray | None] | None = None,
    captions: list[str] | None = None,
    ncols: int = 8,
    tile: int = 128,
) -> np.ndarray:
    """A grid of `images` as (H, W, 3) uint8: each fitted into a `tile` px square, its mask outlined
    in red, its caption (if any) written under it."""
    if not images:
        raise DataError("images: the contact sheet needs at least one image; pass a non-empty list")
    if ncols < 1 or tile < 8:
        raise DataError(f"ncols/tile: need ncols >= 1 and tile >= 8, found ncols={ncols}, tile={tile}")
    n = len(images)
    for name, seq in (("masks", masks), ("captions", captions)):
        if seq is not None and len(seq) != n:
            raise DataError(f"{name}: {len(seq)} given for {n} images; pass one per image (None to skip one)")
    font = _font()
    caption_h = 0
    if captions is not None and any(captions):
        bbox = font.getbbox("Ag")
        caption_h = (bbox[3] - bbox[1]) + 6
    cols = min(ncols, n)
    rows = (n + cols - 1) // cols
    cell_w, cell_h = tile + _PAD, tile + caption_h + _PAD
    sheet = Image.new("RGB", (cols * cell_w + _PAD, rows * cell_h + _PAD), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for k, image in enumerate(images):
        rgb = to_rgb_array(image, f"images[{k}]")
        mask = None if masks is None or masks[k] is None else to_mask_array(masks[k], f"masks[{k}]")
        if mask is not None and mask.shape != rgb.shape[:2]:
            raise DataError(f"masks[{k}]: shape {mask.shape} differs from images[{k}] {rgb.shape[:2]}")
        tile_rgb, tile_mask = _fit_tile(rgb, mask, tile)
        if tile_mask is not None and tile_mask.any():
            tile_rgb[mask_outline(tile_mask, 1)] = (255, 0, 0)
        r, c = divmod(k, cols)
        x, y = _PAD + c * cell_w, _PAD + r * cell_h
        sheet.paste(Image.fromarray(tile_rgb), (x, y))
        if caption_h and captions[k]:
            text = str(captions[k])
            while len(text) > 1 and draw.textlength(text, font=font) > tile:
                text = text[:-1]  # clip to the tile width rather than overlap the neighbour
            draw.text((x + 1, y + tile + 2), text, fill=_TEXT, font=font)
    return np.asarray(sheet)


def save_contact_sheet(
    path: str | Path,
    images: list[np.ndarray],
    masks: list[np.ndarray | None] | None = None,
    captions: list[str] | None = None,
    ncols: int = 8,
    tile: int = 128,
) -> Path:
    """Write `contact_sheet(...)` as a PNG at `path`, atomically; returns the path."""
    path = Path(path)
    sheet = contact_sheet(images, masks, captions, ncols=ncols, tile=tile)
    atomic_save(path, lambda tmp: Image.fromarray(sheet).save(tmp, format="PNG"))
    return path
