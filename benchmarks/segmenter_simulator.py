"""Pretrain a segmenter on the fabric simulator, through the product's own code; held-out F curve and
zero-shot F on the real stains' test half.

    PYTHONPATH=$PWD nice -n 10 python benchmarks/segmenter_simulator.py --out /tmp/sim --arch unet \\
        --train 600 --heldout 100 --epochs 6

Data: `render_sample` at 128 px, all textures and all defect types as one class ("defect"), every
second image grey, 1 in 10 defect-free; image i of the training set uses seed i, the held-out set
seeds 1_000_000 + i (other fabrics draws, same families). Training: `train_deeplab` on the assembled
folder, the held-out renders as its validation split (the best epoch on them is kept), one torch
thread. Writes `curve.json` (held-out F and cumulative CPU minutes per epoch) and `zero_shot.json`
(stain F of the kept model on the 13 real test stains, no real image seen), plus
`pretrain/best.safetensors` for `deeplab.init_weights`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def render_set(n: int, first_seed: int, size: int) -> list:
    from defectfill.data.fabric import DEFECT_TYPES, TEXTURES, render_sample
    from defectfill.data.sample import DefectSample

    samples = []
    for i in range(n):
        seed = first_seed + i
        defect = None if i % 10 == 9 else DEFECT_TYPES[i % len(DEFECT_TYPES)]
        image, mask = render_sample(TEXTURES[(i // 3) % len(TEXTURES)], defect, seed, size, gray=i % 2 == 0)
        samples.append(DefectSample(image, mask, "defect" if defect else "good", is_gray=i % 2 == 0))
    return samples


def main() -> None:
    from defectfill.downstream.assemble import assemble, load_assembled
    from defectfill.downstream.config import AssembleConfig, DeepLabConfig
    from defectfill.downstream.datasets import class_map
    from defectfill.downstream.deeplab import load_deeplab, predict_deeplab, train_deeplab
    from defectfill.io_utils import atomic_write_json
    from defectfill.metrics.segmentation import segmentation_scores
    from defectfill.realdata.stains_run import load_real_stains_config, load_split

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--arch", default="unet", choices=["unet", "mobilenet_v3_large"])
    parser.add_argument("--loss", default="ce", choices=["ce", "ce_dice"])
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--heldout", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--config", default="configs/bench_real_stains.yaml")
    parser.add_argument("--data_dir", default=None, help="the hsst-stains folder (default: the config's)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    started = time.process_time()
    if (out / "data" / "recipe.json").is_file():
        data = load_assembled(out / "data")
    else:
        samples = render_set(args.train, 0, args.size) + render_set(args.heldout, 1_000_000, args.size)
        # assemble draws its val split from the training samples: the held-out renders (other seeds)
        # replace that split instead
        data = assemble(samples[: args.train], [], out / "data", ["defect"], AssembleConfig(val_fraction=0.0))
        _replace_val(out / "data", samples[args.train :])
    render_cpu = time.process_time() - started
    config = DeepLabConfig(arch=args.arch, loss=args.loss, epochs=args.epochs, batch_size=args.batch_size,
                           image_size=args.size, lr=args.lr, device="cpu")
    info = train_deeplab(data.root, ["defect"], config, out / "pretrain", seed=0, if_exists="skip")
    cpu = np.cumsum([h["cpu_seconds"] for h in info["history"]]) / 60
    curve = [{"epoch": h["epoch"], "heldout_f": round(h["val_mean_f"], 4), "cpu_min": round(float(c), 2)}
             for h, c in zip(info["history"], cpu)]
    atomic_write_json(out / "curve.json", {"arch": args.arch, "loss": args.loss, "train_renders": args.train,
                                           "heldout_renders": args.heldout, "render_cpu_s": render_cpu, "curve": curve})
    print(json.dumps(curve))

    real = load_real_stains_config(args.config, {"data.data_dir": args.data_dir} if args.data_dir else None)
    _, test = load_split(real)
    model, _ = load_deeplab(out / "pretrain")
    predictions = predict_deeplab(model, [s.image for s in test], args.size)
    stain = segmentation_scores(predictions, [class_map(s.mask, s.defect_type, ["stain"]) for s in test],
                                ["stain"])["per_class"]["stain"]
    zero_shot = {k: stain[k] for k in ("f_measure", "precision", "recall")}
    atomic_write_json(out / "zero_shot.json", zero_shot)
    print(json.dumps({"zero_shot_real_test": zero_shot, "kept_epoch": info["best_epoch"]}))


def _replace_val(root: Path, heldout: list) -> None:
    """Write `heldout` as the val split of an assembled folder (images + class-index masks)."""
    import shutil

    from defectfill.data.images import save_image

    for kind in ("images", "masks"):
        shutil.rmtree(root / kind / "val", ignore_errors=True)
    for k, sample in enumerate(heldout):
        save_image(root / "images" / "val" / f"heldout_{k:05d}.png", sample.image)
        save_image(root / "masks" / "val" / f"heldout_{k:05d}.png", sample.mask.astype(np.uint8))


if __name__ == "__main__":
    main()
