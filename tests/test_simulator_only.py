"""The "simulator only" arm (issue 20): the segmenter trained on simulator renders alone, scored on
the real test set, beside real-only in the bench; renders, resume and config checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from defectfill.bench.config import load_bench_config
from defectfill.bench.run import _check_same_config, run_bench
from defectfill.downstream.pretrain import SimulatorOnlyConfig, render_set
from defectfill.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_renders_follow_the_schedule_and_the_class_map():
    config = SimulatorOnlyConfig(good_every=4, render={"spot": ["stain", "oil"]})
    samples = render_set(config, ["spot", "hole"], ["plain", "twill"], 8, 0, 32)
    assert [s.defect_type for s in samples] == ["spot", "hole", "spot", "good"] * 2
    assert [s.is_gray for s in samples] == [True, False] * 4
    assert all(s.mask.any() for s in samples if s.defect_type != "good")
    assert not any(s.mask.any() for s in samples if s.defect_type == "good")
    again = render_set(config, ["spot", "hole"], ["plain", "twill"], 8, 0, 32)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(samples, again))  # seeded
    plain = render_set(SimulatorOnlyConfig(good_every=4, photometric=False, render={"spot": ["stain", "oil"]}),
                       ["spot", "hole"], ["plain", "twill"], 8, 0, 32)
    assert not all(np.array_equal(a.image, b.image) for a, b in zip(samples, plain))  # augmentation on
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(samples, plain))          # labels unchanged


@pytest.mark.parametrize("config, classes, message", [
    (SimulatorOnlyConfig(), ["scratch"], "map it with"),
    (SimulatorOnlyConfig(render={"stain": ["paint"]}), ["stain"], "not simulator defect types"),
    (SimulatorOnlyConfig(textures=["velvet"]), ["stain"], "not simulator textures"),
    (SimulatorOnlyConfig(render={"hole": ["hole"]}), ["stain"], "does not have"),
    (SimulatorOnlyConfig(epochs=0), ["stain"], ">= 1"),
])
def test_simulator_only_config_errors_name_the_fix(config, classes, message):
    with pytest.raises(ConfigError, match=message):
        config.check(classes)


def test_bench_simulator_only_arm_beside_real_only(tmp_path):
    overrides = {"arms": ["real_only", "simulator_only"], "seeds": [0],
                 "simulator_only": {"renders": 12, "heldout": 4, "epochs": 1}}
    config = load_bench_config(CONFIGS / "bench_micro.yaml", overrides)
    summary = run_bench(config, tmp_path / "run", echo=lambda line: None)
    result = json.loads((tmp_path / "run" / "seed-0" / "arms" / "simulator_only" / "results.json").read_text())
    assert result["dataset"]["train_images"] == {"real": 0, "synthetic": 12}
    assert "satin" not in result["dataset"]["simulator"]["textures"]  # the target fabric is never rendered
    assert "plain" in result["dataset"]["simulator"]["textures"]
    assert set(result["deeplab"]["per_class"]) == {"stain", "hole"}
    assert result["test_images"] == 5 and "rtdetr" not in result
    renders = tmp_path / "run" / "seed-0" / "arms" / "simulator_only" / "renders"
    assert len(list((renders / "images" / "train").iterdir())) == 12
    assert len(list((renders / "images" / "val").iterdir())) == 4
    assert set(summary["arms"]) == {"real_only", "simulator_only"}
    assert "simulator_only" in summary["verdict"] or "No ranking" in summary["verdict"]
    again = run_bench(load_bench_config(CONFIGS / "bench_micro.yaml", overrides), tmp_path / "run", echo=lambda line: None)
    assert again["ran_this_time"] == []  # finished arms are read back


def test_a_run_made_before_a_config_section_existed_still_resumes(tmp_path):
    """bench_config.yaml written without `simulator_only` (an older run) counts as its default."""
    import yaml

    config = load_bench_config(CONFIGS / "bench_micro.yaml")
    _check_same_config(config, tmp_path)
    saved = yaml.safe_load((tmp_path / "bench_config.yaml").read_text())
    del saved["simulator_only"]
    (tmp_path / "bench_config.yaml").write_text(yaml.safe_dump(saved))
    _check_same_config(config, tmp_path)
    saved["simulator_only"] = {"renders": 480}  # a section saved before one of its keys existed
    (tmp_path / "bench_config.yaml").write_text(yaml.safe_dump(saved))
    _check_same_config(config, tmp_path)
    with pytest.raises(ConfigError, match="simulator_only"):
        _check_same_config(load_bench_config(CONFIGS / "bench_micro.yaml", {"simulator_only": {"epochs": 2}}), tmp_path)



def test_start_arms_begins_every_arm_from_the_seeds_simulator_segmenter(tmp_path):
    overrides = {"arms": ["real_only"], "seeds": [0],
                 "simulator_only": {"renders": 8, "heldout": 4, "epochs": 1, "start_arms": True}}
    run_bench(load_bench_config(CONFIGS / "bench_micro.yaml", overrides), tmp_path / "run", echo=lambda line: None)
    arms = tmp_path / "run" / "seed-0" / "arms"
    info = json.loads((arms / "real_only" / "deeplab" / "best.json").read_text())
    assert info["config"]["init_weights"] == str(arms / "simulator_only" / "deeplab" / "best.safetensors")
    assert (arms / "simulator_only" / "deeplab" / "best.safetensors").is_file()  # trained first, even when not an arm
