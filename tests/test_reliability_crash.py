"""Crash safety: runs killed with SIGKILL resume to the same complete result, nothing half-written or
duplicated; a failed checkpoint write (a file-size limit: a full disk) keeps the previous checkpoint."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_defectfill_training import make_base_model, make_mvtec_dataset
from PIL import Image

from defectfill.cli import main
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


def test_generate_killed_mid_way_resumes_to_the_same_complete_result(tmp_path):
    ds = make_mvtec_dataset(tmp_path / "real", {"stain": 2})
    good = tmp_path / "good"
    good.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(60, 200, (96, 96, 3), dtype=np.uint8)).save(good / f"g{i:02d}.png")

    def argv(out: Path) -> list[str]:
        return ["generate", "--generator", "cutpaste", "--model", str(ds), "--images", str(good), "--defect-type",
                "stain", "--out", str(out), "--num-candidates", "2", "--masks", "procedural", "--seed", "7",
                "--per-image", "1", "--no-contact-sheet"]

    killed = tmp_path / "killed"
    manifest = killed / "manifest.jsonl"
    code = _run_until(argv(killed), lambda: manifest.is_file() and manifest.stat().st_size > 0)
    assert code == -signal.SIGKILL, "the run finished before it could be killed; give it more work"
    done_before = len(read_jsonl(manifest))
    assert 1 <= done_before < 24
    assert (killed / ".defectfill.lock").exists()  # the dead run's lock: stale, taken over on restart
    assert main(argv(killed)) == 0  # restart (in this process): resumes
    straight = tmp_path / "straight"
    assert main(argv(straight)) == 0
    records = read_jsonl(killed / "manifest.jsonl")
    assert len(records) == 24 and len({r["image"] for r in records}) == 24  # complete, each image once
    assert sorted(records, key=lambda r: r["image"]) == sorted(read_jsonl(straight / "manifest.jsonl"),
                                                                key=lambda r: r["image"])
    a, b = _files(killed), _files(straight)
    assert sorted(a) == sorted(b), "extra or missing files (temporary files, a lock, duplicates)"
    assert a == b, "a file differs from the uninterrupted run's (half-written?)"
    assert not any(name.startswith(".") or "/." in name for name in a)


def _train_argv(base: Path, ds: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(REPO / "configs" / "defectfill_tiny.yaml"), "--pretrained_model_name_or_path",
            str(base), "--train_data_dir", str(ds), "--output_dir", str(out), "--report_to", "none",
            "--validation_steps", "0", "--max_train_steps", "4", "--checkpointing_steps", "2", "--seed", "3", *extra]


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
    assert not (killed / "checkpoint-4").exists()
    assert main(_train_argv(base, ds, killed, "--resume_from_checkpoint", "latest")) == 0  # restart, in this process
    assert main(_train_argv(base, ds, straight)) == 0
    a, b = _weights(killed), _weights(straight)
    assert sorted(a) == sorted(b) and len(a) >= 3
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=f"{key} differs after the resume")
    steps = [r["step"] for r in read_jsonl(killed / "losses.jsonl")]
    assert sorted(set(steps)) == list(range(1, 5)) and len(steps) == len(set(steps))  # no step logged twice
    assert not [p for p in killed.iterdir() if p.name.startswith(".")]


@contextmanager
def file_size_limit(nbytes: int):
    """A soft RLIMIT_FSIZE for this process (a full disk): writes past it fail with EFBIG; restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the error, not the signal that would kill us
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint_and_says_so(tmp_path):
    from defectfill.checkpoints import list_checkpoints, load_checkpoint, save_checkpoint
    from defectfill.errors import ModelError

    root = tmp_path / "checkpoints"
    model = torch.nn.Linear(64, 64)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 64)).sum().backward()
    opt.step()
    save_checkpoint(root, "unet", 1, model, opt, total_limit=1)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(ModelError, match=r"unet-000002: writing the checkpoint failed .*File too large.*"
                                         r"\['unet-000001'\] are intact"), file_size_limit(4096):
        save_checkpoint(root, "unet", 2, model, opt, total_limit=1)
    assert [p.name for p in list_checkpoints(root)] == ["unet-000001"]
    assert sorted(p.name for p in root.iterdir()) == ["unet-000001"]  # no half-written folder
    fresh = torch.nn.Linear(64, 64)
    load_checkpoint(root / "unet-000001", fresh, torch.optim.AdamW(fresh.parameters()))
    assert all(torch.equal(fresh.state_dict()[k], expected[k]) for k in expected)


