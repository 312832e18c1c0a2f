"""Generation-quality metrics of defect crops: KID (quality) and IC-LPIPS (diversity).

Both follow the protocol of the defect-generation papers (MAGIC / AnomalyDiffusion eval scripts):

KID (Bińkowski et al. 2018): features phi = InceptionV3 2048-d pool features of images resized to
299 px. Kernel k(x, y) = (x·y / d + 1)^3 (d = feature dimension). For subsets X (real) and Y
(generated) of size m drawn without replacement, the unbiased estimate is

    MMD² = 1/(m(m-1)) Σ_{i≠j} k(x_i, x_j) + 1/(m(m-1)) Σ_{i≠j} k(y_i, y_j) − 2/m² Σ_{i,j} k(x_i, y_j)

averaged over `num_subsets` subsets of size m = min(n_real, n_fake, 1000); reported ×1000 with the
standard deviation over subsets (×1000). Lower is better; identical distributions give ≈ 0.

IC-LPIPS (Ojha et al. 2021): each generated crop is assigned to its nearest training reference by
LPIPS; within each cluster the mean LPIPS over all pairs of its members is taken; the result is the
mean over clusters; clusters with fewer than 2 members (NaN) are dropped. Higher = more diverse.

Defect contrast (no network): the signed difference between the mean grey level inside a defect's
mask and in a ring around it (2-6 px outside), 0-255. Real stains are dark (negative); a generator
whose stains come out light has the sign wrong however good its KID looks on small sets.

KID and IC-LPIPS need pretrained networks (ImageNet InceptionV3; LPIPS' VGG16) that cannot be
downloaded here. They are used only when their weights are already in the torch hub cache
(TORCH_HOME). Otherwise the caller gets an explicitly named offline substitute, and that name goes
into every result (`feature_extractor`, `lpips_network`): random-init networks give numbers that
are internally consistent (same extractor for every arm) but not comparable to published values.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from defectfill.errors import DataError, ModelError

INCEPTION_CHECKPOINT = "inception_v3_google-0cc3c7bd.pth"
VGG16_CHECKPOINT = "vgg16-397923af.pth"


def _hub_checkpoint(name: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _to_batch(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """(H, W, 3) uint8 images -> (B, 3, size, size) float in [0, 1] (bicubic resize)."""
    if len(images) == 0:
        raise DataError("no images given to the metric; pass at least one crop per set")
    tensors = []
    for i, image in enumerate(images):
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise DataError(f"image {i}: expected (H, W, 3) uint8, found {arr.shape} {arr.dtype}")
        t = torch.from_numpy(arr).permute(2, 0, 1).float().div(255.0)[None]
        tensors.append(F.interpolate(t, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1))
    return torch.cat(tensors)


@dataclass
class FeatureExtractor:
    """A named image -> feature-vector function. `name` goes into every KID result."""

    name: str
    network: torch.nn.Module
    input_size: int
    normalize: Callable[[torch.Tensor], torch.Tensor]
    # Random-init networks give features of arbitrary scale (BN statistics do not match), which the
    # cubic kernel turns into overflow; the substitutes rescale each vector to norm sqrt(d), so that
    # x·y/d is the cosine similarity and k(x, y) lies in [0, 8].
    unit_norm: bool = False

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        batch = _to_batch(images, self.input_size)
        self.network.eval()
        features = [self.network(self.normalize(batch[i : i + batch_size])) for i in range(0, len(batch), batch_size)]
        features = torch.cat(features).flatten(1).double()
        if self.unit_norm:
            features = F.normalize(features, dim=1) * math.sqrt(features.shape[1])
        return features.numpy()


def _imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


def inception_feature_extractor(weights_path: str | Path | None = None, *, allow_substitute: bool = True, seed: int = 0) -> FeatureExtractor:
    """InceptionV3 2048-d pool features at 299 px.

    Uses ImageNet weights from `weights_path` or from the torch hub cache when present; otherwise
    (allow_substitute) a fixed-seed random-init InceptionV3 named as an offline substitute.
    """
    from torchvision.models import inception_v3

    path = Path(weights_path) if weights_path is not None else _hub_checkpoint(INCEPTION_CHECKPOINT)
    if not path.is_file():
        if weights_path is not None:
            raise ModelError(f"{path}: InceptionV3 weights not found; pass an existing .pth file or omit it")
        if not allow_substitute:
            raise ModelError(
                f"InceptionV3 ImageNet weights not in {path}; place {INCEPTION_CHECKPOINT} there "
                "(TORCH_HOME/hub/checkpoints) or allow the named offline substitute"
            )
        torch.manual_seed(seed)
        # init_weights=False: PyTorch default init; torchvision's truncated-normal init is slow on CPU
        model = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False)
        name = (
            f"random-init inception_v3 seed {seed}, features scaled to norm sqrt(d) "
            "(offline substitute: not comparable to published KID)"
        )
        return FeatureExtractor(name, model_without_fc(model), 299, _imagenet_normalize, unit_norm=True)
    # transform_input=False: we normalise with ImageNet statistics ourselves
    model = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    name = f"inception_v3 ImageNet ({path.name}), pool 2048-d, 299 px"
    return FeatureExtractor(name=name, network=model_without_fc(model), input_size=299, normalize=_imagenet_normalize)


def model_without_fc(model: torch.nn.Module) -> torch.nn.Module:
    """InceptionV3 whose output is the 2048-d average-pool feature (fc replaced by identity)."""
    model.fc = torch.nn.Identity()
    return model


def random_conv_feature_extractor(seed: int = 0, input_size: int = 64, width: int = 64) -> FeatureExtractor:
    """A small fixed-seed random conv net (fast; for tests and tiny CPU runs), named as a substitute."""
    generator = torch.Generator().manual_seed(seed)
    layers, channels = [], 3
    for out in (width // 4, width // 2, width):
        conv = torch.nn.Conv2d(channels, out, 3, stride=2, padding=1)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) / math.sqrt(channels * 9))
            conv.bias.zero_()
        layers += [conv, torch.nn.ReLU()]
        channels = out
    layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()]
    name = (
        f"fixed-seed random conv net seed {seed}, {width}-d, {input_size} px, features scaled to norm sqrt(d) "
        "(offline substitute: not comparable to published KID)"
    )
    return FeatureExtractor(name, torch.nn.Sequential(*layers), input_size, _imagenet_normalize, unit_norm=True)


def polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with the cubic kernel k(a, b) = (a·b/d + 1)^3 (see module docstring)."""
    m, d = len(x), x.shape[1]
    k_xx = (x @ x.T / d + 1.0) ** 3
    k_yy = (y @ y.T / d + 1.0) ** 3
    k_xy = (x @ y.T / d + 1.0) ** 3
    off_diagonal = m * (m - 1)
    return float(
        (k_xx.sum() - np.trace(k_xx)) / off_diagonal + (k_yy.sum() - np.trace(k_yy)) / off_diagonal - 2.0 * k_xy.mean()
    )


