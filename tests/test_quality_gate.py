"""The quality gate of the generation runner: hand-made fills (one that changes nothing, one that
re-synthesises cloth, a strong stain, one strong only on retry), the calibration from given real
defects, the counts in quality_gate.json / rejected.jsonl, and a resumed run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from defectfill.data.sample import DefectSample
from defectfill.errors import ConfigError
from defectfill.generators.manifest import generation_complete, read_generation_manifest
from defectfill.generators.quality import (
    RETRY_SEED_STRIDE,
    QualityGate,
    QualityGateConfig,
    defect_statistics,
    retry_seed,
)
from defectfill.generators.requests import plan_requests
from defectfill.generators.runner import run_generation
from defectfill.generators.shared import WindowedGenerator, numpy_rng


def cloth(seed: int = 0, size: int = 48) -> np.ndarray:
    """Plain-weave-like texture (period 4 px) with a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    grey = 128 + 30 * np.sin(xx * np.pi / 2) * np.sin(yy * np.pi / 2) + rng.normal(0, 3, (size, size))
    return np.repeat(grey.clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)


def blob(size: int = 48, center=(24, 24), radius: int = 6) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


def real_stains(contrasts: list[float]) -> list[DefectSample]:
    """Real 'stain' samples whose blob is darker than the cloth by roughly each of `contrasts`."""
    samples = []
    for i, c in enumerate(contrasts):
        image, mask = cloth(100 + i), blob()
        image = image.astype(np.float32)
        image[mask] -= c
        samples.append(DefectSample(image=image.clip(0, 255).astype(np.uint8), mask=mask, defect_type="stain"))
    return samples


class HandMade(WindowedGenerator):
    """Fills by kind: "nothing" (returns the window), "cloth" (the window's texture shifted by half a
    period: many pixels change, nothing reads as a defect), "stain" (darker by 60 levels),
    "lucky" (a stain only when the seed's first draw is below 0.3, else cloth)."""

    name = "handmade"
    resolution = 48

    def __init__(self, kind: str):
        self.kind, self.calls = kind, 0

    @property
    def defect_types(self):
        return ["stain"]

    def fill(self, window, mask, *, num_candidates, defect_type, rng):
        self.calls += 1
        kind = self.kind
        if kind == "lucky":
            kind = "stain" if numpy_rng(rng).uniform() < 0.3 else "cloth"
        out = np.repeat(window[None], num_candidates, axis=0).astype(np.float32)
        if kind == "cloth":
            out = np.roll(out, 2, axis=2)
        elif kind == "stain":
            out[:, mask] -= 60
        return out.clip(0, 255).astype(np.uint8)


@pytest.fixture
def gate() -> QualityGate:
    return QualityGate.calibrate(real_stains([20, 25, 30, 35, 40, 45, 50, 55, 60, 65]),
                                 QualityGateConfig(max_retries=2))


def requests_for(count: int, seed: int = 0):
    sources = [DefectSample(image=cloth(i), mask=np.zeros((48, 48), bool), meta={"name": f"good{i}.png"})
               for i in range(count)]
    return plan_requests(sources, ["stain"], per_image=1, seed=seed)


def run(generator, requests, out, gate, **kwargs):
    from defectfill.generators.requests import MaskPolicy

    masks = MaskPolicy()
    requests = [type(r)(r.index, r.name, r.defect_type, r.source, r.seed, r.mask_key, blob()) for r in requests]
    return run_generation(generator, requests, out, masks=masks, gate=gate, progress=False, contact_sheet=False,
                          num_processes=1, process_index=0, **kwargs)


def test_calibration_is_the_percentile_of_the_real_defects_per_type():
    samples = real_stains([20, 25, 30, 35, 40, 45, 50, 55, 60, 65])
    config = QualityGateConfig(statistics=["contrast", "texture"], percentile=10)
    gate = QualityGate.calibrate(samples + [DefectSample(image=cloth(), mask=np.zeros((48, 48), bool))], config)
    contrasts = [defect_statistics(s.image, s.mask, config)["contrast"] for s in samples]
    textures = [defect_statistics(s.image, s.mask, config)["texture"] for s in samples]
    assert gate.floors["stain"]["contrast"] == pytest.approx(np.percentile(contrasts, 10))
    assert gate.floors["stain"]["texture"] == pytest.approx(np.percentile(textures, 10))
    assert 20 < gate.floors["stain"]["contrast"] < 30  # the blobs really are ~20-65 levels darker
    assert gate.real_defects == {"stain": 10}  # the good sample is ignored
    assert QualityGate.calibrate(samples, QualityGateConfig(percentile=50)).floors["stain"]["contrast"] > 35


