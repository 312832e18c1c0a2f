"""Low-Fidelity Selection: ranking, metric choice, LPIPS availability."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from defectfill.errors import GenerationError, ModelError
from defectfill.selection import (
    LowFidelitySelection,
    _lpips_model,
    lpips_weights_path,
    score_candidates,
    select,
)


def _fabric(seed: int = 0, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    weave = 128 + 40 * np.sin(xx * 2 * np.pi / 4) * np.sin(yy * 2 * np.pi / 6) + rng.normal(0, 8, (size, size))
    return np.repeat(weave.clip(0, 255)[..., None], 3, axis=2).astype(np.uint8)


def _candidates(image: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    blurred = image.copy()
    blurred[mask] = cv2.GaussianBlur(image, (0, 0), 3)[mask]  # over-reconstructed: plain background
    defect = image.copy()
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    spot = ((yy - 30) ** 2 + (xx - 32) ** 2 < 64) & mask
    defect[spot] = (defect[spot] * 0.3).astype(np.uint8)  # a dark stain
    return {"identical": image.copy(), "blurred": blurred, "defect": defect}


def _mask() -> np.ndarray:
    mask = np.zeros((64, 64), bool)
    mask[20:40, 22:42] = True
    return mask


def test_offline_metric_ranks_visible_defect_above_blur_above_identical():
    image, mask = _fabric(), _mask()
    cands = _candidates(image, mask)
    names = ["identical", "blurred", "defect"]
    scores = score_candidates(image, [cands[n] for n in names], mask, "ms-ssim-distance")
    assert scores[0] == pytest.approx(0.0, abs=1e-6)
    assert scores[2] > scores[1] > scores[0]
    lfs = LowFidelitySelection("ms-ssim-distance", top_k=2)
    got_scores, selected = lfs(image, [cands[n] for n in names], mask)
    assert [names[i] for i in selected] == ["defect", "blurred"]
    assert got_scores == scores


def test_score_ignores_changes_outside_the_mask():
    image, mask = _fabric(), _mask()
    outside = image.copy()
    outside[:10, :10] = 0
    assert score_candidates(image, [outside], mask, "ms-ssim-distance")[0] == pytest.approx(0.0, abs=1e-6)


def test_colour_stain_on_grey_fabric_is_seen():
    image, mask = _fabric(1), _mask()
    stain = image.copy()
    stain[mask, 0] = np.clip(stain[mask, 0].astype(int) + 90, 0, 255)  # red channel only
    assert score_candidates(image, [stain], mask, "ms-ssim-distance")[0] > 0.05


def test_unknown_metric_and_bad_inputs_are_refused():
    image, mask = _fabric(), _mask()
    with pytest.raises(GenerationError, match="ms-ssim-distance"):
        score_candidates(image, [image], mask, "psnr")
    with pytest.raises(GenerationError, match="empty"):
        score_candidates(image, [image], np.zeros_like(mask), "ms-ssim-distance")
    with pytest.raises(GenerationError, match="candidate 0"):
        score_candidates(image, [image[:32]], mask, "ms-ssim-distance")
    with pytest.raises(GenerationError, match="top_k"):
        select([0.1, 0.2], top_k=0)


def test_select_orders_best_first():
    assert select([0.1, 0.9, 0.5], top_k=2) == [1, 2]
    assert select([0.3, 0.3], top_k=2) == [0, 1]


def test_lpips_without_local_weights_explains_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    _lpips_model.cache_clear()
    image, mask = _fabric(), _mask()
    with pytest.raises(ModelError, match="ms-ssim-distance") as info:
        score_candidates(image, [image], mask, "lpips")
    assert "alexnet-owt-7be5be79.pth" in str(info.value)
    _lpips_model.cache_clear()


def test_lpips_runs_when_the_trunk_is_in_the_local_cache(tmp_path, monkeypatch):
    """Random AlexNet weights placed where torchvision caches them: the real lpips code path runs."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    _lpips_model.cache_clear()
    path = lpips_weights_path("lpips")
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    image, mask = _fabric(), _mask()
    cands = _candidates(image, mask)
    scores = score_candidates(image, [cands["identical"], cands["defect"]], mask, "lpips")
    _lpips_model.cache_clear()
    assert scores[0] == pytest.approx(0.0, abs=1e-6)
    assert scores[1] > 0
