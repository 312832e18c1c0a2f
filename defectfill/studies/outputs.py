"""What every study writes: results.json, table.md, its plots and report.html (one home)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def mean_std(values: Sequence[float | None]) -> dict:
    """{"mean", "std" (ddof 1; 0 for one value), "n"} of the values that are not None."""
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "n": len(values)}


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_study(out_dir: Path, summary: dict, title: str, table: str, figures: Sequence[tuple[str, Any]],
                intro: str | None) -> Path:
    """results.json, table.md ("# title" + table), each figure (caption, matplotlib Figure -> saved as
    plots/<n>.png, or an existing image path) and report.html; returns the report's path."""
    from defectfill.io_utils import atomic_write_json, atomic_write_text
    from defectfill.report.study import write_study_page

    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "results.json", summary)
    atomic_write_text(out_dir / "table.md", f"# {title}\n\n{table}\n")
    shown = []
    for index, (caption, figure) in enumerate(figures):
        if figure is not None and not isinstance(figure, (str, Path)):
            (out_dir / "plots").mkdir(parents=True, exist_ok=True)
            path = out_dir / "plots" / f"{summary['study']}{'' if index == 0 else f'-{index}'}.png"
            figure.tight_layout()
            figure.savefig(path, dpi=110)
            pyplot().close(figure)
            figure = path
        shown.append((caption, figure))
    return write_study_page(out_dir, title, table, shown, intro=intro)
