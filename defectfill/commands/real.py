"""`defectfill real`: the real-stain bench (what the real-data run became: a bench config).

    defectfill real [--config configs/bench_real_stains.yaml] [--out runs/real-stains] [--set seeds=[0,1] ...]

The same as `defectfill bench --config configs/bench_real_stains.yaml`: the 26 real HSST stains, one
fabric split alternately by sorted stems, cut-paste and a DefectFill stain concept trained on the
training half, stains generated into every training image (its real stain kept labelled), DeepLabV3
per arm and seed, paired intervals. Any folder of image + mask pairs works the same way: copy the
config and change `data.folders.folder`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from defectfill.config import add_set_argument
from defectfill.errors import ConfigError

REAL_CONFIG = "configs/bench_real_stains.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help=f"bench YAML (default {REAL_CONFIG})")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default runs/bench-<config name>)")
    add_set_argument(parser, "seeds=[0,1]")


def run(args: argparse.Namespace) -> int:
    from defectfill.commands.bench import run_config
    from defectfill.config import parse_overrides, resolve_path

    config = args.config if args.config is not None else resolve_path(REAL_CONFIG)
    if config is None:
        raise ConfigError(f"{REAL_CONFIG} not found in the working directory or the repository; pass --config")
    return run_config(Path(config), args.out, parse_overrides(args.overrides))
