"""Short CPU training of the two GAN baselines on the fabric simulator, with contact sheets.

    nice -n 10 python benchmarks/gan_baselines_cpu.py --method multistage --out runs/gan_cpu [--set k=v]

Data as the bench protocol builds it (`defectfill.bench.protocol`), at 64 px: source textures plain
and twill with 5 labelled defects per texture and type (stain, hole, broken_end: 10 per type), target
textures satin and rib (good images only). The generator trains on the source defects (resumable:
rerun to continue), then fills source-shaped masks into target good images. Writes
`<out>/<method>/sheet_target.png` (rows: good target image, then 4 fills for 4 noises),
`<out>/<method>/sheet_source.png` (real source defects beside fills of the same window), and
`<out>/<method>/timing.json` (CPU seconds of the training run, torch threads).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from defectfill.config import load_config, parse_overrides
from defectfill.data.fabric import simulate_dataset
from defectfill.data.readers import read_mvtec
from defectfill.viz import save_contact_sheet
from gan_baselines.cli import METHODS, import_object

TYPES = ["stain", "hole", "broken_end"]


def simulate(out: Path, size: int = 64) -> tuple[Path, Path]:
    source = out / "data" / "source"
    for texture in ("plain", "twill"):
        simulate_dataset(source, [texture], TYPES, n_good_train=0, n_good_test=0, n_defect_per_type=5, size=size, seed=0)
    target = simulate_dataset(out / "data" / "target_train", ["satin", "rib"], [], n_good_train=6, n_good_test=0,
                              n_defect_per_type=0, size=size, seed=0)
    return source, target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", choices=sorted(METHODS), required=True)
    parser.add_argument("--out", default="runs/gan_cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    source_dir, target_dir = simulate(out)
    config = load_config(import_object(METHODS[args.method][0]), METHODS[args.method][2], parse_overrides(args.overrides))
    samples = [s for s in read_mvtec(source_dir, "test") if not s.is_good]
    run_dir = out / args.method
    start_cpu, start_wall = time.process_time(), time.time()
    trainer = import_object(METHODS[args.method][1])(config, samples, run_dir, "latest")
    start_step = trainer.step
    trainer.train()
    timing = {"method": args.method, "steps_this_run": trainer.step - start_step, "total_steps": trainer.step,
              "cpu_seconds_this_run": time.process_time() - start_cpu, "wall_seconds_this_run": time.time() - start_wall,
              "torch_threads": torch.get_num_threads()}
    if hasattr(trainer, "vgg_name"):
        timing["vgg"] = trainer.vgg_name
    previous = json.loads((run_dir / "timing.json").read_text()) if (run_dir / "timing.json").exists() else []
    (run_dir / "timing.json").write_text(json.dumps(previous + [timing], indent=1))
    model = trainer.unwrapped.eval()

    rng = np.random.default_rng(0)
    targets = [s.image for s in read_mvtec(target_dir, "train")]
    images, masks, captions = [], [], []
    for row, defect_type in enumerate(TYPES * 2):
        source = [s for s in samples if s.defect_type == defect_type]
        mask = source[int(rng.integers(len(source)))].mask
        good = targets[row % len(targets)]
        filled = model.fill(np.stack([good] * 4), np.stack([mask] * 4), defect_type=defect_type,
                            rng=torch.Generator().manual_seed(row))
        filled = np.where(mask[None, ..., None], filled, good[None])  # what the windowed plug-in keeps
        images += [good, *filled]
        masks += [mask] * 5
        captions += [f"good -> {defect_type}"] + [f"z{k}" for k in range(4)]
    save_contact_sheet(run_dir / "sheet_target.png", images, masks, captions, ncols=5, tile=128)
    images, masks, captions = [], [], []
    for k, sample in enumerate(samples[::3][:6]):
        filled = model.fill(np.stack([sample.image] * 3), np.stack([sample.mask] * 3), defect_type=sample.defect_type,
                            rng=torch.Generator().manual_seed(k))
        filled = np.where(sample.mask[None, ..., None], filled, sample.image[None])
        images += [sample.image, *filled]
        masks += [sample.mask] * 4
        captions += [f"real {sample.defect_type}"] + [f"z{j}" for j in range(3)]
    save_contact_sheet(run_dir / "sheet_source.png", images, masks, captions, ncols=4, tile=128)
    print(json.dumps(timing))


if __name__ == "__main__":
    main()
