"""Train the ICPR'20 conditional pix2pix defect generator, resumable.

    accelerate launch train_scripts/train_icpr20.py --config configs/icpr20_tiny.yaml \
        --train_data_dir data/source --good_data_dir data/target/train/good --output_dir runs/icpr20 \
        [--max_train_steps 300] [--resume_from_checkpoint latest]

Thin wrapper: the logic lives in gan_baselines.icpr20.
"""

from __future__ import annotations

import argparse
import sys

from defectfill.errors import DefectfillError
from defectfill.locks import output_lock
from gan_baselines import scripts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    scripts.add_arguments(parser, "configs/icpr20_tiny.yaml")
    args = parser.parse_args(argv)
    try:
        with output_lock(args.output_dir, command="train_icpr20"):  # a second run on --output_dir refuses
            from gan_baselines.icpr20.config import ICPR20Config
            from gan_baselines.icpr20.train import train_icpr20

            config = scripts.load_from_args(ICPR20Config, args)
            defects, good, types = scripts.read_data(args)
            train_icpr20(config, defects, good, types, args.output_dir, device=args.device)
            print(f"train_icpr20: model in {args.output_dir}/model")
        return 0
    except DefectfillError as exc:
        print(f"train_icpr20: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
