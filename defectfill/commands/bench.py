"""`defectfill bench`: the benchmark protocol (DESIGN §6) on the fabric simulator, resumable.

    defectfill bench --config configs/bench_demo.yaml [--out runs/bench-demo] [--set data.image_size=128 ...]

Source fabrics with a few labelled defects, target (new) fabrics with good images only; arms
real_only, cutpaste, defectfill (+ every registered generator) trained with the same
segmenter/detector, budget and seeds, evaluated on defects of the target fabrics. Writes
report.html, results.json, table.md, bench.json into --out and prints the table. Run it again
to resume: finished steps are read back, not recomputed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from defectfill.config import add_set_argument, parse_overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="bench YAML (configs/bench_*.yaml)")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default runs/bench-<config name>)")
    add_set_argument(parser, "generation.synthetic_per_class=10")


def run_config(config_path: Path, out: Path | None, overrides: dict[str, Any] | None = None) -> int:
    from defectfill.bench.config import load_bench_config
    from defectfill.bench.run import run_bench
    from defectfill.env import offline_env
    from defectfill.locks import output_lock

    offline_env()
    config = load_bench_config(config_path, overrides)
    out = out if out is not None else Path("runs") / f"bench-{config.name}"
    with output_lock(out, command="bench"):
        summary = run_bench(config, out)
    print(f"report: {summary['report']}")
    return 0


def run(args: argparse.Namespace) -> int:
    return run_config(args.config, args.out, parse_overrides(args.overrides))
