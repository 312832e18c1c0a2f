"""`defectfill generate`: outputs, manifest format, resume, real masks, errors, 2-process sharding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_generate import _fabric, build_tiny_model_dir

from defectfill.cli import main
from defectfill.data.images import load_image, load_mask
from defectfill.generators.manifest import MANIFEST_KEYS
from defectfill.io_utils import read_jsonl
from defectfill.masks import mask_to_boxes


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("gen-cli")
    _, model_dir = build_tiny_model_dir(root)
    images = root / "good"
    images.mkdir()
    for i in range(3):
        Image.fromarray(_fabric(seed=i)).save(images / f"good_{i}.png")
    Image.fromarray(_fabric(seed=9, gray=True)[..., 0], mode="L").save(images / "grey.png")
    return model_dir, images


def _args(model_dir, images, out, *extra):
    return ["generate", "--model", str(model_dir), "--images", str(images), "--defect-type", "stain",
            "--per-image", "2", "--out", str(out), "--num-candidates", "2", "--steps", "2",
            "--selection-metric", "ms-ssim-distance", "--masks", "procedural", "--seed", "3", *extra]


def _check_outputs(out: Path, expected: int) -> list[dict]:
    records = read_jsonl(out / "manifest.jsonl")
    assert len(records) == expected
    assert len({r["image"] for r in records}) == expected
    for r in records:
        assert tuple(r) == MANIFEST_KEYS
        image = load_image(out / r["image"])
        request = load_mask(out / r["request_mask"], shape=image.shape[:2])
        changed = load_mask(out / r["changed_mask"], shape=image.shape[:2])
        source = load_image(r["source_image"])
        assert np.array_equal(image[~request], source[~request])
        assert not (changed & ~request).any()
        assert r["boxes"] == mask_to_boxes(changed).tolist()
        assert r["generator"] == "defectfill" and r["selection_metric"] == "ms-ssim-distance"
        assert isinstance(r["score"], float) and r["defect_type"] == "stain"
    return records


def test_generate_writes_outputs_and_resumes(setup, tmp_path, capsys):
    model_dir, images = setup
    out = tmp_path / "out"
    assert main(_args(model_dir, images, out)) == 0
    records = _check_outputs(out, 8)
    assert sorted(r["seed"] for r in records) == list(range(3, 11))
    assert (out / "contact_sheet.png").is_file()
    grey = [r for r in records if Path(r["source_image"]).name == "grey.png"]
    assert len(grey) == 2 and all(Image.open(out / r["image"]).mode == "L" for r in grey)
    first = (out / "manifest.jsonl").read_text()
    snapshot = {p: p.read_bytes() for p in out.rglob("*.png")}

    capsys.readouterr()
    assert main(_args(model_dir, images, out)) == 0  # second run: everything is done
    assert "generated 0 (skipped 8" in capsys.readouterr().err
    assert (out / "manifest.jsonl").read_text() == first

    # an interrupted run: two records and one image lost -> exactly those are made again, identically
    lines = first.splitlines(keepends=True)
    (out / "manifest.jsonl").write_text("".join(lines[:-2]))
    (out / json.loads(lines[-1])["image"]).unlink()
    assert main(_args(model_dir, images, out)) == 0
    assert "generated 2 (skipped 6" in capsys.readouterr().err
    assert (out / "manifest.jsonl").read_text() == first
    assert all(p.read_bytes() == data for p, data in snapshot.items() if p.name != "contact_sheet.png")


def test_real_masks_mode_uses_the_given_shapes(setup, tmp_path):
    model_dir, images = setup
    real = tmp_path / "real" / "stain"
    real.mkdir(parents=True)
    square = np.zeros((64, 64), np.uint8)
    square[10:16, 10:16] = 255
    square[10:16, 30:36] = 255  # two spots: the procedural stain is always one blob
    Image.fromarray(square).save(real / "m.png")
    out = tmp_path / "out"
    assert main(_args(model_dir, images, out, "--real-masks", str(tmp_path / "real"), "--masks", "real")) == 0
    from defectfill.masks import connected_components

    for r in _check_outputs(out, 8):
        assert connected_components(load_mask(out / r["request_mask"]))[1] == 2


def test_cli_errors_are_clear(setup, tmp_path, capsys):
    model_dir, images = setup
    args = _args(model_dir, images, tmp_path / "o")
    args[args.index("stain")] = "scratch"
    assert main(args) == 1
    assert "known: ['hole', 'stain']" in capsys.readouterr().err
    assert main(_args(model_dir, tmp_path / "none", tmp_path / "o")) == 1
    assert "not a folder" in capsys.readouterr().err
    lpips_args = _args(model_dir, images, tmp_path / "o")
    lpips_args[lpips_args.index("ms-ssim-distance")] = "lpips"
    from defectfill.selection import _lpips_model

    _lpips_model.cache_clear()
    assert main(lpips_args) == 1
    assert "choose selection_metric 'ms-ssim-distance'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before anything was written


def _sharded_run(model_dir, images, out):
    from accelerate.state import AcceleratorState

    from defectfill.distributed import accelerate_state

    AcceleratorState._reset_state(reset_partial_state=True)  # forked from a parent that used accelerate
    state = accelerate_state()
    torch.set_num_threads(1)  # accelerate sets cores / processes; 1 thread keeps the numbers of the 1-process run
    assert main(_args(model_dir, images, out)) == 0
    (out / f".rank{state.process_index}-of-{state.num_processes}").touch()


def test_two_processes_shard_the_work_and_merge_one_manifest(setup, tmp_path):
    from accelerate import debug_launcher

    model_dir, images = setup
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert main(_args(model_dir, images, single)) == 0
    debug_launcher(_sharded_run, args=(model_dir, images, sharded), num_processes=2)
    assert (sharded / ".rank0-of-2").exists() and (sharded / ".rank1-of-2").exists()
    records = _check_outputs(sharded, 8)
    assert not list(sharded.glob("manifest.rank*.jsonl"))  # shards merged and removed
    assert records == read_jsonl(single / "manifest.jsonl")  # same items, seeds, scores
    for r in records:
        assert (sharded / r["image"]).read_bytes() == (single / r["image"]).read_bytes()