def test_hand_made_changes_are_judged_as_a_reader_would(gate):
    image, mask = cloth(7), blob()
    stain = image.astype(np.float32)
    stain[mask] -= 60
    stain = stain.clip(0, 255).astype(np.uint8)
    shifted = np.roll(image, 2, axis=1)
    assert gate.check(stain, mask, "stain").passed
    nothing = gate.check(image, np.zeros_like(mask), "stain")
    assert not nothing.passed and nothing.reason == "nothing changed"
    resynth = gate.check(shifted, mask, "stain")  # every pixel of the mask changed, no defect
    assert not resynth.passed and resynth.reason.startswith("below floor: contrast")
    assert gate.check(image, mask, "hole").reason == "uncalibrated"  # no real holes: no floor
    off = QualityGate(QualityGateConfig(enabled=False), gate.floors)
    assert off.check(shifted, mask, "stain").passed


def test_rejected_items_are_retried_then_skipped_and_counted(gate, tmp_path):
    nothing = HandMade("nothing")
    summary = run(nothing, requests_for(3), tmp_path / "nothing", gate)
    assert nothing.calls == 3 * 3  # each request: the first attempt + max_retries=2
    assert summary["quality_gate"]["per_type"] == {"stain": {"accepted": 0, "accepted_after_retry": 0, "rejected": 3}}
    assert summary["quality_gate"]["rejected"] == 3
    assert read_generation_manifest(tmp_path / "nothing") == []
    rejected = [json.loads(line) for line in (tmp_path / "nothing" / "rejected.jsonl").read_text().splitlines()]
    assert [r["attempts"] for r in rejected] == [3, 3, 3]
    assert rejected[0]["verdicts"][0]["reason"] == "nothing changed"
    assert json.loads((tmp_path / "nothing" / "quality_gate.json").read_text())["rejected"] == 3
    assert generation_complete(tmp_path / "nothing", 3)  # a bench does not rerun a fully rejected arm

    resynth = run(HandMade("cloth"), requests_for(3), tmp_path / "cloth", gate)
    assert resynth["quality_gate"]["rejected"] == 3

    stain = run(HandMade("stain"), requests_for(3), tmp_path / "stain", gate)
    assert stain["quality_gate"]["per_type"]["stain"] == {"accepted": 3, "accepted_after_retry": 0, "rejected": 0}
    items = read_generation_manifest(tmp_path / "stain")
    assert len(items) == 3 and all(item.load()[1].any() for item in items)
    record = json.loads((tmp_path / "stain" / "manifest.jsonl").read_text().splitlines()[0])
    assert record["quality"]["attempts"] == 1 and record["quality"]["statistics"]["contrast"] > 40


def test_retries_are_deterministic_and_use_the_documented_seeds(gate, tmp_path):
    requests = requests_for(8)
    first = run(HandMade("lucky"), requests, tmp_path / "a", gate)
    second = run(HandMade("lucky"), requests, tmp_path / "b", gate)
    lines = [(tmp_path / d / "manifest.jsonl").read_text() for d in "ab"]
    assert lines[0] == lines[1].replace(str(tmp_path / "b"), str(tmp_path / "a"))
    assert first["quality_gate"]["per_type"] == second["quality_gate"]["per_type"]
    counts = first["quality_gate"]["per_type"]["stain"]
    assert counts["accepted_after_retry"] >= 1 and counts["accepted"] + counts["accepted_after_retry"] + counts[
        "rejected"] == 8
    for record in map(json.loads, lines[0].splitlines()):
        attempt = record["quality"]["attempts"] - 1
        assert record["quality"]["seed"] == retry_seed(record["seed"], attempt) == record["seed"] + attempt * RETRY_SEED_STRIDE


