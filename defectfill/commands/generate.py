"""`defectfill generate`: put defects of one type into a folder of good images, with any registered generator.

    defectfill generate [--generator defectfill] --model DIR --images DIR --defect-type stain --out DIR \\
        [--per-image 1] [--num-candidates 8] [--seed 0] [--masks auto|real|procedural] [--real-masks DIR] \\
        [--option KEY=VALUE ...] [--steps 50] [--guidance 7.5] [--selection-metric auto] \\
        [--quality-gate [REAL_DEFECTS]] [--gate-percentile 10] [--gate-retries 2]
    defectfill generate --generator cutpaste --train-data REAL_DEFECTS --images DIR --defect-type stain --out DIR

--model loads a trained model folder (DefectFill: a concept folder or Hub id; cut-paste: a folder of
real defects); --train-data trains the generator on real labelled defects (any layout the readers
know) first, cached in --work-dir. Writes images/, request_masks/, changed_masks/, manifest.jsonl
and contact_sheet.png (see `defectfill.generators.runner`). Run it again to resume. Several
processes share the work when started with
`accelerate launch --multi_gpu --num_processes N -m defectfill.cli generate ...` (on CPU too).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from defectfill.errors import ConfigError, DataError

# shorthand flag -> option name, for generators that have that option (DefectFill)
SHORTHANDS = {"steps": "num_inference_steps", "guidance": "guidance_scale", "selection_metric": "selection_metric",
              "dtype": "dtype", "base_model": "load_base_model", "early_selection": "early_selection"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--generator", default="defectfill",
                        help="registered generator name (default defectfill; `--generator list` lists them)")
    parser.add_argument("--model", default=None,
                        help="trained model: a folder or Hub repo id (DefectFill), a folder of real defects (cutpaste)")
    parser.add_argument("--train-data", type=Path, default=None,
                        help="instead of --model: real labelled defects to train the generator on (any layout)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where --train-data training is cached (default OUT/generator-<name>)")
    parser.add_argument("--images", type=Path, help="folder of good (defect-free) images")
    parser.add_argument("--defect-type", help="the defect type to generate (one the generator knows)")
    parser.add_argument("--per-image", type=int, default=1, help="defects generated per good image (default 1)")
    parser.add_argument("--out", type=Path, help="output folder (resumable)")
    parser.add_argument("--num-candidates", type=int, default=8, help="candidates per mask; the best is kept (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; request i uses seed + i (default 0)")
    parser.add_argument("--masks", default="auto", choices=["auto", "real", "procedural"],
                        help="where defects go: shapes from --real-masks, procedural shapes, or real when given")
    parser.add_argument("--real-masks", type=Path, default=None,
                        help="folder of real masks of this type (or with a <defect-type>/ subfolder)")
    parser.add_argument("--allow-border", action="store_true", help="let proposed masks touch the image border")
    parser.add_argument("--allow-blank", action="store_true",
                        help="let proposed masks land on blank or saturated areas too (default: fabric only, "
                             "never on a strip's blank lead-in; see mask_proposals.fabric_region)")
    parser.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                        help="a generator option (YAML value), e.g. --option guidance_scale=3; unknown keys are refused")
    parser.add_argument("--steps", type=int, default=None, help="DefectFill: DDIM steps (option num_inference_steps)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="DefectFill: classifier-free guidance (option guidance_scale; SD-2's 7.5 by default; "
                             "with the offline base check the defects' look at 1-3 too: see its README)")
    parser.add_argument("--selection-metric", default=None,
                        help="DefectFill: LFS metric auto (default: lpips when its AlexNet weights are here, else "
                             "ms-ssim-distance), lpips, lpips-vgg, ms-ssim-distance")
    parser.add_argument("--early-selection", type=float, default=None, metavar="N/T",
                        help="DefectFill: rank the candidates on the predicted clean image after this fraction of "
                             "the steps and finish only the best (option early_selection; 0 = off)")
    parser.add_argument("--base-model", default=None,
                        help="DefectFill: base inpainting pipeline (folder or Hub id); default: the one the model records")
    parser.add_argument("--device", default=None, help="torch device (default: accelerate's, i.e. cuda when present)")
    parser.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                        help="DefectFill: pipeline dtype (default float32)")
    parser.add_argument("--no-contact-sheet", action="store_true", help="do not write contact_sheet.png")
    parser.add_argument("--quality-gate", nargs="?", const="train-data", default=None, metavar="REAL_DEFECTS",
                        help="keep only items whose change reads as a defect: floors calibrated from these real "
                             "labelled defects (default: --train-data); see defectfill.generators.quality")
    parser.add_argument("--gate-percentile", type=float, default=10.0,
                        help="quality gate: the floor is this percentile of the real defects' statistic (default 10)")
    parser.add_argument("--gate-retries", type=int, default=2,
                        help="quality gate: new seeds tried before a request is skipped (default 2)")
    parser.add_argument("--gate-statistics", default="contrast",
                        help="quality gate: comma-separated statistics (contrast, texture; default contrast)")


def generator_options(args: argparse.Namespace) -> dict[str, Any]:
    """--option items and the shorthand flags -> {option: value} (checked against the generator later)."""
    from defectfill.config import parse_overrides

    values = parse_overrides(args.options)
    for flag, option in SHORTHANDS.items():
        value = getattr(args, flag)
        if value is not None:
            values[option] = value
    return values


def _list_generators() -> int:
    from defectfill.generators.registry import get_plugin, registered_generators

    for name, origin in sorted(registered_generators().items()):
        print(f"{name:12s} {get_plugin(name).help}  [{origin}]")
    return 0


def run(args: argparse.Namespace) -> int:
    from defectfill.data.images import check_readable, list_images
    from defectfill.distributed import accelerate_state
    from defectfill.generators.registry import check_options, get_plugin
    from defectfill.generators.requests import MaskPolicy, load_real_masks, plan_requests
    from defectfill.generators.runner import run_generation
    from defectfill.locks import output_lock

    if args.generator == "list":
        return _list_generators()
    missing = [f"--{name.replace('_', '-')}" for name in ("images", "defect_type", "out") if getattr(args, name) is None]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)}; see defectfill generate --help")
    if (args.model is None) == (args.train_data is None):
        raise ConfigError("pass exactly one of --model (a trained model) and --train-data (real defects to train on)")
    plugin = get_plugin(args.generator)
    fields = {f.name for f in dataclasses.fields(plugin.options)}
    for flag, option in SHORTHANDS.items():
        if getattr(args, flag) is not None and option not in fields:
            raise ConfigError(f"--{flag.replace('_', '-')} sets the option {option!r}, which generator "
                              f"{args.generator!r} does not have; its options: {sorted(fields)} (--option KEY=VALUE)")
    options = check_options(args.generator, generator_options(args), training=args.train_data is not None)
    if not args.images.is_dir():
        raise DataError(f"--images {args.images}: not a folder; pass the folder of good images")
    images = list_images(args.images)
    if not images:
        raise DataError(f"--images {args.images}: no images found (looked for .png/.jpg/.bmp/.tif/.webp)")
    check_readable(images, "--images")  # refuse unreadable images before anything is written
    real_masks = load_real_masks(args.real_masks, args.defect_type)
    gate = _quality_gate(args)  # calibrated before anything is written
    state = accelerate_state()
    with output_lock(args.out, command="generate", rank=state.process_index):  # a second run on --out refuses
        device = args.device or str(state.device)
        if args.model is not None:
            if plugin.load is None:
                raise ConfigError(f"generator {args.generator!r} has no trained-model folder; use --train-data")
            generator = plugin.load(Path(args.model), options, device)
            model_name = str(args.model)
        else:
            generator, model_name = _train(args, options, images, device), str(args.train_data)
        requests = plan_requests(images, [args.defect_type], per_image=args.per_image, seed=args.seed)
        if args.defect_type not in generator.defect_types:
            raise DataError(f"--defect-type {args.defect_type!r} is not known to the model; known: "
                            f"{sorted(generator.defect_types)}")
        summary = run_generation(generator, requests, args.out, num_candidates=args.num_candidates,
                                 masks=MaskPolicy(mode=args.masks, real_masks={args.defect_type: real_masks},
                                                  allow_border=args.allow_border, allow_blank=args.allow_blank),
                                 model_name=model_name, contact_sheet=not args.no_contact_sheet,
                                 gate=gate)
    if summary["rank"] == 0:
        print(f"generated {summary['generated']} (skipped {summary['skipped']} already done) on rank 0 of "
              f"{summary['num_processes']}; manifest: {summary['manifest']}", file=sys.stderr)
        if summary["quality_gate"] is not None:
            print(f"quality gate: {json.dumps(summary['quality_gate']['per_type'])} "
                  f"(floors {json.dumps(summary['quality_gate']['floors'])}); see quality_gate.json", file=sys.stderr)
    return 0


def _real_defects(folder: Path, defect_type: str, flag: str) -> list:
    from defectfill.data.readers import detect_layout, read_dataset

    if not folder.exists():
        raise DataError(f"{flag} {folder}: not found; pass a folder of real labelled defects")
    # an image+mask folder does not name its class: it holds the type asked for
    typed = {"defect_type": defect_type} if detect_layout(folder) == "folder" else {}
    return [s for s in read_dataset(folder, **typed) if not s.is_good]


def _quality_gate(args: argparse.Namespace):
    """The calibrated quality gate of --quality-gate, or None."""
    from defectfill.generators.quality import QualityGate, QualityGateConfig

    if args.quality_gate is None:
        return None
    if args.quality_gate == "train-data" and args.train_data is None:
        raise ConfigError("--quality-gate without a folder calibrates on --train-data, which is not given; "
                          "pass --quality-gate REAL_DEFECTS (a folder of real labelled defects)")
    folder = args.train_data if args.quality_gate == "train-data" else Path(args.quality_gate)
    config = QualityGateConfig(statistics=[s.strip() for s in args.gate_statistics.split(",") if s.strip()],
                               percentile=args.gate_percentile, max_retries=args.gate_retries)
    defects = [s for s in _real_defects(folder, args.defect_type, "--quality-gate") if s.defect_type == args.defect_type]
    if not defects:
        raise DataError(f"--quality-gate {folder}: no real {args.defect_type!r} defects to calibrate on; pass a folder "
                        f"holding some")
    return QualityGate.calibrate(defects, config)


def _train(args: argparse.Namespace, options: Any, images: list[Path], device: str):
    from defectfill.generators.context import GeneratorContext
    from defectfill.generators.registry import build_generator

    defects = _real_defects(args.train_data, args.defect_type, "--train-data")
    ctx = GeneratorContext(name=args.generator, source_defects=defects, target_good=images,
                           defect_types=[args.defect_type], options=options, seed=args.seed, device=device,
                           work_dir=args.work_dir or args.out / f"generator-{args.generator}",
                           source_dir=args.train_data)
    generator = build_generator(ctx)
    for note in ctx.notes:
        print(f"WARNING: {note}", file=sys.stderr)
    return generator
