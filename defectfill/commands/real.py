"""`defectfill real`: the real-data run (real stains on woven fabric), resumable.

    defectfill real --config configs/bench_real_stains.yaml [--out runs/real-stains] [--set seeds=[0,1,2] ...]

Fixed split of the real folder (sorted stems), a DefectFill stain concept and cut-paste fitted on
the training half, stains generated into its defect-free regions, DeepLabV3 (and RT-DETR when the
downstream config names it) fine-tuned per arm and seed, evaluated on the other half. Writes
summary.json, table.md and contact_sheet.png into --out and prints the table. Run it again to
resume. See defectfill.realdata.stains_run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from defectfill.config import add_set_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="real-data YAML (configs/bench_real_stains.yaml)")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default runs/<config name>)")
    add_set_argument(parser, "seeds=[0,1]")


def run(args: argparse.Namespace) -> int:
    from defectfill.config import parse_overrides
    from defectfill.env import offline_env
    from defectfill.realdata.stains_run import load_real_stains_config, run_real_stains

    offline_env()
    config = load_real_stains_config(args.config, parse_overrides(args.overrides))
    out = args.out if args.out is not None else Path("runs") / config.name
    summary = run_real_stains(config, out)
    print((out / "table.md").read_text())
    print(f"summary: {out / 'summary.json'}\ncontact sheet: {summary['contact_sheet']}")
    return 0
