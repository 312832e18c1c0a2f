"""Validated loading and atomic saving of images and masks.

Images come back as (H, W, 3) uint8 RGB; masks as (H, W) bool. Unusual inputs are converted
where the meaning is clear and reported through `warnings` (once per kind per call site), and
refused with a `DataError` naming the file and the fix where it is not.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from defectfill.errors import DataError
from defectfill.io_utils import atomic_save

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DataWarning(UserWarning):
    """An input was converted (greyscale, RGBA, 16-bit, anti-aliased mask, ...)."""


# Conversion notes: the keys a reader counts in its report (see defectfill.data.readers).
CONVERSIONS = {
    "grayscale": "greyscale image replicated to 3 channels",
    "high_bit_depth": "high bit depth (16-bit/float) image scaled to 8 bit",
    "alpha_dropped": "alpha channel dropped",
    "palette": "palette image converted to RGB",
    "cmyk": "CMYK image converted to RGB",
    "nonbinary_mask": "mask not binary (e.g. anti-aliased edges): thresholded at > 127",
    "index_mask": "mask holds small class indices (e.g. 0/1/2): every non-zero value taken as defect",
    "mask_in_alpha": "mask drawn in the alpha channel (colour channels empty): alpha used",
    "mask_with_alpha": "mask has an alpha channel (LA/RGBA): colour channels used, alpha ignored",
    "colour_mask": "mask is colour (RGB): a pixel is defect when any channel is on",
    "high_bit_depth_mask": "16-bit/float mask thresholded at half its maximum",
}

# Integer masks whose largest value is at most this are read as class-index maps, not grey levels:
# a 0/1/2 label map thresholded at 127 would otherwise come out empty.
MAX_INDEX_VALUE = 31

_HIGH_DEPTH = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")

# Largest image (width x height) decoded; checked from the file header before any pixel is decoded, so a
# huge or forged image is refused instead of exhausting memory. Set DEFECTFILL_MAX_PIXELS or assign
# `defectfill.data.images.MAX_PIXELS` to change it (10^8 px: e.g. 10000 x 10000, 300 MB as RGB).
MAX_PIXELS = 100_000_000


def max_pixels() -> int:
    """The pixel limit in force: $DEFECTFILL_MAX_PIXELS when set, else MAX_PIXELS."""
    value = os.environ.get("DEFECTFILL_MAX_PIXELS", "").strip()
    if value and not value.isdigit():
        raise DataError(f"DEFECTFILL_MAX_PIXELS={value!r}: not a whole number; set it to a pixel count, e.g. 200000000")
    return int(value) if value else MAX_PIXELS


def _too_large(path: Path, width: int, height: int, limit: int) -> DataError:
    return DataError(
        f"{path}: image is {width}x{height} = {width * height:,} pixels, above the limit of {limit:,} "
        f"(refused before decoding); cut it into smaller images first, or raise the limit with the environment "
        f"variable DEFECTFILL_MAX_PIXELS (decoding needs about 3 bytes per pixel)")


@dataclass
class ImageInfo:
    """What the file held and what was done to it to get (H, W, 3) uint8 RGB."""

    mode: str
    is_gray: bool
    conversions: list[str] = field(default_factory=list)


@dataclass
class MaskInfo:
    """What the mask file held and how it was binarised."""

    mode: str
    values: int  # number of distinct values before binarising
    conversions: list[str] = field(default_factory=list)


def _open(path: Path) -> Image.Image:
    if not path.exists():
        raise DataError(f"{path}: file not found; check the path or the dataset layout")
    try:
        img = Image.open(path)  # reads the header only
        limit = max_pixels()
        if img.width * img.height > limit:
            raise _too_large(path, img.width, img.height, limit)
        img.load()  # force decoding now, so truncated files fail here
    except DataError:
        raise
    except Image.DecompressionBombError as exc:  # PIL's own limit, hit while reading the header
        raise DataError(f"{path}: image too large ({exc}; refused before decoding); cut it into smaller images "
                        "first") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, ImportError) as exc:
        # ImportError: once ultralytics is imported it patches PIL.Image.open to retry unknown
        # files with the optional pi-heif plugin, which raises ModuleNotFoundError when absent.
        raise DataError(
            f"{path}: not a readable image ({exc}); re-export it as PNG/JPEG or remove it from the dataset"
        ) from exc
    return img


def _warn(source: Any, conversions: list[str], stacklevel: int = 3) -> None:
    for key in conversions:
        if key != "grayscale":  # greyscale fabric is normal: flagged on the sample, not warned
            warnings.warn(f"{source}: {CONVERSIONS[key]}", DataWarning, stacklevel=stacklevel + 1)


def _pil_to_rgb(img: Image.Image) -> tuple[np.ndarray, ImageInfo]:
    mode = img.mode
    info = ImageInfo(mode=mode, is_gray=mode in ("L", "LA", "1") + _HIGH_DEPTH)
    if mode in _HIGH_DEPTH:
        arr = np.asarray(img).astype(np.float64)
        hi = 65535.0 if arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        info.conversions += ["high_bit_depth", "grayscale"]
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2)), info
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        info.conversions.append("alpha_dropped")
    if mode in ("P", "PA"):
        info.conversions.append("palette")
        img = img.convert("RGBA") if "transparency" in img.info else img
    if mode == "CMYK":
        info.conversions.append("cmyk")
    rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if not info.is_gray:
        info.is_gray = looks_grey(rgb)
    elif mode != "1":
        info.conversions.append("grayscale")
    return np.ascontiguousarray(rgb), info


def pil_to_rgb_array(img: Image.Image, source: Any = "<array>") -> tuple[np.ndarray, bool]:
    """PIL image of any mode -> ((H,W,3) uint8, was_gray). 16-bit is scaled, alpha dropped."""
    arr, info = _pil_to_rgb(img)
    _warn(source, info.conversions)
    return arr, info.is_gray


def decode_image(path: str | Path) -> tuple[np.ndarray, ImageInfo]:
    """Read an image file as (H, W, 3) uint8 RGB with the notes of what was converted; no warnings
    (readers count the notes and warn once per kind)."""
    return _pil_to_rgb(_open(Path(path)))


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB (greyscale replicated to 3 channels)."""
    path = Path(path)
    arr, _ = pil_to_rgb_array(_open(path), source=path)
    return arr