@pytest.mark.slow
def test_a_failed_defectfill_checkpoint_write_keeps_the_previous_one(train_setup, tmp_path, monkeypatch, capsys):
    from defectfill.training import trainer

    base, ds = train_setup
    out = tmp_path / "out"
    original = trainer.DefectFillTrainer.save_checkpoint

    def save_checkpoint(self, step):
        if step == 4:  # the disk fills up after checkpoint-2
            with file_size_limit(2048):
                return original(self, step)
        return original(self, step)

    monkeypatch.setattr(trainer.DefectFillTrainer, "save_checkpoint", save_checkpoint)
    assert main(_train_argv(base, ds, out, "--checkpoints_total_limit", "1")) == 1
    err = capsys.readouterr().err
    assert "checkpoint-4: writing the checkpoint failed" in err
    assert "['checkpoint-2'] in" in err and "are intact" in err
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-2"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "partial checkpoint or lock left behind"
    state = json.loads((out / "checkpoint-2" / "training_state.json").read_text())
    assert state["global_step"] == 2
    from defectfill.models.weights import read_model_info

    read_model_info(out / "checkpoint-2", checkpoint=True)  # complete and loadable
    from defectfill.io_utils import dir_mode, file_mode

    modes = {str(p.relative_to(out)): oct(p.stat().st_mode & 0o777) for p in out.rglob("*")}  # readable by others
    assert modes == {str(p.relative_to(out)): oct(dir_mode() if p.is_dir() else file_mode()) for p in out.rglob("*")}


def test_bench_killed_mid_way_resumes_to_a_complete_result(tmp_path):
    """A bench run SIGKILLed while its segmenter arms train (one arm finished), then started again:
    every arm of every seed ends with its results, each generated image once, no temporary file left,
    and the finished arm is read back, not trained again."""
    import yaml

    from defectfill.io_utils import is_temp_file

    config = yaml.safe_load((REPO / "configs" / "bench_micro.yaml").read_text())
    config.update(arms=["real_only", "cutpaste"], seeds=[0])
    config_path = tmp_path / "bench.yaml"
    config["downstream"]["config"] = str(REPO / "configs" / "downstream_tiny.yaml")
    config["generators"]["defectfill"]["train_config"] = str(REPO / "configs" / "defectfill_tiny.yaml")
    config_path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    first_arm = out / "seed-0" / "arms" / "real_only" / "results.json"
    code = _run_until(["bench", "--config", str(config_path), "--out", str(out)], first_arm.is_file, timeout=300)
    assert code == -signal.SIGKILL, "the bench finished before it could be killed; give it more work"
    assert not (out / "seed-0" / "arms" / "cutpaste" / "results.json").exists()
    finished_at = first_arm.stat().st_mtime_ns
    assert main(["bench", "--config", str(config_path), "--out", str(out)]) == 0  # restart: resumes
    for arm in ("real_only", "cutpaste"):
        assert json.loads((out / "seed-0" / "arms" / arm / "results.json").read_text())["arm"] == arm
    assert first_arm.stat().st_mtime_ns == finished_at  # read back, not retrained
    records = read_jsonl(out / "seed-0" / "generated" / "cutpaste" / "manifest.jsonl")
    assert len(records) == len({r["image"] for r in records}) == 4  # each image once
    assert not [p for p in out.rglob("*") if is_temp_file(p)]
    assert json.loads((out / "bench.json").read_text())["arms"].keys() == {"real_only", "cutpaste"}


