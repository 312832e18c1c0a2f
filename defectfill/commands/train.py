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

    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from defectfill.training import train_defectfill
    from defectfill.training.config import config_from_args

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    output_dir = train_defectfill(config_from_args(args))
    print(f"trained concepts written to {output_dir}")
    return 0
