"""Train DGT + DIS + DFC and fit DFC's Weibull models, resumable.

    accelerate launch train_scripts/train_dgt.py --config configs/dgt_tiny.yaml \
        --train_data_dir data/source --good_data_dir data/target/train/good --output_dir runs/dgt \
        [--max_train_steps 300] [--resume_from_checkpoint latest] [--set loss.alpha7_cls_fake=2]

Thin wrapper: the logic lives in gan_baselines.dgt (model, losses, training, open-set layer).
"""

from __future__ import annotations

import argparse
import sys

from defectfill.errors import DefectfillError
from defectfill.locks import output_lock
from gan_baselines import scripts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    scripts.add_arguments(parser, "configs/dgt_tiny.yaml")
    args = parser.parse_args(argv)
    try:
        with output_lock(args.output_dir, command="train_dgt"):  # a second run on --output_dir refuses
            from gan_baselines.dgt.config import DGTConfig
            from gan_baselines.dgt.train import train_dgt

            config = scripts.load_from_args(DGTConfig, args)
            defects, good, types = scripts.read_data(args)
            _, openset = train_dgt(config, defects, good, types, args.output_dir, device=args.device)
            print(f"train_dgt: model and Weibulls in {args.output_dir}/model (unknown threshold {openset.threshold:.3f})")
        return 0
    except DefectfillError as exc:
        print(f"train_dgt: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
