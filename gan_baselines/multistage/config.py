"""Multistage GAN configs (configs/multistage_tiny.yaml for CPU, configs/multistage_gpu.yaml).

`MultistageModelConfig` is the architecture (stored in the model's config.json); `MultistageConfig`
adds the training of stage 1 (texture-conditioned cGAN) then stage 2 (defect-fusing network).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from defectfill.errors import ConfigError
from gan_baselines.multistage.vgg import check_layers, receptive_field


@dataclass
class MultistageModelConfig:
    resolution: int = 64                  # window side: T works on it, the texture patch is the window
    patch_size: int = 32                  # side of the stage-1 defect patch
    vgg_weights: Literal["imagenet", "random"] = "random"
    vgg_seed: int = 0
    # Gatys' texture layers; relu4_1 sees 68 px, so 64-px windows stop at relu3_1
    gram_layers: list[str] = field(default_factory=lambda: ["relu1_1", "relu2_1", "relu3_1"])
    perceptual_layers: list[str] = field(default_factory=lambda: ["relu1_1", "relu2_1"])
    gram_rank: int = 8                    # k of the learned bilinear projection Uᵀ Gφ U (k × k per layer)
    noise_dim: int = 64
    cond_dim: int = 128
    g_channels: int = 64
    d_channels: int = 32
    unet_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    defect_types: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_layers(self.gram_layers, "model.gram_layers")
        check_layers(self.perceptual_layers, "model.perceptual_layers")
        deepest = max(self.gram_layers, key=receptive_field)
        if receptive_field(deepest) > self.resolution:
            raise ConfigError(
                f"model.gram_layers: the texture patch ({self.resolution} px window) is smaller than the receptive "
                f"field of {deepest} ({receptive_field(deepest)} px); raise model.resolution or drop {deepest}"
            )
        if self.patch_size % 8 or self.patch_size < 8 or self.patch_size > self.resolution:
            raise ConfigError(f"model.patch_size: a multiple of 8 in [8, resolution {self.resolution}], found "
                              f"{self.patch_size}")
        if self.resolution % 2 ** len(self.unet_channels):
            raise ConfigError(f"model.resolution {self.resolution}: must be divisible by 2^{len(self.unet_channels)} "
                              "(the U-Net's levels)")


@dataclass
class MultistageConfig:
    model: MultistageModelConfig = field(default_factory=MultistageModelConfig)
    seed: int = 0
    num_threads: int = 1
    train_batch_size: int = 8
    stage1_steps: int = 1000              # texture-conditioned cGAN
    stage2_steps: int = 1000              # defect-fusing network T (stage-1 G frozen)
    learning_rate: float = 2e-4
    adam_beta1: float = 0.5
    adam_beta2: float = 0.999
    hinge_margin: float = 0.05            # m of max(0, ‖y − T(x)‖₁ − m), per-pixel mean, images in [-1, 1]
    lambda_hinge: float = 10.0
    lambda_perceptual: float = 1.0
    lambda_adversarial: float = 1.0
    checkpointing_steps: int = 250
    checkpoints_total_limit: int = 2
    validation_steps: int = 250
    collapse_ratio: float = 0.05
    report_to: Literal["tensorboard", "none"] = "tensorboard"
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("stage1_steps", "stage2_steps", "train_batch_size", "learning_rate", "checkpointing_steps"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: must be positive, found {getattr(self, name)}")
        if self.hinge_margin < 0:
            raise ConfigError(f"hinge_margin: must be >= 0, found {self.hinge_margin}")

    @property
    def max_train_steps(self) -> int:
        return self.stage1_steps + self.stage2_steps
