"""Dirichlet calibration (Kull et al., NeurIPS 2019): W · log softmax(z) + b, a full matrix on the log-probabilities,
with their ODIR regulariser (off-diagonal and intercept regularisation):

    NLL + λ / (C (C − 1)) Σ_{i ≠ j} W_ij² + μ / C Σ_j b_j²

which pulls the map toward a per-class scaling (the diagonal is free) and keeps it from overfitting. As in the
paper, λ and μ are chosen by cross-validation on the held-out images: λ = μ from ODIR_GRID, the value with the
lowest mean held-out NLL over ODIR_FOLDS seeded folds (each fold's fit at most CV_ITER iterations), then refitted on all of them (the chosen value and the
folds' NLL are recorded). A held-out set too small for the folds (fewer than 2 images per fold) takes the largest
λ and says so.

Its failure mode: ODIR leaves the diagonal free, so a held-out set the fitted map classifies entirely right
(separable, as a converged network's often is) has no minimiser: the diagonal grows like 1 / T as T → 0 (calibrated
NLLs of 2 to 16 on 300 digits test images were seen, from a handful of confidently wrong images). Then the fit is
redone with the diagonal penalised toward 1 as well, (1 / N) Σ_i (W_ii − 1)² over the N held-out images (vector
scaling's rule), and every calibrated row says so."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmix_eval.calibrators.affine import Quadratic, apply_affine, fit_affine, held_out_wrong
from mmix_eval.calibrators.base import Calibrator

ODIR_GRID = (1e-3, 1e-2, 1e-1, 1.0)  # λ = μ candidates (Kull et al. search a log grid)
CV_ITER = 100  # LBFGS iterations of a cross-validation fit (it only ranks λ; the final fit runs to convergence)
ODIR_FOLDS = 3
FOLD_SEED = 0


def odir(lam: float, mu: float, c: int, diagonal: float = 0.0) -> Quadratic:
    """The ODIR penalty for C classes; ``diagonal`` > 0 adds diagonal · Σ_i (W_ii − 1)² (the separable refit)."""
    eye = torch.eye(c, dtype=torch.float64)
    weight = (1 - eye) * (lam / (c * (c - 1))) + eye * diagonal
    return Quadratic(weight, eye, mu / c)


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
            w, b = fit_affine(x[fit_idx], y[fit_idx], odir(lam, lam, x.shape[1]), CV_ITER)
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
        w, b = fit_affine(x, labels, odir(lam, lam, x.shape[1]))
        params = {"weight": w.flatten().tolist(), "bias": b.tolist(), "lambda": lam, "mu": lam}
        if n and held_out_wrong(apply_affine(x, params), labels) == 0:  # separable: the diagonal has no minimiser
            w, b = fit_affine(x, labels, odir(lam, lam, x.shape[1], diagonal=1.0 / n))
            params.update(weight=w.flatten().tolist(), bias=b.tolist(), diagonal_penalty=1.0 / n)
            params["held_out_wrong"] = held_out_wrong(apply_affine(x, params), labels)
        if cv:
            params["cv_nll"] = cv
        params["held_out_images"] = n
        return params

    def apply(self, logits, params):
        return apply_affine(torch.log_softmax(logits, dim=1), params)

    def note(self, params) -> str | None:
        n = params.get("held_out_images")
        notes = []
        if "cv_nll" not in params:
            notes.append(
                f"dirichlet: {n} held-out images are too few for {ODIR_FOLDS}-fold cross-validation of the ODIR "
                f"regulariser, so λ = μ = {ODIR_GRID[-1]:g} (the grid's largest)"
            )
        if params.get("diagonal_penalty"):
            notes.append(
                f"dirichlet: all {n} held-out images classified right by the ODIR fit (separable: its diagonal has "
                f"no minimiser), so refitted with an L2 penalty toward the identity on the diagonal, 1/{n}; "
                f"{params['held_out_wrong']} held-out images wrong after it"
            )
        return "; ".join(notes) or None
