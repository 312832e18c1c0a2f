"""The real-stain bench (configs/bench_real_stains.yaml) at seconds scale: 4 train / 4 test real
stains at 64 px, a DefectFill concept trained for 2 steps on a tiny random base, 2 DDIM steps,
DeepLabV3 for 1 epoch, 2 seeds. Skipped when ../shared/data/hsst-stains is absent. The figures mean
nothing; the test checks the split, the requests, the labels, the per-seed arms, the intervals and
the resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from defectfill.bench.config import load_bench_config
from defectfill.bench.protocol import load_folder_data
from defectfill.errors import ConfigError
from defectfill.training.data import concept_training_crops

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _micro_config(tmp_path: Path, data_dir: Path, base: str) -> Path:
    config = yaml.safe_load((CONFIGS / "bench_real_stains.yaml").read_text())
    config.update(name="micro-real", seeds=[0, 1], arms=["real_only", "cutpaste", "defectfill"])
    config["data"]["folders"].update(folder=str(data_dir), image_size=64, max_train_images=4, max_test_images=4)
    config["generation"].update(per_image=1, num_candidates=2)
    config["generators"]["defectfill"].update(base_model=base, train_config=str(CONFIGS / "defectfill_tiny.yaml"),
                                              num_inference_steps=2)
    config["generators"]["defectfill"]["train_overrides"].update(max_train_steps=2, lr_warmup_steps=1,
                                                                 checkpointing_steps=1000)
    config["downstream"]["config"] = str(CONFIGS / "downstream_tiny.yaml")
    config["downstream"]["overrides"].update({"deeplab.epochs": 1, "deeplab.image_size": 64, "evaluation.kid_subsets": 5})
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_shipped_config_loads_and_rejects_unknown_keys(tmp_path):
    config = load_bench_config(CONFIGS / "bench_real_stains.yaml")
    assert config.run_seeds == [0, 1, 2] and config.data.folders.split.rule == "alternate"
    bad = yaml.safe_load((CONFIGS / "bench_real_stains.yaml").read_text())
    bad["data"]["folders"]["imagesize"] = 64
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="imagesize"):
        load_bench_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="arms"):
        load_bench_config(CONFIGS / "bench_real_stains.yaml", {"arms": ["real_only", "gan"]})


def test_split_is_fixed_alternating_sorted_stems(hsst_stains_dir):
    from defectfill.bench.run import bench_requests

    config = load_bench_config(CONFIGS / "bench_real_stains.yaml", {"data.folders.folder": str(hsst_stains_dir),
                                                                    "data.folders.image_size": 64})
    data = load_folder_data(config)
    stems = sorted(p.stem for p in (hsst_stains_dir / "images").iterdir())
    assert data.description["train"] == stems[0::2] and data.description["test"] == stems[1::2]
    train, test = data.training_images(), data.test_samples()
    good = [s.meta["name"] for s in train + test if s.is_good]
    assert good == ["2024_12_10_13_41_18_407_256_256"]  # the all-zero mask is a good image
    for s in train + test:
        assert s.image.shape == (64, 64, 3) and s.is_gray
        assert np.array_equal(s.image[..., 0], s.image[..., 2])
        assert s.is_good or s.mask.any()  # resizing keeps even the smallest stain
    crops = concept_training_crops(train, resolution=32)
    assert len(crops) >= sum(not s.is_good for s in train)
    assert all(c.image.shape == (32, 32, 3) and c.mask.any() for c in crops)

    # requests: inside the defect-free region of their image, reproducible per seed, new per seed
    def proposed(seed):
        requests, masks = bench_requests(config, data, seed)
        assert len(requests) == len(train) * config.generation.per_image
        return requests, [masks.propose(r, r.source.size, r.source.mask) for r in requests]

    requests, first = proposed(0)
    for r, mask in zip(requests, first):
        assert mask.any() and not (mask & r.source.mask).any()
    assert all(np.array_equal(a, b) for a, b in zip(first, proposed(0)[1]))
    assert not all(np.array_equal(a, b) for a, b in zip(first, proposed(1)[1]))


def test_real_stain_bench_end_to_end(hsst_stains_dir, tmp_path):
    from defectfill.bench.run import run_bench
    from defectfill.data.images import load_mask
    from defectfill.generators.manifest import read_generation_manifest

    torch.set_num_threads(1)
    # a base folder that does not exist: the run falls back to a random tiny base and says so
    config = load_bench_config(_micro_config(tmp_path, hsst_stains_dir, str(tmp_path / "no-base")))
    out = tmp_path / "run"
    summary = run_bench(config, out, echo=lambda _: None)

    assert summary["protocol"]["counts"] == {"source_defects": 4, "target_good": 0, "test": 4, "test_defects": 3}
    assert set(summary["arms"]) == {"real_only", "cutpaste", "defectfill"}
    for arm, stats in summary["arms"].items():
        assert stats["mean_f"]["n"] == 2
        for seed in (0, 1):
            results = json.loads((out / f"seed-{seed}" / "arms" / arm / "results.json").read_text())
            assert results["test_images"] == 4 and results["config"]["seed"] == seed
            assert results["deeplab"]["mean_f_measure"] == stats["mean_f"]["values"][seed]
    # synthetic images keep their real stain labelled, plus the new one
    train = {s.meta["name"]: s.mask for s in load_folder_data(config).training_images()}
    for arm in ("cutpaste", "defectfill"):
        items = read_generation_manifest(out / "seed-0" / "generated" / arm)
        assert len(items) == 4
        for item in items:
            changed, real = load_mask(item.changed_mask), train[item.source_image]
            assert (changed & real).sum() == real.sum()
            assert not (changed & ~real & ~load_mask(item.request_mask)).any()
    assert summary["generators"]["defectfill"]["random_base"] is True
    assert any("RANDOM" in note for note in summary["notes"])
    assert {(c["arm"], c["baseline"]) for c in summary["comparisons"]} == {
        ("cutpaste", "real_only"), ("defectfill", "real_only"), ("defectfill", "cutpaste")}
    assert (out / "sheets" / "crops.png").is_file() and summary["verdict"] in (out / "table.md").read_text()
    # resume: every arm is read back, nothing retrained
    again = run_bench(load_bench_config(_micro_config(tmp_path, hsst_stains_dir, str(tmp_path / "no-base"))), out,
                      echo=lambda _: None)
    assert again["ran_this_time"] == [] and again["comparisons"] == summary["comparisons"]


def test_defectfill_real_is_the_bench(tmp_path, capsys):
    from defectfill.cli import main

    assert main(["real", "--config", str(tmp_path / "none.yaml")]) == 1
    assert "does not exist" in capsys.readouterr().err
