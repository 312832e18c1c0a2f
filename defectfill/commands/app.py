"""`defectfill app`: make and curate defects by hand in a browser.

    defectfill app --model runs/concept [--model cutpaste=data/real-defects] [--images DIR] \\
        [--data curated/] [--run runs/bench] [--port 7860] [--host 127.0.0.1]

Needs the optional extra: `pip install 'defectfill[app]'` (Gradio). Serves on 127.0.0.1 only,
offline (Gradio's analytics off, no share link). Accepted defects go to the --data folder
(images, masks, manifest.jsonl; YOLO/COCO export from the page); starting again on the same
folder resumes it. See `defectfill.app`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from defectfill.errors import ConfigError, DataError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", default=[], metavar="[NAME=]DIR",
                        help="a trained generator to offer (repeatable): a DefectFill model folder, or "
                             "cutpaste=DIR with DIR a folder of real labelled defects")
    parser.add_argument("--data", type=Path, default=Path("curated"),
                        help="the data set folder accepted defects go into (created, or resumed; default ./curated)")
    parser.add_argument("--images", type=Path, default=None, help="a folder of good images to pick from in the page")
    parser.add_argument("--run", type=Path, default=None, help="a bench or real-data run folder to show in the Runs tab")
    parser.add_argument("--real-masks", type=Path, default=None,
                        help="real masks to learn proposed shapes from (folder, or with a <defect-type>/ subfolder)")
    parser.add_argument("--base-model", default=None, help="base inpainting pipeline for DefectFill models "
                                                           "(default: the one in defectfill.json)")
    parser.add_argument("--selection-metric", default="auto",
                        help="score of the candidates: auto (default: lpips when its weights are in the torch cache, "
                             "else ms-ssim-distance, said in the page), lpips, lpips-vgg or ms-ssim-distance")
    parser.add_argument("--num-candidates", type=int, default=4, help="k shown at start (default 4)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps shown at start (default 50)")
    parser.add_argument("--guidance", type=float, default=7.5, help="guidance shown at start (default 7.5)")
    parser.add_argument("--brush", type=int, default=4, help="brush radius in image pixels at start (default 4)")
    parser.add_argument("--num-threads", type=int, default=None,
                        help="torch CPU threads (default torch's); on a shared, busy CPU 1 is several times faster "
                             "than 2 (10 DDIM steps x 4 candidates at 64 px: 6.7 s with 1, 71 s with 2, measured)")
    parser.add_argument("--device", default=None, help="torch device (default cuda when present, else cpu)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to serve on (default 127.0.0.1: this machine only; 0.0.0.0 shares on the network)")
    parser.add_argument("--port", type=int, default=None, help="port (default: the first free one from 7860)")


def build_from_args(args: argparse.Namespace):
    """(CurationApp, gr.Blocks) from the parsed arguments."""
    if not args.model:
        raise ConfigError("--model: give at least one trained generator folder (a DefectFill model, or "
                          "cutpaste=DIR of real defects)")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ModuleNotFoundError as exc:
        raise ConfigError("defectfill app needs Gradio: pip install 'defectfill[app]'") from exc
    from defectfill.app.generators import GeneratorBook, parse_model_spec
    from defectfill.app.ui import AppSettings, CurationApp, build_demo
    from defectfill.generators.requests import load_real_masks
    from defectfill.selection import ensure_metric_available

    if args.images is not None and not args.images.is_dir():
        raise ConfigError(f"--images {args.images}: not a folder; pass a folder of good images")
    ensure_metric_available(args.selection_metric)
    import torch

    if args.num_threads is not None:
        if args.num_threads < 1:
            raise ConfigError(f"--num-threads must be >= 1, found {args.num_threads}")
        torch.set_num_threads(args.num_threads)
    device = args.device
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    book = GeneratorBook([parse_model_spec(m) for m in args.model], device, base_model=args.base_model,
                         selection_metric=args.selection_metric)
    real_masks: dict[str, list] = {}
    if args.real_masks is not None:
        for defect_type in sorted({t for label in book.labels for t in book.defect_types(label)}):
            try:
                real_masks[defect_type] = load_real_masks(args.real_masks, defect_type)
            except DataError:
                continue  # that type proposes procedural shapes
        if not real_masks:
            raise ConfigError(f"--real-masks {args.real_masks}: no non-empty masks found for any defect type")
    settings = AppSettings(book=book, data_folder=args.data, images_folder=args.images, run_folder=args.run,
                           real_masks=real_masks, num_candidates=args.num_candidates,
                           num_inference_steps=args.steps, guidance_scale=args.guidance, brush_size=args.brush)
    app = CurationApp(settings)
    return app, build_demo(app)


def run(args: argparse.Namespace) -> int:
    from defectfill.app.ui import SHARE_HINT, launch

    _, demo = build_from_args(args)
    print(f"defectfill app: data set {args.data.resolve()}; {SHARE_HINT}", flush=True)
    launch(demo, host=args.host, port=args.port)
    return 0
