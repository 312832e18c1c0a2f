"""What `train_scripts/train_dgt.py` and `train_scripts/train_icpr20.py` share: flags named as in
diffusers' training examples (each also settable in the YAML config, the flag wins), and reading
the few real defects + the good images."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from defectfill.config import add_set_argument, load_config, parse_overrides

FLAGS = {  # flag -> (type, help); each is the field of the config's `train` section of that name
    "resolution": (int, "window side the models work at (multiple of 2**depth)"),
    "train_batch_size": (int, "batch size"),
    "max_train_steps": (int, "training steps"),
    "learning_rate": (float, "Adam learning rate"),
    "checkpointing_steps": (int, "save a resumable checkpoint every N steps"),
    "resume_from_checkpoint": (str, "'latest' or a checkpoint folder"),
    "mixed_precision": (str, "no | fp16 | bf16 (accelerate)"),
    "seed": (int, "seed of everything random"),
}


def add_arguments(parser: argparse.ArgumentParser, default_config: str) -> None:
    parser.add_argument("--config", default=default_config, help="YAML config (typed; unknown keys rejected)")
    parser.add_argument("--train_data_dir", required=True,
                        help="the few labelled real defects: any layout defectfill reads (MVTec-AD, image/mask folders)")
    parser.add_argument("--good_data_dir", required=True, help="folder of good fabric images (what defects go into)")
    parser.add_argument("--defect_types", nargs="+", default=None, help="types to learn (default: all found)")
    parser.add_argument("--output_dir", required=True, help="checkpoints/, logs/ and the trained model/ go here")
    parser.add_argument("--device", default="cpu")
    for flag, (tp, text) in FLAGS.items():
        parser.add_argument(f"--{flag}", type=tp, default=None, help=f"{text} (overrides train.{flag})")
    add_set_argument(parser, "loss.alpha1_fore=5")


def load_from_args(cls: type, args: argparse.Namespace) -> Any:
    overrides = parse_overrides(args.overrides)
    overrides.update({f"train.{k}": getattr(args, k) for k in FLAGS if getattr(args, k) is not None})
    return load_config(cls, args.config, overrides)


def read_data(args: argparse.Namespace):
    """(defects, good images as arrays, defect types)."""
    from defectfill.data.readers import read_dataset, read_good_images
    from defectfill.errors import DataError

    defects = [s for s in read_dataset(Path(args.train_data_dir)) if not s.is_good and s.mask.any()]
    types = args.defect_types or sorted({s.defect_type for s in defects})
    missing = [t for t in types if not any(s.defect_type == t for s in defects)]
    if missing:
        raise DataError(f"--defect_types: no labelled defect of {missing} in {args.train_data_dir}")
    good = [s.image for s in read_good_images(Path(args.good_data_dir))]
    return [s for s in defects if s.defect_type in types], good, types
