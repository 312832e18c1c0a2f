"""Resumable training checkpoints in safe formats only (base-model pretraining, DeepLabV3).

A checkpoint is a folder `checkpoints/<stage>-<step:06d>/` holding
- `model.safetensors`: the trained module's state dict,
- `optimizer.safetensors`: AdamW's per-parameter tensors, flattened as "<index>.<name>",
- `state.json`: stage, step, the optimizer's param groups (hyper-parameters) and the run's seed.
The step fixes everything random after it (data and noise are seeded per step), so nothing else
is needed to continue exactly. Nothing is pickled; a damaged file raises `ModelError`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from defectfill import io_utils
from defectfill.errors import ModelError
from defectfill.io_utils import atomic_write_json

STAGES = ("vae", "unet")


def atomic_save_dir(target: str | Path, save) -> Path:
    """Call `save(tmp_dir)` and move the finished folder to `target` (replacing an older one)."""
    target = Path(target)
    tmp = io_utils.make_temp_dir(target)
    try:
        save(tmp)
        io_utils.apply_umask_modes(tmp)  # safetensors' save_file makes 0600 files
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{tmp.name[-8:]}")
            target.rename(old)
        try:
            tmp.rename(target)
        except BaseException:
            if old is not None:  # put the previous folder back
                old.rename(target)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """An optimizer's state as flat tensors "<param index>.<name>" (for safetensors) + its param groups."""
    sd = optimizer.state_dict()
    tensors = {}
    for index, state in sd["state"].items():
        for name, value in state.items():
            tensors[f"{index}.{name}"] = torch.as_tensor(value).detach().clone().contiguous()
    return tensors, sd["param_groups"]


def save_training_state(
    folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any],
    tensors: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write `folder` atomically: model.safetensors, optimizer.safetensors, state.json (`state` + the
    optimizer's param groups) and one `<name>.safetensors` per entry of `tensors` (e.g. RNG states)."""
    from safetensors.torch import save_file

    model_sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_tensors, groups = optimizer_tensors(optimizer)

    def save(tmp: Path) -> None:
        save_file(model_sd, str(tmp / "model.safetensors"))
        save_file({k: v.cpu() for k, v in opt_tensors.items()}, str(tmp / "optimizer.safetensors"))
        for name, extra in (tensors or {}).items():
            save_file(extra, str(tmp / f"{name}.safetensors"))
        atomic_write_json(tmp / "state.json", {**state, "param_groups": groups})

    return atomic_save_dir(folder, save)


def save_checkpoint(
    root: str | Path, stage: str, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
    extra: dict[str, Any] | None = None, total_limit: int | None = None,
) -> Path:
    root = Path(root)
    try:
        path = save_training_state(root / f"{stage}-{step:06d}", model, optimizer,
                                   {"stage": stage, "step": step, **(extra or {})})
    except Exception as exc:  # OSError, SafetensorError, torch.save RuntimeError: disk full, file-size limit
        previous = [p.name for p in list_checkpoints(root, stage)]
        raise ModelError(
            f"{root / f'{stage}-{step:06d}'}: writing the checkpoint failed ({type(exc).__name__}: {exc}); the previous "
            f"checkpoint(s) {previous or 'none'} are intact. Free disk space, then resume with "
            "--resume_from_checkpoint latest") from exc
    if total_limit:
        for old in list_checkpoints(root, stage)[:-total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    return path


def list_checkpoints(root: str | Path, stage: str | None = None) -> list[Path]:
    """Checkpoint folders under `root`, oldest first (by stage order, then step)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        name, _, step = p.name.partition("-")
        if p.is_dir() and name in STAGES and step.isdigit() and (stage is None or name == stage):
            found.append((STAGES.index(name), int(step), p))
    return [p for *_, p in sorted(found)]


def read_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    state_file = path / "state.json"
    if not state_file.is_file():
        raise ModelError(f"{path}: not a checkpoint (no state.json); pass a folder checkpoints/<stage>-<step> or 'latest'")
    try:
        state = json.loads(state_file.read_text())
        int(state["step"]), str(state["stage"]), list(state["param_groups"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ModelError(
            f"{state_file}: corrupted checkpoint state ({exc}); delete this checkpoint folder to resume from an "
            "older one, or start without --resume_from_checkpoint"
        ) from exc
    return state


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A tensor file of checkpoint folder `path.parent` (a damaged one: ModelError saying what to do)."""
    return io_utils.load_safetensors(
        path, fix=f"delete the folder {path.parent} to resume from an older checkpoint, or start without "
        "--resume_from_checkpoint", kind="checkpoint file")


def restore_optimizer(optimizer: torch.optim.Optimizer, flat: dict[str, torch.Tensor], param_groups: list[dict]) -> None:
    """The inverse of `optimizer_tensors`."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        index, _, name = key.partition(".")
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore `model` and `optimizer` from checkpoint folder `path`; returns its state.json."""
    path = Path(path)
    state = read_state(path)
    model_sd = load_safetensors(path / "model.safetensors")
    try:
        model.load_state_dict(model_sd, strict=True)
    except RuntimeError as exc:
        raise ModelError(
            f"{path}/model.safetensors does not fit the configured model ({str(exc)[:300]}); resume with the "
            "config the checkpoint was trained with"
        ) from exc
    flat = load_safetensors(path / "optimizer.safetensors")
    try:
        restore_optimizer(optimizer, flat, state["param_groups"])
    except (ValueError, KeyError) as exc:
        raise ModelError(f"{path}: optimizer state does not fit the model ({exc}); resume with the same config") from exc
    return state


def resolve_resume(root: str | Path, resume: str | None, stage: str) -> Path | None:
    """'latest' -> newest checkpoint of `stage` (None when there is none); a path -> that folder."""
    if resume is None:
        return None
    if resume == "latest":
        found = list_checkpoints(root, stage)
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_dir():
        raise ModelError(f"--resume_from_checkpoint {resume}: no such checkpoint folder; pass 'latest' or a folder")
    return path if read_state(path)["stage"] == stage else None

