"""The fabric simulator: seeded fabric images with exact defect masks, in the MVTec-AD layout.

`render_fabric(texture, seed)` draws a good fabric; `render_sample(texture, defect, seed)` draws
the same fabric with one defect rendered into its structure and returns the exact mask: the
pixels that differ from the good rendering, cleaned into the defect region (a pixel inside the
mask always differs from the good image, a pixel outside never does). `simulate_dataset` writes a
whole dataset. Textures live in `fabric_textures`, defects in `fabric_defects`.

Everything random comes from `numpy.random.Generator`s seeded from (seed, purpose), never from a
global RNG, so the same arguments give the same image bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from defectfill.data.fabric_defects import DEFECT_TYPES, PLANNERS
from defectfill.data.fabric_textures import (
    COMPLEX_TEXTURES,
    SIMPLE_TEXTURES,
    TEXTURES,
    FabricParams,
    YarnEdits,
    pixel_grid,
    render_structure,
    sample_params,
)
from defectfill.errors import DataError

__all__ = [
    "COMPLEX_TEXTURES",
    "DEFECT_TYPES",
    "SIMPLE_TEXTURES",
    "TEXTURES",
    "render_fabric",
    "render_sample",
    "sample_seed",
    "simulate_dataset",
]

# purposes mixed into the seed so that fabric and defect draws never share a stream
_FABRIC_STREAM = 0
_DEFECT_STREAM = 1
_MIN_COMPONENT = 4  # changed-pixel specks smaller than this are not part of the defect
_MAX_ATTEMPTS = 8


def check_texture(texture: str, argument: str = "texture") -> str:
    if texture not in TEXTURES:
        raise DataError(
            f"{argument}: unknown fabric texture {texture!r}; valid textures are {list(TEXTURES)} "
            f"(simple: {list(SIMPLE_TEXTURES)}, complex: {list(COMPLEX_TEXTURES)})"
        )
    return texture


def check_defect_type(defect_type: str, argument: str = "defect_type") -> str:
    if defect_type not in DEFECT_TYPES:
        raise DataError(
            f"{argument}: unknown fabric defect type {defect_type!r}; valid defect types are {list(DEFECT_TYPES)}"
        )
    return defect_type


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        try:
            h, w = (int(x) for x in size)
        except (TypeError, ValueError):
            raise DataError(f"size: expected an int or (height, width), found {size!r}") from None
    if h < 16 or w < 16:
        raise DataError(f"size: fabric images must be at least 16x16 pixels, found {h}x{w}; pass a larger size")
    return h, w


def _fabric_params(texture: str, seed: int, size: int | tuple[int, int]) -> FabricParams:
    check_texture(texture)
    h, w = _size_hw(size)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFF, _FABRIC_STREAM, TEXTURES.index(texture)])
    return sample_params(texture, rng, h, w)


def _finish(p: FabricParams, rgb: np.ndarray, gray: bool, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Linear RGB before lighting -> final uint8 image (lighting, fibre noise, optional greyscale).

    window: (y0, y1, x0, x1) when `rgb` is that part of the frame only."""
    lighting, noise = p.lighting, p.pixel_noise
    if window is not None:
        y0, y1, x0, x1 = window
        lighting, noise = lighting[y0:y1, x0:x1], noise[y0:y1, x0:x1]
    img = rgb * (lighting * np.float32(255))[..., None]
    img += (noise * np.float32(255) + np.float32(0.5))[..., None]  # + 0.5: round, not truncate
    if gray:
        # line-scan cameras are monochrome: luminance replicated to 3 channels
        lum = img[..., 0] * np.float32(0.299) + img[..., 1] * np.float32(0.587) + img[..., 2] * np.float32(0.114)
        img = np.repeat(lum[..., None], 3, axis=2)
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8)


def render_fabric(texture: str, seed: int, size: int | tuple[int, int] = 256, gray: bool = False) -> np.ndarray:
    """A defect-free fabric image, (H, W, 3) uint8 RGB, fully determined by (texture, seed, size, gray)."""
    p = _fabric_params(texture, seed, size)
    rgb, _ = render_structure(p)
    return _finish(p, rgb, gray)


