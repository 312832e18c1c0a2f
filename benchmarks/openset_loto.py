"""Leave-one-type-out on the fabric simulator: DFC (OpenMax Weibulls) vs max-softmax.

For each seed and each held-out type u: the simulated protocol (`defectfill.bench.protocol`:
labelled source defects on the source textures, good target images, a target test set) at 64 px;
DGT + DIS + DFC are trained on the source defects of the *known* types only (u is in no training
or fitting data), the Weibulls are fitted (`fit_openset`), the unknown-score threshold is chosen on
a validation set of known-type defects on the target textures (95 % of them accepted), and every
ground-truth defect region of the target test set is classified (known types: in-distribution;
type u: unknown). Both detectors score the same DFC logits, so closed-set accuracy is shared.

    nice -n 10 python benchmarks/openset_loto.py --out runs/openset_loto --seeds 0 1 2 \
        --held_out stain hole broken_end --max_train_steps 200

Resumable: a finished (seed, held-out) run is kept in <out>/runs.jsonl and skipped. The summary
(mean ± sd over seeds, per held-out type and overall) is written to <out>/summary.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from defectfill.bench.config import BenchConfig, DataConfig
from defectfill.bench.protocol import simulate_protocol
from defectfill.config import add_set_argument, load_config, parse_overrides
from defectfill.data.fabric import simulate_dataset
from defectfill.data.readers import read_mvtec
from defectfill.io_utils import Manifest
from gan_baselines.data import FewShotBatches
from gan_baselines.dgt.config import DGTConfig, OpenMaxConfig
from gan_baselines.dgt.openset import (
    WeibullOpenSet,
    choose_threshold,
    max_softmax_score,
    openset_metrics,
    region_logits,
)
from gan_baselines.dgt.train import fit_set, train_dgt

TYPES = ["stain", "oil", "hole", "broken_end", "white_stripe"]


# other Weibull settings scored on the same trained models and logits (no retraining)
VARIANTS = {"openmax_tail10": {"tailsize": 10}, "openmax_tail40": {"tailsize": 40},
            "openmax_eucos": {"euclid_weight": 0.5}, "openmax_fit_all": {"fit_on": "all"},
            "openmax_real_only": {"fakes_per_type": 0}}


def logits_of(model, samples):
    return torch.cat([region_logits(model, s.image, [s.mask]) for s in samples])


def run_one(seed: int, held_out: str, out: Path, args) -> dict:
    data_dir = out / f"data-seed{seed}"
    config = BenchConfig(seed=seed, data=DataConfig(
        source_textures=["plain", "twill"], target_textures=["satin", "rib"], defect_types=TYPES, image_size=64,
        source_defects_per_type=args.source_defects_per_type, target_good=10, test_defects_per_type=6, test_good=0))
    data = simulate_protocol(config, data_dir)
    val_dir = simulate_dataset(data_dir / "target_val", ["satin", "rib"], TYPES, n_good_train=0, n_good_test=0,
                               n_defect_per_type=4, size=64, seed=seed + 7919)
    known = [t for t in TYPES if t != held_out]
    train_defects = [s for s in data.source_defects() if s.defect_type in known]
    good = [s.image for s in data.target_good()]
    overrides = {"max_train_steps": args.max_train_steps, "seed": seed, "checkpointing_steps": 100,
                 "validation_steps": 0, "openmax.tailsize": args.tailsize, "model.defect_types": known,
                 **parse_overrides(args.overrides)}  # e.g. loss.alpha7_cls_fake=0
    dgt = load_config(DGTConfig, args.config, overrides)
    t0 = time.process_time()
    model, openset = train_dgt(dgt, train_defects, out / f"model{args.tag}-seed{seed}-{held_out}", good)
    train_cpu = time.process_time() - t0
    val = [s for s in read_mvtec(val_dir, "test") if s.defect_type in known]
    test = [s for s in data.test_samples() if not s.is_good]
    val_logits, logits = logits_of(model, val), logits_of(model, test)
    is_unknown = np.array([s.defect_type == held_out for s in test])
    true = np.array([known.index(s.defect_type) if s.defect_type in known else -1 for s in test])
    closed = logits.argmax(1).numpy()
    record = {"seed": seed, "held_out": held_out, "train_cpu_s": round(train_cpu, 1),
              "n_test_known": int((~is_unknown).sum()), "n_test_unknown": int(is_unknown.sum()), "n_val": len(val)}
    detectors = {"dfc_openmax": openset.unknown_score, "max_softmax": max_softmax_score}
    batches = FewShotBatches(train_defects, good, known, dgt.model.resolution)
    fit_logits, fit_labels = fit_set(model, batches, dgt.openmax.fakes_per_type, seed)
    for name, change in VARIANTS.items():
        config = OpenMaxConfig(**{**vars(dgt.openmax), **change})
        n = len(fit_labels) if config.fakes_per_type else len(batches.defects)  # the real crops come first
        detectors[name] = WeibullOpenSet(config).fit(fit_logits[:n], fit_labels[:n]).unknown_score
    for name, score in detectors.items():
        val_s, test_s = score(val_logits).numpy(), score(logits).numpy()
        record[name] = openset_metrics(closed, true, is_unknown, test_s, choose_threshold(val_s, 0.95))
    return record


def summarize(records: list[dict]) -> str:
    lines = ["| held out | detector | n seeds | closed acc | AUROC | OSCR | open macro-F1 |", "|---|---|---|---|---|---|---|"]
    groups = sorted({r["held_out"] for r in records}) + ["all"]
    for group in groups:
        rs = [r for r in records if group in ("all", r["held_out"])]
        for det in [k for k in rs[0] if isinstance(rs[0][k], dict)]:
            cells = []
            for key in ("closed_set_accuracy", "auroc", "oscr", "open_macro_f1"):
                if group == "all":  # mean over held-out types per seed, then over seeds
                    per_seed = [np.mean([r[det][key] for r in rs if r["seed"] == s]) for s in sorted({r["seed"] for r in rs})]
                else:
                    per_seed = [r[det][key] for r in rs]
                cells.append(f"{np.mean(per_seed):.3f} ± {np.std(per_seed, ddof=1) if len(per_seed) > 1 else 0:.3f}")
            n = len({r["seed"] for r in rs})
            lines.append(f"| {group} | {det} | {n} | " + " | ".join(cells) + " |")
    cpu = sum(r["train_cpu_s"] for r in records)
    lines.append(f"\nTraining CPU time, all runs: {cpu / 60:.1f} min ({len(records)} runs). ± = sample sd over seeds.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/openset_loto")
    parser.add_argument("--config", default="configs/dgt_tiny.yaml", help="DGT config (the fields --set changes)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--held_out", nargs="+", default=["stain", "hole", "broken_end"])
    parser.add_argument("--max_train_steps", type=int, default=200)
    parser.add_argument("--source_defects_per_type", type=int, default=10)
    parser.add_argument("--tailsize", type=int, default=20)
    parser.add_argument("--record_file", default="runs.jsonl", help="results file in --out (a new name re-scores "
                        "the cached models, e.g. after adding detectors)")
    parser.add_argument("--tag", default="", help="model folder suffix, for runs with --set overrides")
    add_set_argument(parser, "loss.alpha7_cls_fake=0")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = Manifest(out / args.record_file, key="run")
    for seed in args.seeds:
        for held_out in args.held_out:
            key = f"{seed}-{held_out}"
            if runs.done(key):
                continue
            record = run_one(seed, held_out, out, args)
            runs.append({"run": key, **record})
            print(json.dumps(record), flush=True)
    records = list(Manifest(out / args.record_file, key="run").records)
    summary = summarize(records)
    (out / f"summary-{Path(args.record_file).stem}.md").write_text(summary + "\n")
    print(summary)


if __name__ == "__main__":
    main()
