"""Issue 41: the procedures behind method and network claims, each against an independent computation (a plain
ANOVA, a brute-force enumeration, scipy's tests, a published power table) on hand-sized examples."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from mmix_eval.report import stats


def test_without_image_terms_the_method_test_is_the_paired_t_test():
    a, b = [91.0, 92.5, 90.0], [89.0, 90.0, 89.5]
    got = stats.method_test([x - y for x, y in zip(a, b)])
    ref = sps.ttest_rel(a, b)
    ci = ref.confidence_interval(0.95)
    assert got.p == pytest.approx(ref.pvalue, rel=1e-12)
    assert (got.low, got.high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert got.df == 2 and got.pairs == 3 and got.image_var == 0.0


def test_the_image_term_is_the_crossed_anova_estimate():
    """se**2 = (MS_seed + max(MS_image - MS_residual, 0)) / (k N), computed here from the two-way ANOVA table."""
    rng = np.random.default_rng(3)
    k, n = 4, 50
    d = rng.normal(0.2, 1.0, (k, n)) + rng.normal(0, 0.5, (k, 1)) + rng.normal(0, 0.8, (1, n))
    grand, rows, cols = d.mean(), d.mean(1), d.mean(0)
    ms_a = n * ((rows - grand) ** 2).sum() / (k - 1)
    ms_b = k * ((cols - grand) ** 2).sum() / (n - 1)
    resid = d - rows[:, None] - cols[None, :] + grand
    ms_e = (resid**2).sum() / ((k - 1) * (n - 1))
    want = math.sqrt((ms_a + max(ms_b - ms_e, 0.0)) / (k * n))
    got = stats.method_test(list(d.mean(1)), *stats.image_terms(d), images=n)
    assert got.se == pytest.approx(want, rel=1e-10)
    t = sps.t.ppf(0.975, k - 1)
    assert (got.low, got.high) == pytest.approx((grand - t * want, grand + t * want), rel=1e-10)
    # the image term is what widens it beyond the paired t-test over seeds
    assert got.se > stats.method_test(list(d.mean(1))).se


def test_replicate_terms_match_the_image_terms_they_resample():
    """Bootstrap replicates of each pair's mean difference (shared resamples) estimate the same two variances."""
    rng = np.random.default_rng(0)
    k, n, r = 3, 400, 4000
    d = rng.normal(0, 1, (k, n)) + rng.normal(0, 0.7, (1, n))
    idx = rng.integers(0, n, (r, n))
    reps = np.stack([d[s][idx].mean(1) for s in range(k)])  # (k, R), resample r shared by every pair
    v_img, v_pairs = stats.replicate_terms(reps)
    w_img, w_pairs = stats.image_terms(d)
    assert v_img == pytest.approx(w_img, rel=0.08) and v_pairs == pytest.approx(w_pairs, rel=0.08)


def _brute_sign_flip(d):
    t = abs(sum(d))
    hits = sum(abs(sum(s * x for s, x in zip(signs, d))) >= t for signs in itertools.product((-1, 1), repeat=len(d)))
    return hits / 2 ** len(d)


@pytest.mark.parametrize(
    "d", [[3, 1, 1, -1, 2, 0, 1], [1, 1, 1, 1, 1, -1], [2, -2, 2, 2, 0, -1, 3, 1, 1, 2, -3, 2], [0, 0, 0], [5, -5]]
)
def test_sign_flip_is_exact(d):
    assert stats.sign_flip_exact(np.array(d)) == pytest.approx(_brute_sign_flip(d), abs=1e-12)


def test_sign_flip_with_one_seed_pair_is_mcnemars_exact_test():
    d = np.array([1] * 17 + [-1] * 2 + [0] * 50)
    assert stats.sign_flip_exact(d) == pytest.approx(stats.mcnemar_exact(17, 2), rel=1e-9)


def test_the_digits_example_of_the_issue():
    """b = 2, c = 17 discordances from only 10 distinct images over 5 seed pairs: McNemar on the pooled counts says
    p = 0.00073; the images are the unit, so the sign-flip test on their summed discordance says far less."""
    pooled = stats.mcnemar_exact(2, 17)
    assert pooled == pytest.approx(0.00073, abs=5e-5)
    d = np.array([-3, -3, -3, -2, -2, -2, -1, -1, 1, 1])  # 10 images: 17 to the baseline, 2 to the method
    assert d[d < 0].sum() == -17 and d[d > 0].sum() == 2
    assert stats.sign_flip_exact(d) > 0.02


def test_seeds_for_power_matches_the_one_sample_t_table():
    """Cohen's d = 1 at alpha 0.05 two-sided needs n = 10 for 80 % power (0.803); 0.5 needs 34."""
    assert stats.seeds_for_power(1.0, 1.0, 0.0) == 10
    assert stats.seeds_for_power(0.5, 1.0, 0.0) == 34
    # an image term as large as the effect can never be averaged away by seeds
    assert stats.seeds_for_power(1.0, 1.0, 1.0) is None


def test_seeds_for_power_at_a_family_level_by_simulation():
    """At alpha = 0.01 (a family's Bonferroni level) d = 1 needs 16 (power 0.7995 at 15): simulated t-tests reach 80 %
    at 16, not at 14."""
    assert stats.seeds_for_power(1.0, 1.0, 0.0, alpha=0.01) == 16
    rng = np.random.default_rng(0)
    for n, reached in ((14, False), (16, True)):
        x = rng.normal(1.0, 1.0, (40000, n))
        t = x.mean(1) / (x.std(1, ddof=1) / math.sqrt(n))
        assert bool(np.mean(np.abs(t) > sps.t.ppf(0.995, n - 1)) >= 0.8) == reached


def test_multiplicity_adjustments_by_hand():
    ps = [0.01, 0.04, 0.03, 0.005]
    assert stats.adjust(ps, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert stats.adjust(ps, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: sorted 0.005, 0.01, 0.03, 0.04 -> 4p/rank = 0.02, 0.02, 0.04, 0.04 (then the running minimum from the top)
    assert stats.adjust(ps, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert stats.adjust(ps, "none") == ps
    with pytest.raises(ValueError, match="multiplicity: expected one of holm, bonferroni, bh, none"):
        stats.adjust(ps, "sidak")
