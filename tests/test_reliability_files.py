"""Reliability of what the product writes and reads: file modes follow the umask, one run per output
folder (a lock), and safe loading (paths kept inside their root, pickles refused without unpickling)."""

from __future__ import annotations

import json
import os
import pickle
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from defectfill import io_utils
from defectfill.errors import DataError, LockError, ModelError
from defectfill.locks import LOCK_NAME, output_lock


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_writer_gives_files_the_umask_mode(umask_027, tmp_path):
    from safetensors.torch import save_file

    from defectfill.checkpoints import save_checkpoint
    from defectfill.data.images import save_image, save_mask
    from defectfill.generators.manifest import merge_manifests

    out = tmp_path / "out"
    io_utils.atomic_write_text(out / "a.txt", "x")
    io_utils.atomic_write_json(out / "a.json", {"a": 1})
    io_utils.atomic_write_bytes(out / "a.bin", b"x")
    save_image(out / "img" / "a.png", np.zeros((4, 4, 3), np.uint8))
    save_mask(out / "mask" / "a.png", np.ones((4, 4), bool))
    io_utils.atomic_save(out / "w.safetensors", lambda p: save_file({"w": torch.zeros(2)}, str(p)))
    io_utils.Manifest(out / "manifest.rank0.jsonl", key="image").append({"image": "img/a.png"})
    merge_manifests(out)  # manifest.jsonl rewritten atomically
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    save_checkpoint(out / "checkpoints", "unet", 1, model, opt)  # a folder written atomically (mkdtemp)
    files = [p for p in out.rglob("*") if p.is_file()]
    dirs = [p for p in out.rglob("*") if p.is_dir()] + [out]
    assert len(files) >= 9 and (out / "checkpoints" / "unet-000001" / "model.safetensors").is_file()
    assert {str(p.relative_to(out)): oct(_mode(p)) for p in files} == {
        str(p.relative_to(out)): oct(0o640) for p in files}
    assert {str(p): oct(_mode(p)) for p in dirs} == {str(p): oct(0o750) for p in dirs}
    assert not [p for p in out.rglob(".*")], "temporary files left behind"


# ---------------------------------------------------------------------------------------------- the lock
def test_a_second_run_on_the_same_folder_refuses_and_nothing_is_left(tmp_path):
    out = tmp_path / "new" / "out"
    with output_lock(out, command="generate"):
        info = json.loads((out / LOCK_NAME).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        holder = subprocess.run(  # another process: refused, naming the holder and the fix
            [sys.executable, "-c", f"from defectfill.locks import output_lock\nwith output_lock({str(out)!r}): pass"],
            check=False, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
        assert holder.returncode != 0
        assert "LockError" in holder.stderr and f"pid {os.getpid()}" in holder.stderr
        assert "another run is writing into this folder" in holder.stderr and "delete" in holder.stderr
        with output_lock(out):  # the same process may nest (the bench calling the runner)
            pass
        assert (out / LOCK_NAME).exists()
    assert not (tmp_path / "new").exists(), "the folders the lock created were empty and must be removed"


def test_a_dead_runs_lock_is_taken_over_and_its_temp_files_removed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "start_ticks": 1}))
    half = out / "images" / ".a.x1y2.tmp.png"
    half.parent.mkdir()
    half.write_bytes(b"\x89PNG half")
    old = os.path.getmtime(half) - 10
    os.utime(half, (old, old))
    (out / "images" / "a.png").write_bytes(b"done")
    with output_lock(out):
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not half.exists() and (out / "images" / "a.png").exists()
    assert not (out / LOCK_NAME).exists()


def test_a_live_lock_of_this_host_or_any_lock_of_another_host_is_respected(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": socket.gethostname()}))  # init: alive
    with pytest.raises(LockError, match="pid 1 on host"), output_lock(out):
        pass
    (out / LOCK_NAME).write_text(json.dumps({"pid": 999999999, "host": "another-machine"}))
    with pytest.raises(LockError, match="another-machine"), output_lock(out):
        pass
    assert (out / LOCK_NAME).exists()  # never removed by the refused run


def _held_lock(out: Path) -> None:
    """`out` locked by a live run of this host (pid 1, always alive)."""
    out.mkdir(parents=True)
    (out / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "command": "x"}))


