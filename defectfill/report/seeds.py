"""Several seeds of a comparison: mean ± std per arm and class, paired intervals, and a verdict that
never names a winner inside the noise.

Input: {seed: [results.json dicts of the arms]} (`defectfill.downstream.arm`). Each synthetic arm is
compared with real-only and with cut-paste (when they ran) by `metrics.intervals.paired_bootstrap`
on the segmenter's per-image pixel counts, seeds pooled per image; a comparison whose interval holds
0 ranks nothing ("no ranking").
"""

from __future__ import annotations

import statistics
from typing import Any

from defectfill.metrics.intervals import paired_bootstrap, stack_seed_counts
from defectfill.report.table import METRICS, class_names, fmt, result_value

BASELINES = ("real_only", "cutpaste")


def _stat(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values), "max": max(values), "n": len(values), "values": values}


def seed_summary(per_seed: dict[int, list[dict]]) -> dict[str, Any]:
    """{"seeds", "classes", "arms": {arm: {metric key: {mean, std, min, max, n, values}}}}; metric keys
    are `report.table.METRICS` keys and "f_<class>" for the per-class pixel F."""
    seeds = sorted(per_seed)
    all_results = [r for s in seeds for r in per_seed[s]]
    classes = class_names(all_results)
    arms: dict[str, dict[str, Any]] = {}
    for arm in dict.fromkeys(r["arm"] for r in all_results):
        arms[arm] = {}
        rows = [r for s in seeds for r in per_seed[s] if r["arm"] == arm]
        getters = {m.key: m.get for m in METRICS}
        getters.update({f"f_{c}": result_value("deeplab", "per_class", c, "f_measure") for c in classes})
        for key, get in getters.items():
            values = [float(v) for r in rows if (v := get(r)) is not None]
            if values:
                arms[arm][key] = _stat(values)
        counts = [r.get("dataset", {}).get("train_images", {}) for r in rows]
        arms[arm]["train_images"] = counts[0] if counts else {}
    return {"seeds": seeds, "classes": classes, "arms": arms}


def _counts(per_seed: dict[int, list[dict]], arm: str) -> dict[int, Any]:
    return {s: r["deeplab"]["per_image_counts"] for s, results in per_seed.items() for r in results
            if r["arm"] == arm and (r.get("deeplab") or {}).get("per_image_counts") is not None}


def _sentence(c: dict) -> str:
    interval = f"{c['diff']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]"
    if c["holds_zero"]:
        return f"{c['arm']} vs {c['baseline']}: {interval}, no ranking (the interval holds 0)"
    word = "above" if c["diff"] > 0 else "below"
    return f"{c['arm']} ranks {word} {c['baseline']}: {interval}"


def compare_arms(per_seed: dict[int, list[dict]], *, seed: int = 0, num_resamples: int = 2000,
                 level: float = 0.95) -> dict[str, Any]:
    """Every synthetic arm against real-only and cut-paste: paired bootstrap intervals of the mean
    pixel F difference, and the verdict sentence. Returns {"comparisons", "verdict", "notes"}."""
    arms = list(dict.fromkeys(r["arm"] for results in per_seed.values() for r in results))
    comparisons, notes = [], []
    for arm in arms:
        for baseline in BASELINES:
            if arm == baseline or baseline not in arms or arm == "real_only":
                continue
            mine, theirs = _counts(per_seed, arm), _counts(per_seed, baseline)
            shared = sorted(set(mine) & set(theirs))
            if not shared:
                notes.append(f"{arm} vs {baseline}: no per-image counts (results of an older version): no interval; "
                             "rerun the arms")
                continue
            result = paired_bootstrap(stack_seed_counts([mine[s] for s in shared]),
                                      stack_seed_counts([theirs[s] for s in shared]),
                                      num_resamples=num_resamples, level=level, seed=seed)
            comparisons.append({"arm": arm, "baseline": baseline, "seeds": shared, **result})
    if not comparisons:
        verdict = "No ranking: no two arms were compared (run real_only or cutpaste beside a generator)."
    else:
        n_images, n_seeds = comparisons[0]["num_images"], len(comparisons[0]["seeds"])
        ranked = [c for c in comparisons if not c["holds_zero"]]
        where = (f"mean pixel F differences with paired {int(level * 100)} % bootstrap intervals over "
                 f"{n_images} test images, {n_seeds} seed(s) pooled")
        if not ranked:
            verdict = f"No ranking: every interval holds 0 ({where}): " + "; ".join(map(_sentence, comparisons)) + "."
        else:
            verdict = f"{'; '.join(map(_sentence, ranked))}" + (
                f"; no ranking: {'; '.join(_sentence(c) for c in comparisons if c['holds_zero'])}"
                if len(ranked) < len(comparisons) else "") + f" ({where})."
        if n_seeds < 2:
            notes.append("one seed only: the intervals hold the spread between test images, not between seeds")
    return {"comparisons": comparisons, "verdict": verdict, "notes": notes}


