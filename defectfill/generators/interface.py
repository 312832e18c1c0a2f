"""The interface every defect generator implements, and its result record.

DefectFill, cut-paste and the GAN baselines all implement `DefectGenerator`, so that
train -> generate -> select -> label -> export -> fine-tune -> evaluate is written once. What
they share (request checks, the window around the mask, changed-pixel labels, building the
result) is in `defectfill.generators.shared`; how they are found by name is in
`defectfill.generators.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass
class GenerationResult:
    """What one `generate(image, mask)` call returns.

    candidates: k images, each (H, W, 3) uint8, same size as the input, pixels outside the
        request mask identical to the input.
    scores: k selection scores (higher = more different from the good image inside the mask).
    selected: indices into `candidates` kept by the selection, best first.
    request_mask: (H, W) bool, the mask that was asked for.
    changed_masks: k (H, W) bool masks of the pixels really changed (request ∩ |out − in| > τ).
    boxes: k arrays (N, 4) of x0, y0, x1, y1 per changed-pixel component.
    selection_metric: name of the metric that produced `scores`.
    gray: the input had one channel (greyscale); `image` is then (H, W), the candidates stay
        (H, W, 3) with three equal channels.
    """

    candidates: list[np.ndarray]
    scores: list[float]
    selected: list[int]
    request_mask: np.ndarray
    changed_masks: list[np.ndarray]
    boxes: list[np.ndarray]
    defect_type: str
    selection_metric: str
    meta: dict[str, Any] = field(default_factory=dict)
    gray: bool = False

    @property
    def image(self) -> np.ndarray:
        """The best selected candidate: (H, W, 3) uint8, or (H, W) for a greyscale input."""
        best = self.candidates[self.selected[0]]
        return best[..., 0] if self.gray else best

    @property
    def changed_mask(self) -> np.ndarray:
        return self.changed_masks[self.selected[0]]

    @property
    def best_boxes(self) -> np.ndarray:
        return self.boxes[self.selected[0]]


@runtime_checkable
class DefectGenerator(Protocol):
    """A trained generator that puts a defect of a known type into a mask on a good image."""

    name: str

    @property
    def defect_types(self) -> list[str]: ...

    def generate(
        self,
        image: Any,
        mask: Any,
        *,
        defect_type: str,
        num_candidates: int = 1,
        generator: Any = None,
    ) -> GenerationResult: ...
