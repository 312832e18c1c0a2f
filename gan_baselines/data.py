"""Training data of the GAN baselines: the few real defects as square windows, with augmentation.

Two samplers: `DefectWindows` (R3GAN, multistage: the generation window around each defect,
resized, dihedral augmentation) and `FewShotBatches` (DGT, ICPR'20: crops of side `resolution` at
a random offset that keeps the defect's centre, plus random crops of good fabric).

Every GAN baseline learns from the same thing: the labelled source defects (`DefectSample`), each
cut to the window the generators paint in at generation time (`defectfill.models.window`: the
mask's bounding box plus context, a square of at least `resolution` px) and resized to
`resolution` x `resolution`. With 10-50 defects per type, augmentation is not optional: every
sample drawn is flipped / rotated by a random element of the dihedral group (fabric stays fabric
under these), image and mask together.

Tensors: images (N, 3, r, r) float in [-1, 1]; masks (N, 1, r, r) float in {0, 1}; types (N,) long.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from defectfill.data.sample import DefectSample
from defectfill.errors import DataError
from defectfill.generators.window import window_around_mask


def to_tensor_images(images: np.ndarray) -> torch.Tensor:
    """(k, H, W, 3) uint8 -> (k, 3, H, W) float in [-1, 1], contiguous (convolutions on a channels-last
    view give other rounding), from a copy (the input may be read-only)."""
    return torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).contiguous().float().div(127.5).sub(1.0)


def to_uint8_images(images: torch.Tensor) -> np.ndarray:
    """(k, 3, H, W) float in [-1, 1] (clipped) -> (k, H, W, 3) uint8."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def square_window(image: np.ndarray, mask: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The generation window around `mask` resized to (resolution, resolution): (r, r, 3) uint8, (r, r) bool."""
    w = window_around_mask(mask, resolution, multiple=1)
    crop = image[w.y0 : w.y1, w.x0 : w.x1]
    crop_mask = mask[w.y0 : w.y1, w.x0 : w.x1].astype(np.float32)
    size = (resolution, resolution)
    shrink = max(crop.shape[:2]) > resolution
    crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    # a resized pixel is defect when any source pixel under it is (thin defects stay visible)
    crop_mask = cv2.resize(crop_mask, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR) > 0
    return crop, crop_mask


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Element k in 0..7 of the dihedral group of the square on the last two dims (k >= 4: flipped)."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


