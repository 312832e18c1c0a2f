"""The generation window: crop around the mask at the model's resolution, paste the result back.

A diffusion inpainting model works at one resolution (512 px for SD-2, 64-128 px for the offline
model), while fabric images come at any size (a 4096x256 strip, a 2048x2048 scan). DefectFill
therefore works on a *window*: the mask's bounding box grown by some context to at least the model
resolution, clamped inside the image; the window is resized so that its longer side is the model
resolution (rounded to what the UNet accepts), generated, resized back and pasted into the
original **inside the request mask only**, so every pixel outside the mask stays bit-identical.
With `zoom` z > 1 the smallest window is resolution / z image pixels, enlarged z times: a defect
smaller than a latent cell at the image's own scale (a 5-px nep) is painted z times finer.

Window coordinates follow the project convention: `x0, y0, x1, y1` with exclusive ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from defectfill.errors import GenerationError


@dataclass(frozen=True)
class Window:
    """A crop `image[y0:y1, x0:x1]` generated at `gen_height x gen_width` pixels."""

    x0: int
    y0: int
    x1: int
    y1: int
    gen_height: int
    gen_width: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def scale(self) -> float:
        """Generated pixels per image pixel (< 1: the window was shrunk to the resolution)."""
        return self.gen_height / self.height

    def as_dict(self) -> dict:
        return {"box": [self.x0, self.y0, self.x1, self.y1], "gen_size": [self.gen_height, self.gen_width]}


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


def _place(center: float, size: int, limit: int) -> int:
    """Start of a span of `size` centred at `center`, clamped inside [0, limit)."""
    start = math.floor(center - size / 2.0)
    return min(max(0, start), limit - size)


def window_around_mask(
    mask: np.ndarray,
    resolution: int,
    multiple: int = 8,
    context: float = 0.25,
    min_context_px: int = 8,
    zoom: float = 1.0,
) -> Window:
    """The window that DefectFill generates for `mask` ((H, W) bool, not empty).

    side = max(resolution / zoom, mask bbox side + 2 * max(min_context_px, context * bbox side)), a square
    centred on the mask's bounding box, clipped to the image (a 256-px-high strip gives a window
    256 high) and shifted to stay inside it. The window is generated with its longer side equal to
    `resolution`, both sides rounded to `multiple` (what the VAE and UNet accept).
    """
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise GenerationError("mask is empty: nothing to generate; draw at least one pixel where the defect goes")
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return window_around_box(bbox, mask.shape, resolution, multiple, context, min_context_px, zoom)


def window_around_box(
    bbox: tuple[int, int, int, int],
    shape: tuple[int, ...],
    resolution: int,
    multiple: int = 8,
    context: float = 0.25,
    min_context_px: int = 8,
    zoom: float = 1.0,
) -> Window:
    """`window_around_mask` for a mask whose bounding box is `bbox` (x0, y0, x1, y1) in an image of
    `shape` (H, W): the window depends on the box only."""
    if resolution < multiple:
        raise GenerationError(f"resolution {resolution} is smaller than the size multiple {multiple}")
    if not zoom >= 1.0:
        raise GenerationError(f"zoom must be >= 1 (1: windows at the image's own scale), found {zoom}")
    height, width = shape[:2]
    bx0, by0, bx1, by1 = bbox
    bbox_side = max(bx1 - bx0, by1 - by0)
    margin = max(math.ceil(min_context_px / zoom), math.ceil(context * bbox_side))  # context px as generated
    side = max(math.ceil(resolution / zoom), bbox_side + 2 * margin)
    win_h, win_w = min(side, height), min(side, width)
    y0 = _place((by0 + by1) / 2.0, win_h, height)
    x0 = _place((bx0 + bx1) / 2.0, win_w, width)
    scale = resolution / max(win_h, win_w)
    gen_h, gen_w = _round_to(win_h * scale, multiple), _round_to(win_w * scale, multiple)
    return Window(x0, y0, x0 + win_w, y0 + win_h, gen_h, gen_w)


def _overlap(a: Window, b: Window) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _first_overlap(windows: list[Window]) -> tuple[int, int] | None:
    n = len(windows)
    return next(((i, j) for i in range(n) for j in range(i + 1, n) if _overlap(windows[i], windows[j])), None)


def windows_for_mask(
    mask: np.ndarray,
    resolution: int,
    multiple: int = 8,
    context: float = 0.25,
    min_context_px: int = 8,
    max_groups: int = 64,
    zoom: float = 1.0,
) -> list[tuple[Window, np.ndarray]]:
    """Split `mask` into groups of nearby defects, each with its own window: [(window, group_mask)].

    One window for the whole mask would, for defects far apart (two knots at the two ends of a
    4096-px strip), be shrunk until each defect is a few generated pixels. Instead every connected
    component (8-connectivity) gets its `window_around_mask`; components whose windows overlap are
    merged and the merged group's window recomputed, until no two windows overlap. Groups are
    ordered by their first pixel (row-major). With more than `max_groups` groups after merging,
    the whole mask is one window (a speckle mask is one request, not hundreds).
    """
    binary = np.asarray(mask, bool)
    if not binary.any():
        raise GenerationError("mask is empty: nothing to generate; draw at least one pixel where the defect goes")
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    if count - 1 > 4 * max_groups:  # a speckle mask: skip the pairwise merging
        return [(window_around_mask(binary, resolution, multiple, context, min_context_px, zoom), binary)]
    # groups as (component labels, bounding box); a window depends on the box only
    groups = [([k], (x, y, x + w, y + h)) for k, (x, y, w, h, _) in enumerate(stats[1:].tolist(), 1)]

    def window_of(box):
        return window_around_box(box, binary.shape, resolution, multiple, context, min_context_px, zoom)

    windows = [window_of(box) for _, box in groups]
    while (pair := _first_overlap(windows)) is not None:
        i, j = pair
        (labels_i, a), (labels_j, b) = groups[i], groups.pop(j)
        groups[i] = (labels_i + labels_j, (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])))
        windows.pop(j)
        windows[i] = window_of(groups[i][1])
    if len(groups) > max_groups:
        return [(window_around_mask(binary, resolution, multiple, context, min_context_px, zoom), binary)]
    parts = [np.isin(labels, members) for members, _ in groups]
    order = sorted(range(len(groups)), key=lambda k: int(np.flatnonzero(parts[k])[0]))
    return [(windows[k], parts[k]) for k in order]


def crop_image(image: np.ndarray, window: Window) -> np.ndarray:
    """(H, W, 3) uint8 -> the window resized to (gen_height, gen_width, 3) uint8."""
    crop = image[window.y0 : window.y1, window.x0 : window.x1]
    if crop.shape[:2] == (window.gen_height, window.gen_width):
        return np.ascontiguousarray(crop)
    shrink = window.gen_height < window.height
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    return cv2.resize(crop, (window.gen_width, window.gen_height), interpolation=interpolation)


def crop_mask(mask: np.ndarray, window: Window) -> np.ndarray:
    """(H, W) bool -> the window's mask at generation size; a generated pixel is masked when any
    image pixel under it is, so the region the model repaints always covers the request mask."""
    crop = mask[window.y0 : window.y1, window.x0 : window.x1].astype(np.float32)
    if crop.shape == (window.gen_height, window.gen_width):
        return crop > 0
    if window.gen_height < window.height:
        coverage = cv2.resize(crop, (window.gen_width, window.gen_height), interpolation=cv2.INTER_AREA)
    else:
        coverage = cv2.resize(crop, (window.gen_width, window.gen_height), interpolation=cv2.INTER_LINEAR)
    return coverage > 0


def feather_weights(mask: np.ndarray, feather_px: float) -> np.ndarray:
    """(H, W) float32 in [0, 1]: 1 deep inside the mask, ramping to 0 at its edge over `feather_px`
    pixels, exactly 0 outside. feather_px 0: the mask itself."""
    inside = mask.astype(bool)
    if feather_px <= 0:
        return inside.astype(np.float32)
    dist = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 3)
    return np.clip(dist / float(feather_px), 0.0, 1.0).astype(np.float32) * inside


def paste_back(
    image: np.ndarray,
    generated: np.ndarray,
    window: Window,
    request_mask: np.ndarray,
    feather_px: float = 0.0,
) -> np.ndarray:
    """Put a generated window (gen_height, gen_width, 3) uint8 back into a copy of `image`.

    Only pixels of `request_mask` change (blended with `feather_px` inside the mask); every other
    pixel is copied from `image`, bit for bit.
    """
    if generated.shape[:2] != (window.gen_height, window.gen_width):
        raise GenerationError(
            f"generated window is {generated.shape[1]}x{generated.shape[0]}, expected "
            f"{window.gen_width}x{window.gen_height}"
        )
    beyond = request_mask.copy()
    beyond[window.y0 : window.y1, window.x0 : window.x1] = False
    if beyond.any():
        raise GenerationError(
            f"request mask has {int(beyond.sum())} pixels outside the generation window {window.as_dict()['box']}; "
            "build the window with window_around_mask(request_mask, ...)"
        )
    if (window.gen_height, window.gen_width) == (window.height, window.width):
        patch = generated
    else:
        grow = window.gen_height < window.height
        interpolation = cv2.INTER_CUBIC if grow else cv2.INTER_AREA
        patch = cv2.resize(generated, (window.width, window.height), interpolation=interpolation)
    out = image.copy()
    region = request_mask[window.y0 : window.y1, window.x0 : window.x1]
    target = out[window.y0 : window.y1, window.x0 : window.x1]
    weights = feather_weights(region, feather_px)
    if feather_px <= 0:
        target[region] = patch[region]
    else:
        blended = weights[..., None] * patch.astype(np.float32) + (1 - weights[..., None]) * target.astype(np.float32)
        target[region] = np.clip(blended[region] + 0.5, 0, 255).astype(np.uint8)
    return out
