"""Crash safety: runs killed with SIGKILL resume to the same complete result, nothing half-written or
duplicated; a failed checkpoint write (a file-size limit: a full disk) keeps the previous checkpoint."""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
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


def _run_until(argv: list[str], appeared, timeout: float = 120.0) -> int:
    """Run `defectfill argv` in a child process, SIGKILL it once `appeared()` is true; returns its exit code
    (-9 when killed).

    The child is forked from this test process: a separate process like `python -m defectfill.cli`, but
    it shares the modules already imported here instead of importing torch, diffusers and the rest
    again (seconds of CPU per kill). It never returns into pytest (os._exit)."""
    import traceback

    err = Path(os.environ.get("TMPDIR", "/tmp")) / f"defectfill-kill-{os.getpid()}-{time.monotonic_ns()}.err"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 2)
            code = main(argv)
        except BaseException:  # noqa: BLE001 - whatever happens, the child must not return into pytest
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if appeared():
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(0.005)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError(f"the run did not reach the kill point within {timeout} s: {argv}")
    code = os.waitstatus_to_exitcode(status)
    message = err.read_text(errors="replace")[-3000:] if err.exists() else ""
    err.unlink(missing_ok=True)
    if code not in (0, -signal.SIGKILL):
        raise AssertionError(f"exit code {code}: {message}")
    return code


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _poison(module: torch.nn.Module) -> None:
    """Corrupt the weights (what a diverged step does): the next loss is NaN."""
    with torch.no_grad():
        next(p for p in module.parameters() if p.requires_grad).fill_(float("nan"))


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

    straight = tmp_path / "straight"
    assert main(argv(straight)) == 0  # first: the child forked below then shares this run's imports
    killed = tmp_path / "killed"
    manifest = killed / "manifest.jsonl"
    code = _run_until(argv(killed), lambda: manifest.is_file() and manifest.stat().st_size > 0)
    assert code == -signal.SIGKILL, "the run finished before it could be killed; give it more work"
    done_before = len(read_jsonl(manifest))
    assert 1 <= done_before < 24
    assert (killed / ".defectfill.lock").exists()  # the dead run's lock: stale, taken over on restart
    assert main(argv(killed)) == 0  # restart (in this process): resumes
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
    assert main(_train_argv(base, ds, straight)) == 0  # first: the child forked below shares its imports
    code = _run_until(_train_argv(base, ds, killed),
                      lambda: (killed / "checkpoint-2" / "training_state.json").is_file())
    assert code == -signal.SIGKILL, "training finished before it could be killed"
    assert not (killed / "checkpoint-4").exists()
    assert main(_train_argv(base, ds, killed, "--resume_from_checkpoint", "latest")) == 0  # restart, in this process
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


def test_defectfill_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(train_setup, tmp_path, monkeypatch,
                                                                                capsys):
    from defectfill.training import trainer

    base, ds = train_setup
    out = tmp_path / "out"
    original = trainer.DefectFillTrainer.save_checkpoint
    saved = {}

    def save_checkpoint(self, step):
        path = original(self, step)
        saved.update(_files(path))
        _poison(self.models.unet)  # step 3 diverges
        return path

    monkeypatch.setattr(trainer.DefectFillTrainer, "save_checkpoint", save_checkpoint)
    assert main(_train_argv(base, ds, out)) == 1
    err = capsys.readouterr().err
    assert "is nan at step 3; training stopped" in err
    assert f"the last good checkpoint {out / 'checkpoint-2'} is kept" in err
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-2"]
    assert _files(out / "checkpoint-2") == saved, "the good checkpoint was touched"
    assert not list(out.glob("*.safetensors")), "a final model was written from NaN weights"


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
    for module in ("torch.utils.tensorboard", "defectfill.bench.run", "defectfill.downstream.arm",
                   "defectfill.report.html"):
        importlib.import_module(module)  # imported here once: the forked run shares them
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


def _gan_config(method: str, path: Path) -> int:
    """A tiny config of `method` written to `path`; returns the last stage-1 step (multistage) or 0."""
    from defectfill.config import save_config

    common = {"train_batch_size": 2, "checkpointing_steps": 4, "checkpoints_total_limit": 100, "validation_steps": 0,
              "report_to": "none"}
    if method == "r3gan":
        from gan_baselines.r3gan.config import R3GANConfig, R3GANModelConfig

        model = R3GANModelConfig(resolution=16, channels=[16, 16], noise_dim=8, embed_dim=16, defect_types=[])
        save_config(R3GANConfig(model=model, max_train_steps=16, schedule_images=32, **common), path)
        return 0
    from gan_baselines.multistage.config import MultistageConfig, MultistageModelConfig

    model = MultistageModelConfig(resolution=32, patch_size=16, gram_layers=["relu1_1", "relu2_1"],
                                  perceptual_layers=["relu1_1"], gram_rank=4, noise_dim=8, cond_dim=16, g_channels=8,
                                  d_channels=8, unet_channels=[8, 16])
    save_config(MultistageConfig(model=model, stage1_steps=8, stage2_steps=8, **common), path)
    return 8


@pytest.mark.parametrize("method", ["r3gan", "multistage"])
def test_gan_training_killed_after_a_checkpoint_resumes_to_the_same_weights(method, tmp_path):
    """A GAN through `defectfill train --generator METHOD`, SIGKILLed once a checkpoint is on disk, resumed
    with --resume_from_checkpoint latest: the final weights equal an uninterrupted run's. The multistage
    run is killed in stage 1, so its resume crosses into stage 2 (stage-1 G frozen, T trained)."""
    from defectfill.data.fabric import simulate_dataset
    from defectfill.io_utils import load_safetensors
    from defectfill.locks import LOCK_NAME

    data = simulate_dataset(tmp_path / "source", ["plain"], ["stain", "hole"], n_good_train=0, n_good_test=0,
                            n_defect_per_type=2, size=48)
    config = tmp_path / f"{method}.yaml"
    stage1_steps = _gan_config(method, config)

    def argv(out: Path, *extra: str) -> list[str]:
        return ["train", "--generator", method, "--config", str(config), "--train_data_dir", str(data),
                "--output_dir", str(out), *extra]

    torch.set_num_threads(1)
    assert main(argv(tmp_path / "straight")) == 0  # first: the child forked below shares its imports
    killed = tmp_path / "killed"
    code = _run_until(argv(killed), lambda: any((killed / "checkpoints").glob("step-*/config.json")), timeout=300)
    assert code == -signal.SIGKILL, "training finished before it could be killed"
    assert not (killed / "model" / "model.safetensors").exists()
    assert (killed / LOCK_NAME).exists()  # the dead run's lock: taken over by the restart
    saved = {p: p.stat().st_mtime_ns for p in (killed / "checkpoints").glob("step-*/state.json")}
    steps = sorted(int(p.parent.name[5:]) for p in saved)
    if stage1_steps:
        assert steps[-1] <= stage1_steps, "killed after stage 1: the resume would not cross the stages"
    assert main(argv(killed, "--resume_from_checkpoint", "latest")) == 0
    assert saved and all(p.stat().st_mtime_ns == t for p, t in saved.items())  # resumed, not trained again
    resumed = load_safetensors(killed / "model" / "model.safetensors", "rerun the test")
    straight = load_safetensors(tmp_path / "straight" / "model" / "model.safetensors", "rerun the test")
    assert resumed.keys() == straight.keys() and len(straight) > 10
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=1e-5, atol=1e-6, msg=f"{key} differs")
    assert not (killed / LOCK_NAME).exists() and not [p for p in killed.rglob("*") if p.name.startswith(".")]


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
