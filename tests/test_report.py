"""Report: the verdict sentence, the table and the HTML page from hand-made results."""

from __future__ import annotations

import json

import pytest

from defectfill.report.html import load_results, write_report
from defectfill.report.table import markdown_table, verdict


def _arm(name, mean_f, map50, map50_95, f_stain=None, f_hole=None, synthetic=0):
    per_class = {"stain": {"f_measure": f_stain}, "hole": {"f_measure": f_hole}}
    curve = [1.0] * 51 + [0.0] * 50
    return {
        "arm": name,
        "dataset": {"train_images": {"real": 10, "synthetic": synthetic}},
        "deeplab": {"mean_f_measure": mean_f, "per_class": per_class, "definition": "pixel-level F"},
        "rtdetr": {"mAP50": map50, "mAP50_95": map50_95, "detection_rate": 0.5, "false_alarm_rate": 0.0,
                   "pr_curve_iou50": {"stain": curve, "hole": None}},
        "generation": None if not synthetic else {"kid": {"kid_x1000": 3.0, "feature_extractor": "net X (offline substitute)"}},
    }


def test_verdict_names_the_arm_that_leads_every_metric():
    results = [_arm("real_only", 0.30, 0.20, 0.10), _arm("cutpaste", 0.40, 0.25, 0.12, synthetic=5)]
    sentence = verdict(results)
    assert sentence.startswith("**cutpaste** won: best on every downstream metric")
    assert "cutpaste 0.400 vs real_only 0.300" in sentence


def test_verdict_counts_metrics_and_reports_ties():
    split = [_arm("a", 0.50, 0.20, 0.10), _arm("b", 0.40, 0.30, 0.20)]
    assert verdict(split).startswith("**b** won 2 of 3 downstream metrics")
    tied = [_arm("a", 0.300, 0.2, 0.1), _arm("b", 0.302, 0.2, 0.1)]
    assert verdict(tied).startswith("No arm won: every downstream metric is tied within 0.005")
    assert verdict(tied[:1]).startswith("Only one arm")
    even = [_arm("a", 0.5, 0.2, 0.1), _arm("b", 0.4, 0.3, 0.1)]  # one metric each, mAP50-95 tied
    assert verdict(even).startswith("No single arm won: a and b each lead 1 of 2")


def test_table_shows_na_for_missing_values():
    table = markdown_table([_arm("real_only", 0.3, 0.2, 0.1, f_stain=0.6, f_hole=None)])
    header, _rule, row = table.strip().splitlines()
    assert "mean pixel F (segmenter)" in header and "F stain" in header and "F hole" in header
    assert row.startswith("| real_only | 10+0 | 0.300 | 0.100 | 0.200 |")
    assert row.endswith("| 0.600 | n/a |")


def test_html_report_is_self_contained(tmp_path):
    results = [_arm("real_only", 0.30, 0.20, 0.10, 0.3, 0.3), _arm("cutpaste", 0.40, 0.25, 0.12, 0.5, 0.3, synthetic=5)]
    page = write_report(results, tmp_path)
    text = page.read_text()
    assert "cutpaste won: best on every downstream metric" in text
    assert text.count("data:image/png;base64,") == 3  # F bars, mAP bars, PR curves
    assert "src=\"http" not in text and "href=" not in text
    assert "net X (offline substitute)" in text  # the metric's feature extractor is named
    assert (tmp_path / "plots" / "pr_curves.png").is_file()
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert load_results([tmp_path / "results.json"]) == results
    from defectfill.errors import DataError

    with pytest.raises(DataError, match="no results.json"):
        load_results([tmp_path / "missing"])
