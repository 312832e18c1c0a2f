"""Train the small offline base inpainting model (VAE, then 9-channel UNet), resumable.

    accelerate launch train_scripts/pretrain_base.py --config configs/base_tiny.yaml --output_dir runs/base \
        [--resume_from_checkpoint latest] [--max_minutes 60]

Thin wrapper: arguments and logic live in defectfill.commands.pretrain_base / defectfill.pretrain.
"""

from __future__ import annotations

import argparse
import sys

from defectfill.commands import pretrain_base
from defectfill.errors import DefectfillError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    pretrain_base.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return pretrain_base.run(args)
    except DefectfillError as exc:
        print(f"pretrain_base: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
