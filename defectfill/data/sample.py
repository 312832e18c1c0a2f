"""`DefectSample`: the one record every reader returns and every writer takes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class DefectSample:
    """One image with its defect mask.

    image: (H, W, 3) uint8 RGB (greyscale fabric is replicated to 3 channels; `is_gray` says so).
    mask: (H, W) bool, True on defect pixels; all False for a good image.
    defect_type: class name ("good" for a defect-free image).
    source: the file the image came from (None when generated in memory).
    boxes: optional (N, 4) int array of x0, y0, x1, y1 (exclusive ends), pixel units.
    """

    image: np.ndarray
    mask: np.ndarray
    defect_type: str = "good"
    source: Path | None = None
    mask_source: Path | None = None
    boxes: np.ndarray | None = None
    is_gray: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"DefectSample.image must be (H,W,3) uint8, got {self.image.shape} {self.image.dtype}")
        if self.mask.shape != self.image.shape[:2]:
            raise ValueError(f"DefectSample.mask shape {self.mask.shape} != image {self.image.shape[:2]}")
        self.mask = self.mask.astype(bool, copy=False)

    @property
    def is_good(self) -> bool:
        return self.defect_type == "good"

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.image.shape[0], self.image.shape[1]
