"""The report of a comparison: results.json, table.md, PNG plots, contact sheets, one HTML page.

`write_report(results, out_dir)` writes

    results.json        the arms' results, as a list
    table.md            the verdict sentence and the arms × metrics table
    plots/*.png         per-class F bars, mAP bars, PR curves (when RT-DETR was run)
    sheets/<arm>.png    contact sheets of the synthetic images each arm trained on
    report.html         all of the above in one self-contained page (images as base64)

The verdict (which arm won) is computed from the numbers by `defectfill.report.table.verdict`.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path

from defectfill.io_utils import atomic_write_json, atomic_write_text
from defectfill.report import plots
from defectfill.report.table import markdown_table, rows, verdict

_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;font-size:0.9em}td,th{border:1px solid #bbb;padding:3px 7px;text-align:right}"
    "th{background:#eee}td:first-child{text-align:left;font-weight:bold}"
    ".verdict{font-size:1.2em;background:#f4f8ff;border-left:4px solid #36c;padding:0.6em 1em}"
)


def synthetic_contact_sheet(result: dict, path: Path, max_images: int = 16) -> Path | None:
    """Contact sheet of the first synthetic training images of an arm, their labels outlined."""
    from defectfill.data.images import load_image, load_label_map
    from defectfill.viz import save_contact_sheet

    dataset_dir = Path(result.get("dataset_dir", ""))
    index_path = dataset_dir / "index.jsonl"
    if not index_path.is_file():
        return None
    lines = [json.loads(line) for line in index_path.read_text().splitlines() if line.strip()]
    chosen = [row for row in lines if row["origin"] == "synthetic"][:max_images]
    if not chosen:
        return None
    images, masks, captions = [], [], []
    for row in chosen:
        image_path = dataset_dir / row["file"]
        images.append(load_image(image_path))
        masks.append(load_label_map(dataset_dir / "masks" / image_path.parent.name / image_path.name) > 0)
        captions.append(row["defect_type"])
    return save_contact_sheet(path, images, masks, captions, ncols=8, tile=96)


def _embed(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}" style="max-width:100%">'


def _html_table(results: Sequence[dict]) -> str:
    header, body = rows(results)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    lines = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{lines}</tbody></table>"


def _notes(results: Sequence[dict]) -> list[str]:
    notes = []
    for result in results:
        generation = result.get("generation") or {}
        for key, field in (("kid", "feature_extractor"), ("ic_lpips", "lpips_network")):
            name = (generation.get(key) or {}).get(field)
            if name:
                notes.append(f"{result['arm']}: {key} with {name}")
        seg = result.get("deeplab") or {}
        if seg.get("definition"):
            notes.append(f"F-measure: {seg['definition']}")
    return sorted(set(notes))


def write_report(results: Sequence[dict], out_dir: str | Path, title: str = "defectfill downstream comparison",
                 sections: Sequence[str] = (), verdict_text: str | None = None, results_title: str = "Results") -> Path:
    """Write the report files (see the module docstring); returns the path of report.html.
    `sections`: HTML parts of the caller (e.g. `seeds_section`, `bench_section`) placed before the
    results; `verdict_text`: the caller's verdict (e.g. from intervals over seeds) instead of the
    one computed from `results`."""
    out_dir = Path(out_dir)
    results = list(results)
    sentence = verdict_text if verdict_text is not None else verdict(results)
    atomic_write_json(out_dir / "results.json", results)
    atomic_write_text(out_dir / "table.md", f"# {title}\n\n{sentence}\n\n{markdown_table(results)}")
    figures = [
        plots.f_measure_bars(results, out_dir / "plots" / "f_measure_per_class.png"),
        plots.map_bars(results, out_dir / "plots" / "map.png"),
        plots.pr_curves(results, out_dir / "plots" / "pr_curves.png"),
    ]
    sheets = []
    for result in results:
        sheet = synthetic_contact_sheet(result, out_dir / "sheets" / f"{result['arm']}.png")
        if sheet is not None:
            sheets.append((result["arm"], sheet))

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        # the verdict may carry **bold** from the markdown form
        f"<p class='verdict'>{html.escape(sentence).replace('**', '')}</p>",
        (
            f"<p>Test set: {results[0].get('test_images', '?')} real images "
            f"({results[0].get('test_defect_images', '?')} with defects).</p>"
            if results
            else ""
        ),
        *sections,
        f"<h2>{html.escape(results_title)}</h2>",
        _html_table(results),
        openset_section(results),
        "<h2>Plots</h2>",
        *[_embed(f) for f in figures if f is not None],
    ]
    if sheets:
        parts.append("<h2>Synthetic training data (labels outlined in red)</h2>")
        for arm, sheet in sheets:
            parts += [f"<h3>{html.escape(arm)}</h3>", _embed(sheet)]
    notes = _notes(results)
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts.append("</body></html>")
    page = out_dir / "report.html"
    atomic_write_text(page, "\n".join(parts))
    return page


def openset_section(results: Sequence[dict]) -> str:
    """Open-set labels of the segmented regions (`defectfill evaluate --openset-model`), one table per
    arm that has them: label counts per ground-truth type (and for regions matching no defect)."""
    from defectfill.report.table import openset_line

    parts = []
    for result in results:
        o = result.get("openset")
        if not o:
            continue
        labels = list(o["counts"])
        head = "".join(f"<th>{html.escape(x)}</th>" for x in ["ground truth", *labels])
        body = [(t, c) for t, c in o["by_truth"].items()] + [("(no defect)", o["unmatched_counts"])]
        lines = "".join("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in [t, *(c[k] for k in labels)])
                        + "</tr>" for t, c in body)
        where = (f"Model {o['model']}; regions: {o['region_source']}, >= {o['min_area']} px; "
                 f"match: |P∩G| / min(|P|, |G|) >= {o['min_overlap']}.")
        parts += [f"<h3>{html.escape(result['arm'])}</h3>", f"<p>{html.escape(openset_line(o))}.</p>",
                  f"<p>{html.escape(where)}</p>", f"<table><thead><tr>{head}</tr></thead><tbody>{lines}</tbody></table>"]
    return "<h2>Open-set labels of the segmented regions</h2>" + "".join(parts) if parts else ""


def bench_section(summary: dict, sheets: list[tuple[str, Path]]) -> str:
    """The bench's own part of report.html: protocol, base model warning, goal, seconds, sheets."""
    d = summary["protocol"]
    parts = ["<h2>Bench protocol</h2>"]
    for note in summary["notes"]:
        parts.append(f"<p style='background:#fee;border-left:4px solid #c00;padding:0.6em 1em;font-weight:bold'>"
                     f"{html.escape(note)}</p>")
    budget = summary["budget"]
    into = (f"{budget['synthetic_per_class']} images per class into the target good images"
            if budget.get("into", "target_good") == "target_good"
            else f"{budget['per_image']} per training image (its real defect kept labelled)")
    if "source_textures" in d:  # the simulator
        data = (f"Source fabrics {', '.join(d['source_textures'])}: {d['source_defects_per_type']} labelled defects per "
                f"type. Target (new) fabrics {', '.join(d['target_textures'])}: {d['target_good']} good images per "
                f"texture for training; test = {d['test_defects_per_type']} defects per type and {d['test_good']} good "
                f"images per texture. Defect types: {', '.join(d['defect_types'])}; {d['image_size']} px (simulated).")
    else:  # the user's folders
        counts = d.get("counts", {})
        where = d.get("folder") or d.get("source")
        split = (f"split by fabric code (source fabrics {d['source_fabrics']} of {d['fabrics']})" if "fabrics" in d
                 else f"split rule {d.get('rule', 'separate folders')}")
        data = (f"Data: {where}, {split}: {counts.get('source_defects')} labelled source defects, "
                f"{counts.get('target_good')} good training images of the new fabric, test = {counts.get('test')} images "
                f"({counts.get('test_defects')} with defects). Defect types (from the data): "
                f"{', '.join(summary.get('defect_types', []))}.")
    parts.append(f"<p>{html.escape(data)} Every synthetic arm: {html.escape(into)}, the same requests within a seed, "
                 f"{budget['num_candidates']} candidates each.</p>")
    goal = summary["goal"]
    lines = [f"{k.removeprefix('vs_')}: {v['gain_points']:+.1f} points (goal {v['needed_points']:+.0f}): "
             f"{'met' if v['met'] else 'NOT met'}" for k, v in goal.items() if k.startswith("vs_")]
    if lines:
        parts.append(f"<p>Goal (DefectFill, {html.escape(goal['metric'])}): " + "; ".join(map(html.escape, lines)) + "</p>")
    seconds, cpu = summary["seconds"], summary["cpu_seconds"]
    if seconds:
        parts.append("<p>Seconds per stage, wall clock / CPU of this process (the run that computed it): " + ", ".join(
            f"{html.escape(k)} {v:.0f}" + (f" / {cpu[k]:.0f}" if k in cpu else "") for k, v in seconds.items())
            + f"; total {sum(seconds.values()):.0f} / {sum(cpu.values()):.0f}.</p>")
    for title, sheet in sheets:
        parts += [f"<h3>{html.escape(title)}</h3>", _embed(sheet)]
    return "\n".join(parts)


