"""Paired statistics for a method against a baseline. Imports no torch.

Over seeds: a two-sided 95 % t interval over the per-seed differences (pairs share the training seed and
the evaluated images). Over images: the per-image outcomes of both methods on the very same test images
give a paired bootstrap interval of the accuracy difference and McNemar's exact test, so a comparison
with one seed per method still has an honest interval.
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # fixed: the same records give the same interval, byte for byte


@functools.cache
def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (cached: scipy's ppf costs ms a call)."""
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def t_interval(diffs: list[float]) -> tuple[float, float | None]:
    """(mean, 95 % half-width or None with one pair); (NaN, None) when a difference is not finite."""
    if not all(math.isfinite(d) for d in diffs):
        return math.nan, None
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, None
    return mean, t_quantile(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: b = images only the method gets right, c = only the baseline.
    Under the null each discordant image is a fair coin: p = min(1, 2 · P(X ≤ min(b, c))), X ~ Bin(b + c, ½)."""
    n = b + c
    if n == 0:
        return 1.0
    from scipy.stats import binom

    return float(min(1.0, 2.0 * binom.cdf(min(b, c), n, 0.5)))


def paired_image_bootstrap(
    method: np.ndarray, baseline: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float, float]:
    """Accuracy difference (percentage points) of ``method`` − ``baseline`` and its 95 % percentile
    bootstrap interval, resampling test images with replacement. Both arrays are (seeds, images) bools of
    the same images; a resampled image brings all its seed pairs along.

    Resampling N images with replacement is the same as drawing how many times each distinct per-image
    difference occurs, Multinomial(N, observed shares): that is what is drawn here (exact, and cheap for
    any N, since a per-image difference averaged over k seeds takes at most 2k + 1 values)."""
    d = (method.astype(np.int64) - baseline.astype(np.int64)).sum(0)  # per image, summed over seeds
    k, n = method.shape
    values, counts = np.unique(d, return_counts=True)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, counts / n, size=resamples)  # (resamples, distinct values)
    means = draws @ values.astype(np.float64) / (n * k) * 100.0
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(d.sum() / (n * k) * 100.0), float(lo), float(hi)


Z975 = 1.959963984540054  # the 0.975 quantile of the standard normal


def normal_p(z: float) -> float:
    """Two-sided p of a standard-normal statistic: 2 · P(Z > |z|) (``math.erfc``, no scipy)."""
    return float(math.erfc(abs(z) / math.sqrt(2.0)))


def discordant(method: np.ndarray, baseline: np.ndarray) -> tuple[int, int]:
    """(b, c) summed over seed pairs: images the method alone gets right, the baseline alone."""
    return int((method & ~baseline).sum()), int((~method & baseline).sum())


def paired_t_p(diffs: list[float]) -> float | None:
    """Two-sided p of the paired t-test that the mean difference is 0; None with fewer than 2 pairs or no
    spread (a t statistic of ±inf says nothing with so few seeds)."""
    if len(diffs) < 2 or not all(math.isfinite(d) for d in diffs) or statistics.stdev(diffs) == 0:
        return None
    from scipy.stats import t

    tstat = statistics.fmean(diffs) / (statistics.stdev(diffs) / math.sqrt(len(diffs)))
    return float(2.0 * t.sf(abs(tstat), len(diffs) - 1))


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: with p sorted ascending, the k-th (from 0)
    becomes max over j <= k of min(1, (m - j) p_(j)). Rejecting where the adjusted p < α controls the
    family-wise error rate at α across all m tests (Holm 1979)."""
    m = len(ps)
    order = sorted(range(m), key=lambda k: ps[k])
    out, running = [0.0] * m, 0.0
    for rank, k in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[k]))
        out[k] = running
    return out


# ---------------------------------------------------------------- claims about a method and about trained networks
#
# A *method claim* ("manifold mixup is more robust under zoom-in 60 %") is about the distribution of networks a
# training method produces, evaluated on the population of test images: the unit is the training run, and the
# test images are a sample too. With k seed pairs evaluated on the same N images, the per-(pair, image)
# difference is modelled as crossed random effects, D_si = mu + a_s + b_i + e_si (seed pair, image, residual),
# so the mean difference has Var(D..) = s2_a / k + s2_b / N + s2_e / (k N) (Searle, Casella & McCulloch, Variance
# Components, 1992, ch. 4; for ML benchmarks the same two sources, training seeds and test sampling, are
# Bouthillier et al., "Accounting for variance in machine learning benchmarks", MLSys 2021).
# Its unbiased ANOVA estimate splits as
#     var(per-pair differences) / k        (estimates s2_a / k + s2_e / (k N): what a paired t-test over seeds uses)
#   + max(0, V_img - (V_pairs - V_img) / (k - 1))   (estimates s2_b / N: the test images' own sampling)
# with V_img the sampling variance of the pair-averaged difference over images and V_pairs the mean over pairs of
# each pair's own (both from per-image outcomes, or from the shared bootstrap replicates for NLL and Brier). The
# interval is t with k - 1 degrees of freedom (the seed term dominates at few seeds; the image term's degrees of
# freedom are many, so k - 1 is conservative), and the clip at 0 keeps it at least as wide as the paired t-test.
#
# A *network claim* ("these trained networks differ") holds the weights fixed: the population is test images. The
# same images recur in every seed pair, so an image, not an (image, pair), is the independent unit: accuracy uses an
# exact sign-flip test on each image's summed discordance (under the null each image's difference is symmetric),
# NLL and Brier the paired bootstrap whose resamples carry every pair of an image together.