def test_gan_training_killed_after_a_checkpoint_resumes_to_the_same_weights(tmp_path):
    """R3GAN through `defectfill train --generator r3gan`, SIGKILLed once a checkpoint is on disk, resumed
    with --resume_from_checkpoint latest: the final weights equal an uninterrupted run's."""
    from defectfill.config import save_config
    from defectfill.data.fabric import simulate_dataset
    from defectfill.io_utils import load_safetensors
    from gan_baselines.r3gan.config import R3GANConfig, R3GANModelConfig

    data = simulate_dataset(tmp_path / "source", ["plain"], ["stain", "hole"], n_good_train=0, n_good_test=0,
                            n_defect_per_type=2, size=32)
    model = R3GANModelConfig(resolution=16, channels=[16, 16], noise_dim=8, embed_dim=16, defect_types=[])
    save_config(R3GANConfig(model=model, train_batch_size=2, max_train_steps=40, schedule_images=80,
                            checkpointing_steps=4, checkpoints_total_limit=100, validation_steps=0, report_to="none"),
                tmp_path / "r3gan.yaml")

    def argv(out: Path, *extra: str) -> list[str]:
        return ["train", "--generator", "r3gan", "--config", str(tmp_path / "r3gan.yaml"), "--train_data_dir",
                str(data), "--output_dir", str(out), *extra]

    killed = tmp_path / "killed"
    code = _run_until(argv(killed), lambda: any((killed / "checkpoints").glob("step-*/config.json")), timeout=300)
    assert code == -signal.SIGKILL, "training finished before it could be killed"
    assert not (killed / "model" / "model.safetensors").exists()
    saved = {p: p.stat().st_mtime_ns for p in (killed / "checkpoints").glob("step-*/state.json")}
    torch.set_num_threads(1)
    assert main(argv(killed, "--resume_from_checkpoint", "latest")) == 0
    assert saved and all(p.stat().st_mtime_ns == t for p, t in saved.items())  # resumed, not trained again
    assert main(argv(tmp_path / "straight")) == 0
    resumed = load_safetensors(killed / "model" / "model.safetensors", "rerun the test")
    straight = load_safetensors(tmp_path / "straight" / "model" / "model.safetensors", "rerun the test")
    assert resumed.keys() == straight.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_dgt_training_killed_after_a_checkpoint_resumes_to_the_same_weights(tmp_path):
    """DGT (G + DIS + DFC + D_adv, two optimizers) through `defectfill train --generator dgt`, SIGKILLed
    once a checkpoint is on disk, resumed with --resume_from_checkpoint latest: the final weights and the
    fitted Weibull set equal an uninterrupted run's."""
    from defectfill.config import save_config
    from defectfill.data.fabric import simulate_dataset
    from defectfill.io_utils import load_safetensors
    from gan_baselines.dgt.config import DGTConfig, DGTModelConfig, OpenMaxConfig

    data = simulate_dataset(tmp_path / "source", ["plain"], ["stain", "hole"], n_good_train=2, n_good_test=0,
                            n_defect_per_type=3, size=32)
    model = DGTModelConfig(resolution=32, base_channels=4, depth=2, classifier_channels=8, discriminator_channels=4)
    save_config(DGTConfig(model=model, openmax=OpenMaxConfig(tailsize=4, fakes_per_type=4), train_batch_size=2,
                          max_train_steps=16, checkpointing_steps=2, checkpoints_total_limit=100, validation_steps=0,
                          report_to="none"), tmp_path / "dgt.yaml")

    def argv(out: Path, *extra: str) -> list[str]:
        return ["train", "--generator", "dgt", "--config", str(tmp_path / "dgt.yaml"), "--train_data_dir",
                str(data), "--output_dir", str(out), *extra]

    killed = tmp_path / "killed"
    code = _run_until(argv(killed), lambda: any((killed / "checkpoints").glob("step-*/config.json")), timeout=300)
    assert code == -signal.SIGKILL, "training finished before it could be killed"
    assert not (killed / "model").exists()
    saved = {p: p.stat().st_mtime_ns for p in (killed / "checkpoints").glob("step-*/state.json")}
    assert saved and len(saved) < 8  # killed mid-way (the last checkpoint is step 16)
    torch.set_num_threads(1)
    assert main(argv(killed, "--resume_from_checkpoint", "latest")) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in saved.items())  # resumed, not trained again
    assert main(argv(tmp_path / "straight")) == 0
    for name in ("model.safetensors", "openset.safetensors"):
        resumed = load_safetensors(killed / "model" / name, "rerun the test")
        straight = load_safetensors(tmp_path / "straight" / "model" / name, "rerun the test")
        assert resumed.keys() == straight.keys() and resumed
        for key in straight:
            torch.testing.assert_close(resumed[key], straight[key], rtol=1e-5, atol=1e-6, msg=f"{name}:{key}")
    assert json.loads((killed / "model" / "openset.json").read_text()) == \
        json.loads((tmp_path / "straight" / "model" / "openset.json").read_text())
