"""Early Low-Fidelity Selection on a tiny real inpainting pipeline: the kept candidate finishes as it
would in the batch, the UNet sees k·N + (T − N) rows (×2 with guidance), the result and its record,
the refusals (bad fraction, a scheduler without x̂0)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from defectfill.errors import ConfigError, GenerationError
from defectfill.models.defectfill import DefectFill
from defectfill.models.early_selection import EarlySelection, recording_x0, selection_step
from defectfill.selection import score_candidates

K, T = 3, 4


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> DefectFill:
    from test_generate import build_tiny_model_dir

    torch.set_num_threads(1)
    _, folder = build_tiny_model_dir(tmp_path_factory.mktemp("early"))
    return DefectFill.from_pretrained(folder, selection_metric="ms-ssim-distance")


def fabric(seed: int = 0, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    grey = 120 + 40 * np.sin(xx * np.pi / 2) * np.sin(yy * np.pi / 3)
    return np.stack([grey + rng.normal(0, 6, grey.shape) + 20 * c for c in range(3)], 2).clip(0, 255).astype(np.uint8)


def box_mask(size: int = 64) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[20:40, 24:44] = True
    return mask


class RowCounter:
    """Counts the rows (batch entries) the UNet evaluates."""

    def __init__(self, unet):
        self.rows = 0
        self.handle = unet.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.rows += int(args[0].shape[0])


def test_selection_step_is_round_f_t_inside_the_loop():
    assert selection_step(0.4, 25) == 10 and selection_step(0.01, 25) == 1 and selection_step(0.99, 25) == 24
    with pytest.raises(GenerationError, match="early_selection"):
        selection_step(1.0, 25)


@pytest.mark.parametrize("guidance", [7.5, 1.0])
def test_kept_candidate_finishes_as_in_the_batch_and_costs_kn_plus_t_minus_n(model, guidance):
    image, mask = fabric(), box_mask()
    counter = RowCounter(model.pipeline.unet)
    try:
        full = model.generate(image, mask, defect_type="stain", num_candidates=K, num_inference_steps=T, seed=5,
                              guidance_scale=guidance)
        full_rows, counter.rows = counter.rows, 0
        early = model.generate(image, mask, defect_type="stain", num_candidates=K, num_inference_steps=T, seed=5,
                               guidance_scale=guidance, early_selection=0.5)
        early_rows = counter.rows
    finally:
        counter.handle.remove()
    cfg = 2 if guidance > 1 else 1
    n = selection_step(0.5, T)
    assert full_rows == cfg * K * T and early_rows == cfg * (K * n + T - n)
    record = early.meta["early_selection"][0]
    assert record["step"] == n and record["of"] == T and len(record["early_scores"]) == K
    assert record["kept"] == int(np.argmax(record["early_scores"]))
    assert len(early.candidates) == 1 and early.selected == [0]
    # DDIM is deterministic: the kept candidate ends exactly where it ends among the k
    assert np.array_equal(early.candidates[0], full.candidates[record["kept"]])
    assert early.scores[0] == pytest.approx(full.scores[record["kept"]])
    assert np.array_equal(early.changed_masks[0], full.changed_masks[record["kept"]])
    outside = ~mask
    assert np.array_equal(early.candidates[0][outside], image[outside])


def test_previews_are_the_decoded_x0_pasted_in_the_mask_and_scored_like_lfs(model):
    image, mask = fabric(1), box_mask()
    embeds = model.encode_prompt("hole", True)

    def score(previews):
        return score_candidates(image, list(previews), mask, "ms-ssim-distance")

    with recording_x0(model.pipeline.scheduler) as record:
        hook = EarlySelection(record, image, mask, score, record_steps=(1, T))
        finished = model.generate_candidates(image, mask, embeds, K, T, 7.5, 1.0, torch.Generator().manual_seed(0),
                                             selection=hook)
    assert "step" not in vars(model.pipeline.scheduler)  # the scheduler's own step again
    assert set(hook.previews) == {1, T} and hook.kept is None and finished.shape[0] == K
    for previews in hook.previews.values():
        assert previews.shape == (K, 64, 64, 3) and np.array_equal(previews[:, ~mask], np.repeat(image[None, ~mask], K, 0))
    # at the last step x0 is the final latent: its preview is the finished output (up to VAE rounding)
    last = np.where(mask[None, ..., None], finished, image[None]).astype(int)
    assert np.abs(hook.previews[T].astype(int) - last).max() <= 1
    assert hook.preview_scores[T] == pytest.approx(score(hook.previews[T]))


def test_refusals_name_the_argument(model):
    from diffusers import DPMSolverMultistepScheduler

    image, mask = fabric(), box_mask()
    with pytest.raises(GenerationError, match="early_selection must lie in"):
        model.generate(image, mask, defect_type="stain", num_candidates=K, num_inference_steps=T, early_selection=1.0)
    original = model.pipeline.scheduler
    model.pipeline.scheduler = DPMSolverMultistepScheduler.from_config(original.config)
    try:
        with pytest.raises(GenerationError, match="DPMSolverMultistepScheduler.step does not return"):
            model.generate(image, mask, defect_type="stain", num_candidates=K, num_inference_steps=T,
                           early_selection=0.5)
    finally:
        model.pipeline.scheduler = original
    from defectfill.models.plugin import DefectFillOptions

    with pytest.raises(ConfigError, match="early_selection"):
        DefectFillOptions(early_selection=-0.1)


def test_generate_batch_denoises_the_images_together_with_the_single_calls_results(model):
    """B images x k candidates in ONE pipeline call, each item equal to its own call."""
    images = [fabric(s) for s in range(3)]
    masks = [box_mask(), np.roll(box_mask(), 10, axis=0), np.roll(box_mask(), -12, axis=1)]
    calls = []
    hook = model.pipeline.unet.register_forward_pre_hook(lambda module, args: calls.append(int(args[0].shape[0])))
    try:
        batch = model.generate_batch(images, masks, "stain", seed=20, num_candidates=2, num_inference_steps=2)
    finally:
        hook.remove()
    assert calls == [2 * 3 * 2] * 2  # guidance x images x candidates rows, once per step
    for i, result in enumerate(batch):
        single = model.generate(images[i], masks[i], defect_type="stain", num_candidates=2, num_inference_steps=2,
                                seed=20 + i)
        assert result.meta["seed"] == 20 + i and result.scores == pytest.approx(single.scores, abs=1e-3)
        for mine, theirs in zip(result.candidates, single.candidates):
            assert np.abs(mine.astype(int) - theirs).max() <= 1
