"""PNG plots of a comparison: per-class F-measure bars per arm, box mAP bars, PR curves (IoU 0.5)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from defectfill.io_utils import atomic_save
from defectfill.report.table import class_names


def _pyplot():
    """matplotlib.pyplot on the file-only Agg backend (reports are written on headless machines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def f_measure_bars(results: Sequence[dict], path: str | Path) -> Path | None:
    """Grouped bars: one group per defect class, one bar per arm (n/a classes left empty)."""
    plt = _pyplot()

    names = class_names(results)
    arms = [r for r in results if r.get("deeplab")]
    if not names or not arms:
        return None
    fig, ax = plt.subplots(figsize=(max(4, 1.3 * len(names) + 2), 3.2))
    width = 0.8 / len(arms)
    x = np.arange(len(names))
    for i, result in enumerate(arms):
        values = [result["deeplab"]["per_class"].get(n, {}).get("f_measure") for n in names]
        ax.bar(x + i * width, [np.nan if v is None else v for v in values], width, label=result["arm"])
    ax.set_xticks(x + width * (len(arms) - 1) / 2, names)
    ax.set_ylabel("pixel F-measure")
    ax.set_ylim(0, 1)
    ax.set_title("DeepLabV3: per-class pixel F-measure on the real test set")
    ax.legend(fontsize=8)
    return _save(fig, Path(path))


def map_bars(results: Sequence[dict], path: str | Path) -> Path | None:
    plt = _pyplot()

    arms = [r for r in results if r.get("rtdetr") and r["rtdetr"].get("mAP50") is not None]
    if not arms:
        return None
    fig, ax = plt.subplots(figsize=(4 + 0.6 * len(arms), 3.2))
    x = np.arange(len(arms))
    ax.bar(x - 0.2, [r["rtdetr"]["mAP50"] for r in arms], 0.4, label="mAP50")
    ax.bar(x + 0.2, [r["rtdetr"]["mAP50_95"] for r in arms], 0.4, label="mAP50-95")
    ax.set_xticks(x, [r["arm"] for r in arms])
    ax.set_ylim(0, 1)
    ax.set_title("RT-DETR: box mAP on the real test set")
    ax.legend(fontsize=8)
    return _save(fig, Path(path))


def pr_curves(results: Sequence[dict], path: str | Path) -> Path | None:
    """Precision vs recall at IoU 0.5 per class (COCO 101-point interpolation), one line per arm."""
    plt = _pyplot()

    arms = [r for r in results if (r.get("rtdetr") or {}).get("pr_curve_iou50")]
    names = sorted({n for r in arms for n, c in r["rtdetr"]["pr_curve_iou50"].items() if c is not None})
    if not arms or not names:
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), squeeze=False)
    recall = np.linspace(0, 1, 101)
    for ax, name in zip(axes[0], names):
        for result in arms:
            curve = result["rtdetr"]["pr_curve_iou50"].get(name)
            if curve is not None:
                ax.plot(recall, curve, label=result["arm"])
        ax.set_title(f"{name} (IoU 0.5)")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(path))
