"""Mask proposals: where new defects go on a good image (DESIGN §1 step 2).

Two sources, chosen with `mode`:

- ``"real"``: a real training mask of that defect type, cropped to its defect, randomly flipped,
  rotated (any angle for blobs; only 180° for defects that follow the warp or weft, so a broken
  end stays vertical) and scaled by 0.75-1.33x the ratio of the image sizes, then placed;
- ``"procedural"``: per-type shapes: thin lines along the warp (vertical: broken_end) or the weft
  (horizontal: broken_yarn, broken_pick), lines either way for white_stripe, irregular blobs for
  stain / oil, small dots for knot, a small irregular blob for hole;
- ``"auto"``: real when real masks of the type are given, else procedural.

Sizes are relative to the short image side `ref` with absolute minimums, so a 256-px window gets
10-200 px defects and a 4096x256 strip gets defects sized for its 256-px height. Shapes are
placed inside `region` (default the whole image) at least `margin` px from its border unless
`allow_border`. Given the good `image`, shapes land only on fabric (`fabric_region`): never on a
nearly constant band (the blank lead-in of a line-scan strip, a lamp-off frame) nor on regions
saturated at 0 / 255.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from defectfill.errors import DataError
from defectfill.masks import binarize, erode, resize_mask

MODES = ("auto", "real", "procedural")
# defect types whose shape follows a yarn direction: rotate only by 180 degrees
_ORIENTED = {"broken_end", "broken_yarn", "broken_pick", "white_stripe"}


def _rng(rng: Any) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


# ------------------------------------------------------------------------------- procedural shapes
def _line(rng: np.random.Generator, ref: float, extent: int, vertical: bool, width_range, length_range) -> np.ndarray:
    """A thin line (optionally wavy by a pixel) of the given relative width / length."""
    s = ref / 256.0
    width = max(1, round(rng.uniform(*width_range) * s))
    length = round(rng.uniform(*length_range) * extent)
    length = max(10, min(length, extent))
    canvas = np.zeros((length, width + 2), dtype=bool)
    # a yarn is not perfectly straight: a random walk of at most one pixel either side
    wobble = np.clip(np.cumsum(rng.choice([-1, 0, 0, 0, 0, 0, 1], size=length)), -1, 1) + 1
    for y in range(length):
        canvas[y, wobble[y] : wobble[y] + width] = True
    canvas = canvas[:, canvas.any(axis=0)]
    return canvas if vertical else canvas.T


def _blob(rng: np.random.Generator, ref: float, radius_range, min_radius: float, elongation=(1.0, 1.6),
          roughness: float = 0.25) -> np.ndarray:
    """An irregular blob: a polar radius with a few random harmonics, rotated."""
    radius = max(min_radius, rng.uniform(*radius_range) * ref)
    ratio = rng.uniform(*elongation)
    angles = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    r = np.ones_like(angles)
    for harmonic in (2, 3, 5):
        r += roughness / harmonic * rng.normal() * np.cos(harmonic * angles + rng.uniform(0, 2 * np.pi))
    r = np.clip(r, 0.4, 1.8) * radius
    theta = rng.uniform(0, np.pi)
    x, y = r * np.cos(angles) * ratio, r * np.sin(angles)
    xr, yr = x * math.cos(theta) - y * math.sin(theta), x * math.sin(theta) + y * math.cos(theta)
    side = math.ceil(2 * np.abs(np.concatenate([xr, yr])).max()) + 3
    canvas = np.zeros((side, side), dtype=np.uint8)
    pts = np.stack([xr + side / 2, yr + side / 2], axis=1).round().astype(np.int32)
    cv2.fillPoly(canvas, [pts], 1)
    out = canvas.astype(bool)
    ys, xs = np.nonzero(out)
    return out[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


ShapeFn = Callable[[np.random.Generator, int, int], np.ndarray]


def _shape_broken_end(rng, h, w):
    return _line(rng, min(h, w), h, True, (1.0, 3.0), (0.15, 0.7))


def _shape_broken_yarn(rng, h, w):
    return _line(rng, min(h, w), min(w, max(h, 256)), False, (1.0, 3.0), (0.15, 0.7))


def _shape_white_stripe(rng, h, w):
    vertical = rng.uniform() < 0.5
    extent = h if vertical else min(w, max(h, 256))
    return _line(rng, min(h, w), extent, vertical, (2.0, 6.0), (0.3, 0.95))


def _shape_stain(rng, h, w):
    return _blob(rng, min(h, w), (0.04, 0.15), 5, elongation=(1.0, 1.5))


def _shape_oil(rng, h, w):
    return _blob(rng, min(h, w), (0.03, 0.12), 4, elongation=(1.2, 2.5), roughness=0.15)


def _shape_knot(rng, h, w):
    return _blob(rng, min(h, w), (0.01, 0.03), 2, elongation=(1.0, 1.4), roughness=0.1)


def _shape_hole(rng, h, w):
    return _blob(rng, min(h, w), (0.02, 0.06), 3, elongation=(1.0, 1.5), roughness=0.45)


PROCEDURAL_SHAPES: dict[str, ShapeFn] = {
    "broken_end": _shape_broken_end,
    "broken_yarn": _shape_broken_yarn,
    "broken_pick": _shape_broken_yarn,
    "white_stripe": _shape_white_stripe,
    "stain": _shape_stain,
    "oil": _shape_oil,
    "oil_stain": _shape_oil,
    "knot": _shape_knot,
    "hole": _shape_hole,
}


# ------------------------------------------------------------------------------------- real shapes
def _crop_to_content(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _transform_real(rng: np.random.Generator, mask: np.ndarray, target_ref: float, oriented: bool) -> np.ndarray:
    """Crop, flip, rotate, scale one real mask; the scale follows the ratio of short image sides."""
    shape = _crop_to_content(mask)
    if rng.uniform() < 0.5:
        shape = shape[:, ::-1]
    if rng.uniform() < 0.5:
        shape = shape[::-1, :]
    scale = target_ref / float(min(mask.shape)) * rng.uniform(0.75, 1.33)
    angle = 180.0 * rng.integers(0, 2) if oriented else rng.uniform(0, 360)
    h, w = shape.shape
    pad = math.ceil(math.hypot(h, w) / 2) + 2
    canvas = np.pad(shape.astype(np.float32), pad)
    centre = (canvas.shape[1] / 2.0, canvas.shape[0] / 2.0)
    matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
    rotated = cv2.warpAffine(canvas, matrix, (canvas.shape[1], canvas.shape[0]), flags=cv2.INTER_LINEAR) >= 0.5
    if not rotated.any():
        rotated = canvas >= 0.5
    rotated = _crop_to_content(rotated)
    new_size = (max(1, round(rotated.shape[0] * scale)), max(1, round(rotated.shape[1] * scale)))
    return _crop_to_content(resize_mask(rotated, new_size, mode="area", keep_nonempty=True))


# ---------------------------------------------------------------------------------- fabric validity
SATURATED = (2, 253)  # grey levels at or beyond these count as clipped by the camera


def fabric_region(image: np.ndarray, window: int | None = None, std_floor: float | None = None,
                  saturation: tuple[int, int] = SATURATED) -> np.ndarray:
    """(H, W) bool: where the good image shows fabric, i.e. where a defect may be proposed.

    image: (H, W, 3) or (H, W) uint8. A pixel is fabric when, in the `window` x `window` box around
    it (default 6 % of the short side, at least 7 px), the grey level's standard deviation is at
    least `std_floor` and fewer than half of the pixels are saturated (<= saturation[0] or >=
    saturation[1]). The floor is relative to the image's own texture, max(0.5, 0.2 x the 75th
    percentile of the local std), because real cloth can be very smooth (real stained cotton at
    64-128 px: local std 1-2 grey levels) while a blank band is much smoother than the cloth beside
    it; so a band is found as long as it covers less than a quarter of the image, and an image that
    is all smooth counts as fabric. The map is shrunk by half a window so that a box straddling
    fabric and a blank band does not count as fabric. Cost: four box filters.
    """
    arr = np.asarray(image)
    if arr.ndim == 3:
        arr = arr.mean(axis=2)
    if arr.ndim != 2:
        raise DataError(f"fabric_region: expected an (H, W) or (H, W, 3) image, found shape {np.asarray(image).shape}")
    grey = arr.astype(np.float32)
    height, width = grey.shape
    if window is None:
        window = max(7, round(0.06 * min(height, width)))
    window = int(window) | 1  # odd: centred on the pixel
    box = (window, window)
    mean = cv2.boxFilter(grey, -1, box)
    std = np.sqrt(np.maximum(0.0, cv2.boxFilter(grey * grey, -1, box) - mean * mean))
    clipped = ((grey <= saturation[0]) | (grey >= saturation[1])).astype(np.float32)
    saturated = cv2.boxFilter(clipped, -1, box) > 0.5
    if std_floor is None:
        std_floor = max(0.5, 0.2 * float(np.percentile(std, 75)))
    fabric = (std >= std_floor) & ~saturated
    return erode(fabric, window // 2)


# ---------------------------------------------------------------------------------------- placing
def _place(rng: np.random.Generator, shape: np.ndarray, allowed: np.ndarray, tries: int = 60) -> np.ndarray | None:
    """Put `shape` at a random position where all its pixels are allowed; None when it never fits."""
    H, W = allowed.shape
    h, w = shape.shape
    if h > H or w > W:
        return None
    for _ in range(tries):
        y, x = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
        if allowed[y : y + h, x : x + w][shape].all():
            out = np.zeros((H, W), dtype=bool)
            out[y : y + h, x : x + w] = shape
            return out
    return None


def _fit(shape: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Shrink a shape that is larger than the allowed area's bounding box."""
    ys, xs = np.nonzero(allowed)
    max_h, max_w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    factor = min(1.0, max_h / shape.shape[0], max_w / shape.shape[1])
    if factor >= 1.0:
        return shape
    size = (max(1, int(shape.shape[0] * factor)), max(1, int(shape.shape[1] * factor)))
    return _crop_to_content(resize_mask(shape, size, mode="area", keep_nonempty=True))


