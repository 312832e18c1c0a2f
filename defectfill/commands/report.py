"""`defectfill report`: compare arms -> results.json, table.md, plots, contact sheets, report.html."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("arms", type=Path, nargs="+", help="arm run folders (or their results.json files)")
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument("--title", default="defectfill downstream comparison")


def run(args: argparse.Namespace) -> int:
    from defectfill.locks import output_lock
    from defectfill.report.html import load_results, write_report
    from defectfill.report.table import verdict

    with output_lock(args.out, command="report"):  # a second run on --out refuses
        results = load_results(args.arms)
        page = write_report(results, args.out, title=args.title)
    print(verdict(results))
    print(f"wrote {page}")
    return 0
