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

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from mmix_eval.evaluate.records import EDGE_RULE, record


def nll(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float(F.cross_entropy(logits.double(), y))


def brier(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Multiclass Brier score: mean over images of Σ_c (p_c − 1[y = c])²."""
    p = torch.softmax(logits.double(), 1)
    return float(((p - F.one_hot(y, p.shape[1]).double()) ** 2).sum(1).mean())


def top_label(logits: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    p = torch.softmax(logits.double(), 1)
    conf, pred = p.max(1)
    return conf.numpy(), (pred == y).numpy().astype(np.int64)


def reliability_bins(conf: np.ndarray, correct: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin counts, accuracy and mean confidence (NaN for an empty bin)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, bins - 1)
    counts = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(idx, weights=correct, minlength=bins) / counts
        mean_conf = np.bincount(idx, weights=conf, minlength=bins) / counts
    return counts, acc, mean_conf


def netcal_ece_mce(conf: np.ndarray, correct: np.ndarray, bins: int) -> tuple[float, float]:
    from netcal.metrics import ECE, MCE  # imported late: netcal pulls in pyro, gpytorch and tensorboard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(ECE(bins=bins).measure(conf, correct)), float(MCE(bins=bins).measure(conf, correct))


def calibration_metrics(logits: torch.Tensor, y: torch.Tensor, bins: int = 15) -> dict:
    conf, correct = top_label(logits, y)
    ece, mce = netcal_ece_mce(conf, correct, bins)
    counts, acc, mean_conf = reliability_bins(conf, correct, bins)
    return {"acc": 100.0 * float(correct.mean()), "nll": nll(logits, y), "ece": ece, "mce": mce,
            "brier": brier(logits, y), "bins": (counts, acc, mean_conf)}


def condition_rows(base: dict, condition: str, logits: torch.Tensor, y: torch.Tensor, bins: int = 15,
                   label: str | None = None, clean_acc: float | None = None, **settings) -> list[dict]:
    """The rows of one condition: accuracy, relative accuracy (accuracy / the model's own clean accuracy,
    when ``clean_acc`` is given), NLL, top-label ECE and Brier, from the condition's logits. The acc row
    carries the per-image outcomes (``_correct``) that the runner stores beside the records."""
    conf, correct = top_label(logits, y)
    ece, _ = netcal_ece_mce(conf, correct, bins)
    acc = 100.0 * float(correct.mean()) if len(correct) else float("nan")
    extra = {"bins": bins, "edge_rule": EDGE_RULE, **settings}
    rows = [record(base, condition, "acc", acc, label, **extra)]
    rows[0]["_correct"] = correct.astype(bool)
    if clean_acc is not None:
        rel = 100.0 * acc / clean_acc if clean_acc > 0 else float("nan")
        rows.append(record(base, condition, "rel_acc", rel, label, **extra))
    rows += [record(base, condition, "nll", nll(logits, y), label, **extra),
             record(base, condition, "ece", ece, label, **extra),
             record(base, condition, "brier", brier(logits, y), label, **extra)]
    return rows