def _markdown_table_html(text: str) -> str:
    """A markdown table (as `report.seeds` writes it) as an HTML table; other lines as paragraphs."""
    out, table = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            if not set(line) <= set("|-: "):
                table.append([html.escape(c.strip()) for c in line.strip("|").split("|")])
            continue
        if table:
            head, *body = table
            out.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in body) + "</table>")
            table = []
        if line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    return "\n".join(out)


def seeds_section(seeds: dict, comparisons: dict) -> str:
    """Mean ± std over the seeds per arm and class, and the paired intervals (`report.seeds`)."""
    from defectfill.report.seeds import comparison_table, seed_table

    parts = [f"<h2>Over seeds {html.escape(str(seeds['seeds']))}</h2>", _markdown_table_html(seed_table(seeds))]
    if comparisons["comparisons"]:
        parts += ["<h3>Paired differences (is a gap outside the noise?)</h3>",
                  _markdown_table_html(comparison_table(comparisons)),
                  f"<p>{html.escape(comparisons['comparisons'][0]['definition'])}; an interval that holds 0 ranks nothing.</p>"]
    parts += [f"<p>{html.escape(note)}</p>" for note in comparisons["notes"]]
    return "\n".join(parts)


def load_results(paths: Sequence[str | Path]) -> list[dict]:
    """results.json files (or arm folders holding one); a combined list file is flattened."""
    from defectfill.errors import DataError

    results = []
    for path in paths:
        path = Path(path)
        file = path / "results.json" if path.is_dir() else path
        if not file.is_file():
            raise DataError(f"{path}: no results.json; run `defectfill evaluate` for this arm first")
        data = json.loads(file.read_text())
        results += data if isinstance(data, list) else [data]
    return results
