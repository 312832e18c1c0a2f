"""DefectFill losses: each term zero / non-zero where it must be, the weighting, NaN guard."""

from __future__ import annotations

import pytest
import torch

from defectfill.errors import DefectfillError
from defectfill.losses import (
    LossWeights,
    NonFiniteLossError,
    attention_loss,
    check_finite,
    defect_loss,
    object_loss,
    object_loss_weight,
    total_loss,
)


def _tensors(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(2, 4, 8, 8, generator=g)
    pred = torch.randn(2, 4, 8, 8, generator=g)
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, 2:5, 3:6] = 1
    mask[1, :, 6:8, 0:2] = 1
    return noise, pred, mask


def test_defect_loss_equals_in_mask_mse_normalised_by_area():
    noise, pred, mask = _tensors()
    expected = torch.stack([
        ((pred[b] - noise[b]) ** 2 * mask[b]).sum() / (4 * mask[b].sum()) for b in range(2)
    ]).mean()
    assert torch.allclose(defect_loss(pred, noise, mask), expected)


def test_defect_loss_ignores_everything_outside_the_mask():
    noise, pred, mask = _tensors()
    base = defect_loss(pred, noise, mask)
    outside = mask.expand_as(pred) == 0
    changed_pred, changed_noise = pred.clone(), noise.clone()
    changed_pred[outside] += 5.0
    changed_noise[outside] -= 3.0  # the noise target outside M does not count either
    assert torch.equal(defect_loss(changed_pred, changed_noise, mask), base)
    inside = pred.clone()
    inside[~outside] += 0.5
    assert not torch.allclose(defect_loss(inside, noise, mask), base)
    exact_inside = torch.where(outside, pred, noise)  # perfect inside M, garbage outside
    assert float(defect_loss(exact_inside, noise, mask)) == 0.0


def test_object_loss_weight_comes_from_the_defect_mask():
    _, _, mask = _tensors()
    weight = object_loss_weight(mask, 0.3)
    assert torch.equal(weight[mask == 1], torch.ones(int(mask.sum())))
    assert torch.allclose(weight[mask == 0], torch.full((int((mask == 0).sum()),), 0.3))


def test_object_loss_counts_outside_with_alpha_and_inside_fully():
    noise, pred, mask = _tensors()
    outside = mask.expand_as(pred) == 0
    changed = pred.clone()
    changed[outside] += 1.0
    assert not torch.allclose(object_loss(changed, noise, mask, 0.3), object_loss(pred, noise, mask, 0.3))
    assert torch.allclose(object_loss(changed, noise, mask, 0.0), object_loss(pred, noise, mask, 0.0))
    # alpha = 1 is the plain MSE over the whole latent
    assert torch.allclose(object_loss(pred, noise, mask, 1.0), ((pred - noise) ** 2).mean())
    # the defect mask, not some other mask, defines the weight: a different mask gives another loss
    other = torch.zeros_like(mask)
    other[:, :, 0:3, 0:3] = 1
    assert not torch.allclose(object_loss(pred, noise, mask, 0.3), object_loss(pred, noise, other, 0.3))


def test_attention_loss_zero_on_match_and_decreasing_towards_the_mask():
    _, _, mask = _tensors()
    assert float(attention_loss(mask[:, 0].clone(), mask)) == 0.0
    uniform = torch.full_like(mask[:, 0], 0.5)
    losses = [float(attention_loss((1 - w) * uniform + w * mask[:, 0], mask)) for w in (0.0, 0.5, 0.9)]
    assert losses[0] > losses[1] > losses[2] > 0


def test_total_loss_is_the_weighted_sum():
    l_def, l_obj, l_attn = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(4.0)
    weights = LossWeights(0.5, 0.2, 0.05)
    assert torch.allclose(total_loss(l_def, l_obj, l_attn, weights), torch.tensor(0.5 + 0.4 + 0.2))
    assert torch.allclose(total_loss(l_def, l_obj, None, weights), torch.tensor(0.9))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_raises_naming_the_term(bad):
    with pytest.raises(NonFiniteLossError, match="loss_object") as info:
        check_finite({"loss_defect": torch.tensor(1.0), "loss_object": torch.tensor(bad)}, step=7)
    assert isinstance(info.value, DefectfillError)
    assert "step 7" in str(info.value)
    check_finite({"loss": torch.tensor(0.0)})  # finite: no error
