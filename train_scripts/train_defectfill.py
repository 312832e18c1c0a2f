#!/usr/bin/env python
"""Train DefectFill concepts on a few defect images (DefectFill, arXiv 2503.13985).

    accelerate launch train_scripts/train_defectfill.py --config configs/defectfill_sd2.yaml \
        --train_data_dir /data/mvtec/carpet --output_dir outputs/defectfill-carpet
    python train_scripts/train_defectfill.py --config configs/defectfill_tiny.yaml --train_data_dir DATA

Several CPU processes (no GPU): `accelerate launch --multi_gpu --num_processes 2 ... --cpu`
(`accelerate launch --num_processes 2 --cpu` silently runs one process).
Flags are diffusers' training-example names; `--config` reads a YAML file with the same fields
(flags given on the command line win). The training logic lives in `defectfill.training`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from defectfill.errors import DefectfillError
from defectfill.training import train_defectfill
from defectfill.training.config import add_arguments, config_from_args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        output_dir = train_defectfill(config_from_args(parse_args(argv)))
    except DefectfillError as exc:
        print(f"train_defectfill: error: {exc}", file=sys.stderr)
        return 1
    print(f"trained concepts written to {output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
