"""DFC's open-set decision: per-class Weibull models (EVT, OpenMax) on DFC's logits, region
detection with DIS, and the open-set metrics.

- Weibull fitting and recalibration come from `pytorch_ood.detector.OpenMax` (Apache-2.0; its
  `LibNotMR` reimplements libMR's `fit_high` / `w_score` with scipy): per known class the mean
  logit vector μ_c, the distances of that class's fit samples to μ_c, a Weibull fitted to the
  `tailsize` largest; a test vector's top logit is scaled by 1 − W_c(d) and the removed mass
  becomes an "unknown" logit; the unknown score is the softmax probability of it. Only alpha = 1
  (the top class revised) is allowed: pytorch-ood 0.4.0 measures a sample's distance only to
  classes that are the argmax of some sample in the same batch, so alpha > 1 gives batch-dependent
  scores (found while testing; see tests/test_openset.py).
  pytorch-ood fits on every sample it is given; with `fit_on: correct` we pass it only the
  correctly classified ones, as the original OpenMax does (`fit_on: all` passes all).
- The fit set is kept (`openset.safetensors` beside the model) and the Weibulls are refitted
  from it on load (scipy's fit is deterministic), so nothing but tensors and JSON is stored.
- The baseline is max-softmax: unknown score = 1 − max_c softmax(logits)_c.
- A region is "unknown defect" when its unknown score exceeds `threshold`, chosen on validation
  data of known types only (`choose_threshold`: accept `target_tpr` of the known validation
  regions), else the DFC's argmax type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from defectfill.errors import ModelError
from defectfill.io_utils import atomic_write_json, load_safetensors
from defectfill.masks import component_masks
from defectfill.metrics.openset import UNKNOWN
from gan_baselines.data import to_tensor_images, upscale_to_side
from gan_baselines.dgt.config import OpenMaxConfig
from gan_baselines.dgt.model import DGT

FIT_FILE = "openset.safetensors"
FIT_INFO = "openset.json"


def max_softmax_score(logits: torch.Tensor) -> torch.Tensor:
    """The baseline's unknown score, 1 − max softmax, (N,)."""
    return 1.0 - torch.softmax(logits.float(), dim=1).max(dim=1).values