def kid_from_features(
    real: np.ndarray, fake: np.ndarray, *, num_subsets: int = 100, subset_size: int | None = None, seed: int = 0
) -> dict:
    """KID ×1000 (mean and std over subsets) from two feature matrices (n, d)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    m = subset_size or min(len(real), len(fake), 1000)
    if m < 2 or m > min(len(real), len(fake)):
        raise DataError(
            f"KID needs subsets of >= 2 from each set; found {len(real)} real and {len(fake)} generated "
            f"feature vectors (subset size {m}); pass more crops"
        )
    rng = np.random.default_rng(seed)
    values = [
        polynomial_mmd2(real[rng.choice(len(real), m, replace=False)], fake[rng.choice(len(fake), m, replace=False)])
        for _ in range(num_subsets)
    ]
    return {
        "kid_x1000": 1000.0 * float(np.mean(values)),
        "kid_std_x1000": 1000.0 * float(np.std(values)),
        "subset_size": m,
        "num_subsets": num_subsets,
    }


def kid(
    real_images: Sequence[np.ndarray],
    fake_images: Sequence[np.ndarray],
    extractor: FeatureExtractor,
    *,
    num_subsets: int = 100,
    seed: int = 0,
) -> dict:
    """KID ×1000 of generated vs real images (H, W, 3 uint8) under `extractor` (named in the result)."""
    result = kid_from_features(extractor(real_images), extractor(fake_images), num_subsets=num_subsets, seed=seed)
    result["feature_extractor"] = extractor.name
    return result


@dataclass
class LpipsNetwork:
    """A named LPIPS distance. `name` goes into every IC-LPIPS result."""

    name: str
    model: torch.nn.Module
    input_size: int

    @torch.no_grad()
    def distances(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b: (N, 3, s, s) in [0, 1], pairwise aligned -> (N,) LPIPS distances."""
        return self.model(a * 2 - 1, b * 2 - 1).flatten()


