"""Typed configs of the downstream stage (assembly, RT-DETR, DeepLabV3, evaluation).

`load_downstream_config(path)` reads configs/downstream_*.yaml; model files named by a relative
path (the RT-DETR model yaml, a local backbone file) are resolved against the YAML's folder first,
so `rtdetr.model: rtdetr_small.yaml` finds configs/rtdetr_small.yaml from any working directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from defectfill.config import load_config
from defectfill.errors import ConfigError


@dataclass
class AssembleConfig:
    """How real and synthetic data are combined.

    val_fraction: share of the *real* images held out for model selection (0: validate on the
        training images, the only choice with a handful of real images).
    max_synthetic_per_class: cap on synthetic images per class (None: use all).
    """

    val_fraction: float = 0.0
    max_synthetic_per_class: int | None = None
    include_good: bool = True  # real good images go in as background-only images
    # box labels from a mask (`defectfill.masks.label_boxes`), for training and for the test set's
    # ground truth alike: component (one per connected component), instance (components within
    # instance_gap_px merged) or split (components longer than split_max_aspect x their width cut)
    boxes: Literal["component", "instance", "split"] = "component"
    instance_gap_px: int = 8
    split_max_aspect: float = 4.0

    def label_boxes(self, mask):
        from defectfill.masks import label_boxes

        return label_boxes(mask, self.boxes, instance_gap=self.instance_gap_px, max_aspect=self.split_max_aspect)


@dataclass
class RTDETRConfig:
    """RT-DETR through ultralytics. `model`: a model yaml (random init) or a .pt to fine-tune."""

    model: str = "rtdetr_small.yaml"
    epochs: int = 10
    batch: int = 8
    imgsz: int = 128
    optimizer: str = "AdamW"
    lr0: float = 0.0005
    val_every_epoch: bool = False  # False: ultralytics validates only after the last epoch
    device: str = "cpu"
    amp: bool = False  # "AMP training can lead to NaN outputs" (ultralytics RT-DETR trainer note)
    workers: int = 0
    predict_conf: float = 0.001  # low, so that mAP sees the whole precision-recall curve
    train_overrides: dict[str, Any] = field(default_factory=dict)  # any other ultralytics train arg


@dataclass
class DeepLabConfig:
    """The pixel segmenter (section `deeplab`, results key `deeplab`): DeepLabV3 through torchvision
    or a small U-Net (`defectfill.downstream.unet`), random init unless `backbone_weights` or
    `init_weights` name a local file.

    arch: `unet` learns from random init on a CPU in minutes (the CPU default); DeepLabV3
        (`mobilenet_v3_large`, `resnet50` at output stride 8 as in the multistage-GAN paper) is the
        GPU configuration with ImageNet weights.
    loss: `ce` class-weighted cross-entropy; `ce_dice` adds 1 - soft Dice over the defect classes.
    background_weight / defect_weight: the cross-entropy class weights (paper: 1 / 9).
    warmup_steps: linear warm-up of the learning rate, then "poly" decay to 0.
    init_weights: a segmenter checkpoint (safetensors of the same arch, e.g. simulator-pretrained);
        tensors whose shape differs (the class head) keep their random init.
    """

    arch: Literal["unet", "mobilenet_v3_large", "resnet50"] = "mobilenet_v3_large"
    backbone_weights: str | None = None
    init_weights: str | None = None
    output_stride: Literal[8, 16] = 8  # resnet50 only; 8 as in the multistage-GAN paper
    unet_depth: int = 4
    unet_base_width: int = 16
    epochs: int = 10
    batch_size: int = 8
    image_size: int = 128
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = 0.001
    warmup_steps: int = 0
    momentum: float = 0.9
    weight_decay: float = 0.0001
    loss: Literal["ce", "ce_dice"] = "ce"
    background_weight: float = 1.0  # class-weighted cross-entropy: background 1, defects 9 (paper)
    defect_weight: float = 9.0
    amp: bool = True  # used on CUDA only
    device: str = "auto"
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.arch == "unet" and self.image_size % 2 ** (self.unet_depth - 1):
            raise ConfigError(
                f"deeplab.image_size {self.image_size} must be a multiple of {2 ** (self.unet_depth - 1)} for a U-Net "
                f"of depth {self.unet_depth}; change image_size or unet_depth"
            )
        if min(self.background_weight, self.defect_weight) <= 0:
            raise ConfigError(
                f"deeplab: class weights must be > 0, found background {self.background_weight}, defect {self.defect_weight}"
            )


@dataclass
class EvaluationConfig:
    score_threshold: float = 0.5  # image-level detection rate
    generation_metrics: bool = True
    feature_extractor: Literal["inception", "random_conv"] = "inception"
    kid_subsets: int = 100
    lpips_net: Literal["vgg", "alex"] = "vgg"  # the protocol's VGG; alex is cheaper on CPU
    lpips_size: int = 256


@dataclass
class DownstreamConfig:
    classes: list[str]
    # deeplab: the segmenter (U-Net on CPU, DeepLabV3 on GPU); rtdetr: the box detector; segboxes: boxes
    # from the segmenter's components (no weights of its own; needs deeplab)
    models: list[Literal["deeplab", "rtdetr", "segboxes"]] = field(default_factory=lambda: ["deeplab", "rtdetr"])
    seed: int = 0
    assemble: AssembleConfig = field(default_factory=AssembleConfig)
    rtdetr: RTDETRConfig = field(default_factory=RTDETRConfig)
    deeplab: DeepLabConfig = field(default_factory=DeepLabConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def __post_init__(self) -> None:
        if not self.classes:
            raise ConfigError("downstream config: `classes` is empty; list the defect types to learn")
        if len(set(self.classes)) != len(self.classes) or "good" in self.classes:
            raise ConfigError(
                f"downstream config: classes {self.classes} must be distinct defect types and not 'good'"
            )
        if "segboxes" in self.models and "deeplab" not in self.models:
            raise ConfigError("downstream config: models lists segboxes (boxes from the segmenter's components) "
                              "without deeplab (the segmenter); add deeplab to `models`")


MODELS = ("deeplab", "rtdetr", "segboxes")


def resolve_model_path(value: str, base: Path | None) -> str:
    """A relative model path: next to the config file if it exists there, else as given."""
    path = Path(value)
    if not path.is_absolute() and base is not None and (base / path).exists():
        return str((base / path).resolve())
    return str(path.resolve()) if path.exists() else value


def load_downstream_config(path: str | Path, overrides: dict[str, Any] | None = None) -> DownstreamConfig:
    path = Path(path)
    config = load_config(DownstreamConfig, path, overrides)
    config.rtdetr.model = resolve_model_path(config.rtdetr.model, path.parent)
    if config.deeplab.backbone_weights:
        config.deeplab.backbone_weights = resolve_model_path(config.deeplab.backbone_weights, path.parent)
    return config
