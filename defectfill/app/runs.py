"""A finished run folder -> what the app's second tab shows: its table, plots and contact sheets.

Run folders are what `defectfill bench --out` (`bench.json`), `defectfill real --out`
(`summary.json`) and `defectfill report` (`results.json`) write; each has `table.md`, most have
`plots/*.png`, `sheets/*.png` and `contact_sheet.png` files (see `defectfill.bench.run`,
`defectfill.realdata.stains_run`, `defectfill.report.html`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from defectfill.errors import DataError

KINDS = {"bench.json": "bench", "summary.json": "real-data run", "results.json": "report"}
MAX_SHEETS = 24


@dataclass
class RunView:
    folder: Path
    kind: str
    title: str
    table: str  # markdown
    notes: list[str] = field(default_factory=list)
    plots: list[tuple[Path, str]] = field(default_factory=list)  # (png, caption)
    sheets: list[tuple[Path, str]] = field(default_factory=list)
    report_html: Path | None = None


def _caption(folder: Path, path: Path) -> str:
    return str(path.relative_to(folder))


def read_run_folder(folder: str | Path) -> RunView:
    """Read a run folder (DataError naming the folder and what to pass when it is not one)."""
    folder = Path(str(folder).strip()).expanduser()
    if not folder.is_dir():
        raise DataError(f"run folder {folder}: not a folder; pass the --out folder of `defectfill bench` or "
                        "`defectfill real`")
    summary_file = next((folder / name for name in KINDS if (folder / name).is_file()), None)
    table_file = folder / "table.md"
    if summary_file is None and not table_file.is_file():
        raise DataError(f"run folder {folder}: no bench.json, summary.json, results.json or table.md; pass the --out "
                        "folder of a finished `defectfill bench` or `defectfill real` run")
    kind = KINDS[summary_file.name] if summary_file else "report"
    summary = {}
    if summary_file is not None and summary_file.name != "results.json":
        try:
            summary = json.loads(summary_file.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{summary_file}: not valid JSON ({exc}); the run was interrupted while writing it, "
                            "run it again to finish") from exc
    table = table_file.read_text() if table_file.is_file() else "_no table.md in this folder_"
    plots = [(p, _caption(folder, p)) for p in sorted((folder / "plots").glob("*.png"))]
    sheets = [(p, _caption(folder, p)) for p in sorted((folder / "sheets").glob("*.png"))]
    contact = sorted(folder.rglob("contact_sheet.png"), key=lambda p: (len(p.parts), str(p)))
    sheets += [(p, _caption(folder, p)) for p in contact]
    page = folder / "report.html"
    return RunView(folder=folder, kind=kind, title=str(summary.get("name") or folder.name), table=table,
                   notes=[str(n) for n in summary.get("notes", [])], plots=plots, sheets=sheets[:MAX_SHEETS],
                   report_html=page if page.is_file() else None)


def run_markdown(view: RunView) -> str:
    """The table and notes of a run as one markdown block."""
    parts = [f"### {view.title} ({view.kind})", f"Folder: `{view.folder}`"]
    if view.report_html is not None:
        parts.append(f"Full report: `{view.report_html}`")
    parts.append(view.table)
    if view.notes:
        parts.append("**Notes**\n\n" + "\n".join(f"- {n}" for n in view.notes))
    return "\n\n".join(parts)