@dataclass
class MethodTest:
    """A method claim's difference (mean over seed pairs), its 95 % interval and two-sided p."""

    diff: float
    low: float
    high: float
    p: float
    se: float
    df: int
    pairs: int
    seed_sd: float  # the per-pair differences' sample std
    image_var: float  # the image term added to se**2 (0 without per-image data)
    images: int | None  # the test images accounted for (None: no per-image data, seeds only)


def method_test(
    diffs: list[float], v_img: float = 0.0, v_pairs: float = 0.0, images: int | None = None
) -> MethodTest | None:
    """The method claim from k >= 2 per-pair differences and the image terms (see above); None with fewer than two
    pairs, a non-finite difference, or no spread at all."""
    k = len(diffs)
    if k < 2 or not all(math.isfinite(d) for d in diffs) or not (math.isfinite(v_img) and math.isfinite(v_pairs)):
        return None
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    image = max(0.0, v_img - (v_pairs - v_img) / (k - 1))
    se = math.sqrt(sd * sd / k + image)
    if se == 0.0:
        return None
    from scipy.stats import t

    half = t_quantile(k - 1) * se
    p = float(2.0 * t.sf(abs(mean) / se, k - 1))
    return MethodTest(mean, mean - half, mean + half, p, se, k - 1, k, sd, image, images)


def image_terms(d: np.ndarray) -> tuple[float, float]:
    """(V_img, V_pairs) of per-(pair, image) differences ``d`` (k, N): the sampling variance of the pair-averaged
    mean over images, and the mean over pairs of each pair's own."""
    n = d.shape[1]
    if n < 2:
        return 0.0, 0.0
    return float(np.var(d.mean(0), ddof=1) / n), float(np.mean(np.var(d, axis=1, ddof=1)) / n)


def replicate_terms(reps: np.ndarray) -> tuple[float, float]:
    """(V_img, V_pairs) from paired bootstrap replicates (k, R) of each pair's difference on shared resamples."""
    if reps.shape[1] < 2:
        return 0.0, 0.0
    return float(np.var(reps.mean(0), ddof=1)), float(np.mean(np.var(reps, axis=1, ddof=1)))


def sign_flip_exact(d: np.ndarray) -> float:
    """Two-sided exact p of the sign-flip (randomisation) test that per-image differences ``d`` (integers: an
    image's summed discordance over seed pairs) are symmetric about 0: P(|T| >= |t|) with T = sum of s_i |d_i|,
    s_i independent fair signs. With one seed pair it is McNemar's exact test. The null distribution of T is
    exact: magnitudes v with n_v images contribute v (2 Bin(n_v, 1/2) - n_v), convolved."""
    from scipy.signal import fftconvolve
    from scipy.stats import binom

    d = np.asarray(d, dtype=np.int64)
    observed = int(abs(d.sum()))
    mags, counts = np.unique(np.abs(d[d != 0]), return_counts=True)
    if len(mags) == 0:
        return 1.0
    pmf = np.ones(1)
    for v, n in zip(mags.tolist(), counts.tolist()):
        part = np.zeros(v * n + 1)
        part[::v] = binom.pmf(np.arange(n + 1), n, 0.5)
        pmf = np.clip(fftconvolve(pmf, part), 0.0, None) if len(pmf) > 1 else part
    total = int(np.dot(mags, counts))  # S = sum v B_v in 0..total; T = 2 S - total
    s = np.arange(len(pmf))
    tail = pmf[np.abs(2 * s - total) >= observed].sum()
    return float(min(1.0, tail / pmf.sum()))


