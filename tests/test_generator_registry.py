"""The generator registry and its plug-in path: a third-party generator, installed as a tiny
distribution with an entry point in the group `defectfill.generators`, runs through
`defectfill generate` and the bench end to end; bad registrations fail clearly, writing nothing."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from defectfill.cli import main
from defectfill.data.fabric import render_sample, simulate_dataset
from defectfill.data.images import load_image, load_mask, save_image
from defectfill.errors import ConfigError, GenerationError, ModelError
from defectfill.generators.registry import available_generators, get_plugin, parse_options
from defectfill.generators.shared import WindowedGenerator

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

STUB = '''
from dataclasses import dataclass

import numpy as np

from defectfill.generators import GeneratorPlugin
from defectfill.generators.shared import WindowedGenerator


@dataclass
class StubOptions:
    darkness: float = 0.5


class DarkSpot(WindowedGenerator):
    """Darkens the mask: the smallest model a generator can have."""

    name = "stubgen"
    resolution = 32

    def __init__(self, types, darkness):
        self.types, self.darkness = list(types), darkness

    @property
    def defect_types(self):
        return self.types

    def fill(self, window, mask, *, num_candidates, defect_type, rng):
        out = np.repeat(window[None], num_candidates, axis=0).astype(np.float32)
        out[:, mask] *= 1.0 - self.darkness
        return out.astype(np.uint8)


def build(ctx):
    return DarkSpot(ctx.defect_types, ctx.options.darkness)


PLUGIN = GeneratorPlugin(build=build, options=StubOptions, help="test stub: a dark spot")
'''


def _distribution(site: Path, package: str, entry_points: dict[str, str], source: str = STUB) -> None:
    """A distribution as pip leaves it: the package, and its .dist-info with the entry points."""
    (site / package).mkdir(parents=True)
    (site / package / "__init__.py").write_text(textwrap.dedent(source))
    info = site / f"{package}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package.replace('_', '-')}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[defectfill.generators]\n{lines}")


@pytest.fixture
def stub_installed(tmp_path, monkeypatch):
    site = tmp_path / "site"
    _distribution(site, "stubgen_pkg", {"stubgen": "stubgen_pkg:PLUGIN"})
    monkeypatch.syspath_prepend(str(site))
    return site


def test_builtins_are_registered_lazily():
    assert {"cutpaste", "defectfill"} <= set(available_generators())
    with pytest.raises(ConfigError, match=r"'gan9000' is not registered; registered generators: \[.*'cutpaste'"):
        get_plugin("gan9000")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['feathr'\].*valid keys are \['blend', 'change_threshold', 'feather'"):
        parse_options("cutpaste", {"feathr": 2})
    assert parse_options("cutpaste", {"feather": 2}).feather == 2.0


def test_windowed_generator_pastes_back_bit_identical_and_labels_changed_pixels():
    class Flat(WindowedGenerator):
        name, resolution = "flat", 32
        defect_types = ("stain",)

        def fill(self, window, mask, *, num_candidates, defect_type, rng):  # every pixel moves by >= 128
            far = np.where(window < 128, 255, 0).astype(np.uint8)
            return np.repeat(far[None], num_candidates, axis=0)

    image = render_sample("plain", None, 0, 96)[0]
    mask = np.zeros((96, 96), bool)
    mask[40:50, 10:20] = mask[70:75, 80:90] = True  # two groups, two windows
    result = Flat().generate(image, mask, defect_type="stain", num_candidates=2, generator=0)
    for candidate, changed in zip(result.candidates, result.changed_masks):
        far = np.where(image < 128, 255, 0)
        assert np.array_equal(candidate[~mask], image[~mask]) and np.array_equal(candidate[mask], far[mask])
        assert np.array_equal(changed, mask)
    assert len(result.meta["windows"]) == 2 and result.selection_metric == "mean_abs_diff_in_mask"
    grey = Flat().generate(image[..., 0], mask, defect_type="stain")
    assert grey.gray and grey.image.shape == (96, 96)  # greyscale in, greyscale out
    with pytest.raises(GenerationError, match="not known"):
        Flat().generate(image, mask, defect_type="hole")


def test_entry_point_generator_runs_through_generate_and_bench(stub_installed, tmp_path, capsys):
    torch.set_num_threads(1)
    assert "stubgen" in available_generators()
    assert main(["generate", "--generator", "list"]) == 0
    assert "stubgen" in capsys.readouterr().out
    # real defects to "train" on, good images to put defects into
    source = simulate_dataset(tmp_path / "source", ["plain"], ["stain"], 0, 0, 2, size=64, seed=1)
    goods = tmp_path / "good"
    for i in range(2):
        save_image(goods / f"g{i}.png", render_sample("twill", None, 10 + i, 64)[0])
    out = tmp_path / "out"
    assert main(["generate", "--generator", "stubgen", "--train-data", str(source), "--images", str(goods),
                 "--defect-type", "stain", "--out", str(out), "--num-candidates", "2", "--masks", "procedural",
                 "--option", "darkness=0.8"]) == 0
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 2 and {r["generator"] for r in records} == {"stubgen"}
    for r in records:
        image, request = load_image(out / r["image"]), load_mask(out / r["request_mask"])
        source_image = load_image(r["source_image"])
        assert np.array_equal(image[~request], source_image[~request])
        assert image[request].mean() < 0.5 * source_image[request].mean()  # darkened by 0.8 (resampled)
        assert load_mask(out / r["changed_mask"]).any()

    from defectfill.bench.config import load_bench_config
    from defectfill.bench.run import run_bench

    config = load_bench_config(CONFIGS / "bench_micro.yaml", {"arms": ["real_only", "stubgen"], "seeds": [0],
                                                              "generators": {"stubgen": {"darkness": 0.7}}})
    summary = run_bench(config, tmp_path / "bench", echo=lambda _: None)
    assert set(summary["arms"]) == {"real_only", "stubgen"}
    bench_records = (tmp_path / "bench" / "seed-0" / "generated" / "stubgen" / "manifest.jsonl").read_text().splitlines()
    assert len(bench_records) == 4 and all(json.loads(r)["generator"] == "stubgen" for r in bench_records)
    assert "stubgen" in (tmp_path / "bench" / "report.html").read_text()


def test_bad_registrations_fail_clearly_and_write_nothing(tmp_path, monkeypatch, capsys):
    goods = tmp_path / "good"
    save_image(goods / "g.png", render_sample("twill", None, 1, 64)[0])
    out = tmp_path / "out"
    base = ["generate", "--train-data", str(tmp_path), "--images", str(goods), "--defect-type", "stain",
            "--out", str(out)]
    assert main([*base, "--generator", "gan9000"]) == 1
    assert "registered generators: [" in capsys.readouterr().err
    assert main([*base, "--generator", "cutpaste", "--option", "feathr=2"]) == 1
    assert "valid keys are" in capsys.readouterr().err
    assert main([*base, "--generator", "cutpaste", "--steps", "3"]) == 1
    assert "does not have" in capsys.readouterr().err

    site = tmp_path / "site"
    _distribution(site, "broken_pkg", {"brokengen": "broken_pkg:PLUGIN"}, source="import no_such_module_here\n")
    _distribution(site, "clash_pkg", {"cutpaste": "clash_pkg:PLUGIN"}, source=STUB)
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(ConfigError, match=r"'cutpaste' by built-in .* and by entry point .*clash-pkg 0.1"):
        available_generators()
    assert main([*base, "--generator", "cutpaste"]) == 1
    assert "registered twice" in capsys.readouterr().err
    (site / "clash_pkg-0.1.dist-info" / "entry_points.txt").write_text("")
    with pytest.raises(ModelError, match=r"'brokengen'.*package broken-pkg 0.1 failed to import.*no_such_module_here"):
        get_plugin("brokengen")
    assert not out.exists()
