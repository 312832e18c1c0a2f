"""`run_bench(config, out_dir)`: the benchmark protocol end to end, resumable at every step.

    simulate the protocol's data (source defects, target good, target test)      data/
    per synthetic arm: build its generator (DefectFill trains here), generate     generators/, generated/<arm>/
      the same requests (images, masks, seeds) into target good images
    per arm: assemble real (+ synthetic) data, fine-tune the same detector and    arms/<arm>/
      segmenter with the same budget and seeds, evaluate on the target test set
    report: results.json (every arm), table.md, plots, sheets, report.html,       ./
      bench.json (protocol, base model, goal check, seconds per stage)

What is finished is never recomputed: the simulator skips the images its manifest lists, a
complete generation folder skips its generator (and the DefectFill training inside it), a
trained concept folder is not retrained, a finished arm (arms/<arm>/results.json) is read back.
The run folder remembers its config; resuming with a different one is refused.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from defectfill.bench.arms import (
    RANDOM_BASE_WARNING,
    ArmContext,
    StageLog,
    defectfill_base_status,
    drop_random_base_results,
    generate_arm,
    plan_requests,
)
from defectfill.bench.config import REAL_ONLY, BenchConfig, downstream_config_for
from defectfill.bench.protocol import BenchData, simulate_protocol
from defectfill.config import to_dict
from defectfill.errors import ConfigError
from defectfill.io_utils import atomic_write_json, atomic_write_text

CONFIG_NAME = "bench_config.yaml"
SUMMARY_NAME = "bench.json"
# the product's goal on the target fabrics (mean pixel F-measure of DeepLabV3, in points = F x 100)
GOAL_POINTS = {REAL_ONLY: 10.0, "cutpaste": 5.0}


# fields that may change between runs in one folder: arms are independent folders (an arm can be
# added or left out later); threads change speed, not results
_RESUMABLE_FIELDS = ("source", "arms", "num_threads")


def _check_same_config(config: BenchConfig, out_dir: Path) -> None:
    path = out_dir / CONFIG_NAME
    current = {k: v for k, v in to_dict(config).items() if k not in _RESUMABLE_FIELDS}
    if path.is_file():
        saved = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k not in _RESUMABLE_FIELDS}
        if saved != current:
            changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
            raise ConfigError(
                f"{out_dir}: holds a bench run with another config (differs in {changed}); resuming would mix "
                f"the two. Pass a new --out folder, or delete {out_dir} to start again")
    else:
        atomic_write_text(path, yaml.safe_dump(current, sort_keys=False))


def mean_f(result: dict) -> float | None:
    return (result.get("deeplab") or {}).get("mean_f_measure")


def goal_check(results: list[dict]) -> dict[str, Any]:
    """DefectFill's mean pixel F vs each baseline, in points, against GOAL_POINTS."""
    by_arm = {r["arm"]: r for r in results}
    out: dict[str, Any] = {"metric": "DeepLabV3 mean pixel F-measure x 100 on the target test set"}
    target = mean_f(by_arm["defectfill"]) if "defectfill" in by_arm else None
    if target is None:
        out["met"] = None
        return out
    met = True
    for baseline, needed in GOAL_POINTS.items():
        value = mean_f(by_arm[baseline]) if baseline in by_arm else None
        if value is None:
            continue
        gain = 100.0 * (target - value)
        out[f"vs_{baseline}"] = {"gain_points": round(gain, 2), "needed_points": needed, "met": gain >= needed}
        met = met and gain >= needed
    out["met"] = met if any(k.startswith("vs_") for k in out) else None
    return out


def _sheet(path: Path, samples: list, max_images: int = 32) -> Path | None:
    from defectfill.viz import save_contact_sheet

    chosen = [s for s in samples if not s.is_good][:max_images]
    if not chosen:
        return None
    return save_contact_sheet(path, [s.image for s in chosen], [s.mask for s in chosen],
                              [s.defect_type for s in chosen], ncols=8, tile=96)


def _embed(path: Path) -> str:
    import base64

    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}" style="max-width:100%">'


def _bench_section(summary: dict, sheets: list[tuple[str, Path]]) -> str:
    """The bench's own part of report.html: protocol, base model warning, goal, seconds, sheets."""
    d = summary["protocol"]
    parts = ["<h2>Bench protocol</h2>"]
    for note in summary["notes"]:
        parts.append(f"<p style='background:#fee;border-left:4px solid #c00;padding:0.6em 1em;font-weight:bold'>"
                     f"{html.escape(note)}</p>")
    parts.append(
        f"<p>Source fabrics {html.escape(', '.join(d['source_textures']))}: {d['source_defects_per_type']} labelled "
        f"defects per type. Target (new) fabrics {html.escape(', '.join(d['target_textures']))}: "
        f"{d['target_good']} good images per texture for training; test = {d['test_defects_per_type']} defects per "
        f"type and {d['test_good']} good images per texture. Defect types: {html.escape(', '.join(d['defect_types']))}; "
        f"{d['image_size']} px. Every synthetic arm: {summary['budget']['synthetic_per_class']} images per class, "
        f"the same requests and seeds, {summary['budget']['num_candidates']} candidates each.</p>")
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


