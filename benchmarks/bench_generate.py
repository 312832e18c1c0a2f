"""Benchmark: `DefectFill.generate` (k candidates + LFS) vs stock diffusers inpainting.

Same random-weight model for both (the offline base-model sizes of notes/feasibility.md §9-§10:
UNet ~6.7 M params over an F4 VAE, 2-layer CLIP text encoder; resolution 64 px), same DDIM
steps, guidance, dtype and device. Two jobs:

1. "window": a 64x64 good image with a 20x20 mask, k = 4 candidates:
   generate (one batched call, cached text, LFS + labels) vs the stock pipeline called 4 times
   (what a user writes: a loop over seeds) and vs one stock call with num_images_per_prompt=4.
2. "strip": a 50-px mask on a long fabric strip (default 256 x 4096): generate works on a window
   around the mask; the stock pipeline must denoise the whole strip (4 calls).

Warm-up once, median of `--repeats` timed runs, images/s = candidates per second. Not a test.

    .venv/bin/python benchmarks/bench_generate.py [--steps 25] [--repeats 3] [--strip-width 4096] [--strip-steps 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from PIL import Image


def build_model(text_hidden: int = 128):
    from defectfill.models.base_model import (
        TextEncoderArch,
        UNetArch,
        VAEArch,
        build_text_encoder,
        build_unet,
        build_vae,
        count_parameters,
        fix_posterior_variance,
    )
    from defectfill.models.components import build_clip_tokenizer, build_inpaint_pipeline, sd_ddim_scheduler
    from defectfill.models.defectfill import DefectFill

    vae_arch, unet_arch = VAEArch(), UNetArch()
    vae = build_vae(vae_arch).eval()
    fix_posterior_variance(vae)
    text_encoder = build_text_encoder(TextEncoderArch(hidden_size=text_hidden, intermediate_size=2 * text_hidden)).eval()
    unet = build_unet(unet_arch, vae_arch.latent_channels, text_hidden).eval()
    pipe = build_inpaint_pipeline({"unet": unet, "vae": vae, "text_encoder": text_encoder,
                                   "tokenizer": build_clip_tokenizer(), "scheduler": sd_ddim_scheduler()})
    pipe.tokenizer.add_tokens(["<stain>"])
    pipe.text_encoder.resize_token_embeddings(len(pipe.tokenizer), mean_resizing=False)
    pipe.set_progress_bar_config(disable=True)
    sizes = {name: count_parameters(m) / 1e6 for name, m in (("unet", unet), ("vae", vae), ("text", text_encoder))}
    model = DefectFill(pipe, {"stain": "<stain>"}, selection_metric="ms-ssim-distance")
    return model, sizes


def fabric(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    weave = 120 + 40 * np.sin(xx * 2 * np.pi / 4) * np.sin(yy * 2 * np.pi / 6)
    return np.stack([weave + rng.normal(0, 6, (height, width)) + 15 * c for c in range(3)], 2).clip(0, 255).astype(np.uint8)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (first touch of memory, lazy inits)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--strip-height", type=int, default=256)
    parser.add_argument("--strip-width", type=int, default=4096)
    parser.add_argument("--strip-steps", type=int, default=10, help="DDIM steps of the strip job (both sides)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared 2-core machine 2 threads oversubscribe and run 5x slower)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=["window", "strip"], default=None, help="run one job only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, sizes = build_model()
    model.pipeline.to(args.device)
    pipe, k, steps = model.pipeline, args.k, args.steps
    prompt = model.prompt("stain")
    res = model.resolution
    print(f"device {args.device}, threads {torch.get_num_threads()}, params (M) "
          + ", ".join(f"{n} {v:.2f}" for n, v in sizes.items()) + f", resolution {res}, DDIM {steps} steps, "
          f"guidance {args.guidance}, k {k}, fp32", flush=True)

    def ours(image, mask, steps=steps):
        return lambda: model.generate(image, mask, defect_type="stain", num_candidates=k, num_inference_steps=steps,
                                      guidance_scale=args.guidance, seed=0)

    def stock_loop(image, mask, calls=k, steps=steps):
        pil, pil_mask = Image.fromarray(image), Image.fromarray(mask.astype(np.uint8) * 255)
        h, w = mask.shape

        def run():
            for i in range(calls):
                pipe(prompt=prompt, image=pil, mask_image=pil_mask, height=h, width=w, num_inference_steps=steps,
                     guidance_scale=args.guidance, generator=torch.Generator().manual_seed(i), output_type="np")
        return run

    def stock_batched(image, mask):
        pil, pil_mask = Image.fromarray(image), Image.fromarray(mask.astype(np.uint8) * 255)
        h, w = mask.shape
        return lambda: pipe(prompt=prompt, image=pil, mask_image=pil_mask, height=h, width=w,
                            num_inference_steps=steps, guidance_scale=args.guidance, num_images_per_prompt=k,
                            generator=torch.Generator().manual_seed(0), output_type="np")

    t_ours = t_loop = t_batch = s_ours = s_loop = float("nan")
    if args.only in (None, "window"):
        t_ours, t_loop, t_batch = window_job(args, res, k, ours, stock_loop, stock_batched)
    if args.only in (None, "strip"):
        s_ours, s_loop = strip_job(args, k, ours, stock_loop)
    print(f"RATIO window: generate vs stock x{k} calls {t_loop / t_ours:.2f}x, vs stock batched "
          f"{t_batch / t_ours:.2f}x; strip: generate vs stock x{k} calls {s_loop / s_ours:.1f}x")


def window_job(args, res, k, ours, stock_loop, stock_batched):
    """A window-sized good image: the model works at the image's own size."""
    image = fabric(res, res)
    mask = np.zeros((res, res), bool)
    mask[res // 2 - 10 : res // 2 + 10, res // 2 - 10 : res // 2 + 10] = True
    t_ours = timed(ours(image, mask), args.repeats)
    t_loop = timed(stock_loop(image, mask), args.repeats)
    t_batch = timed(stock_batched(image, mask), args.repeats)
    print(f"[window {res}x{res}, 20-px mask] generate k={k} + LFS: {t_ours:.3f} s ({k / t_ours:.2f} img/s) | "
          f"stock x{k} calls: {t_loop:.3f} s ({k / t_loop:.2f} img/s) | stock 1 call x{k}: {t_batch:.3f} s "
          f"({k / t_batch:.2f} img/s)", flush=True)
    return t_ours, t_loop, t_batch


def strip_job(args, k, ours, stock_loop):
    """A small mask on a long strip: generate works on a window, the stock pipeline on the whole strip."""
    strip = fabric(args.strip_height, args.strip_width, seed=1)
    strip_mask = np.zeros(strip.shape[:2], bool)
    cy, cx = args.strip_height // 2, args.strip_width * 3 // 4
    strip_mask[cy - 25 : cy + 25, cx - 25 : cx + 25] = True
    s_ours = timed(ours(strip, strip_mask, steps=args.strip_steps), args.repeats)
    print(f"generate on the strip: {s_ours:.3f} s; now the stock pipeline on the whole strip (slow) ...", flush=True)
    # the stock calls on the whole strip are slow: warm up with a 1-step call, time one call, x k
    stock_loop(strip, strip_mask, calls=1, steps=1)()
    start = time.perf_counter()
    stock_loop(strip, strip_mask, calls=1, steps=args.strip_steps)()
    s_loop = k * (time.perf_counter() - start)
    print(f"[strip {args.strip_height}x{args.strip_width}, 50-px mask, {args.strip_steps} steps] generate k={k} + LFS: "
          f"{s_ours:.3f} s ({k / s_ours:.2f} img/s) | stock on the whole strip, 1 call timed x{k}: {s_loop:.1f} s "
          f"({k / s_loop:.3f} img/s)", flush=True)
    return s_ours, s_loop


if __name__ == "__main__":
    main()
