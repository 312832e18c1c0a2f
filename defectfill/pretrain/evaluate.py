"""Evaluation of the offline base model: VAE reconstruction and inpainting texture statistics.

- VAE: PSNR of reconstructions of held-out simulator windows (seeds >= eval_seed_start) and of
  held-out real photographs, beside the *mean-colour floor* (each window painted its own mean
  colour), and the chroma spread (does colour survive?).
- Inpainting: on held-out good windows, a random box is inpainted by the pipeline and, for
  reference, by a *blur fill* (normalised Gaussian convolution of the surround) and a *mean fill*
  (the surround's mean colour). Inside the box each fill f is compared with the ground truth g by
  two texture statistics that ignore the weave's phase (a pixel-exact fill is impossible):
    texture distance   D = ‖C(f) − C(g)‖_F / ‖C(g)‖_F,   C(·) = covariance (C×C) over the box's
                       pixels of the features of a fixed, seeded random conv net (3 layers of 3×3
                       conv + ReLU, 32 channels, on [-1,1] input): a Gram matrix of *centred*
                       features, as texture synthesis uses;
    spectrum distance  S = ‖P(f) − P(g)‖₂ / ‖P(g)‖₂,   P(·) = power spectrum |FFT(hann·(x − x̄))|²
                       per channel (period and orientation of the weave, not its phase).
  Both are 0 for identical statistics and exactly 1 for any flat fill (no texture at all), so a
  fill scores below 1 only by carrying the fabric's texture. SSIM and PSNR in the box are printed
  too (structure / brightness agreement). The uncentred Gram distance of the first evaluations is
  kept as `gram_distance_uncentred`: on ReLU features of [-1,1] input it is dominated by mean
  brightness, so a flat mean fill scored best on it (it measured colour, not texture).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from defectfill.pretrain import data as pdata
from defectfill.pretrain.config import PretrainConfig


def eval_windows(cfg: PretrainConfig, n: int, size: int, render=None, images_per_texture: int = 4):
    """Held-out windows: {'simulator': (n,size,size,3) uint8, 'real': ... or None} and texture words."""
    from defectfill.pretrain.train import build_pools

    pools = build_pools(cfg, "eval", render=render, images_per_texture=images_per_texture)
    rng = np.random.default_rng([cfg.seed, 1234])
    sim, sim_words = pdata.sample_crops(pools.simulator, rng, n, size, flip=False)
    real = pdata.sample_crops(pools.real, rng, n, size, flip=False)[0] if pools.real else None
    return {"simulator": sim, "real": real}, sim_words


def psnr_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR (dB) of uint8 batches (N, H, W, 3), over the whole image or broadcast mask."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


def mean_colour_floor(images: np.ndarray) -> np.ndarray:
    return np.broadcast_to(images.reshape(len(images), -1, 3).mean(1)[:, None, None, :], images.shape).round()


def chroma_std(images: np.ndarray) -> float:
    x = images.astype(np.float64) / 255.0
    return float((x - x.mean(-1, keepdims=True)).std())


@torch.no_grad()
def reconstruct(vae, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    out = []
    for i in range(0, len(images), batch_size):
        x = pdata.to_model_tensor(images[i : i + batch_size]).to(vae.device)
        z = vae.encode(x).latent_dist.mode()
        out.append(pdata.to_uint8_images(vae.decode(z).sample))
    return np.concatenate(out)


def vae_metrics(vae, images: np.ndarray) -> dict[str, float]:
    recon = reconstruct(vae, images)
    floor = mean_colour_floor(images)
    return {
        "psnr_db": float(psnr_np(recon, images).mean()),
        "mean_colour_floor_psnr_db": float(psnr_np(floor, images).mean()),
        "chroma_std_true": chroma_std(images),
        "chroma_std_recon": chroma_std(recon),
        "n": len(images),
    }


# ---------------------------------------------------------------------------------- inpainting
def eval_box(rng: np.random.Generator, size: int, min_frac: float = 0.25, max_frac: float = 0.45) -> tuple[int, ...]:
    """A box with sides in [min_frac, max_frac] of the window, at least size/8 px from the border."""
    margin = size // 8
    bw, bh = (int(rng.integers(int(min_frac * size), int(max_frac * size) + 1)) for _ in range(2))
    x0 = int(rng.integers(margin, size - margin - bw + 1))
    y0 = int(rng.integers(margin, size - margin - bh + 1))
    return x0, y0, x0 + bw, y0 + bh


def _ring(box: tuple[int, ...], size: int, width: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    ring = np.zeros((size, size), bool)
    ring[max(0, y0 - width) : y1 + width, max(0, x0 - width) : x1 + width] = True
    ring[y0:y1, x0:x1] = False
    return ring


def mean_fill(image: np.ndarray, box: tuple[int, ...]) -> np.ndarray:
    """The box painted the mean colour of an 8-px ring around it."""
    out = image.copy()
    x0, y0, x1, y1 = box
    out[y0:y1, x0:x1] = image[_ring(box, image.shape[0], 8)].mean(0).round().astype(np.uint8)
    return out


def blur_fill(image: np.ndarray, box: tuple[int, ...]) -> np.ndarray:
    """The box filled by normalised Gaussian convolution of the known pixels (sigma = box side / 2)."""
    from scipy.ndimage import gaussian_filter

    x0, y0, x1, y1 = box
    known = np.ones(image.shape[:2], np.float64)
    known[y0:y1, x0:x1] = 0
    sigma = max(x1 - x0, y1 - y0) / 2
    weight = gaussian_filter(known, sigma)
    out = image.copy()
    for c in range(3):
        num = gaussian_filter(image[..., c] * known, sigma)
        out[..., c][known == 0] = np.clip(num / np.maximum(weight, 1e-6), 0, 255)[known == 0].round()
    return out


class RandomFeatures(torch.nn.Module):
    """A fixed, seeded random conv net (3 × [3×3 conv, ReLU], 32 channels): a texture probe."""

    def __init__(self, seed: int = 0, channels: int = 32):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        layers, c_in = [], 3
        for _ in range(3):
            conv = torch.nn.Conv2d(c_in, channels, 3, padding=1, padding_mode="replicate")
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / (9 * c_in)) ** 0.5)
                conv.bias.zero_()
            layers += [conv, torch.nn.ReLU()]
            c_in = channels
        self.net = torch.nn.Sequential(*layers).requires_grad_(False)

    @torch.no_grad()
    def features(self, patch: np.ndarray) -> torch.Tensor:
        """(h, w, 3) uint8 -> (C, h·w) features."""
        return self.net(pdata.to_model_tensor(patch[None]))[0].flatten(1)

    def gram(self, patch: np.ndarray) -> torch.Tensor:
        """Uncentred Gram matrix (C, C) of the features, divided by the number of positions."""
        f = self.features(patch)
        return f @ f.T / f.shape[1]

    def covariance(self, patch: np.ndarray) -> torch.Tensor:
        """Gram matrix (C, C) of the features centred over the positions: their covariance."""
        f = self.features(patch)
        f = f - f.mean(dim=1, keepdim=True)
        return f @ f.T / f.shape[1]


def _relative(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """‖a − b‖ / ‖b‖; 0 when both vanish, 1 when only a does."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    norm = float(b.norm())
    if norm < 1e-12:
        return 0.0 if float(a.norm()) < 1e-12 else 1.0
    return float((a - b).norm()) / norm


