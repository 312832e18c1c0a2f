"""Training data of the base model: fabric crops, random inpainting masks and prompts.

Two sources, mixed per batch:
- simulator fabrics (`defectfill.data.fabric.render_fabric`), every texture family, training seeds
  0.. and held-out seeds from `eval_seed_start`, a share rendered grey;
- real fabric photographs (a folder with images/ + annotations/), cropped only where the crop stays
  `stain_margin` pixels away from every annotated defect; the last few images are held out.

Masks follow SD-2-inpainting's recipe in spirit: one box, 2-4 boxes, thick strokes, or the whole
window (then the model generates unconditionally from the prompt). Prompts are
"a photo of <texture> fabric", or with `descriptive prompts` "a photo of <colour> <texture> fabric",
each word dropped at random, and for windows whose mask covers a simulated defect
"... fabric with a <defect>" (`describe`), so that the text encoder, trained with the UNet, learns what
the words mean and classifier-free guidance pushes towards them. DefectFill later appends its own
tokens to this vocabulary.
Everything random is drawn from a numpy Generator the caller seeds (per step), so a resumed run
sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from defectfill.errors import DataError

Renderer = Callable[..., np.ndarray]  # render(texture, seed, size=..., gray=...) -> (H, W, 3) uint8
REAL_TEXTURE = "woven"  # prompt word for the real photographs (their weave is not labelled)


def prompt_for(texture: str) -> str:
    return f"a photo of {texture} fabric"


# the words of each simulator defect type in a prompt ("a photo of ... fabric with a <words>")
DEFECT_WORDS = {"stain": "stain", "oil": "oil stain", "knot": "knot", "broken_end": "broken end",
                "broken_yarn": "broken yarn", "white_stripe": "white stripe", "hole": "hole"}
_HUES = ((0.04, "red"), (0.10, "orange"), (0.18, "yellow"), (0.45, "green"), (0.53, "teal"), (0.72, "blue"),
         (0.82, "purple"), (0.95, "pink"), (1.01, "red"))


@dataclass
class FabricImage:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    texture: str  # prompt word
    defect_integral: np.ndarray | None = None  # (H+1, W+1) integral image of the dilated defect mask
    defect_mask: np.ndarray | None = None  # (H, W) bool: the simulated defect of a defect image
    defect_type: str | None = None


def colour_word(image: np.ndarray) -> str:
    """A basic colour name for the mean colour of an (H, W, 3) uint8 crop: grey shades by value when
    the saturation is low, else the hue's name."""
    import colorsys

    h, s, v = colorsys.rgb_to_hsv(*(image.reshape(-1, 3).mean(0) / 255.0))
    if s < 0.15:
        return "black" if v < 0.25 else "white" if v > 0.8 else "grey"
    if v < 0.3:
        return "dark"
    return next(name for bound, name in _HUES if h < bound)


def describe(rng: np.random.Generator, texture: str, colour: str, defect_type: str | None = None,
             word_dropout: float = 0.0) -> str:
    """ "a photo of <colour> <texture> fabric[ with a <defect>]", colour and texture each dropped with
    probability `word_dropout` (then e.g. "a photo of fabric with a hole", close to DefectFill's
    "A fabric with [V*]"); the defect phrase is never dropped: it is what the window shows."""
    words = [w for w in (colour, texture) if rng.random() >= word_dropout]
    prompt = f"a photo of {' '.join([*words, 'fabric'])}"
    if defect_type is not None:
        noun = DEFECT_WORDS.get(defect_type, defect_type.replace("_", " "))
        prompt += f" with {'an' if noun[0] in 'aeiou' else 'a'} {noun}"
    return prompt


def default_renderer() -> Renderer:
    try:
        from defectfill.data.fabric import render_fabric
    except ImportError as exc:
        raise DataError(
            "defectfill.data.fabric (the fabric simulator) is not importable; it is needed to render the "
            f"simulator crops of the base model ({exc})"
        ) from exc
    return render_fabric


def all_textures() -> list[str]:
    from defectfill.data.fabric import TEXTURES

    return list(TEXTURES)


def render_simulator_images(
    textures: list[str], seeds: list[int], size: int, gray_fraction: float, render: Renderer | None = None
) -> list[FabricImage]:
    """Render `textures` x `seeds`; image k is grey when its seed's hash falls in `gray_fraction`."""
    render = render or default_renderer()
    images = []
    for texture in textures:
        for seed in seeds:
            gray = np.random.default_rng([seed, 7]).random() < gray_fraction
            image = np.asarray(render(texture, seed, size=size, gray=bool(gray)))
            if image.shape != (size, size, 3) or image.dtype != np.uint8:
                raise DataError(
                    f"render_fabric({texture!r}, {seed}) returned {image.shape} {image.dtype}; expected "
                    f"({size}, {size}, 3) uint8"
                )
            images.append(FabricImage(image, texture))
    return images


