"""`defectfill study fusion --run <bench run> --out <dir>`: the studies of DESIGN §8 on a finished
bench run (its data, seeds and generated sets), each writing results.json, table.md, plots, sheets
and report.html, resumable. `fusion`: one generator vs multistage fusion (seam statistics, a
classifier two-sample test, the bench's downstream F beside them). `labels`: box-label noise (the
detector trained with boxes per component, per instance, or long components split)."""

from __future__ import annotations

import argparse
from pathlib import Path

STUDIES = {"fusion": ("defectfill.studies.fusion", "FusionStudyConfig", "run_fusion_study", "study_fusion.yaml"),
           "labels": ("defectfill.studies.labels", "LabelsStudyConfig", "run_labels_study", "study_labels.yaml")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", choices=sorted(STUDIES), help="which study")
    parser.add_argument("--run", type=Path, required=True, help="a finished `defectfill bench` run folder")
    parser.add_argument("--out", type=Path, required=True, help="the study's folder (resumes what it holds)")
    parser.add_argument("--config", type=Path, default=None, help="the study's YAML (default: configs/study_<study>.yaml)")


def run(args: argparse.Namespace) -> int:
    import importlib

    from defectfill.config import REPO_ROOT, load_config
    from defectfill.locks import output_lock

    module_name, config_class, runner, default = STUDIES[args.study]
    module = importlib.import_module(module_name)
    config = load_config(getattr(module, config_class), args.config or REPO_ROOT / "configs" / default)
    args.out.mkdir(parents=True, exist_ok=True)
    with output_lock(args.out):
        getattr(module, runner)(args.run, args.out, config)
    print((args.out / "table.md").read_text())
    print(f"report: {args.out / 'report.html'}")
    return 0
