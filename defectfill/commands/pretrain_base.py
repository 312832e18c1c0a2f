"""`defectfill pretrain-base`: train, continue, export or evaluate the small offline base model.

    defectfill pretrain-base --config configs/base_tiny.yaml --output_dir runs/base [--max_minutes 60]
    defectfill pretrain-base --config configs/base_tiny.yaml --output_dir runs/base --resume_from_checkpoint latest
    defectfill pretrain-base --config configs/base_tiny.yaml --output_dir runs/base --export_to assets/base-fabric-inpaint
        [--unet_checkpoint runs/other/checkpoints/unet-006000]
    defectfill pretrain-base --config configs/base_tiny.yaml --output_dir runs/base/leg --set unet.max_train_steps=0 \
        --set vae.init_from=runs/base/prev/vae --set vae.train_decoder_only=true   # a decoder-only VAE leg
    defectfill pretrain-base --config configs/base_tiny.yaml --evaluate assets/base-fabric-inpaint --output_dir runs/base-eval

Training runs the VAE stage, then the inpainting UNet stage, and saves a
`StableDiffusionInpaintPipeline` folder to <output_dir>/pipeline (see defectfill.pretrain.train).
`accelerate launch train_scripts/pretrain_base.py ...` takes the same arguments.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from defectfill.config import add_set_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="pretraining config (configs/base_*.yaml)")
    parser.add_argument("--output_dir", type=Path, required=True,
                        help="run folder (checkpoints/, vae/, pipeline/, logs/); with --evaluate: where results go")
    parser.add_argument("--resume_from_checkpoint", default=None,
                        help="'latest' or a checkpoints/<stage>-<step> folder: continue that run")
    parser.add_argument("--max_minutes", type=float, default=None,
                        help="stop cleanly (with a checkpoint) after this many minutes; continue with --resume")
    parser.add_argument("--seed", type=int, default=None, help="overrides the config's seed")
    parser.add_argument("--real_dir", default=None, help="overrides data.real_dir (real fabric: images/ + annotations/)")
    add_set_argument(parser, "vae.init_from=runs/base/run5/vae")
    parser.add_argument("--export_to", type=Path, default=None,
                        help="copy the trained pipeline (or the newest UNet checkpoint's) to this folder and stop")
    parser.add_argument("--unet_checkpoint", type=Path, default=None,
                        help="with --export_to: this UNet checkpoint folder (e.g. another run's, trained on the "
                             "same latents) instead of output_dir's newest")
    parser.add_argument("--evaluate", type=Path, default=None, metavar="PIPELINE_DIR",
                        help="evaluate this pipeline folder on held-out data instead of training")
    parser.add_argument("--num_eval", type=int, default=64, help="held-out windows per evaluation set")
    parser.add_argument("--eval_guidance_scale", type=float, default=4.0,
                        help="classifier-free guidance of the evaluation's inpainting (1 = none)")
    parser.add_argument("--num_threads", type=int, default=None,
                        help="torch CPU threads; on a shared, busy CPU 1 is several times faster than 2")


def load(args: argparse.Namespace):
    from defectfill.config import load_config, parse_overrides
    from defectfill.pretrain.config import PretrainConfig

    overrides = parse_overrides(args.overrides)
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.real_dir is not None:
        overrides["data.real_dir"] = args.real_dir
    return load_config(PretrainConfig, args.config, overrides=overrides)


def run(args: argparse.Namespace) -> int:
    cfg = load(args)
    if args.num_threads is not None:
        import torch

        torch.set_num_threads(args.num_threads)
    if args.evaluate is not None:
        from defectfill.pretrain.evaluate import evaluate_pipeline

        results = evaluate_pipeline(cfg, args.evaluate, args.output_dir, n=args.num_eval,
                                    guidance_scale=args.eval_guidance_scale)
        print(json.dumps(results, indent=1))
        return 0
    if args.export_to is not None:
        from defectfill.pretrain.train import export_from_checkpoint, export_latest

        if args.unet_checkpoint is not None:
            path = export_from_checkpoint(cfg, args.output_dir, args.unet_checkpoint, args.export_to)
        else:
            path = export_latest(cfg, args.output_dir, args.export_to)
        print(f"exported {path}")
        return 0
    from defectfill.locks import output_lock
    from defectfill.pretrain.train import run_pretraining

    with output_lock(args.output_dir, command="pretrain-base"):
        summary = run_pretraining(cfg, args.output_dir, resume=args.resume_from_checkpoint,
                                  max_minutes=args.max_minutes)
    print(json.dumps(summary, indent=1))
    return 0
