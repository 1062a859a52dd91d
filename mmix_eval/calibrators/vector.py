"""Vector scaling (Guo et al. 2017): logits · w + b, one weight and one bias per class, minimising the NLL of
held-out logits. It can change the predicted class (temperature scaling cannot), so the calibrated rows'
confidence-based scores (ECE, AURC, ...) are those of the calibrated predictions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmix_eval.calibrators.base import Calibrator


def fit_vector(logits: torch.Tensor, y: torch.Tensor) -> tuple[list[float], list[float]]:
    """(w, b) minimising the NLL of logits · w + b (LBFGS in float64 from w = 1, b = 0: the raw logits)."""
    z = logits.double()
    c = z.shape[1]
    w = torch.ones(c, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(c, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z * w + b, y)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach().tolist(), b.detach().tolist()


class Vector(Calibrator):
    name = "vector"

    def fit(self, logits, labels) -> dict:
        w, b = fit_vector(logits, labels)
        return {"weight": w, "bias": b}

    def apply(self, logits, params):
        w = torch.tensor(params["weight"], dtype=logits.dtype)
        b = torch.tensor(params["bias"], dtype=logits.dtype)
        return logits * w + b