def lpips_network(net: str = "vgg", *, input_size: int = 256, allow_substitute: bool = True) -> LpipsNetwork:
    """LPIPS(`net`) with its ImageNet backbone when cached locally, else the named random-backbone substitute."""
    import lpips

    checkpoint = {"vgg": VGG16_CHECKPOINT, "alex": "alexnet-owt-7be5be79.pth"}.get(net)
    if checkpoint is None:
        raise ModelError(f"LPIPS network {net!r} not supported; use 'vgg' or 'alex'")
    have_weights = _hub_checkpoint(checkpoint).is_file()
    if not have_weights and not allow_substitute:
        raise ModelError(
            f"{net} ImageNet weights not in {_hub_checkpoint(checkpoint)}; place {checkpoint} there "
            "(TORCH_HOME/hub/checkpoints) or allow the named offline substitute"
        )
    with warnings.catch_warnings():  # lpips calls torchvision's deprecated `pretrained=` argument
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, pnet_rand=not have_weights, verbose=False).eval()
    name = (
        f"lpips {net} (ImageNet backbone), {input_size} px"
        if have_weights
        else f"lpips {net} with random-init backbone, {input_size} px (offline substitute: not comparable to published IC-LPIPS)"
    )
    return LpipsNetwork(name=name, model=model, input_size=input_size)


def ic_lpips(generated: Sequence[np.ndarray], references: Sequence[np.ndarray], network: LpipsNetwork) -> dict:
    """IC-LPIPS of generated crops against training references (see the module docstring)."""
    gen = _to_batch(generated, network.input_size)
    ref = _to_batch(references, network.input_size)
    # nearest reference per generated crop
    distance_to_refs = torch.stack(
        [network.distances(gen, ref[j : j + 1].expand_as(gen)) for j in range(len(ref))], dim=1
    )
    assignment = distance_to_refs.argmin(dim=1).numpy()
    cluster_means = []
    for j in range(len(ref)):
        members = np.flatnonzero(assignment == j)
        if len(members) < 2:
            continue  # mean over no pairs is NaN: dropped, as in the reference protocol
        pairs = [(a, b) for i, a in enumerate(members) for b in members[i + 1 :]]
        first = gen[[a for a, _ in pairs]]
        second = gen[[b for _, b in pairs]]
        cluster_means.append(float(network.distances(first, second).mean()))
    return {
        "ic_lpips": float(np.mean(cluster_means)) if cluster_means else None,
        "num_clusters_used": len(cluster_means),
        "num_references": len(ref),
        "cluster_sizes": np.bincount(assignment, minlength=len(ref)).tolist(),
        "lpips_network": network.name,
    }


def defect_crop(image: np.ndarray, mask: np.ndarray, margin: float = 0.25, min_side: int = 16) -> np.ndarray | None:
    """Square crop around the bounding box of `mask` (grown by `margin` per side); None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    height, width = mask.shape
    cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    side = max(ys.max() + 1 - ys.min(), xs.max() + 1 - xs.min(), min_side) * (1 + 2 * margin)
    side = int(min(math.ceil(side), height, width))
    y0 = int(np.clip(round(cy - side / 2), 0, height - side))
    x0 = int(np.clip(round(cx - side / 2), 0, width - side))
    return np.ascontiguousarray(image[y0 : y0 + side, x0 : x0 + side])


def _grey_and_ring(image: np.ndarray, mask: np.ndarray, inner: int, outer: int):
    """(grey image, mask, ring `inner`-`outer` px outside it), or None when the mask or the ring is empty."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    if not mask.any():
        return None
    grey = np.asarray(image, np.float64)
    grey = grey.mean(-1) if grey.ndim == 3 else grey
    ring = ndimage.binary_dilation(mask, iterations=outer) & ~ndimage.binary_dilation(mask, iterations=inner)
    return (grey, mask, ring) if ring.any() else None


def defect_contrast(image: np.ndarray, mask: np.ndarray, inner: int = 2, outer: int = 6) -> float | None:
    """Mean grey level inside `mask` minus that of the ring `inner`-`outer` px outside it (0-255
    scale, negative = darker than its surroundings); None when the mask or the ring is empty."""
    if (found := _grey_and_ring(image, mask, inner, outer)) is None:
        return None
    grey, mask, ring = found
    return float(grey[mask].mean() - grey[ring].mean())


def defect_texture_change(image: np.ndarray, mask: np.ndarray, inner: int = 2, outer: int = 6) -> float | None:
    """log(std of grey inside `mask` / std in the ring `inner`-`outer` px outside it): 0 when the
    inside has the texture energy of its surroundings, < 0 smoother (a stain, a missing yarn), > 0
    rougher (a knot, a nep); None when the mask or the ring is empty. A 1-level floor on both
    stds keeps a flat region from giving an infinite ratio."""
    if (found := _grey_and_ring(image, mask, inner, outer)) is None:
        return None
    grey, mask, ring = found
    return float(np.log(max(grey[mask].std(), 1.0) / max(grey[ring].std(), 1.0)))
