"""Validated loading and atomic saving of images and masks.

Images come back as (H, W, 3) uint8 RGB; masks as (H, W) bool. Unusual inputs are converted
where the meaning is clear and reported through `warnings` (once per kind per call site), and
refused with a `DataError` naming the file and the fix where it is not.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from defectfill.errors import DataError
from defectfill.io_utils import atomic_save

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DataWarning(UserWarning):
    """An input was converted (greyscale, RGBA, 16-bit, anti-aliased mask, ...)."""


def _open(path: Path) -> Image.Image:
    if not path.exists():
        raise DataError(f"{path}: file not found; check the path or the dataset layout")
    try:
        img = Image.open(path)
        img.load()  # force decoding now, so truncated files fail here
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(
            f"{path}: not a readable image ({exc}); re-export it as PNG/JPEG or remove it from the dataset"
        ) from exc
    return img


def pil_to_rgb_array(img: Image.Image, source: Any = "<array>") -> tuple[np.ndarray, bool]:
    """PIL image of any mode -> ((H,W,3) uint8, was_gray). 16-bit is scaled, alpha dropped."""
    mode = img.mode
    was_gray = mode in ("L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "1")
    if mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img).astype(np.float64)
        hi = 65535.0 if arr.max() > 255 else 255.0
        warnings.warn(f"{source}: {mode} (high bit depth) image scaled to 8 bit", DataWarning, stacklevel=3)
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2), True
    if mode in ("RGBA", "LA", "PA"):
        warnings.warn(f"{source}: alpha channel dropped ({mode})", DataWarning, stacklevel=3)
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img
    rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if not was_gray and rgb.ndim == 3:
        was_gray = bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))
    return np.ascontiguousarray(rgb), was_gray


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB (greyscale replicated to 3 channels)."""
    path = Path(path)
    arr, _ = pil_to_rgb_array(_open(path), source=path)
    return arr


def load_image_with_info(path: str | Path) -> tuple[np.ndarray, bool]:
    """Like `load_image`, also telling whether the image is greyscale."""
    path = Path(path)
    return pil_to_rgb_array(_open(path), source=path)


def binarize_mask(arr: np.ndarray, source: Any = "<array>", threshold: int = 127) -> np.ndarray:
    """Any-valued 2-D (or 3-D) mask -> (H, W) bool. Non-binary values are thresholded with a warning."""
    arr = np.asarray(arr)
    if arr.ndim == 3:
        if arr.shape[2] in (2, 4):  # grey+alpha / RGBA: use colour channels
            arr = arr[..., : arr.shape[2] - 1]
        arr = arr.max(axis=2)
    if arr.ndim != 2:
        raise DataError(f"{source}: mask must be 2-D (H, W), found shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    values = np.unique(arr)
    if values.size > 2 or not set(values.tolist()) <= {0, 1, 255, int(values.max())}:
        warnings.warn(
            f"{source}: mask is not binary ({values.size} distinct values, e.g. anti-aliased edges); "
            f"thresholded at > {threshold}",
            DataWarning,
            stacklevel=3,
        )
        return arr > threshold
    return arr > 0


def load_mask(path: str | Path, shape: tuple[int, int] | None = None, *, allow_empty: bool = True) -> np.ndarray:
    """Read a mask file as (H, W) bool.

    shape: the (H, W) of its image; a mismatch raises DataError (masks are never resized silently).
    allow_empty: False raises DataError on an all-zero mask (a defect was declared).
    """
    path = Path(path)
    img = _open(path)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img)
        arr = (arr > (arr.max() / 2 if arr.max() > 0 else 0)).astype(np.uint8) * 255
    elif img.mode == "P":
        arr = np.asarray(img.convert("L"))
    elif img.mode == "1":
        arr = np.asarray(img).astype(np.uint8) * 255
    else:
        arr = np.asarray(img)
    mask = binarize_mask(arr, source=path)
    if shape is not None and mask.shape != tuple(shape):
        raise DataError(
            f"{path}: mask size {mask.shape[1]}x{mask.shape[0]} (WxH) differs from its image "
            f"{shape[1]}x{shape[0]}; masks must match their image pixel for pixel"
        )
    if not allow_empty and not mask.any():
        raise DataError(f"{path}: mask is empty but a defect is declared; draw the defect or move the image to good")
    return mask


def to_rgb_array(image: Any, name: str = "image") -> np.ndarray:
    """PIL / numpy (HW, HW1, HW3, HW4; uint8 or float in [0,1]) / torch (3HW or HW3) / path -> (H,W,3) uint8."""
    if isinstance(image, (str, Path)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return pil_to_rgb_array(image, source=name)[0]
    if hasattr(image, "detach"):  # torch tensor
        t = image.detach().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim == 3 and t.shape[0] in (1, 3) and t.shape[-1] not in (1, 3):
            t = t.permute(1, 2, 0)
        image = t.float().numpy() if t.is_floating_point() else t.numpy()
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise DataError(f"{name}: expected an (H, W, 3) RGB image, found shape {arr.shape}; pass RGB or greyscale")
    if arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating):
            if arr.min() < -1e-3 or arr.max() > 1 + 1e-3:
                raise DataError(f"{name}: float image values must lie in [0, 1], found [{arr.min():.3g}, {arr.max():.3g}]")
            arr = np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)
        else:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def to_mask_array(mask: Any, name: str = "mask") -> np.ndarray:
    """PIL / numpy / torch / path -> (H, W) bool."""
    if isinstance(mask, (str, Path)):
        return load_mask(mask)
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L"))
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    arr = np.asarray(mask)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.dtype != bool and np.issubdtype(arr.dtype, np.floating) and arr.max() <= 1.0:
        arr = (arr * 255).astype(np.uint8)
    return binarize_mask(arr, source=name)


def save_image(path: str | Path, image: np.ndarray) -> None:
    """Write (H,W,3) or (H,W) uint8 atomically; format from the suffix."""
    arr = np.asarray(image)
    atomic_save(path, lambda tmp: Image.fromarray(arr).save(tmp))


def save_mask(path: str | Path, mask: np.ndarray) -> None:
    """Write a bool mask as a 0/255 single-channel PNG, atomically."""
    save_image(path, (np.asarray(mask).astype(bool) * 255).astype(np.uint8))


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