@dataclass
class DefectWindows:
    """The source defects of every type, as training windows."""

    images: torch.Tensor
    masks: torch.Tensor
    types: torch.Tensor
    defect_types: list[str]

    @classmethod
    def from_samples(
        cls,
        samples: Sequence[DefectSample],
        resolution: int,
        batch_size: int,
        defect_types: Sequence[str] | None = None,
    ) -> DefectWindows:
        """Windows of every defective sample (good ones are skipped).

        Raises DataError when there is no defect, or when a defect type has fewer samples than the
        batch (a batch would then repeat each of its defects several times: lower the batch size or
        add real defects)."""
        defects = [s for s in samples if not s.is_good and s.mask.any()]
        if not defects:
            raise DataError("source defects: no defective sample with a non-empty mask; pass labelled real defects")
        found = sorted({s.defect_type for s in defects})
        types = list(defect_types) if defect_types is not None else found
        unknown = sorted(set(found) - set(types))
        if unknown:
            raise DataError(f"source defects: type(s) {unknown} are not in defect_types {types}; add them")
        counts = {t: sum(s.defect_type == t for s in defects) for t in types}
        short = {t: n for t, n in counts.items() if n < batch_size}
        if short:
            raise DataError(
                f"source defects: type(s) {short} have fewer samples than the batch size {batch_size}; "
                "lower train_batch_size or add real defects of these types"
            )
        windows = [square_window(s.image, s.mask, resolution) for s in defects]
        images = to_tensor_images(np.stack([w[0] for w in windows]))
        masks = torch.from_numpy(np.stack([w[1] for w in windows])).float()[:, None]
        labels = torch.tensor([types.index(s.defect_type) for s in defects], dtype=torch.long)
        return cls(images, masks, labels, types)

    def __len__(self) -> int:
        return len(self.types)

    def batch(self, batch_size: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A random batch (with replacement), each sample under a random dihedral transform:
        images (B, 3, r, r) in [-1, 1], masks (B, 1, r, r) in {0, 1}, types (B,)."""
        index = torch.randint(len(self), (batch_size,), generator=rng)
        ks = torch.randint(8, (batch_size,), generator=rng).tolist()
        images = torch.stack([dihedral(self.images[i], k) for i, k in zip(index.tolist(), ks)])
        masks = torch.stack([dihedral(self.masks[i], k) for i, k in zip(index.tolist(), ks)])
        return images, masks, self.types[index]


def augment_pairs(images: torch.Tensor, masks: torch.Tensor, p: float, rng: torch.Generator,
                  max_shift: float = 0.125) -> tuple[torch.Tensor, torch.Tensor]:
    """D-side augmentation, differentiable in `images`: each sample, with probability p, is translated
    by up to `max_shift` of its side (reflect padding, mask moved with it) and gets a random brightness
    (±0.2) and contrast (×0.7-1.4) change. The same function is applied to real and fake batches."""
    b, _, h, w = images.shape
    apply = torch.rand(b, generator=rng) < p
    if not apply.any():
        return images, masks
    pad = max(1, round(max_shift * h))
    shifts = torch.randint(-pad, pad + 1, (b, 2), generator=rng)
    brightness = (torch.rand(b, generator=rng) * 0.4 - 0.2).to(images)
    contrast = torch.exp(torch.rand(b, generator=rng) * (np.log(1.4) - np.log(0.7)) + np.log(0.7)).to(images)
    padded = _reflect_pad(images, pad)
    padded_masks = _reflect_pad(masks, pad)
    out_images, out_masks = [], []
    for i in range(b):
        if not apply[i]:
            out_images.append(images[i])
            out_masks.append(masks[i])
            continue
        dy, dx = pad + int(shifts[i, 0]), pad + int(shifts[i, 1])
        x = padded[i, :, dy : dy + h, dx : dx + w]
        mean = x.mean(dim=(1, 2), keepdim=True)
        out_images.append((x - mean) * contrast[i] + mean + brightness[i])
        out_masks.append(padded_masks[i, :, dy : dy + h, dx : dx + w])
    return torch.stack(out_images), torch.stack(out_masks)


def _reflect_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")


def upscale_to_side(image: np.ndarray, mask: np.ndarray | None, side: int):
    """Upscale so that both sides are >= side (a small image is never cropped below the window)."""
    h, w = image.shape[:2]
    if min(h, w) >= side:
        return image, mask
    scale = side / min(h, w)
    size = (max(side, round(w * scale)), max(side, round(h * scale)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    if mask is not None:
        mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    return image, mask


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high] (inclusive)."""
    return low + int(torch.randint(0, high - low + 1, (1,), generator=generator).item())


class FewShotBatches:
    """Batches of (real defect crop, its mask, its class index) and, when good images are given,
    good-fabric crops. Every draw comes from the `torch.Generator` passed in."""

    def __init__(self, defects: Sequence[DefectSample], good_images: Sequence[np.ndarray],
                 defect_types: Sequence[str], resolution: int, need_good: bool = True):
        self.defect_types = list(defect_types)
        self.resolution = int(resolution)
        self.defects = []
        for sample in defects:
            if sample.is_good or not sample.mask.any() or sample.defect_type not in self.defect_types:
                continue
            self.defects.append((*upscale_to_side(sample.image, sample.mask, resolution),
                                 self.defect_types.index(sample.defect_type)))
        if not self.defects:
            raise DataError(f"training data: no labelled defect of the types {self.defect_types}; "
                            "pass real defects with non-empty masks")
        self.good = [upscale_to_side(img, None, resolution)[0] for img in good_images]
        if need_good and not self.good:
            raise DataError("training data: no good image; pass good fabric images (--good_data_dir, or a "
                            "train/good folder in --train_data_dir)")

    def defect_crop(self, index: int, generator: torch.Generator):
        image, mask, label = self.defects[index]
        r, (h, w) = self.resolution, image.shape[:2]
        ys, xs = np.nonzero(mask)
        cy, cx = int(ys.mean()), int(xs.mean())
        # the window holds the defect's centre at a random place (not always the middle)
        y0 = _randint(max(0, cy - r + 1), min(h - r, cy), generator)
        x0 = _randint(max(0, cx - r + 1), min(w - r, cx), generator)
        return image[y0:y0 + r, x0:x0 + r], mask[y0:y0 + r, x0:x0 + r], label

    def good_crop(self, index: int, generator: torch.Generator) -> np.ndarray:
        image, r = self.good[index], self.resolution
        y0 = _randint(0, image.shape[0] - r, generator)
        x0 = _randint(0, image.shape[1] - r, generator)
        return image[y0:y0 + r, x0:x0 + r]

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """defect (B,3,r,r) [-1,1], mask (B,1,r,r) {0,1}, label (B,) long and, with good images,
        good (B,3,r,r) [-1,1]."""
        picks = torch.randint(0, len(self.defects), (batch_size,), generator=generator).tolist()
        crops = [self.defect_crop(i, generator) for i in picks]
        batch = {
            "defect": to_tensor_images(np.stack([c[0] for c in crops])),
            "mask": torch.from_numpy(np.stack([c[1] for c in crops])).float()[:, None],
            "label": torch.tensor([c[2] for c in crops], dtype=torch.long),
        }
        if self.good:
            goods = torch.randint(0, len(self.good), (batch_size,), generator=generator).tolist()
            batch["good"] = to_tensor_images(np.stack([self.good_crop(i, generator) for i in goods]))
        return batch


def defect_free_backgrounds(samples: Sequence[DefectSample], margin: int = 3) -> list[np.ndarray]:
    """Good-cloth stand-ins where no good image exists: each sample's image with its defect mask
    (grown by `margin` px) filled by OpenCV's Telea inpainting from the cloth around it."""
    from defectfill.masks import dilate

    out = []
    for sample in samples:
        hole = dilate(sample.mask, margin).astype(np.uint8) * 255 if sample.mask.any() else None
        out.append(sample.image.copy() if hole is None else cv2.inpaint(sample.image, hole, 5, cv2.INPAINT_TELEA))
    return out


def few_shot_batches(model_config, samples: Sequence[DefectSample], good_images: Sequence[np.ndarray] | None = None,
                     need_good: bool = True) -> FewShotBatches:
    """`FewShotBatches` of the defects in `samples` and the good images (`good_images`, else the good
    samples among `samples`). Types: `model_config.defect_types`, or every type found (written back
    into the config, so that the model is built for them); side: `model_config.resolution`."""
    defects = [s for s in samples if not s.is_good and s.mask.any()]
    if good_images is None:
        good_images = [s.image for s in samples if s.is_good]
    types = list(model_config.defect_types) or sorted({s.defect_type for s in defects})
    model_config.defect_types = types
    return FewShotBatches(defects, good_images, types, model_config.resolution, need_good=need_good)
