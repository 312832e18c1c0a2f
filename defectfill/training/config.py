"""`DefectFillTrainConfig`: every setting of a DefectFill training run, in one typed place.

Field names are the flags of diffusers' training examples (`pretrained_model_name_or_path`,
`output_dir`, `resolution`, `train_batch_size`, ...), so `--config file.yaml` and command-line
flags set the same fields: `add_arguments(parser)` builds one flag per field from the dataclass
(help text in each field's metadata), `config_from_args(args)` reads the YAML file (unknown keys
rejected by `defectfill.config.load_config`) and lets the flags that were given win.

Defaults marked "unverified" come from public re-implementations of DefectFill that agree with
each other; the paper's implementation section could not be read (see configs/defectfill_sd2.yaml).
"""

# ruff: noqa: RUF009  (`_f` wraps dataclasses.field with help metadata)
from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from defectfill.config import from_dict, load_config
from defectfill.errors import ConfigError
from defectfill.models.components import SD2_INPAINT_ID

TRAINING_CROPS = ("generation", "whole_image")


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class DefectFillTrainConfig:
    # --- model ---
    pretrained_model_name_or_path: str = _f(
        SD2_INPAINT_ID, "diffusers inpainting model (hub id or local folder): UNet with 9 input channels")
    revision: str | None = _f(None, "revision of the base model on the Hub")
    variant: str | None = _f(None, "weight variant of the base model (e.g. fp16)")
    # --- data ---
    train_data_dir: str = _f("", "dataset with a few defect images + masks per type (MVTec-AD, image+mask folder, ...)")
    dataset_layout: str = _f("auto", "layout of train_data_dir: auto, mvtec, folder, coco, yolo, aitex")
    folder_defect_type: str = _f(
        "", "defect type of an image+mask folder without defects.json (unset: 'defect', with a warning)")
    defect_types: list[str] = _f([], "defect types to learn (empty: every type in the dataset)")
    concept_tokens: dict[str, str] = _f({}, "defect type -> token (default '<type>'), e.g. stain=<stain>")
    initializer_words: dict[str, str] = _f({}, "defect type -> word seeding its token (default: type name if one token, else 'defect')")
    object_word: str = _f("fabric", "the object in the object prompt 'A [object] with [V*]'")
    defect_prompt: str = _f("A photo of {token}", "prompt of the defect loss ({token} = the concept token)")
    object_prompt: str = _f("A {object} with {token}", "prompt of the object loss")
    resolution: int = _f(512, "training image size (square crops); smaller images are refused")
    training_crops: str = _f(
        "generation",
        "what a training example is cut from: 'generation' = each defect's window as `generate` paints it, at "
        "the size it paints at (any image size, line-scan strips included); 'whole_image' = the whole image "
        "resized so its short side is `resolution` (the behaviour before: a 4096x256 strip is shrunk 4x at "
        "resolution 64 while generate paints at its own scale)")
    window_zoom: float = _f(
        1.0, "generation windows of at least resolution/zoom image px, enlarged zoom times (training_crops: "
        "generation): for defects smaller than a latent cell at the image's scale; recorded in the model, "
        "so `generate` paints with the same zoom")
    center_crop: bool = _f(False, "centre crop instead of a random crop after the random resize")
    random_flip: bool = _f(True, "random horizontal flip")
    scale_min: float = _f(1.0, "random resize factor range (min), relative to `resolution`")
    scale_max: float = _f(1.125, "random resize factor range (max); unverified: public re-implementations")
    num_random_boxes: int = _f(30, "boxes in the object loss's random inpainting mask M_rand; unverified")
    box_min_fraction: float = _f(0.03, "smallest box side as a fraction of the image side; unverified")
    box_max_fraction: float = _f(0.25, "largest box side as a fraction of the image side; unverified")
    # --- losses ---
    lambda_defect: float = _f(0.5, "weight of the defect loss; unverified")
    lambda_object: float = _f(0.2, "weight of the object loss; unverified")
    lambda_attention: float = _f(0.05, "weight of the attention loss (0 disables the capture); unverified")
    object_alpha: float = _f(0.3, "alpha in M' = M + alpha (1 - M) of the object loss; unverified")
    # --- LoRA and token ---
    rank: int = _f(8, "LoRA rank; unverified")
    lora_alpha: int = _f(16, "LoRA alpha; unverified (public re-implementations: 8 or 16)")
    lora_dropout: float = _f(0.0, "LoRA dropout")
    unet_lora_targets: list[str] = _f(["to_q", "to_k", "to_v", "to_out.0"], "UNet modules given LoRA")
    train_text_encoder: bool = _f(True, "also train LoRA on the text encoder")
    text_encoder_lora_targets: list[str] = _f(["q_proj", "k_proj", "v_proj", "out_proj"], "text-encoder modules given LoRA")
    # --- optimisation ---
    learning_rate: float = _f(2e-4, "learning rate of the UNet LoRA; unverified")
    text_encoder_lr: float = _f(4e-5, "learning rate of the text-encoder LoRA; unverified")
    embedding_lr: float = _f(5e-4, "learning rate of the concept-token embeddings (our choice, as diffusers' textual inversion)")
    lr_scheduler: str = _f("constant_with_warmup", "diffusers.optimization scheduler name")
    lr_warmup_steps: int = _f(100, "warm-up steps; unverified")
    adam_beta1: float = _f(0.9, "Adam beta1")
    adam_beta2: float = _f(0.999, "Adam beta2")
    adam_weight_decay: float = _f(1e-2, "AdamW weight decay")
    adam_epsilon: float = _f(1e-8, "Adam epsilon")
    max_grad_norm: float = _f(1.0, "gradient clipping norm")
    use_8bit_adam: bool = _f(False, "bitsandbytes AdamW8bit (needs bitsandbytes)")
    train_batch_size: int = _f(4, "images per process per step; unverified")
    gradient_accumulation_steps: int = _f(1, "micro-batches per optimiser step")
    gradient_checkpointing: bool = _f(False, "trade compute for memory in the UNet (and text encoder)")
    max_train_steps: int = _f(2000, "optimiser steps; unverified")
    mixed_precision: str | None = _f(None, "no, fp16 or bf16 (None: accelerate's config)")
    cpu: bool = _f(False, "force the CPU (also for `accelerate launch --multi_gpu` on a machine without GPU)")
    seed: int = _f(0, "one seed for everything: data order, augmentation, boxes, noise, timesteps")
    dataloader_num_workers: int = _f(0, "data loader worker processes")
    # --- outputs, checkpoints, logs ---
    output_dir: str = _f("defectfill-model", "where the trained concepts, checkpoints and logs go")
    checkpointing_steps: int = _f(500, "save an accelerate checkpoint every N steps")
    checkpoints_total_limit: int | None = _f(None, "keep at most this many checkpoints")
    resume_from_checkpoint: str | None = _f(None, "'latest' or a checkpoint-<step> folder to resume from")
    report_to: str = _f("tensorboard", "tracker: tensorboard or none")
    logging_dir: str = _f("logs", "TensorBoard folder, relative to output_dir")
    validation_steps: int = _f(100, "log a sample grid every N steps (0: never)")
    num_validation_images: int = _f(4, "inpainted samples in the grid")
    validation_inference_steps: int = _f(25, "DDIM steps of the sample grid")
    guidance_scale: float = _f(7.5, "classifier-free guidance of the sample grid")

    def validate(self) -> DefectFillTrainConfig:
        problems = []
        if self.resolution < 8 or self.resolution % 8:
            problems.append(f"resolution must be a positive multiple of 8, found {self.resolution}")
        for name in ("train_batch_size", "gradient_accumulation_steps", "max_train_steps", "rank",
                     "checkpointing_steps"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, found {getattr(self, name)}")
        if not 0.0 <= self.object_alpha <= 1.0:
            problems.append(f"object_alpha must lie in [0, 1], found {self.object_alpha}")
        if not 0.0 < self.box_min_fraction <= self.box_max_fraction <= 1.0:
            problems.append(
                f"need 0 < box_min_fraction <= box_max_fraction <= 1, found {self.box_min_fraction}, "
                f"{self.box_max_fraction}")
        if not 0.0 < self.scale_min <= self.scale_max or self.scale_min < 1.0:
            problems.append(f"need 1 <= scale_min <= scale_max, found {self.scale_min}, {self.scale_max}")
        if not self.window_zoom >= 1.0:
            problems.append(f"window_zoom must be >= 1 (1: the image's own scale), found {self.window_zoom}")
        elif self.window_zoom != 1.0 and self.training_crops != "generation":
            problems.append(f"window_zoom {self.window_zoom} needs training_crops: generation (the windows it "
                            f"enlarges), found {self.training_crops!r}")
        if self.training_crops not in TRAINING_CROPS:
            problems.append(f"training_crops must be one of {list(TRAINING_CROPS)}, found {self.training_crops!r}")
        if self.mixed_precision not in (None, "no", "fp16", "bf16"):
            problems.append(f"mixed_precision must be no, fp16 or bf16, found {self.mixed_precision!r}")
        if self.report_to not in ("tensorboard", "none"):
            problems.append(f"report_to must be tensorboard or none, found {self.report_to!r}")
        for name in ("defect_prompt", "object_prompt"):
            if "{token}" not in getattr(self, name):
                problems.append(f"{name} must contain '{{token}}', found {getattr(self, name)!r}")
        if min(self.lambda_defect, self.lambda_object, self.lambda_attention) < 0:
            problems.append("loss weights lambda_* must be >= 0")
        if problems:
            raise ConfigError("DefectFillTrainConfig: " + "; ".join(problems))
        return self


FIELDS = {f.name: f for f in dataclasses.fields(DefectFillTrainConfig)}


def _parse_mapping(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"expected key=value, found {item!r}")
        key, value = item.split("=", 1)
        out[key] = value
    return out


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """One flag per config field (default None = "not given", so the YAML value stays)."""
    parser.add_argument("--config", type=str, default=None, help="YAML file setting any of the fields below")
    hints = typing.get_type_hints(DefectFillTrainConfig)
    for name, f in FIELDS.items():
        tp = hints[name]
        args = typing.get_args(tp)
        base = next((a for a in args if a is not type(None)), tp) if args and type(None) in args else tp
        origin = typing.get_origin(base)
        help_text = f"{f.metadata.get('help', '')} (default: {f.default if f.default is not dataclasses.MISSING else f.default_factory()})"
        flag = f"--{name}"
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif origin is list:
            parser.add_argument(flag, nargs="*", default=None, help=help_text)
        elif origin is dict:
            parser.add_argument(flag, nargs="*", default=None, metavar="KEY=VALUE", help=help_text)
        elif base in (int, float):
            parser.add_argument(flag, type=base, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=str, default=None, help=help_text)
    return parser


def config_from_args(args: argparse.Namespace) -> DefectFillTrainConfig:
    """YAML (if `--config`) + the flags that were given -> validated config."""
    data: dict[str, Any] = {}
    given = {name: getattr(args, name) for name in FIELDS if getattr(args, name, None) is not None}
    for name, value in given.items():
        if typing.get_origin(typing.get_type_hints(DefectFillTrainConfig)[name]) is dict:
            try:
                value = _parse_mapping(value)
            except argparse.ArgumentTypeError as exc:
                raise ConfigError(f"--{name}: {exc}") from exc
        data[name] = value
    if getattr(args, "config", None):
        config = load_config(DefectFillTrainConfig, Path(args.config), overrides=data)
    else:
        config = from_dict(DefectFillTrainConfig, data, where="arguments")
    return config.validate()


def load_train_config(path: str | Path, **overrides: Any) -> DefectFillTrainConfig:
    """Read a YAML config (unknown keys rejected, listing the valid ones); keyword overrides win."""
    return load_config(DefectFillTrainConfig, Path(path), overrides=overrides).validate()
