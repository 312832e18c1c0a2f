"""Torch datasets for the segmenter: an assembled folder's images + class-index masks.

Items: image (3, S, S) float, ImageNet-normalised (the statistics torchvision backbones expect);
mask (S, S) int64 class indices (0 background, i+1 = classes[i]). S = `image_size`: images are
resized bilinearly, masks by nearest neighbour (class indices must not be blended).
Training items are flipped at random (horizontal and vertical: fabric has no up or down).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from defectfill.data.images import load_image, load_label_map
from defectfill.errors import DataError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def image_to_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, size, size) float, ImageNet-normalised."""
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR) if image.shape[:2] != (size, size) else image
    arr = (resized.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def load_class_mask(path: Path, num_classes: int) -> np.ndarray:
    """A class-index PNG -> (H, W) int64, checked against the number of classes."""
    if not path.is_file():
        raise DataError(f"{path}: class mask missing; re-run `defectfill assemble` into a new folder")
    mask = load_label_map(path).astype(np.int64)
    if mask.ndim != 2 or mask.max() >= num_classes:
        raise DataError(
            f"{path}: expected a single-channel class-index mask with values < {num_classes}, found "
            f"shape {mask.shape} max {mask.max()}; it was not written by `defectfill assemble`"
        )
    return mask


class SegmentationFolder(torch.utils.data.Dataset):
    """images/<split>/*.png with masks/<split>/*.png of an assembled dataset.

    Training flips are drawn from (seed, epoch, index), not from a running generator: the same in
    every DataLoader worker and after a resume. Call `set_epoch` before each epoch.
    """

    def __init__(self, root: str | Path, split: str, num_classes: int, image_size: int, train: bool = False, seed: int = 0):
        self.root = Path(root)
        self.images = sorted((self.root / "images" / split).glob("*.png"))
        if not self.images:
            raise DataError(f"{self.root / 'images' / split}: no images; pass an assembled dataset folder")
        self.num_classes = num_classes
        self.image_size = image_size
        self.train = train
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.images[index]
        image = load_image(path)
        mask = load_class_mask(self.root / "masks" / path.parent.name / path.name, self.num_classes)
        if self.train:
            flip_x, flip_y = np.random.default_rng([self.seed, self.epoch, index]).random(2) < 0.5
            if flip_x:
                image, mask = image[:, ::-1], mask[:, ::-1]
            if flip_y:
                image, mask = image[::-1], mask[::-1]
        image = np.ascontiguousarray(image)
        size = self.image_size
        mask = cv2.resize(np.ascontiguousarray(mask).astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
        return image_to_tensor(image, size), torch.from_numpy(mask.astype(np.int64))


def class_map(mask: np.ndarray, defect_type: str, classes: Sequence[str]) -> np.ndarray:
    """A sample's bool mask -> (H, W) int64 class map (0 where the mask is off or the image is good)."""
    if defect_type == "good":
        return np.zeros(mask.shape, np.int64)
    return np.where(mask, classes.index(defect_type) + 1, 0).astype(np.int64)
