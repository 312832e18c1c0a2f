"""How the base model's VAE reconstructs windows of different sizes (held-out simulator and real).

The VAE's GroupNorm(1) normalises over the whole image, so its output depends on the window size
it sees. A VAE trained on 32-px crops only (the v3 base) lost PSNR on every larger window, the 64-px
windows of the UNet and the 96-128 px windows DefectFill inpaints, and coded a 64-px window better
as four separately coded 32-px tiles (tile seams included). This prints, for a VAE folder:

- PSNR per window side (same held-out pools as `pretrain-base --evaluate`; n windows per side);
- on the n 64-px windows: whole vs reassembled 32-px tiles, and per simulator texture.

Run: `.venv/bin/python benchmarks/vae_window_size.py assets/base-fabric-inpaint/vae [--n 32]`
(about a minute on one thread).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from defectfill.config import load_config
from defectfill.pretrain import evaluate as ev
from defectfill.pretrain.config import PretrainConfig
from defectfill.pretrain.train import load_vae

ROOT = Path(__file__).resolve().parents[1]


def tiled(vae, images: np.ndarray, tile: int) -> np.ndarray:
    """Reconstruct each tile x tile block on its own and reassemble."""
    out = np.empty_like(images)
    side = images.shape[1]
    for y in range(0, side, tile):
        for x in range(0, side, tile):
            block = np.ascontiguousarray(images[:, y : y + tile, x : x + tile])
            out[:, y : y + tile, x : x + tile] = ev.reconstruct(vae, block)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vae", type=Path, help="a diffusers VAE folder (e.g. assets/base-fabric-inpaint/vae)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "base_tiny.yaml")
    parser.add_argument("--n", type=int, default=32, help="windows per size and set")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 96, 128])
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(PretrainConfig, args.config)
    vae = load_vae(args.vae)
    print(f"{args.vae}: PSNR (dB) of {args.n} held-out windows per side")
    print("side  simulator  real")
    for side in args.sizes:
        windows, _ = ev.eval_windows(cfg, args.n, side)
        real = float("nan") if windows["real"] is None else ev.vae_metrics(vae, windows["real"])["psnr_db"]
        print(f"{side:4d}  {ev.vae_metrics(vae, windows['simulator'])['psnr_db']:9.2f}  {real:5.2f}")
    windows, words = ev.eval_windows(cfg, args.n, 64)
    sim = windows["simulator"]
    whole = ev.psnr_np(ev.reconstruct(vae, sim), sim)
    tiles = ev.psnr_np(tiled(vae, sim, 32), sim)
    print(f"64-px simulator windows: whole {whole.mean():.2f} dB, as four 32-px tiles {tiles.mean():.2f} dB")
    by_texture = defaultdict(list)
    for word, value in zip(words, whole):
        by_texture[word].append(value)
    parts = [f"{word} {np.mean(values):.2f} ({len(values)})" for word, values in sorted(by_texture.items())]
    print("per texture (64 px): " + ", ".join(parts))


if __name__ == "__main__":
    main()
