"""Ensemble temperature scaling (Zhang, Kailkhura & Han, ICML 2020, "Mix-n-Match"): a convex mixture of the
temperature-scaled softmax, the raw softmax and the uniform distribution,

    p = w₁ softmax(z / T) + w₂ softmax(z) + w₃ / C,    w ≥ 0, Σ w = 1,

with T from temperature scaling (``calibrators.temperature``, held in its bounds) and the weights minimising the
held-out NLL (the paper's cross-entropy variant; its code fits them with scipy's SLSQP, here LBFGS on the softmax
of three free numbers, which reaches the same minimum). It keeps the predicted class and the ranking of the
classes. Its output is a probability: it enters every metric as ``log_probs`` (floored at FLOOR).

The uniform term bounds every class's probability below by w₃ / C, so a separable held-out set (where T sits at
its lower bound) is handled by the weights rather than by T alone; a fit held at a bound says so, as temperature
scaling's does."""

from __future__ import annotations

import torch

from mmix_eval.calibrators.base import Calibrator, log_probs
from mmix_eval.calibrators.temperature import Temperature, fit_temperature


def mixture(logits: torch.Tensor, t: float, w: torch.Tensor) -> torch.Tensor:
    c = logits.shape[1]
    return w[0] * torch.softmax(logits / t, dim=1) + w[1] * torch.softmax(logits, dim=1) + w[2] / c


def fit_weights(logits: torch.Tensor, y: torch.Tensor, t: float) -> list[float]:
    """The simplex weights minimising the NLL of ``mixture`` (float64)."""
    z = logits.double()
    a = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [a], lr=1.0, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        p = mixture(z, t, torch.softmax(a, 0))
        loss = -p.gather(1, y.view(-1, 1)).clamp_min(1e-300).log().mean()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return torch.softmax(a.detach(), 0).tolist()


class EnsembleTemperature(Calibrator):
    name = "ensemble_temperature"
    probabilities = True

    def fit(self, logits, labels) -> dict:
        params = Temperature().fit(logits, labels)
        params["weights"] = fit_weights(logits, labels, fit_temperature(logits, labels))
        return params

    def apply(self, logits, params):
        w = torch.tensor(params["weights"], dtype=logits.dtype)
        return log_probs(mixture(logits, params["temperature"], w))

    def note(self, params) -> str | None:
        note = Temperature().note(params)
        return f"ensemble temperature: {note}" if note else None
