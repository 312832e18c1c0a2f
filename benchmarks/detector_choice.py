"""Which box detector learns on a CPU: RT-DETR (small, random init) vs boxes from the segmenter's
components (`segboxes`), on a finished bench run's own split, seeds and trained segmenters.

    python benchmarks/detector_choice.py --config configs/bench_real_stains.yaml \
        --run runs/real-stains --out runs/detector-choice --rtdetr_epochs 40

For every seed of the run: `segboxes` scored from each finished arm's segmenter (no training), and
RT-DETR trained on the real-only arm's data with the run's downstream config (epochs from
--rtdetr_epochs), both with the same box mAP. Writes results.json and table.md in --out; the
RT-DETR runs resume.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="the bench config the run was made with")
    parser.add_argument("--run", type=Path, required=True, help="the finished bench run folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rtdetr_epochs", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="*", default=None)
    args = parser.parse_args()

    import torch

    from defectfill.bench.config import downstream_config_for, load_bench_config
    from defectfill.bench.protocol import load_protocol_data
    from defectfill.downstream.arm import run_arm, segboxes_scores
    from defectfill.downstream.deeplab import load_deeplab, predict_probabilities
    from defectfill.io_utils import atomic_write_json, atomic_write_text

    torch.set_num_threads(1)
    config = load_bench_config(args.config)
    data = load_protocol_data(config, args.run)
    train, test = data.real_training_samples(), data.test_samples()
    seeds = args.seeds or config.run_seeds
    rows = []
    for seed in seeds:
        downstream = downstream_config_for(config, seed, classes=data.defect_types)
        for arm_dir in sorted((args.run / f"seed-{seed}" / "arms").iterdir()):
            if not (arm_dir / "deeplab" / "best.json").is_file():
                continue
            model, info = load_deeplab(arm_dir / "deeplab")
            started = time.process_time()
            probabilities = predict_probabilities(model, [s.image for s in test], info["config"]["image_size"])
            scores = segboxes_scores(probabilities, test, downstream)
            rows.append({"seed": seed, "arm": arm_dir.name, "detector": "segboxes", "mAP50": scores["mAP50"],
                         "mAP50_95": scores["mAP50_95"], "detection_rate": scores.get("detection_rate"),
                         "cpu_seconds_train": 0.0, "cpu_seconds_predict": time.process_time() - started})
            print(json.dumps(rows[-1]), flush=True)
        downstream.models = ["rtdetr"]
        downstream.rtdetr.epochs = args.rtdetr_epochs
        started = time.process_time()
        result = run_arm("real_only", train, test, downstream, args.out / f"seed-{seed}")
        rows.append({"seed": seed, "arm": "real_only", "detector": "rtdetr", "mAP50": result["rtdetr"]["mAP50"],
                     "mAP50_95": result["rtdetr"]["mAP50_95"], "detection_rate": result["rtdetr"].get("detection_rate"),
                     "cpu_seconds_train": time.process_time() - started,
                     "train_seconds": result["rtdetr"]["train"]["train_seconds"]})
        print(json.dumps(rows[-1]), flush=True)
    atomic_write_json(args.out / "results.json", rows)
    lines = ["| detector | arm | mAP50 per seed | mAP50 mean ± std | mAP50-95 mean ± std | CPU s to train |",
             "|---|---|---|---|---|---|"]
    for detector, arm in dict.fromkeys((r["detector"], r["arm"]) for r in rows):
        chosen = [r for r in rows if r["detector"] == detector and r["arm"] == arm]
        m50 = np.array([r["mAP50"] for r in chosen])
        m95 = np.array([r["mAP50_95"] for r in chosen])
        lines.append(f"| {detector} | {arm} | {' / '.join(f'{v:.3f}' for v in m50)} | {m50.mean():.3f} ± {m50.std(ddof=1) if len(m50) > 1 else 0:.3f} "
                     f"| {m95.mean():.3f} ± {m95.std(ddof=1) if len(m95) > 1 else 0:.3f} "
                     f"| {np.mean([r['cpu_seconds_train'] for r in chosen]):.0f} |")
    atomic_write_text(args.out / "table.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
