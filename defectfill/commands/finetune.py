"""`defectfill finetune`: train DeepLabV3 and/or RT-DETR on an assembled dataset.

Artefacts go under --out: deeplab/ (best.safetensors + best.json, tensorboard/) and rtdetr/ (the
ultralytics run folder). A finished model is never overwritten: --if-exists error (default),
skip (keep it), or resume (keep finished models, continue an unfinished RT-DETR run).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from defectfill.downstream.config import MODELS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="assembled dataset folder (defectfill assemble)")
    parser.add_argument("--config", type=Path, required=True, help="downstream config (configs/downstream_*.yaml)")
    parser.add_argument("--out", type=Path, required=True, help="run folder (one arm)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=None,
                        help="models to train (default: the config's `models`)")
    parser.add_argument("--epochs", type=int, default=None, help="overrides both models' epochs")
    parser.add_argument("--if-exists", choices=["error", "skip", "resume"], default="error",
                        help="what to do when a model in --out is already trained")


def run(args: argparse.Namespace) -> int:
    from defectfill.downstream.arm import finetune
    from defectfill.downstream.assemble import load_assembled
    from defectfill.downstream.config import load_downstream_config
    from defectfill.locks import output_lock

    overrides = {}
    if args.models:
        overrides["models"] = args.models
    if args.epochs is not None:
        overrides.update({"deeplab.epochs": args.epochs, "rtdetr.epochs": args.epochs})
    with output_lock(args.out, command="finetune"):  # a second run on --out refuses
        config = load_downstream_config(args.config, overrides)
        dataset = load_assembled(args.data)
        records = finetune(dataset, config, args.out, if_exists=args.if_exists)
    for model, record in records.items():
        print(f"{model}: median {record.get('median_seconds_per_epoch')} s/epoch; weights {record.get('weights')}")
    print(json.dumps({m: r.get("seconds_per_epoch") for m, r in records.items()}))
    return 0
