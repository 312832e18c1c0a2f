"""Typed config of the ICPR'20 conditional pix2pix (`configs/icpr20_tiny.yaml`); defaults live here only."""

from __future__ import annotations

from dataclasses import dataclass, field

from gan_baselines.fewshot_training import TrainingArgs


@dataclass
class ICPR20ModelConfig:
    base_channels: int = 16
    depth: int = 3                  # U-Net stages (window sides: multiples of 2**depth)
    discriminator_channels: int = 16


@dataclass
class ICPR20Config:
    model: ICPR20ModelConfig = field(default_factory=ICPR20ModelConfig)
    l1_weight: float = 10.0         # λ_L1 (our choice; pix2pix uses 100 with an image-wide mean)
    augment: bool = True            # random flips of each (input, target) pair
    train: TrainingArgs = field(default_factory=TrainingArgs)
