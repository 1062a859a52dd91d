"""Split conformal sets (THR, APS, RAPS): the scores and sets against torch-uncertainty's for the same threshold, the
finite-sample threshold by hand and against numpy's quantile rule, the coverage guarantee by simulation (holds
under exchangeability, fails under a shift), and the rows every condition records."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, ClassifierMixin

from mmix_eval.evaluate.conformal import (
    METHODS,
    fit_thresholds,
    nonconformity,
    prediction_sets,
    threshold,
    uniforms,
)


def logits(n=300, c=6, seed=0, margin=1.5, noise=1.0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    z = noise * torch.randn(n, c, generator=g, dtype=torch.float64)
    z[torch.arange(n), y] += margin
    return z, y


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("method", METHODS)
def test_scores_and_sets_equal_torch_uncertainty_for_the_same_threshold(method):
    from torch_uncertainty.post_processing import ConformalClsAPS, ConformalClsRAPS, ConformalClsTHR

    z, y = logits(seed=1)
    cls = {"thr": ConformalClsTHR, "aps": ConformalClsAPS, "raps": ConformalClsRAPS}[method]
    kwargs = {} if method == "thr" else {"randomized": False}
    tu = cls(alpha=0.1, model=torch.nn.Identity(), enable_ts=False, **kwargs)
    p = torch.softmax(z, 1)
    if method != "thr":  # the label scores themselves
        ref = tu._calculate_all_labels(p)
        np.testing.assert_allclose(nonconformity(p, method).numpy(), ref.numpy(), atol=1e-12)
        own = tu._calculate_single_label(p, y)
        np.testing.assert_allclose(
            nonconformity(p, method).gather(1, y.view(-1, 1)).squeeze(1).numpy(), own, atol=1e-12
        )
    for q in (0.3, 0.6, 0.9, 1.05):
        tu.q_hat = torch.tensor(q, dtype=torch.float64)
        with torch.no_grad():
            theirs = tu(z) > 0
        ours = prediction_sets(p, q, method)
        assert torch.equal(ours, theirs), (method, q)


def test_the_randomised_aps_and_raps_scores_by_hand():
    """p = (0.5, 0.3, 0.2), U = 0.25: APS cumulative masses 0.5, 0.8, 1.0 less U · p: 0.375, 0.725, 0.95; RAPS adds
    0.1 · max(0, rank − 1): 0.375, 0.825, 1.15. Without U (torch-uncertainty's randomized=False) the masses."""
    p = torch.tensor([[0.3, 0.5, 0.2]], dtype=torch.float64)
    u = torch.tensor([0.25], dtype=torch.float64)
    assert nonconformity(p, "aps", u)[0].tolist() == pytest.approx([0.725, 0.375, 0.95])
    assert nonconformity(p, "raps", u)[0].tolist() == pytest.approx([0.825, 0.375, 1.15])
    assert nonconformity(p, "aps")[0].tolist() == pytest.approx([0.8, 0.5, 1.0])
    # the same image position gets the same draw, whatever the number of images
    assert torch.equal(uniforms(5, 3), uniforms(9, 3)[:5]) and not torch.equal(uniforms(5, 3), uniforms(5, 4))


def test_the_threshold_is_the_finite_sample_rank_by_hand_and_numpys_inverted_cdf_quantile():
    s = torch.arange(1, 20, dtype=torch.float64) / 20  # 19 scores 0.05 .. 0.95
    # ⌈(19 + 1) · 0.9⌉ = 18: the 18th smallest, 0.90
    assert threshold(s, 0.1) == pytest.approx(0.90)
    # ⌈10 · 0.9⌉ = 9 of 9: the largest; ⌈6 · 0.9⌉ = 6 > 5: no finite threshold
    assert threshold(s[:9], 0.1) == pytest.approx(0.45) and threshold(s[:5], 0.1) == math.inf
    rng = np.random.default_rng(0)
    for n in (7, 50, 333):
        for alpha in (0.05, 0.1, 0.2):
            x = rng.random(n)
            level = math.ceil((n + 1) * (1 - alpha)) / n
            if level <= 1:
                assert threshold(torch.from_numpy(x), alpha) == np.quantile(x, level, method="inverted_cdf")


def test_too_few_held_out_images_give_every_class_and_say_so():
    z, y = logits(n=5, seed=2)
    t = fit_thresholds(torch.softmax(z, 1), y, 0.1)
    assert all(math.isinf(q) for q in t.q.values()) and "too few" in t.settings["conformal_note"]
    assert prediction_sets(torch.softmax(z, 1), t.q["aps"], "aps").all()


def coverage(alpha, reps, shift=1.0, n=200, seed=0):
    """Mean coverage of THR, APS and RAPS over ``reps`` draws of a held-out and a test set of n images each; the
    test images' logits ``shift`` times noisier than the held-out ones (1: exchangeable)."""
    got = {m: [] for m in METHODS}
    for r in range(reps):
        zc, yc = logits(n=n, seed=seed + 2 * r)
        zt, yt = logits(n=n, seed=seed + 2 * r + 1, noise=shift)
        t = fit_thresholds(torch.softmax(zc, 1), yc, alpha, seed=seed + r)
        pt, u = torch.softmax(zt, 1), uniforms(n, seed + r + 1)
        for m in METHODS:
            got[m].append(float(prediction_sets(pt, t.q[m], m, u).gather(1, yt.view(-1, 1)).double().mean()))
    return {m: float(np.mean(v)) for m, v in got.items()}


def test_coverage_holds_under_exchangeability_and_fails_under_a_shift_by_simulation():
    """Null: held-out and test images exchangeable: mean coverage in [1 − α, 1 − α + 1/(n + 1)] (the theorem, for
    continuous scores: THR's, and APS / RAPS's with their uniform draws; ± 4 standard errors of the simulation,
    ≈ 0.0015 each). Alternative: test logits 2.5 times as noisy: coverage falls."""
    alpha, n = 0.1, 200
    null = coverage(alpha, 300, n=n)
    for m, c in null.items():
        assert 1 - alpha - 0.006 <= c <= 1 - alpha + 1 / (n + 1) + 0.006, (m, c)
    shifted = coverage(alpha, 40, shift=2.5, n=n, seed=10_000)
    assert all(c < 1 - alpha - 0.05 for c in shifted.values()), shifted


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_every_condition_records_coverage_and_set_size_raw_and_per_calibrator():
    from conftest import make_data

    from mmix_eval.evaluate.base import CONFORMAL_METRICS, EvalOptions, run_evaluator
    from mmix_eval.evaluate.evaluators.deformations.evaluator import Deformations
    from mmix_eval.evaluate.target import target_from_module

    torch.manual_seed(0)
    d = make_data(n_train=0, n_test=60, classes=4, size=8, seed=0)
    held = make_data(n_train=0, n_test=80, classes=4, size=8, seed=1).test
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4)).eval()
    t = target_from_module(model, d.test.x.float() / 255, d.test.y, val=(held.x.float() / 255, held.y))
    common = EvalOptions(device=None, progress=False, calibrator="temperature,isotonic", conformal_alpha=0.2)
    rows = run_evaluator(Deformations(), t, {}, common)
    for cond in {r["condition"] for r in rows}:
        for cal in ("none", "temperature", "isotonic"):
            got = {r["metric"]: r for r in rows if r["condition"] == cond and r["calibrator"] == cal}
            assert set(CONFORMAL_METRICS) <= set(got), (cond, cal)
            assert got["coverage_aps"]["settings"]["conformal_alpha"] == 0.2
            assert got["coverage_aps"]["settings"]["conformal_fit_images"] == 80
    # the clean condition's raw THR coverage and size, computed here from the same logits and held-out images
    with torch.no_grad():
        pv, pt = torch.softmax(model(t.val.x).double(), 1), torch.softmax(model(t.test.x).double(), 1)
    q = threshold(1 - pv.gather(1, t.val.y.view(-1, 1)).squeeze(1), 0.2)
    sets = prediction_sets(pt, q, "thr")
    clean = {r["metric"]: r["value"] for r in rows if r["condition"] == "clean" and r["calibrator"] == "none"}
    assert clean["coverage_thr"] == pytest.approx(100 * sets[torch.arange(60), t.test.y].double().mean().item())
    assert clean["set_size_thr"] == pytest.approx(sets.sum(1).double().mean().item())
    none = EvalOptions(device=None, progress=False)  # conformal sets are asked for: none by default
    t2 = target_from_module(model, d.test.x.float() / 255, d.test.y, val=(held.x.float() / 255, held.y))
    assert not {r["metric"] for r in run_evaluator(Deformations(), t2, {}, none)} & set(CONFORMAL_METRICS)


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, True, "0.1"])
def test_a_bad_alpha_is_one_line_naming_it(bad):
    from conftest import raises_as_shown

    from mmix_eval.evaluate.base import EvalOptions, OptionError

    with raises_as_shown(OptionError, match=re.escape("--conformal-alpha: expected a number in (0, 1) or none")):
        EvalOptions(conformal_alpha=bad)


