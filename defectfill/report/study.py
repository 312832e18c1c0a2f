"""The HTML page of a study (`defectfill study ...`): its table, its figures, the method in words."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from defectfill.io_utils import atomic_write_text
from defectfill.report.html import _STYLE, _embed, _markdown_table_html


def write_study_page(out_dir: str | Path, title: str, table_markdown: str,
                     figures: Sequence[tuple[str, Path | None]] = (), intro: str | None = None) -> Path:
    """report.html in `out_dir`: title, the table (markdown, as written to table.md), each figure
    (embedded) under its caption, then the method (`intro`, e.g. the study module's docstring)."""
    out_dir = Path(out_dir)
    parts = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             _markdown_table_html(table_markdown)]
    for caption, path in figures:
        if path is not None and Path(path).is_file():
            parts += [f"<h2>{html.escape(caption)}</h2>", _embed(Path(path))]
    if intro:
        parts += ["<h2>Method</h2>", f"<pre style='white-space:pre-wrap'>{html.escape(intro.strip())}</pre>"]
    page = out_dir / "report.html"
    atomic_write_text(page, "\n".join(parts + ["</body></html>"]))
    return page
