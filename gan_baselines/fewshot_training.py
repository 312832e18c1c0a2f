"""What DGT and ICPR'20 training share: the few-shot batch sampler and a resumable loop.

(Written in parallel with `gan_baselines/training.py` / `data.py` of R3GAN and the multistage GAN, which
hold the same ideas — per-step RNG, checkpoint store, trainer class; merging the two is a follow-up.)

- `FewShotBatches`: crops of the few real defects (a window of side `resolution` that contains the
  defect's centre, at a random offset) with their masks and class indices, and random crops of the
  good images. Every draw comes from a `torch.Generator`, so a batch is fixed by (seed, step).
- `train_loop`: accelerate owns the device and precision; tqdm progress; TensorBoard scalars in
  `<output_dir>/logs`; every `checkpointing_steps` a checkpoint `<output_dir>/checkpoints/step-<n>/`
  (the model through `save_pretrained`: config.json + model.safetensors; each optimizer's tensors
  as safetensors; state.json). `resume_from_checkpoint: latest` continues from the newest one and,
  because data and noise are seeded per step, ends with the same weights as an uninterrupted run
  on CPU (tested). The finished model is written to `<output_dir>/model/`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from defectfill.checkpoints import atomic_save_dir, optimizer_tensors, restore_optimizer
from defectfill.data.sample import DefectSample
from defectfill.errors import DataError, ModelError
from defectfill.io_utils import atomic_write_json, load_safetensors

MODEL_DIR = "model"
CHECKPOINTS_DIR = "checkpoints"


@dataclass
class TrainingArgs:
    """Training flags, named as in diffusers' training examples."""

    resolution: int = 64
    train_batch_size: int = 4
    max_train_steps: int = 300
    learning_rate: float = 2e-4
    adam_beta1: float = 0.5
    adam_beta2: float = 0.999
    checkpointing_steps: int = 100
    checkpoints_total_limit: int = 2
    resume_from_checkpoint: str | None = "latest"
    mixed_precision: str = "no"
    seed: int = 0
    log_every: int = 10


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def upscale_to_side(image: np.ndarray, mask: np.ndarray | None, side: int):
    """Upscale so that both sides are >= side (a small image is never cropped below the window)."""
    h, w = image.shape[:2]
    if min(h, w) >= side:
        return image, mask
    scale = side / min(h, w)
    size = (max(side, round(w * scale)), max(side, round(h * scale)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    if mask is not None:
        mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    return image, mask


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high] (inclusive)."""
    return low + int(torch.randint(0, high - low + 1, (1,), generator=generator).item())


class FewShotBatches:
    """Batches of (real defect crop, its mask, its class index) and good-fabric crops."""

    def __init__(self, defects: Sequence[DefectSample], good_images: Sequence[np.ndarray],
                 defect_types: Sequence[str], resolution: int):
        self.defect_types = list(defect_types)
        self.resolution = int(resolution)
        self.defects = []
        for sample in defects:
            if sample.is_good or not sample.mask.any() or sample.defect_type not in self.defect_types:
                continue
            self.defects.append((*upscale_to_side(sample.image, sample.mask, resolution),
                                 self.defect_types.index(sample.defect_type)))
        if not self.defects:
            raise DataError(f"training data: no labelled defect of the types {self.defect_types}; "
                            "pass real defects with non-empty masks")
        self.good = [upscale_to_side(img, None, resolution)[0] for img in good_images]
        if not self.good:
            raise DataError("training data: no good image; pass good fabric images (the target's train/good)")

    def defect_crop(self, index: int, generator: torch.Generator):
        image, mask, label = self.defects[index]
        r, (h, w) = self.resolution, image.shape[:2]
        ys, xs = np.nonzero(mask)
        cy, cx = int(ys.mean()), int(xs.mean())
        # the window holds the defect's centre at a random place (not always the middle)
        y0 = _randint(max(0, cy - r + 1), min(h - r, cy), generator)
        x0 = _randint(max(0, cx - r + 1), min(w - r, cx), generator)
        return image[y0:y0 + r, x0:x0 + r], mask[y0:y0 + r, x0:x0 + r], label

    def good_crop(self, index: int, generator: torch.Generator) -> np.ndarray:
        image, r = self.good[index], self.resolution
        y0 = _randint(0, image.shape[0] - r, generator)
        x0 = _randint(0, image.shape[1] - r, generator)
        return image[y0:y0 + r, x0:x0 + r]

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """defect (B,3,r,r) [-1,1], mask (B,1,r,r) {0,1}, label (B,) long, good (B,3,r,r) [-1,1]."""
        picks = torch.randint(0, len(self.defects), (batch_size,), generator=generator).tolist()
        crops = [self.defect_crop(i, generator) for i in picks]
        goods = torch.randint(0, len(self.good), (batch_size,), generator=generator).tolist()
        return {
            "defect": torch.stack([to_tensor(c[0]) for c in crops]),
            "mask": torch.stack([torch.from_numpy(np.ascontiguousarray(c[1])).float()[None] for c in crops]),
            "label": torch.tensor([c[2] for c in crops], dtype=torch.long),
            "good": torch.stack([to_tensor(self.good_crop(i, generator)) for i in goods]),
        }


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator that fixes everything random in training step `step`."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1)[0]))


def model_is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def check_same_types(model: nn.Module, defect_types: Sequence[str], folder: Path) -> None:
    """A finished model found in `folder` must have been trained for the requested types."""
    if list(model.defect_types) != list(defect_types):
        raise ModelError(f"{folder}: holds a model trained for the defect types {model.defect_types}, this run asks "
                         f"for {list(defect_types)}; use another output folder or delete this one")


def _checkpoints(root: Path) -> list[Path]:
    found = [(int(p.name[5:]), p) for p in root.glob("step-*") if p.is_dir() and p.name[5:].isdigit()]
    return [p for _, p in sorted(found)]


def _save_checkpoint(root: Path, step: int, model, optimizers: dict, limit: int) -> None:
    from safetensors.torch import save_file

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp / MODEL_DIR)
        groups = {}
        for name, opt in optimizers.items():
            tensors, groups[name] = optimizer_tensors(opt)
            save_file({k: v.cpu() for k, v in tensors.items()}, str(tmp / f"optimizer-{name}.safetensors"))
        atomic_write_json(tmp / "state.json", {"step": step, "param_groups": groups})

    atomic_save_dir(root / f"step-{step:06d}", save)
    for old in _checkpoints(root)[:-max(1, limit)]:
        shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(path: Path, model: nn.Module, optimizers: dict) -> int:
    try:
        state = json.loads((path / "state.json").read_text())
        weights = load_safetensors(path / MODEL_DIR / "model.safetensors", fix=f"delete {path} and resume again",
                                   kind="checkpoint file")
        model.load_state_dict(weights, strict=True)
        for name, opt in optimizers.items():
            flat = load_safetensors(path / f"optimizer-{name}.safetensors", fix=f"delete {path}", kind="checkpoint file")
            restore_optimizer(opt, flat, state["param_groups"][name])
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: cannot resume from this checkpoint ({str(exc)[:200]}); delete it to resume from "
                         "an older one, or set resume_from_checkpoint: null") from exc
    return int(state["step"])


def train_loop(
    model: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    step_fn: Callable[[nn.Module, dict[str, torch.optim.Optimizer], torch.Generator, Callable], dict[str, float]],
    args: TrainingArgs,
    output_dir: str | Path,
    desc: str = "train",
    device: str = "cpu",
) -> nn.Module:
    """Run `step_fn(model, optimizers, step_generator, backward)` for steps 1..max_train_steps.

    `step_fn` does its own zero_grad / backward (through the `backward` it is given) / step and
    returns the scalars to log. Returns the trained model, also saved to `<output_dir>/model/`.
    """
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    from defectfill.distributed import new_accelerator

    output_dir = Path(output_dir)
    ckpt_root = output_dir / CHECKPOINTS_DIR
    accelerator = new_accelerator(mixed_precision=args.mixed_precision, cpu=device == "cpu")
    start = 0
    if args.resume_from_checkpoint:
        found = (_checkpoints(ckpt_root)[-1:] if args.resume_from_checkpoint == "latest"
                 else [Path(args.resume_from_checkpoint)])
        if found:
            start = _load_checkpoint(found[0], model, optimizers)
    names = list(optimizers)
    prepared = accelerator.prepare(model, *optimizers.values())
    model, optimizers = prepared[0], dict(zip(names, prepared[1:]))
    writer = SummaryWriter(str(output_dir / "logs")) if accelerator.is_main_process else None
    bar = tqdm(range(start + 1, args.max_train_steps + 1), initial=start, total=args.max_train_steps, desc=desc,
               disable=not accelerator.is_main_process, mininterval=2.0)
    for step in bar:
        model.train()
        logs = step_fn(model, optimizers, step_generator(args.seed, step), accelerator.backward)
        if writer is not None and (step % args.log_every == 0 or step == args.max_train_steps):
            for key, value in logs.items():
                writer.add_scalar(key, value, step)
            bar.set_postfix({k: f"{v:.3f}" for k, v in list(logs.items())[:4]})
        if args.checkpointing_steps and step % args.checkpointing_steps == 0 and step < args.max_train_steps:
            _save_checkpoint(ckpt_root, step, accelerator.unwrap_model(model),
                             {k: getattr(o, "optimizer", o) for k, o in optimizers.items()},
                             args.checkpoints_total_limit)
    if writer is not None:
        writer.close()
    model = accelerator.unwrap_model(model)
    model.eval()
    atomic_save_dir(output_dir / MODEL_DIR, lambda tmp: model.save_pretrained(tmp))
    return model
