"""Train the dgt defect generator from a few labelled real defects, resumable.

    accelerate launch train_scripts/train_dgt.py --config configs/dgt_tiny.yaml \
        --train_data_dir data/source --output_dir runs/dgt [--good_data_dir data/target/train/good] \
        [--resume_from_checkpoint latest] [--set max_train_steps=300]

Thin wrapper: arguments and logic live in gan_baselines.cli / gan_baselines.dgt.
"""

from __future__ import annotations

import sys

from gan_baselines.cli import main

if __name__ == "__main__":
    sys.exit(main("dgt"))
