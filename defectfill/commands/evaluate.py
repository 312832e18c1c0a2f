"""`defectfill evaluate`: score an arm's trained models on real test images -> <run>/results.json.

Metrics: per-class pixel precision/recall/F-measure and their mean (DeepLabV3), box mAP50 and
mAP50-95 via faster_coco_eval plus image-level detection / false-alarm rates (RT-DETR), and KID /
IC-LPIPS of the synthetic crops the arm trained on (with the feature extractor named).

With `--openset-model runs/dgt/model` (a DGT model trained by `defectfill train --generator dgt`),
each connected region of the segmenter's prediction is also labelled a known type or "unknown
defect" by DGT's DFC + OpenMax and matched to the ground truth: results.json gets an "openset"
section (counts per label, closed-set accuracy on matched regions, how often a defect of a type the
model does not know is flagged unknown; `defectfill.metrics.openset`), and
`<run>/openset_regions.jsonl` one record per region.
"""

from __future__ import annotations

import argparse
import json
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
    parser.add_argument("--openset-model", type=Path, default=None,
                        help="trained DGT model folder (defectfill train --generator dgt --output_dir X: X/model): "
                             "label each segmented region a known type or 'unknown defect' (needs the deeplab model)")
    parser.add_argument("--openset-min-area", type=int, default=None,
                        help="smallest segmented region classified, px (default: the DGT model's min_region_area)")
    parser.add_argument("--openset-min-overlap", type=float, default=0.5,
                        help="a region matches a ground-truth defect when |P∩G| / min(|P|, |G|) >= this")


def run(args: argparse.Namespace) -> int:
    from defectfill.data.readers import read_mvtec
    from defectfill.downstream.arm import RESULTS_NAME, evaluate_arm
    from defectfill.downstream.assemble import load_assembled
    from defectfill.downstream.config import load_downstream_config
    from defectfill.errors import ConfigError
    from defectfill.io_utils import atomic_write_json
    from defectfill.locks import output_lock
    from defectfill.report.table import markdown_table, openset_line

    with output_lock(args.run, command="evaluate"):  # not while a finetune or another evaluate writes there
        config = load_downstream_config(args.config, {"models": args.models} if args.models else None)
        dataset = load_assembled(args.data)
        test = read_mvtec(args.test, args.test_split)
        if args.openset_model is not None and "deeplab" not in config.models:
            raise ConfigError(f"--openset-model: labels the segmenter's regions, but the models evaluated are "
                              f"{config.models}; add deeplab (--models deeplab ...)")
        results = evaluate_arm(args.name or args.run.name, dataset, args.run, test, config)
        if args.openset_model is not None:
            results["openset"] = _openset(args, test)
        atomic_write_json(args.run / RESULTS_NAME, results)
    print(markdown_table([results]))
    if "openset" in results:
        print(openset_line(results["openset"]))
    print(f"wrote {args.run / RESULTS_NAME}")
    return 0


def _openset(args: argparse.Namespace, test: list) -> dict:
    """The segmenter's predictions of `test`, labelled by the DGT model; writes openset_regions.jsonl."""
    from defectfill.downstream.deeplab import load_deeplab, predict_deeplab
    from defectfill.errors import ModelError
    from defectfill.io_utils import atomic_write_text
    from gan_baselines.dgt.evaluate import evaluate_openset

    if not (args.openset_model / "openset.json").is_file():
        raise ModelError(f"--openset-model {args.openset_model}: no openset.json (the fitted Weibulls); pass the "
                         "model folder of a finished DGT training (defectfill train --generator dgt --output_dir X: "
                         "X/model)")
    model, info = load_deeplab(args.run / "deeplab")
    predicted = predict_deeplab(model, [s.image for s in test], info["config"]["image_size"])
    summary, records = evaluate_openset(args.openset_model, test, predicted, args.openset_min_area,
                                        args.openset_min_overlap)
    atomic_write_text(args.run / "openset_regions.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    return summary
