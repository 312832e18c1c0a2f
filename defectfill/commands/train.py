"""`defectfill train`: learn DefectFill concepts (one token + LoRA per defect type) from a few defects.

    defectfill train --config configs/defectfill_tiny.yaml --train_data_dir data/fabric --output_dir out/df

Same flags as `train_scripts/train_defectfill.py` (diffusers' names) and the same library call,
`defectfill.training.train_defectfill`. For several processes use the script with
`accelerate launch`.
"""

from __future__ import annotations

import argparse
import logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from defectfill.training.config import add_arguments as add_config_arguments

    parser.add_argument("--generator", choices=["defectfill", "multistage", "r3gan", "dgt", "icpr20"],
                        default="defectfill",
                        help="what to train: DefectFill (default) or a GAN baseline (gan_baselines; it reads "
                             "--config, --train_data_dir, --good_data_dir (dgt), --output_dir, "
                             "--resume_from_checkpoint, --seed)")
    parser.add_argument("--good_data_dir", default=None,
                        help="GAN baselines: folder of good fabric images (dgt paints into them; default: the good "
                             "images of --train_data_dir)")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "generator", "defectfill") != "defectfill":
        from gan_baselines import cli

        gan_args = argparse.Namespace(config=args.config or cli.METHODS[args.generator][2],
                                      train_data_dir=args.train_data_dir, good_data_dir=args.good_data_dir,
                                      output_dir=args.output_dir,
                                      resume_from_checkpoint=args.resume_from_checkpoint, seed=args.seed, overrides=[])
        return cli.run(gan_args, args.generator)
    from defectfill.training import train_defectfill
    from defectfill.training.config import config_from_args

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    output_dir = train_defectfill(config_from_args(args))
    print(f"trained concepts written to {output_dir}")
    return 0