def test_a_resumed_run_skips_rejected_and_accepted_requests_and_counts_all(gate, tmp_path):
    requests = requests_for(4)
    out = tmp_path / "resume"
    run(HandMade("lucky"), requests[:2], out, gate)  # "interrupted" after two requests
    again = HandMade("lucky")
    resumed = run(again, requests, out, gate)
    assert resumed["skipped"] == 2 and resumed["generated"] == 2
    whole = run(HandMade("lucky"), requests, tmp_path / "whole", gate)
    assert resumed["quality_gate"]["per_type"] == whole["quality_gate"]["per_type"]
    idle = HandMade("lucky")
    assert run(idle, requests, out, gate)["skipped"] == 4 and idle.calls == 0


def test_gate_config_refuses_bad_values():
    with pytest.raises(ConfigError, match="statistics"):
        QualityGateConfig(statistics=["sharpness"])
    with pytest.raises(ConfigError, match="require"):
        QualityGateConfig(require="most")
    with pytest.raises(ConfigError, match="percentile"):
        QualityGateConfig(percentile=120)


def test_generate_cli_calibrates_on_the_training_defects_and_writes_the_summary(tmp_path, capsys):
    """`defectfill generate --generator cutpaste --train-data REAL --quality-gate`: pasted real stains
    read as stains; the floors and counts land in quality_gate.json and on stderr."""
    from PIL import Image

    from defectfill.cli import main

    real, goods = tmp_path / "real", tmp_path / "good"
    for folder in (real / "images", real / "annotations", goods):
        folder.mkdir(parents=True)
    for i, sample in enumerate(real_stains([40, 50, 60])):
        Image.fromarray(sample.image).save(real / "images" / f"s{i}.png")
        Image.fromarray(sample.mask.astype(np.uint8) * 255).save(real / "annotations" / f"s{i}.png")
    for i in range(2):
        Image.fromarray(cloth(10 + i)).save(goods / f"g{i}.png")
    base = ["generate", "--generator", "cutpaste", "--train-data", str(real), "--images", str(goods),
            "--defect-type", "stain", "--num-candidates", "2", "--masks", "procedural", "--no-contact-sheet"]
    assert main([*base, "--out", str(tmp_path / "out"), "--quality-gate", "--gate-retries", "1"]) == 0
    summary = json.loads((tmp_path / "out" / "quality_gate.json").read_text())
    assert summary["real_defects"] == {"stain": 3} and summary["config"]["max_retries"] == 1
    counts = summary["per_type"]["stain"]
    assert sum(counts.values()) == 2 and counts["rejected"] == 0
    assert "quality gate:" in capsys.readouterr().err
    assert main([*base[:3], "--model", str(real), *base[5:], "--out", str(tmp_path / "o2"), "--quality-gate"]) == 1
    assert "--quality-gate without a folder" in capsys.readouterr().err


def test_the_bench_gates_every_arm_and_reports_the_counts(tmp_path):
    """generation.quality_gate in a bench config: every arm's generation goes through the gate
    calibrated on the source defects; bench.json and the terminal table count rejections per arm."""
    from pathlib import Path

    from defectfill.bench.config import load_bench_config
    from defectfill.bench.run import run_bench

    configs = Path(__file__).resolve().parents[1] / "configs"
    config = load_bench_config(configs / "bench_micro.yaml", {
        "arms": ["real_only", "cutpaste"], "seeds": [0],
        "generation.quality_gate": {"enabled": True, "percentile": 90.0, "max_retries": 1}})
    lines = []
    summary = run_bench(config, tmp_path / "run", echo=lines.append)
    counts = summary["quality_gate"]["cutpaste"]
    # a 90th-percentile floor: the first attempt of every cut-paste item falls below it (measured: 2
    # accepted after a retry, 2 rejected); each of the 4 requests is counted once
    assert counts["accepted"] + counts["accepted_after_retry"] + counts["rejected"] == 4
    assert counts["rejected"] >= 1 and counts["accepted"] < 4
    assert (tmp_path / "run" / "seed-0" / "generated" / "cutpaste" / "quality_gate.json").is_file()
    assert any(line.startswith("quality gate, cutpaste:") for text in lines for line in text.splitlines())
