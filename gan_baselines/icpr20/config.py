"""Typed config of the ICPR'20 conditional pix2pix (`configs/icpr20_tiny.yaml`); defaults live here only."""

from __future__ import annotations

from dataclasses import dataclass, field

from defectfill.errors import ConfigError
from gan_baselines.training import FewShotTrainConfig


@dataclass
class ICPR20ModelConfig:
    """The architecture (stored in the model's config.json); `defect_types` is filled from the data."""

    resolution: int = 64            # window side (multiple of 2**depth)
    base_channels: int = 16
    depth: int = 3                  # U-Net stages
    discriminator_channels: int = 16
    defect_types: list[str] = field(default_factory=list)  # [] = every type found in the training data

    def __post_init__(self) -> None:
        if self.resolution % 2 ** self.depth:
            raise ConfigError(f"model.resolution {self.resolution}: must be a multiple of 2**depth = "
                              f"{2 ** self.depth}; change resolution or depth")


@dataclass
class ICPR20Config(FewShotTrainConfig):
    """Training fields: `FewShotTrainConfig` (the loop is `GanTrainer`'s)."""

    model: ICPR20ModelConfig = field(default_factory=ICPR20ModelConfig)
    l1_weight: float = 10.0         # λ_L1 (our choice; pix2pix uses 100 with an image-wide mean)
    augment: bool = True            # random flips of each (input, target) pair