def render_defect_images(
    textures: list[str], defect_types: list[str], seeds: list[int], size: int, render_sample=None
) -> list[FabricImage]:
    """Simulator images with one defect each (`render_sample`), with their exact defect masks."""
    if render_sample is None:
        from defectfill.data.fabric import render_sample
    images = []
    for texture in textures:
        for defect_type in defect_types:
            for seed in seeds:
                image, mask = render_sample(texture, defect_type, seed, size=size)
                images.append(FabricImage(np.asarray(image), texture, defect_mask=np.asarray(mask, bool),
                                          defect_type=defect_type))
    return images


def _defect_window(mask: np.ndarray, rng: np.random.Generator, size: int) -> tuple[int, int]:
    """(y0, x0) of a `size` window holding as much of the defect as fits, at a random offset."""
    ys, xs = np.nonzero(mask)
    out = []
    for lo, hi, extent in ((ys.min(), ys.max(), mask.shape[0]), (xs.min(), xs.max(), mask.shape[1])):
        a, b = (hi - size + 1, lo) if hi - lo < size else (lo, hi - size + 1)  # window covers the defect / lies in it
        a, b = max(0, a), min(extent - size, b)
        out.append(int(rng.integers(a, b + 1)) if b >= a else int(np.clip(lo, 0, extent - size)))
    return out[0], out[1]


