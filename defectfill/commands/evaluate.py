"""`defectfill evaluate`: score an arm's trained models on real test images -> <run>/results.json.

Metrics: per-class pixel precision/recall/F-measure and their mean (DeepLabV3), box mAP50 and
mAP50-95 via faster_coco_eval plus image-level detection / false-alarm rates (RT-DETR), and KID /
IC-LPIPS of the synthetic crops the arm trained on (with the feature extractor named).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from defectfill.downstream.config import MODELS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=Path, required=True, help="the arm's run folder (defectfill finetune --out)")
    parser.add_argument("--data", type=Path, required=True, help="the assembled dataset the arm trained on")
    parser.add_argument("--test", type=Path, required=True, help="real test data: an MVTec-AD category folder")
    parser.add_argument("--test-split", choices=["train", "test", "all"], default="test")
    parser.add_argument("--config", type=Path, required=True, help="downstream config (configs/downstream_*.yaml)")
    parser.add_argument("--name", default=None, help="arm name (default: the run folder's name)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=None)


def run(args: argparse.Namespace) -> int:
    from defectfill.data.readers import read_mvtec
    from defectfill.downstream.arm import RESULTS_NAME, evaluate_arm
    from defectfill.downstream.assemble import load_assembled
    from defectfill.downstream.config import load_downstream_config
    from defectfill.io_utils import atomic_write_json
    from defectfill.locks import output_lock
    from defectfill.report.table import markdown_table

    with output_lock(args.run, command="evaluate"):  # not while a finetune or another evaluate writes there
        config = load_downstream_config(args.config, {"models": args.models} if args.models else None)
        dataset = load_assembled(args.data)
        test = read_mvtec(args.test, args.test_split)
        results = evaluate_arm(args.name or args.run.name, dataset, args.run, test, config)
        atomic_write_json(args.run / RESULTS_NAME, results)
    print(markdown_table([results]))
    print(f"wrote {args.run / RESULTS_NAME}")
    return 0
