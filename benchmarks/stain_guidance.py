"""Which guidance scale gives real-looking stains with a trained DefectFill stain concept?

Generates one stain per training image of the real-stain split (`configs/bench_real_stains.yaml`:
same requests as seed 0 of the real-stain bench) at each guidance scale, and compares the generated
stains' contrast (`defectfill.metrics.generation.defect_contrast`: mean grey level in the stain
minus its ring; real stains are dark) with the real ones. Writes a strip of the selected
candidates per scale to --out.

Run (after `defectfill real ...` has trained the concept in <run>/generators/defectfill/model):
`.venv/bin/python benchmarks/stain_guidance.py runs/real-stains/generators/defectfill/model --guidance 1 3 7.5`
(about 1 min per scale on one thread). `--base_model` names the base the concept was trained on
(default: the bench config's). With `--base_prompt "a photo of fabric with a stain"` and no concept
(model `none`), the base model alone inpaints a 64-px window around each request's mask with that
prompt: whether the base's text encoder means "stain" (the random one of base v4 did not).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from defectfill.bench.config import load_bench_config
from defectfill.bench.protocol import load_folder_data
from defectfill.bench.run import bench_requests
from defectfill.metrics.generation import defect_contrast
from defectfill.models.defectfill import DefectFill

ROOT = Path(__file__).resolve().parents[1]


def window(image: np.ndarray, mask: np.ndarray, side: int = 64) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    y0 = int(np.clip(ys.mean() - side // 2, 0, image.shape[0] - side))
    x0 = int(np.clip(xs.mean() - side // 2, 0, image.shape[1] - side))
    return image[y0 : y0 + side, x0 : x0 + side]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a DefectFill stain concept folder, or 'none' with --base_prompt")
    parser.add_argument("--base_model", default=None, help="the base (default: the bench config's)")
    parser.add_argument("--base_prompt", default=None, help="inpaint with the base alone and this prompt")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "bench_real_stains.yaml")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0, 7.5])
    parser.add_argument("--out", type=Path, default=Path("runs/stain-guidance"))
    parser.add_argument("--num_threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.num_threads)
    config = load_bench_config(args.config)
    data = load_folder_data(config)
    train, test = data.training_images(), data.test_samples()
    real = [defect_contrast(s.image, s.mask) for s in train + test if s.mask.any()]
    print(f"real stains ({len(real)}): contrast mean {np.mean(real):.1f}, median {np.median(real):.1f}")
    cfg = config.options_for("defectfill")
    base = args.base_model or str(ROOT / cfg.base_model)
    if args.base_prompt:
        from diffusers import StableDiffusionInpaintPipeline

        pipe = StableDiffusionInpaintPipeline.from_pretrained(base, safety_checker=None)
        pipe.set_progress_bar_config(disable=True)
    else:
        model = DefectFill.from_pretrained(args.model, base_model=base, selection_metric=cfg.selection_metric,
                                           change_threshold=cfg.change_threshold)
    requests, masks = bench_requests(config, data, seed=0)
    args.out.mkdir(parents=True, exist_ok=True)
    for scale in args.guidance:
        contrasts, strip = [], []
        for request in requests:
            mask = masks.propose(request, request.source.size, request.source.mask)
            if args.base_prompt:
                image, region = window(request.source.image, mask), window(mask.astype(np.uint8) * 255, mask)
                out = pipe(prompt=args.base_prompt, image=Image.fromarray(image), mask_image=Image.fromarray(region),
                           height=64, width=64, num_inference_steps=cfg.num_inference_steps, guidance_scale=scale,
                           generator=torch.Generator().manual_seed(request.index), output_type="np").images[0]
                keep = region[..., None] > 0  # known pixels pasted back, as DefectFill does
                chosen = np.where(keep, (out * 255).round().astype(np.uint8), image)
                contrasts.append(defect_contrast(chosen, region > 0))
                strip.append(chosen)
                continue
            result = model.generate(request.source.image, mask, defect_type=request.defect_type,
                                    num_candidates=config.generation.num_candidates,
                                    num_inference_steps=cfg.num_inference_steps, guidance_scale=scale, seed=request.index)
            chosen = result.candidates[result.selected[0]]
            contrasts.append(defect_contrast(chosen, mask))
            strip.append(window(chosen, mask))
        measured = [c for c in contrasts if c is not None]  # None: the stain fills its window, no ring
        print(f"guidance {scale:g}: contrast mean {np.mean(measured):.1f}, median {np.median(measured):.1f} "
              f"({len(measured)} of {len(contrasts)} with a ring)", flush=True)
        Image.fromarray(np.concatenate(strip, 1)).save(args.out / f"stains_guidance_{scale:g}.png")


if __name__ == "__main__":
    main()
