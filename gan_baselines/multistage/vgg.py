"""Fixed VGG19 features and the Gram matrix of the multistage GAN's texture condition.

    Gφ = ψψᵀ / (C·H·W),   ψ = the C × (H·W) reshaped feature map of one VGG19 layer

(Gatys et al.'s texture statistic; the multistage GAN conditions its stage-1 generator on it). With
`valid` (a mask of feature positions), the sum runs over the valid positions only and H·W becomes
their count: the Gram of the defect-free part of a window that contains a defect.

Weights: `imagenet` (torchvision's VGG19 ImageNet weights, read from the torch cache only; this
project never downloads them) or `random` (a seeded random init: random conv features still capture
texture statistics). The choice is in the config and named in every result, never swapped silently.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from defectfill.errors import ConfigError, DataError, ModelError

IMAGENET_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's VGG19_Weights.IMAGENET1K_V1
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def _layer_table() -> list[tuple[str, str, int, int]]:
    """(name, kind, kernel, stride) of torchvision's vgg19().features, named relu{block}_{index}."""
    table, block, conv = [], 1, 0
    kinds = ["conv", "relu"] * 2 + ["pool"] + ["conv", "relu"] * 2 + ["pool"] + (["conv", "relu"] * 4 + ["pool"]) * 3
    for kind in kinds:
        if kind == "conv":
            conv += 1
            table.append((f"conv{block}_{conv}", kind, 3, 1))
        elif kind == "relu":
            table.append((f"relu{block}_{conv}", kind, 1, 1))
        else:
            table.append((f"pool{block}", kind, 2, 2))
            block, conv = block + 1, 0
    return table


VGG19_LAYERS = _layer_table()
LAYER_INDEX = {name: i for i, (name, *_) in enumerate(VGG19_LAYERS)}


def check_layers(layers: list[str], argument: str) -> None:
    unknown = [name for name in layers if not name.startswith("relu") or name not in LAYER_INDEX]
    if unknown or not layers:
        valid = [n for n in LAYER_INDEX if n.startswith("relu")]
        raise ConfigError(f"{argument}: unknown VGG19 layer(s) {unknown or layers}; valid ones are {valid}")


def receptive_field(layer: str) -> int:
    """Receptive field in input pixels of one unit of VGG19 layer `layer` (relu4_1: 68 px)."""
    field, jump = 1, 1
    for name, _, kernel, stride in VGG19_LAYERS[: LAYER_INDEX[layer] + 1]:
        field += (kernel - 1) * jump
        jump *= stride
    return field


def gram_matrix(features: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Gφ = ψψᵀ / (C·N): features (B, C, H, W) -> (B, C, C); N = H·W, or the number of positions
    where `valid` (B, 1, H, W) in {0, 1} is 1 (then only those positions enter ψ)."""
    b, c, h, w = features.shape
    psi = features.reshape(b, c, h * w)
    if valid is None:
        return psi @ psi.transpose(1, 2) / (c * h * w)
    weight = valid.reshape(b, 1, h * w).to(psi)
    count = weight.sum(dim=2, keepdim=True).clamp_min(1.0)
    return (psi * weight) @ psi.transpose(1, 2) / (c * count)


class VGGFeatures(nn.Module):
    """Frozen VGG19 up to the deepest layer asked for; `forward(x in [-1, 1])` -> {layer: features}."""

    def __init__(self, layers: list[str]):
        super().__init__()
        self.layers = sorted(set(layers), key=LAYER_INDEX.__getitem__)
        deepest = LAYER_INDEX[self.layers[-1]]
        # torchvision's vgg19().features, same indices (so its state dict loads), built only as deep as needed
        modules, channels = [], 3
        for name, kind, *_ in VGG19_LAYERS[: deepest + 1]:
            if kind == "conv":
                width = 64 * 2 ** min(3, int(name[4]) - 1)
                modules.append(nn.Conv2d(channels, width, 3, padding=1))
                channels = width
            else:
                modules.append(nn.ReLU() if kind == "relu" else nn.MaxPool2d(2, 2))
        self.body = nn.Sequential(*modules)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)

    @property
    def receptive_field(self) -> int:
        return receptive_field(self.layers[-1])

    def load_weights(self, kind: str, seed: int = 0) -> str:
        """Set the weights: 'imagenet' from the torch cache (ModelError when it is not there) or
        'random' (seeded). Returns the name to put in results."""
        if kind == "random":
            generator = torch.Generator().manual_seed(seed)
            for module in self.body:
                if isinstance(module, nn.Conv2d):  # torchvision's VGG init, from our generator
                    fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
                    with torch.no_grad():
                        module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2 / fan_out) ** 0.5)
                        module.bias.zero_()
            return f"vgg19-random(seed={seed})"
        if kind != "imagenet":
            raise ConfigError(f"vgg_weights: {kind!r} is not one of ['imagenet', 'random']")
        path = Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILE
        if not path.is_file():
            raise ModelError(
                f"vgg_weights: imagenet asked for, but {path} is not in the torch cache (this project never downloads "
                f"it); copy torchvision's {IMAGENET_FILE} there, or set vgg_weights: random (named in every result)"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        self.body.load_state_dict({k: v for k, v in features.items() if int(k.split(".")[0]) < len(self.body)})
        return "vgg19-imagenet"

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (B, 3, H, W) in [-1, 1]; DataError when H or W is below the deepest layer's receptive field."""
        if min(x.shape[-2:]) < self.receptive_field:
            raise DataError(
                f"texture patch {x.shape[-1]}x{x.shape[-2]} px is smaller than the receptive field of VGG19 "
                f"{self.layers[-1]} ({self.receptive_field} px); use larger patches or shallower layers"
            )
        h = ((x + 1) / 2 - self.mean) / self.std
        out = {}
        for i, module in enumerate(self.body):
            h = module(h)
            name = VGG19_LAYERS[i][0]
            if name in self.layers:
                out[name] = h
        return out


def valid_positions(exclude: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 1, H, W) mask of pixels to leave out -> (B, 1, h, w) {0, 1}: feature positions none of whose
    pixels (at the feature map's stride) are left out. All-excluded maps fall back to every position."""
    covered = F.adaptive_max_pool2d(exclude.float(), size) if exclude.shape[-2:] != size else exclude.float()
    valid = 1.0 - covered
    empty = valid.flatten(1).sum(1) == 0
    return torch.where(empty.view(-1, 1, 1, 1), torch.ones_like(valid), valid)
