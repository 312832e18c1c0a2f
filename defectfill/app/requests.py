"""The page's inputs -> a checked generation request; the candidates -> tiles to show.

The mask editor (Gradio's `ImageEditor`) hands over `{"background": (H, W, 3|4) uint8,
"layers": [(H, W, 4) uint8, ...], "composite": ...}`: the good image is the background, the mask
is every pixel a brush stroke covered in any layer (alpha > 0). A mask file uploaded beside it
replaces the strokes; it must have the image's size (masks are never resized silently).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from defectfill.data.images import load_image, load_mask, to_rgb_array
from defectfill.errors import DataError
from defectfill.generators.interface import GenerationResult
from defectfill.mask_proposals import propose_masks
from defectfill.viz import draw_mask_outline

MASK_RGBA = (255, 40, 40, 255)  # how a mask is painted into the editor's layer (the brush colour)
CHANGED_COLOUR = (255, 0, 0)
REQUEST_COLOUR = (255, 220, 0)


def load_good_image(path: str | Path) -> np.ndarray:
    """A good fabric image file (any format the readers take) -> (H, W, 3) uint8, or DataError."""
    return load_image(path)


def mask_layer(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W, 4) uint8 editor layer: the brush colour where the mask is set, clear elsewhere."""
    layer = np.zeros((*mask.shape, 4), dtype=np.uint8)
    layer[mask] = MASK_RGBA
    return layer


def editor_value(image: np.ndarray, mask: np.ndarray | None = None) -> dict[str, Any]:
    """The ImageEditor value showing `image` with `mask` painted on its layer (none: an empty layer)."""
    mask = np.zeros(image.shape[:2], bool) if mask is None else mask
    return {"background": image, "layers": [mask_layer(mask)], "composite": None}


def request_from_editor(value: dict[str, Any] | None, mask_file: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image (H, W, 3) uint8, mask (H, W) bool) from the editor (and an optional mask file); DataError
    with the fix when the image is missing, the mask is empty, or the mask file has another size."""
    background = None if value is None else value.get("background")
    if background is None:
        raise DataError("no good image: upload a fabric image (or pick one from the list) before generating")
    image = to_rgb_array(np.asarray(background), name="good image")
    if mask_file:
        mask = load_mask(mask_file, shape=image.shape[:2])
    else:
        mask = np.zeros(image.shape[:2], bool)
        for i, layer in enumerate(value.get("layers") or []):
            layer = np.asarray(layer)
            if layer.shape[:2] != image.shape[:2]:
                raise DataError(f"mask layer {i + 1}: size {layer.shape[1]}x{layer.shape[0]} differs from the image "
                                f"{image.shape[1]}x{image.shape[0]}; clear the editor and draw the mask again")
            mask |= (layer[..., 3] > 0) if layer.ndim == 3 and layer.shape[2] == 4 else (layer.reshape(*layer.shape[:2], -1).max(-1) > 0)
    if not mask.any():
        raise DataError("the mask is empty: paint where the defect goes with the brush (or press 'Propose a mask')")
    return image, mask


def propose_mask(image: np.ndarray, defect_type: str, seed: int, real_masks: list[np.ndarray] | None = None,
                 mode: str = "auto") -> np.ndarray:
    """One proposed mask for `defect_type` on `image`'s fabric (per-type shapes, or learned from real masks)."""
    return propose_masks(image.shape[:2], defect_type, 1, np.random.default_rng(seed), real_masks=real_masks,
                         mode=mode, image=image)[0]


def _view_box(mask: np.ndarray, min_side: int = 96) -> tuple[int, int, int, int]:
    """y0, y1, x0, x1 of the region shown for a candidate: the mask's box grown by its own size, at
    least `min_side` px, inside the image (a line-scan strip shows the part around the defect)."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    out = []
    for lo, hi, size in ((ys.min(), ys.max() + 1, h), (xs.min(), xs.max() + 1, w)):
        side = min(size, max(min_side, 3 * (hi - lo)))
        start = int(np.clip((lo + hi) // 2 - side // 2, 0, size - side))
        out += [start, start + side]
    return out[0], out[1], out[2], out[3]


def candidate_tiles(result: GenerationResult) -> list[tuple[np.ndarray, str]]:
    """Each candidate with the request outlined (yellow) and its changed pixels outlined (red, on top),
    cropped around the mask; captions: number, selection score, the selection's pick."""
    y0, y1, x0, x1 = _view_box(result.request_mask)
    best = result.selected[0] if result.selected else None
    tiles = []
    for i, (candidate, changed) in enumerate(zip(result.candidates, result.changed_masks)):
        shown = draw_mask_outline(candidate, result.request_mask, REQUEST_COLOUR)
        shown = draw_mask_outline(shown, changed, CHANGED_COLOUR)
        caption = f"#{i + 1} {result.selection_metric} {result.scores[i]:.3f}" + (" (selected)" if i == best else "")
        tiles.append((shown[y0:y1, x0:x1], caption))
    return tiles


def candidate_choices(result: GenerationResult) -> list[tuple[str, str]]:
    """The accept checkboxes, in candidate order: (shown "#1 0.414 (selected)", value "#1")."""
    best = result.selected[0] if result.selected else None
    return [(f"#{i + 1} {s:.3f}" + (" (selected)" if i == best else ""), f"#{i + 1}")
            for i, s in enumerate(result.scores)]


def choice_index(label: str) -> int:
    """"#3" -> 2."""
    try:
        return int(str(label).strip().lstrip("#")) - 1
    except (ValueError, IndexError):
        raise DataError(f"candidate {label!r}: not one of the candidates shown; pick from the list") from None
