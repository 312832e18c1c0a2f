"""Low-Fidelity Selection (LFS, DefectFill §3.4, arXiv 2503.13985).

Inpainting often "over-reconstructs" the mask into normal texture, so a candidate may hold no
visible defect. LFS scores each of the k candidates by its perceptual distance to the defect-free
input *inside the mask* and keeps the most different ones:

    score_i = d(x_good ⊙ M, x_i ⊙ M),   selected = argsort(score)[::-1][:top_k]

The paper uses LPIPS; public re-implementations generate 8 candidates and keep the 1 with the
highest in-mask LPIPS. Metrics (chosen explicitly by name, never swapped silently):

- ``"lpips"`` / ``"lpips-vgg"``: spatial LPIPS (AlexNet / VGG16 trunk) averaged over the mask
  pixels. Needs the torchvision ImageNet weights in the torch hub cache
  (``$TORCH_HOME/hub/checkpoints``); a missing file raises `ModelError` telling how to get it or
  which offline metric to choose instead.
- ``"ms-ssim-distance"``: needs no download. On the mask's bounding box (plus a little context),
  at 3 scales: 1 − SSIM (Gaussian window, σ = 1.5, worst colour channel) averaged over the mask
  pixels, and 1 − gradient-magnitude similarity (GMSD's GMS) averaged likewise; score = mean of
  the two terms. 0 for an identical candidate; a flat blur of the texture loses structure and
  scores in between; a visible defect changes luminance and structure and scores highest.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from defectfill.errors import GenerationError, ModelError
from defectfill.masks import resize_mask

logger = logging.getLogger(__name__)

SELECTION_METRICS = ("lpips", "lpips-vgg", "ms-ssim-distance")
AUTO = "auto"  # LPIPS (the paper's) when its AlexNet weights are here, else ms-ssim-distance
DEFAULT_METRIC = AUTO

# torchvision file names of the ImageNet trunks lpips loads (torchvision.models.*_Weights.IMAGENET1K_V1)
_LPIPS_TRUNKS = {"lpips": ("alex", "alexnet-owt-7be5be79.pth"), "lpips-vgg": ("vgg", "vgg16-397923af.pth")}


def check_metric(metric: str) -> str:
    """`metric` itself when it names a metric; "auto" resolved (`resolve_metric`)."""
    if metric == AUTO:
        return resolve_metric(metric)
    if metric not in SELECTION_METRICS:
        raise GenerationError(
            f"selection_metric {metric!r} is unknown; choose one of {[AUTO, *SELECTION_METRICS]} "
            "(ms-ssim-distance needs no download)"
        )
    return metric


@functools.cache
def resolve_metric(metric: str) -> str:
    """"auto" -> "lpips" when its AlexNet weights are in the torch cache, else "ms-ssim-distance";
    the choice is logged once per process (and every result records the metric it used)."""
    if metric != AUTO:
        return check_metric(metric)
    chosen = "lpips" if lpips_weights_path("lpips").is_file() else "ms-ssim-distance"
    why = "its AlexNet weights are in the torch cache" if chosen == "lpips" else (
        f"LPIPS needs AlexNet weights at {lpips_weights_path('lpips')}, not present (offline)")
    logger.info("selection_metric auto -> %s (%s)", chosen, why)
    return chosen


# ----------------------------------------------------------------------------------------- boxes
def _mask_box(mask: np.ndarray, margin: int, min_side: int) -> tuple[int, int, int, int]:
    """Bounding box of the mask grown by `margin` and to at least `min_side`, clamped to the image."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    x0, x1, y0, y1 = xs.min() - margin, xs.max() + 1 + margin, ys.min() - margin, ys.max() + 1 + margin
    if x1 - x0 < min_side:
        grow = min_side - (x1 - x0)
        x0, x1 = x0 - grow // 2, x1 + grow - grow // 2
    if y1 - y0 < min_side:
        grow = min_side - (y1 - y0)
        y0, y1 = y0 - grow // 2, y1 + grow - grow // 2
    return int(max(0, x0)), int(max(0, y0)), int(min(w, x1)), int(min(h, y1))


# ------------------------------------------------------------------------------ ms-ssim-distance
def _ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM of two float32 single-channel images in [0, 1] (Wang et al. 2004)."""
    c1, c2 = 0.01**2, 0.03**2
    blur = functools.partial(cv2.GaussianBlur, ksize=(7, 7), sigmaX=1.5, borderType=cv2.BORDER_REFLECT)
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def _gradient_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel gradient-magnitude similarity (GMSD, Xue et al. 2014), in [0, 1]."""
    c = 0.0026

    def magnitude(x: np.ndarray) -> np.ndarray:
        gx = cv2.Sobel(x, cv2.CV_32F, 1, 0, ksize=3) / 4.0
        gy = cv2.Sobel(x, cv2.CV_32F, 0, 1, ksize=3) / 4.0
        return np.sqrt(gx * gx + gy * gy)

    ga, gb = magnitude(a), magnitude(b)
    return (2 * ga * gb + c) / (ga * ga + gb * gb + c)