def looks_grey(rgb: np.ndarray) -> bool:
    """Whether an (..., 3) image has three equal channels (greyscale stored as RGB)."""
    return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))


def load_label_map(path: str | Path) -> np.ndarray:
    """A label image (class-index or 0/255 mask PNG) as its stored values, (H, W) or (H, W, C), nothing
    converted or binarised; read like every image here (pixel limit from the header, project errors)."""
    return np.asarray(_open(Path(path)))


def load_image_with_info(path: str | Path) -> tuple[np.ndarray, bool]:
    """Like `load_image`, also telling whether the image is greyscale."""
    path = Path(path)
    return pil_to_rgb_array(_open(path), source=path)


def _binarize_values(arr: np.ndarray, threshold: int, conversions: list[str]) -> np.ndarray:
    """2-D numeric array -> bool, appending the note of any non-trivial rule used."""
    if arr.dtype == bool:
        return arr
    values = np.unique(arr)
    nonzero = values[values != 0]
    if nonzero.size <= 1:  # 0 and one level (0/1, 0/255, 0/38): exactly binary
        return arr != 0
    if np.issubdtype(arr.dtype, np.integer) and int(values.max()) <= MAX_INDEX_VALUE and values.min() >= 0:
        conversions.append("index_mask")
        return arr > 0
    conversions.append("nonbinary_mask")
    mask = arr > threshold
    if not mask.any():  # a faint mask (all values below the threshold): halve its maximum instead
        mask = arr > float(values.max()) / 2
    return mask


def _mask_channels(arr: np.ndarray, conversions: list[str]) -> np.ndarray:
    """(H, W, C) mask -> (H, W): colour channels, or alpha when the colour channels are empty."""
    if arr.shape[2] in (2, 4):
        colour, alpha = arr[..., :-1], arr[..., -1]
        if colour.max() == colour.min() and alpha.max() != alpha.min():
            conversions.append("mask_in_alpha")
            return alpha
        conversions.append("mask_with_alpha")
        arr = colour
    if arr.shape[2] == 3 and not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])):
        conversions.append("colour_mask")
    return arr.max(axis=2)


def binarize_mask(arr: np.ndarray, source: Any = "<array>", threshold: int = 127) -> np.ndarray:
    """Any-valued 2-D (or 3-D) mask -> (H, W) bool. Non-binary values are thresholded with a warning;
    small integer values (0/1/2 class maps) count as defect wherever non-zero."""
    arr = np.asarray(arr)
    conversions: list[str] = []
    if arr.ndim == 3:
        arr = _mask_channels(arr, conversions)
    if arr.ndim != 2:
        raise DataError(f"{source}: mask must be 2-D (H, W), found shape {arr.shape}")
    mask = _binarize_values(arr, threshold, conversions)
    _warn(source, conversions)
    return mask


