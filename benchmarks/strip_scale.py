"""DefectFill on line-scan strips: train at the whole-image shrink (before) or in the generation windows (after).

Simulated strips (the fabric simulator, greyscale, `--height` x `--width`, a blank lead-in of
`--lead-in` px at the start as real strips have: a near-constant band, grey 30 with sensor noise
of std 1) with small defects (knot, hole: the simulator's; nep: drawn here, 20-55 px). The arms run the
real commands, in this process:

    defectfill train --config configs/defectfill_tiny.yaml --pretrained_model_name_or_path assets/base-fabric-inpaint \\
        --train_data_dir DATA/train --resolution 64 --max_train_steps N --training_crops whole_image|generation
    defectfill generate --model MODEL --images DATA/good --defect-type T --real-masks DATA/real_masks \\
        --per-image P --num-candidates K --steps S [--allow-blank]

before = main's behaviour: `training_crops: whole_image` (the strip shrunk so its 256-px side is
64 px: x0.25) and proposals anywhere (`--allow-blank`); after = the defaults (training on the
windows `generate` paints in, proposals on fabric only); zoom2 (`--arms ... zoom2`) = after with
`--window_zoom 2` (windows of 32 image px enlarged to 64: for defects under a latent cell).
Reported per arm and type: the changed area (pixels of the labels) of the generated defects
against the real defects' area (median, IQR),
the fraction of generated items that changed nothing, the contrast of the changed pixels to their
ring against the real defects', the proposals that touch the blank lead-in, the training masks
that vanish at latent size; a contact sheet of generated crops per arm.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/strip_scale.py --out runs/strip-scale

Resumable: a finished stage (model, generation folder) is kept.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TYPES = ("knot", "hole", "nep")  # knot, hole: the simulator's; nep: drawn here (tiny)
TEXTURES = ("plain", "twill")
# arm -> (training_crops, --allow-blank, window_zoom)
ARMS = {"before": ("whole_image", True, 1.0), "after": ("generation", False, 1.0), "zoom2": ("generation", False, 2.0)}


def nep(image: np.ndarray, seed: int, lead_in: int) -> tuple[np.ndarray, np.ndarray]:
    """A nep (a tiny bright fibre knot, radius 2.5-4 px, 20-50 px) drawn on a good strip: the
    simulator has no defect this small, the real strips of the issue had many."""
    rng = np.random.default_rng([seed, 7])
    height, width = image.shape[:2]
    cy, cx = rng.uniform(16, height - 16), rng.uniform(lead_in + 64, width - 64)
    radius = rng.uniform(2.5, 4.0)
    y, x = np.mgrid[0:height, 0:width]
    d2 = ((y - cy) / rng.uniform(0.8, 1.2)) ** 2 + (x - cx) ** 2
    mask = d2 <= radius**2
    weight = 0.8 * np.exp(-d2 / (2 * (0.7 * radius) ** 2))[..., None]
    out = image.astype(np.float32) + (235 - image.astype(np.float32)) * weight
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), mask


def strip(texture: str, defect_type: str | None, seed: int, height: int, width: int, lead_in: int):
    """(image (H, W, 3) uint8 grey, mask) with a blank lead-in; a defect in or near the lead-in is redrawn."""
    from defectfill.data.fabric import render_sample

    if defect_type == "nep":
        image, _ = render_sample(texture, None, seed, size=(height, width), gray=True)
        image, mask = nep(image, seed, lead_in)
    for attempt in range(50):
        if defect_type == "nep":
            break
        image, mask = render_sample(texture, defect_type, seed + 1000 * attempt, size=(height, width), gray=True)
        if defect_type is None or not mask[:, : lead_in + 32].any():
            break
    image = image.copy()
    rng = np.random.default_rng(seed)
    image[:, :lead_in] = np.clip(rng.normal(30, 1.0, (height, lead_in, 1)), 0, 255).astype(np.uint8)
    return image, mask


def build_data(out: Path, args) -> Path:
    from defectfill.data.images import save_image, save_mask
    from defectfill.data.sample import DefectSample
    from defectfill.data.writers import write_masks

    data = out / "data"
    if (data / "done.json").is_file():
        return data
    started = time.perf_counter()
    samples = []
    for t, defect_type in enumerate(args.types):
        for i in range(args.train_per_type):
            image, mask = strip(TEXTURES[i % 2], defect_type, 100 * t + i, args.height, args.width, args.lead_in)
            samples.append(DefectSample(image, mask, defect_type, is_gray=True, meta={"name": f"{defect_type}_{i:02d}"}))
            save_mask(data / "real_masks" / defect_type / f"{i:02d}.png", mask)
    write_masks(samples, data / "train")
    for i in range(args.good):
        image, _ = strip(TEXTURES[i % 2], None, 500 + i, args.height, args.width, args.lead_in)
        save_image(data / "good" / f"good_{i:02d}.png", image[..., 0])
    (data / "done.json").write_text(json.dumps({"seconds": time.perf_counter() - started}))
    return data


def run_arm(out: Path, data: Path, arm: str, args) -> dict:
    from defectfill.cli import main

    crops, allow_blank, zoom = ARMS[arm]
    arm_dir = out / arm
    model = arm_dir / "model"
    seconds = {}
    if not (model / "defectfill.json").is_file() or not (model / "scale.json").is_file():
        started = time.perf_counter()
        code = main(["train", "--config", str(ROOT / "configs" / "defectfill_tiny.yaml"),
                     "--pretrained_model_name_or_path", str(ROOT / "assets" / "base-fabric-inpaint"),
                     "--train_data_dir", str(data / "train"), "--output_dir", str(model), "--resolution", "64",
                     "--max_train_steps", str(args.train_steps), "--checkpointing_steps", str(args.train_steps),
                     "--report_to", "none", "--validation_steps", "0", "--training_crops", crops,
                     "--window_zoom", str(zoom), "--seed", "0"])
        assert code == 0, f"train {arm} failed"
        seconds["train"] = time.perf_counter() - started
    for defect_type in args.types:
        gen = arm_dir / f"gen-{defect_type}"
        done = gen / "manifest.jsonl"
        expected = args.good * args.per_image
        if done.is_file() and len(done.read_text().splitlines()) >= expected:
            continue
        started = time.perf_counter()
        flags = ["generate", "--model", str(model), "--images", str(data / "good"), "--defect-type", defect_type,
                 "--out", str(gen), "--per-image", str(args.per_image), "--num-candidates", str(args.num_candidates),
                 "--steps", str(args.inference_steps), "--seed", "0", "--real-masks", str(data / "real_masks"),
                 "--no-contact-sheet"]
        code = main(flags + (["--allow-blank"] if allow_blank else []))
        assert code == 0, f"generate {arm} {defect_type} failed"
        seconds[f"generate_{defect_type}"] = time.perf_counter() - started
    timing = arm_dir / "seconds.json"
    previous = json.loads(timing.read_text()) if timing.is_file() else {}
    timing.write_text(json.dumps({**previous, **seconds}, indent=1))
    return {**previous, **seconds}


def _quartiles(values) -> dict:
    v = np.asarray(values, float)
    if v.size == 0:
        return {"n": 0}
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"n": int(v.size), "median": float(med), "q1": float(q1), "q3": float(q3)}


def measure(out: Path, data: Path, args) -> dict:
    from defectfill.data.images import load_image, load_mask
    from defectfill.data.readers import read_dataset
    from defectfill.metrics.generation import defect_contrast

    real = {t: [] for t in args.types}
    real_contrast = {t: [] for t in args.types}
    for sample in read_dataset(data / "train", layout="folder"):
        real[sample.defect_type].append(int(sample.mask.sum()))
        real_contrast[sample.defect_type].append(defect_contrast(sample.image, sample.mask))
    results = {"real": {t: {"area": _quartiles(real[t]), "contrast": _quartiles(real_contrast[t])} for t in args.types}}
    for arm in args.arms:
        scale = json.loads((out / arm / "model" / "scale.json").read_text())
        results[arm] = {}
        for defect_type in args.types:
            gen = out / arm / f"gen-{defect_type}"
            records = [json.loads(line) for line in (gen / "manifest.jsonl").read_text().splitlines() if line.strip()]
            changed, requested, contrast, on_lead_in = [], [], [], 0
            for r in records:
                label = load_mask(gen / r["changed_mask"])
                request = load_mask(gen / r["request_mask"])
                changed.append(int(label.sum()))
                requested.append(int(request.sum()))
                on_lead_in += int(request[:, : args.lead_in].any())
                if label.any():
                    contrast.append(defect_contrast(load_image(gen / r["image"]), label))
            results[arm][defect_type] = {
                "items": len(records), "changed_area": _quartiles(changed), "request_area": _quartiles(requested),
                "changed_fraction": _quartiles(np.array(changed) / np.maximum(1, requested)),
                "changed_nothing": sum(c == 0 for c in changed) / max(1, len(changed)),
                "contrast": _quartiles([c for c in contrast if c is not None]),
                "proposals_on_lead_in": on_lead_in,
                "training": scale[defect_type]}
    return results


def sheet(out: Path, data: Path, args) -> Path:
    """Per type: a row of real defect crops (mask outlined), then per arm a row of pairs (good crop with
    the request mask outlined, the generated crop as it is); `--crop-px` crops at the strip's own
    scale, each shown 128 px wide."""
    from defectfill.data.images import load_image, load_mask
    from defectfill.data.readers import read_dataset
    from defectfill.viz import save_contact_sheet

    side = args.crop_px

    def crop(image, mask, box_mask):
        ys, xs = np.nonzero(box_mask)
        y0 = int(np.clip(ys.mean() - side // 2, 0, image.shape[0] - side))
        x0 = int(np.clip(xs.mean() - side // 2, 0, image.shape[1] - side))
        return image[y0 : y0 + side, x0 : x0 + side], None if mask is None else mask[y0 : y0 + side, x0 : x0 + side]

    images, masks, captions = [], [], []
    per_row = 8
    real = [s for s in read_dataset(data / "train", layout="folder")]
    for defect_type in args.types:
        for s in [s for s in real if s.defect_type == defect_type][:per_row]:
            c, m = crop(s.image, s.mask, s.mask)
            images.append(c)
            masks.append(m)
            captions.append(f"real {defect_type} {int(s.mask.sum())}px")
        for arm in args.arms:
            gen = out / arm / f"gen-{defect_type}"
            records = [json.loads(line) for line in (gen / "manifest.jsonl").read_text().splitlines() if line.strip()]
            for r in records[: per_row // 2]:
                request = load_mask(gen / r["request_mask"])
                label = load_mask(gen / r["changed_mask"])
                good = load_image(data / "good" / Path(r["source_image"]).name)
                generated = load_image(gen / r["image"])
                for image, mask, caption in ((good, request, f"{arm} request {int(request.sum())}px"),
                                             (generated, None, f"{arm} changed {int(label.sum())}px")):
                    c, m = crop(image, mask, request)
                    images.append(c)
                    masks.append(m)
                    captions.append(caption)
    return save_contact_sheet(out / "contact_sheet.png", images, masks, captions, ncols=per_row, tile=128)


def table(results: dict, arms: list[str]) -> str:
    def iqr(q):
        return f"{q['median']:.0f} [{q['q1']:.0f}-{q['q3']:.0f}]" if q.get("n") else "-"

    lines = [("| arm | type | training windows (vanished at latent size) | real area px | requested px | "
              "changed px | changed / requested | changed nothing | contrast real / generated | on lead-in |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        for t, r in results[arm].items():
            real = results["real"][t]
            tr = r["training"]
            lines.append(
                f"| {arm} ({tr['training_crops']}) | {t} | {tr['training_windows']} ({tr['vanished_at_latent_size']}) "
                f"x{tr['scale_median']:.2f} | {iqr(real['area'])} | {iqr(r['request_area'])} | "
                f"{iqr(r['changed_area'])} | {r['changed_fraction']['median']:.2f} "
                f"[{r['changed_fraction']['q1']:.2f}-{r['changed_fraction']['q3']:.2f}] | "
                f"{r['changed_nothing']:.2f} of {r['items']} | "
                f"{real['contrast']['median']:.1f} / {r['contrast'].get('median', float('nan')):.1f} | "
                f"{r['proposals_on_lead_in']} |")
    return "\n".join(lines)


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/strip-scale"))
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--lead-in", type=int, default=300)
    parser.add_argument("--train-per-type", type=int, default=10)
    parser.add_argument("--good", type=int, default=6)
    parser.add_argument("--per-image", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=150)
    parser.add_argument("--num-candidates", type=int, default=4)
    parser.add_argument("--inference-steps", type=int, default=25)
    parser.add_argument("--arms", nargs="+", default=["before", "after"], choices=list(ARMS),
                        help="zoom2: as after, with --window_zoom 2 (tiny defects)")
    parser.add_argument("--crop-px", type=int, default=96, help="side of the contact sheet's crops (image px)")
    parser.add_argument("--types", nargs="+", default=["knot", "hole"], choices=list(TYPES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=1))
    data = build_data(args.out, args)
    for arm in args.arms:
        print(f"== {arm}: {run_arm(args.out, data, arm, args)}", flush=True)
    if "before" in args.arms and "after" in args.arms:
        results = measure(args.out, data, args)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
        text = table(results, args.arms)
        (args.out / "results.md").write_text(text + "\n")
        print(text)
        print(f"contact sheet: {sheet(args.out, data, args)}")


if __name__ == "__main__":
    main()
