"""What every defect generator shares, so that a new generator writes only its model.

    check_request      image -> (H, W, 3) uint8, mask -> (H, W) bool, the defect type known, k >= 1
    torch_generator    the caller's torch.Generator / int seed / None -> a seeded CPU generator
    build_result       candidates + scores -> GenerationResult: ranked, labelled by the pixels that
                       really changed (request ∩ |out − in| > τ), one box per changed component
    WindowedGenerator  base class of generators that paint inside a window around the mask at a
                       fixed resolution: crop -> `fill` -> paste back inside the mask only, so every
                       pixel outside the mask stays bit-identical; a subclass implements `fill`

Greyscale: an input with one channel (a 2-D array, an "L" image, a grey file) gives a result with
`gray=True`, whose `image` is (H, W); a grey-looking RGB input gives grey candidates (the luminance of
the output) but stays (H, W, 3).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from defectfill.data.images import load_image_with_info, looks_grey, to_mask_array, to_rgb_array
from defectfill.errors import DataError, GenerationError
from defectfill.generators.interface import GenerationResult
from defectfill.generators.window import crop_image, crop_mask, paste_back, windows_for_mask
from defectfill.masks import changed_mask, mask_to_boxes
from defectfill.selection import select

MEAN_ABS_DIFF = "mean_abs_diff_in_mask"


def input_is_gray(image: Any) -> bool:
    """Whether `image` has one channel: a 2-D or (H, W, 1) array, a (1, H, W) tensor, an L/I/F-mode
    PIL image, or a greyscale file."""
    if isinstance(image, (str, Path)):
        return load_image_with_info(image)[1]
    mode = getattr(image, "mode", None)
    if isinstance(mode, str):
        return mode in ("1", "L", "LA", "I", "I;16", "F")
    shape = tuple(getattr(image, "shape", ()))
    if hasattr(image, "detach") and len(shape) in (3, 4) and shape[-3] == 1:
        return True
    return len(shape) == 2 or (len(shape) == 3 and shape[-1] == 1)


def check_request(image: Any, mask: Any, *, defect_type: str, known_types: Sequence[str],
                  num_candidates: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate one generation request; returns (image (H, W, 3) uint8, request mask (H, W) bool)."""
    if defect_type not in known_types:
        raise GenerationError(f"defect_type {defect_type!r} is not known to this generator; known defect types: "
                              f"{sorted(known_types)}")
    if isinstance(num_candidates, bool) or not isinstance(num_candidates, (int, np.integer)) or num_candidates < 1:
        raise GenerationError(f"num_candidates must be an integer >= 1, found {num_candidates!r}")
    try:
        rgb = to_rgb_array(image, name="image")
        request = to_mask_array(mask, name="mask")
    except DataError as exc:
        raise GenerationError(str(exc)) from exc
    if request.shape != rgb.shape[:2]:
        raise GenerationError(f"mask is {request.shape[1]}x{request.shape[0]} (WxH) but image is "
                              f"{rgb.shape[1]}x{rgb.shape[0]}; pass a mask of the image's size")
    if not request.any():
        raise GenerationError("mask is empty: nothing to generate; the mask must mark where the defect goes")
    return rgb, request


def torch_generator(generator: Any = None, seed: int | None = None) -> tuple[Any, int | None]:
    """(torch.Generator, seed): the caller's generator as is; an int (or `seed`) seeds a CPU
    generator; None draws a fresh seed (reported, so the result can be reproduced)."""
    import torch

    if isinstance(generator, torch.Generator):
        return generator, seed
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        seed = int(generator)
    elif generator is not None:
        raise GenerationError(f"generator must be a torch.Generator, an int seed or None, found {type(generator).__name__}")
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
    return torch.Generator(device="cpu").manual_seed(int(seed)), int(seed)


def numpy_rng(generator: Any) -> np.random.Generator:
    """A numpy Generator drawn from a torch.Generator (or an int seed, or None: fresh)."""
    if isinstance(generator, np.random.Generator):
        return generator
    import torch

    torch_rng, _ = torch_generator(generator)
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=torch_rng).item()))


def mean_abs_diff_scores(image: np.ndarray, candidates: Sequence[np.ndarray], request: np.ndarray) -> list[float]:
    """Per candidate: mean over the request pixels of max-channel |candidate − image| / 255."""
    return [float(np.abs(c.astype(np.int16) - image).max(axis=2)[request].mean() / 255.0) for c in candidates]


