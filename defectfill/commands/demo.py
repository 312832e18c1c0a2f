"""`defectfill demo`: the small CPU bench end to end (what `make demo` runs).

    defectfill demo [--out runs/demo]

simulate fabrics -> train DefectFill concepts on the offline base model -> generate defects
(with Low-Fidelity Selection) into good images of new fabrics -> fine-tune the segmenter for each
arm (real only, + cut-paste, + DefectFill) -> evaluate on real defects of the new fabrics ->
report. Settings: configs/bench_demo.yaml (sized for about 15 minutes on 2 CPU cores). Prints
where the report is. Run it again to resume.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from defectfill.errors import ConfigError

DEMO_CONFIG = "configs/bench_demo.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default runs/demo)")
    parser.add_argument("--config", type=Path, default=None, help=f"bench YAML (default {DEMO_CONFIG})")


def run(args: argparse.Namespace) -> int:
    from defectfill.bench.config import resolve_path
    from defectfill.commands.bench import run_config

    config = args.config if args.config is not None else resolve_path(DEMO_CONFIG)
    if config is None:
        raise ConfigError(f"{DEMO_CONFIG} not found in the working directory or the repository; pass --config")
    return run_config(Path(config), args.out)
