"""What a latent of C numbers per f×f patch can hold, linearly: PCA reconstruction PSNR.

The offline base model's VAE codes every 4×4 RGB patch (48 values) in 4 latent numbers (the SD-2
layout: 4 channels, here at factor 4). How hard is the issue's goal of >= 28 dB on the simulator?
This fits PCA on non-overlapping f×f patches of training-seed simulator images and reconstructs
held-out seeds (from 1,000,000, as the base-model evaluation) keeping k components: a *linear*
baseline a trained convolutional VAE (overlapping receptive fields, non-linear) should beat.

Run: `.venv/bin/python benchmarks/vae_linear_bound.py [--train 6] [--eval 4]` (about 20 s).
"""

from __future__ import annotations

import argparse

import numpy as np

from defectfill.data.fabric import TEXTURES, render_fabric


def patches(images: list[np.ndarray], f: int) -> np.ndarray:
    out = []
    for im in images:
        h, w, _ = im.shape
        out.append(im.reshape(h // f, f, w // f, f, 3).transpose(0, 2, 1, 3, 4).reshape(-1, f * f * 3))
    return np.concatenate(out)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=6, help="training seeds per texture")
    parser.add_argument("--eval", type=int, default=4, help="held-out seeds per texture")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    train = [render_fabric(t, s, size=args.size) / 255.0 for t in TEXTURES for s in range(args.train)]
    held = [render_fabric(t, 1_000_000 + s, size=args.size) / 255.0 for t in TEXTURES for s in range(args.eval)]
    print(f"{len(train)} training / {len(held)} held-out simulator images of {args.size} px, all {len(TEXTURES)} textures")
    print("| factor | numbers per patch (k) | compression | PCA PSNR held-out |")
    print("| --- | --- | --- | --- |")
    for f, k in [(4, 4), (4, 8), (4, 12), (2, 4), (8, 4), (8, 16)]:
        x = patches(train, f)
        mean = x.mean(0)
        basis = np.linalg.svd(x - mean, full_matrices=False)[2][:k]
        y = patches(held, f)
        recon = (y - mean) @ basis.T @ basis + mean
        print(f"| {f} | {k} | {f * f * 3 / k:.0f}:1 | {psnr(np.clip(recon, 0, 1), y):.2f} dB |")


if __name__ == "__main__":
    main()