def _ms_ssim_distance(original: np.ndarray, candidate: np.ndarray, mask: np.ndarray, scales: int = 3) -> float:
    a_full, b_full, m_full = original.astype(np.float32) / 255.0, candidate.astype(np.float32) / 255.0, mask
    ssim_terms, gms_terms = [], []
    for level in range(scales):
        if level:
            if min(a_full.shape[:2]) < 16:
                break
            size = (a_full.shape[1] // 2, a_full.shape[0] // 2)
            a_full = cv2.resize(a_full, size, interpolation=cv2.INTER_AREA)
            b_full = cv2.resize(b_full, size, interpolation=cv2.INTER_AREA)
            m_full = resize_mask(m_full, (size[1], size[0]), mode="area")
        worst_ssim, worst_gms = 0.0, 0.0
        for ch in range(a_full.shape[2]):
            a, b = np.ascontiguousarray(a_full[..., ch]), np.ascontiguousarray(b_full[..., ch])
            worst_ssim = max(worst_ssim, float(1.0 - _ssim_map(a, b)[m_full].mean()))
            worst_gms = max(worst_gms, float(1.0 - _gradient_similarity(a, b)[m_full].mean()))
        ssim_terms.append(worst_ssim)
        gms_terms.append(worst_gms)
    return 0.5 * (float(np.mean(ssim_terms)) + float(np.mean(gms_terms)))


# ------------------------------------------------------------------------------------------ lpips
def lpips_weights_path(metric: str = "lpips") -> Path:
    """Where torchvision keeps the ImageNet trunk that `metric` needs (it may not exist)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / _LPIPS_TRUNKS[metric][1]


@functools.lru_cache(maxsize=2)
def _lpips_model(metric: str):
    path = lpips_weights_path(metric)
    net = _LPIPS_TRUNKS[metric][0]
    if not path.is_file():
        raise ModelError(
            f"selection_metric {metric!r} needs the torchvision ImageNet {net} weights at {path}, which are "
            f"missing (LPIPS downloads them on first use, and this machine is offline). Fix: copy "
            f"{path.name} into {path.parent} (or set TORCH_HOME), or choose selection_metric "
            "'ms-ssim-distance', which needs no download"
        )
    import lpips

    try:
        model = lpips.LPIPS(net=net, spatial=True, verbose=False)
    except Exception as exc:  # a corrupt cache file, an incompatible lpips/torchvision pair
        raise ModelError(f"selection_metric {metric!r}: LPIPS could not load {path}: {exc}") from exc
    return model.eval()


def _lpips_distances(metric: str, original: np.ndarray, candidates: list[np.ndarray], mask: np.ndarray) -> list[float]:
    import torch

    model = _lpips_model(metric)
    side = 64  # AlexNet's first layers need some room; small boxes are upsampled to this

    def to_tensor(arr: np.ndarray) -> torch.Tensor:
        if min(arr.shape[:2]) < side:
            factor = side / min(arr.shape[:2])
            arr = cv2.resize(arr, (round(arr.shape[1] * factor), round(arr.shape[0] * factor)),
                             interpolation=cv2.INTER_CUBIC)
        return torch.from_numpy(arr).permute(2, 0, 1).float().div(127.5).sub(1.0)

    weight = mask.astype(np.float32)
    reference = to_tensor(original * mask[..., None])
    batch = torch.stack([to_tensor(c * mask[..., None]) for c in candidates])
    with torch.inference_mode():
        spatial = model(reference[None].expand_as(batch), batch)[:, 0]  # (k, h, w)
    weights = cv2.resize(weight, (spatial.shape[2], spatial.shape[1]), interpolation=cv2.INTER_AREA)
    weights = torch.from_numpy(weights)
    if float(weights.sum()) <= 0:
        weights = torch.ones_like(weights)
    return [float((s * weights).sum() / weights.sum()) for s in spatial]


def ensure_metric_available(metric: str) -> str:
    """Fail early (before any generation) when `metric` cannot run here; returns the metric ("auto" resolved)."""
    metric = check_metric(metric)
    if metric in _LPIPS_TRUNKS:
        _lpips_model(metric)
    return metric


# ------------------------------------------------------------------------------------------- API
def score_candidates(
    original: np.ndarray, candidates: list[np.ndarray], mask: np.ndarray, metric: str = DEFAULT_METRIC
) -> list[float]:
    """In-mask distance of each candidate (H, W, 3) uint8 to `original`; higher = lower fidelity."""
    check_metric(metric)
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise GenerationError("selection: the mask is empty; LFS scores candidates inside the request mask")
    for i, cand in enumerate(candidates):
        if cand.shape != original.shape:
            raise GenerationError(f"selection: candidate {i} has shape {cand.shape}, the original {original.shape}")
    x0, y0, x1, y1 = _mask_box(mask, margin=4, min_side=16)
    crop_mask = mask[y0:y1, x0:x1]
    crop_original = original[y0:y1, x0:x1]
    crops = [c[y0:y1, x0:x1] for c in candidates]
    if metric == "ms-ssim-distance":
        return [_ms_ssim_distance(crop_original, crop, crop_mask) for crop in crops]
    return _lpips_distances(metric, crop_original, crops, crop_mask)


def select(scores: list[float], top_k: int = 1) -> list[int]:
    """Indices of the `top_k` highest scores, best first (ties keep candidate order)."""
    if top_k < 1:
        raise GenerationError(f"top_k must be >= 1, found {top_k}")
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return order[:top_k]


@dataclass
class LowFidelitySelection:
    """LFS as an object: `LowFidelitySelection("ms-ssim-distance", top_k=1)(good, candidates, mask)`."""

    metric: str = DEFAULT_METRIC
    top_k: int = 1

    def __post_init__(self) -> None:
        check_metric(self.metric)

    def __call__(self, original: np.ndarray, candidates: list[np.ndarray], mask: Any) -> tuple[list[float], list[int]]:
        scores = score_candidates(original, candidates, mask, self.metric)
        return scores, select(scores, min(self.top_k, len(scores)))
