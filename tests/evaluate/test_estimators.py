"""The calibration estimators against independent computations: netcal, plain loops, hand-made cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from helpers.references import netcal_ece_mce

from mmix_eval.evaluate.metrics import classwise_ece, equal_mass_ece, probability_scores, selective_risks


def scores(n=1000, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, classes)) * 2.5
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(classes, p=row) for row in (0.6 * p + 0.4 / classes)])  # a miscalibrated model
    return logits, p, y


def loop_ece(values, hits, edges) -> float:
    """The binned calibration error written out bin by bin: [a, b), the last bin [a, 1]."""
    total = 0.0
    for b in range(len(edges) - 1):
        last = b == len(edges) - 2
        inside = (values >= edges[b]) & ((values <= edges[b + 1]) if last else (values < edges[b + 1]))
        if inside.any():
            total += inside.sum() * abs(hits[inside].mean() - values[inside].mean())
    return total / len(values)


@pytest.mark.parametrize("bins", [5, 10, 15, 20])
def test_equal_mass_ece_equals_netcal_and_a_plain_loop(bins):
    from netcal.metrics import ECE

    _, p, y = scores()
    conf, correct = p.max(1), (p.argmax(1) == y).astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ECE(bins=bins, equal_intervals=False).measure(conf, correct)
    edges = np.quantile(conf, np.linspace(0, 1, bins + 1))
    edges[0], edges[-1] = 0.0, 1.0
    got = equal_mass_ece(conf, correct, bins)
    assert got == pytest.approx(ref, abs=1e-12) and got == pytest.approx(loop_ece(conf, correct, edges), abs=1e-12)
    assert got != pytest.approx(netcal_ece_mce(conf, correct, bins)[0], abs=1e-4)  # not the equal-width one


def test_classwise_ece_equals_a_loop_over_classes_and_a_hand_case():
    _, p, y = scores(classes=4)
    edges = np.linspace(0, 1, 11)
    ref = np.mean([loop_ece(p[:, k], (y == k).astype(float), edges) for k in range(4)])
    assert classwise_ece(p, y, 10) == pytest.approx(ref, abs=1e-12)
    # Two images, two classes, two bins: class 0 sees p = 0.8 (label 0) and 0.3 (label 1) -> bins [0, .5), [.5, 1]:
    # |0 - 0.3| / 2 + |1 - 0.8| / 2 = 0.25; class 1 sees 0.2 (label 0) and 0.7 (label 1): 0.2/2 + 0.3/2 = 0.25.
    hand = np.array([[0.8, 0.2], [0.3, 0.7]])
    assert classwise_ece(hand, np.array([0, 1]), 2) == pytest.approx(0.25, abs=1e-15)


def test_signed_error_aurc_and_risk_at_coverage_by_hand():
    conf = np.array([0.9, 0.8, 0.7, 0.6])
    correct = np.array([1, 0, 1, 0])
    r = selective_risks(conf, correct)
    # The k most confident, k = 1..4: 0 errors of 1, 1 of 2, 1 of 3, 2 of 4.
    assert r["aurc"] == pytest.approx((0 + 1 / 2 + 1 / 3 + 2 / 4) / 4, abs=1e-15)
    assert r["risk80"] == pytest.approx(0.5) and r["risk90"] == pytest.approx(0.5)  # ceil(3.2) = ceil(3.6) = 4
    ten = selective_risks(np.linspace(1.0, 0.1, 10), np.array([1] * 7 + [0] * 3))
    assert ten["risk80"] == pytest.approx(1 / 8) and ten["risk90"] == pytest.approx(2 / 9)
    assert ten["aurc"] == pytest.approx(np.mean([0] * 7 + [1 / 8, 2 / 9, 3 / 10]))
    logits = torch.log(torch.tensor([[0.9, 0.1], [0.4, 0.6]], dtype=torch.float64))
    s = probability_scores(logits, torch.tensor([0, 0]), 10)  # confidences 0.9 and 0.6, one right: 0.75 − 0.5
    assert s["signed_ce"] == pytest.approx(0.25, abs=1e-12)


def test_aurc_equals_the_area_under_an_independently_drawn_risk_coverage_curve():
    _, p, y = scores(n=300, seed=3)
    conf, correct = p.max(1), (p.argmax(1) == y)
    risks = []
    for k in range(1, len(conf) + 1):  # the k most confident by a full sort, not a running sum
        top = sorted(range(len(conf)), key=lambda i: -conf[i])[:k]
        risks.append(1 - correct[top].mean())
    assert selective_risks(conf, correct.astype(np.int64))["aurc"] == pytest.approx(np.mean(risks), abs=1e-12)


def test_probability_scores_of_an_empty_condition_are_nan_not_an_error():
    s = probability_scores(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64), 15)
    assert all(math.isnan(s[k]) for k in ("ece_em", "cw_ece", "signed_ce", "aurc", "risk80"))


def _calibrated(rng, n, a, b, shift=0.0, classes=10):
    """Top-label confidences c ~ 0.1 + 0.9 Beta(a, b) of a 10-class model, right with probability c + shift."""
    c = 0.1 + 0.9 * rng.beta(a, b, n)
    right = rng.random(n) < np.clip(c + shift, 0, 1)
    p = np.repeat(((1 - c) / (classes - 1))[:, None], classes, 1)
    p[:, 0] = c
    labels = np.where(right, 0, rng.integers(1, classes, n))
    return c, right, p, labels


@pytest.mark.parametrize(
    "n, a, b, shift", [(40, 1, 1, 0.0), (300, 2, 2, 0.0), (2000, 5, 1, 0.05), (10000, 8, 1, -0.1), (500, 1, 1, 0.2)]
)
def test_debiased_calibration_error_equals_kumar_et_als_reference(n, a, b, shift):
    calibration = pytest.importorskip("calibration")  # uncertainty-calibration, the paper's own package
    from mmix_eval.evaluate.metrics import debiased_l2_ce

    c, right, p, labels = _calibrated(np.random.default_rng(n), n, a, b, shift)
    want = calibration.get_calibration_error(p, labels, p=2, debias=True, mode="top-label")
    assert debiased_l2_ce(c, right, 15) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize(
    "n, a, b, shift", [(300, 2, 2, 0.0), (2000, 5, 1, 0.05), (10000, 8, 1, -0.1), (500, 1, 1, 0.2)]
)
def test_smooth_ece_equals_relplot(n, a, b, shift):
    """relplot discretises the kernel and finds the bandwidth to 1/1024; ours bisects to 1e-5: equal to 1e-3."""
    relplot = pytest.importorskip("relplot")
    from mmix_eval.evaluate.metrics import smooth_ece

    c, right, _, _ = _calibrated(np.random.default_rng(n + 1), n, a, b, shift)
    assert smooth_ece(c, right) == pytest.approx(relplot.smECE(c, right.astype(int)), abs=1e-3)


def test_unlike_the_binned_ece_the_debiased_estimators_barely_see_sharpness():
    """Two perfectly calibrated models, one flat and one sharp, 300 images, 200 draws: the binned ECE tells them
    apart by its own bias (the flat model's is larger); the debiased error is near 0 for both on average."""
    from mmix_eval.evaluate.metrics import binned_error, debiased_l2_ce

    rng = np.random.default_rng(0)
    edges = np.linspace(0, 1, 16)
    ece, deb = {"flat": [], "sharp": []}, {"flat": [], "sharp": []}
    for _ in range(200):
        for name, (a, b) in (("flat", (2, 2)), ("sharp", (5, 1))):
            c, right, _, _ = _calibrated(rng, 300, a, b)
            ece[name].append(binned_error(c, right, edges))
            deb[name].append(debiased_l2_ce(c, right, 15) ** 2)
    assert np.mean(ece["flat"]) - np.mean(ece["sharp"]) > 0.01  # the bias differs by model
    assert abs(np.mean(deb["flat"]) - np.mean(deb["sharp"])) < 0.001  # squared, debiased: ~0 both