def _insert_section(page: Path, section: str) -> None:
    text = page.read_text()
    marker = "<h2>Results</h2>"
    text = text.replace(marker, section + "\n" + marker, 1) if marker in text else text.replace(
        "</body>", section + "\n</body>", 1)
    atomic_write_text(page, text)


def terminal_table(summary: dict, results: list[dict]) -> str:
    from defectfill.report.table import markdown_table, verdict

    lines = [markdown_table(results), verdict(results)]
    for key, value in summary["goal"].items():
        if key.startswith("vs_"):
            lines.append(f"goal defectfill {key.replace('_', ' ')}: {value['gain_points']:+.1f} points of mean pixel F "
                         f"(needed {value['needed_points']:+.0f}): {'met' if value['met'] else 'NOT met'}")
    lines += [f"WARNING: {note}" for note in summary["notes"]]
    return "\n".join(lines)


def run_bench(config: BenchConfig, out_dir: str | Path, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the bench of `config` in `out_dir`; returns the summary written to bench.json."""
    import torch

    config.validate()
    threads = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    try:
        return _run_bench(config, Path(out_dir), echo)
    finally:
        torch.set_num_threads(threads)


def _run_bench(config: BenchConfig, out_dir: Path, echo: Callable[[str], None]) -> dict[str, Any]:
    from defectfill.downstream.arm import RESULTS_NAME, run_arm
    from defectfill.report.html import write_report

    out_dir.mkdir(parents=True, exist_ok=True)
    _check_same_config(config, out_dir)
    stages = StageLog(out_dir / "stages.jsonl")
    downstream = downstream_config_for(config)

    # 1. the protocol's data
    stages.mark()
    data: BenchData = simulate_protocol(config, out_dir / "data")
    if not stages.done("simulate"):
        stages.record("simulate")
    echo(f"[bench] data in {out_dir / 'data'}")

    # 2. synthetic data: the same requests for every synthetic arm
    ctx = ArmContext(config, out_dir, data, stages=stages)
    if "defectfill" in config.arms:
        drop_random_base_results(ctx)
    manifests: dict[str, Path] = {}
    if config.synthetic_arms:
        requests = plan_requests(config, data)
        for name in config.synthetic_arms:
            ctx.options = dict(config.generator_options.get(name, {}))
            echo(f"[bench] generation {name}: {len(requests)} requests")
            manifests[name] = generate_arm(name, ctx, requests)

    # 3. every arm: same detector/segmenter, budget and seeds
    train = test = None
    results = []
    for name in config.arms:
        finished = (out_dir / "arms" / name / RESULTS_NAME).is_file()
        stages.mark()
        if not finished and train is None:
            train, test = data.real_training_samples(), data.test_samples()
        echo(f"[bench] arm {name}{' (finished, read back)' if finished else ''}")
        result = run_arm(name, train if train is not None else [], test if test is not None else [], downstream,
                         out_dir / "arms", manifests=[manifests[name]] if name in manifests else [])
        if not finished:
            stages.record(f"arm:{name}")
        results.append(result)

    # 4. report
    notes = list(dict.fromkeys(ctx.notes))
    base = defectfill_base_status(out_dir) if "defectfill" in config.arms else None
    if base and base.get("random_base"):
        warning = RANDOM_BASE_WARNING.format(base=config.defectfill.base_model, folder=ctx.work_dir("defectfill"))
        notes = list(dict.fromkeys([*notes, warning]))
    summary = {
        "name": config.name,
        "config": str(out_dir / CONFIG_NAME),
        "protocol": to_dict(config.data),
        "budget": to_dict(config.generation),
        "arms": {r["arm"]: {"mean_f_measure": mean_f(r),
                            "mAP50": (r.get("rtdetr") or {}).get("mAP50"),
                            "mAP50_95": (r.get("rtdetr") or {}).get("mAP50_95"),
                            "train_images": r.get("dataset", {}).get("train_images")} for r in results},
        "goal": goal_check(results),
        "defectfill_base": base,
        "notes": notes,
        "seconds": stages.seconds(),
        "cpu_seconds": stages.seconds("cpu_seconds"),
        "ran_this_time": list(stages.ran),
    }
    page = write_report(results, out_dir, title=f"defectfill bench: {config.name}")
    sheets = []
    if (sheet := _sheet(out_dir / "sheets" / "real_source_defects.png", data.source_defects())) is not None:
        sheets.append(("Real source defects (what every generator learns from)", sheet))
    if test is None:
        test = data.test_samples()
    if (sheet := _sheet(out_dir / "sheets" / "real_target_test.png", test)) is not None:
        sheets.append(("Real target test defects (never seen in training)", sheet))
    for name, folder in manifests.items():
        if (folder / "contact_sheet.png").is_file():
            sheets.append((f"Generated by {name} (changed-pixel labels outlined, LFS/selection score)",
                           folder / "contact_sheet.png"))
    _insert_section(page, _bench_section(summary, sheets))
    summary["report"] = str(page)
    atomic_write_json(out_dir / SUMMARY_NAME, summary)
    echo(terminal_table(summary, results))
    echo(f"[bench] report: {page}")
    return summary


def read_summary(out_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(out_dir) / SUMMARY_NAME).read_text())
