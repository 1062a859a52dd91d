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

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # fixed: the same records give the same interval, byte for byte


@functools.lru_cache(maxsize=None)
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


def paired_image_bootstrap(method: np.ndarray, baseline: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                           seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
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