def seeds_for_power(
    effect: float, seed_sd: float, image_var: float, power: float = 0.8, cap: int = 1000, alpha: float = 0.05
) -> int | None:
    """The fewest seed pairs n >= 2 whose two-sided level-``alpha`` method test has ``power`` at the observed
    ``effect``: power(n) = P(|T| > t_{1 - alpha/2, n-1}), T ~ noncentral t(n - 1, effect / sqrt(seed_sd**2 / n +
    image_var)). None when even ``cap`` seeds do not reach it (the image term alone can forbid it: more test images
    then)."""
    if not (math.isfinite(effect) and effect != 0.0 and math.isfinite(seed_sd)):
        return None
    from scipy.stats import nct
    from scipy.stats import t as student

    def reaches(n: int) -> bool:
        se = math.sqrt(seed_sd * seed_sd / n + image_var)
        if se == 0.0:
            return True
        lam = abs(effect) / se
        c = t_quantile(n - 1) if alpha == 0.05 else float(student.ppf(1 - alpha / 2, n - 1))
        got = float(nct.sf(c, n - 1, lam) + nct.cdf(-c, n - 1, lam))
        if not math.isfinite(got):  # scipy's noncentral t fails far in the tail: the normal limit there
            got = float(0.5 * math.erfc((c - lam) / math.sqrt(2.0)) + 0.5 * math.erfc((c + lam) / math.sqrt(2.0)))
        return got >= power

    hi = 2
    while hi < cap and not reaches(hi):  # power grows with n: double, then bisect
        hi = min(cap, hi * 2)
    if not reaches(hi):
        return None
    lo = max(2, hi // 2)
    while lo < hi:
        mid = (lo + hi) // 2
        if reaches(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


MULTIPLICITY = ("holm", "bonferroni", "bh", "none")


def adjust(ps: list[float], how: str = "holm") -> list[float]:
    """Adjusted p-values, in the order given: ``holm`` (family-wise error, Holm 1979), ``bonferroni`` (m p),
    ``bh`` (false discovery rate, Benjamini & Hochberg 1995's step-up adjusted p), ``none`` (as they are)."""
    if how == "holm":
        return holm(ps)
    if how == "bonferroni":
        return [min(1.0, len(ps) * p) for p in ps]
    if how == "none":
        return list(ps)
    if how == "bh":
        m = len(ps)
        order = sorted(range(m), key=lambda k: ps[k], reverse=True)
        out, running = [0.0] * m, 1.0
        for rank, k in enumerate(order):  # from the largest p down: min over j >= k of m p_(j) / j
            running = min(running, ps[k] * m / (m - rank))
            out[k] = min(1.0, running)
        return out
    raise ValueError(f"multiplicity: expected one of {', '.join(MULTIPLICITY)}, got {how!r}")


def replicate_z(diff: float, reps: np.ndarray) -> tuple[float, float | None, float | None, float | None]:
    """A network claim on NLL, Brier or AUROC: (difference, 95 % low, high, two-sided p) from paired bootstrap replicates
    (k pairs, B resamples shared by every run): replicate r of the difference is the mean over pairs of their r-th
    differences (an image brings all its pairs), its standard deviation the standard error, a normal interval and
    z-test. (difference, None, None, None) without spread."""
    se = float(np.std(np.mean(reps, axis=0), ddof=1)) if reps.shape[-1] > 1 else math.nan
    if not math.isfinite(se) or se == 0.0:
        return diff, None, None, None
    return diff, diff - Z975 * se, diff + Z975 * se, normal_p(diff / se)


def delong(scores_in: np.ndarray, scores_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong, DeLong & Clarke-Pearson (1988): the AUROCs of k scorings of the same images ((k, m) in-distribution
    scores, (k, n) OOD scores; in-distribution scored higher, ties ½) and their (k, k) covariance, from the
    structural components V10_i = P(x_i > Y) and V01_j = P(X > y_j), computed by midranks (Sun & Xu 2014)."""
    from scipy.stats import rankdata

    x, y = (
        np.atleast_2d(np.asarray(scores_in, dtype=np.float64)),
        np.atleast_2d(np.asarray(scores_out, dtype=np.float64)),
    )
    m, n = x.shape[1], y.shape[1]
    both = np.concatenate([x, y], axis=1)
    r_all = rankdata(both, axis=1)
    r_x, r_y = rankdata(x, axis=1), rankdata(y, axis=1)
    v10 = (r_all[:, :m] - r_x) / n  # per ID image: the share of OOD images below it
    v01 = 1.0 - (r_all[:, m:] - r_y) / m  # per OOD image: the share of ID images above it
    auc = v10.mean(axis=1)
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return auc, cov


def delong_paired(a_in, a_out, b_in, b_out) -> tuple[float, float, float]:
    """DeLong's test of two correlated AUROCs on the same images: (AUROC a − AUROC b, its standard error, two-sided
    p). The same images in the same order for both (a network claim on one pair of trained networks)."""
    auc, cov = delong(np.stack([a_in, b_in]), np.stack([a_out, b_out]))
    se = math.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0))
    diff = float(auc[0] - auc[1])
    return diff, se, normal_p(diff / se) if se > 0 else (1.0 if diff == 0 else 0.0)