def luminance(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> (..., 3) uint8 grey (ITU-R BT.601 luma replicated)."""
    luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    grey = np.clip(luma + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def build_result(image: np.ndarray, request: np.ndarray, candidates: Sequence[np.ndarray], scores: Sequence[float],
                 *, defect_type: str, selection_metric: str, meta: dict[str, Any] | None = None,
                 change_threshold: float = 0.1, top_k: int = 1, gray: bool = False) -> GenerationResult:
    """The `GenerationResult` of k candidates: ranked by score (highest first, ties by index),
    `top_k` kept as `selected`, each labelled by its changed pixels and their components' boxes."""
    candidates = list(candidates)
    if len(scores) != len(candidates) or not candidates:
        raise GenerationError(f"build_result: {len(candidates)} candidates but {len(scores)} scores")
    for i, candidate in enumerate(candidates):
        if candidate.shape != image.shape or candidate.dtype != np.uint8:
            raise GenerationError(f"candidate {i} is {candidate.shape} {candidate.dtype}; expected {image.shape} uint8")
    scores = [float(s) for s in scores]
    changed = [changed_mask(image, c, request, threshold=change_threshold) for c in candidates]
    return GenerationResult(
        candidates=candidates, scores=scores, selected=select(scores, min(top_k, len(scores))),
        request_mask=request, changed_masks=changed, boxes=[mask_to_boxes(m) for m in changed],
        defect_type=defect_type, selection_metric=selection_metric, meta=dict(meta or {}), gray=gray)


FillFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def paint_in_windows(image: np.ndarray, request: np.ndarray, fill: FillFn, *, num_candidates: int, resolution: int,
                     size_multiple: int = 8, context: float = 0.25, feather_px: float = 0.0, zoom: float = 1.0
                     ) -> tuple[list[np.ndarray], list[dict]]:
    """k candidates of `image` painted inside `request`: every group of nearby defects gets its
    window (`windows_for_mask`), `fill(window_image, window_mask) -> (k, h, w, 3) uint8` paints it,
    and the result is pasted back inside that group's mask only. A grey-looking input gives grey
    candidates. Returns (candidates, windows as dicts)."""
    grey = looks_grey(image)
    groups = windows_for_mask(request, resolution, size_multiple, context=context, zoom=zoom)
    candidates = [image] * num_candidates
    for window, group_mask in groups:
        window_mask = crop_mask(group_mask, window)
        painted = np.asarray(fill(crop_image(image, window), window_mask))
        expected = (num_candidates, window.gen_height, window.gen_width, 3)
        if painted.shape != expected or painted.dtype != np.uint8:
            raise GenerationError(f"fill returned {painted.shape} {painted.dtype}; expected {expected} uint8")
        if grey:
            painted = luminance(painted)
        candidates = [paste_back(c, p, window, group_mask, feather_px) for c, p in zip(candidates, painted)]
    return candidates, [w.as_dict() for w, _ in groups]


class WindowedGenerator:
    """Base of a generator that paints a defect inside a window around the mask.

    A subclass sets `name` and `resolution` (the side its model works at), provides `defect_types`,
    and implements `fill`; `generate` (checks, windows, paste-back, scores, labels) comes from here.
    Scores: `score` (default: mean |out − in| inside the mask; the highest is selected).
    """

    name = "windowed"
    resolution: int = 64
    size_multiple: int = 8
    context: float = 0.25
    feather_px: float = 0.0
    change_threshold: float = 0.1
    selection_metric: str = MEAN_ABS_DIFF

    @property
    def defect_types(self) -> list[str]:
        raise NotImplementedError

    def fill(self, window: np.ndarray, mask: np.ndarray, *, num_candidates: int, defect_type: str,
             rng: Any) -> np.ndarray:
        """window (h, w, 3) uint8, mask (h, w) bool -> (num_candidates, h, w, 3) uint8."""
        raise NotImplementedError

    def score(self, image: np.ndarray, candidates: list[np.ndarray], request: np.ndarray) -> list[float]:
        return mean_abs_diff_scores(image, candidates, request)

    def generate(self, image: Any, mask: Any, *, defect_type: str, num_candidates: int = 1,
                 generator: Any = None) -> GenerationResult:
        """Paint `num_candidates` defects of `defect_type` into `mask` on `image`, rank and label them."""
        gray = input_is_gray(image)
        rgb, request = check_request(image, mask, defect_type=defect_type, known_types=self.defect_types,
                                     num_candidates=num_candidates)
        rng, seed = torch_generator(generator)

        def fill(window: np.ndarray, window_mask: np.ndarray) -> np.ndarray:
            return self.fill(window, window_mask, num_candidates=num_candidates, defect_type=defect_type, rng=rng)

        candidates, windows = paint_in_windows(rgb, request, fill, num_candidates=num_candidates,
                                               resolution=self.resolution, size_multiple=self.size_multiple,
                                               context=self.context, feather_px=self.feather_px)
        return build_result(rgb, request, candidates, self.score(rgb, candidates, request), defect_type=defect_type,
                            selection_metric=self.selection_metric, change_threshold=self.change_threshold, gray=gray,
                            meta={"generator": self.name, "seed": seed, "windows": windows})