def _exact_mask(good: np.ndarray, defective: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mask = changed pixels cleaned into a region; the image is then made to agree with it exactly.

    Cleaning drops specks (< _MIN_COMPONENT px) and fills enclosed holes. Pixels dropped are reset to
    the good image; unchanged pixels the region encloses are nudged by 2 grey levels, so that
    "inside the mask differs, outside is identical" holds bit for bit.
    """
    changed = np.any(good != defective, axis=2)
    labels, n = ndimage.label(changed, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= _MIN_COMPONENT
    keep[0] = False
    mask = ndimage.binary_fill_holes(keep[labels])
    out = np.where(mask[..., None], defective, good)
    same = mask & np.all(out == good, axis=2)
    if same.any():
        g = good[same].astype(np.int16)
        out[same] = np.where(g <= 253, g + 2, g - 2).astype(np.uint8)
    return mask, out


def render_sample(
    texture: str,
    defect_type: str | None,
    seed: int,
    size: int | tuple[int, int] = 256,
    gray: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(image (H, W, 3) uint8, mask (H, W) bool) of `texture` with one `defect_type` (None: good).

    The fabric is the one `render_fabric(texture, seed, size, gray)` draws; the image differs from
    it exactly on the mask.
    """
    p = _fabric_params(texture, seed, size)
    good_rgb, fields = render_structure(p)
    good = _finish(p, good_rgb, gray)
    if defect_type is None:
        return good, np.zeros(good.shape[:2], bool)
    check_defect_type(defect_type)
    rng = np.random.default_rng(
        [int(seed) & 0xFFFFFFFFFFFF, _DEFECT_STREAM, TEXTURES.index(texture), DEFECT_TYPES.index(defect_type)]
    )
    for _ in range(_MAX_ATTEMPTS):  # a draw can land where it changes nothing visible: draw again
        plan = PLANNERS[defect_type](p, rng, fields)
        window = _union(plan.window, _edit_window(plan.edits, p.height, p.width) if plan.edits else None)
        if window is None:
            continue
        # only the defect's window is redrawn; every pixel outside it is the good image's own
        y0, y1, x0, x1 = window
        rgb = good_rgb[y0:y1, x0:x1]
        if plan.edits is not None:
            rgb = render_structure(p, plan.edits, geometry=fields, window=window)[0]
        if plan.effect is not None:
            local = {k: v[y0:y1, x0:x1] for k, v in fields.items()}
            local["y"], local["x"] = (a[y0:y1, x0:x1] for a in pixel_grid(p.height, p.width))
            rgb = plan.effect(rgb, local)
        local_mask, local_image = _exact_mask(good[y0:y1, x0:x1], _finish(p, rgb, gray, window))
        if local_mask.sum() >= _MIN_COMPONENT:
            image = good.copy()
            image[y0:y1, x0:x1] = local_image
            mask = np.zeros(good.shape[:2], bool)
            mask[y0:y1, x0:x1] = local_mask
            return image, mask
    raise DataError(  # pragma: no cover - only reachable for degenerate tiny sizes
        f"render_sample: could not place a visible {defect_type!r} on {texture!r} (seed {seed}, size {size}); "
        "use a larger size or another seed"
    )


def _union(a: tuple[int, int, int, int] | None, b: tuple[int, int, int, int] | None):
    if a is None or b is None:
        return a if b is None else b
    return (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]))


def _edit_window(edits: YarnEdits, height: int, width: int) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1): the box the edits touch, grown by one pixel; None when they touch nothing.

    Only this box is re-rendered (the renderer reuses the good image's lattice, so every pixel it
    draws outside the edits comes out identical)."""
    touched = np.zeros((height, width), bool)
    for present in (edits.warp_present, edits.weft_present):
        if present is not None:
            touched |= ~present
    if edits.hole is not None:
        touched |= edits.hole
    if edits.recess is not None:
        touched |= edits.recess != 1
    rows = np.flatnonzero(touched.any(axis=1))
    cols = np.flatnonzero(touched.any(axis=0))
    if rows.size == 0:
        return None
    return (max(0, rows[0] - 1), min(height, rows[-1] + 2), max(0, cols[0] - 1), min(width, cols[-1] + 2))


def sample_seed(seed: int, *keys: int) -> int:
    """A per-image seed derived from the dataset seed and the image's (texture, split, type, index) keys."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *keys]).generate_state(1, np.uint32)[0])


