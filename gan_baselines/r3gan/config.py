"""R3GAN configs (configs/r3gan_tiny.yaml for CPU, configs/r3gan_gpu.yaml): typed, unknown keys rejected.

`R3GANModelConfig` is the architecture (stored in the model's config.json); `R3GANConfig` adds the
training: RpGAN + γ/2·(R1 + R2) with every schedule a cosine in images seen (see
`gan_baselines.training.cosine_schedule`). The paper's schedules run over 2e7 images; here
`schedule_images` is scaled to the budget (a few thousand CPU steps would otherwise never leave the
start of the schedule). γ is data dependent (FFHQ-64: 2 → 0.2): sweep it at other sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from defectfill.errors import ConfigError


@dataclass
class R3GANModelConfig:
    """ResNet G (a U-Net of residual stages, conditioned on the good window, the mask, the defect type
    and noise) and ResNet D (projection on the defect type)."""

    resolution: int = 64
    channels: list[int] = field(default_factory=lambda: [32, 64, 64, 128])  # per stage, full res first
    blocks_per_stage: int = 2
    expansion: int = 2
    channels_per_group: int = 16
    noise_dim: int = 64
    embed_dim: int = 64
    defect_types: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.resolution % 2 ** (len(self.channels) - 1) or self.resolution // 2 ** (len(self.channels) - 1) < 4:
            raise ConfigError(f"model.resolution {self.resolution}: must be divisible by 2^(stages-1) = "
                              f"{2 ** (len(self.channels) - 1)} and leave >= 4 px at the lowest stage; "
                              "change resolution or the number of channels entries")
        for c in self.channels:
            if (c * self.expansion) % self.channels_per_group:
                raise ConfigError(f"model.channels: {c}·expansion {self.expansion} is not a multiple of "
                                  f"channels_per_group {self.channels_per_group}; use multiples of 16")
        if self.blocks_per_stage < 1:
            raise ConfigError(f"model.blocks_per_stage: must be >= 1, found {self.blocks_per_stage}")


@dataclass
class R3GANConfig:
    model: R3GANModelConfig = field(default_factory=R3GANModelConfig)
    seed: int = 0
    num_threads: int = 1
    train_batch_size: int = 8
    max_train_steps: int = 2000
    # cosine schedules in images seen (= steps · batch), held at the final value after schedule_images
    schedule_images: int = 16000
    lr_start: float = 2e-4
    lr_end: float = 5e-5
    beta2_start: float = 0.9
    beta2_end: float = 0.99
    gamma_start: float = 2.0
    gamma_end: float = 0.2
    ema_halflife_images_start: float = 0.0
    ema_halflife_images_end: float = 500.0
    aug_p_start: float = 0.0
    aug_p_end: float = 0.4
    # R1/R2 every k D steps, scaled by k (lazy regularisation). k = 1 is R3GAN as published; k > 1 is
    # faster but voids the paper's local convergence guarantee (it holds for the penalty at every step).
    lazy_reg_every: int = 1
    checkpointing_steps: int = 500
    checkpoints_total_limit: int = 2
    validation_steps: int = 250          # sample grid + mode-collapse check (0: never)
    collapse_ratio: float = 0.05         # warn when G's diversity < this fraction of the real defects'
    report_to: Literal["tensorboard", "none"] = "tensorboard"
    device: str = "cpu"

    def __post_init__(self) -> None:
        positive = {"max_train_steps": self.max_train_steps, "schedule_images": self.schedule_images,
                    "train_batch_size": self.train_batch_size, "lr_start": self.lr_start, "lr_end": self.lr_end,
                    "lazy_reg_every": self.lazy_reg_every}
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{name}: must be positive, found {value}")
        if not (self.gamma_start > 0 and self.gamma_end > 0):
            raise ConfigError(f"gamma_start/gamma_end: γ must be positive (R1/R2 are what make RpGAN converge), "
                              f"found {self.gamma_start} / {self.gamma_end}")
        for name in ("aug_p_start", "aug_p_end"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name}: a probability in [0, 1], found {getattr(self, name)}")
        for name in ("beta2_start", "beta2_end"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name}: Adam β2 in [0, 1), found {getattr(self, name)}")
