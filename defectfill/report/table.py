"""The comparison table (arms × metrics) and the one-sentence verdict, computed from results.

Input: the `results.json` dicts of several arms (`defectfill.downstream.arm`). Downstream metrics
decide the verdict (higher is better): mean pixel F-measure (the segmenter), mAP50-95 and mAP50
(RT-DETR, and the boxes of the segmenter's components, `segboxes`). KID (lower is better), IC-LPIPS (higher = more diverse) and the contrast gap (how far
the synthetic defects' grey-level contrast to their surroundings is from the real test defects',
per class; lower is better) describe the synthetic data and are shown, not used for the verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


def result_value(*keys: str) -> Callable[[dict], Any]:
    def getter(result: dict) -> Any:
        node: Any = result
        for key in keys:
            if not isinstance(node, dict) or node.get(key) is None:
                return None
            node = node[key]
        return node

    return getter


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    get: Callable[[dict], Any]
    higher_is_better: bool = True
    decides: bool = False  # part of the verdict


METRICS = (
    Metric("mean_f", "mean pixel F (segmenter)", result_value("deeplab", "mean_f_measure"), decides=True),
    Metric("map50_95", "mAP50-95 (RT-DETR)", result_value("rtdetr", "mAP50_95"), decides=True),
    Metric("map50", "mAP50 (RT-DETR)", result_value("rtdetr", "mAP50"), decides=True),
    Metric("map50_95_segboxes", "mAP50-95 (segmenter boxes)", result_value("segboxes", "mAP50_95"), decides=True),
    Metric("map50_segboxes", "mAP50 (segmenter boxes)", result_value("segboxes", "mAP50"), decides=True),
    Metric("detection_rate", "image detection rate", result_value("rtdetr", "detection_rate")),
    Metric("false_alarm_rate", "false-alarm rate", result_value("rtdetr", "false_alarm_rate"), higher_is_better=False),
    Metric("kid", "KID×1000 (synthetic)", result_value("generation", "kid", "kid_x1000"), higher_is_better=False),
    Metric("ic_lpips", "IC-LPIPS (synthetic)", result_value("generation", "ic_lpips", "ic_lpips")),
    Metric("contrast_gap", "contrast gap (synthetic)", result_value("generation", "contrast", "gap"), higher_is_better=False),
    # `defectfill evaluate --openset-model`: the segmenter's regions labelled by DGT's DFC + OpenMax
    Metric("openset_closed_acc", "open-set: closed-set acc (matched regions)",
           result_value("openset", "closed_set_accuracy")),
    Metric("openset_novel_unknown", "open-set: unknown-type regions flagged unknown",
           result_value("openset", "novel_flagged_unknown")),
)


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def class_names(results: Sequence[dict]) -> list[str]:
    names: list[str] = []
    for result in results:
        for name in (result.get("deeplab") or {}).get("per_class", {}):
            if name not in names:
                names.append(name)
    return names


def rows(results: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the table: arm, training images, metrics, per-class F."""
    present = [m for m in METRICS if any(m.get(r) is not None for r in results)]
    per_class = class_names(results)
    header = ["arm", "train images (real+synthetic)"] + [m.label for m in present] + [f"F {c}" for c in per_class]
    body = []
    for result in results:
        counts = result.get("dataset", {}).get("train_images", {})
        row = [result["arm"], f"{counts.get('real', '?')}+{counts.get('synthetic', '?')}"]
        row += [fmt(m.get(result)) for m in present]
        row += [fmt(result_value("deeplab", "per_class", c, "f_measure")(result)) for c in per_class]
        body.append(row)
    return header, body


def openset_line(summary: dict) -> str:
    """One line of `defectfill evaluate --openset-model`'s "openset" section."""
    counts = ", ".join(f"{k}: {v}" for k, v in summary["counts"].items())
    return (f"open-set labels of {summary['regions']} segmented regions ({counts}); on {summary['matched_known_regions']} "
            f"matched to a known type: closed-set acc {fmt(summary['closed_set_accuracy'])}, label acc "
            f"{fmt(summary['label_accuracy'])}; on {summary['matched_novel_regions']} matched to a type the model does "
            f"not know {summary['novel_types']}: flagged unknown {fmt(summary['novel_flagged_unknown'])}; "
            f"{summary['unmatched_regions']} regions match no defect")


def markdown_table(results: Sequence[dict]) -> str:
    header, body = rows(results)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def verdict(results: Sequence[dict], tolerance: float = 0.005) -> str:
    """One sentence saying which arm won, computed from the downstream metrics.

    On each deciding metric the arms within `tolerance` of the best share the lead; a metric on
    which every arm shares the lead is a tie and makes no winner. The winner is the arm leading
    the most non-tied metrics.
    """
    if not results:
        return "No arm has results yet."
    if len(results) == 1:
        return f"Only one arm ({results[0]['arm']}) was run, so there is nothing to compare."
    winners: dict[str, list[str]] = {}
    details: list[str] = []
    ties: list[str] = []
    for metric in (m for m in METRICS if m.decides):
        values = [(r["arm"], metric.get(r)) for r in results if metric.get(r) is not None]
        if len(values) < 2:
            continue
        best = max(v for _, v in values) if metric.higher_is_better else min(v for _, v in values)
        best_arms = [arm for arm, v in values if abs(v - best) <= tolerance]
        if len(best_arms) == len(values):
            ties.append(f"{metric.label} {best:.3f}")
            continue
        others = ", ".join(f"{arm} {v:.3f}" for arm, v in values if arm not in best_arms)
        leaders = ", ".join(f"{arm} {v:.3f}" for arm, v in values if arm in best_arms)
        details.append(f"{metric.label}: {leaders} vs {others}")
        winners[metric.label] = best_arms
    if not winners:
        if ties:
            return f"No arm won: every downstream metric is tied within {tolerance} ({'; '.join(ties)})."
        return "No downstream metric was computed for two or more arms."
    unique = {tuple(w) for w in winners.values()}
    if len(unique) == 1 and len(next(iter(unique))) == 1:
        arm = next(iter(unique))[0]
        tied = f"; tied: {', '.join(ties)}" if ties else ""
        return f"**{arm}** won: best on every downstream metric that differs ({'; '.join(details)}{tied})."
    tally: dict[str, int] = {}
    for arms in winners.values():
        for arm in arms:
            tally[arm] = tally.get(arm, 0) + 1
    lead = max(tally.values())
    leaders = [a for a, n in tally.items() if n == lead]
    if len(leaders) == 1:
        return f"**{leaders[0]}** won {lead} of {len(winners)} downstream metrics ({'; '.join(details)})."
    return f"No single arm won: {' and '.join(leaders)} each lead {lead} of {len(winners)} downstream metrics ({'; '.join(details)})."