@pytest.mark.parametrize("verb", ["generate", "bench", "train"])
def test_cli_verbs_refuse_a_locked_output_folder(verb, tmp_path, capsys):
    from test_generate import _fabric

    from defectfill.cli import main
    from defectfill.data.images import save_image

    out = tmp_path / "out"
    _held_lock(out)
    repo = Path(__file__).resolve().parents[1]
    if verb == "generate":
        save_image(tmp_path / "good" / "a.png", _fabric())
        save_image(tmp_path / "real" / "a.png", _fabric(seed=1))
        argv = ["generate", "--generator", "cutpaste", "--train-data", str(tmp_path / "real"), "--images",
                str(tmp_path / "good"), "--defect-type", "stain", "--out", str(out)]
    elif verb == "bench":
        argv = ["bench", "--config", str(repo / "configs" / "bench_micro.yaml"), "--out", str(out)]
    else:
        argv = ["train", "--config", str(repo / "configs" / "defectfill_tiny.yaml"), "--train_data_dir",
                str(tmp_path / "none"), "--output_dir", str(out)]
    assert main(argv) == 1
    assert "another run is writing into this folder" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]


@pytest.fixture(scope="module")
def tiny_mvtec(tmp_path_factory) -> Path:
    """A valid 32 px MVTec-AD folder: with it the verbs below would write, so a refusal is the lock's doing."""
    from defectfill.data.fabric import simulate_dataset

    return simulate_dataset(tmp_path_factory.mktemp("lock") / "mvtec", ["plain"], ["stain"], n_good_train=1,
                            n_good_test=0, n_defect_per_type=1, size=32)


WRITING_VERBS = {  # verb -> argv writing into OUT; inputs valid where reading them is cheap, else the lock comes first
    "fabric": lambda d, o: ["fabric", "--out", o, "--textures", "plain", "--defects", "stain", "--n-good", "1",
                            "--n-defect", "1", "--size", "32"],
    "data convert": lambda d, o: ["data", "convert", d, "--to", "yolo", "--out", o],
    "assemble": lambda d, o: ["assemble", "--real", d, "--config", "configs/downstream_tiny.yaml", "--out", o],
    "finetune": lambda d, o: ["finetune", "--data", d + "/none", "--config", "configs/downstream_tiny.yaml",
                              "--out", o],
    "evaluate": lambda d, o: ["evaluate", "--run", o, "--data", d + "/none", "--test", d, "--config",
                              "configs/downstream_tiny.yaml"],
    "report": lambda d, o: ["report", d + "/none", "--out", o],
    "openset": lambda d, o: ["openset", d + "/test/stain", "--model", d + "/none", "--out", o],
    "train --generator r3gan": lambda d, o: ["train", "--generator", "r3gan", "--train_data_dir", d,
                                             "--output_dir", o],
    "train --generator multistage": lambda d, o: ["train", "--generator", "multistage", "--train_data_dir", d,
                                                  "--output_dir", o],
}


@pytest.mark.parametrize("verb", list(WRITING_VERBS))
def test_every_writing_verb_refuses_a_locked_output_folder(verb, tiny_mvtec, tmp_path, capsys, monkeypatch):
    from defectfill.cli import main

    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the configs/ paths
    out = tmp_path / "out"
    _held_lock(out)
    assert main(WRITING_VERBS[verb](str(tiny_mvtec), str(out))) == 1
    err = capsys.readouterr().err
    assert "another run is writing into this folder" in err and "pid 1 on host" in err, err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME], "the refused run wrote into the folder"


