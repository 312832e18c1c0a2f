"""Study 3 (DESIGN §8): can one generator (R3GAN, DefectFill) match a dedicated fusion network at the
defect/background seam? Measured on a finished bench run, per seed and arm, beside its downstream F.

Seam quality, on the band B = dilate(M, w) \\ erode(M, w) around the pasted region M (the request
mask of a generated item: outside it the image is the original cloth; the defect mask of a real one),
against the ring R = dilate(M, 4w) \\ dilate(M, 2w) of plain cloth further out:

    seam ratio   s = E_B / E_R,   E_X = mean over X of |∇g|²  (g: grey level, Sobel gradients)
    seam gap       = |median log s (arm) − median log s (real defects)|
    band distance  = ‖mean z(d_arm) − mean z(d_real)‖ / √dim,  d = band descriptor (below), z = standardised
                     with the real defects' mean and std

d = (mean g on B − mean g on R, std g on B / std g on R, histogram of |∇g| on B in 8 bins relative to R's
median |∇g|). A hard seam raises s and the histogram's top bins; a real defect's own edge sets the
reference, so the gap, not s itself, is the score (0 = seams like real defect boundaries).

Realism, a classifier two-sample test (C2ST, Lopez-Paz & Oquab 2017): crops around real defects vs the
arm's crops (32×32, equal counts), a small CNN trained on one balanced half and scored on the other,
both ways, over several random halvings; the mean AUC (0.5: indistinguishable; 1: every crop told
apart). The real crops are the bench's real *test* defects,
on the target fabric the generators painted into, never seen by any generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defectfill.studies.outputs import mean_std

BINS = 8


@dataclass
class FusionStudyConfig:
    band_px: int = 2          # w: half-width of the seam band
    crop_size: int = 32       # C2ST input side
    repeats: int = 5          # C2ST: 2 x repeats balanced half splits
    epochs: int = 60
    max_items: int = 200      # per arm and seed (the first ones in manifest order)


def _grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, np.float64)
    return image.mean(-1) if image.ndim == 3 else image


def _gradient_magnitude(grey: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1))


def seam_regions(mask: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The seam band B and the reference ring R of a mask (see the module docstring)."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    band = ndimage.binary_dilation(mask, iterations=width) & ~ndimage.binary_erosion(mask, iterations=width)
    ring = ndimage.binary_dilation(mask, iterations=4 * width) & ~ndimage.binary_dilation(mask, iterations=2 * width)
    return band, ring


def seam_statistics(image: np.ndarray, mask: np.ndarray, width: int = 2) -> dict | None:
    """{"seam_ratio": s, "descriptor": d} of one item; None when the band or the ring is empty."""
    band, ring = seam_regions(mask, width)
    if band.sum() < 4 or ring.sum() < 4:
        return None
    grey = _grey(image)
    magnitude = _gradient_magnitude(grey)
    energy_band, energy_ring = float((magnitude[band] ** 2).mean()), float((magnitude[ring] ** 2).mean())
    scale = float(np.median(magnitude[ring])) + 1e-6
    histogram = np.histogram(np.clip(magnitude[band] / scale, 0, 8), bins=BINS, range=(0, 8))[0] / band.sum()
    descriptor = np.concatenate([[grey[band].mean() - grey[ring].mean(),
                                  (grey[band].std() + 1e-6) / (grey[ring].std() + 1e-6)], histogram])
    return {"seam_ratio": (energy_band + 1e-6) / (energy_ring + 1e-6), "descriptor": descriptor}


def seam_scores(arm: Sequence[dict], real: Sequence[dict]) -> dict:
    """Seam gap and band distance of an arm's items against the real defects' (seam_statistics outputs)."""
    arm_log = np.log([s["seam_ratio"] for s in arm])
    real_log = np.log([s["seam_ratio"] for s in real])
    d_arm = np.stack([s["descriptor"] for s in arm])
    d_real = np.stack([s["descriptor"] for s in real])
    mean, std = d_real.mean(0), d_real.std(0) + 1e-6
    distance = np.linalg.norm(((d_arm - mean) / std).mean(0) - ((d_real - mean) / std).mean(0)) / np.sqrt(d_real.shape[1])
    return {"median_seam_ratio": float(np.exp(np.median(arm_log))),
            "seam_gap": float(abs(np.median(arm_log) - np.median(real_log))),
            "band_distance": float(distance), "items": len(arm)}


def crop_for_c2st(image: np.ndarray, mask: np.ndarray, size: int = 32) -> np.ndarray | None:
    """(3, size, size) float32 in [0, 1]: the square around the mask, resized."""
    import cv2

    from defectfill.metrics.generation import defect_crop

    crop = defect_crop(np.asarray(image), np.asarray(mask, bool))
    if crop is None:
        return None
    crop = crop if crop.ndim == 3 else np.repeat(crop[..., None], 3, -1)
    crop = cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA)
    return crop.transpose(2, 0, 1).astype(np.float32) / 255.0


def two_sample_auc(real: np.ndarray, fake: np.ndarray, *, repeats: int = 5, epochs: int = 60, seed: int = 0) -> dict:
    """C2ST: a small CNN told `fake` (label 1) from `real` (label 0), both (N, 3, S, S), in balanced
    halves: per repeat, n = min(N_real, N_fake) items per side are drawn, split in two halves of n/2
    per side, the CNN trained on one half and scored on the other, then the other way round; the AUC
    is the mean over the 2 x `repeats` splits. Every training and test set is exactly balanced
    (stratified k-fold on a dozen items per side leaves them off by one)."""
    import torch
    from sklearn.metrics import roc_auc_score
    from torch import nn

    n = min(len(real), len(fake))
    half = n // 2
    if half < 2:
        return {"auc": None, "items_per_side": n, "note": "fewer than 4 items per side"}
    aucs = []
    for r in range(repeats):
        rng = np.random.default_rng(seed * 1000 + r)
        real_pick, fake_pick = rng.permutation(len(real))[: 2 * half], rng.permutation(len(fake))[: 2 * half]
        for train_half in (0, 1):
            parts = {}
            for which, h in (("train", train_half), ("test", 1 - train_half)):
                chosen_real, chosen_fake = real_pick[h * half : (h + 1) * half], fake_pick[h * half : (h + 1) * half]
                parts[which] = (torch.from_numpy(np.concatenate([real[chosen_real], fake[chosen_fake]])),
                                np.r_[np.zeros(half), np.ones(half)])
            torch.manual_seed(seed * 1000 + 2 * r + train_half)
            model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(32, 1))
            optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
            x, y = parts["train"]
            target = torch.from_numpy(y).float()
            for _ in range(epochs):
                optimizer.zero_grad()
                nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), target).backward()
                optimizer.step()
            with torch.no_grad():
                scores = model(parts["test"][0]).squeeze(1).numpy()
            aucs.append(roc_auc_score(parts["test"][1], scores))
    return {"auc": float(np.mean(aucs)), "auc_std_over_splits": float(np.std(aucs)), "items_per_side": n,
            "splits": len(aucs)}


# ------------------------------------------------------------------------------ the study on a bench run
def _arm_part(items, real_stats, real_crops, config: FusionStudyConfig, seed: int) -> dict:
    from defectfill.data.images import load_mask

    stats, crops = [], []
    for item in items[: config.max_items]:
        image, _ = item.load()
        request = load_mask(item.request_mask, shape=image.shape[:2])
        if (s := seam_statistics(image, request, config.band_px)) is not None:
            stats.append(s)
        if (c := crop_for_c2st(image, request, config.crop_size)) is not None:
            crops.append(c)
    part = {**seam_scores(stats, real_stats),
            "c2st": two_sample_auc(real_crops, np.stack(crops), repeats=config.repeats, epochs=config.epochs,
                                   seed=seed)}
    return part


def run_fusion_study(run_dir: str | Path, out_dir: str | Path, config: FusionStudyConfig | None = None,
                     echo=print) -> dict:
    """Seam statistics and C2ST of every synthetic arm of a finished bench run, per seed, beside the
    bench's downstream F; resumable (one part file per seed and arm). Writes results.json, table.md,
    plots/fusion.png, sheets/seams.png and report.html in `out_dir`."""
    import json

    from defectfill.bench.run import bench_requests
    from defectfill.generators.manifest import generation_complete, read_generation_manifest
    from defectfill.io_utils import atomic_write_json
    from defectfill.studies.runs import bench_of, run_seeds

    config = config or FusionStudyConfig()
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    bench, data = bench_of(run_dir)
    test = [s for s in data.test_samples() if not s.is_good and s.mask.any()]
    real_stats = [s for s in (seam_statistics(t.image, t.mask, config.band_px) for t in test) if s is not None]
    real_crops = np.stack([c for c in (crop_for_c2st(t.image, t.mask, config.crop_size) for t in test) if c is not None])
    parts: dict[str, dict[int, dict]] = {}
    seeds = run_seeds(run_dir)  # the run's seeds and arms are its folders (a run may add both later)
    for seed in seeds:
        expected = len(bench_requests(bench, data, seed)[0])
        for arm in sorted(p.name for p in (run_dir / f"seed-{seed}" / "generated").glob("*") if p.is_dir()):
            folder = run_dir / f"seed-{seed}" / "generated" / arm
            if not generation_complete(folder, expected):  # an arm still generating is left out
                continue
            path = out_dir / "parts" / f"seed-{seed}-{arm}.json"
            if not path.is_file():
                echo(f"[study fusion] seed {seed}: {arm}")
                atomic_write_json(path, _arm_part(read_generation_manifest(folder), real_stats, real_crops, config, seed))
            parts.setdefault(arm, {})[seed] = json.loads(path.read_text())
    summary = _summarise(parts, run_dir, real_stats, len(real_crops), config)
    _write_outputs(summary, run_dir, out_dir, seeds[0])
    return summary


def _summarise(parts: dict, run_dir: Path, real_stats: list, real_crops: int, config: FusionStudyConfig) -> dict:
    import json
    from dataclasses import asdict

    bench = json.loads((run_dir / "bench.json").read_text()) if (run_dir / "bench.json").is_file() else {}
    arms = {}
    for arm, by_seed in parts.items():
        f = (bench.get("arms", {}).get(arm, {}) or {}).get("mean_f", {})
        arms[arm] = {"seam_gap": mean_std([p["seam_gap"] for p in by_seed.values()]),
                     "band_distance": mean_std([p["band_distance"] for p in by_seed.values()]),
                     "median_seam_ratio": mean_std([p["median_seam_ratio"] for p in by_seed.values()]),
                     "c2st_auc": mean_std([p["c2st"]["auc"] for p in by_seed.values()]),
                     "downstream_mean_f": {k: f.get(k) for k in ("mean", "std")} if f else None,
                     "seeds": sorted(by_seed)}
    real_log = np.log([s["seam_ratio"] for s in real_stats])
    return {"study": "fusion", "run": str(run_dir), "config": asdict(config), "arms": arms,
            "real": {"defects": len(real_stats), "crops": real_crops,
                     "median_seam_ratio": float(np.exp(np.median(real_log)))},
            "real_only_mean_f": ((bench.get("arms", {}).get("real_only") or {}).get("mean_f") or {}).get("mean")}


def fusion_table(summary: dict) -> str:
    def cell(stats: dict | None, digits: int = 3) -> str:
        if not stats or stats.get("mean") is None:
            return "n/a"
        return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"

    lines = [(f"Real test defects: {summary['real']['defects']} (median seam ratio "
             f"{summary['real']['median_seam_ratio']:.2f}); values are mean ± std over seeds."), "",
             ("| arm | seam gap (0 = like real) | band distance | median seam ratio | C2ST AUC (0.5 = indistinguishable) "
             "| downstream mean F |"), "|---|---|---|---|---|---|"]
    for arm, a in sorted(summary["arms"].items(), key=lambda kv: (kv[1]["seam_gap"]["mean"] or 0)):
        lines.append(f"| {arm} | {cell(a['seam_gap'])} | {cell(a['band_distance'])} | {cell(a['median_seam_ratio'], 2)} "
                     f"| {cell(a['c2st_auc'])} | {cell(a['downstream_mean_f'])} |")
    if summary.get("real_only_mean_f") is not None:
        lines.append(f"| real_only (no synthetic data) | | | | | {summary['real_only_mean_f']:.3f} |")
    return "\n".join(lines)


def _write_outputs(summary: dict, run_dir: Path, out_dir: Path, seed: int) -> None:
    from defectfill.studies.outputs import pyplot, write_study

    arms = sorted(summary["arms"])
    figure, axes = pyplot().subplots(1, 3, figsize=(13, 3.6))
    for ax, key, title in zip(axes, ("seam_gap", "band_distance", "c2st_auc"),
                              ("seam gap (lower: like real)", "band distance (lower: like real)", "C2ST AUC (0.5: like real)")):
        means = [summary["arms"][a][key]["mean"] or 0 for a in arms]
        stds = [summary["arms"][a][key]["std"] or 0 for a in arms]
        ax.bar(range(len(arms)), means, yerr=stds, color="#4a7")
        ax.set_xticks(range(len(arms)), arms, rotation=35, ha="right")
        ax.set_title(title, fontsize=10)
        if key == "c2st_auc":
            ax.axhline(0.5, color="k", lw=0.8, ls="--")
    sheet = seam_sheet(run_dir, seed, arms, out_dir / "sheets" / "seams.png")
    write_study(out_dir, summary, "Study: one generator vs multistage fusion", fusion_table(summary),
                [("Seam gap, band distance and C2ST AUC per arm (error bars: std over seeds)", figure),
                 ("Crops around the seam, first seed: one row per arm (band outlined in red)", sheet)], intro=__doc__)


def seam_sheet(run_dir: Path, seed: int, arms: list[str], path: Path, per_row: int = 8) -> Path:
    """Crops around the request masks of each arm (seed `seed`), the seam band outlined."""
    from defectfill.data.images import load_mask
    from defectfill.generators.manifest import read_generation_manifest
    from defectfill.metrics.generation import defect_crop
    from defectfill.viz import save_contact_sheet

    images, captions = [], []
    for arm in arms:
        folder = run_dir / f"seed-{seed}" / "generated" / arm
        if not (folder / "manifest.jsonl").is_file():
            continue
        for item in read_generation_manifest(folder)[:per_row]:
            image, _ = item.load()
            request = load_mask(item.request_mask, shape=image.shape[:2])
            band, _ = seam_regions(request, 1)
            outlined = image.copy()
            outlined[band & ~request] = (outlined[band & ~request] * 0.5 + np.array([127, 0, 0])).astype(np.uint8)
            if (crop := defect_crop(outlined, request, margin=0.5)) is not None:
                images.append(crop)
                captions.append(arm)
    return save_contact_sheet(path, images, captions=captions, ncols=per_row, tile=96)