def simulate_dataset(
    out_dir: str | Path,
    textures: Sequence[str],
    defect_types: Sequence[str],
    n_good_train: int,
    n_good_test: int,
    n_defect_per_type: int,
    size: int | tuple[int, int] = 256,
    seed: int = 0,
    gray: bool = False,
) -> Path:
    """Write an MVTec-AD-layout dataset and its manifest; counts are per texture. Returns `out_dir`.

    Layout: train/good/<texture>_<k>.png, test/good/..., test/<type>/<texture>_<k>.png,
    ground_truth/<type>/<texture>_<k>_mask.png, and manifest.jsonl with one line per image (image,
    split, texture, defect_type, mask, boxes [x0, y0, x1, y1] exclusive, seed, size, gray). A rerun
    into the same folder skips the images its manifest already lists.
    """
    from defectfill.data.images import save_image, save_mask
    from defectfill.io_utils import Manifest

    textures = [check_texture(t, "textures") for t in textures]
    defect_types = [check_defect_type(d, "defect_types") for d in defect_types]
    if not textures:
        raise DataError(f"textures: no texture given; pass one or more of {list(TEXTURES)}")
    for name, n in (("n_good_train", n_good_train), ("n_good_test", n_good_test), ("n_defect_per_type", n_defect_per_type)):
        if int(n) < 0:
            raise DataError(f"{name}: must be >= 0, found {n}")
    h, w = _size_hw(size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out_dir / "manifest.jsonl", key="image")

    jobs: list[tuple[str, str, str | None, int, int]] = []  # split, texture, defect, index, seed
    for t_idx, texture in enumerate(textures):
        t_key = TEXTURES.index(texture)
        for k in range(n_good_train):
            jobs.append(("train", texture, None, k, sample_seed(seed, t_key, 0, 0, k)))
        for k in range(n_good_test):
            jobs.append(("test", texture, None, k, sample_seed(seed, t_key, 1, 0, k)))
        for defect in defect_types:
            d_key = 1 + DEFECT_TYPES.index(defect)
            for k in range(n_defect_per_type):
                jobs.append(("test", texture, defect, k, sample_seed(seed, t_key, 1, d_key, k)))

    for split, texture, defect, k, image_seed in jobs:
        folder = "good" if defect is None else defect
        name = f"{texture}_{k:04d}"
        rel_image = f"{split}/{folder}/{name}.png"
        if manifest.done(rel_image):
            _check_resumed(manifest, out_dir, rel_image, image_seed, (h, w), gray)
            continue
        image, mask = render_sample(texture, defect, image_seed, (h, w), gray)
        rel_mask = None
        boxes: list[list[int]] = []
        if defect is not None:
            rel_mask = f"ground_truth/{defect}/{name}_mask.png"
            save_mask(out_dir / rel_mask, mask)
            boxes = _boxes(mask).tolist()
        save_image(out_dir / rel_image, image)
        manifest.append(
            {
                "image": rel_image,
                "split": split,
                "texture": texture,
                "defect_type": "good" if defect is None else defect,
                "mask": rel_mask,
                "boxes": boxes,
                "seed": image_seed,
                "size": [h, w],
                "gray": bool(gray),
            }
        )
    return out_dir


def _check_resumed(manifest, out_dir: Path, rel_image: str, image_seed: int, size: tuple[int, int], gray: bool) -> None:
    """A rerun may only resume the same dataset: other seed/size/gray settings would mix two datasets."""
    record = next(r for r in manifest.records if r.get("image") == rel_image)
    found = (record.get("seed"), tuple(record.get("size") or ()), bool(record.get("gray")))
    if found != (image_seed, tuple(size), bool(gray)):
        raise DataError(
            f"{out_dir / 'manifest.jsonl'}: {rel_image} was written with seed/size/gray {found}, this run asks for "
            f"{(image_seed, tuple(size), bool(gray))}; write to a new --out folder or delete the old one"
        )


def _boxes(mask: np.ndarray) -> np.ndarray:
    """(N, 4) x0, y0, x1, y1 (exclusive) per 8-connected component, from defectfill.masks."""
    from defectfill.masks import mask_to_boxes

    return np.asarray(mask_to_boxes(mask), dtype=np.int64).reshape(-1, 4)
