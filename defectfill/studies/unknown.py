"""Study 2 (DESIGN §8): a defect type that appears only after deployment cannot be synthesised. Does
training on "known types on the new fabric" (real + synthetic) make the segmenter worse at an
*unknown* type than real data alone?

Leave one type out on the simulator: for each held-out type X, the bench of `bench` runs with X
removed from every generator's and detector's data (`data.defect_types` without X), its seeds and
arms as configured. Then X is rendered on the bench's target fabrics (never seen by anything) and
every arm's trained segmenter is scored on it, class-agnostically (any defect class counts):

    pixel recall of X   = Σ |pred ∩ M_X| / Σ |M_X|                    (over the X test images)
    detection rate of X = share of X images where a predicted defect pixel falls inside M_X

and, per synthetic arm, the paired difference to real-only over the same images and seeds (pooled
per image, bootstrap over images; "no ranking" when the interval holds 0). Beside it, where the
bench has a `dgt` arm, the open-set alarm: the share of X's true regions that its DFC calls
"unknown defect", against the same share on the known types' own test defects.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from defectfill.studies.outputs import mean_std


@dataclass
class UnknownStudyConfig:
    bench: str = "study_unknown_bench.yaml"  # a simulator bench config (next to this file, configs/, or a path)
    held_out: list[str] = field(default_factory=list)  # empty: every defect type of the bench, in turn
    unknown_per_texture: int = 8   # X test images rendered per target texture
    num_resamples: int = 2000
    level: float = 0.95


def _x_counts(run_dir: Path, arm: str, seed: int, samples: list) -> np.ndarray:
    """(N, 2) per X image: (predicted-defect pixels inside M_X, |M_X|) of the arm's segmenter."""
    from defectfill.downstream.deeplab import load_deeplab, predict_deeplab

    model, info = load_deeplab(run_dir / f"seed-{seed}" / "arms" / arm / "deeplab")
    maps = predict_deeplab(model, [s.image for s in samples], info["config"]["image_size"])
    return np.array([[int(((m > 0) & s.mask).sum()), int(s.mask.sum())] for m, s in zip(maps, samples)])


def recall_difference(arm: np.ndarray, base: np.ndarray, *, num_resamples: int, level: float, seed: int = 0) -> dict:
    """Paired bootstrap over images of pixel recall (arm − base); arm, base: (S, N, 2) counts."""
    a, b = arm.sum(0), base.sum(0)  # (N, 2): seeds pooled per image
    n = len(a)
    rng = np.random.default_rng(seed)
    weights = np.stack([np.bincount(row, minlength=n) for row in rng.integers(0, n, (num_resamples, n))])
    diffs = (weights @ a[:, 0] - weights @ b[:, 0]) / np.maximum(weights @ a[:, 1], 1)
    low, high = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    diff = (a[:, 0].sum() - b[:, 0].sum()) / max(a[:, 1].sum(), 1)
    return {"diff": float(diff), "low": float(low), "high": float(high), "level": level,
            "holds_zero": bool(low <= 0 <= high), "num_images": n, "num_seeds": len(arm)}


def dfc_alarm_rate(run_dir: Path, samples: list) -> float | None:
    """Share of the samples' true regions the bench's DGT arm (its DFC + Weibull) calls unknown."""
    from gan_baselines.dgt.model import DGT
    from gan_baselines.dgt.openset import WeibullOpenSet, region_logits

    folder = run_dir / "generators" / "dgt" / "model"
    if not folder.is_dir() or not samples:
        return None
    model = DGT.from_pretrained(str(folder)).eval()
    openset = WeibullOpenSet.load(folder)
    flags = []
    for sample in samples:
        _, unknown = openset.decide(region_logits(model, sample.image, [sample.mask]))
        flags.append(bool(unknown[0]))
    return float(np.mean(flags))


