"""The command line shared by `train_scripts/train_{multistage,r3gan,dgt,icpr20}.py` and
`defectfill train --generator multistage|r3gan|dgt|icpr20`.

    accelerate launch train_scripts/train_r3gan.py --config configs/r3gan_tiny.yaml \
        --train_data_dir data/source --output_dir runs/r3gan [--resume_from_checkpoint latest] \
        [--set train_batch_size=4]
    python train_scripts/train_dgt.py --train_data_dir data/source --good_data_dir data/target/train/good \
        --output_dir runs/dgt

`--train_data_dir` is a dataset in any layout defectfill reads (MVTec-AD: test/<type>/ +
ground_truth/<type>/); its labelled defects are the training data. DGT also paints into good
fabric: the images of `--good_data_dir`, else the good images of `--train_data_dir` (train/good). The trained model lands in `<output_dir>/model` (config.json +
model.safetensors, `from_pretrained`-loadable); checkpoints in `<output_dir>/checkpoints`,
TensorBoard logs in `<output_dir>/logs`, sample grids in `<output_dir>/samples`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

METHODS = {
    "r3gan": ("gan_baselines.r3gan.config:R3GANConfig", "gan_baselines.r3gan.train:R3GANTrainer", "configs/r3gan_tiny.yaml"),
    "multistage": ("gan_baselines.multistage.config:MultistageConfig", "gan_baselines.multistage.train:MultistageTrainer",
                   "configs/multistage_tiny.yaml"),
    "dgt": ("gan_baselines.dgt.config:DGTConfig", "gan_baselines.dgt.train:DGTTrainer", "configs/dgt_tiny.yaml"),
    "icpr20": ("gan_baselines.icpr20.config:ICPR20Config", "gan_baselines.icpr20.train:ICPR20Trainer",
               "configs/icpr20_tiny.yaml"),
}


def import_object(spec: str):
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def add_arguments(parser: argparse.ArgumentParser, method: str) -> None:
    from defectfill.config import add_set_argument

    parser.add_argument("--config", default=METHODS[method][2], help="YAML config (default: %(default)s)")
    parser.add_argument("--train_data_dir", required=True, help="dataset (MVTec-AD, ...) with the labelled real defects")
    parser.add_argument("--good_data_dir", default=None,
                        help="folder of good fabric images (DGT paints into them; default: the good images of "
                             "--train_data_dir)")
    parser.add_argument("--output_dir", required=True, help="where the model, checkpoints, logs and samples go")
    parser.add_argument("--resume_from_checkpoint", default=None,
                        help="'latest' or a checkpoint folder <output_dir>/checkpoints/step-NNNNNN")
    parser.add_argument("--seed", type=int, default=None, help="overrides the config's seed")
    add_set_argument(parser, "train_batch_size=4")


def run(args: argparse.Namespace, method: str) -> int:
    from defectfill.config import load_config, parse_overrides, save_config
    from defectfill.data.readers import read_dataset, read_good_images
    from defectfill.errors import ConfigError
    from defectfill.locks import output_lock

    for flag in ("train_data_dir", "output_dir"):
        if not getattr(args, flag):
            raise ConfigError(f"--{flag}: required to train {method}; pass a folder")
    config_cls, trainer_cls = import_object(METHODS[method][0]), import_object(METHODS[method][1])
    overrides = parse_overrides(args.overrides)
    if args.seed is not None:
        overrides["seed"] = args.seed
    config = load_config(config_cls, args.config, overrides)
    with output_lock(args.output_dir, command=f"train {method}"):  # a second run on --output_dir refuses
        samples = read_dataset(args.train_data_dir)  # defects and goods; each trainer takes what it uses
        if getattr(args, "good_data_dir", None):
            samples = [s for s in samples if not s.is_good] + read_good_images(args.good_data_dir)
        trainer = trainer_cls(config, samples, args.output_dir, args.resume_from_checkpoint)
        save_config(config, Path(args.output_dir) / "train_config.yaml")
        model_dir = trainer.train()
    print(f"{method}: trained model written to {model_dir} ({trainer.cpu_seconds / 60:.1f} CPU-minutes this run)")
    return 0


def main(method: str, argv: list[str] | None = None) -> int:
    import sys

    from defectfill.errors import DefectfillError

    parser = argparse.ArgumentParser(description=f"Train the {method} defect generator (gan_baselines.{method}).")
    add_arguments(parser, method)
    args = parser.parse_args(argv)
    try:
        return run(args, method)
    except DefectfillError as exc:
        print(f"train_{method}: error: {exc}", file=sys.stderr)
        return 1
