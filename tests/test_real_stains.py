"""The real-data run at seconds scale: 4 train / 4 test real stains at 64 px, a DefectFill concept
trained for 2 steps on a tiny random base, 2 DDIM steps, DeepLabV3 for 1 epoch, 2 seeds.
Skipped when ../shared/data/hsst-stains is absent. The figures mean nothing; the test checks the
split, the requests, the labels, the per-seed arms, the summary and the resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from defectfill.config import load_config
from defectfill.errors import ConfigError
from defectfill.models.plugin import concept_training_crops
from defectfill.realdata.stains_run import (
    RealStainsConfig,
    load_real_stains_config,
    load_split,
    plan_requests,
    run_real_stains,
    summarise,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _micro_config(tmp_path: Path, data_dir: Path, base: str) -> Path:
    config = yaml.safe_load((CONFIGS / "bench_real_stains.yaml").read_text())
    config.update(name="micro-real", seeds=[0, 1])
    config["data"].update(data_dir=str(data_dir), image_size=64, max_train_images=4, max_test_images=4)
    config["generation"].update(per_image=1, num_candidates=2)
    config["generators"]["defectfill"].update(base_model=base, train_config=str(CONFIGS / "defectfill_tiny.yaml"),
                                              num_inference_steps=2)
    config["generators"]["defectfill"]["train_overrides"].update(max_train_steps=2, lr_warmup_steps=1, checkpointing_steps=1000)
    config["downstream"]["config"] = str(CONFIGS / "downstream_tiny.yaml")
    config["downstream"]["overrides"].update({"deeplab.epochs": 1, "deeplab.image_size": 64, "evaluation.kid_subsets": 5})
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_shipped_config_loads_and_rejects_unknown_keys(tmp_path):
    config = load_config(RealStainsConfig, CONFIGS / "bench_real_stains.yaml").validate()
    assert config.seeds == [0, 1, 2] and config.data.split == "alternate"
    bad = yaml.safe_load((CONFIGS / "bench_real_stains.yaml").read_text())
    bad["data"]["imagesize"] = 64
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="imagesize"):
        load_real_stains_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="arms"):
        load_real_stains_config(CONFIGS / "bench_real_stains.yaml", {"arms": ["real_only", "gan"]})


def test_split_is_fixed_alternating_sorted_stems(hsst_stains_dir, tmp_path):
    config = load_config(RealStainsConfig, CONFIGS / "bench_real_stains.yaml")
    config.data.data_dir, config.data.image_size = str(hsst_stains_dir), 64
    train, test = load_split(config)
    stems = sorted(p.stem for p in (hsst_stains_dir / "images").iterdir())
    assert [s.meta["name"] for s in train] == stems[0::2]
    assert [s.meta["name"] for s in test] == stems[1::2]
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
        requests, masks = plan_requests(train, config, seed=seed)
        assert len(requests) == len(train) * config.generation.per_image
        return requests, [masks.propose(r, r.source.size, r.source.mask) for r in requests]

    requests, first = proposed(0)
    for r, mask in zip(requests, first):
        assert mask.any() and not (mask & r.source.mask).any()
    assert all(np.array_equal(a, b) for a, b in zip(first, proposed(0)[1]))
    assert not all(np.array_equal(a, b) for a, b in zip(first, proposed(1)[1]))


def test_summary_mean_and_spread():
    per_seed = {s: {"real_only": {"deeplab": {"per_class": {"stain": {"f_measure": f, "precision": None, "recall": 0.5}}}}}
                for s, f in enumerate([0.2, 0.4, 0.6])}
    stats = summarise(per_seed, "stain")["real_only"]
    assert stats["deeplab_f"]["mean"] == pytest.approx(0.4)
    assert stats["deeplab_f"]["std"] == pytest.approx(0.2)
    assert (stats["deeplab_f"]["min"], stats["deeplab_f"]["max"], stats["deeplab_f"]["n"]) == (0.2, 0.6, 3)
    assert "deeplab_precision" not in stats and stats["deeplab_recall"]["std"] == 0.0


def test_real_stains_run_end_to_end(hsst_stains_dir, tmp_path):
    from defectfill.data.images import load_mask
    from defectfill.generators.manifest import read_generation_manifest

    torch.set_num_threads(1)
    # a base folder that does not exist: the run falls back to a random tiny base and says so
    config = load_real_stains_config(_micro_config(tmp_path, hsst_stains_dir, str(tmp_path / "no-base")))
    out = tmp_path / "run"
    summary = run_real_stains(config, out)

    split = json.loads((out / "split.json").read_text())
    assert len(split["train"]) == 4 and len(split["test"]) == 4 and not set(split["train"]) & set(split["test"])
    stats = summary["summary"]
    assert set(stats) == {"real_only", "cutpaste", "defectfill"}
    for arm in stats:
        assert stats[arm]["deeplab_f"]["n"] == 2
        for seed in (0, 1):
            results = json.loads((out / f"seed-{seed}" / arm / "results.json").read_text())
            assert results["test_images"] == 4 and results["config"]["seed"] == seed
            assert results["deeplab"]["per_class"]["stain"]["f_measure"] == stats[arm]["deeplab_f"]["values"][seed]
    # synthetic images keep their real stain labelled, plus the new one
    train_masks = {s.meta["name"]: s.mask for s in load_split(config)[0]}
    for arm in ("cutpaste", "defectfill"):
        items = read_generation_manifest(out / "seed-0" / "generated" / arm)
        assert len(items) == 4
        for item in items:
            changed = load_mask(item.changed_mask)
            assert (changed & train_masks[item.source_image]).sum() == train_masks[item.source_image].sum()
            assert not (changed & ~train_masks[item.source_image] & ~load_mask(item.request_mask)).any()
    pairs = {(c["arm"], c["baseline"]) for c in summary["comparisons"]}
    assert pairs == {("cutpaste", "real_only"), ("defectfill", "real_only"), ("defectfill", "cutpaste")}
    assert all(c["seeds"] == [0, 1] and c["num_images"] == 4 for c in summary["comparisons"])
    assert summary["verdict"] in (out / "table.md").read_text()
    assert summary["generators"]["defectfill"]["random_base"] is True
    assert any("RANDOM tiny base" in note for note in summary["notes"])
    assert (out / "contact_sheet.png").is_file() and "defectfill" in (out / "table.md").read_text()
    # the sign of the stains: generated contrast per arm, the real test stains' in a note
    assert stats["cutpaste"]["contrast"]["n"] == 2 and "contrast" not in stats["real_only"]
    assert any(note.startswith("contrast:") and "real test stains" in note for note in summary["notes"])
    # resume: every arm is read back, nothing retrained
    again = run_real_stains(config, out)
    assert again["summary"] == summary["summary"]
    assert not any(k.startswith(("build:", "generate:")) for k in again["stage_seconds_this_call"])
