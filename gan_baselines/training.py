"""What every GAN baseline's training loop shares: schedules, per-step RNG, checkpoints, logs, and
the two alarms (non-finite loss, mode collapse).

- `cosine_schedule`: v(n) = base + (1 − ½(1 + cos(π·n/T)))·(final − base), held at `final` for n ≥ T
  (R3GAN's schedules, n counted in images seen).
- `step_generator(seed, step)`: the torch.Generator that draws every random number of one step, so
  a run resumed at step s continues exactly as the uninterrupted run (nothing else to save).
- `CheckpointStore`: `<output_dir>/checkpoints/step-<step:06d>/` holding the model
  (`save_pretrained`: config.json + model.safetensors), one `optimizer_<name>.safetensors` per
  optimizer and state.json; written atomically, nothing pickled.
- `check_losses`: a NaN/inf loss stops training with the step number (1-based: the number the step's
  checkpoint would carry) and the last good checkpoint (never overwritten by the bad step). A method
  calls it before each optimiser step; `GanTrainer.train` checks the logged `loss/*` values again
  before any checkpoint is written, so a method that forgets still stops.
- A failed checkpoint write (disk full) raises a ModelError naming the intact previous checkpoints;
  the finished model folder is written atomically too.
- `batch_diversity` / `warn_if_collapsed`: G's outputs for one condition and different noise should
  differ about as much as real defects do; a ratio under the threshold warns (`ModeCollapseWarning`).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from defectfill.checkpoints import atomic_save_dir, load_safetensors, optimizer_tensors, restore_optimizer
from defectfill.errors import ConfigError, ModelError
from defectfill.io_utils import atomic_write_json
from defectfill.losses import NonFiniteLossError, check_finite


@dataclass
class FewShotTrainConfig:
    """The fields `GanTrainer` reads, with Adam's settings, as the DGT and ICPR'20 configs share them
    (R3GAN and multistage declare the same names with their own schedules)."""

    seed: int = 0
    num_threads: int = 1
    train_batch_size: int = 4
    max_train_steps: int = 300
    learning_rate: float = 2e-4
    adam_beta1: float = 0.5
    adam_beta2: float = 0.999
    checkpointing_steps: int = 100       # 0: only at the end of a run
    checkpoints_total_limit: int = 2
    validation_steps: int = 0            # sample grid + mode-collapse check every N steps (0: never)
    collapse_ratio: float = 0.05
    report_to: Literal["tensorboard", "none"] = "tensorboard"
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("train_batch_size", "max_train_steps", "learning_rate"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: must be positive, found {getattr(self, name)}")


class ModeCollapseWarning(UserWarning):
    """G's outputs for different noise became nearly identical (the GAN may have collapsed)."""


def cosine_schedule(n: float, total: float, base: float, final: float) -> float:
    """v(n) = base + (1 − ½(1 + cos(π·n/T)))·(final − base); v(n) = final for n ≥ T."""
    t = min(max(n / total, 0.0), 1.0)
    return base + (1.0 - 0.5 * (1.0 + math.cos(math.pi * t))) * (final - base)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of every random draw of training step `step` (pure function of seed and step)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(step)]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def batch_diversity(images: torch.Tensor, masks: torch.Tensor | None = None) -> float:
    """Mean pairwise L1 distance between the B samples of a batch (inside `masks` when given).

    images (B, C, H, W); masks (B, 1, H, W) in {0, 1}: a pair is compared on the union of its masks."""
    x = images.detach().float()
    b = x.shape[0]
    if b < 2:
        return 0.0
    diffs = []
    for i in range(b):
        for j in range(i + 1, b):
            d = (x[i] - x[j]).abs().mean(dim=0)
            if masks is not None:
                region = torch.maximum(masks[i, 0], masks[j, 0]) > 0
                d = d[region] if region.any() else d
            diffs.append(d.mean())
    return float(torch.stack(diffs).mean())


def warn_if_collapsed(fake_diversity: float, real_diversity: float, ratio: float, step: int) -> bool:
    """Warn (ModeCollapseWarning) when fake / real diversity < `ratio`; returns whether it warned."""
    if real_diversity <= 0 or fake_diversity / real_diversity >= ratio:
        return False
    warnings.warn(
        f"step {step}: batch diversity of G's outputs is {fake_diversity:.4f}, {fake_diversity / real_diversity:.3f} "
        f"of the real defects' {real_diversity:.4f} (threshold {ratio}); the GAN may have collapsed. Look at the "
        "sample grids; lower the learning rate, raise the augmentation or resume from an earlier checkpoint",
        ModeCollapseWarning, stacklevel=2,
    )
    return True


