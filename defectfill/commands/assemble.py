"""`defectfill assemble`: real data + generation manifests -> a training set with its recipe.

Writes YOLO (images/ labels/ data.yaml), COCO (coco_*.json) and class-index masks (masks/), plus
recipe.json (sources, counts per class, real:synthetic ratio, seeds) and index.jsonl.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--real", type=Path, required=True, help="real data: an MVTec-AD category folder")
    parser.add_argument("--real-split", choices=["train", "test", "all"], default="train",
                        help="which split of --real to read (default train)")
    parser.add_argument("--generated", type=Path, nargs="*", default=[], metavar="DIR",
                        help="generation folders (each with manifest.jsonl) to add")
    parser.add_argument("--config", type=Path, required=True, help="downstream config (configs/downstream_*.yaml)")
    parser.add_argument("--out", type=Path, required=True, help="new output folder")
    parser.add_argument("--seed", type=int, default=None, help="overrides the config's seed")


def run(args: argparse.Namespace) -> int:
    from defectfill.data.readers import read_mvtec
    from defectfill.downstream.assemble import assemble
    from defectfill.downstream.config import load_downstream_config
    from defectfill.locks import output_lock

    with output_lock(args.out, command="assemble"):  # a second run on --out refuses
        config = load_downstream_config(args.config)
        seed = config.seed if args.seed is None else args.seed
        real = read_mvtec(args.real, args.real_split)
        dataset = assemble(real, args.generated, args.out, config.classes, config.assemble, seed=seed)
    recipe = dataset.recipe
    print(f"assembled {args.out}: train images {recipe['train_images']} (real:synthetic {recipe['ratio_real_to_synthetic']})")
    print(json.dumps({"counts": recipe["counts"], "dropped": recipe["dropped"]}, indent=1))
    return 0
