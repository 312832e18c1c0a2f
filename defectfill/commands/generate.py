"""`defectfill generate`: put defects of one type into a folder of good images.

    defectfill generate --model DIR --images DIR --defect-type stain --per-image 2 --out DIR \\
        [--num-candidates 8] [--steps 50] [--guidance 7.5] [--seed 0] \\
        [--selection-metric lpips|lpips-vgg|ms-ssim-distance] [--masks auto|real|procedural] [--real-masks DIR]

Writes images/, request_masks/, changed_masks/, manifest.jsonl and contact_sheet.png (see
`defectfill.generation`). Run it again to resume. Several processes share the work when started
with `accelerate launch --multi_gpu --num_processes N -m defectfill.cli generate ...` (on CPU too).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from defectfill.errors import DataError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="DefectFill model folder or Hub repo id")
    parser.add_argument("--base-model", default=None,
                        help="base inpainting pipeline (folder or Hub id); default: the one in defectfill.json")
    parser.add_argument("--images", required=True, type=Path, help="folder of good (defect-free) images")
    parser.add_argument("--defect-type", required=True, help="the defect type to generate (a concept of the model)")
    parser.add_argument("--per-image", type=int, default=1, help="defects generated per good image (default 1)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (resumable)")
    parser.add_argument("--num-candidates", type=int, default=8, help="candidates per mask for LFS (default 8)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    parser.add_argument("--guidance", type=float, default=7.5,
                        help="classifier-free guidance scale (default 7.5, SD-2-inpainting's; with the offline "
                             "base, check the defects' look at 1-3 too: see its README)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; item i uses seed + i (default 0)")
    parser.add_argument("--selection-metric", default="lpips",
                        help="LFS metric: lpips (needs local AlexNet weights), lpips-vgg, ms-ssim-distance (offline)")
    parser.add_argument("--masks", default="auto", choices=["auto", "real", "procedural"],
                        help="where defects go: shapes from --real-masks, procedural shapes, or real when given")
    parser.add_argument("--real-masks", type=Path, default=None,
                        help="folder of real masks of this type (or with a <defect-type>/ subfolder)")
    parser.add_argument("--allow-border", action="store_true", help="let proposed masks touch the image border")
    parser.add_argument("--device", default=None, help="torch device (default: accelerate's, i.e. cuda when present)")
    parser.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                        help="pipeline dtype (default float32)")
    parser.add_argument("--no-contact-sheet", action="store_true", help="do not write contact_sheet.png")


def run(args: argparse.Namespace) -> int:
    from defectfill.data.images import list_images
    from defectfill.generation import GenerationJob, generate_dataset, load_real_masks
    from defectfill.models.defectfill import DefectFill
    from defectfill.selection import ensure_metric_available

    if not args.images.is_dir():
        raise DataError(f"--images {args.images}: not a folder; pass the folder of good images")
    images = list_images(args.images)
    if not images:
        raise DataError(f"--images {args.images}: no images found (looked for .png/.jpg/.bmp/.tif/.webp)")
    ensure_metric_available(args.selection_metric)
    real_masks = load_real_masks(args.real_masks, args.defect_type)
    device = args.device
    if device is None:
        from defectfill.generation import accelerate_state

        device = accelerate_state().device
    dtype = None
    if args.dtype:
        import torch

        dtype = getattr(torch, args.dtype)
    model = DefectFill.from_pretrained(args.model, base_model=args.base_model, device=device, dtype=dtype,
                                       selection_metric=args.selection_metric)
    job = GenerationJob(
        defect_type=args.defect_type, per_image=args.per_image, num_candidates=args.num_candidates,
        num_inference_steps=args.steps, guidance_scale=args.guidance, seed=args.seed,
        selection_metric=args.selection_metric, masks=args.masks, allow_border=args.allow_border,
        model_name=str(args.model), contact_sheet=not args.no_contact_sheet,
    )
    summary = generate_dataset(model, images, args.out, job, real_masks=real_masks)
    if summary["rank"] == 0:
        print(f"generated {summary['generated']} (skipped {summary['skipped']} already done) on rank 0 of "
              f"{summary['num_processes']}; manifest: {summary['manifest']}", file=sys.stderr)
    return 0