class Given(ClassifierMixin, BaseEstimator):
    """A fitted scikit-learn classifier whose inputs are its own predicted probabilities (MAPIE calibrates a model:
    this one returns the probabilities under test)."""

    def fit(self, x, y):
        self.classes_ = np.arange(np.asarray(x).shape[1])
        self.n_features_in_ = len(self.classes_)
        return self

    def predict_proba(self, x):
        return np.asarray(x)

    def predict(self, x):
        return np.asarray(x).argmax(1)


@pytest.mark.filterwarnings("ignore")
def test_thr_sets_and_threshold_and_the_randomised_aps_scores_equal_mapie():
    """MAPIE's split conformal classifier on the same probabilities: LAC (THR) threshold and sets equal (its quantile
    rule is the finite-sample one); its randomised APS scores of the held-out labels equal ours for the same U
    (MAPIE draws U per image from its random_state, as here)."""
    from mapie.classification import SplitConformalClassifier

    z, y = logits(n=300, seed=20)
    zt, _ = logits(n=400, seed=21)
    p, pt = torch.softmax(z, 1), torch.softmax(zt, 1)
    est = Given().fit(p.numpy(), y.numpy())
    lac = SplitConformalClassifier(estimator=est, confidence_level=0.9, conformity_score="lac", prefit=True)
    lac.conformalize(p.numpy(), y.numpy())
    _, sets = lac.predict_set(pt.numpy())
    t = fit_thresholds(p, y, 0.1, seed=None)
    assert t.q["thr"] == pytest.approx(float(lac._mapie_classifier.conformity_score_function_.quantiles_[0]), abs=1e-15)
    assert np.array_equal(prediction_sets(pt, t.q["thr"], "thr").numpy(), sets[:, :, 0])
    aps = SplitConformalClassifier(
        estimator=est, confidence_level=0.9, conformity_score="aps", prefit=True, random_state=7
    )
    aps.conformalize(p.numpy(), y.numpy())
    u = torch.from_numpy(np.random.RandomState(7).uniform(size=len(y)))
    ours = nonconformity(p, "aps", u).gather(1, y.view(-1, 1)).squeeze(1).numpy()
    np.testing.assert_allclose(ours, aps._mapie_classifier.conformity_scores_.ravel(), atol=1e-15)