def texture_distance(features: RandomFeatures, fill: np.ndarray, truth: np.ndarray) -> float:
    """‖C(fill) − C(truth)‖_F / ‖C(truth)‖_F, C = covariance of random conv features over the crops."""
    return _relative(features.covariance(fill), features.covariance(truth))


def gram_distance_uncentred(features: RandomFeatures, fill: np.ndarray, truth: np.ndarray) -> float:
    """The first evaluations' statistic (uncentred Gram); measures brightness more than texture."""
    return _relative(features.gram(fill), features.gram(truth))


def power_spectrum(patch: np.ndarray) -> np.ndarray:
    """|FFT(hann · (x − mean))|² per channel of an (h, w, 3) uint8 crop, values in [0, 1]."""
    x = patch.astype(np.float64) / 255.0
    x = x - x.mean(axis=(0, 1), keepdims=True)
    window = np.outer(np.hanning(x.shape[0]), np.hanning(x.shape[1]))[..., None]
    return np.abs(np.fft.fft2(x * window, axes=(0, 1))) ** 2


def spectrum_distance(fill: np.ndarray, truth: np.ndarray) -> float:
    """‖P(fill) − P(truth)‖₂ / ‖P(truth)‖₂ over the crops' power spectra (phase-free texture)."""
    return _relative(power_spectrum(fill), power_spectrum(truth))


