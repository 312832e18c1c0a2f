"""Offline environment set-up for libraries that otherwise reach the network.

`offline_env(root)` sets the variables under which HF, torch and ultralytics make no network
calls, and places a font where ultralytics looks for Arial.ttf (it tries to download it on every
dataset check otherwise). Call it before importing ultralytics.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def ensure_ultralytics_font(config_dir: str | Path) -> Path:
    """Copy matplotlib's DejaVuSans.ttf to `<config_dir>/Ultralytics/Arial.ttf` (no download)."""
    import matplotlib

    target = Path(config_dir) / "Ultralytics" / "Arial.ttf"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        src = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        shutil.copyfile(src, target)
    return target


def offline_env(root: str | Path | None = None, *, force: bool = False) -> None:
    """Set offline variables (keeping the user's where already set, unless `force`)."""
    root = Path(root) if root is not None else Path.home() / ".cache" / "defectfill"
    values = {
        "HF_HUB_OFFLINE": "1",
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "0",
        "YOLO_CONFIG_DIR": str(root / "ultralytics"),
        "MPLBACKEND": "Agg",
        # ultralytics loads .pt checkpoints with torch.load(weights_only=True) + its allow-list of model
        # classes instead of a full unpickle (read when ultralytics is imported; set 0 to opt out)
        "ULTRALYTICS_SAFE_LOAD": "1",
    }
    for key, value in values.items():
        if force or key not in os.environ:
            os.environ[key] = value
    ensure_ultralytics_font(os.environ["YOLO_CONFIG_DIR"])
