"""Metrics from logits: accuracy, NLL, ECE, MCE, Brier, reliability bins; and the rows
every condition that produces logits records (calibration under every shift).

ECE / MCE: top-label, equal-width bins over [0, 1] (15 by default, the usual choice since Guo et al.
2017), computed by netcal. netcal is given the top-label problem in its binary form (confidence of the
predicted class, correct or not), which is the definition of top-label ECE and equals netcal's multiclass
result, but does not fail, as its multiclass path does, on a batch with two or fewer distinct labels.
Bins are left-closed [a, b) with the last closed [a, 1] (numpy.histogram, as netcal); the in-house
reliability bins below use the same edges so the diagram and the number agree.
NLL: cross-entropy on logits (never −log of a rounded softmax), finite for any finite logits.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mmix_eval.evaluate.boot import bin_index, reliability, replicates
from mmix_eval.evaluate.records import EDGE_RULE, attach, record


def nll(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float(F.cross_entropy(logits.double(), y))


def brier(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Multiclass Brier score: mean over images of Σ_c (p_c − 1[y = c])²."""
    return brier_of(torch.softmax(logits.double(), 1), y)


def brier_of(p: torch.Tensor, y: torch.Tensor) -> float:
    """The Brier score of probabilities already computed."""
    return float(((p - F.one_hot(y, p.shape[1]).to(p.dtype)) ** 2).sum(1).mean())