def run_unknown_study(out_dir: str | Path, config: UnknownStudyConfig | None = None, *, config_dir: Path | None = None,
                      echo=print) -> dict:
    """Every held-out type in turn (a bench run each, resumable), then the scores on X; writes
    results.json, table.md, plots/unknown.png and report.html in `out_dir`."""
    from defectfill.bench.config import REAL_ONLY, load_bench_config
    from defectfill.bench.run import run_bench
    from defectfill.config import REPO_ROOT, resolve_path
    from defectfill.data.fabric import simulate_dataset
    from defectfill.data.readers import read_mvtec
    from defectfill.errors import ConfigError

    config = config or UnknownStudyConfig()
    out_dir = Path(out_dir)
    path = resolve_path(config.bench, config_dir) or resolve_path(config.bench, REPO_ROOT / "configs")
    if path is None:
        raise ConfigError(f"unknown study: bench config {config.bench!r} not found; pass an existing file")
    full = load_bench_config(path)
    if full.data.kind != "simulator":
        raise ConfigError(f"{path}: the unknown-type study renders the held-out type with the simulator; "
                          "use a bench config with data.kind: simulator")
    types = list(full.data.defect_types)
    held_out = config.held_out or types
    bad = [t for t in held_out if t not in types]
    if bad or len(types) < 2:
        raise ConfigError(f"unknown study: held_out {bad} not among the bench's types {types} (which must be >= 2)")
    per_type: dict[str, Any] = {}
    for x in held_out:
        known = [t for t in types if t != x]
        bench = load_bench_config(path, {"data.defect_types": known})
        run_dir = out_dir / f"without-{x}"
        echo(f"[study unknown] {x} held out: bench on {known}")
        run_bench(bench, run_dir, echo=echo)
        d = bench.data
        folder = simulate_dataset(run_dir / "unknown" / x, d.target_textures, [x], n_good_train=0, n_good_test=0,
                                  n_defect_per_type=config.unknown_per_texture, size=d.image_size,
                                  seed=bench.seed + 7919, gray=d.gray)
        samples = [s for s in read_mvtec(folder, "test") if s.mask.any()]
        known_test = [s for s in read_mvtec(run_dir / "data" / "target_test", "test") if not s.is_good and s.mask.any()]
        counts = {arm: np.stack([_x_counts(run_dir, arm, seed, samples) for seed in bench.run_seeds])
                  for arm in bench.arms}
        arms = {}
        for arm, c in counts.items():
            recall = c[..., 0].sum(1) / np.maximum(c[..., 1].sum(1), 1)
            detected = (c[..., 0] > 0).mean(1)
            arms[arm] = {"pixel_recall": {**mean_std(recall.tolist()), "per_seed": recall.tolist()},
                         "detection_rate": {"mean": float(detected.mean()), "per_seed": detected.tolist()}}
            if arm != REAL_ONLY and REAL_ONLY in counts:
                arms[arm]["vs_real_only"] = recall_difference(c, counts[REAL_ONLY], num_resamples=config.num_resamples,
                                                              level=config.level)
        per_type[x] = {"known": known, "images": len(samples), "seeds": bench.run_seeds, "arms": arms,
                       "dfc_unknown_rate": {"held_out": dfc_alarm_rate(run_dir, samples),
                                            "known_test": dfc_alarm_rate(run_dir, known_test)}}
    summary = {"study": "unknown", "config": asdict(config), "bench": str(path), "types": per_type,
               "answer": answer(per_type)}
    _write_outputs(summary, out_dir)
    return summary


def answer(per_type: dict) -> str:
    """One sentence from the intervals: which synthetic arms change the recall of unseen types."""
    worse, better, inside = [], [], []
    for x, result in per_type.items():
        for arm, stats in result["arms"].items():
            if "vs_real_only" not in stats:
                continue
            v = stats["vs_real_only"]
            (inside if v["holds_zero"] else worse if v["diff"] < 0 else better).append(
                f"{arm} on {x} ({v['diff']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}])")
    parts = []
    if worse:
        parts.append("Synthetic data of the known types lowered the pixel recall of the unseen type: " + "; ".join(worse))
    if better:
        parts.append("Synthetic data of the known types raised the pixel recall of the unseen type: " + "; ".join(better))
    if inside:
        parts.append("No ranking against real-only (the interval holds 0): " + "; ".join(inside))
    return ". ".join(parts) + "." if parts else "No synthetic arm was run."


def unknown_table(summary: dict) -> str:
    lines = [summary["answer"], "", ("| held-out type | arm | pixel recall of it (mean ± std over seeds) | detection rate "
             "| vs real-only (paired interval) |"), "|---|---|---|---|---|"]
    for x, result in summary["types"].items():
        for arm, stats in result["arms"].items():
            v = stats.get("vs_real_only")
            cell = "" if v is None else (f"{v['diff']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}]"
                                         + (" no ranking" if v["holds_zero"] else ""))
            lines.append(f"| {x} | {arm} | {stats['pixel_recall']['mean']:.3f} ± {stats['pixel_recall']['std']:.3f} | "
                         f"{stats['detection_rate']['mean']:.2f} | {cell} |")
    lines += ["", "| held-out type | DFC calls it unknown | DFC calls known-type test defects unknown |", "|---|---|---|"]
    for x, result in summary["types"].items():
        held, known = result["dfc_unknown_rate"]["held_out"], result["dfc_unknown_rate"]["known_test"]
        held_text = "n/a (no dgt arm)" if held is None else f"{held:.2f}"
        known_text = "n/a" if known is None else f"{known:.2f}"
        lines.append(f"| {x} | {held_text} | {known_text} |")
    return "\n".join(lines)


def _write_outputs(summary: dict, out_dir: Path) -> None:
    from defectfill.studies.outputs import pyplot, write_study

    types = list(summary["types"])
    arms = list(next(iter(summary["types"].values()))["arms"])
    figure, ax = pyplot().subplots(figsize=(8, 3.6))
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        stats = [summary["types"][x]["arms"][arm]["pixel_recall"] for x in types]
        ax.bar(np.arange(len(types)) + i * width, [s["mean"] for s in stats], width, yerr=[s["std"] for s in stats],
               label=arm)
    ax.set_xticks(np.arange(len(types)) + 0.4 - width / 2, [f"{x} held out" for x in types])
    ax.set_ylabel("pixel recall of the unseen type")
    ax.legend(fontsize=8)
    write_study(out_dir, summary, "Study: unknown defect types", unknown_table(summary),
                [("Pixel recall of each held-out type", figure)], intro=__doc__)
