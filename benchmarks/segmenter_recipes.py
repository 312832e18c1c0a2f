"""Segmenter recipes on the 26 real stains, through the product's own code (`run_arm`, real-only arm).

    PYTHONPATH=$PWD nice -n 10 python benchmarks/segmenter_recipes.py --out /tmp/seg --recipes unet deeplab \\
        --seeds 0 1 2 [--overlays unet]

Split and sizes: `configs/bench_real_stains.yaml` (alternate stems, 13 train / 13 test, 128 px, 40
epochs, batch 4); each recipe overrides the `deeplab` section of `downstream_tiny.yaml` (and the
assembly's validation split). One torch thread. Prints one JSON line per run (validation F of the kept
epoch, test F / P / R, the kept epoch, CPU seconds of the call: 0 when the run was read back) and
a markdown table (mean ± sample std over seeds). Recipes are chosen on the validation F (3 of the 13
real training images, `assemble.val_fraction` 0.25), never on the test F. `--overlays RECIPE`
writes `overlays_<recipe>_seed<k>.png`: each test image with its true stain outline (green) and the
predicted stain pixels (red), so the predictions can be looked at.
The test half is only scored here; no recipe choice reads it inside a run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

VAL = {"assemble.val_fraction": 0.25}  # 3 of the 12 real training stains choose the epoch
RECIPES: dict[str, dict] = {
    # DeepLabV3-MobileNetV3, the bench's segmenter before issue 20
    "deeplab": {"deeplab.arch": "mobilenet_v3_large", **VAL},
    # the small U-Net (depth 4, widths 16-128, 0.49 M parameters)
    "unet": {"deeplab.arch": "unet", **VAL},
    "unet_dice": {"deeplab.arch": "unet", "deeplab.loss": "ce_dice", **VAL},
    "unet_w1": {"deeplab.arch": "unet", "deeplab.defect_weight": 1.0, **VAL},
    "unet_w32": {"deeplab.arch": "unet", "deeplab.unet_base_width": 32, **VAL},
    # no held-out validation: all 13 real images train, the last epoch is kept
    "deeplab_noval": {"deeplab.arch": "mobilenet_v3_large", "assemble.val_fraction": 0.0},
    "unet_noval": {"deeplab.arch": "unet", "assemble.val_fraction": 0.0},
}


def overlay_sheet(model_dir: Path, test, path: Path) -> None:
    from defectfill.data.images import save_image
    from defectfill.downstream.deeplab import load_deeplab, predict_deeplab
    from defectfill.viz import draw_mask_outline

    model, info = load_deeplab(model_dir)
    predictions = predict_deeplab(model, [s.image for s in test], info["config"]["image_size"])
    tiles = []
    for sample, prediction in zip(test, predictions):
        tile = draw_mask_outline(sample.image, sample.mask, (0, 255, 0)) if sample.mask.any() else sample.image.copy()
        red = prediction > 0
        tile[red] = (0.5 * tile[red] + 0.5 * np.array([255, 0, 0])).astype(np.uint8)
        tiles.append(tile)
    while len(tiles) % 5:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i : i + 5], 1) for i in range(0, len(tiles), 5)]
    save_image(path, np.concatenate(rows, 0))


def main() -> None:
    from defectfill.downstream.arm import run_arm
    from defectfill.realdata.stains_run import downstream_config_for, load_real_stains_config, load_split

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--recipes", nargs="+", default=["deeplab", "unet"], choices=sorted(RECIPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--config", default="configs/bench_real_stains.yaml")
    parser.add_argument("--data_dir", default=None, help="the hsst-stains folder (default: the config's)")
    parser.add_argument("--overlays", nargs="*", default=[], help="recipes whose test predictions are drawn")
    parser.add_argument("--init_weights", default=None,
                        help="start every recipe from this segmenter checkpoint (e.g. simulator-pretrained); "
                             "results go to <recipe>_pre")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_real_stains_config(args.config, {"data.data_dir": args.data_dir} if args.data_dir else None)
    train, test = load_split(config)
    out = Path(args.out)
    rows: dict[str, list[dict]] = {}
    suffix = "_pre" if args.init_weights else ""
    for recipe in args.recipes:
        for seed in args.seeds:
            downstream = downstream_config_for(config, seed)
            for dotted, value in RECIPES[recipe].items():
                section, key = dotted.split(".")
                setattr(getattr(downstream, section), key, value)
            downstream.deeplab.init_weights = args.init_weights
            downstream.deeplab.__post_init__()
            downstream.evaluation.generation_metrics = False
            started = time.process_time()
            result = run_arm("real_only", train, test, downstream, out / f"{recipe}{suffix}" / f"seed{seed}")
            stain = result["deeplab"]["per_class"][config.data.defect_type]
            info = json.loads((out / f"{recipe}{suffix}" / f"seed{seed}" / "real_only" / "deeplab" / "best.json").read_text())
            val = info["best_val"]["per_class"][config.data.defect_type]["f_measure"]
            row = {"recipe": recipe + suffix, "seed": seed, "val_F": val, "F": stain["f_measure"], "P": stain["precision"],
                   "R": stain["recall"], "kept_epoch": result["deeplab"]["train"]["best_epoch"],
                   "cpu_s_this_call": round(time.process_time() - started, 1)}
            rows.setdefault(recipe + suffix, []).append(row)
            print(json.dumps(row), flush=True)
            if recipe in args.overlays:
                overlay_sheet(out / f"{recipe}{suffix}" / f"seed{seed}" / "real_only" / "deeplab", test,
                              out / f"overlays_{recipe}{suffix}_seed{seed}.png")
    print("\n| recipe | val F (kept epoch) | test stain F (mean ± std) | per seed | P mean | R mean | CPU s / run |\n"
          "|---|---|---|---|---|---|---|")
    for recipe, runs in rows.items():
        f = [r["F"] for r in runs]
        p = [r["P"] or 0.0 for r in runs]
        std = statistics.stdev(f) if len(f) > 1 else float("nan")
        val = [r["val_F"] or 0.0 for r in runs]
        print(f"| {recipe} | {statistics.mean(val):.3f} | {statistics.mean(f):.3f} ± {std:.3f} | "
              f"{' / '.join(f'{v:.3f}' for v in f)} | {statistics.mean(p):.3f} | "
              f"{statistics.mean(r['R'] for r in runs):.3f} | {statistics.mean(r['cpu_s_this_call'] for r in runs):.0f} |")


if __name__ == "__main__":
    main()
