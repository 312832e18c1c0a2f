"""Crash safety: runs killed with SIGKILL resume to the same complete result, nothing half-written or
duplicated; a failed checkpoint write (a file-size limit: a full disk) keeps the previous checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_defectfill_training import make_base_model, make_mvtec_dataset
from PIL import Image

from defectfill.io_utils import read_jsonl

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _run_until(argv: list[str], appeared, timeout: float = 120.0) -> int:
    """Start `python -m defectfill.cli argv`, SIGKILL it once `appeared()` is true; returns its exit code."""
    proc = subprocess.Popen([sys.executable, "-m", "defectfill.cli", *argv], env=ENV, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if appeared():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode is not None
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(err.decode()[-3000:])
    return proc.returncode


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_generate_killed_mid_way_resumes_to_the_same_complete_result(tmp_path):
    ds = make_mvtec_dataset(tmp_path / "real", {"stain": 2})
    good = tmp_path / "good"
    good.mkdir()
    rng = np.random.default_rng(0)
    for i in range(30):
        Image.fromarray(rng.integers(60, 200, (128, 128, 3), dtype=np.uint8)).save(good / f"g{i:02d}.png")

    def argv(out: Path) -> list[str]:
        return ["generate", "--generator", "cutpaste", "--model", str(ds), "--images", str(good), "--defect-type",
                "stain", "--out", str(out), "--num-candidates", "2", "--masks", "procedural", "--seed", "7",
                "--per-image", "2"]

    killed = tmp_path / "killed"
    manifest = killed / "manifest.jsonl"
    code = _run_until(argv(killed), lambda: manifest.is_file() and manifest.stat().st_size > 0)
    assert code == -signal.SIGKILL, "the run finished before it could be killed; give it more work"
    done_before = len(read_jsonl(manifest))
    assert 1 <= done_before < 60
    assert (killed / ".defectfill.lock").exists()  # the dead run's lock: stale, taken over on restart
    _run_until(argv(killed), lambda: False)  # restart: resumes
    straight = tmp_path / "straight"
    _run_until(argv(straight), lambda: False)
    records = read_jsonl(killed / "manifest.jsonl")
    assert len(records) == 60 and len({r["image"] for r in records}) == 60  # complete, each image once
    assert sorted(records, key=lambda r: r["image"]) == sorted(read_jsonl(straight / "manifest.jsonl"),
                                                                key=lambda r: r["image"])
    a, b = _files(killed), _files(straight)
    assert sorted(a) == sorted(b), "extra or missing files (temporary files, a lock, duplicates)"
    assert a == b, "a file differs from the uninterrupted run's (half-written?)"
    assert not any(name.startswith(".") or "/." in name for name in a)


def _train_argv(base: Path, ds: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(REPO / "configs" / "defectfill_tiny.yaml"), "--pretrained_model_name_or_path",
            str(base), "--train_data_dir", str(ds), "--output_dir", str(out), "--report_to", "none",
            "--validation_steps", "0", "--max_train_steps", "6", "--checkpointing_steps", "2", "--seed", "3", *extra]


@pytest.fixture(scope="module")
def train_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash-train")
    return make_base_model(root / "base"), make_mvtec_dataset(root / "ds", {"stain": 2, "hole": 2})


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for path in sorted(folder.glob("*.safetensors")):
        out.update({f"{path.name}:{k}": v for k, v in load_file(str(path)).items()})
    return out


@pytest.mark.slow
def test_training_killed_after_a_checkpoint_resumes_to_the_same_weights(train_setup, tmp_path):
    base, ds = train_setup
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    code = _run_until(_train_argv(base, ds, killed),
                      lambda: (killed / "checkpoint-2" / "training_state.json").is_file())
    assert code == -signal.SIGKILL, "training finished before it could be killed"
    assert not (killed / "checkpoint-6").exists()
    _run_until(_train_argv(base, ds, killed, "--resume_from_checkpoint", "latest"), lambda: False)
    _run_until(_train_argv(base, ds, straight), lambda: False)
    a, b = _weights(killed), _weights(straight)
    assert sorted(a) == sorted(b) and len(a) >= 3
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=f"{key} differs after the resume")
    steps = [r["step"] for r in read_jsonl(killed / "losses.jsonl")]
    assert sorted(set(steps)) == list(range(1, 7)) and len(steps) == len(set(steps))  # no step logged twice
    assert not [p for p in killed.iterdir() if p.name.startswith(".")]


CHILD = r"""
import resource, signal, sys
from pathlib import Path
import torch
from defectfill import checkpoints
from defectfill.errors import ModelError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG (a full disk), no signal
root = Path(sys.argv[1])
model = torch.nn.Linear(64, 64)
opt = torch.optim.AdamW(model.parameters())
model(torch.ones(1, 64)).sum().backward(); opt.step()
checkpoints.save_checkpoint(root, "unet", 1, model, opt, total_limit=1)
torch.save(model.state_dict(), root / "expected.pt")
with torch.no_grad():
    model.weight.add_(1.0)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
try:
    checkpoints.save_checkpoint(root, "unet", 2, model, opt, total_limit=1)
except ModelError as exc:
    print("MODELERROR", exc)
    sys.exit(3)
"""


def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint_and_says_so(tmp_path):
    from defectfill.checkpoints import list_checkpoints, load_checkpoint

    root = tmp_path / "checkpoints"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root)], env=ENV, capture_output=True, text=True,
                          check=False, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "writing the checkpoint failed" in proc.stdout and "unet-000001" in proc.stdout
    assert "are intact" in proc.stdout
    assert [p.name for p in list_checkpoints(root)] == ["unet-000001"]
    assert sorted(p.name for p in root.iterdir()) == ["expected.pt", "unet-000001"]  # no half-written folder
    model = torch.nn.Linear(64, 64)
    load_checkpoint(root / "unet-000001", model, torch.optim.AdamW(model.parameters()))
    expected = torch.load(root / "expected.pt", weights_only=True)
    assert all(torch.equal(model.state_dict()[k], expected[k]) for k in expected)


TRAIN_CHILD = r"""
import resource, signal, sys
from defectfill.cli import main
from defectfill.training import trainer
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
original = trainer.DefectFillTrainer.save_checkpoint
def save_checkpoint(self, step):
    if step == 4:  # the disk fills up after checkpoint-2
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, resource.RLIM_INFINITY))
    return original(self, step)
trainer.DefectFillTrainer.save_checkpoint = save_checkpoint
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_failed_defectfill_checkpoint_write_keeps_the_previous_one(train_setup, tmp_path):
    base, ds = train_setup
    out = tmp_path / "out"
    argv = _train_argv(base, ds, out, "--checkpoints_total_limit", "1")
    proc = subprocess.run([sys.executable, "-c", TRAIN_CHILD, *argv], env=ENV, capture_output=True, text=True,
                          check=False, timeout=300, cwd=REPO)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "checkpoint-4: writing the checkpoint failed" in proc.stderr
    assert "['checkpoint-2'] in" in proc.stderr and "are intact" in proc.stderr
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-2"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "partial checkpoint or lock left behind"
    state = json.loads((out / "checkpoint-2" / "training_state.json").read_text())
    assert state["global_step"] == 2
    from defectfill.models.weights import read_model_info

    read_model_info(out / "checkpoint-2", checkpoint=True)  # complete and loadable
