"""Train the icpr20 defect generator from a few labelled real defects, resumable.

    accelerate launch train_scripts/train_icpr20.py --config configs/icpr20_tiny.yaml \
        --train_data_dir data/source --output_dir runs/icpr20 \
        [--resume_from_checkpoint latest] [--set max_train_steps=300]

Thin wrapper: arguments and logic live in gan_baselines.cli / gan_baselines.icpr20.
"""

from __future__ import annotations

import sys

from gan_baselines.cli import main

if __name__ == "__main__":
    sys.exit(main("icpr20"))