def check_losses(losses: dict[str, torch.Tensor | float], step: int, last_checkpoint: Path | None) -> None:
    """check_finite, with the last good checkpoint named in the error (it is kept, never overwritten).

    step: 1-based, the step being trained (`GanTrainer.train_step(s)` trains step s + 1)."""
    try:
        check_finite(losses, step=step)
    except NonFiniteLossError as exc:
        keep = f"the last good checkpoint {last_checkpoint} is kept" if last_checkpoint else "no checkpoint was written yet"
        raise NonFiniteLossError(f"{exc}; {keep}") from exc


class CheckpointStore:
    """Resumable training checkpoints under `<output_dir>/checkpoints`."""

    def __init__(self, output_dir: str | Path, total_limit: int | None = 2):
        self.root = Path(output_dir) / "checkpoints"
        self.total_limit = total_limit

    def list(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        found = [(int(p.name[5:]), p) for p in self.root.iterdir()
                 if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        found = self.list()
        return found[-1] if found else None

    def resolve(self, resume: str | None) -> Path | None:
        """None -> None; 'latest' -> newest checkpoint or None; a path -> that folder (must exist)."""
        if resume is None:
            return None
        if resume == "latest":
            return self.latest()
        path = Path(resume)
        if not (path / "state.json").is_file():
            raise ModelError(f"resume_from_checkpoint: {path} is not a checkpoint folder (no state.json); "
                             f"pass 'latest' or one of {[str(p) for p in self.list()]}")
        return path

    def save(self, step: int, model: Any, optimizers: dict[str, torch.optim.Optimizer], state: dict[str, Any]) -> Path:
        groups = {}
        tensors = {}
        for name, optimizer in optimizers.items():
            tensors[name], groups[name] = optimizer_tensors(optimizer)

        def save(tmp: Path) -> None:
            from safetensors.torch import save_file

            model.save_pretrained(tmp)
            for name, flat in tensors.items():
                save_file({k: v.cpu() for k, v in flat.items()}, str(tmp / f"optimizer_{name}.safetensors"))
            atomic_write_json(tmp / "state.json", {**state, "step": step, "param_groups": groups})

        target = self.root / f"step-{step:06d}"
        try:
            path = atomic_save_dir(target, save)
        except Exception as exc:  # OSError, SafetensorError: disk full, file-size limit
            previous = [p.name for p in self.list() if p != target]
            raise ModelError(
                f"{target}: writing the checkpoint failed ({type(exc).__name__}: {str(exc)[:200]}); nothing was "
                f"replaced, the previous checkpoint(s) {previous or 'none'} in {self.root} are intact. Free disk "
                "space, then resume with --resume_from_checkpoint latest") from exc
        if self.total_limit:
            import shutil

            for old in self.list()[: -self.total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        return path

    @staticmethod
    def load(path: Path, model: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
        """Restore `model` and `optimizers` from checkpoint `path`; returns its state.json."""
        try:
            state = json.loads((path / "state.json").read_text())
            int(state["step"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{path}/state.json: unreadable checkpoint state ({exc}); delete {path} to resume "
                             "from an older checkpoint") from exc
        try:
            model.load_state_dict(load_safetensors(path / "model.safetensors"), strict=True)
        except RuntimeError as exc:
            raise ModelError(f"{path}/model.safetensors does not fit the configured model ({str(exc)[:300]}); "
                             "resume with the config the checkpoint was trained with") from exc
        for name, optimizer in optimizers.items():
            flat = load_safetensors(path / f"optimizer_{name}.safetensors")
            restore_optimizer(optimizer, flat, state["param_groups"][name])
        return state


class TrainLog:
    """tqdm progress bar + TensorBoard scalars and sample grids (`report_to: tensorboard | none`)."""

    def __init__(self, output_dir: str | Path, total: int, initial: int, desc: str, report_to: str = "tensorboard"):
        from tqdm.auto import tqdm

        self.writer = None
        if report_to == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(output_dir) / "logs"))
        self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)

    def image(self, name: str, sheet: np.ndarray, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(name, sheet, step, dataformats="HWC")

    def advance(self, postfix: dict[str, float]) -> None:
        self.bar.update(1)
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in postfix.items()}, refresh=False)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


class GanTrainer:
    """The loop every GAN baseline shares (R3GAN, multistage, DGT, ICPR'20); a subclass sets `model`
    (one nn.Module holding all its networks), `optimizers` (a dict, any number), `method` and writes
    `train_step(step) -> logged values` (steps 0, 1, ...; its randomness from `step_generator`) and
    `validate(step, log)`; `save_model(folder)` may add files beside the final weights.

    Subclass __init__: build the model and optimizers, then call `self._setup(...)` which prepares them
    through accelerate and resumes from a checkpoint."""

    method = "gan"
    desc = "GAN steps"

    def _setup(self, config: Any, output_dir: str | Path, resume_from_checkpoint: str | None) -> None:
        from defectfill.distributed import new_accelerator

        self.config = config
        self.output_dir = Path(output_dir)
        self.accelerator = new_accelerator(cpu=config.device == "cpu", mixed_precision="no")
        names = list(self.optimizers)
        prepared = self.accelerator.prepare(self.model, *self.optimizers.values())
        self.model, self.optimizers = prepared[0], dict(zip(names, prepared[1:]))
        self.store = CheckpointStore(self.output_dir, config.checkpoints_total_limit)
        self.step = 0
        self.last_checkpoint: Path | None = None
        self.cpu_seconds = 0.0
        resume = self.store.resolve(resume_from_checkpoint)
        if resume is not None:
            state = self.store.load(resume, self.unwrapped, self.optimizers)
            self.step, self.last_checkpoint = int(state["step"]), resume

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def train_step(self, step: int) -> dict[str, float]:
        raise NotImplementedError

    def update(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, step: int,
               checked: dict[str, torch.Tensor] | None = None) -> None:
        """One optimiser update on `loss` after the NaN check of `checked` (default: the loss itself),
        so a bad value stops training before it reaches the weights. step: 0-based, as `train_step`'s;
        the error names it 1-based (`check_losses`)."""
        check_losses(checked if checked is not None else {"loss": loss}, step + 1, self.last_checkpoint)
        optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        optimizer.step()

    def validate(self, step: int, log: TrainLog | None = None) -> dict[str, float]:
        raise NotImplementedError

    def save_checkpoint(self) -> Path:
        self.last_checkpoint = self.store.save(self.step, self.unwrapped, self.optimizers, {"method": self.method})
        return self.last_checkpoint

    def train(self, until: int | None = None) -> Path:
        """Train to step `until` (default max_train_steps); at max_train_steps writes `<output_dir>/model`."""
        import time

        c = self.config
        until = c.max_train_steps if until is None else min(until, c.max_train_steps)
        torch.set_num_threads(c.num_threads)
        log = TrainLog(self.output_dir, c.max_train_steps, self.step, self.desc, c.report_to)
        start = time.process_time()
        try:
            while self.step < until:
                values = self.train_step(self.step)
                check_losses({k: v for k, v in values.items() if k.startswith("loss/")}, self.step + 1,
                             self.last_checkpoint)  # before any checkpoint: the bad step is never saved
                self.step += 1
                log.scalars(values, self.step)
                log.advance({k.split("/")[-1]: v for k, v in values.items() if k.startswith("loss/")})
                if c.validation_steps and self.step % c.validation_steps == 0:
                    self.validate(self.step, log)
                if (c.checkpointing_steps and self.step % c.checkpointing_steps == 0) or self.step == until:
                    self.save_checkpoint()
        finally:
            log.close()
            self.cpu_seconds += time.process_time() - start
        if self.step >= c.max_train_steps:
            atomic_save_dir(self.output_dir / "model", self.save_model)
        return self.output_dir / "model"

    def save_model(self, folder: Path) -> None:
        """Write the finished model into `folder` (a temporary folder, renamed to `<output_dir>/model`
        once complete); a subclass adds what belongs beside the weights (DGT: its Weibull models)."""
        self.unwrapped.save_pretrained(folder)


def write_sample_grid(output_dir: Path, step: int, rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]],
                      log: TrainLog | None) -> Path:
    """One row per condition: the real window, then G's samples; masks outlined. Saved as
    `<output_dir>/samples/step-<step>.png` and logged to TensorBoard. rows: (real (3, r, r),
    fakes (k, 3, r, r), mask (1, r, r), label)."""
    from defectfill.viz import contact_sheet
    from gan_baselines.data import to_uint8_images

    images, masks, captions = [], [], []
    for real, fakes, mask, label in rows:
        images += list(to_uint8_images(torch.cat([real[None], fakes])))
        masks += [mask[0].bool().cpu().numpy()] * (len(fakes) + 1)
        captions += [f"real {label}"] + [f"G z{k}" for k in range(len(fakes))]
    sheet = contact_sheet(images, masks, captions, ncols=len(rows[0][1]) + 1, tile=96)
    path = output_dir / "samples" / f"step-{step:06d}.png"
    from PIL import Image

    from defectfill.io_utils import atomic_save

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(path, lambda tmp: Image.fromarray(sheet).save(tmp, format="PNG"))
    if log is not None:
        log.image("samples", sheet, step)
    return path


def repeat_row(x: torch.Tensor, index: int, times: int) -> torch.Tensor:
    """Row `index` of a batch repeated `times` (one condition, several noises)."""
    return x[index : index + 1].expand(times, *x.shape[1:])
