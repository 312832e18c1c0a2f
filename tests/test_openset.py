"""DFC's open-set layer on synthetic logit vectors with known answers, and the open-set metrics."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from defectfill.errors import ModelError
from gan_baselines.dgt.config import OpenMaxConfig
from gan_baselines.dgt.openset import WeibullOpenSet, choose_threshold, max_softmax_score, openset_metrics


def clusters(n: int = 200, seed: int = 0):
    """Three known classes: logits μ_c = 8·e_c plus N(0, 0.5²) noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat_interleave(n)
    logits = 8.0 * torch.nn.functional.one_hot(labels, 3).float() + 0.5 * torch.randn(3 * n, 3, generator=g)
    return logits, labels


@functools.cache
def fitted() -> WeibullOpenSet:
    logits, labels = clusters()
    return WeibullOpenSet(OpenMaxConfig(tailsize=20, alpha=1, euclid_weight=1.0, fit_on="correct")).fit(logits, labels)


def test_weibull_fit_transforms_its_own_tail_to_uniform():
    """The probability-integral transform of the fitted tail by the fitted CDF is ~uniform."""
    logits, labels = clusters()
    openset = fitted()
    for c in range(3):
        d = np.linalg.norm(logits[labels == c].numpy() - openset.center(c), axis=1)
        np.testing.assert_allclose(openset.center(c), 8.0 * np.eye(3)[c], atol=0.1)  # the class mean
        tail = np.sort(d)[-20:]
        w = openset.w_score(c, tail)
        assert np.all(np.diff(w) >= 0)                            # a CDF: monotone in distance
        uniform = (np.arange(20) + 0.5) / 20
        assert np.max(np.abs(w - uniform)) < 0.3                  # KS distance of the PIT
        assert openset.w_score(c, np.array([0.0]))[0] < 0.01      # the class centre: not an outlier
        assert openset.w_score(c, np.array([tail[-1] + 5]))[0] > 1 - 1e-6


def test_recalibration_matches_the_openmax_equations():
    """OpenMax: the top-alpha logits v_r (rank r) become v_r·(1 − w_r·W(d_r)) with w_r = (alpha + 1 − r)/alpha,
    the removed mass is the unknown logit, P(unknown) is its softmax."""
    openset = fitted()
    # at the class centre W is small: the top logit keeps most of its value
    x = np.array([8.0, 0.0, 0.0])
    w = openset.w_score(0, np.linalg.norm(x - openset.center(0), keepdims=True))[0]
    assert w < 0.01
    expected = math.exp(8 * w) / (math.exp(8 * w) + math.exp(8 * (1 - w)) + 2)
    assert openset.unknown_score(torch.from_numpy(x).float()[None]).item() == pytest.approx(expected, rel=1e-4)
    # far from every centre W = 1 (alpha = 1: the top class only): v = [3, 1, 0] -> [v0 = 3, 0, 1, 0]
    x = torch.tensor([[3.0, 1.0, 0.0]])
    expected = math.exp(3) / (math.exp(3) + 1 + math.exp(1) + 1)
    assert openset.unknown_score(x).item() == pytest.approx(expected, rel=1e-4)
    # the score of a sample does not depend on the rest of the batch
    batch = torch.cat([x, torch.tensor([[0.0, 8.0, 0.0], [0.0, 0.0, 8.0]])])
    assert openset.unknown_score(batch)[0].item() == pytest.approx(expected, rel=1e-6)


def test_alpha_above_one_is_refused_because_pytorch_ood_scores_depend_on_the_batch():
    from pytorch_ood.detector import OpenMax

    logits, labels = clusters()
    detector = OpenMax(None, tailsize=20, alpha=2).fit_logits(logits, labels)
    x = torch.tensor([[3.0, 1.0, 0.0]])
    alone = detector.predict_logits(x)[0].item()
    with_class_1 = detector.predict_logits(torch.cat([x, torch.tensor([[0.0, 8.0, 0.0]])]))[0].item()
    assert alone != pytest.approx(with_class_1, rel=1e-3)   # the library's behaviour we guard against
    with pytest.raises(ModelError, match="alpha"):
        WeibullOpenSet(OpenMaxConfig(alpha=2))


def test_overconfident_unknowns_caught_by_openmax_missed_by_max_softmax():
    openset = fitted()
    g = torch.Generator().manual_seed(1)
    known = clusters(50, seed=2)[0]
    unknown = torch.tensor([14.0, 0.0, 0.0]) + 0.5 * torch.randn(50, 3, generator=g)  # beyond class 0
    x = torch.cat([known, unknown])
    is_unknown = np.r_[np.zeros(50 * 3), np.ones(50)].astype(int)
    from osr_metrics import auroc

    assert auroc(openset.unknown_score(x).numpy(), is_unknown) > 0.99
    assert auroc(max_softmax_score(x).numpy(), is_unknown) < 0.5


def test_fit_on_correct_drops_misclassified_samples():
    logits, labels = clusters()
    logits[:10] = torch.tensor([0.0, 8.0, 0.0])  # ten class-0 samples the classifier calls class 1
    correct = WeibullOpenSet(OpenMaxConfig(tailsize=20, fit_on="correct")).fit(logits, labels)
    everything = WeibullOpenSet(OpenMaxConfig(tailsize=20, fit_on="all")).fit(logits, labels)
    assert len(correct.fit_labels) == len(labels) - 10 and len(everything.fit_labels) == len(labels)
    assert np.linalg.norm(correct.center(0) - [8, 0, 0]) < np.linalg.norm(everything.center(0) - [8, 0, 0])
    with pytest.raises(ModelError, match="fit_on"):
        WeibullOpenSet(OpenMaxConfig(fit_on="some"))


def test_save_load_refits_the_same_weibulls(tmp_path):
    openset = WeibullOpenSet(OpenMaxConfig(tailsize=20), threshold=0.37).fit(*clusters())
    openset.save(tmp_path)
    loaded = WeibullOpenSet.load(tmp_path)
    x = torch.randn(20, 3) * 5
    assert torch.equal(openset.unknown_score(x), loaded.unknown_score(x))
    assert loaded.threshold == 0.37 and loaded.config.fit_on == "correct"


def test_openset_metrics_on_a_hand_computed_example():
    # 4 known (true 0,0,1,1; predicted 0,1,1,1) and 2 unknown samples
    closed = np.array([0, 1, 1, 1, 0, 1])
    true = np.array([0, 0, 1, 1, -1, -1])
    is_unknown = np.array([0, 0, 0, 0, 1, 1], bool)
    score = np.array([0.1, 0.2, 0.3, 0.6, 0.5, 0.9])
    m = openset_metrics(closed, true, is_unknown, score, threshold=0.55)
    assert m["closed_set_accuracy"] == pytest.approx(0.75)
    assert m["auroc"] == pytest.approx(7 / 8)
    assert m["oscr"] == pytest.approx(0.625)        # CCR 0.5 up to FPR 0.5, then 0.75
    assert m["open_macro_f1"] == pytest.approx(0.5)  # every class: one TP, one FP, one FN


def test_choose_threshold_accepts_the_target_share_of_known_regions():
    scores = np.linspace(0, 1, 101)
    t = choose_threshold(scores, 0.95)
    assert np.mean(scores <= t) == pytest.approx(0.95, abs=0.01)