def propose_masks(
    image_shape: Sequence[int],
    defect_type: str,
    n: int,
    rng: Any = None,
    real_masks: Sequence[Any] | None = None,
    mode: str = "auto",
    allow_border: bool = False,
    region: Any = None,
    margin: int | None = None,
    image: np.ndarray | None = None,
) -> list[np.ndarray]:
    """`n` (H, W) bool masks where new `defect_type` defects can go on an image of `image_shape`.

    rng: np.random.Generator or seed (same seed, same masks).
    real_masks: the real training masks of this type (arrays/paths of any size), for mode "real"/"auto".
    region: (H, W) bool area the defects must lie in (the fabric); default the whole image.
    margin: distance kept from the region's border (default max(2, 2 % of the short side));
        ignored with allow_border.
    image: the good image ((H, W, 3) or (H, W) uint8): when given, shapes land only on its fabric
        (`fabric_region`), never on blank or saturated margins.
    """
    if mode not in MODES:
        raise DataError(f"mode {mode!r} is not one of {list(MODES)}")
    if n < 0:
        raise DataError(f"n must be >= 0, found {n}")
    height, width = int(image_shape[0]), int(image_shape[1])
    if height < 4 or width < 4:
        raise DataError(f"image_shape {tuple(image_shape)} is too small for mask proposals (need >= 4x4); "
                        "remove such tiny images from the good images, or pass --masks real with masks of their size")
    rng = _rng(rng)
    real = [binarize(m) for m in (real_masks or [])]
    real = [m for m in real if m.any()]
    if mode == "real" and not real:
        raise DataError(
            f"mode 'real' needs real masks of {defect_type!r}, none were given (or all were empty); "
            "pass real_masks= (e.g. --real-masks DIR) or use mode 'procedural'"
        )
    use_real = mode == "real" or (mode == "auto" and bool(real))
    if not use_real and defect_type not in PROCEDURAL_SHAPES:
        raise DataError(
            f"defect type {defect_type!r} has no procedural shape; known: {sorted(PROCEDURAL_SHAPES)}. "
            "Pass real masks of this type (mode 'real') instead"
        )
    allowed = np.ones((height, width), dtype=bool) if region is None else binarize(region)
    if allowed.shape != (height, width):
        raise DataError(f"region is {allowed.shape[1]}x{allowed.shape[0]}, the image {width}x{height}")
    if image is not None:
        if np.asarray(image).shape[:2] != (height, width):
            raise DataError(f"image is {np.asarray(image).shape[1]}x{np.asarray(image).shape[0]}, image_shape "
                            f"{width}x{height}; pass the shape of the image the masks are for")
        fabric = fabric_region(image)
        if not fabric.any():
            raise DataError(f"no fabric in the {width}x{height} image: it is nearly constant or saturated "
                            "everywhere (fabric_region), so a defect would land on a blank or clipped area; remove "
                            "the image from the good images, or allow blank areas (allow_blank / --allow-blank)")
        allowed = allowed & fabric
        region = allowed
    if not allow_border:
        margin = max(2, round(0.02 * min(height, width))) if margin is None else int(margin)
        inner = np.zeros_like(allowed)
        inner[margin : height - margin, margin : width - margin] = True
        allowed = erode(allowed, margin) & inner if region is not None else allowed & inner
    if not allowed.any():
        raise DataError(f"no room for defects: the region left after a {margin}-px margin is empty; "
                        "pass allow_border=True or a larger region")
    ref = float(min(height, width))
    proposals: list[np.ndarray] = []
    for _ in range(n):
        placed = None
        for _attempt in range(20):
            if use_real:
                source = real[int(rng.integers(0, len(real)))]
                shape = _transform_real(rng, source, ref, defect_type in _ORIENTED)
            else:
                shape = PROCEDURAL_SHAPES[defect_type](rng, height, width)
            placed = _place(rng, _fit(shape, allowed), allowed)
            if placed is not None:
                break
        if placed is None:
            raise DataError(f"could not place a {defect_type} shape inside the allowed region after 20 tries; "
                            "pass allow_border=True or a larger region")
        proposals.append(placed)
    return proposals
