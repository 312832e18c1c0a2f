"""Early Low-Fidelity Selection: rank the k candidates on the predicted clean image at step N of T,
keep the best and finish only it.

Plain LFS denoises all k candidates for T steps and ranks the finished images: k·T UNet evaluations
(×2 with classifier-free guidance). At step N the sampler already predicts the clean latent

    x̂0 = (x_t − √(1 − ᾱ_t)·ε̂) / √ᾱ_t        (ε-prediction; v-prediction: x̂0 = √ᾱ_t·x_t − √(1 − ᾱ_t)·v̂)

(the scheduler's `pred_original_sample`), whose decoded image already shows where and how strongly
the mask will change. Ranking the k decoded x̂0 with the LFS metric and continuing only the best
costs k·N + (T − N) UNet evaluations (plus k VAE decodes at step N). With a deterministic sampler
(DDIM, η = 0) the kept candidate finishes exactly as it would have inside the batch, so the only
loss is a wrong ranking; `benchmarks/early_selection.py` measures how often the early top-1 is the
finished top-1 (and the rank correlation), which chose the default fraction N/T.

It runs inside diffusers' own `StableDiffusionInpaintPipeline.__call__` through its
`callback_on_step_end` hook (no copy of the denoising loop): the scheduler's `step` is wrapped for
the call to keep its x̂0, and at step N the callback returns the latents, prompt embeddings, mask and
masked-image latents of the kept candidate only (batch k -> 1; with guidance the rows b and k + b).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np

from defectfill.errors import GenerationError

ScoreFn = Callable[[np.ndarray], list[float]]  # (k, h, w, 3) uint8 previews -> k scores (higher = kept)


def selection_step(fraction: float, num_steps: int) -> int:
    """N = round(fraction · T), kept in [1, T − 1] (a selection after the last step saves nothing)."""
    if not 0.0 < float(fraction) < 1.0:
        raise GenerationError(f"early_selection must lie in (0, 1) (the fraction N/T of the steps), found {fraction}")
    return int(min(max(round(float(fraction) * num_steps), 1), max(num_steps - 1, 1)))


@contextmanager
def recording_x0(scheduler: Any) -> Iterator[dict[str, Any]]:
    """Within the block, `record["x0"]` is the `pred_original_sample` of the scheduler's last step."""
    record: dict[str, Any] = {"x0": None}
    original = scheduler.step

    @functools.wraps(original)  # keeps the signature the pipeline inspects (eta, generator)
    def step(*args: Any, return_dict: bool = True, **kwargs: Any) -> Any:
        output = original(*args, return_dict=True, **kwargs)
        record["x0"] = getattr(output, "pred_original_sample", None)
        if record["x0"] is None:
            raise GenerationError(
                f"early selection needs the predicted clean latent, which {type(scheduler).__name__}.step does not "
                "return; use a scheduler that does (DDIM, DDPM, Euler, ...) or early_selection=0")
        return output if return_dict else output.to_tuple()

    scheduler.step = step
    try:
        yield record
    finally:
        del scheduler.step  # the class's method again


def decode_previews(pipeline: Any, x0: Any, window_image: np.ndarray, window_mask: np.ndarray) -> np.ndarray:
    """Decoded x̂0 latents (k, 4, h/8, w/8), pasted into the window inside its mask -> (k, h, w, 3) uint8."""
    import torch

    with torch.inference_mode():
        decoded = pipeline.vae.decode(x0.to(pipeline.vae.dtype) / pipeline.vae.config.scaling_factor,
                                      return_dict=False)[0]
    images = ((decoded.float().clamp(-1, 1) + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8)
    images = images.permute(0, 2, 3, 1).cpu().numpy()
    return np.where(window_mask[None, ..., None], images, window_image[None])


class EarlySelection:
    """`callback_on_step_end` for the inpainting pipeline: at step `select_step` rank the k
    candidates on their decoded x̂0 with `score` and drop all but the best; at the steps in
    `record_steps` keep the previews and scores without selecting (for measurements).

    After the call: `scores` (the k early scores), `kept` (the index kept), `previews` {step: (k, h, w, 3)},
    `preview_scores` {step: [k scores]}.
    """

    tensor_inputs: ClassVar[list[str]] = ["latents", "prompt_embeds", "mask", "masked_image_latents"]

    def __init__(self, record: dict[str, Any], window_image: np.ndarray, window_mask: np.ndarray, score: ScoreFn,
                 *, select_step: int | None = None, record_steps: tuple[int, ...] = ()):
        self.record, self.window_image, self.window_mask, self.score = record, window_image, window_mask, score
        self.select_step, self.record_steps = select_step, set(record_steps)
        self.scores: list[float] = []
        self.kept: int | None = None
        self.previews: dict[int, np.ndarray] = {}
        self.preview_scores: dict[int, list[float]] = {}

    def __call__(self, pipeline: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        import torch

        from defectfill.selection import select

        done = i + 1  # UNet evaluations of the batch so far
        if done not in self.record_steps and done != self.select_step:
            return {}
        previews = decode_previews(pipeline, self.record["x0"], self.window_image, self.window_mask)
        scores = [float(s) for s in self.score(previews)]
        if done in self.record_steps:
            self.previews[done], self.preview_scores[done] = previews, scores
        if done != self.select_step:
            return {}
        self.scores, self.kept = scores, select(scores, 1)[0]
        k = len(scores)
        rows = [self.kept, k + self.kept] if pipeline.do_classifier_free_guidance else [self.kept]
        index = torch.tensor(rows, device=tensors["latents"].device)
        return {"latents": tensors["latents"][self.kept : self.kept + 1],
                **{name: tensors[name].index_select(0, index.to(tensors[name].device))
                   for name in ("prompt_embeds", "mask", "masked_image_latents")}}


def check_pipeline(pipeline: Any) -> None:
    """Early selection drops candidates from the 9-channel UNet's inputs; a 4-channel UNet (which
    re-noises the good image each step from batch-k tensors the hook cannot reach) is refused."""
    if int(pipeline.unet.config.in_channels) != 9:
        raise GenerationError(f"early selection needs a 9-channel inpainting UNet, found {pipeline.unet.config.in_channels} "
                              "input channels; use early_selection=0 with this base")
