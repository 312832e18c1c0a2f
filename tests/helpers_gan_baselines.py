"""Tiny few-shot data for the GAN-baseline tests: square "defects" on noise fabric."""

from __future__ import annotations

import numpy as np

from defectfill.data.sample import DefectSample

TYPES = ["stain", "hole"]


def tiny_data(n: int = 3, side: int = 40):
    rng = np.random.default_rng(0)
    defects = []
    for k in range(n):
        for t, type_ in enumerate(TYPES):
            image = rng.integers(90, 140, (side, side, 3), dtype=np.uint8)
            mask = np.zeros((side, side), bool)
            y, x = 8 + 3 * k, 10 + 4 * t
            mask[y:y + 8, x:x + 6 + 4 * t] = True
            image[mask] = (30, 30, 30) if type_ == "stain" else (230, 230, 230)
            defects.append(DefectSample(image, mask, type_))
    good = [rng.integers(90, 140, (side, side, 3), dtype=np.uint8) for _ in range(2)]
    return defects, good