class WeibullOpenSet:
    """OpenMax on (N, S) logits: `fit(logits, labels)`, `unknown_score(logits)`, `decide(logits)`."""

    def __init__(self, config: OpenMaxConfig, threshold: float = 0.5):
        if config.fit_on not in ("correct", "all"):
            raise ModelError(f"openmax.fit_on: {config.fit_on!r} is not 'correct' or 'all'")
        if config.alpha != 1:
            # pytorch-ood 0.4.0 computes a sample's distances only to the classes that are some
            # sample's argmax in the same batch; a rank-2 class is otherwise at distance 0, so with
            # alpha > 1 a score would depend on the rest of the batch (tested)
            raise ModelError(f"openmax.alpha: {config.alpha}; only alpha = 1 gives batch-independent scores "
                             "with pytorch-ood's OpenMax (it revises rank >= 2 classes from batch-dependent "
                             "distances); set openmax.alpha: 1")
        self.config = config
        self.threshold = float(threshold)
        self.fit_logits: torch.Tensor | None = None
        self.fit_labels: torch.Tensor | None = None
        self._detector = None

    def fit(self, logits: torch.Tensor, labels: torch.Tensor) -> WeibullOpenSet:
        from pytorch_ood.detector import OpenMax

        logits, labels = logits.detach().float().cpu(), labels.detach().long().cpu()
        keep = logits.argmax(1) == labels if self.config.fit_on == "correct" else torch.ones_like(labels, dtype=bool)
        classes = labels.unique()
        for c in classes:  # a class with too few correct samples falls back to all of its samples
            if int((keep & (labels == c)).sum()) < 3:
                keep |= labels == c
        self.fit_logits, self.fit_labels = logits[keep], labels[keep]
        if len(self.fit_labels.unique()) < logits.shape[1]:
            missing = sorted(set(range(logits.shape[1])) - set(self.fit_labels.tolist()))
            raise ModelError(f"OpenMax fit: no sample of class index(es) {missing}; every known type needs samples")
        self._detector = OpenMax(None, tailsize=self.config.tailsize, alpha=self.config.alpha,
                                 euclid_weight=self.config.euclid_weight)
        self._detector.fit_logits(self.fit_logits, self.fit_labels)
        return self

    def unknown_score(self, logits: torch.Tensor) -> torch.Tensor:
        """OpenMax's recalibrated probability of "unknown", (N,)."""
        if self._detector is None:
            raise ModelError("WeibullOpenSet: not fitted; call fit(logits, labels) or load a fitted model")
        return self._detector.predict_logits(logits.detach().float().cpu()).float()

    def w_score(self, class_index: int, distances: np.ndarray) -> np.ndarray:
        """The fitted Weibull CDF of class `class_index` at `distances` (to its mean logit vector);
        read from pytorch-ood's numpy OpenMax (for diagnostics and tests)."""
        if self._detector is None:
            raise ModelError("WeibullOpenSet: not fitted")
        return np.asarray(self._detector._openmax.distributions[class_index].w_score(np.asarray(distances)))

    def center(self, class_index: int) -> np.ndarray:
        """The mean logit vector of class `class_index` (of its fit samples)."""
        return np.asarray(self._detector._openmax.centers[class_index])

    def decide(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(closed-set class index (N,), is_unknown (N,) bool) at `threshold`."""
        return logits.argmax(1).cpu(), self.unknown_score(logits) > self.threshold

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        save_file({"logits": self.fit_logits.contiguous(), "labels": self.fit_labels.contiguous()},
                  str(folder / FIT_FILE))
        atomic_write_json(folder / FIT_INFO, {"threshold": self.threshold, **vars(self.config)})

    @classmethod
    def load(cls, folder: str | Path) -> WeibullOpenSet:
        folder = Path(folder)
        try:
            info = json.loads((folder / FIT_INFO).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"{folder / FIT_INFO}: missing or damaged ({exc}); refit DFC (train_dgt.py)") from exc
        threshold = info.pop("threshold")
        tensors = load_safetensors(folder / FIT_FILE, fix="refit DFC (train_dgt.py)")
        out = cls(OpenMaxConfig(**info), threshold)
        out.config.fit_on = "all"  # the stored set is already filtered
        out.fit(tensors["logits"], tensors["labels"])
        out.config.fit_on = info["fit_on"]
        return out


def choose_threshold(known_scores: torch.Tensor | np.ndarray, target_tpr: float = 0.95) -> float:
    """The unknown-score threshold that accepts `target_tpr` of known validation regions."""
    return float(np.quantile(np.asarray(known_scores, dtype=np.float64), target_tpr))


def _window(shape: tuple[int, int], mask: np.ndarray, side: int) -> tuple[int, int]:
    ys, xs = np.nonzero(mask)
    y0 = int(np.clip(round(ys.mean()) - side // 2, 0, shape[0] - side))
    x0 = int(np.clip(round(xs.mean()) - side // 2, 0, shape[1] - side))
    return y0, x0


@torch.no_grad()
def region_logits(model: DGT, image: np.ndarray, masks: list[np.ndarray]) -> torch.Tensor:
    """DFC logits (len(masks), S) of the regions `masks` of `image` (H, W, 3) uint8: a window of the
    model's resolution around each region, DFC on the window and the region's mask in it."""
    if not masks:
        return torch.zeros(0, model.num_classes)
    r = model.resolution
    image_up, _ = upscale_to_side(image, None, r)
    crops, regions = [], []
    for mask in masks:
        if image_up.shape[:2] != image.shape[:2]:
            mask = upscale_to_side(image, mask, r)[1]
        y0, x0 = _window(image_up.shape[:2], mask, r)
        crops.append(to_tensor_images(image_up[None, y0:y0 + r, x0:x0 + r])[0])
        regions.append(torch.from_numpy(mask[y0:y0 + r, x0:x0 + r].astype(np.float32))[None])
    device = next(model.parameters()).device
    model.eval()
    return model.classify(torch.stack(crops).to(device), torch.stack(regions).to(device)).cpu()


@torch.no_grad()
def heat_map(model: DGT, image: np.ndarray) -> np.ndarray:
    """DIS's defect probability (H, W) float32 of a whole image (reflect-padded to the U-Net's multiple)."""
    x = to_tensor_images(image[None]).to(next(model.parameters()).device)
    side = 2 ** model.generator.depth
    h, w = image.shape[:2]
    x = torch.nn.functional.pad(x, (0, -w % side, 0, -h % side), mode="reflect")
    model.eval()
    return torch.sigmoid(model.segment(x))[0, 0, :h, :w].cpu().numpy()


@dataclass
class RegionPrediction:
    """One predicted defect region: label is a known type or "unknown defect"."""

    mask: np.ndarray          # (H, W) bool
    box: tuple[int, int, int, int]   # x0, y0, x1, y1 (exclusive)
    label: str
    closed_set_type: str      # DFC's argmax, whatever the open-set decision
    unknown_score: float      # OpenMax's P(unknown)
    max_softmax: float


def classify_regions(model: DGT, openset: WeibullOpenSet, image: np.ndarray,
                     masks: list[np.ndarray]) -> list[RegionPrediction]:
    """DFC + OpenMax on given regions (H, W) bool of `image` (H, W, 3) uint8: each a known type or
    "unknown defect" (the regions may come from DIS or from any segmenter)."""
    if not masks:
        return []
    logits = region_logits(model, image, masks)
    closed, unknown = openset.decide(logits)
    scores = openset.unknown_score(logits)
    soft = torch.softmax(logits, 1).max(1).values
    out = []
    for k, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        closed_type = model.defect_types[int(closed[k])]
        out.append(RegionPrediction(mask, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
                                    UNKNOWN if bool(unknown[k]) else closed_type, closed_type,
                                    float(scores[k]), float(soft[k])))
    return out


def detect_defects(model: DGT, openset: WeibullOpenSet, image: np.ndarray, heat_threshold: float = 0.5,
                   min_area: int = 6) -> list[RegionPrediction]:
    """The product function: DIS segments `image` (H, W, 3) uint8, each connected region is
    classified by DFC, and OpenMax says "known type X" or "unknown defect"."""
    regions = component_masks(heat_map(model, image) > heat_threshold, min_area)
    return classify_regions(model, openset, image, regions)


def openset_metrics(closed_pred: np.ndarray, true_class: np.ndarray, is_unknown: np.ndarray,
                    unknown_score: np.ndarray, threshold: float) -> dict[str, float]:
    """Closed-set accuracy (known samples), AUROC known vs unknown, OSCR (area), open-set macro-F1
    over the S known classes + "unknown" at `threshold` (osr-metrics). true_class of an unknown
    sample is ignored; unknown_score: higher = more unknown."""
    import osr_metrics

    closed_pred, true_class = np.asarray(closed_pred), np.asarray(true_class)
    is_unknown, unknown_score = np.asarray(is_unknown, bool), np.asarray(unknown_score, np.float64)
    known = ~is_unknown
    s = int(max(closed_pred.max(initial=0), true_class[known].max(initial=0))) + 1
    truth = np.where(is_unknown, s, true_class)
    pred = np.where(unknown_score > threshold, s, closed_pred)
    return {
        "closed_set_accuracy": osr_metrics.top1_accuracy(closed_pred[known], true_class[known]),
        "auroc": osr_metrics.auroc(unknown_score, is_unknown.astype(int)),
        "oscr": osr_metrics.compute_aoscr(unknown_score, is_unknown.astype(int), np.where(known, closed_pred, -1),
                                          np.where(known, true_class, -2)),
        "open_macro_f1": osr_metrics.macro_f1_multiclass(pred, truth),
    }
