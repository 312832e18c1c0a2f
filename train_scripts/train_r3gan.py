"""Train the r3gan defect generator from a few labelled real defects, resumable.

    accelerate launch train_scripts/train_r3gan.py --config configs/r3gan_tiny.yaml \
        --train_data_dir data/source --output_dir runs/r3gan [--resume_from_checkpoint latest]

Thin wrapper: arguments and logic live in gan_baselines.cli / gan_baselines.r3gan.
"""

from __future__ import annotations

import sys

from gan_baselines.cli import main

if __name__ == "__main__":
    sys.exit(main("r3gan"))
