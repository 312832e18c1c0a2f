"""Shared pieces of the app tests: a launched `defectfill app` on localhost with tiny real models.

The DefectFill model is the tiny real one of `tests/test_generate.py` (random 64-px inpainting
pipeline + LoRA + concept vectors, saved as a model folder); cut-paste learns from a tiny MVTec-AD
folder. The app is built through the command's own argument parser and launched in this process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from helpers_defectfill_training import fabric_image, make_mvtec_dataset

from defectfill.data.images import save_image

STEPS = 2
SIZE = 64


@dataclass
class LaunchedApp:
    url: str
    demo: object
    app: object
    data: Path
    images: Path
    run: Path


def make_world(root: Path) -> dict[str, Path]:
    """The folders a curation session needs: DefectFill model, real defects, good images, a run folder."""
    from test_generate import build_tiny_model_dir

    root = Path(root)
    _, model = build_tiny_model_dir(root / "defectfill")
    real = make_mvtec_dataset(root / "real", {"stain": 2, "hole": 2}, size=SIZE)
    images = root / "good"
    rng = np.random.default_rng(3)
    for i in range(2):
        save_image(images / f"fabric_{i}.png", fabric_image(rng, SIZE))
    run = make_run_folder(root / "run")
    return {"model": model, "real": real, "images": images, "run": run}


_WORLDS: dict[str, dict[str, Path]] = {}


def shared_world(tmp_path_factory) -> dict[str, Path]:
    """`make_world` once per test session (both app test files read it; none writes into it)."""
    if "world" not in _WORLDS:
        _WORLDS["world"] = make_world(tmp_path_factory.mktemp("app-world"))
    return _WORLDS["world"]


def make_run_folder(folder: Path) -> Path:
    """A small bench-like run folder: bench.json, table.md, one plot, one contact sheet."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.json").write_text(json.dumps({"name": "tiny-bench", "notes": ["a note for the page"]}))
    (folder / "table.md").write_text("| arm | mean F |\n| --- | --- |\n| real_only | 0.123 |\n| cutpaste | 0.456 |\n")
    save_image(folder / "plots" / "f_measure_per_class.png", np.full((40, 60, 3), 200, np.uint8))
    save_image(folder / "sheets" / "cutpaste.png", np.full((30, 30, 3), 90, np.uint8))
    return folder


def launch_app(world: dict[str, Path], data: Path, extra: list[str] | None = None) -> LaunchedApp:
    """Build the app from `defectfill app` arguments and serve it on 127.0.0.1 (not blocking)."""
    from defectfill.app.ui import launch
    from defectfill.cli import build_parser
    from defectfill.commands.app import build_from_args

    argv = ["app", "--model", str(world["model"]), "--model", f"cutpaste={world['real']}", "--data", str(data),
            "--images", str(world["images"]), "--run", str(world["run"]), "--steps", str(STEPS),
            "--num-candidates", "3", "--device", "cpu", *(extra or [])]
    args = build_parser(["app"]).parse_args(argv)
    app, demo = build_from_args(args)
    launch(demo, block=False, quiet=True)
    assert demo.local_url.startswith("http://127.0.0.1:"), demo.local_url
    return LaunchedApp(demo.local_url, demo, app, Path(data), world["images"], world["run"])


def manifest_lines(folder: Path) -> list[dict]:
    import json

    path = Path(folder) / "manifest.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def written_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())
