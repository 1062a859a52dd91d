"""Paired bootstrap replicates of the probability scores (NLL, Brier, equal-width ECE) of one condition, and its
reliability bins. Imports no torch.

Two evaluations of the same test images can be compared resample by resample without storing any image's
probabilities: every evaluation draws the very same B resamples of its N images (a multinomial count per image,
seeded by ``BOOT_SEED`` and N only), computes each score on each resample and stores the B values (as float16
deviations from the full-sample score: ≈ 3 KB per score and calibrator, whatever N). For two models on the same
images, resample r holds the same multiset of images for both, so the difference of their r-th values is one draw
of the paired bootstrap over images, ECE recomputed on it, exactly as if both had been resampled together.

Why not per-image confidences and NLLs: the calibrated scores need their own per-image values (the calibrator
changes every probability), and the Brier score needs the whole probability vector. Float16 confidence, NLL and
Brier per image, raw and calibrated, is 120 KB per condition per 10,000 images (about 100 KB compressed); the
replicates are about 6 KB per condition at any N.
"""

from __future__ import annotations

import functools

import numpy as np

BOOT_RESAMPLES = 500  # the standard error of a difference is estimated to about 1/sqrt(2·(B − 1)) = 3 %
BOOT_SEED = 0
BOOT_STATS = ("nll", "brier", "ece")  # the column order of a replicate array
# which column of a condition's replicate array holds a metric's: the probability scores', or an OOD condition's AUROC
# (its columns 1 and 2 hold 0, unused: one array shape for every condition keeps the stored format)
REPLICATE_COLUMNS = {"nll": 0, "brier": 1, "ece": 2, "auroc": 0}
SCHEME = np.array([BOOT_RESAMPLES, BOOT_SEED, len(BOOT_STATS), 1], dtype=np.int64)  # stored; another is ignored
_MAX_MATRIX_BYTES = 64 * 1024 * 1024  # the float32 count matrix is cached up to this size, else redrawn per condition


def _draw_counts(n: int) -> np.ndarray:
    """(B, n) uint8: how many times each image is drawn in each resample (n draws with replacement). The same for
    every call with the same n, on every machine (numpy's PCG64 stream)."""
    rng = np.random.default_rng([BOOT_SEED, n])
    out = np.empty((BOOT_RESAMPLES, n), dtype=np.uint8)
    for r in range(BOOT_RESAMPLES):
        c = np.bincount(rng.integers(0, n, n), minlength=n)
        if c.max() > 255:  # P(an image drawn 256 times) is nil for any n, but never wrap silently
            raise ValueError(f"a bootstrap count of {c.max()} does not fit uint8")
        out[r] = c
    return out


@functools.lru_cache(maxsize=2)
def _cached_counts(n: int) -> np.ndarray:
    return _draw_counts(n).astype(np.float32)  # float32 once: every condition multiplies by it


def resample_counts(n: int) -> np.ndarray:
    """The (B, n) resample counts for n images (float32 and cached while it takes at most 64 MB, else uint8)."""
    if 4 * BOOT_RESAMPLES * n <= _MAX_MATRIX_BYTES:
        return _cached_counts(n)
    return _draw_counts(n)


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The bin of each value: [a, b) with the last bin closed [a, 1] (numpy.histogram's rule, as netcal)."""
    return np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)


def per_image_columns(
    nll: np.ndarray, brier: np.ndarray, conf: np.ndarray, correct: np.ndarray, bins: int
) -> np.ndarray:
    """(n, 2 + bins) float64: each image's NLL, Brier and, in its equal-width confidence bin's column,
    confidence − correct (``bin_index``: the recorded ECE's edges and rule). Column sums over a resample, divided by n,
    give NLL, Brier and the signed gap per bin, whose absolute values sum to the ECE."""
    n = len(conf)
    x = np.zeros((n, 2 + bins))
    x[:, 0], x[:, 1] = nll, brier
    idx = bin_index(np.asarray(conf, dtype=np.float64), np.linspace(0.0, 1.0, bins + 1))
    x[np.arange(n), 2 + idx] = np.asarray(conf, dtype=np.float64) - np.asarray(correct, dtype=np.float64)
    return x


def _scores(sums: np.ndarray, n: int) -> np.ndarray:
    """(..., 2 + bins) column sums -> (..., 3): NLL, Brier, ECE."""
    return np.concatenate([sums[..., :2] / n, np.abs(sums[..., 2:]).sum(-1, keepdims=True) / n], axis=-1)


