"""Study 1 (DESIGN §8): is the box detector sensitive to the noise of box labels made from changed
pixels? Thin, long or irregular defects (broken yarn, broken ends, oil) fill a small share of their
enclosing box; the rest is good cloth labelled as defect.

On a finished bench run (its data, seeds and one generator's generated sets) the same detector is
trained, same budget and seeds, on real + synthetic data labelled three ways
(`defectfill.masks.label_boxes`, `assemble.boxes`):

    component  one box per connected component of the changed pixels (the toolkit's default)
    instance   components within `instance_gap_px` merged (one box per defect instance)
    split      components longer than `split_max_aspect` × their width cut into squarer boxes

Scores: box mAP50 / mAP50-95 against the test masks labelled the same way (each labelling judged on
its own terms), and two scores that favour no labelling, from the masks (`metrics.detection.
mask_coverage`): pixel recall (defect pixels inside a predicted box) and box precision (share of the
predicted boxes' area that is defect), overall and per defect type. Fill ratio (mask area / box area)
of the labels each labelling produces, per type, for the synthetic training labels and the real test
masks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from defectfill.studies.outputs import mean_std

MODES = ("component", "instance", "split")


@dataclass
class LabelsStudyConfig:
    generator: str = "cutpaste"  # whose generated sets carry the synthetic labels
    modes: list[str] = field(default_factory=lambda: list(MODES))
    instance_gap_px: int = 8
    split_max_aspect: float = 4.0
    detector: str = "rtdetr"
    epochs: int = 40
    seeds: list[int] = field(default_factory=list)  # empty: every seed of the run


def fill_ratio_table(masks_by_type: dict[str, list[np.ndarray]], config: LabelsStudyConfig) -> dict:
    """{mode: {type: {"median", "p10", "boxes"}}}: the fill ratios of the labels of each mode."""
    from defectfill.masks import fill_ratios, label_boxes

    out: dict[str, dict[str, Any]] = {}
    for mode in config.modes:
        out[mode] = {}
        for kind, masks in sorted(masks_by_type.items()):
            ratios = np.concatenate([fill_ratios(m, label_boxes(m, mode, instance_gap=config.instance_gap_px,
                                                                max_aspect=config.split_max_aspect))
                                     for m in masks if m.any()] or [np.zeros(0)])
            out[mode][kind] = {"median": float(np.median(ratios)) if len(ratios) else None,
                               "p10": float(np.percentile(ratios, 10)) if len(ratios) else None, "boxes": len(ratios)}
    return out


def per_type_coverage(arm_dir: Path, test: list, config, threshold: float) -> dict:
    """Pixel recall and box precision of the trained RT-DETR per defect type of the test set."""
    import json

    from defectfill.downstream.rtdetr import DONE_NAME, predict_rtdetr
    from defectfill.metrics.detection import mask_coverage

    record = json.loads((arm_dir / "rtdetr" / DONE_NAME).read_text())
    predictions = predict_rtdetr(record["weights"], [s.image for s in test], imgsz=record["config"]["imgsz"],
                                 conf=config.rtdetr.predict_conf, device=config.rtdetr.device)
    out = {}
    for kind in sorted({s.defect_type for s in test if not s.is_good}):
        chosen = [i for i, s in enumerate(test) if s.defect_type == kind]
        out[kind] = mask_coverage([test[i].mask for i in chosen], [predictions[i] for i in chosen], threshold)
    return out


def run_labels_study(run_dir: str | Path, out_dir: str | Path, config: LabelsStudyConfig | None = None,
                     echo=print) -> dict:
    """Train and score the detector per seed and labelling (resumable: finished arms are read back);
    writes results.json, table.md, plots/labels.png and report.html in `out_dir`."""
    import json

    from defectfill.bench.config import downstream_config_for
    from defectfill.downstream.arm import run_arm
    from defectfill.errors import ConfigError
    from defectfill.generators.manifest import read_generation_manifest
    from defectfill.io_utils import atomic_write_json
    from defectfill.studies.runs import bench_of, run_seeds

    config = config or LabelsStudyConfig()
    unknown = [m for m in config.modes if m not in MODES]
    if unknown or config.detector != "rtdetr" or config.epochs < 1:
        raise ConfigError(f"labels study: modes must be among {list(MODES)} (found {config.modes}), detector rtdetr, "
                          f"epochs >= 1")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    bench, data = bench_of(run_dir)
    seeds = config.seeds or run_seeds(run_dir)
    train, test = data.real_training_samples(), data.test_samples()
    synthetic: dict[str, list[np.ndarray]] = {}
    for seed in seeds:
        folder = run_dir / f"seed-{seed}" / "generated" / config.generator
        if not (folder / "manifest.jsonl").is_file():
            raise ConfigError(f"{folder}: no generated set of {config.generator!r} for seed {seed}; run the bench with "
                              f"that arm first or set `generator` to one of its arms")
        if seed == seeds[0]:
            for item in read_generation_manifest(folder):
                synthetic.setdefault(item.defect_type, []).append(item.load()[1])
    real = {}
    for s in test:
        if not s.is_good:
            real.setdefault(s.defect_type, []).append(s.mask)
    runs = []
    for seed in seeds:
        for mode in config.modes:
            downstream = downstream_config_for(bench, seed, classes=data.defect_types)
            downstream = replace(downstream, models=["rtdetr"],
                                 assemble=replace(downstream.assemble, boxes=mode, instance_gap_px=config.instance_gap_px,
                                                  split_max_aspect=config.split_max_aspect),
                                 rtdetr=replace(downstream.rtdetr, epochs=config.epochs))
            downstream.evaluation.generation_metrics = False
            echo(f"[study labels] seed {seed}: {mode}")
            name = f"{config.generator}-{mode}"
            result = run_arm(name, train, test, downstream, out_dir / f"seed-{seed}",
                             manifests=[run_dir / f"seed-{seed}" / "generated" / config.generator])
            coverage_path = out_dir / f"seed-{seed}" / name / "coverage_per_type.json"
            if not coverage_path.is_file():
                atomic_write_json(coverage_path, per_type_coverage(out_dir / f"seed-{seed}" / name, test, downstream,
                                                                   downstream.evaluation.score_threshold))
            runs.append({"seed": seed, "mode": mode, **{k: result["rtdetr"].get(k) for k in
                                                        ("mAP50", "mAP50_95", "pixel_recall", "box_precision")},
                         "per_type": json.loads(coverage_path.read_text())})
    summary = {"study": "labels", "run": str(run_dir), "config": asdict(config), "seeds": seeds,
               "fill_ratio": {"synthetic": fill_ratio_table(synthetic, config), "real_test": fill_ratio_table(real, config)},
               "runs": runs, "modes": _mode_stats(runs, config.modes)}
    _write_outputs(summary, out_dir)
    return summary


def _mode_stats(runs: list[dict], modes: list[str]) -> dict:
    out = {}
    for mode in modes:
        chosen = [r for r in runs if r["mode"] == mode]
        out[mode] = {k: mean_std([r[k] for r in chosen]) for k in ("mAP50", "mAP50_95", "pixel_recall", "box_precision")}
        kinds = sorted({k for r in chosen for k in r["per_type"]})
        out[mode]["per_type"] = {kind: {k: mean_std([r["per_type"].get(kind, {}).get(k) for r in chosen])
                                        for k in ("pixel_recall", "box_precision")} for kind in kinds}
    return out


def labels_table(summary: dict) -> str:
    def cell(stats: dict | None) -> str:
        return "n/a" if not stats or stats.get("mean") is None else f"{stats['mean']:.3f} ± {stats['std']:.3f}"

    modes = summary["modes"]
    kinds = sorted(summary["fill_ratio"]["real_test"][next(iter(modes))])
    lines = [(f"Seeds {summary['seeds']}, generator {summary['config']['generator']}, detector "
             f"{summary['config']['detector']} ({summary['config']['epochs']} epochs); mean ± std over seeds."), "",
             "| labelling | mAP50 | mAP50-95 | pixel recall | box precision |", "|---|---|---|---|---|"]
    for mode, stats in modes.items():
        lines.append(f"| {mode} | {cell(stats['mAP50'])} | {cell(stats['mAP50_95'])} | {cell(stats['pixel_recall'])} "
                     f"| {cell(stats['box_precision'])} |")
    lines += ["", ("Per defect type: median fill ratio of the labels (synthetic training / real test), pixel recall, box "
              "precision"), "", "| type | labelling | fill synthetic | fill real test | pixel recall | box precision |",
              "|---|---|---|---|---|---|"]
    for kind in kinds:
        for mode in modes:
            syn = summary["fill_ratio"]["synthetic"][mode].get(kind, {}).get("median")
            real = summary["fill_ratio"]["real_test"][mode].get(kind, {}).get("median")
            per_type = modes[mode]["per_type"].get(kind, {})
            lines.append(f"| {kind} | {mode} | {'n/a' if syn is None else f'{syn:.2f}'} | "
                         f"{'n/a' if real is None else f'{real:.2f}'} | {cell(per_type.get('pixel_recall'))} | "
                         f"{cell(per_type.get('box_precision'))} |")
    return "\n".join(lines)


def _write_outputs(summary: dict, out_dir: Path) -> None:
    from defectfill.studies.outputs import pyplot, write_study

    modes = list(summary["modes"])
    kinds = sorted(summary["fill_ratio"]["synthetic"][modes[0]])
    keys = ["mAP50", "mAP50_95", "pixel_recall", "box_precision"]
    figure, axes = pyplot().subplots(1, 2, figsize=(12, 3.8))
    width = 0.8 / len(modes)
    for i, mode in enumerate(modes):
        values = [summary["fill_ratio"]["synthetic"][mode][k]["median"] or 0 for k in kinds]
        axes[0].bar(np.arange(len(kinds)) + i * width, values, width, label=mode)
        stats = summary["modes"][mode]
        axes[1].bar(np.arange(len(keys)) + i * width, [stats[k]["mean"] or 0 for k in keys], width,
                    yerr=[stats[k]["std"] or 0 for k in keys], label=mode)
    axes[0].set_xticks(np.arange(len(kinds)) + 0.4 - width / 2, kinds)
    axes[0].set_title("median fill ratio of the synthetic labels", fontsize=10)
    axes[1].set_xticks(np.arange(len(keys)) + 0.4 - width / 2, ["mAP50", "mAP50-95", "pixel recall", "box precision"])
    axes[1].set_title("detector scores (std over seeds)", fontsize=10)
    axes[0].legend(fontsize=8)
    write_study(out_dir, summary, "Study: box-label noise", labels_table(summary),
                [("Fill ratios and scores per labelling", figure)], intro=__doc__)
