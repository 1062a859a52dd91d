"""Matrix scaling (Guo et al. 2017): W · z + b, a full C × C matrix and a bias on the logits, minimising the NLL of
held-out logits (C² + C parameters: it overfits small held-out sets, which Dirichlet scaling's regulariser is for).
Like vector scaling it can change the predicted class.

Its failure mode is vector scaling's: a held-out set some affine map classifies entirely right has no minimiser
(the NLL keeps falling as W grows). Then the fit is refitted with an L2 penalty toward the identity,
λ (‖W − I‖² + ‖b‖²) with λ = 1 / N over the N held-out images, and every calibrated row says so."""

from __future__ import annotations

import torch

from mmix_eval.calibrators.affine import Quadratic, apply_affine, fit_affine, held_out_wrong
from mmix_eval.calibrators.base import Calibrator


class Matrix(Calibrator):
    name = "matrix"

    def fit(self, logits, labels) -> dict:
        z = logits.double()
        w, b = fit_affine(z, labels)
        n = len(labels)
        params = {"weight": w.flatten().tolist(), "bias": b.tolist()}
        if n and held_out_wrong(apply_affine(z, params), labels) == 0:  # separable: no minimiser
            c = z.shape[1]
            ridge = Quadratic(
                torch.full((c, c), 1.0 / n, dtype=torch.float64), torch.eye(c, dtype=torch.float64), 1.0 / n
            )
            w, b = fit_affine(z, labels, ridge)
            params = {"weight": w.flatten().tolist(), "bias": b.tolist()}
            params.update(
                penalty=1.0 / n, held_out_images=n, held_out_wrong=held_out_wrong(apply_affine(z, params), labels)
            )
        return params

    def apply(self, logits, params):
        return apply_affine(logits, params)

    def note(self, params) -> str | None:
        if not params.get("penalty"):
            return None
        n = params["held_out_images"]
        return (
            f"matrix scaling: all {n} held-out images classified right by some affine map (separable: the held-out "
            f"NLL has no minimiser), so fitted with an L2 penalty toward the identity, λ = 1/{n}; "
            f"{params['held_out_wrong']} held-out images wrong after it"
        )