def colour_error(fill: np.ndarray, truth: np.ndarray) -> float:
    """Euclidean distance (0-255 units) between the mean RGB colours of two crops."""
    diff = fill.reshape(-1, 3).astype(np.float64).mean(0) - truth.reshape(-1, 3).astype(np.float64).mean(0)
    return float(np.linalg.norm(diff))


def box_scores(features: RandomFeatures, filled: np.ndarray, truth: np.ndarray, box: tuple[int, ...]) -> dict:
    from skimage.metrics import structural_similarity

    x0, y0, x1, y1 = box
    a, b = filled[y0:y1, x0:x1], truth[y0:y1, x0:x1]
    win = min(7, (min(a.shape[:2]) - 1) // 2 * 2 + 1)  # SSIM's odd window, shrunk for tiny boxes
    return {
        "texture_distance": texture_distance(features, a, b),
        "spectrum_distance": spectrum_distance(a, b),
        "gram_distance_uncentred": gram_distance_uncentred(features, a, b),
        "ssim": float(structural_similarity(a, b, channel_axis=2, data_range=255, win_size=win)),
        "psnr_db": float(psnr_np(a[None], b[None])[0]),
        "colour_error": colour_error(a, b),
    }


def load_pipeline(folder: str | Path):
    from diffusers import StableDiffusionInpaintPipeline

    from defectfill.errors import ModelError

    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise ModelError(f"{folder}: not a diffusers pipeline folder (no model_index.json); pass the exported folder")
    pipe = StableDiffusionInpaintPipeline.from_pretrained(str(folder), safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def inpaint_windows(pipe, windows: np.ndarray, boxes: list[tuple[int, ...]], prompts: list[str], seed: int,
                    steps: int = 25, guidance_scale: float = 4.0, batch_size: int = 16) -> np.ndarray:
    """Inpaint each box with the pipeline; the known pixels are pasted back (as DefectFill does)."""
    from PIL import Image

    size = windows.shape[1]
    out = windows.copy()
    for i in range(0, len(windows), batch_size):
        idx = range(i, min(i + batch_size, len(windows)))
        masks = []
        for k in idx:
            m = np.zeros((size, size), np.uint8)
            x0, y0, x1, y1 = boxes[k]
            m[y0:y1, x0:x1] = 255
            masks.append(Image.fromarray(m))
        result = pipe(
            prompt=[prompts[k] for k in idx], image=[Image.fromarray(windows[k]) for k in idx], mask_image=masks,
            height=size, width=size, num_inference_steps=steps, guidance_scale=guidance_scale,
            generator=torch.Generator().manual_seed(seed + i), output_type="np",
        ).images
        for j, k in enumerate(idx):
            x0, y0, x1, y1 = boxes[k]
            out[k, y0:y1, x0:x1] = (result[j] * 255).round().clip(0, 255).astype(np.uint8)[y0:y1, x0:x1]
    return out


def evaluate_pipeline(cfg: PretrainConfig, pipeline_dir: str | Path, output_dir: str | Path, n: int = 64,
                      steps: int = 25, guidance_scale: float = 4.0, render=None, sheet_rows: int = 12) -> dict:
    """VAE PSNR (simulator / real, with floors) and box-inpainting texture statistics -> results.json + sheet."""
    import time

    from defectfill.io_utils import atomic_write_json
    from defectfill.viz import save_contact_sheet

    output_dir = Path(output_dir)
    pipe = load_pipeline(pipeline_dir)
    size = int(pipe.unet.config.sample_size) * pipe.vae_scale_factor
    windows, words = eval_windows(cfg, n, size, render=render)
    results: dict = {"pipeline": str(pipeline_dir), "window": size, "n": n, "steps": steps,
                     "guidance_scale": guidance_scale, "vae": {}}
    for name, images in windows.items():
        if images is not None:
            results["vae"][name] = vae_metrics(pipe.vae, images)
    rng = np.random.default_rng([cfg.seed, 4321])
    sim = windows["simulator"]
    boxes = [eval_box(rng, size) for _ in range(len(sim))]
    prompts = [pdata.prompt_for(w) for w in words]
    t0 = time.perf_counter()
    inpainted = inpaint_windows(pipe, sim, boxes, prompts, cfg.seed, steps, guidance_scale)
    results["inpaint_seconds_per_window"] = (time.perf_counter() - t0) / len(sim)
    fills = {"model": inpainted, "blur_fill": np.stack([blur_fill(w, b) for w, b in zip(sim, boxes)]),
             "mean_fill": np.stack([mean_fill(w, b) for w, b in zip(sim, boxes)])}
    features = RandomFeatures(seed=0)
    results["inpaint"] = {}
    scores = {name: [box_scores(features, f, t, b) for f, t, b in zip(filled, sim, boxes)] for name, filled in fills.items()}
    for name, rows in scores.items():
        results["inpaint"][name] = {k: float(np.mean([s[k] for s in rows])) for k in rows[0]}
        for k in ("texture_distance", "spectrum_distance", "colour_error"):
            results["inpaint"][name][f"{k}_median"] = float(np.median([s[k] for s in rows]))
    for k in ("texture_distance", "spectrum_distance"):
        for ref in ("blur_fill", "mean_fill"):
            wins = [m[k] < r[k] for m, r in zip(scores["model"], scores[ref])]
            results["inpaint"][f"model_beats_{ref}_{k}_fraction"] = float(np.mean(wins))
    images, masks, captions = [], [], []
    for k in range(min(sheet_rows, len(sim))):
        x0, y0, x1, y1 = boxes[k]
        box_mask = np.zeros((size, size), bool)
        box_mask[y0:y1, x0:x1] = True
        grey = sim[k].copy()
        grey[box_mask] = 127
        images += [sim[k], grey, fills["model"][k], fills["mean_fill"][k]]
        masks += [None, box_mask, box_mask, box_mask]
        captions += [words[k], "mask", "inpainted", "mean fill"]
    save_contact_sheet(output_dir / "inpaint_sheet.png", images, masks, captions, ncols=8, tile=3 * size // 2)
    recon = reconstruct(pipe.vae, sim[:8])
    rimages = [im for pair in zip(sim[:8], recon) for im in pair]
    real = windows.get("real")
    if real is not None:
        rrec = reconstruct(pipe.vae, real[:8])
        rimages += [im for pair in zip(real[:8], rrec) for im in pair]
    save_contact_sheet(output_dir / "vae_sheet.png", rimages, captions=["original", "VAE"] * (len(rimages) // 2),
                       ncols=8, tile=3 * size // 2)
    atomic_write_json(output_dir / "results.json", results)
    return results
