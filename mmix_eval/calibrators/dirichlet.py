"""Dirichlet calibration (Kull et al., NeurIPS 2019): W · log softmax(z) + b, a full matrix on the log-probabilities,
with their ODIR regulariser (off-diagonal and intercept regularisation):

    NLL + λ / (C (C − 1)) Σ_{i ≠ j} W_ij² + μ / C Σ_j b_j²

which pulls the map toward a per-class scaling (the diagonal is free) and keeps it from overfitting. As in the
paper, λ and μ are chosen by cross-validation on the held-out images: λ = μ from ODIR_GRID, the value with the
lowest mean held-out NLL over ODIR_FOLDS seeded folds (each fold's fit at most CV_ITER iterations), then refitted on all of them (the chosen value and the
folds' NLL are recorded). With ODIR the objective always has a minimiser, a separable held-out set included;
a held-out set too small for the folds (fewer than 2 images per fold) takes the largest λ and says so."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmix_eval.calibrators.affine import apply_affine, fit_affine
from mmix_eval.calibrators.base import Calibrator

ODIR_GRID = (1e-3, 1e-2, 1e-1, 1.0)  # λ = μ candidates (Kull et al. search a log grid)
CV_ITER = 100  # LBFGS iterations of a cross-validation fit (it only ranks λ; the final fit runs to convergence)
ODIR_FOLDS = 3
FOLD_SEED = 0


def odir(lam: float, mu: float):
    """The ODIR penalty of (W, b)."""

    def penalty(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        c = w.shape[0]
        off = (w**2).sum() - (w.diagonal() ** 2).sum()
        return lam * off / (c * (c - 1)) + mu * (b**2).sum() / c

    return penalty


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.double(), dim=1)


def cross_validated(x: torch.Tensor, y: torch.Tensor, grid=ODIR_GRID, folds=ODIR_FOLDS) -> tuple[float, list[float]]:
    """(the λ = μ of ``grid`` with the lowest mean NLL on held-back folds, each candidate's mean NLL)."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(FOLD_SEED))
    parts = order.chunk(folds)
    scores = []
    for lam in grid:
        nll = 0.0
        for k in range(folds):
            fit_idx = torch.cat([p for i, p in enumerate(parts) if i != k])
            w, b = fit_affine(x[fit_idx], y[fit_idx], odir(lam, lam), CV_ITER)
            nll += float(F.cross_entropy(x[parts[k]] @ w.T + b, y[parts[k]])) / folds
        scores.append(nll)
    return grid[min(range(len(grid)), key=scores.__getitem__)], scores


class Dirichlet(Calibrator):
    name = "dirichlet"

    def fit(self, logits, labels) -> dict:
        x = log_probs(logits)
        n = len(labels)
        if n >= 2 * ODIR_FOLDS:
            lam, cv = cross_validated(x, labels)
        else:
            lam, cv = ODIR_GRID[-1], []
        w, b = fit_affine(x, labels, odir(lam, lam))
        params = {"weight": w.flatten().tolist(), "bias": b.tolist(), "lambda": lam, "mu": lam}
        if cv:
            params["cv_nll"] = cv
        else:
            params["held_out_images"] = n
        return params

    def apply(self, logits, params):
        return apply_affine(torch.log_softmax(logits, dim=1), params)

    def note(self, params) -> str | None:
        if "cv_nll" in params:
            return None
        return (
            f"dirichlet: {params['held_out_images']} held-out images are too few for {ODIR_FOLDS}-fold "
            f"cross-validation of the ODIR regulariser, so λ = μ = {ODIR_GRID[-1]:g} (the grid's largest)"
        )
