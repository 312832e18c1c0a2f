"""A small U-Net segmenter (Ronneberger et al., MICCAI 2015) that learns from random init on a CPU.

    level l = 0..depth-1: two 3x3 conv-BN-ReLU at width w_l = base_width * 2**l (max-pool 2 between)
    decoder: bilinear 2x up, concat the skip of the same level, two 3x3 conv-BN-ReLU at w_l
    head:    1x1 conv to the class logits, at the input resolution

Full-resolution skips keep small, thin defects (stains of a few pixels, broken yarn one thread wide)
that DeepLabV3's output stride 8-16 blurs away. depth 4, base width 16: 0.47 M parameters.
`forward` returns {"out": logits} like torchvision's segmentation models, so training, prediction and
strip stitching treat both the same. Input sides must be multiples of 2**(depth-1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """image (B, 3, H, W), ImageNet-normalised -> {"out": logits (B, num_classes, H, W)}."""

    def __init__(self, num_classes: int, depth: int = 4, base_width: int = 16):
        super().__init__()
        widths = [base_width * 2**level for level in range(depth)]
        self.down = nn.ModuleList(_block(c_in, c_out) for c_in, c_out in zip([3, *widths[:-1]], widths))
        self.up = nn.ModuleList(_block(widths[level + 1] + widths[level], widths[level]) for level in range(depth - 1))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.multiple = 2 ** (depth - 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.shape[-1] % self.multiple or x.shape[-2] % self.multiple:
            raise ValueError(f"U-Net input sides must be multiples of {self.multiple}, found {tuple(x.shape[-2:])}")
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for block in reversed(self.up):
            skip = skips.pop()
            x = block(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1))
        return {"out": self.head(x)}
