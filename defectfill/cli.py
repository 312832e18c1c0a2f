"""The `defectfill` command line.

Each verb lives in its own module `defectfill/commands/<verb>.py`, which defines
`add_arguments(parser)` and `run(args) -> int`. Modules are imported only when their verb runs,
so `defectfill --help` is fast and a verb's heavy dependencies load only when needed.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from defectfill.errors import DefectfillError

# verb -> (module, one-line help). The order is the order of a user's work.
COMMANDS: dict[str, tuple[str, str]] = {
    "fabric": ("defectfill.commands.fabric", "simulate fabric images with exact defect masks (MVTec-AD layout)"),
    "data": ("defectfill.commands.data", "inspect (info) or convert (convert) a defect dataset"),
    "pretrain-base": ("defectfill.commands.pretrain_base", "train the small offline base inpainting model"),
    "train": ("defectfill.commands.train", "train DefectFill concepts on a few real defects"),
    "generate": ("defectfill.commands.generate", "generate defects into good images (with Low-Fidelity Selection)"),
    "assemble": ("defectfill.commands.assemble", "combine real data and generation manifests into a training set"),
    "finetune": ("defectfill.commands.finetune", "fine-tune RT-DETR or DeepLabV3 on an assembled dataset"),
    "evaluate": ("defectfill.commands.evaluate", "evaluate trained detectors/segmenters on a test set"),
    "openset": ("defectfill.commands.openset", "find defects with a trained DGT model: known type or 'unknown defect'"),
    "report": ("defectfill.commands.report", "write the HTML/markdown report of one or more arms"),
    "bench": ("defectfill.commands.bench", "run the benchmark protocol (arms x detectors) and report"),
    "compare": ("defectfill.commands.compare", "two bench runs arm by arm (after - before, paired intervals)"),
    "demo": ("defectfill.commands.demo", "the small CPU bench end to end: simulate, train, generate, fine-tune, report"),
    "real": ("defectfill.commands.real", "the real-stain bench (configs/bench_real_stains.yaml): real vs + cut-paste vs + DefectFill"),
    "study": ("defectfill.commands.study", "the studies of the method notes on a bench run (fusion: seams and realism)"),
    "app": ("defectfill.commands.app", "make and curate defects by hand in a browser (needs defectfill[app])"),
}


def _load(verb: str):
    module, _ = COMMANDS[verb]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise


def build_parser(verbs: list[str] | None = None) -> argparse.ArgumentParser:
    from defectfill import __version__

    parser = argparse.ArgumentParser(prog="defectfill", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"defectfill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for verb, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(verb, help=help_text, description=help_text)
        if verbs is not None and verb in verbs:
            module = _load(verb)
            if module is not None:
                module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser([verb] if verb in COMMANDS else [])
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    module = _load(args.command)
    if module is None:
        print(f"defectfill {args.command}: not available in this version", file=sys.stderr)
        return 2
    try:
        return int(module.run(args) or 0)
    except DefectfillError as exc:
        print(f"defectfill {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