def test_an_image_with_nan_probabilities_gets_an_empty_set_and_an_empty_condition_nan_rows():
    """A model's NaN under a shift: that image is not covered (an empty set), the others are as before; a condition
    with no image records NaN coverage and size rather than failing."""
    from mmix_eval.evaluate.conformal import conformal_values

    z, y = logits(n=50, seed=30)
    t = fit_thresholds(torch.softmax(z, 1), y, 0.1, seed=0)
    zt, yt = logits(n=20, seed=31)
    p = torch.softmax(zt, 1)
    p[4] = float("nan")
    for m in METHODS:
        sets = prediction_sets(p, t.q[m], m, uniforms(20, 1))
        assert not sets[4].any() and sets[torch.arange(20) != 4].any(dim=1).all(), m
    got = conformal_values(p, yt, t)
    clean = conformal_values(torch.softmax(zt, 1), yt, t)
    covered = prediction_sets(torch.softmax(zt, 1), t.q["thr"], "thr")[4, yt[4]]
    assert got["coverage_thr"] == pytest.approx(clean["coverage_thr"] - 100 / 20 * float(covered))
    empty = conformal_values(torch.zeros(0, 6, dtype=torch.float64), torch.zeros(0, dtype=torch.long), t)
    assert all(math.isnan(v) for v in empty.values()) and len(empty) == 6
