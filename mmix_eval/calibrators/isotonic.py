"""Isotonic regression (Zadrozny & Elkan 2002), one-vs-rest per class: each class's softmax probability mapped by
the non-decreasing function that best fits (least squares) whether the held-out image's label is that class,
interpolated linearly between its knots and held constant beyond them (scikit-learn's ``IsotonicRegression`` with
``out_of_bounds='clip'``, which torch-uncertainty's ``IsotonicRegressionScaler`` uses; fitted here by scipy's pool
adjacent violators). The C calibrated values are renormalised and enter every metric as ``log_probs`` (floored at
FLOOR). Knots are recorded per class (flat: ``x``, ``y`` and ``knots`` per class), interior knots on a constant
stretch dropped.

Its failure modes: a class absent from the held-out images would map to 0 everywhere (never predicted again): it
keeps its raw softmax probability, and every calibrated row says which. A separable held-out set gives a step
from 0 to 1, which the floor keeps finite."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import isotonic_regression

from mmix_eval.calibrators.base import Calibrator, absent_note, log_probs


def isotonic_knots(p: np.ndarray, hit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The knots (x, y) of the least-squares non-decreasing fit of ``hit`` (0/1) on ``p``: tied x pooled first
    (their mean, weighted by count), interior knots of constant stretches dropped (interpolation is unchanged)."""
    x, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=hit, minlength=len(x)) / counts
    y = isotonic_regression(means, weights=counts.astype(np.float64), increasing=True).x
    keep = np.ones(len(y), dtype=bool)
    if len(y) > 2:
        keep[1:-1] = (y[1:-1] != y[:-2]) | (y[1:-1] != y[2:])
    return x[keep], np.clip(y[keep], 0.0, 1.0)


class Isotonic(Calibrator):
    name = "isotonic"
    probabilities = True

    def fit(self, logits, labels) -> dict:
        p = torch.softmax(logits, dim=1).double().numpy()
        y = labels.numpy()
        xs, ys, knots, absent = [], [], [], []
        for k in range(p.shape[1]):
            if not (y == k).any():
                absent.append(k)
                knots.append(0)
                continue
            kx, ky = isotonic_knots(p[:, k], (y == k).astype(np.float64))
            xs += kx.tolist()
            ys += ky.tolist()
            knots.append(len(kx))
        return {"x": xs, "y": ys, "knots": knots, "raw_classes": absent}

    def apply(self, logits, params):
        p = torch.softmax(logits, dim=1)
        pn = p.double().numpy()
        out = np.empty_like(pn)
        x, y, start = np.asarray(params["x"]), np.asarray(params["y"]), 0
        for k, m in enumerate(params["knots"]):
            m = int(m)
            out[:, k] = np.interp(pn[:, k], x[start : start + m], y[start : start + m]) if m else pn[:, k]
            start += m
        return log_probs(torch.from_numpy(out).to(p.dtype))

    def note(self, params) -> str | None:
        return absent_note("isotonic regression", params)
