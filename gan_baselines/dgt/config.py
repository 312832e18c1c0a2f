"""Typed config of DGT → DIS → DFC (`configs/dgt_tiny.yaml`); defaults live here only. The training
fields (seed, batch, steps, Adam, checkpoints, logging) are `gan_baselines.training.FewShotTrainConfig`'s,
the loop is `GanTrainer`'s.

The loss weights α1..α8 of the paper were not published: the defaults below are our choice
(reconstruction terms at 10 as pix2pix weighs its L1, every downstream term at 1), not the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from defectfill.errors import ConfigError
from gan_baselines.training import FewShotTrainConfig


@dataclass
class DGTModelConfig:
    """The architecture (stored in the model's config.json); `defect_types` is filled from the data."""

    resolution: int = 64             # window side the networks work at (multiple of 2**depth)
    base_channels: int = 8           # U-Net width of G, of DIS's reconstructor and of its segmenter
    depth: int = 3                   # U-Net stages (input sides: multiples of 2**depth)
    classifier_channels: int = 16    # DFC's CNN width
    discriminator_channels: int = 8
    kernel_sizes: tuple[int, ...] = (3, 5, 7, 9, 11)   # G(k): k drawn from these (odd) sizes
    weight_range: tuple[float, float] = (0.7, 1.0)      # w_d, w_n drawn uniformly from this range
    defect_types: list[str] = field(default_factory=list)  # [] = every type found in the training data

    def __post_init__(self) -> None:
        if self.resolution % 2 ** self.depth:
            raise ConfigError(f"model.resolution {self.resolution}: must be a multiple of 2**depth = "
                              f"{2 ** self.depth}; change resolution or depth")


@dataclass
class DGTLossWeights:
    """L_G = α1 L_fore + α2 L_back + α3 L_mix + α4 L_seg_fake + α5 L_seg_real_fore + α6 L_seg_real_back
    + α7 L_cls_fake + α8 L_cls_real (+ λ_adv L_adv + λ_rec L_rec, our additions)."""

    alpha1_fore: float = 10.0
    alpha2_back: float = 10.0
    alpha3_mix: float = 10.0
    alpha4_seg_fake: float = 1.0
    alpha5_seg_real_fore: float = 1.0
    alpha6_seg_real_back: float = 1.0
    alpha7_cls_fake: float = 1.0
    alpha8_cls_real: float = 1.0
    adversarial: float = 1.0       # the issue names an adversarial term; the transcribed sum has none
    reconstruction: float = 1.0    # DIS's reconstructor (our reading of "compares with its reconstruction")


@dataclass
class OpenMaxConfig:
    """pytorch-ood `detector.OpenMax` on DFC's logits."""

    tailsize: int = 20
    alpha: int = 1                 # top classes revised; only 1 is batch-independent in pytorch-ood 0.4
    euclid_weight: float = 1.0     # 1 = euclidean distance, 0 = cosine, between: "eucos"
    fit_on: str = "correct"        # "correct": only correctly classified samples (original OpenMax); "all"
    fakes_per_type: int = 40       # generated regions per known type added to the fit set
    heat_threshold: float = 0.5    # DIS heat map -> defect regions
    min_region_area: int = 6


@dataclass
class DGTConfig(FewShotTrainConfig):
    model: DGTModelConfig = field(default_factory=DGTModelConfig)
    loss: DGTLossWeights = field(default_factory=DGTLossWeights)
    openmax: OpenMaxConfig = field(default_factory=OpenMaxConfig)
    classifier_lr_scale: float = 5.0  # DFC learns at this multiple of learning_rate (few-step CPU runs)
