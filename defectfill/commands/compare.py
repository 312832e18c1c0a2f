"""`defectfill compare BEFORE AFTER`: did a change help? Two bench runs of one protocol, arm by arm.

Each arm finished in both runs (seed-<s>/arms/<arm>/results.json) is compared after − before by a
paired bootstrap over the test images, seeds shared by both runs pooled per image
(`report.seeds.compare_runs`): "no ranking" when the interval holds 0. The quality gate's rejections
of both runs (bench.json) are listed beside, and a note when the runs' code differs or is unknown
(bench.json "code"). Writes compare.json and compare.md to --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("before", type=Path, help="bench run folder: the reference")
    parser.add_argument("after", type=Path, help="bench run folder: the change, same protocol and test images")
    parser.add_argument("--arms", nargs="+", default=None, help="arms to compare (default: every arm in both)")
    parser.add_argument("--out", type=Path, default=None, help="where compare.json / compare.md go (default: AFTER)")


def read_arm_results(run_dir: Path) -> dict[int, list[dict]]:
    """{seed: [results.json of each finished arm]} of a bench run folder."""
    from defectfill.errors import ConfigError
    from defectfill.report.html import load_results

    run_dir = Path(run_dir)
    per_seed: dict[int, list[dict]] = {}
    for folder in sorted(run_dir.glob("seed-*/arms/*")):
        seed = folder.parent.parent.name.removeprefix("seed-")
        if (folder / "results.json").is_file() and seed.isdigit():
            per_seed.setdefault(int(seed), []).extend(load_results([folder]))
    if not per_seed:
        raise ConfigError(f"{run_dir}: no finished arm (seed-<s>/arms/<arm>/results.json); pass a bench run folder "
                          "written by `defectfill bench`")
    return per_seed


def _summary(run_dir: Path) -> dict:
    """The run's bench.json, or {} for a folder without one (arms copied or an unfinished run)."""
    from defectfill.bench.run import SUMMARY_NAME, read_summary

    return read_summary(run_dir) if (Path(run_dir) / SUMMARY_NAME).is_file() else {}


def code_note(before: dict, after: dict) -> str | None:
    """A note when the two runs' code differs or is unknown (bench.json "code"): then a difference may
    come from the code, not from the change compared."""
    a, b = (s.get("code") or {} for s in (before, after))
    if not a.get("commit") or not b.get("commit"):
        return ("the code version of one run is not recorded (a run older than this field, or not made in a git "
                "checkout): if the runs were made by different code, a difference may come from the code")
    if a["commit"] != b["commit"] or a.get("dirty") or b.get("dirty"):
        return (f"the runs were made by different code (before {a['commit'][:10]}{' + changes' if a.get('dirty') else ''}, "
                f"after {b['commit'][:10]}{' + changes' if b.get('dirty') else ''}): a difference may come from the code, "
                "not from the change compared")
    return None


def run(args: argparse.Namespace) -> int:
    from defectfill.io_utils import atomic_write_json, atomic_write_text
    from defectfill.report.seeds import compare_runs, comparison_table

    before, after = read_arm_results(args.before), read_arm_results(args.after)
    result = compare_runs(before, after, arms=args.arms)
    summaries = _summary(args.before), _summary(args.after)
    if note := code_note(*summaries):
        result["notes"].append(note)
    result.update({"before": str(args.before), "after": str(args.after),
                   "quality_gate": {"before": summaries[0].get("quality_gate"), "after": summaries[1].get("quality_gate")}})
    out = args.out or args.after
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "compare.json", result)
    lines = [f"# {args.after} against {args.before}", "", comparison_table(result), result["verdict"], ""]
    for which in ("before", "after"):
        for arm, counts in (result["quality_gate"][which] or {}).items():
            lines.append(f"- quality gate {which}, {arm}: {counts['rejected']} rejected, "
                         f"{counts['accepted_after_retry']} accepted after a retry, {counts['accepted']} at once")
    lines += [f"- {note}" for note in result["notes"]]
    atomic_write_text(out / "compare.md", "\n".join(lines) + "\n")
    print(comparison_table(result) + result["verdict"])
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"wrote {out / 'compare.md'}")
    return 0
