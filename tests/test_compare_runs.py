"""`defectfill compare`: two bench runs arm by arm, after − before with paired intervals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from defectfill.cli import main
from defectfill.errors import ConfigError


def _write_arm(run: Path, seed: int, arm: str, tp: int, fp: int, fn: int, images: int = 12) -> None:
    folder = run / f"seed-{seed}" / "arms" / arm
    folder.mkdir(parents=True)
    counts = [[[tp + (i % 3), fp, fn + (i % 2)]] for i in range(images)]  # one class, per image
    (folder / "results.json").write_text(json.dumps({"arm": arm, "deeplab": {"per_image_counts": counts}}))


def test_compare_ranks_a_clear_change_and_not_an_unchanged_arm(tmp_path: Path, capsys):
    before, after = tmp_path / "before", tmp_path / "after"
    for seed in (0, 1, 2):
        _write_arm(before, seed, "cutpaste", tp=20, fp=10, fn=10)
        _write_arm(after, seed, "cutpaste", tp=20, fp=10, fn=10)  # unchanged
        _write_arm(before, seed, "defectfill", tp=10, fp=20, fn=20)
        _write_arm(after, seed, "defectfill", tp=25, fp=5, fn=5)  # better on every image
    _write_arm(after, 0, "r3gan", tp=5, fp=5, fn=5)  # only in one run
    (after / "bench.json").write_text(json.dumps({"quality_gate": {"defectfill": {
        "rejected": 2, "accepted_after_retry": 3, "accepted": 10}}, "code": {"commit": "b" * 40, "dirty": False}}))
    (before / "bench.json").write_text(json.dumps({"code": {"commit": "a" * 40, "dirty": False}}))
    assert main(["compare", str(before), str(after)]) == 0
    out = capsys.readouterr().out
    result = json.loads((after / "compare.json").read_text())
    rows = {c["arm"]: c for c in result["comparisons"]}
    assert set(rows) == {"cutpaste", "defectfill"}  # r3gan ran only after
    assert rows["cutpaste"]["holds_zero"] and rows["cutpaste"]["diff"] == 0
    assert not rows["defectfill"]["holds_zero"] and rows["defectfill"]["low"] > 0 and rows["defectfill"]["seeds"] == [0, 1, 2]
    assert "defectfill: after ranks above" in out and "cutpaste vs cutpaste before" in out and "no ranking" in out
    assert "made by different code (before aaaaaaaaaa, after bbbbbbbbbb)" in out
    md = (after / "compare.md").read_text()
    assert "quality gate after, defectfill: 2 rejected, 3 accepted after a retry" in md
    # an arm asked for but missing from one run is a note, not a made-up row
    assert main(["compare", str(before), str(after), "--arms", "r3gan", "--out", str(tmp_path / "c")]) == 0
    assert "r3gan: not scored in both runs" in capsys.readouterr().out


def test_compare_refuses_a_folder_without_finished_arms(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    _write_arm(tmp_path / "run", 0, "cutpaste", 1, 1, 1)
    with pytest.raises(ConfigError, match="no finished arm"):
        from defectfill.commands.compare import read_arm_results

        read_arm_results(tmp_path / "empty")


def test_code_notes_name_unknown_and_equal_code():
    from defectfill.bench.run import code_version
    from defectfill.commands.compare import code_note

    same = {"code": {"commit": "c" * 40, "dirty": False}}
    assert code_note(same, same) is None
    assert "not recorded" in code_note({}, same)
    assert "+ changes" in code_note(same, {"code": {"commit": "c" * 40, "dirty": True}})
    code = code_version()
    from defectfill import __version__

    assert code["version"] == __version__
    assert code["commit"] is None or (len(code["commit"]) == 40 and isinstance(code["dirty"], bool))