def decode_mask(
    path: str | Path, shape: tuple[int, int] | None = None, threshold: int = 127
) -> tuple[np.ndarray, MaskInfo]:
    """Read a mask file as (H, W) bool with the notes of how it was binarised; no warnings.

    shape: the (H, W) of its image; a mismatch raises DataError (masks are never resized silently).
    """
    path = Path(path)
    img = _open(path)
    info = MaskInfo(mode=img.mode, values=0)
    if img.mode in _HIGH_DEPTH:
        arr = np.asarray(img)
        info.values = int(np.unique(arr).size)
        if info.values > 2:
            info.conversions.append("high_bit_depth_mask")
        mask = arr > (arr.max() / 2 if arr.max() > 0 else 0)
    else:
        if img.mode in ("P", "PA"):
            arr = np.asarray(img.convert("RGBA" if "transparency" in img.info or img.mode == "PA" else "RGB"))
        elif img.mode == "1":
            arr = np.asarray(img).astype(np.uint8) * 255
        elif img.mode in ("L", "LA", "RGB", "RGBA"):
            arr = np.asarray(img)
        else:
            arr = np.asarray(img.convert("RGB"))
        if arr.ndim == 3:
            arr = _mask_channels(arr, info.conversions)
        info.values = int(np.unique(arr).size)
        mask = _binarize_values(arr, threshold, info.conversions)
    if shape is not None and mask.shape != tuple(shape):
        raise DataError(
            f"{path}: mask size {mask.shape[1]}x{mask.shape[0]} (WxH) differs from its image "
            f"{shape[1]}x{shape[0]}; masks must match their image pixel for pixel (re-export the mask "
            f"at the image size, or pair it with the right image)"
        )
    return mask, info


def load_mask(path: str | Path, shape: tuple[int, int] | None = None, *, allow_empty: bool = True) -> np.ndarray:
    """Read a mask file as (H, W) bool.

    shape: the (H, W) of its image; a mismatch raises DataError (masks are never resized silently).
    allow_empty: False raises DataError on an all-zero mask (a defect was declared).
    """
    path = Path(path)
    mask, info = decode_mask(path, shape)
    _warn(path, info.conversions)
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
            if not np.isfinite(arr).all():
                raise DataError(f"{name}: {int((~np.isfinite(arr)).sum())} NaN/inf value(s) in the image; pass finite "
                                "values in [0, 1] (float) or 0-255 (uint8)")
            if arr.min() < -1e-3 or arr.max() > 1 + 1e-3:
                raise DataError(f"{name}: float image values must lie in [0, 1], found [{arr.min():.3g}, {arr.max():.3g}]")
            arr = np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)
        elif arr.dtype == bool:
            arr = arr.astype(np.uint8) * 255
        elif arr.size and int(arr.max()) > 255:
            # 16-bit (or wider) integers: scaled to 8 bit as 16-bit files are (they were clipped, saturating to white)
            if arr.min() < 0:
                raise DataError(f"{name}: negative values in an integer image; pass 0-255 (uint8) or 0-65535 (uint16)")
            hi = 65535.0 if int(arr.max()) <= 65535 else float(arr.max())
            arr = np.clip(arr.astype(np.float64) / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
            _warn(name, ["high_bit_depth"], stacklevel=2)
        else:
            if arr.size and arr.min() < 0:
                raise DataError(f"{name}: negative values in an integer image; pass 0-255 (uint8)")
            arr = arr.astype(np.uint8)
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
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise DataError(f"{name}: {int((~np.isfinite(arr)).sum())} NaN/inf value(s) in the mask; pass a finite "
                        "mask (bool, 0/1 or 0/255)")
    if arr.dtype != bool and np.issubdtype(arr.dtype, np.floating) and arr.size and arr.max() <= 1.0:
        # probabilities / soft masks in [0, 1]: half is the threshold (never read as class indices)
        values = np.unique(arr)
        if (values.size <= 2 and values.min() == 0) or set(values.tolist()) <= {0.0, 1.0}:  # exactly binary
            return arr > 0
        warnings.warn(f"{name}: soft mask in [0, 1] thresholded at > 0.5", DataWarning, stacklevel=2)
        return arr > 0.5
    return binarize_mask(arr, source=name)


def save_image(path: str | Path, image: np.ndarray) -> None:
    """Write (H,W,3) or (H,W) uint8 atomically; format from the suffix."""
    arr = np.asarray(image)
    atomic_save(path, lambda tmp: Image.fromarray(arr).save(tmp))


def save_mask(path: str | Path, mask: np.ndarray) -> None:
    """Write a bool mask as a 0/255 single-channel PNG, atomically."""
    save_image(path, (np.asarray(mask).astype(bool) * 255).astype(np.uint8))


def check_readable(paths: list[Path], what: str = "image") -> None:
    """Decode every file once (nothing kept) and raise one DataError listing all that cannot be read, so
    a long job refuses bad input before it writes anything instead of failing half-way."""
    problems = []
    for path in paths:
        try:
            _open(Path(path)).close()
        except DataError as exc:
            problems.append(str(exc))
    if problems:
        raise DataError(f"{len(problems)} of {len(paths)} {what} file(s) cannot be used: " + " | ".join(problems[:10])
                        + (f" | ... and {len(problems) - 10} more" if len(problems) > 10 else ""))


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
