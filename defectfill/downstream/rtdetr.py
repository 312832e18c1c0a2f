"""RT-DETR through ultralytics: fine-tune on an assembled dataset, predict boxes with scores.

The model is built from a model yaml (random init; e.g. configs/rtdetr_small.yaml) or fine-tuned
from a local `.pt` the user has; nothing is downloaded (feasibility notes §5: YOLO_OFFLINE=1,
YOLO_AUTOINSTALL=0, YOLO_CONFIG_DIR set, a font copied, plots=False, amp=False, workers=0,
device cpu, absolute data path; `defectfill.env.offline_env` sets the environment).

Run folder: every artefact ultralytics writes goes under `run_dir` (weights/best.pt, results.csv,
args.yaml). A run that finished is marked by `run_dir/defectfill_run.json`; such a folder is
never trained into again: `if_exists="error"` (default) raises, "skip" returns the finished run,
"resume" returns a finished run too and continues an unfinished one from weights/last.pt.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import numpy as np

from defectfill.downstream.config import RTDETRConfig
from defectfill.env import offline_env
from defectfill.errors import ConfigError, ModelError
from defectfill.io_utils import atomic_write_json
from defectfill.metrics.detection import ImageBoxes

DONE_NAME = "defectfill_run.json"


def _check_model_source(model: str) -> None:
    path = Path(model)
    if path.suffix not in (".pt", ".yaml", ".yml"):
        raise ConfigError(f"rtdetr.model: {model!r} must be an ultralytics model yaml or a .pt file")
    if path.suffix == ".pt" and not path.is_file():
        # ultralytics would try to download a missing .pt by name: refuse instead
        raise ModelError(f"rtdetr.model: {model} not found; pass a local .pt or a model yaml (random init)")
    if path.suffix in (".yaml", ".yml") and not path.is_file() and not path.name.startswith("rtdetr-"):
        raise ConfigError(f"rtdetr.model: {model} not found; pass an existing model yaml (e.g. configs/rtdetr_small.yaml)")


def _seconds_per_epoch(run_dir: Path) -> list[float]:
    """Per-epoch wall time from ultralytics' results.csv (cumulative `time` column)."""
    csv = run_dir / "results.csv"
    if not csv.is_file():
        return []
    lines = csv.read_text().strip().splitlines()
    header = [h.strip() for h in lines[0].split(",")]
    if "time" not in header:
        return []
    column = header.index("time")
    cumulative = [float(line.split(",")[column]) for line in lines[1:]]
    return [b - a for a, b in zip([0.0] + cumulative[:-1], cumulative)]


def train_rtdetr(
    data_yaml: str | Path,
    config: RTDETRConfig,
    run_dir: str | Path,
    *,
    seed: int = 0,
    if_exists: Literal["error", "skip", "resume"] = "error",
) -> dict:
    """Train RT-DETR on `data_yaml`; returns the run record (weights path, timings, config)."""
    offline_env()
    run_dir = Path(run_dir).resolve()
    done = run_dir / DONE_NAME
    if done.is_file():
        if if_exists in ("skip", "resume"):
            return json.loads(done.read_text())
        raise ModelError(
            f"{run_dir}: holds a finished RT-DETR run ({DONE_NAME}); choose another run folder, "
            "or pass if_exists='skip' (--if-exists skip) to reuse it"
        )
    last = run_dir / "weights" / "last.pt"
    if run_dir.exists() and any(run_dir.iterdir()) and if_exists != "resume":
        raise ModelError(
            f"{run_dir}: holds an unfinished ultralytics run; pass if_exists='resume' to continue it "
            "from weights/last.pt, or choose another run folder"
        )
    from ultralytics import RTDETR

    started = time.perf_counter()
    if if_exists == "resume" and last.is_file():
        RTDETR(str(last)).train(resume=True)
    else:
        _check_model_source(config.model)
        model = RTDETR(config.model)
        args = {
            "data": str(Path(data_yaml).resolve()),
            "epochs": config.epochs,
            "batch": config.batch,
            "imgsz": config.imgsz,
            "optimizer": config.optimizer,
            "lr0": config.lr0,
            "device": config.device,
            "amp": config.amp,
            "workers": config.workers,
            "plots": False,
            "val": config.val_every_epoch,
            "project": str(run_dir.parent),
            "name": run_dir.name,
            "exist_ok": True,  # the folder is ours: the checks above keep finished runs safe
            "seed": seed,
            "deterministic": False,  # grid_sample in RT-DETR has no deterministic mode
            "pretrained": Path(config.model).suffix == ".pt",
            "verbose": False,
        }
        args.update(config.train_overrides)
        model.train(**args)
    weights = run_dir / "weights" / "best.pt"
    if not weights.is_file():
        weights = last
    if not weights.is_file():
        raise ModelError(f"{run_dir}: ultralytics finished without weights/best.pt or last.pt; see its log above")
    epoch_times = _seconds_per_epoch(run_dir)
    record = {
        "weights": str(weights),
        "run_dir": str(run_dir),
        "train_seconds": time.perf_counter() - started,
        "seconds_per_epoch": epoch_times,
        "median_seconds_per_epoch": float(np.median(epoch_times)) if epoch_times else None,
        "config": asdict(config),
        "seed": seed,
    }
    atomic_write_json(done, record)
    return record


def predict_rtdetr(
    weights: str | Path, images: Sequence[np.ndarray], *, imgsz: int, conf: float = 0.001, device: str = "cpu"
) -> list[ImageBoxes]:
    """Boxes (x0, y0, x1, y1, pixel units of each input), class indices and scores per (H, W, 3) RGB image."""
    offline_env()
    from ultralytics import RTDETR

    weights = Path(weights)
    if not weights.is_file():
        raise ModelError(f"{weights}: RT-DETR weights not found; train first (defectfill finetune)")
    model = RTDETR(str(weights))
    out = []
    for image in images:
        # ultralytics reads numpy arrays as BGR (OpenCV order)
        result = model.predict(np.ascontiguousarray(image[..., ::-1]), imgsz=imgsz, conf=conf, device=device, verbose=False)[0]
        boxes = result.boxes
        out.append(ImageBoxes(boxes.xyxy.cpu().numpy(), boxes.cls.cpu().numpy().astype(int), boxes.conf.cpu().numpy()))
    return out