def reliability_bins(conf: np.ndarray, correct: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin counts, accuracy and mean confidence (NaN for an empty bin)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = bin_index(conf, edges)
    counts = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(idx, weights=correct, minlength=bins) / counts
        mean_conf = np.bincount(idx, weights=conf, minlength=bins) / counts
    return counts, acc, mean_conf


def netcal_measure(name: str, conf: np.ndarray, correct: np.ndarray, bins: int) -> float:
    """netcal's top-label ``ECE`` or ``MCE``; NaN for no images (netcal asserts on no samples)."""
    from netcal import metrics  # imported late: netcal pulls in pyro, gpytorch and tensorboard

    if not len(conf):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(getattr(metrics, name)(bins=bins).measure(conf, correct))


def binned_error(values: np.ndarray, hits: np.ndarray, edges: np.ndarray) -> float:
    """Σ_b |B|/N · |mean(hits in B) − mean(values in B)| over the bins given by ``edges``."""
    if not len(values):
        return float("nan")
    idx = bin_index(values, edges)
    k = len(edges) - 1
    gap = np.bincount(idx, weights=hits, minlength=k) - np.bincount(idx, weights=values, minlength=k)
    return float(np.abs(gap).sum() / len(values))  # Σ_b |Σ_B (hit − value)| / N


def equal_mass_ece(conf: np.ndarray, correct: np.ndarray, bins: int) -> float:
    """Top-label ECE over equal-mass bins (Nixon et al. 2019): edges at the confidences' quantiles
    (numpy.quantile, linear), the first 0 and the last 1, then the equal-width rule (as netcal's
    ``ECE(equal_intervals=False)``)."""
    if not len(conf):
        return float("nan")
    edges = np.quantile(conf, np.linspace(0.0, 1.0, bins + 1))
    edges[0], edges[-1] = 0.0, 1.0
    return binned_error(conf, correct, edges)


def classwise_ece(probs: np.ndarray, y: np.ndarray, bins: int) -> float:
    """Classwise ECE (Kull et al. 2019): for every class k, the equal-width ECE of p_k against 1[y = k]
    over all images, averaged over the classes."""
    if not len(probs):
        return float("nan")
    edges = np.linspace(0.0, 1.0, bins + 1)
    return float(
        np.mean([binned_error(probs[:, k], (y == k).astype(np.float64), edges) for k in range(probs.shape[1])])
    )


def debiased_l2_ce(conf: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """The debiased top-label L2 calibration error of Kumar, Liang & Ma (NeurIPS 2019, "Verified uncertainty
    calibration"), with their equal-mass bins: sqrt(max(0, sum_b (n_b / n) [(mean conf_b - acc_b)^2 -
    acc_b (1 - acc_b) / (n_b - 1)])). The plug-in squared error is biased upward by each bin's sampling variance of
    its accuracy; this subtracts it, so two perfectly calibrated models score about 0 whatever their sharpness.
    Bins: the sorted confidences split into ``bins`` near-equal groups, edges halfway between groups; a bin of
    fewer than 2 images adds 0 (as their reference code, ``calibration.get_calibration_error``)."""
    n = len(conf)
    if n < 2:
        return float("nan")
    conf = np.asarray(conf, dtype=np.float64)
    hits = np.asarray(correct, dtype=np.float64)
    parts = np.array_split(np.sort(conf), min(bins, n))
    edges = np.unique([(a[-1] + b[0]) / 2.0 for a, b in zip(parts[:-1], parts[1:])] + [1.0])
    idx = np.minimum(np.searchsorted(edges, conf), len(edges) - 1)
    count = np.bincount(idx, minlength=len(edges)).astype(np.float64)
    mean_conf = np.bincount(idx, weights=conf, minlength=len(edges)) / np.maximum(count, 1)
    acc = np.bincount(idx, weights=hits, minlength=len(edges)) / np.maximum(count, 1)
    term = np.where(count >= 2, (mean_conf - acc) ** 2 - acc * (1 - acc) / np.maximum(count - 1, 1), 0.0)
    return float(math.sqrt(max(0.0, float((count / n * term).sum()))))


def _smooth_at(conf: np.ndarray, resid: np.ndarray, sigma: float) -> float:
    """SmoothECE at a fixed bandwidth: the residuals (confidence - correct) and the confidences' density, both
    smoothed by a Gaussian kernel of width sigma reflected at 0 and 1, on a grid of [0, 1]; the integral of
    |smoothed residual| over the density. Points are put on the grid by linear interpolation (one grid step
    <= sigma / 10)."""
    from scipy.signal import fftconvolve

    g = max(1001, int(round(10.0 / sigma)) + 1)
    pos = np.clip(conf, 0.0, 1.0) * (g - 1)
    lo = np.minimum(pos.astype(np.int64), g - 2)
    frac = pos - lo
    mass = np.bincount(lo, 1 - frac, g) + np.bincount(lo + 1, frac, g)
    res = np.bincount(lo, (1 - frac) * resid, g) + np.bincount(lo + 1, frac * resid, g)
    ext = lambda v: np.concatenate([v[::-1][:-1], v, v[::-1][1:]])  # noqa: E731  reflected once at 0 and at 1
    half = min(g - 1, int(math.ceil(5 * sigma * (g - 1))))
    x = np.arange(-half, half + 1) / (g - 1)
    kern = np.exp(-0.5 * (x / sigma) ** 2)
    sm = lambda v: fftconvolve(ext(v), kern, mode="same")[g - 1 : 2 * g - 1]  # noqa: E731
    dens, r = sm(mass), sm(res)
    keep = dens > 1e-12 * dens.max()
    return float(np.abs(r[keep]).sum() / dens.sum())


def smooth_ece(conf: np.ndarray, correct: np.ndarray) -> float:
    """SmoothECE (Blasiok & Nakkiran, "Smooth ECE: principled reliability diagrams via kernel smoothing", ICLR
    2024): the kernel-smoothed calibration error at the bandwidth sigma* where it equals sigma (the fixed point,
    found by Brent's method to 1e-5 in [1e-3, 1]; sigma* = 1 when none is below 1). Consistent and continuous in
    the predictions, unlike a binned ECE; tested against their ``relplot`` package."""
    from scipy.optimize import brentq

    if len(conf) == 0:
        return float("nan")
    conf = np.asarray(conf, dtype=np.float64)
    resid = conf - np.asarray(correct, dtype=np.float64)
    gap = lambda s: _smooth_at(conf, resid, s) - s  # noqa: E731  falls as sigma grows: one root
    top = gap(1.0)
    if top >= 0.0:
        return top + 1.0
    low = gap(1e-3)
    if low <= 0.0:  # calibrated down to the finest bandwidth: the error is below 1e-3
        return low + 1e-3
    return _smooth_at(conf, resid, brentq(gap, 1e-3, 1.0, xtol=1e-5))


def selective_risks(conf: np.ndarray, correct: np.ndarray, coverages=(0.8, 0.9)) -> dict:
    """Selective prediction (Geifman & El-Yaniv 2017): images taken most confident first (ties in the order
    given: a stable sort). AURC: the mean over k = 1..N of the error rate of the k most confident;
    ``risk@c``: the error rate of the ceil(c·N) most confident, as a fraction."""
    n = len(conf)
    if not n:
        return {"aurc": float("nan"), **{f"risk{round(100 * c)}": float("nan") for c in coverages}}
    order = np.argsort(-conf, kind="stable")
    errors = np.cumsum(1 - correct[order]) / np.arange(1, n + 1)
    out = {"aurc": float(errors.mean())}
    for c in coverages:
        out[f"risk{round(100 * c)}"] = float(errors[max(1, math.ceil(c * n)) - 1])
    return out


@dataclass(frozen=True)
class Scored:
    """One condition's probability metrics (``values``) and the per-image data they came from: top-label
    confidences, correctness (0/1), the bootstrap replicates of the per-image scores and the reliability bins."""

    values: dict[str, float]
    conf: np.ndarray
    correct: np.ndarray
    boot: np.ndarray
    bins: np.ndarray


def score_condition(logits: torch.Tensor, y: torch.Tensor, bins: int) -> Scored:
    """Every probability metric of one condition: NLL, equal-width ECE (netcal), equal-mass ECE, classwise
    ECE, the signed calibration error (mean confidence − accuracy: > 0 overconfident), Brier, AURC and
    the risk at 80 / 90 % coverage, the debiased L2 calibration error and SmoothECE; with the per-image data."""
    p = torch.softmax(logits.double(), 1)
    conf_t, pred = p.max(1)
    conf, correct = conf_t.numpy(), (pred == y).numpy().astype(np.int64)
    signed = float(conf.mean() - correct.mean()) if len(conf) else float("nan")
    nll_i = F.cross_entropy(logits.double(), y, reduction="none")
    brier_i = ((p - F.one_hot(y, p.shape[1]).to(p.dtype)) ** 2).sum(1)
    mean = lambda v: float(v.mean()) if len(v) else float("nan")  # noqa: E731
    values = {
        "nll": mean(nll_i),
        "ece": netcal_measure("ECE", conf, correct, bins),
        "ece_em": equal_mass_ece(conf, correct, bins),
        "cw_ece": classwise_ece(p.numpy(), y.numpy(), bins),
        "signed_ce": signed,
        "brier": mean(brier_i),
        **selective_risks(conf, correct),
        "ce_debiased": debiased_l2_ce(conf, correct, bins),
        "smece": smooth_ece(conf, correct),
    }
    return Scored(
        values,
        conf,
        correct,
        replicates(nll_i.numpy(), brier_i.numpy(), conf, correct, bins, matmul=_torch_matmul),
        reliability(conf, correct, bins),
    )


def probability_scores(logits: torch.Tensor, y: torch.Tensor, bins: int) -> dict[str, float]:
    """Every probability metric of one condition (``score_condition``'s values)."""
    return score_condition(logits, y, bins).values


def _torch_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 product in torch's thread pool (numpy's BLAS threads would spin beside the next forward pass)."""
    return (torch.from_numpy(a) @ torch.from_numpy(b)).numpy()


def calibration_metrics(logits: torch.Tensor, y: torch.Tensor, bins: int = 15) -> dict:
    """Accuracy, every probability score (``probability_scores``), MCE and the reliability bins."""
    return calibration_scored(logits, y, bins)[0]


def calibration_scored(logits: torch.Tensor, y: torch.Tensor, bins: int = 15) -> tuple[dict, Scored]:
    """``calibration_metrics`` and the ``Scored`` condition they came from (its per-image data)."""
    s = score_condition(logits, y, bins)
    return {
        "acc": 100.0 * float(s.correct.mean()),
        **s.values,
        "mce": netcal_measure("MCE", s.conf, s.correct, bins),
        "bins": reliability_bins(s.conf, s.correct, bins),
    }, s


TOP5_MIN_CLASSES = 10  # top-5 accuracy is recorded for more classes than this


def condition_rows(
    base: dict,
    condition: str,
    logits: torch.Tensor,
    y: torch.Tensor,
    bins: int = 15,
    label: str | None = None,
    clean_acc: float | None = None,
    calibration=None,
    conformal: dict | None = None,
    **settings,
) -> list[dict]:
    """The rows of one condition: accuracy, relative accuracy (accuracy / the model's own clean accuracy,
    when ``clean_acc`` is given) and every probability metric (``PROBABILITY_METRICS``: NLL, ECE equal-width,
    equal-mass and classwise, signed error, Brier, AURC, risk at 80 / 90 % coverage) from the condition's
    logits, with calibrator 'none'; with fitted calibrators (``calibration``: a list of, or one,
    ``evaluate.calibrate.Fitted``) the same probability metrics again from each one's calibrated logits, with its
    name. With ``conformal`` (calibrator name -> ``evaluate.conformal.Thresholds``), each of those also records its
    conformal sets' coverage and mean size. The acc row carries the per-image
    outcomes (``PerImage.correct``) that the runner stores beside the records."""
    from mmix_eval.evaluate.base import PROBABILITY_METRICS

    extra = {"bins": bins, "edge_rule": EDGE_RULE, **settings}
    raw = score_condition(logits, y, bins)
    acc = 100.0 * float(raw.correct.mean()) if len(raw.correct) else float("nan")
    rows = [attach(record(base, condition, "acc", acc, label, **extra), correct=raw.correct.astype(bool))]
    if clean_acc is not None:
        rel = 100.0 * acc / clean_acc if clean_acc > 0 else float("nan")
        rows.append(record(base, condition, "rel_acc", rel, label, **extra))
    if logits.shape[1] > TOP5_MIN_CLASSES and len(y):  # top-5 where it is reported (CIFAR-100, Tiny-ImageNet): raw
        # only, a calibrator that rescales logits per image keeps each image's ranking of the classes
        top5 = (logits.topk(5, dim=1).indices == y.view(-1, 1).to(logits.device)).any(1)
        rows.append(record(base, condition, "acc_top5", 100.0 * float(top5.double().mean()), label, **extra))
    rows += with_detail([record(base, condition, m, raw.values[m], label, **extra) for m in PROBABILITY_METRICS], raw)
    conformal = conformal or {}
    if "none" in conformal:
        rows += conformal_rows(base, condition, label, logits, y, conformal["none"], extra)
    fits = [] if calibration is None else list(calibration) if isinstance(calibration, (list, tuple)) else [calibration]
    for fitted in fits:
        scaled = fitted.apply(logits)
        rows += calibrated_rows(base, condition, label, fitted, scaled, y, bins, extra)
        if fitted.name in conformal:
            cal = {"calibrator": fitted.name, **fitted.settings}
            rows += conformal_rows(base, condition, label, scaled, y, conformal[fitted.name], {**extra, **cal})
    return rows


def conformal_rows(base: dict, condition: str, label, logits, y, thresholds, extra: dict) -> list[dict]:
    """A condition's conformal coverage and set-size rows from (raw or calibrated) logits."""
    from mmix_eval.evaluate.conformal import conformal_values

    values = conformal_values(torch.softmax(logits.double(), dim=1), y, thresholds)
    return [record(base, condition, m, v, label, **extra, **thresholds.settings) for m, v in values.items()]


def calibrated_rows(base: dict, condition: str, label, fitted, scaled_logits, y, bins: int, extra: dict) -> list[dict]:
    """One calibrator's probability rows of a condition, with its name, settings and caveat."""
    from mmix_eval.evaluate.base import PROBABILITY_METRICS

    scaled = score_condition(scaled_logits, y, bins)
    cbase = {**base, "warnings": "; ".join(filter(None, [base.get("warnings"), fitted.note]))} if fitted.note else base
    return with_detail(
        [
            record(cbase, condition, m, scaled.values[m], label, calibrator=fitted.name, **extra, **fitted.settings)
            for m in PROBABILITY_METRICS
        ],
        scaled,
    )


def with_detail(rows: list[dict], scored: Scored) -> list[dict]:
    """The first probability row carries its condition's bootstrap replicates and reliability bins (``PerImage``
    ``boot`` and ``bins``), which the runner stores beside the records (``evaluate.outcomes``), not in them."""
    attach(rows[0], boot=scored.boot, bins=scored.bins)
    return rows
