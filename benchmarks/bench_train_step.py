"""ms per DefectFill training step, tiny config on the CPU, with and without the attention loss.

The attention loss needs the [V*] cross-attention probabilities of the decoder, so the capturing
processor replaces fused SDPA on the up_blocks.*attn2 layers. This measures what that costs:
one full step (VAE encode, text encoder, UNet forward of both passes, backward, AdamW, row
restore) with lambda_attention = 0.05 (capture) and 0 (plain masked losses), interleaved in one
process so that both see the same machine load; warm-up first, then the median.

    .venv/bin/python benchmarks/bench_train_step.py --steps 30 --warmup 5
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


def synthetic_samples(n: int, size: int, seed: int = 0):
    from defectfill.data.sample import DefectSample

    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        image = rng.integers(60, 200, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), bool)
        y, x = rng.integers(8, size - 16, 2)
        mask[y : y + 10, x : x + 6] = True
        image[mask] //= 3
        samples.append(DefectSample(image, mask, "stain"))
    return {"stain": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="measured steps per variant")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured steps per variant first")
    parser.add_argument("--config", default=str(REPO / "configs" / "defectfill_tiny.yaml"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from diffusers import DDPMScheduler

    from defectfill.losses import LossWeights
    from defectfill.models.components import get_dummy_components
    from defectfill.training import load_train_config
    from defectfill.training.data import DefectFillDataset, StepBatchSampler
    from defectfill.training.model import DefectFillModels, make_trainable
    from defectfill.training.step import defectfill_step

    cfg = load_train_config(args.config)
    c = get_dummy_components(seed=0, sample_size=cfg.resolution // 8)
    models = DefectFillModels(c["unet"], c["vae"], c["text_encoder"], c["tokenizer"],
                              DDPMScheduler.from_config(c["scheduler"].config))
    tokens, guard = make_trainable(models, {"stain": "<stain>"}, {}, rank=cfg.rank, lora_alpha=cfg.lora_alpha,
                                   lora_dropout=0.0, unet_targets=cfg.unet_lora_targets,
                                   train_text_encoder=cfg.train_text_encoder,
                                   text_encoder_targets=cfg.text_encoder_lora_targets)
    models.unet.train()
    models.text_encoder.train()
    dataset = DefectFillDataset(synthetic_samples(8, cfg.resolution), models.tokenizer, {"stain": "<stain>"},
                                resolution=cfg.resolution, seed=0)
    params = [p for m in (models.unet, models.text_encoder) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    total = 2 * (args.warmup + args.steps)
    batches = [torch.utils.data.default_collate([dataset[k] for k in idx])
               for idx in StepBatchSampler(len(dataset), cfg.train_batch_size, 0, stop=total)]
    variants = {"with_attention_loss": LossWeights(cfg.lambda_defect, cfg.lambda_object, cfg.lambda_attention),
                "without_attention_loss": LossWeights(cfg.lambda_defect, cfg.lambda_object, 0.0)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    cpu_times: dict[str, list[float]] = {k: [] for k in variants}
    for i in range(args.warmup + args.steps):
        order = list(variants) if i % 2 == 0 else list(reversed(variants))  # alternate who goes first
        for name in order:
            batch = batches[2 * i + (order.index(name))]
            start, start_cpu = time.perf_counter(), time.process_time()
            optimizer.zero_grad(set_to_none=True)
            defectfill_step(models.unet, models.vae, models.text_encoder, models.noise_scheduler, batch, tokens.ids,
                            weights=variants[name], object_alpha=cfg.object_alpha,
                            generator=torch.Generator().manual_seed(i), backward=lambda loss: loss.backward())
            optimizer.step()
            guard.restore()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
                cpu_times[name].append(time.process_time() - start_cpu)
    median = {k: statistics.median(v) * 1000 for k, v in times.items()}
    median_cpu = {k: statistics.median(v) * 1000 for k, v in cpu_times.items()}
    result = {
        "config": args.config, "resolution": cfg.resolution, "batch": cfg.train_batch_size,
        "steps_measured": args.steps, "warmup": args.warmup, "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "median_ms": {k: round(v, 1) for k, v in median.items()},
        "min_ms": {k: round(min(v) * 1000, 1) for k, v in times.items()},
        "capture_overhead_percent": round(100 * (median["with_attention_loss"] / median["without_attention_loss"] - 1), 1),
        # CPU time of this process: far less sensitive to other processes sharing the cores
        "median_cpu_ms": {k: round(v, 1) for k, v in median_cpu.items()},
        "capture_overhead_percent_cpu_time": round(
            100 * (median_cpu["with_attention_loss"] / median_cpu["without_attention_loss"] - 1), 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