def sample_defect_crops(
    pool: list[FabricImage], rng: np.random.Generator, n: int, size: int
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """n `size` crops around simulated defects with their inpainting masks: the defect dilated by 1-3 px
    (half of them) or its bounding box grown by 2-6 px, so the defect lies wholly under the mask.
    -> ((n, size, size, 3) uint8, (n, size, size) float32, texture words, defect types)."""
    from scipy.ndimage import binary_dilation

    if not pool:
        raise DataError("no defect images to crop from; set data.defect_images_per_type > 0")
    crops, masks, words, types = [], [], [], []
    for _ in range(n):
        item = pool[int(rng.integers(len(pool)))]
        y, x = _defect_window(item.defect_mask, rng, size)
        crop = item.image[y : y + size, x : x + size]
        defect = item.defect_mask[y : y + size, x : x + size]
        if rng.random() < 0.5:
            mask = binary_dilation(defect, iterations=int(rng.integers(1, 4)))
        else:
            mask = np.zeros_like(defect)
            ys, xs = np.nonzero(defect)
            g = int(rng.integers(2, 7))
            mask[max(0, ys.min() - g) : ys.max() + g + 1, max(0, xs.min() - g) : xs.max() + g + 1] = True
        if rng.random() < 0.5:
            crop, mask = crop[:, ::-1], mask[:, ::-1]
        crops.append(np.ascontiguousarray(crop))
        masks.append(np.ascontiguousarray(mask, dtype=np.float32))
        words.append(item.texture)
        types.append(item.defect_type)
    return np.stack(crops), np.stack(masks), words, types


def load_real_images(real_dir: str | Path, split: str, eval_images: int, margin: int) -> list[FabricImage]:
    """Real photographs of `real_dir` (images/ + annotations/<stem>.png); split 'train' or 'eval'."""
    from scipy.ndimage import binary_dilation

    from defectfill.data.images import list_images, load_image, load_mask

    real_dir = Path(real_dir)
    image_dir, mask_dir = real_dir / "images", real_dir / "annotations"
    if not image_dir.is_dir() or not mask_dir.is_dir():
        raise DataError(
            f"data.real_dir={real_dir}: expected the folders images/ and annotations/ inside it; "
            "point it at such a folder or set data.real_dir: null to train on the simulator only"
        )
    paths = list_images(image_dir)
    if len(paths) <= eval_images:
        raise DataError(
            f"data.real_dir={real_dir}: {len(paths)} images, need more than data.real_eval_images={eval_images}"
        )
    paths = paths[:-eval_images] if split == "train" else paths[-eval_images:] if eval_images else []
    images = []
    for path in paths:
        image = load_image(path)
        mask_path = mask_dir / f"{path.stem}.png"
        mask = load_mask(mask_path, shape=image.shape[:2]) if mask_path.exists() else np.zeros(image.shape[:2], bool)
        if margin > 0 and mask.any():
            mask = binary_dilation(mask, iterations=margin)
        integral = np.pad(mask.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        images.append(FabricImage(image, REAL_TEXTURE, integral))
    return images


def _crop_is_clean(item: FabricImage, y: int, x: int, size: int) -> bool:
    if item.defect_integral is None:
        return True
    s = item.defect_integral
    return int(s[y + size, x + size] - s[y, x + size] - s[y + size, x] + s[y, x]) == 0


def sample_crops(
    pool: list[FabricImage], rng: np.random.Generator, n: int, size: int, flip: bool = True
) -> tuple[np.ndarray, list[str]]:
    """n random `size` crops from `pool` -> ((n, size, size, 3) uint8, texture words)."""
    if not pool:
        raise DataError("no images to crop from; check data.textures / data.real_dir")
    crops, words = [], []
    while len(crops) < n:
        for _ in range(50):  # a few tries to land away from the defects
            item = pool[int(rng.integers(len(pool)))]
            h, w = item.image.shape[:2]
            if h < size or w < size:
                raise DataError(f"image of {h}x{w} px is smaller than the crop size {size}")
            y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
            if _crop_is_clean(item, y, x, size):
                break
        else:
            raise DataError(f"found no {size}-px crop free of annotated defects after 50 tries")
        crop = item.image[y : y + size, x : x + size]
        if flip and rng.random() < 0.5:
            crop = crop[:, ::-1]
        if flip and rng.random() < 0.5:
            crop = crop[::-1]
        crops.append(np.ascontiguousarray(crop))
        words.append(item.texture)
    return np.stack(crops), words


def tint(images: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Multiply each image's channels by random gains in [1 - amount, 1 + amount] (uint8 in, uint8 out)."""
    gains = 1.0 + rng.uniform(-amount, amount, size=(len(images), 1, 1, 3))
    return np.clip(images * gains, 0, 255).round().astype(np.uint8)


def sample_mixed_crops(
    simulator: list[FabricImage], real: list[FabricImage], real_fraction: float, rng: np.random.Generator,
    n: int, size: int, real_tint: float = 0.0,
) -> tuple[np.ndarray, list[str]]:
    """A batch with round(n * real_fraction) real crops (none without real images), the rest simulated."""
    n_real = round(n * real_fraction) if real else 0
    parts = []
    if n - n_real:
        parts.append(sample_crops(simulator, rng, n - n_real, size))
    if n_real:
        crops, words = sample_crops(real, rng, n_real, size)
        parts.append((tint(crops, rng, real_tint) if real_tint > 0 else crops, words))
    images = np.concatenate([p[0] for p in parts])
    words = [w for p in parts for w in p[1]]
    return images, words


def to_model_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8_images(tensor: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return ((tensor.detach().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def random_box(rng: np.random.Generator, size: int, min_frac: float = 0.15, max_frac: float = 0.6) -> np.ndarray:
    """(x0, y0, x1, y1) of a box with sides in [min_frac, max_frac] of `size`, inside the window."""
    bw, bh = (int(rng.integers(max(1, int(min_frac * size)), int(max_frac * size) + 1)) for _ in range(2))
    x0, y0 = int(rng.integers(size - bw + 1)), int(rng.integers(size - bh + 1))
    return np.array([x0, y0, x0 + bw, y0 + bh])


def random_inpaint_mask(
    rng: np.random.Generator, size: int, p_box: float, p_stroke: float, p_full: float
) -> np.ndarray:
    """(size, size) float32 mask, 1 = to inpaint: one box, strokes, the full window, or 2-4 boxes."""
    import cv2

    mask = np.zeros((size, size), np.float32)
    u = rng.random()
    if u < p_box:
        x0, y0, x1, y1 = random_box(rng, size)
        mask[y0:y1, x0:x1] = 1
    elif u < p_box + p_stroke:
        for _ in range(int(rng.integers(1, 4))):
            points = rng.integers(0, size, size=(int(rng.integers(2, 5)), 2)).astype(np.int32)
            width = int(rng.integers(max(2, size // 16), max(3, size // 5) + 1))
            cv2.polylines(mask, [points.reshape(-1, 1, 2)], False, 1.0, thickness=width)
    elif u < p_box + p_stroke + p_full:
        mask[:] = 1
    else:
        for _ in range(int(rng.integers(2, 5))):
            x0, y0, x1, y1 = random_box(rng, size, 0.1, 0.35)
            mask[y0:y1, x0:x1] = 1
    return mask