@pytest.mark.parametrize("script", ["train_dgt", "train_icpr20"])  # train_r3gan/multistage: gan_baselines.cli, above
def test_training_scripts_refuse_a_locked_output_folder(script, tiny_mvtec, tmp_path, capsys, monkeypatch):
    import runpy

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)
    out = tmp_path / "out"
    _held_lock(out)
    path = repo / "train_scripts" / f"{script}.py"
    monkeypatch.setattr(sys, "argv", [str(path), "--train_data_dir", str(tiny_mvtec), "--output_dir", str(out),
                                      "--good_data_dir", str(tiny_mvtec / "train" / "good")])
    with pytest.raises(SystemExit) as exit_code:  # the script as a user runs it (its __main__ block)
        runpy.run_path(str(path), run_name="__main__")
    assert exit_code.value.code == 1
    assert "another run is writing into this folder" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]


# ------------------------------------------------------------------------------------------ safe loading
class _Marker:
    """Unpickling this object creates the marker file: proof that a file was unpickled."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _evil_files(folder: Path, marker: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / "raw.pkl"
    raw.write_bytes(pickle.dumps({"w": _Marker(marker)}, protocol=4))
    zipped = folder / "zipped.pt"
    torch.save({"w": _Marker(marker)}, zipped)
    assert not marker.exists()
    return {"pickle": raw, "torch.save zip": zipped}


@pytest.mark.parametrize("kind", ["pickle", "torch.save zip"])
def test_a_pickle_where_weights_are_expected_is_refused_unopened(kind, tmp_path):
    import shutil

    from test_generate import build_tiny_model_dir

    from defectfill.checkpoints import load_safetensors
    from defectfill.models.defectfill import DefectFill
    from defectfill.models.weights import read_model_info

    marker = tmp_path / "UNPICKLED"
    evil = _evil_files(tmp_path / "evil", marker)[kind]
    # 1. a pickle renamed .safetensors, read by the project's safetensors loader
    disguised = tmp_path / "model.safetensors"
    shutil.copy(evil, disguised)
    with pytest.raises(ModelError, match=f"a {kind} file where safetensors weights are expected; refused"):
        io_utils.load_safetensors(disguised, fix="re-save it")
    with pytest.raises(ModelError, match="refused without loading"):
        load_safetensors(disguised)
    # 2. a DefectFill model folder whose LoRA is a pickle (under its safetensors name, and as .bin)
    _, model_dir = build_tiny_model_dir(tmp_path / "tiny")
    for name in ("pytorch_lora_weights.safetensors", "pytorch_lora_weights.bin"):
        bad = tmp_path / f"bad-{name}"
        shutil.copytree(model_dir, bad)
        shutil.copy(evil, bad / name)
        with pytest.raises(ModelError, match="refused"):
            read_model_info(bad)
        with pytest.raises(ModelError, match="refused"):
            DefectFill.from_pretrained(bad)
    assert not marker.exists(), "a pickle was unpickled"


def test_third_party_pickles_load_with_weights_only(tmp_path):
    """Where a library forces a pickle (accelerate's optimizer state, torchvision backbones) torch.load runs
    with weights_only=True: a pickle that would run code is rejected by torch without running it."""
    from defectfill.downstream.deeplab import _load_state_dict

    marker = tmp_path / "UNPICKLED"
    evil = _evil_files(tmp_path / "evil", marker)["torch.save zip"]
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        _load_state_dict(evil)
    from accelerate.utils import load as accelerate_load

    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        accelerate_load(evil, map_location="cpu")
    assert not marker.exists()


def test_ultralytics_checkpoints_load_restricted_under_offline_env(tmp_path):
    """offline_env sets ULTRALYTICS_SAFE_LOAD=1: ultralytics' .pt loader then uses weights_only=True and an
    allow-list, so a .pt that would run code is refused without running it."""
    marker = tmp_path / "UNPICKLED"
    evil = _evil_files(tmp_path / "evil", marker)["torch.save zip"]
    code = ("from defectfill.env import offline_env\n"
            f"offline_env({str(tmp_path / 'cache')!r})\n"
            "from ultralytics.nn.tasks import torch_safe_load\n"
            f"torch_safe_load({str(evil)!r})\n")
    env = {k: v for k, v in os.environ.items() if k != "ULTRALYTICS_SAFE_LOAD"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300,
                          env={**env, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.returncode != 0, "ultralytics loaded a pickle that runs code"
    assert not marker.exists(), "ultralytics unpickled the file"


def test_no_source_file_unpickles_or_trusts_remote_code():
    repo = Path(__file__).resolve().parents[1]
    sources = [p for d in ("defectfill", "gan_baselines", "train_scripts") for p in (repo / d).rglob("*.py")]
    offenders = []
    for path in sources:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#")[0]
            if "trust_remote_code" in code or "pickle.load" in code or "allow_pickle=True" in code or (
                    "torch.load(" in code and "weights_only=True" not in code):
                offenders.append(f"{path.relative_to(repo)}:{number}: {line.strip()}")
    assert offenders == []


def _generation_folder(root: Path) -> Path:
    from defectfill.data.images import save_image, save_mask
    from defectfill.generators.manifest import make_record

    save_image(root / "images" / "a.png", np.zeros((8, 8, 3), np.uint8))
    save_mask(root / "request_masks" / "a.png", np.ones((8, 8), bool))
    save_mask(root / "changed_masks" / "a.png", np.ones((8, 8), bool))
    record = make_record(image="images/a.png", changed_mask="changed_masks/a.png", request_mask="request_masks/a.png",
                         defect_type="stain", source_image="x.png", boxes=[[0, 0, 8, 8]], score=0.0, seed=0,
                         generator="cutpaste")
    io_utils.atomic_write_text(root / "manifest.jsonl", json.dumps(record) + "\n")
    return root


@pytest.mark.parametrize("escape", ["dotdot", "absolute", "symlink"])
def test_manifest_and_coco_paths_that_leave_their_root_are_refused(escape, tmp_path):
    from defectfill.data.images import save_image
    from defectfill.data.readers import read_coco
    from defectfill.generators.manifest import read_generation_manifest

    outside = tmp_path / "secret"
    save_image(outside / "a.png", np.zeros((8, 8, 3), np.uint8))
    root = _generation_folder(tmp_path / "gen")
    read_generation_manifest(root)  # the clean folder reads
    if escape == "dotdot":
        name = "../secret/a.png"
    elif escape == "absolute":
        name = str(outside / "a.png")
    else:
        (root / "images" / "link.png").symlink_to(outside / "a.png")
        name = "images/link.png"
    record = json.loads((root / "manifest.jsonl").read_text())
    record["image"] = name
    (root / "manifest.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(DataError, match=r"manifest.jsonl line 1: image .* points outside"):
        read_generation_manifest(root)
    coco_root = tmp_path / "coco"
    save_image(coco_root / "images" / "ok.png", np.zeros((8, 8, 3), np.uint8))
    if escape == "symlink":
        (coco_root / "images" / "link.png").symlink_to(outside / "a.png")
        name = "link.png"
    coco = {"images": [{"id": 1, "file_name": name, "width": 8, "height": 8}], "annotations": [],
            "categories": [{"id": 1, "name": "stain"}]}
    (coco_root / "instances.json").write_text(json.dumps(coco))
    with pytest.raises(DataError, match=r"instances.json: file_name .* points outside"):
        read_coco(coco_root / "instances.json")


def test_a_manifest_line_cut_by_a_kill_does_not_swallow_the_next_record(tmp_path):
    path = tmp_path / "manifest.jsonl"
    manifest = io_utils.Manifest(path, key="image")
    manifest.append({"image": "a.png"})
    with open(path, "a") as f:
        f.write('{"image": "b.p')  # killed mid-line
    resumed = io_utils.Manifest(path, key="image")
    assert [r["image"] for r in resumed] == ["a.png"]
    resumed.append({"image": "b.png"})
    assert [r["image"] for r in io_utils.Manifest(path, key="image")] == ["a.png", "b.png"]
