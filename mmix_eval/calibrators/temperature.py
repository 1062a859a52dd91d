"""Temperature scaling (Guo et al. 2017): logits / T, one T > 0 minimising the NLL of held-out logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmix_eval.calibrators.base import Calibrator


def fit_temperature(logits: torch.Tensor, y: torch.Tensor) -> float:
    """T > 0 minimising the NLL of logits / T (LBFGS on log T, float64)."""
    z = logits.double()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return float(log_t.detach().exp())


class Temperature(Calibrator):
    name = "temperature"

    def fit(self, logits, labels) -> dict:
        return {"temperature": fit_temperature(logits, labels)}

    def apply(self, logits, params):
        return logits / params["temperature"]