def replicates(
    nll: np.ndarray, brier: np.ndarray, conf: np.ndarray, correct: np.ndarray, bins: int, matmul=np.matmul
) -> np.ndarray:
    """(B, 3) float16: each resample's NLL, Brier and ECE minus the full sample's (``BOOT_STATS`` order).
    ``matmul(a, b)`` multiplies two float32 arrays: the evaluators pass torch's, so the product runs in torch's
    thread pool (numpy's BLAS threads spin after a call and slowed the next forward pass by about 4 %)."""
    n = len(conf)
    if n == 0:
        return np.zeros((BOOT_RESAMPLES, len(BOOT_STATS)), dtype=np.float16)
    x = per_image_columns(nll, brier, conf, correct, bins)
    counts = resample_counts(n)
    if counts.dtype == np.float32:  # cached: one product
        sums = np.asarray(matmul(counts, x.astype(np.float32)), dtype=np.float64)
    else:  # a large n: uint8 counts converted a block of at most 16 MB at a time
        sums = np.zeros((BOOT_RESAMPLES, x.shape[1]))
        step = max(1, (16 * 1024 * 1024) // (4 * BOOT_RESAMPLES))
        for a in range(0, n, step):
            sums += np.asarray(
                matmul(
                    np.ascontiguousarray(counts[:, a : a + step], dtype=np.float32),
                    np.ascontiguousarray(x[a : a + step], dtype=np.float32),
                ),
                dtype=np.float64,
            )
    full = _scores(x.sum(0), n)
    return (_scores(sums, n) - full).astype(np.float16)


def reliability(conf: np.ndarray, correct: np.ndarray, bins: int) -> np.ndarray:
    """(3, bins) float32: per equal-width bin, the image count, the correct count and the sum of confidences
    (a reliability diagram with its confidence histogram; means are sums / counts)."""
    conf = np.asarray(conf, dtype=np.float64)
    idx = bin_index(conf, np.linspace(0.0, 1.0, bins + 1))
    return np.stack(
        [
            np.bincount(idx, minlength=bins),
            np.bincount(idx, weights=np.asarray(correct, dtype=np.float64), minlength=bins),
            np.bincount(idx, weights=conf, minlength=bins),
        ]
    ).astype(np.float32)


def replicate_column(metric: str) -> int | None:
    """The column of ``metric``'s replicates in its condition's array (``REPLICATE_COLUMNS``), or None."""
    return REPLICATE_COLUMNS.get(metric)


@functools.lru_cache(maxsize=2)
def ood_counts(n: int) -> np.ndarray:
    """(B, n) float32 resample counts of n OOD images: a stream of their own (``[BOOT_SEED, n, 1]``), so an OOD set
    as large as the test subset is not resampled in step with it; the same for every run on the same images."""
    rng = np.random.default_rng([BOOT_SEED, n, 1])
    return np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(BOOT_RESAMPLES)]).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _by_image(n: int, ood: bool) -> np.ndarray:
    """The (n, B) transpose of the ID (``resample_counts``) or OOD (``ood_counts``) counts, float32, contiguous: one
    image's counts in every resample side by side, so gathering images is copying rows."""
    return np.ascontiguousarray((ood_counts(n) if ood else _draw_counts(n)).T, dtype=np.float32)


def weighted_auroc(s_in: np.ndarray, s_out: np.ndarray, w_in: np.ndarray, w_out: np.ndarray) -> np.ndarray:
    """AUROC (in-distribution scored higher) of each column of weights ((n_in, R) and (n_out, R)): Σ_ij w_i v_j
    ([s_i > t_j] + ½ [s_i = t_j]) over Σ w · Σ v, i.e. the Mann-Whitney statistic of the resample in which image i
    appears w_i times (ties count ½, as scikit-learn's ``roc_auc_score``). Sorted OOD scores and prefix sums of
    their weights: O(R (n_in + n_out)), no n_in x n_out matrix."""
    order = np.argsort(s_out, kind="stable")
    t = np.asarray(s_out, dtype=np.float64)[order]
    s = np.asarray(s_in, dtype=np.float64)
    lo, hi = np.searchsorted(t, s, side="left"), np.searchsorted(t, s, side="right")
    cum = np.zeros((len(t) + 1, w_out.shape[1]), dtype=w_out.dtype)
    np.cumsum(w_out[order], axis=0, out=cum[1:])
    below = 0.5 * (cum[lo] + cum[hi])  # (n_in, R): the weighted OOD images under each ID image, ties halved
    return (w_in * below).sum(0, dtype=np.float64) / (w_in.sum(0, dtype=np.float64) * w_out.sum(0, dtype=np.float64))


def auroc_replicates(s_in: np.ndarray, s_out: np.ndarray) -> np.ndarray:
    """(B, 3) float16: each resample's AUROC minus the full sample's in column 0 (columns 1, 2: 0). ID images are
    resampled with the test images' counts (``resample_counts``), OOD images with their own (``ood_counts``): the
    stratified bootstrap of AUROC, the very same resamples for every run on the same images, so two runs'
    replicates pair resample by resample as the probability scores' do."""
    n_in, n_out = len(s_in), len(s_out)
    out = np.zeros((BOOT_RESAMPLES, len(BOOT_STATS)), dtype=np.float16)
    if n_in == 0 or n_out == 0:
        return out
    full = weighted_auroc(s_in, s_out, np.ones((n_in, 1)), np.ones((n_out, 1)))[0]
    out[:, 0] = weighted_auroc(s_in, s_out, _by_image(n_in, False), _by_image(n_out, True)) - full
    return out
