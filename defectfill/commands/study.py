"""`defectfill study fusion --run <bench run> --out <dir>`: the studies of DESIGN §8 on a finished
bench run (its data, seeds and generated sets), each writing results.json, table.md, plots, sheets
and report.html, resumable. `fusion`: one generator vs multistage fusion (seam statistics, a
classifier two-sample test, the bench's downstream F beside them). `labels`: box-label noise (the
detector trained with boxes per component, per instance, or long components split). `unknown`:
defect types never seen (runs its own bench per held-out type, so it takes no --run)."""

from __future__ import annotations

import argparse
from pathlib import Path

STUDIES = {"fusion": ("defectfill.studies.fusion", "FusionStudyConfig", "run_fusion_study", "study_fusion.yaml"),
           "labels": ("defectfill.studies.labels", "LabelsStudyConfig", "run_labels_study", "study_labels.yaml"),
           "unknown": ("defectfill.studies.unknown", "UnknownStudyConfig", "run_unknown_study", "study_unknown.yaml")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", choices=sorted(STUDIES), help="which study")
    parser.add_argument("--run", type=Path, default=None, help="a finished `defectfill bench` run folder (fusion, labels)")
    parser.add_argument("--out", type=Path, required=True, help="the study's folder (resumes what it holds)")
    parser.add_argument("--config", type=Path, default=None, help="the study's YAML (default: configs/study_<study>.yaml)")


def run(args: argparse.Namespace) -> int:
    import importlib

    from defectfill.config import REPO_ROOT, load_config
    from defectfill.errors import ConfigError
    from defectfill.locks import output_lock

    module_name, config_class, runner, default = STUDIES[args.study]
    if (args.run is None) != (args.study == "unknown"):
        raise ConfigError(f"study {args.study}: " + ("pass --run <a finished bench run folder>" if args.run is None
                                                     else "takes no --run (it runs its own bench per held-out type)"))
    module = importlib.import_module(module_name)
    config_path = args.config or REPO_ROOT / "configs" / default
    config = load_config(getattr(module, config_class), config_path)
    args.out.mkdir(parents=True, exist_ok=True)
    with output_lock(args.out):
        if args.study == "unknown":
            getattr(module, runner)(args.out, config, config_dir=Path(config_path).parent)
        else:
            getattr(module, runner)(args.run, args.out, config)
    print((args.out / "table.md").read_text())
    print(f"report: {args.out / 'report.html'}")
    return 0