def compare_runs(before: dict[int, list[dict]], after: dict[int, list[dict]], *, arms: list[str] | None = None,
                 seed: int = 0, num_resamples: int = 2000, level: float = 0.95) -> dict[str, Any]:
    """Each arm of two bench runs of one protocol (e.g. without and with the quality gate, or two base
    models): F(after) − F(before) with its paired bootstrap interval, pairing test images and seeds.
    Returns {"comparisons", "verdict", "notes"}; an arm missing from one run is a note, not a row."""
    names = lambda runs: list(dict.fromkeys(r["arm"] for rs in runs.values() for r in rs))
    wanted = arms or [a for a in names(after) if a in names(before)]
    comparisons, notes = [], []
    for arm in wanted:
        mine, theirs = _counts(after, arm), _counts(before, arm)
        shared = sorted(set(mine) & set(theirs))
        if not shared:
            notes.append(f"{arm}: not scored in both runs on a shared seed (before: {sorted(theirs)}, after: "
                         f"{sorted(mine)}); not compared")
            continue
        result = paired_bootstrap(stack_seed_counts([mine[s] for s in shared]),
                                  stack_seed_counts([theirs[s] for s in shared]),
                                  num_resamples=num_resamples, level=level, seed=seed)
        comparisons.append({"arm": arm, "baseline": f"{arm} before", "seeds": shared, **result})
    sentences = [_sentence(c).replace(f"{c['arm']} ranks above", f"{c['arm']}: after ranks above").replace(
        f"{c['arm']} ranks below", f"{c['arm']}: after ranks below") for c in comparisons]
    verdict = "; ".join(sentences) + "." if sentences else "No arm was scored in both runs."
    return {"comparisons": comparisons, "verdict": verdict, "notes": notes}


def _cell(stat: dict | None) -> str:
    if not stat:
        return "n/a"
    return fmt(stat["mean"]) + (f" ± {stat['std']:.3f}" if stat["std"] is not None else "")


def seed_table(seeds: dict[str, Any]) -> str:
    """Markdown: arm, train images, then mean ± sample std over the seeds of each metric and class F."""
    arms = seeds["arms"]
    keys = [m for m in METRICS if any(m.key in stats for stats in arms.values())]
    header = ["arm", "train images (real+synthetic)"] + [m.label for m in keys] + [f"F {c}" for c in seeds["classes"]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm, stats in arms.items():
        counts = stats.get("train_images", {})
        row = [arm, f"{counts.get('real', '?')}+{counts.get('synthetic', '?')}"]
        row += [_cell(stats.get(m.key)) for m in keys] + [_cell(stats.get(f"f_{c}")) for c in seeds["classes"]]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"mean ± sample std over seeds {seeds['seeds']}."]
    return "\n".join(lines) + "\n"


def comparison_table(comparisons: dict[str, Any]) -> str:
    """Markdown: arm − baseline mean pixel F (seeds pooled), its interval, and whether it ranks."""
    rows = comparisons["comparisons"]
    if not rows:
        return ""
    level = int(rows[0]["level"] * 100)
    lines = [f"| arm − baseline | mean pixel F difference | {level} % interval | ranking |", "|---|---|---|---|"]
    for c in rows:
        ranking = "no ranking" if c["holds_zero"] else ("arm above" if c["diff"] > 0 else "arm below")
        lines.append(f"| {c['arm']} − {c['baseline']} | {c['diff']:+.3f} | [{c['low']:+.3f}, {c['high']:+.3f}] | "
                     f"{ranking} |")
    return "\n".join(lines) + "\n"
