"""Early Low-Fidelity Selection: does the ranking at step N of T agree with the ranking of the
finished candidates, and how much faster is it than one batched stock diffusers call?

Agreement (over --requests requests, k = --num_candidates candidates each, T = --steps):
each request is generated once with all k candidates finished, recording the decoded predicted
clean image x̂0 at every N in --fractions (`EarlySelection(record_steps=...)`, the same code the
early path ranks with); per N: top-1 agreement = how often the early best is the finished best,
Spearman ρ between early and finished scores (mean over requests), and the regret = finished
score of the best − finished score of the early pick (in score units; 0 when they agree), and the
share of LFS's gain kept = (score of the early pick − mean score) / (best score − mean score)
(1: the finished best; 0: no better than a random candidate). With DDIM
(η = 0) the early pick finishes exactly as it does in the batch (tests/test_early_selection.py), so
these figures are the early path's.

Speed (same run, one thread, --warmup calls first, medians over --timing requests): one batched
stock `StableDiffusionInpaintPipeline.__call__` with k images (the plain LFS path, LFS scoring
included) against the early path at each N (k candidates to step N, k VAE decodes + scores,
then one candidate to T).

    PYTHONPATH=. HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python benchmarks/early_selection.py \\
        --model /work/runs/demo-2seeds/generators/defectfill/model --out runs/early_selection

Requests: good 64-px fabrics from the simulator (8 textures, seeded), masks of the model's defect
types proposed procedurally (`propose_masks`), seeds 0..n-1. --model none: the offline base with
untrained concept tokens (random embeddings). Results: OUT/early_selection.json (+ per-request
JSONL, resumable).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def load_model(model: str, base: str, metric: str):
    from defectfill.models.defectfill import DefectFill, load_base_pipeline

    if model != "none":
        return DefectFill.from_pretrained(model, base_model=base, selection_metric=metric)
    pipe = load_base_pipeline(base)
    concepts = {"stain": "<stain>", "hole": "<hole>", "broken_end": "<broken_end>"}
    pipe.tokenizer.add_tokens(list(concepts.values()))
    pipe.text_encoder.resize_token_embeddings(len(pipe.tokenizer), mean_resizing=False)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        weight = pipe.text_encoder.get_input_embeddings().weight
        for token in concepts.values():
            weight[pipe.tokenizer.convert_tokens_to_ids(token)] = torch.randn(weight.shape[1], generator=generator)
    return DefectFill(pipe, concepts, base_model=base, selection_metric=metric)


def make_requests(model, count: int, size: int) -> list[dict]:
    from defectfill.data.fabric import render_fabric
    from defectfill.data.fabric_textures import COMPLEX_TEXTURES, SIMPLE_TEXTURES
    from defectfill.mask_proposals import propose_masks

    textures = SIMPLE_TEXTURES + COMPLEX_TEXTURES
    out = []
    for i in range(count):
        defect_type = model.defect_types[i % len(model.defect_types)]
        image = render_fabric(textures[i % len(textures)], seed=1000 + i, size=size)
        mask = propose_masks(image.shape[:2], defect_type, 1, np.random.default_rng(i), mode="procedural")[0]
        out.append({"index": i, "defect_type": defect_type, "image": image, "mask": mask, "seed": i})
    return out


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    value = spearmanr(a, b).statistic
    return float(value) if np.isfinite(value) else 0.0


def agreement_row(model, request: dict, args, steps: list[int]) -> dict:
    """One request: all k finished, previews at each N in `steps`; early and finished scores."""
    from defectfill.models.early_selection import EarlySelection, recording_x0
    from defectfill.selection import score_candidates

    image, mask = request["image"], request["mask"]
    embeds = model.encode_prompt(request["defect_type"], args.guidance > 1.0)

    def score(previews: np.ndarray) -> list[float]:
        return score_candidates(image, list(previews), mask, model.selection_metric)

    with recording_x0(model.pipeline.scheduler) as record:
        hook = EarlySelection(record, image, mask, score, record_steps=tuple(steps))
        finished = model.generate_candidates(image, mask, embeds, args.num_candidates, args.steps, args.guidance, 1.0,
                                             torch.Generator().manual_seed(request["seed"]), selection=hook)
    final = score(np.where(mask[None, ..., None], finished, image[None]))
    return {"index": request["index"], "defect_type": request["defect_type"], "final": final,
            "early": {str(n): hook.preview_scores[n] for n in steps}}


def summarise_agreement(rows: list[dict], steps: list[int], total: int) -> dict:
    out = {}
    for n in steps:
        top1, rhos, regrets, kept = [], [], [], []
        for row in rows:
            final, early = row["final"], row["early"][str(n)]
            pick, best = int(np.argmax(early)), int(np.argmax(final))
            top1.append(pick == best)
            rhos.append(spearman(early, final))
            regrets.append(final[best] - final[pick])
            if final[best] > np.mean(final):  # LFS's gain over a random pick, and the share the early pick keeps
                kept.append((final[pick] - np.mean(final)) / (final[best] - np.mean(final)))
        out[str(n)] = {"fraction": round(n / total, 3), "top1_agreement": float(np.mean(top1)),
                       "spearman_mean": float(np.mean(rhos)), "spearman_median": float(np.median(rhos)),
                       "regret_mean": float(np.mean(regrets)), "lfs_gain_kept_mean": float(np.mean(kept)),
                       "requests": len(rows)}
    return out


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def speed(model, requests: list[dict], args, steps: list[int]) -> dict:
    """Medians (s) per request: the stock batched call + LFS vs the early path at each N."""
    from defectfill.selection import score_candidates

    def stock(request: dict) -> None:
        image, mask = request["image"], request["mask"]
        embeds = model.encode_prompt(request["defect_type"], args.guidance > 1.0)
        out = model.generate_candidates(image, mask, embeds, args.num_candidates, args.steps, args.guidance, 1.0,
                                        torch.Generator().manual_seed(request["seed"]))
        score_candidates(image, list(np.where(mask[None, ..., None], out, image[None])), mask, model.selection_metric)

    def early(request: dict, fraction: float) -> None:
        image, mask = request["image"], request["mask"]
        embeds = model.encode_prompt(request["defect_type"], args.guidance > 1.0)
        model.generate_selected_early(image, mask, embeds, args.num_candidates, args.steps, args.guidance, 1.0,
                                      torch.Generator().manual_seed(request["seed"]), model.selection_metric, fraction)

    for request in requests[: args.warmup]:
        stock(request)
        early(request, steps[0] / args.steps)
    arms = {"stock": [], **{str(n): [] for n in steps}}
    for request in requests[args.warmup : args.warmup + args.timing]:  # interleaved: drift hits every arm alike
        arms["stock"] += timed(lambda r=request: stock(r), 1)
        for n in steps:
            arms[str(n)] += timed(lambda r=request, f=n / args.steps: early(r, f), 1)
    stock_median = statistics.median(arms["stock"])
    k, total = args.num_candidates, args.steps
    result = {"stock_batched": {"median_s": stock_median, "unet_rows": k * total, "n": len(arms["stock"])}}
    for n in steps:
        median = statistics.median(arms[str(n)])
        result[str(n)] = {"fraction": round(n / total, 3), "median_s": median, "speedup": stock_median / median,
                          "unet_rows": k * n + total - n, "unet_speedup": k * total / (k * n + total - n),
                          "n": len(arms[str(n)])}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="/work/runs/demo-2seeds/generators/defectfill/model",
                        help="a trained DefectFill folder, or 'none' (the base with untrained concept tokens)")
    parser.add_argument("--base_model", default=str(REPO / "assets" / "base-fabric-inpaint"))
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "early_selection")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--num_candidates", type=int, default=8)
    parser.add_argument("--steps", type=int, default=25, help="T (the plug-in's default num_inference_steps)")
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--fractions", default="0.1,0.2,0.4,0.6")
    parser.add_argument("--selection_metric", default="auto")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--timing", type=int, default=10, help="requests timed per arm (0: no timing)")
    parser.add_argument("--num_threads", type=int, default=1)
    args = parser.parse_args()

    from defectfill.io_utils import Manifest, atomic_write_json
    from defectfill.models.early_selection import selection_step
    from defectfill.selection import resolve_metric

    torch.set_num_threads(args.num_threads)
    metric = resolve_metric(args.selection_metric)
    model = load_model(args.model, args.base_model, metric)
    steps = sorted({selection_step(float(f), args.steps) for f in args.fractions.split(",")})
    requests = make_requests(model, args.requests, args.size)
    args.out.mkdir(parents=True, exist_ok=True)
    rows_file = Manifest(args.out / "agreement_rows.jsonl", key="index")
    started = time.process_time()
    for request in requests:
        if not rows_file.done(request["index"]):
            rows_file.append(agreement_row(model, request, args, steps))
            if request["index"] % 20 == 0:
                print(f"request {request['index']}/{len(requests)}", file=sys.stderr, flush=True)
    rows = [r for r in rows_file if r["index"] < args.requests and set(r["early"]) == {str(n) for n in steps}]
    result = {"model": args.model, "base_model": args.base_model, "selection_metric": metric,
              "num_candidates": args.num_candidates, "steps": args.steps, "guidance": args.guidance,
              "num_threads": args.num_threads, "agreement": summarise_agreement(rows, steps, args.steps),
              "chance_top1": 1 / args.num_candidates}
    if args.timing:
        result["speed"] = speed(model, requests, args, steps)
    result["cpu_seconds_this_run"] = time.process_time() - started
    atomic_write_json(args.out / "early_selection.json", result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
