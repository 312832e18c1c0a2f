"""The real-size path on one GPU, with random SD-2-inpainting-shaped weights (no download): peak
memory and seconds per step of DefectFill's LoRA training and of generation.

    training    512 px, batch 4, bf16 frozen weights (LoRA, text-encoder LoRA and token rows in fp32,
                as the trainer keeps them), gradient checkpointing, the three losses
                (`defectfill_step`, attention capture on), AdamW, the row restore: the trainer's step
    generation  `DefectFill.generate` on a 512-px window, k = 8 candidates, 50 DDIM steps,
                guidance 7.5, bf16 (plain LFS; with --early_selection f also the early path)

Models come from `build_sd2_shaped_components` (SD-2-inpainting's UNet / OpenCLIP ViT-H text tower /
SD VAE configs) and the LoRA set-up from configs/defectfill_sd2.yaml (`make_trainable`).
Figures: median seconds per step after --warmup steps (CUDA synchronised), peak
`torch.cuda.max_memory_allocated` per phase (reset between phases).

    # on a machine with CUDA (about 5 minutes on one recent GPU)
    PYTHONPATH=. python benchmarks/gpu_real_size.py --out runs/gpu_real_size.json
    # anywhere: the same code at a tiny size on the CPU (what tests/test_gpu_real_size.py runs)
    PYTHONPATH=. python benchmarks/gpu_real_size.py --tiny
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
CONCEPTS = {"stain": "<stain>"}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def synthetic_defects(count: int, size: int, seed: int = 0) -> list:
    """Stain-like dark blobs on a woven-looking texture, `size` px."""
    from defectfill.data.sample import DefectSample

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(count):
        grey = 128 + 30 * np.sin(xx * np.pi / 3) * np.sin(yy * np.pi / 3) + rng.normal(0, 4, (size, size))
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 8) ** 2
        grey[mask] -= 50
        out.append(DefectSample(np.repeat(grey.clip(0, 255).astype(np.uint8)[..., None], 3, 2), mask, "stain"))
    return out


def timed_steps(step, steps: int, warmup: int, device: torch.device) -> list[float]:
    times = []
    for i in range(warmup + steps):
        synchronize(device)
        started = time.perf_counter()
        step(i)
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - started)
    return times


def measure_training(*, tiny: bool, device: torch.device, dtype: torch.dtype, resolution: int, batch_size: int,
                     gradient_checkpointing: bool, steps: int, warmup: int) -> dict:
    from diffusers import DDPMScheduler
    from diffusers.training_utils import cast_training_params

    from defectfill.losses import LossWeights
    from defectfill.models.components import build_sd2_shaped_components
    from defectfill.training import load_train_config
    from defectfill.training.data import DefectFillDataset
    from defectfill.training.model import DefectFillModels, make_trainable, trainable_parameters
    from defectfill.training.step import defectfill_step

    cfg = load_train_config(REPO / "configs" / "defectfill_sd2.yaml")
    with torch.device(device):
        c = build_sd2_shaped_components(tiny=tiny)
    models = DefectFillModels(c["unet"], c["vae"], c["text_encoder"], c["tokenizer"],
                              DDPMScheduler.from_config(c["scheduler"].config))
    tokens, guard = make_trainable(models, CONCEPTS, {"stain": "stain"}, rank=cfg.rank, lora_alpha=cfg.lora_alpha,
                                   lora_dropout=cfg.lora_dropout, unet_targets=cfg.unet_lora_targets,
                                   train_text_encoder=cfg.train_text_encoder,
                                   text_encoder_targets=cfg.text_encoder_lora_targets)
    for module in (models.unet, models.vae, models.text_encoder):
        module.to(device=device, dtype=dtype)
    cast_training_params([models.unet, models.text_encoder], dtype=torch.float32)  # trainable weights stay fp32
    guard.to(device)
    if gradient_checkpointing:
        models.unet.enable_gradient_checkpointing()
        models.text_encoder.gradient_checkpointing_enable()
    models.unet.train()
    models.text_encoder.train()
    params = trainable_parameters(models.unet) + trainable_parameters(models.text_encoder)
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate)
    dataset = DefectFillDataset({"stain": synthetic_defects(batch_size, resolution)}, models.tokenizer, CONCEPTS,
                                resolution=resolution, seed=0)
    batch = torch.utils.data.default_collate([dataset[(i, i)] for i in range(batch_size)])
    batch = {k: v.to(device) for k, v in batch.items()}
    weights = LossWeights(cfg.lambda_defect, cfg.lambda_object, cfg.lambda_attention)
    losses = []

    def step(i: int) -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = defectfill_step(models.unet, models.vae, models.text_encoder, models.noise_scheduler, batch,
                                  tokens.ids, weights=weights, object_alpha=cfg.object_alpha,
                                  generator=torch.Generator().manual_seed(i), weight_dtype=dtype,
                                  backward=lambda loss: loss.backward())
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        guard.restore()
        losses.append(float(out.total.detach()))

    reset_peak(device)
    times = timed_steps(step, steps, warmup, device)
    result = {"resolution": resolution, "batch_size": batch_size, "dtype": str(dtype).replace("torch.", ""),
              "gradient_checkpointing": gradient_checkpointing, "attention_loss": cfg.lambda_attention > 0,
              "trainable_parameters": sum(p.numel() for p in params), "steps_timed": len(times),
              "seconds_per_step_median": statistics.median(times), "peak_memory_gib": peak_gib(device),
              "losses_finite": bool(np.all(np.isfinite(losses)))}
    return result


def measure_generation(*, tiny: bool, device: torch.device, dtype: torch.dtype, resolution: int, num_candidates: int,
                       steps: int, repeats: int, warmup: int, early_selection: float = 0.0) -> dict:
    from defectfill.models.components import build_inpaint_pipeline, build_sd2_shaped_components
    from defectfill.models.defectfill import DefectFill

    with torch.device(device):
        pipe = build_inpaint_pipeline(build_sd2_shaped_components(tiny=tiny))
    pipe.tokenizer.add_tokens(list(CONCEPTS.values()))
    pipe.text_encoder.resize_token_embeddings(len(pipe.tokenizer), mean_resizing=False)
    pipe.to(device=device, dtype=dtype)
    model = DefectFill(pipe, CONCEPTS, selection_metric="ms-ssim-distance", info={"resolution": resolution})
    sample = synthetic_defects(1, resolution, seed=1)[0]
    result = {"resolution": resolution, "num_candidates": num_candidates, "num_inference_steps": steps,
              "dtype": str(dtype).replace("torch.", ""), "guidance_scale": 7.5}
    arms = {"lfs": 0.0, **({"early_selection": early_selection} if early_selection else {})}
    for name, fraction in arms.items():
        def call(i: int, fraction: float = fraction) -> None:
            model.generate(sample.image, sample.mask, defect_type="stain", num_candidates=num_candidates,
                           num_inference_steps=steps, seed=i, early_selection=fraction)

        reset_peak(device)
        times = timed_steps(call, repeats, warmup, device)
        result[name] = {"early_selection": fraction, "seconds_per_call_median": statistics.median(times),
                        "seconds_per_step_median": statistics.median(times) / steps, "calls_timed": len(times),
                        "peak_memory_gib": peak_gib(device)}
    return result


def run(*, tiny: bool, device: str | None = None, early_selection: float = 0.4, warmup: int = 2, steps: int = 5,
        repeats: int = 3) -> dict:
    """Both measurements; `tiny`: CPU-sized (64 px, batch 2, k 2, 3 steps, float32)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    size = ({"resolution": 64, "batch_size": 2, "num_candidates": 2, "inference_steps": 3} if tiny else
            {"resolution": 512, "batch_size": 4, "num_candidates": 8, "inference_steps": 50})
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "tiny": tiny,
              "torch": torch.__version__, "weights": "random, SD-2-inpainting shapes" + (" (tiny widths)" if tiny else "")}
    result["training"] = measure_training(tiny=tiny, device=device, dtype=dtype, resolution=size["resolution"],
                                          batch_size=size["batch_size"], gradient_checkpointing=True, steps=steps,
                                          warmup=warmup)
    result["generation"] = measure_generation(tiny=tiny, device=device, dtype=dtype, resolution=size["resolution"],
                                              num_candidates=size["num_candidates"], steps=size["inference_steps"],
                                              repeats=repeats, warmup=min(warmup, 1), early_selection=early_selection)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the same code at a tiny size (CPU test)")
    parser.add_argument("--device", default=None, help="default: cuda when present, else cpu")
    parser.add_argument("--early_selection", type=float, default=0.4, help="also time early selection (0: no)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="training steps timed")
    parser.add_argument("--repeats", type=int, default=3, help="generation calls timed")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not args.tiny and not torch.cuda.is_available():
        parser.error("no CUDA device here: the real size needs a GPU; --tiny runs the same code on the CPU")
    result = run(tiny=args.tiny, device=args.device, early_selection=args.early_selection, warmup=args.warmup,
                 steps=args.steps, repeats=args.repeats)
    text = json.dumps(result, indent=1)
    if args.out is not None:
        from defectfill.io_utils import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
