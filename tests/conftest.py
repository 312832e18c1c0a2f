"""Test-wide settings: offline, temp caches, few threads, Agg plots."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_CACHE = Path(tempfile.mkdtemp(prefix="defectfill-test-cache-"))
os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(_CACHE / "hf"),
        "TORCH_HOME": str(_CACHE / "torch"),
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "0",
        "YOLO_CONFIG_DIR": str(_CACHE / "ultralytics"),
        "MPLBACKEND": "Agg",
        "TOKENIZERS_PARALLELISM": "false",
    }
)

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One torch thread for the whole run: the models here are tiny, and on a shared 2-core machine
    two threads ran 4-12x slower than one (OpenMP stalls; measured by several modules' authors)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def hsst_stains_dir() -> Path:
    """The 26 real stains of ../shared/data/hsst-stains; the test is skipped when absent."""
    path = SHARED_DATA / "hsst-stains"
    if not (path / "images").is_dir():
        pytest.skip(f"{path} not present")
    return path
