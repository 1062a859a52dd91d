"""Issue 45, item 5: paired intervals on AUROC. The stratified bootstrap replicates every run stores (the same
resamples of the same ID and OOD images) against a resample done by hand and scikit-learn; DeLong's test against
its structural components written out; both validated by simulation under the null and an alternative."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mmix_eval.evaluate.boot import BOOT_RESAMPLES, auroc_replicates, ood_counts, resample_counts, weighted_auroc
from mmix_eval.report import stats


def test_weighted_auroc_is_scikit_learns_on_the_resampled_images():
    rng = np.random.default_rng(0)
    s_in = np.round(rng.normal(1, 1, 40), 1)  # rounded: ties between and within the two sets
    s_out = np.round(rng.normal(0, 1, 30), 1)
    full = weighted_auroc(s_in, s_out, np.ones((40, 1)), np.ones((30, 1)))[0]
    y = np.r_[np.ones(40), np.zeros(30)]
    assert full == pytest.approx(roc_auc_score(y, np.r_[s_in, s_out]), abs=1e-15)
    reps = auroc_replicates(s_in, s_out)
    assert reps.shape == (BOOT_RESAMPLES, 3) and not reps[:, 1:].any()
    c_in, c_out = resample_counts(40), ood_counts(30)
    for r in (0, 7, 499):  # resample r by hand: each image repeated as often as drawn
        xi, xo = np.repeat(s_in, c_in[r].astype(int)), np.repeat(s_out, c_out[r].astype(int))
        by_hand = roc_auc_score(np.r_[np.ones(len(xi)), np.zeros(len(xo))], np.r_[xi, xo]) - full
        assert float(reps[r, 0]) == pytest.approx(by_hand, abs=2e-3)  # float16 storage
    # the same images give the same resamples in every run; a run's replicates are its own
    assert np.array_equal(auroc_replicates(s_in, s_out), reps)
    assert not np.array_equal(ood_counts(40), resample_counts(40))  # ID and OOD not resampled in step


def test_delong_equals_its_structural_components_written_out():
    rng = np.random.default_rng(1)
    a_in, a_out = np.round(rng.normal(1, 1, 25), 1), np.round(rng.normal(0, 1, 20), 1)
    b_in, b_out = a_in + rng.normal(0, 0.5, 25), a_out + rng.normal(0, 0.5, 20)

    def components(x, y):
        psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
        return psi.mean(1), psi.mean(0), psi.mean()

    v10a, v01a, auc_a = components(a_in, a_out)
    v10b, v01b, auc_b = components(b_in, b_out)
    s10 = np.cov(np.stack([v10a, v10b]))
    s01 = np.cov(np.stack([v01a, v01b]))
    cov = s10 / 25 + s01 / 20
    auc, got = stats.delong(np.stack([a_in, b_in]), np.stack([a_out, b_out]))
    np.testing.assert_allclose(auc, [auc_a, auc_b], atol=1e-14)
    np.testing.assert_allclose(got, cov, atol=1e-14)
    diff, se, p = stats.delong_paired(a_in, a_out, b_in, b_out)
    want_se = math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert diff == pytest.approx(auc_a - auc_b) and se == pytest.approx(want_se)
    assert p == pytest.approx(math.erfc(abs(diff / want_se) / math.sqrt(2)))


def _pair(rng, m, n, noise_b):
    common_in, common_out = rng.normal(1.0, 1.0, m), rng.normal(0.0, 1.0, n)
    a = (common_in + rng.normal(0, 0.7, m), common_out + rng.normal(0, 0.7, n))
    b = (common_in + rng.normal(0, noise_b, m), common_out + rng.normal(0, noise_b, n))
    return a, b


@pytest.mark.parametrize("noise_b, lo, hi", [(0.7, 0.015, 0.095), (0.1, 0.6, 1.0)])
def test_the_bootstrap_and_delong_reject_at_the_nominal_rate_under_the_null_and_often_under_an_alternative(
    noise_b, lo, hi
):
    """300 simulated pairs of scorings of the same 150 ID and 150 OOD images. Null: both scorings as good (equal
    noise), so equal true AUROC; a 5 % test should reject about 5 % (here within 1.5-9.5 %, 3.5 simulation standard
    errors). Alternative: the second scoring far less noisy (AUROC about 0.76 against 0.72). The bootstrap's
    standard error agrees with DeLong's to 10 % on average."""
    rng = np.random.default_rng(2 if noise_b == 0.7 else 3)
    rejected_boot = rejected_delong = 0
    ratios = []
    for _ in range(300):
        (a_in, a_out), (b_in, b_out) = _pair(rng, 150, 150, noise_b)
        diff, se, p = stats.delong_paired(a_in, a_out, b_in, b_out)
        reps = auroc_replicates(a_in, a_out)[:, 0].astype(np.float64) - auroc_replicates(b_in, b_out)[:, 0]
        _, _, _, p_boot = stats.replicate_z(diff, reps[None, :])
        rejected_delong += p < 0.05
        rejected_boot += p_boot < 0.05
        ratios.append(np.std(reps, ddof=1) / se)
    assert lo <= rejected_delong / 300 <= hi
    assert lo <= rejected_boot / 300 <= hi
    assert 0.9 <= float(np.mean(ratios)) <= 1.1


def _experiment(rng, effect, k=3, m=150, n=150):
    """One experiment of k seed pairs on shared images: each network adds its own shift (a seed effect) and noise
    to the images' common scores; method a's networks separate by ``effect`` more. The method claim's p."""
    base_in, base_out = rng.normal(1, 1, m), rng.normal(0, 1, n)
    diffs, reps = [], []
    for _ in range(k):
        runs = []
        for extra in (effect, 0.0):
            a_in = base_in + rng.normal(0, 0.15) + extra + rng.normal(0, 0.6, m)
            runs.append((a_in, base_out + rng.normal(0, 0.6, n)))
        full = [weighted_auroc(a, b, np.ones((m, 1)), np.ones((n, 1)))[0] for a, b in runs]
        diffs.append(full[0] - full[1])
        reps.append(auroc_replicates(*runs[0])[:, 0].astype(np.float64) - auroc_replicates(*runs[1])[:, 0])
    return stats.method_test(diffs, *stats.replicate_terms(np.stack(reps)), images=m).p


@pytest.mark.parametrize("effect, lo, hi", [(0.0, 0.015, 0.095), (0.3, 0.15, 0.45)])
def test_method_claims_on_auroc_keep_their_level_with_seed_effects(effect, lo, hi):
    """The method claim on AUROC (3 seed pairs, the replicates' image term): 300 simulated experiments with a
    seed effect and shared images. Null: rejected 4.7 % at α = 0.05 when measured (bounds ±3.5 simulation SE);
    an effect of 0.3 in the ID scores' shift: 24 %."""
    rng = np.random.default_rng(7 if effect == 0.0 else 8)
    rate = np.mean([_experiment(rng, effect) < 0.05 for _ in range(300)])
    assert lo <= rate <= hi


def test_no_images_on_either_side_give_zero_replicates_not_an_error():
    empty = np.zeros(0)
    for a, b in ((empty, np.arange(5.0)), (np.arange(5.0), empty)):
        reps = auroc_replicates(a, b)
        assert reps.shape == (BOOT_RESAMPLES, 3) and not reps.any()
