"""The pixel segmenter: build, train (plain loop), save, load, predict class maps.

- Models: a small U-Net (`defectfill.downstream.unet`, the CPU default: it learns from random init
  in minutes), `deeplabv3_mobilenet_v3_large` or DeepLabV3-ResNet50 (the paper's GPU configuration),
  built with `weights=None, weights_backbone=None` (nothing downloaded); a pretrained DeepLabV3
  backbone is loaded from a local file when the user has one (`backbone_weights`: a torchvision
  ImageNet state dict, .pth or .safetensors); `init_weights` starts any arch from a segmenter
  checkpoint (e.g. simulator-pretrained).
- ResNet50 at output stride 8 as in the multistage-GAN paper (Liu et al., TIP 2020): layers 3 and 4
  dilated instead of strided (`replace_stride_with_dilation=[False, True, True]`); 16 dilates
  layer 4 only. No CRF.
- Classes: background + one per defect type. Loss (`segmentation_loss`): class-weighted
  cross-entropy, L_CE = Σ_pixels w_{y} · CE(p, y) / Σ_pixels w_{y}, w = 1 for background and 9 for
  defects (the paper's α1 = 1, α2 = 9; configurable), plus optionally 1 - soft Dice over the defect
  classes.
- Training: AdamW or SGD, linear warm-up then "poly" decay, AMP on CUDA only, tqdm progress.
  After each epoch the model is scored on the validation split (pixel F-measure,
  `defectfill.metrics.segmentation`): one console line (loss, val P / R / F, predicted defect
  pixels) and TensorBoard scalars. With a held-out validation split (`assemble.val_fraction` > 0)
  the best epoch on it is kept; when the validation images *are* the training images
  (val_fraction 0) the last epoch is kept, because the best epoch on training images is chosen on
  the data it fitted. When the model predicts no defect pixel on validation the epoch's line says
  so, a warning is logged once that lasts half the epochs, and a banner (and `warnings` in
  best.json) says so when the kept model predicts none.
  The kept model is `best.safetensors` + `best.json` (config, classes, epoch, scores, history).
- Resume: after each epoch the whole training state is written to `last/` (model, optimizer,
  scheduler, RNG states, best-so-far; safetensors + JSON, folder replaced atomically). A training
  interrupted between epochs continues from there and ends with the same weights as an
  uninterrupted one on CPU (tested); on CUDA the AMP loss scale and the CUDA RNG are not saved, so
  a resumed GPU run is close, not identical. `last/` is removed once `best.json` is written.
- Faults: a NaN/inf loss stops training with the epoch and step (never a skipped step); a failed
  write of best.safetensors or last/ (disk full) raises a ModelError. Both name what is kept intact:
  the previous best.safetensors and last/ (the state after the previous epoch, to resume from).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from defectfill.config import from_dict
from defectfill.downstream.config import DeepLabConfig
from defectfill.downstream.datasets import SegmentationFolder, image_to_tensor
from defectfill.errors import ModelError
from defectfill.io_utils import atomic_save, atomic_write_json, load_safetensors
from defectfill.losses import NonFiniteLossError
from defectfill.metrics.segmentation import PixelCounts, scores_from_counts

CHECKPOINT = "best.safetensors"
CHECKPOINT_INFO = "best.json"
RESUME_DIR = "last"
logger = logging.getLogger(__name__)


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelError(f"deeplab.backbone_weights: {path} not found; pass a local ImageNet state dict or leave it empty")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def _load_backbone(backbone: nn.Module, path: Path, arch: str) -> None:
    """Copy matching tensors of a torchvision classification state dict into the backbone."""
    state = _load_state_dict(path)
    if arch == "mobilenet_v3_large":  # IntermediateLayerGetter over `features`: keys lose the prefix
        state = {k.removeprefix("features."): v for k, v in state.items()}
    own = backbone.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(matched) < len(own) // 2:
        raise ModelError(
            f"{path}: only {len(matched)} of the backbone's {len(own)} tensors match; pass a torchvision "
            f"ImageNet {arch} state dict"
        )
    backbone.load_state_dict(matched, strict=False)


def build_deeplab(config: DeepLabConfig, num_classes: int) -> nn.Module:
    """The segmenter of `config.arch` with `num_classes` outputs (background included): random init,
    a local backbone (DeepLabV3) or a local segmenter checkpoint (`init_weights`)."""
    model = _build_arch(config, num_classes)
    if config.init_weights:
        load_init_weights(model, Path(config.init_weights))
    return model


def load_init_weights(model: nn.Module, path: Path) -> None:
    """Copy the tensors of a segmenter checkpoint whose names and shapes match (the class head of
    another class count keeps its random init); refuse a file that matches less than half."""
    if not path.is_file():
        raise ModelError(f"deeplab.init_weights: {path} not found; pass a segmenter .safetensors (best.safetensors) or leave it empty")
    state = _load_state_dict(path)
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(matched) < len(own) // 2:
        raise ModelError(f"{path}: only {len(matched)} of the model's {len(own)} tensors match; pass a checkpoint of "
                         "the same deeplab.arch (and unet_depth / unet_base_width)")
    model.load_state_dict(matched, strict=False)


def _build_arch(config: DeepLabConfig, num_classes: int) -> nn.Module:
    if config.arch == "unet":
        from defectfill.downstream.unet import UNet

        if config.backbone_weights:
            raise ModelError("deeplab.backbone_weights: an ImageNet backbone fits DeepLabV3 only; for arch unet use "
                             "init_weights (a segmenter checkpoint) or leave it empty")
        return UNet(num_classes, depth=config.unet_depth, base_width=config.unet_base_width)
    from torchvision.models import resnet50
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3

    if config.arch == "mobilenet_v3_large":
        model = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
        # torchvision's MobileNetV3 BatchNorm momentum is 0.01 (ImageNet-length training): after a
        # few hundred steps from random init the running statistics are still far from the data and
        # the eval-mode model predicts background everywhere (measured on real stains at step 120:
        # train mode found 1968 of 2332 stain pixels, eval mode 0). PyTorch's default 0.1 tracks the
        # data within tens of steps (eval mode then found 1450 of 2332).
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.1
    else:
        dilation = [False, True, True] if config.output_stride == 8 else [False, False, True]
        backbone = resnet50(weights=None, replace_stride_with_dilation=dilation)
        model = DeepLabV3(IntermediateLayerGetter(backbone, {"layer4": "out"}), DeepLabHead(2048, num_classes), None)
    if config.backbone_weights:
        _load_backbone(model.backbone, Path(config.backbone_weights), config.arch)
    return model


def _device(config: DeepLabConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(config.device)


def class_weights(config: DeepLabConfig, num_classes: int) -> torch.Tensor:
    return torch.tensor([config.background_weight] + [config.defect_weight] * (num_classes - 1), dtype=torch.float32)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, dice: bool) -> torch.Tensor:
    """logits (B, C, H, W), target (B, H, W) class indices, weights (C,) ->

    L = Σ_i w_{y_i} CE_i / Σ_i w_{y_i}  [+ 1 - Dice],  Dice = (2 Σ p·y + 1) / (Σ p + Σ y + 1)

    with p the softmax and y the one-hot target of the defect classes (c ≥ 1), summed over the batch.
    """
    loss = F.cross_entropy(logits, target, weight=weights)
    if dice:
        probabilities = logits.softmax(1)[:, 1:]
        onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(probabilities.dtype)
        loss = loss + 1 - (2 * (probabilities * onehot).sum() + 1) / (probabilities.sum() + onehot.sum() + 1)
    return loss


@torch.no_grad()
def _validate(model: nn.Module, loader, device: torch.device, classes: Sequence[str]) -> dict:
    """Pixel scores on `loader`, the number of defect pixels predicted and present, and the box mAP50
    of the segmenter's components (`segboxes`) against the masks' component boxes."""
    from defectfill.downstream.segboxes import boxes_from_probabilities
    from defectfill.masks import mask_to_boxes
    from defectfill.metrics.detection import ImageBoxes, coco_map

    model.eval()
    counts = PixelCounts(len(classes) + 1)
    predicted = present = 0
    truth, boxes, sizes = [], [], []
    for images, masks in loader:
        probabilities = model(images.to(device))["out"].softmax(1).cpu().numpy()
        for p, mask in zip(probabilities, masks.numpy()):
            prediction = p.argmax(0)
            counts.update(prediction, mask)
            predicted += int((prediction > 0).sum())
            present += int((mask > 0).sum())
            per_class = [mask_to_boxes(mask == c) for c in range(1, len(classes) + 1)]
            truth.append(ImageBoxes(np.concatenate(per_class), np.repeat(np.arange(len(classes)), [len(b) for b in per_class])))
            boxes.append(boxes_from_probabilities(p))
            sizes.append(mask.shape)
    return {**scores_from_counts(counts, classes), "predicted_defect_pixels": predicted, "defect_pixels": present,
            "boxes_map50": coco_map(truth, boxes, sizes, classes)["mAP50"]}


NO_DEFECT_WARNING = (
    "{out}: epoch {epoch}: the segmenter predicts NO defect pixel on the {n} validation images ({present} defect "
    "pixels there); it is still in the all-background phase. Train longer, raise deeplab.lr or "
    "deeplab.defect_weight, or use deeplab.arch: unet (learns from random init on a CPU)."
)


def _save_resume_state(folder: Path, model: nn.Module, optimizer, scheduler, generator: torch.Generator,
                       progress: dict) -> None:
    """Everything needed to continue after this epoch, in `folder` (replaced atomically)."""
    from defectfill.checkpoints import save_training_state

    scheduler_state = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    rng = {"torch_rng": torch.get_rng_state(), "loader_rng": generator.get_state()}
    save_training_state(folder, model, optimizer, {**progress, "scheduler": scheduler_state}, {"rng": rng})


def _load_resume_state(folder: Path, model: nn.Module, optimizer, scheduler, generator: torch.Generator) -> dict:
    """Restore a `last/` folder written by `_save_resume_state`; returns its progress record."""
    from defectfill.checkpoints import restore_optimizer

    fix = f"delete the folder {folder} to start this training again"
    try:
        state = json.loads((folder / "state.json").read_text())
        model.load_state_dict(load_safetensors(folder / "model.safetensors", fix))
        restore_optimizer(optimizer, load_safetensors(folder / "optimizer.safetensors", fix), state["param_groups"])
        scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [None] * len(optimizer.param_groups)})
        rng = load_safetensors(folder / "rng.safetensors", fix)
        torch.set_rng_state(rng["torch_rng"])
        generator.set_state(rng["loader_rng"])
    except ModelError:
        raise
    except (OSError, json.JSONDecodeError, KeyError, ValueError, RuntimeError) as exc:
        raise ModelError(
            f"{folder}: cannot resume DeepLabV3 training from it ({type(exc).__name__}: {str(exc)[:200]}); delete "
            "the folder to start this training again"
        ) from exc
    return state


def _kept(out_dir: Path, record: dict | None, resume_dir: Path) -> str:
    """What a stopped training leaves intact, for its error message."""
    best = (f"{out_dir / CHECKPOINT} (epoch {record['epoch']})" if record is not None and (out_dir / CHECKPOINT).is_file()
            else f"no {CHECKPOINT} yet")
    last = resume_dir / "state.json"
    state = (f"{resume_dir} (after epoch {json.loads(last.read_text())['epoch']}; the next run resumes from it)"
             if last.is_file() else "no resume state yet (the next run starts afresh)")
    return f"kept intact: {best}, {state}"


def _poly_with_warmup(warmup_steps: int, total_steps: int):
    """lr factor at `step`: linear warm-up over `warmup_steps`, then "poly" (1 - step / total)^0.9."""
    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
        return warm * max(0.0, 1 - step / total_steps) ** 0.9
    return factor


def validation_is_held_out(train_set: SegmentationFolder, val_set: SegmentationFolder) -> bool:
    """False when the validation images are training images (an assembled folder with val_fraction 0
    writes the real training images again under the same names)."""
    return not {p.name for p in val_set.images} <= {p.name for p in train_set.images}


def _epoch_line(epoch: int, epochs: int, loss: float, scores: dict, held_out: bool, classes: Sequence[str]) -> str:
    where = "val" if held_out else "train images (no held-out val)"
    none = " NO DEFECT PIXEL PREDICTED" if scores["defect_pixels"] and not scores["predicted_defect_pixels"] else ""
    parts = []
    for name in classes:
        c = scores["per_class"][name]
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
        parts.append(f"{name} P {fmt(c['precision'])} R {fmt(c['recall'])} F {fmt(c['f_measure'])}")
    boxes = "" if scores.get("boxes_map50") is None else f" | boxes mAP50 {scores['boxes_map50']:.3f}"
    return (f"segmenter epoch {epoch}/{epochs}: loss {loss:.4f} | {where}: " + "; ".join(parts)
            + f"{boxes} | defect px predicted {scores['predicted_defect_pixels']} / present {scores['defect_pixels']}{none}")


def train_deeplab(dataset_root: str | Path, classes: Sequence[str], config: DeepLabConfig, out_dir: str | Path, *, seed: int = 0, if_exists: str = "error") -> dict:
    """Train on `dataset_root` (an assembled folder); returns the record written to best.json."""
    from safetensors.torch import save_file
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    info_path = out_dir / CHECKPOINT_INFO
    if info_path.is_file():
        if if_exists == "skip":
            return json.loads(info_path.read_text())
        raise ModelError(f"{out_dir}: holds a trained segmenter ({CHECKPOINT_INFO}); choose another folder or pass if_exists='skip'")
    torch.manual_seed(seed)
    num_classes = len(classes) + 1
    device = _device(config)
    model = build_deeplab(config, num_classes).to(device)
    train_set = SegmentationFolder(dataset_root, "train", num_classes, config.image_size, train=True, seed=seed)
    val_set = SegmentationFolder(dataset_root, "val", num_classes, config.image_size)
    held_out = validation_is_held_out(train_set, val_set)
    loader_generator = torch.Generator().manual_seed(seed)
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=config.batch_size, shuffle=True, drop_last=len(train_set) > config.batch_size,
        num_workers=config.num_workers, generator=loader_generator,
    )
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=config.batch_size, num_workers=config.num_workers)
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total_steps = max(1, config.epochs * len(train_loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _poly_with_warmup(config.warmup_steps, total_steps))
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    weights = class_weights(config, num_classes).to(device)
    writer = SummaryWriter(str(out_dir / "tensorboard"))

    best_score, record, epoch_seconds, step, first_epoch, history, warned = -1.0, None, [], 0, 1, [], False
    resume_dir = out_dir / RESUME_DIR
    if (resume_dir / "state.json").is_file():
        progress = _load_resume_state(resume_dir, model, optimizer, scheduler, loader_generator)
        best_score, record, history = progress["best_score"], progress["record"], progress.get("history", [])
        epoch_seconds, step, first_epoch = progress["epoch_seconds"], progress["step"], progress["epoch"] + 1
        tqdm.write(f"segmenter: resumed {out_dir} after epoch {progress['epoch']}")
    for epoch in range(first_epoch, config.epochs + 1):
        train_set.set_epoch(epoch)
        model.train()
        started, cpu_started = time.perf_counter(), time.process_time()
        losses = []
        progress = tqdm(train_loader, desc=f"{config.arch} epoch {epoch}/{config.epochs}", leave=False)
        for images, masks in progress:
            images, masks = images.to(device), masks.to(device)
            with torch.autocast(device.type, enabled=use_amp):
                logits = model(images)["out"]
            loss = segmentation_loss(logits.float(), masks, weights, dice=config.loss == "ce_dice")
            if not torch.isfinite(loss):  # stop, never skip: nothing of this step reaches the weights
                raise NonFiniteLossError(
                    f"{out_dir}: segmenter loss is {loss.item()} at epoch {epoch}, step {step + 1}; training stopped "
                    f"instead of skipping the step; {_kept(out_dir, record, resume_dir)}. Fixes: lower deeplab.lr, "
                    "set deeplab.amp false, check the images and masks")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            losses.append(loss.item())
            writer.add_scalar("train/loss", losses[-1], step)
            progress.set_postfix(loss=f"{losses[-1]:.4f}")
        epoch_seconds.append(time.perf_counter() - started)
        scores = _validate(model, val_loader, device, classes)
        mean_f = scores["mean_f_measure"] if scores["mean_f_measure"] is not None else 0.0
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_mean_f": mean_f,
                        "val_boxes_map50": scores["boxes_map50"],
                        "predicted_defect_pixels": scores["predicted_defect_pixels"],
                        "cpu_seconds": time.process_time() - cpu_started})  # this process, training + validation
        tqdm.write(_epoch_line(epoch, config.epochs, history[-1]["loss"], scores, held_out, classes))
        # the first epochs of a random init often predict no defect: warn once it lasts half the run
        if scores["defect_pixels"] and not scores["predicted_defect_pixels"] and 2 * epoch >= config.epochs and not warned:
            warned = True
            logger.warning(NO_DEFECT_WARNING.format(out=out_dir, epoch=epoch, n=len(val_set), present=scores["defect_pixels"]))
        tag = "val" if held_out else "train_images"
        writer.add_scalar(f"{tag}/mean_f_measure", mean_f, epoch)
        for name in classes:
            for metric in ("precision", "recall", "f_measure"):
                if (value := scores["per_class"][name][metric]) is not None:
                    writer.add_scalar(f"{tag}/{name}/{metric}", value, epoch)
        writer.add_scalar(f"{tag}/predicted_defect_pixels", scores["predicted_defect_pixels"], epoch)
        if scores["boxes_map50"] is not None:
            writer.add_scalar(f"{tag}/segmenter_boxes_map50", scores["boxes_map50"], epoch)
        writer.add_scalar("train/epoch_loss", history[-1]["loss"], epoch)
        writer.add_scalar("train/seconds_per_epoch", epoch_seconds[-1], epoch)
        # held-out validation: keep the best epoch on it; validation on the training images: keep the last
        try:  # each file replaced atomically: a failed write leaves the previous one
            if (mean_f > best_score) if held_out else epoch == config.epochs:
                state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
                atomic_save(out_dir / CHECKPOINT, lambda tmp, s=state: save_file(s, str(tmp)))
                best_score, record = mean_f, {"epoch": epoch, "val": scores}
            _save_resume_state(resume_dir, model, optimizer, scheduler, loader_generator,
                               {"epoch": epoch, "step": step, "best_score": best_score, "record": record,
                                "epoch_seconds": epoch_seconds, "history": history})
        except Exception as exc:  # OSError, SafetensorError: disk full, file-size limit
            raise ModelError(
                f"{out_dir}: writing the segmenter's weights after epoch {epoch} failed ({type(exc).__name__}: "
                f"{str(exc)[:200]}); nothing was replaced, {_kept(out_dir, record, resume_dir)}. Free disk space, "
                "then run again") from exc
    writer.close()
    kept_warnings = []
    if record["val"]["defect_pixels"] and not record["val"]["predicted_defect_pixels"]:
        kept_warnings.append(NO_DEFECT_WARNING.format(out=out_dir, epoch=record["epoch"], n=len(val_set),
                                                  present=record["val"]["defect_pixels"]))
        tqdm.write(f"\n{'!' * 100}\nWARNING: the KEPT model: {kept_warnings[-1]}\n{'!' * 100}\n")
    info = {
        "weights": str(out_dir / CHECKPOINT),
        "classes": list(classes),
        "config": asdict(config),
        "selection": "best epoch on held-out validation images" if held_out else
                     "last epoch (no held-out validation: val_fraction 0, the validation images are the training images)",
        "best_epoch": record["epoch"],
        "best_val": record["val"],
        "history": history,
        "warnings": kept_warnings,
        "seconds_per_epoch": epoch_seconds,
        "median_seconds_per_epoch": float(np.median(epoch_seconds)),
        "train_images": len(train_set),
        "val_images": len(val_set),
        "device": str(device),
        "seed": seed,
    }
    atomic_write_json(info_path, info)  # last: marks a finished training
    shutil.rmtree(resume_dir, ignore_errors=True)
    return info


def load_deeplab(out_dir: str | Path, device: str = "cpu") -> tuple[nn.Module, dict]:
    """The best checkpoint of a training folder and its info (classes, config)."""
    from safetensors.torch import load_file

    out_dir = Path(out_dir)
    info_path = out_dir / CHECKPOINT_INFO
    if not info_path.is_file() or not (out_dir / CHECKPOINT).is_file():
        raise ModelError(f"{out_dir}: no {CHECKPOINT} + {CHECKPOINT_INFO}; train first (defectfill finetune --model deeplab)")
    info = json.loads(info_path.read_text())
    config = from_dict(DeepLabConfig, {**info["config"], "backbone_weights": None, "init_weights": None}, where=str(info_path))
    model = build_deeplab(config, len(info["classes"]) + 1)
    model.load_state_dict(load_file(str(out_dir / CHECKPOINT)))
    return model.to(device).eval(), info


@torch.no_grad()
def deeplab_logits(model: nn.Module, images: Sequence[np.ndarray], image_size: int, batch_size: int = 8):
    """Yield (C, H, W) logits at each input's own size: the model runs at `image_size`, its logits
    are upsampled bilinearly back to the image (or tile) they came from."""
    model.eval()
    device = next(model.parameters()).device
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        logits = model(torch.stack([image_to_tensor(im, image_size) for im in chunk]).to(device))["out"]
        for image, logit in zip(chunk, logits):
            yield F.interpolate(logit[None], size=image.shape[:2], mode="bilinear", align_corners=False)[0]


def predict_probabilities(model: nn.Module, images: Sequence[np.ndarray], image_size: int,
                          batch_size: int = 8) -> list[np.ndarray]:
    """(C, H, W) float32 class probabilities at each input's own size (softmax of the upsampled logits)."""
    return [logit.softmax(0).cpu().numpy().astype(np.float32)
            for logit in deeplab_logits(model, images, image_size, batch_size)]


def predict_deeplab(model: nn.Module, images: Sequence[np.ndarray], image_size: int, batch_size: int = 8) -> list[np.ndarray]:
    """(H, W) int64 class maps at each input's own size (upsampled logits, then argmax)."""
    return [logit.argmax(0).cpu().numpy().astype(np.int64) for logit in deeplab_logits(model, images, image_size, batch_size)]
